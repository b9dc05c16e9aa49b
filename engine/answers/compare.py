"""Is an extracted answer the gold one? The comparisons, cheapest first.

Each check takes the cheapest path that can decide it (:func:`cheap_check`): string
equality, normalised text, a number parse, letter/option matching. Only what these cannot
decide (``\\sqrt{2}/2`` against ``\\frac{1}{\\sqrt{2}}``) goes to Math-Verify
(:func:`math_match`). Comparisons are total: anything unparseable is "not equal".
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from prmtree.engine.answers.bounds import split_bound, states_bound
from prmtree.engine.answers.dates import dates_match
from prmtree.engine.answers.eras import eras_differ
from prmtree.engine.answers.marks import strip_answer, unwrap
from prmtree.engine.answers.sentences import YES_NO_LEAD, implied_verdict
from prmtree.engine.answers.kinds import Options, _clean_options
from prmtree.engine.answers.normalize import (
    _canon_math,
    _choice_letter,
    _exact_number,
    _is_words,
    _LATEX_SPACE,
    _number_of,
    _option_letter,
    _Quantity,
    _quantity,
    normalize_text,
    same_marks,
    vqa_normalize,
    words_as_digits,
)
from prmtree.engine.answers.pool import CheckTimedOut
from prmtree.engine.answers.times import times_match

_CHOICE_LEAD = re.compile(r"^[(\[]?([A-Z])[)\]]?(?:[.:)]|\s|$)")
_LOWER_LEAD = re.compile(r"^\(?([a-z])\)(?:\s|$)")
#: A choice letter inside a formatting command: ``\\textbf{(B)}``, ``\\mathrm{B}``.
_LETTER_COMMAND = re.compile(r"\\(?:textbf|text|mathrm|mathbf|textrm)\{\s*(\(?[A-Z]\)?)\s*\}")
# A leading letter the answer goes on to call wrong (``A is wrong, B``) is not its choice.
_CHOICE_DENIED = re.compile(r"^\s*(?:is|are)\s+(?:not|wrong|incorrect|false)\b|^\s*isn't\b", re.IGNORECASE)
_YES_AND_NO = re.compile(r"^[*_\s]*(?:yes|no)[*_]*\s*(?:or|and|/)?\s*[*_]*(?:yes|no)\b", re.IGNORECASE)
_CLAUSES = re.compile(r"[.,;!?\n()\u2014\u2013]+|\s-\s")  # not ":": "the sign says: Yes" quotes
#: Words around a verdict said again: ``but actually no``, ``no wait, it is no``.
_RETRACTING = frozenset("but actually wait hmm sorry correction".split())
_FILLERS = frozenset("but actually wait hmm so well sorry i mean it is it's the answer final then ok okay um umm".split())


def _reversed_verdict(answer: str) -> bool:
    """``Yes. No.``, ``yes, no``, ``Yes, but actually no.``: a yes/no verdict taken back, its
    last clause the other word (``No, it is not.``, ``Yes, there is no dog``, ``Yes, he holds
    an umbrella; no, he is not wet`` and ``Yes, no, yes`` are not)."""
    stripped = (c.strip(" *_\t") for c in _CLAUSES.split(answer.lower()))
    clauses = [[w.strip("*_") for w in c.split()] for c in stripped if c.strip()]
    if len(clauses) < 2 or clauses[0][0] not in ("yes", "no"):
        return False
    other = "no" if clauses[0][0] == "yes" else "yes"
    if [w for w in clauses[-1] if w not in _FILLERS] != [other]:
        return False
    # right after the verdict ("Yes. No."), or after a retraction ("Yes, but actually no."); not
    # a "no" about another thing ("Yes, the left one is red; the right one, no.")
    return len(clauses) == 2 or any(w in _RETRACTING for c in clauses[1:] for w in c)

# --------------------------------------------------------------------------- text


def text_match(gold: str, predicted: str) -> bool:
    """Normalised equality, number words as digits (``two`` = ``2``, and a count in words
    equals the count with its noun: ``two dogs``); a yes/no gold also accepts ``No, it is not.``-style answers
    (the word, then punctuation or a restating clause: ``no idea`` is not ``no``)."""
    g, p = normalize_text(gold), normalize_text(predicted)
    if not g or not p:
        return False
    if g == p:
        return same_marks(gold, predicted)  # ("Na+" is not "Na", "-5" not "5", "1/2" not "12")
    g_digits = words_as_digits(gold)
    if g_digits.isdigit() and not g.isdigit():  # a count in words (``two``)
        return _counts(int(g_digits), predicted)
    if g_digits == words_as_digits(predicted):
        return True
    if g not in ("yes", "no"):
        return False
    raw = strip_answer(predicted).strip()
    lead = YES_NO_LEAD.match(raw)
    if lead is None:  # "Yep.", "There is no dog in the image.", "I see two dogs, so yes."
        return implied_verdict(raw) == g
    return lead.group(1).lower() == g and not _YES_AND_NO.match(raw) and not _reversed_verdict(raw)


#: ``two dogs``: a count and the one word it counts.
_COUNT_OF = re.compile(r"(\d+)(?: ([a-z']+))?")
#: Words after a count that make it another number (``two thirds``, ``2 millions``, ``2 more``,
#: ``3 times``, ``2 degrees``), not a count of things.
_NOT_COUNTED = re.compile(
    r"(?:hundred|thousand|million|billion|trillion|bn|mn|score|gross|dozen|lakh|crore|zillion|gazillion)s?|halves"
    r"|half|thirds?|quarters?|[a-z]+ths?|percents?|pcts?|pis?|more|less|fewer|times|degrees?|radians?|points?|units?\s*squared")
#: Plurals without an ``s``: the nouns a count may name besides regular plurals.
_IRREGULAR_PLURALS = frozenset(("people", "children", "men", "women", "sheep", "fish", "deer", "mice", "feet", "teeth",
                                "geese", "oxen", "persons", "dice", "aircraft", "series", "species"))


def _counts(count: int, predicted: str) -> bool:
    """Does ``predicted`` give ``count`` (a gold written in words: ``two``) as a count: ``2``,
    ``two``, ``two dogs``, ``two children``? Not ``-2``, ``3%``, ``3!``, ``two thirds``,
    ``2 more than five``, ``2 doubled``: a word after the count must be a plural noun."""
    if "%" in predicted or "\\" in predicted or re.search(r"-\s*\d|\d\s*[-/.,!^]|\d\s*[-/.,]\s*\d", predicted):
        return False
    m = _COUNT_OF.fullmatch(words_as_digits(predicted))
    if m is None or int(m.group(1)) != count:
        return False
    noun = m.group(2)  # a plural noun (or, for one, any noun): "2 dogs", "two children", "one cat"
    return noun is None or (not _NOT_COUNTED.fullmatch(noun) and len(noun) > 1
                            and (noun.endswith("s") or noun in _IRREGULAR_PLURALS or count == 1))


# --------------------------------------------------------------------------- numbers


def numbers_match(
    gold: str,
    predicted: str,
    rel_tol: float = 1e-6,
    abs_tol: float = 1e-9,
    *,
    percent_fraction: bool = False,
    decimal_comma: bool = False,
) -> bool:
    """Equal numbers: integers exactly, decimals to the gold's stated precision or ``rel_tol``;
    a unit on one side only is ignored. ``50%`` equals ``50``, and ``0.5`` only with
    ``percent_fraction``. Different units are converted in :func:`slow_match` (pint)."""
    g, p = _quantity(gold, decimal_comma), _quantity(predicted, decimal_comma)
    if g is None or p is None:
        return False
    if _units_differ(g, p):
        return bool(_units_match(g, p, rel_tol))
    return _close(g, p, rel_tol, abs_tol, percent_fraction)


def _close(g: _Quantity, p: _Quantity, rel_tol: float, abs_tol: float = 1e-9, percent_fraction: bool = False) -> bool:
    if _values_equal(g.exact, g.decimals, p.exact, p.decimals, rel_tol, abs_tol):
        return True
    if percent_fraction and g.percent != p.percent:
        scaled = p.exact * 100 if g.percent else p.exact / 100
        return _values_equal(g.exact, g.decimals, scaled, None, rel_tol, abs_tol)
    return False


def _values_equal(
    gold: Fraction, gold_decimals: int | None, pred: Fraction, pred_decimals: int | None,
    rel_tol: float, abs_tol: float = 1e-9,
) -> bool:
    """Integers exactly (no tolerance: 1000000 is not 1000001); a decimal gold also to its
    stated precision (``0.21`` accepts ``0.214``, rounded half up, not ``0.2``; ``0.8`` accepts
    ``0.83``, as MathVista rounds to a gold's precision) or within ``rel_tol``; a fraction gold
    within ``rel_tol``."""
    if gold == pred:
        return True
    if gold_decimals == 0:
        return False
    if gold_decimals and (pred_decimals is None or pred_decimals > gold_decimals):
        scale = 10**gold_decimals
        rounded = Fraction(math.floor(abs(pred) * scale + Fraction(1, 2)), scale)
        if (rounded if pred >= 0 else -rounded) == gold:
            return True
    # an absolute tolerance only where the gold is 0: against 9.11e-31 it would accept any small
    # value (1.67e-27, or 0), and a relative one says nothing about a gold of 0
    return math.isclose(float(gold), float(pred), rel_tol=rel_tol, abs_tol=abs_tol if gold == 0 else 0.0)


def _units_differ(g: _Quantity, p: _Quantity) -> bool:
    return bool(g.unit and p.unit and g.unit.lower() != p.unit.lower())


_UNIT_REGISTRY: Any = None


def _units_match(g: _Quantity, p: _Quantity, rel_tol: float) -> bool | None:
    """``0.12 m`` = ``12 cm`` through pint (imported on first use, ~0.5 s: only ever in the
    pool or the synchronous path); ``12 cm^2`` is not ``12 cm``. None when pint is missing
    or knows neither unit (words such as ``apples``): then only the numbers count."""
    global _UNIT_REGISTRY
    try:
        import pint
    except ImportError:
        return None
    if _UNIT_REGISTRY is None:
        _UNIT_REGISTRY = pint.UnitRegistry()
    try:
        gold_unit = _UNIT_REGISTRY.parse_units(_pint_unit(g.unit))
        pred_unit = _UNIT_REGISTRY.parse_units(_pint_unit(p.unit))
    except Exception:
        return None
    try:
        factor = _UNIT_REGISTRY.Quantity(1, pred_unit).to(gold_unit).magnitude
    except pint.DimensionalityError:
        return False
    except Exception:
        return None
    value = Fraction(float(p.exact) * float(factor)).limit_denominator(10**9)
    return _values_equal(g.exact, g.decimals, value, None, max(rel_tol, 1e-9))


def _pint_unit(unit: str) -> str:
    return unit.replace("^", "**").replace("deg", "degree") if unit != "deg" else "degree"


# --------------------------------------------------------------------------- sets and tuples

_SEQUENCE = re.compile(r"^(\\\{|[(\[{])(.*)(\\\}|[)\]}])$")
_CLOSERS = {"(": ")", "[": "]", "{": "}", "\\{": "\\}"}


def _sequence(canon: str, decimal_comma: bool) -> tuple[str, list[tuple[Fraction, int | None]]] | None:
    """``(1,2)``, ``[1,2,3]``, ``\\{1,2\\}``, ``1, 2``: its kind (``(``, ``[``, ``set``,
    ``list``) and its numbers; None unless every element is a plain number."""
    m = _SEQUENCE.match(canon)
    if m:
        if _CLOSERS[m.group(1)] != m.group(3):
            return None  # (1,2]: an interval, Math-Verify's
        kind = "set" if m.group(1) in ("{", "\\{") else m.group(1)
        body = m.group(2)
    elif "," in canon:
        kind, body = "list", canon
    else:
        return None
    if any(c in body for c in "()[]{}\\"):
        return None
    items = [_exact_number(item, False) for item in body.split(",")]
    if not items or any(n is None for n in items) or (kind == "list" and len(items) < 2):
        return None
    return kind, [(n.exact, n.decimals) for n in items if n is not None]


def sequence_match(gold: str, predicted: str, rel_tol: float = 1e-6, decimal_comma: bool = False) -> bool | None:
    """Tuples and lists of numbers in order, sets in any order: ``(2,2)`` = ``(2, 2)``,
    ``{1,2}`` = ``{2,1}``, a set gold accepts a list in any order, but ``2, 3`` is not
    ``3, 2``. None when either side is no such sequence, or for ``(1,2)`` against ``[1,2]``
    (intervals: Math-Verify's)."""
    g = _sequence(_canon_math(gold), decimal_comma)
    p = _sequence(_canon_math(predicted), decimal_comma)
    if g is None or p is None:
        return None
    (g_kind, g_items), (p_kind, p_items) = g, p
    if len(g_items) != len(p_items):
        return False
    if g_kind == "set":
        left = list(p_items)
        for gv, gd in g_items:
            match = next((i for i, (pv, pd) in enumerate(left) if _values_equal(gv, gd, pv, pd, rel_tol)), None)
            if match is None:
                return False
            left.pop(match)
        return True
    if {g_kind, p_kind} == {"(", "["} and len(g_items) == 2:
        return None
    return all(_values_equal(gv, gd, pv, pd, rel_tol) for (gv, gd), (pv, pd) in zip(g_items, p_items))


# --------------------------------------------------------------------------- VQA


def vqa_match(gold: str, predicted: str) -> bool:
    """The VQA evaluation's exact match after its normalisation (:func:`.normalize.vqa_normalize`):
    ``t-shirt`` = ``t shirt``, ``Two`` = ``2``, ``dont`` = ``don't``; ``2 dogs`` is not ``2``."""
    g, p = vqa_normalize(gold), vqa_normalize(predicted)
    return bool(g) and g == p


# --------------------------------------------------------------------------- multiple choice


def choice_match(gold: str, predicted: str, options: dict[str, str] | Sequence[str] | None = None) -> bool:
    """Match a multiple-choice answer by letter (``B``, ``(B)``, ``B. text``, ``Option B``) or
    option text (``blue``); the gold may itself be a letter or an option's text."""
    return _choice_match(gold, predicted, _clean_options(options))


def _choice_match(gold: str, predicted: str, opts: dict[str, str]) -> bool:
    """:func:`choice_match` on options already cleaned (``{"A": "red"}``: the driver's path)."""
    # The gold is read as an option's exact text first (MathVista gives the text, and a text
    # may itself look like a letter: "(b)"), then as a letter; the prediction as a letter
    # first (a model names its choice by letter: a bare "B" or an opening "(D)" is that
    # option, whatever the texts).
    wanted = gold.strip()
    exact = [k for k, text in opts.items() if text == wanted or text.strip() == wanted]
    gold_letter = exact[0] if len(exact) == 1 else _choice_letter(strip_answer(gold)) or _option_letter(gold, opts)
    pred = strip_answer(predicted)
    if "\\" in pred:  # "\\textbf{(B)}\\ 12", as AMC-style solutions box a choice
        pred = _LETTER_COMMAND.sub(r"\1", pred)
    pred_letter = (_named_letter(pred, opts) or _punctuated_letter(pred, opts) or _option_letter(pred, opts)
                   or _choice_letter(pred) or _leading_letter(pred) or _lower_letter(pred, opts))
    if pred_letter and _contradicted(pred, pred_letter, opts):
        return False  # "(A) 12 cm" where 12 cm is B's text: two choices, right by luck whichever is graded
    if gold_letter and pred_letter:
        return gold_letter == pred_letter
    gold_text = opts.get(gold_letter, gold) if gold_letter else gold
    # ("5 meters" names no option by its text or unit: it is option "5 m" if the units convert)
    return text_match(gold_text, pred) or (gold_letter is not None and numbers_match(gold_text, pred))


_OPENING_LETTER = re.compile(r"\(\s*([A-Za-z])\s*\)")


def _named_letter(text: str, opts: dict[str, str]) -> str | None:
    """An option key the prediction names outright: a bare letter, or an opening ``(D)``."""
    bare = _choice_letter(text)
    if bare in opts:
        return bare
    m = _OPENING_LETTER.match(text.strip())
    return m.group(1).upper() if m and m.group(1).upper() in opts else None


#: ``A. 12 cm``, ``B) 14``, ``C: text``: a letter its punctuation marks as a choice's.
_PUNCTUATED_LETTER = re.compile(r"[(\[]?\s*([A-Z])\s*(?:[)\]][.:]?|[.:])(?:\s|$)|([a-z])[.)]\s")


def _punctuated_letter(text: str, opts: dict[str, str]) -> str | None:
    """An option key an answer opens with, marked as a choice (``A. 12 cm``), before the text
    after it is read: ``A. 12 cm`` is A even where option B is 12 cm (the article-like ``A``
    would otherwise be dropped and the rest read as B's text)."""
    m = _PUNCTUATED_LETTER.match(text.strip())
    letter = (m.group(1) or m.group(2).upper()) if m else None
    return letter if letter in opts else None


def _contradicted(pred: str, letter: str, opts: dict[str, str]) -> bool:
    """Does an answer that opens with the marked letter ``letter`` go on with another option's
    text, word for word (``(A) 12 cm``, ``A. 12 cm`` where 12 cm is option B; ``(B) 12`` where
    A is "12 apples" names B)?"""
    pred = pred.strip()
    marked = _PUNCTUATED_LETTER.match(pred)  # the marked letter _punctuated_letter reads
    if marked is None:
        return False
    rest = normalize_text(pred[marked.end() :])
    return bool(rest) and any(key != letter and normalize_text(text) == rest for key, text in opts.items())


def _lower_letter(text: str, opts: dict[str, str]) -> str | None:
    """``b) 12``: an option's letter written in lower case and closed by a bracket (a bare
    ``a`` is a word, not a choice)."""
    m = _LOWER_LEAD.match(text.strip())
    return m.group(1).upper() if m and m.group(1).upper() in opts else None


def _leading_letter(text: str) -> str | None:
    """``B because ...``, ``B) 12 V``: the letter an answer opens with, unless the answer
    goes on to call it wrong (``A is wrong, B``)."""
    t = text.strip()
    m = _CHOICE_LEAD.match(t)
    return m.group(1) if m and not _CHOICE_DENIED.match(t[m.end():]) else None


# --------------------------------------------------------------------------- the cheap paths


def cheap_check(
    kind: str,
    gold: str,
    predicted: str,
    options: Options = (),
    rel_tol: float = 1e-6,
    *,
    declared_number: bool = False,
    decimal_comma: bool = False,
    asked: str | None = None,
) -> tuple[bool | None, str]:
    """Decide without sympy where string work can: ``(verdict, gold_for_math)``, where a
    ``None`` verdict means "ask the pool (:func:`slow_match`) whether ``gold_for_math``
    equals ``predicted``".

    Text, choice and VQA always decide here; numbers decide when the prediction parses as
    one (or is plain words) and its unit, if both sides have one, is the gold's; math decides
    on equal LaTeX, two plain numbers, number tuples and sets, or words.
    ``declared_number``: the problem declared ``answer_type = "number"`` (not inferred by
    ``auto``): a value, so 50% is 0.5 too, and a sentence is no answer at all.
    ``asked``: the question asks for a most (``bounds.UPPER``) or a least (``bounds.LOWER``),
    which a bound of that direction holding its number states (``at most 12``); any other
    bound is wrong (:mod:`.bounds`).
    """
    if not predicted.strip():
        return False, gold
    bound = split_bound(predicted) if gold.strip() != predicted.strip() else None
    if bound is not None and not states_bound(gold):
        direction, value = bound
        if kind == "choice":  # an option may be a bound ("More than 12"); else its number names one, if asked for
            named = _choice_match(gold, predicted, dict(options))
            return named or (direction == asked and _choice_match(gold, value, dict(options))), gold
        if direction != asked:  # a strict bound never is
            return False, gold  # "> 12", "at least 12", "\\geq 12" are no 12 (Math-Verify read them as 12)
        predicted = value  # "at most 12", asked for the most: 12
    if kind == "choice":
        return _choice_match(gold, predicted, dict(options)), gold  # options come cleaned (kinds)
    if kind != "vqa" and gold.strip() != predicted.strip():
        if eras_differ(gold, predicted):
            return False, gold  # "1776 BC" is no 1776 AD
        # times and dates before Math-Verify, which reads "10 p.m." as 10 and no date as a
        # date ("3 March 2021" for "March 3, 2021"); and before text ("noon" is 12 p.m.)
        written = times_match(gold, predicted)
        if written is None:
            written = dates_match(gold, predicted)
        if written is not None:
            return written, gold
    if kind == "text":
        return text_match(gold, predicted), gold
    if kind == "vqa":
        return vqa_match(gold, predicted), gold
    if gold.strip() == predicted.strip():
        return True, gold
    if (_COLON_PAIR.match(gold) and _NUMBER_ONLY.match(predicted)) or (_COLON_PAIR.match(predicted) and _NUMBER_ONLY.match(gold)):
        return False, gold  # a ratio or a time against a number: 10:30 is no 1/3, a 4:2 score no 2
    if (_HYPHENED.match(gold) and _NUMBER_ONLY.match(predicted)) or (_HYPHENED.match(predicted) and _NUMBER_ONLY.match(gold)):
        return False, gold  # a score, date or number with hyphens: "2-1" is no 1, "2021-03-12" no 2006
    if not decimal_comma and _comma_read_as_point(predicted, gold):
        decimal_comma = True
    if kind == "number":
        if declared_number and len(_PROSE_WORD.findall(words_as_digits(predicted))) >= 4:
            return False, gold  # a sentence is not a number (extraction reduces one to its value)
        g = _quantity(gold, decimal_comma)
        if g is not None:
            p = _quantity(predicted, decimal_comma)
            if p is not None:
                if _units_differ(g, p):
                    return None, gold  # converted in the pool: pint costs ~0.5 s to import
                return _close(g, p, rel_tol, percent_fraction=declared_number), g.text
            if _is_words(predicted) or not any(c.isdigit() or c == "\\" for c in predicted):
                return False, g.text
            return None, g.text
    g_canon, p_canon = _canon_math(gold), _canon_math(predicted)
    if g_canon and g_canon == p_canon:
        return True, gold
    g_num = _number_of(_LATEX_SPACE.sub(" ", unwrap(gold)), decimal_comma)
    if g_num is not None:
        p_num = _number_of(_LATEX_SPACE.sub(" ", unwrap(predicted)), decimal_comma)
        if p_num is not None:
            return _values_equal(g_num.exact, g_num.decimals, p_num.exact, p_num.decimals, rel_tol), gold
    sequence = sequence_match(gold, predicted, rel_tol, decimal_comma)
    if sequence is not None:
        return sequence, gold
    if _is_words(gold) or _is_words(predicted):  # words are not expressions: never t·e·a·l
        return text_match(gold, predicted), gold
    return None, gold


_PROSE_WORD = re.compile(r"\b[A-Za-z]{2,}\b")
#: A ratio or a time written with its colon: ``3:2``, ``10:30``, ``$4 : 1$``.
_COLON_PAIR = re.compile(r"^[\s$]*[-+]?\d+(?:\.\d+)?\s*:\s*\d+(?:\.\d+)?[\s$.]*$")
_HYPHENED = re.compile(r"^[\s$]*\d+(?:-\d+)+[\s$.]*$")
_NUMBER_ONLY = re.compile(r"^[\s$]*[-+]?(?:\d[\d,.]*(?:\s*/\s*\d+)?|\\[dt]?frac\{\d+\}\{\d+\})\s*(?:\\?%)?[\s$.]*$")
_COMMA_DECIMAL = re.compile(r"\s*[-+]?\d+,(?:\d{1,2}|\d{4,})\s*")  # not a thousands group
_POINT_DECIMAL = re.compile(r"\s*[-+]?\d+\.\d+\s*")


def _comma_read_as_point(one: str, other: str) -> bool:
    """A prediction ``1000,99`` against the gold ``1000.99``: two digit runs joined by a comma
    that cannot be a thousands separator, where the gold is one number with a decimal point.
    Read as a list it could never equal one number, so the comma is a decimal comma whatever
    ``[verify] decimal_comma`` says. Not the other way round: a gold ``2,3`` is a list of two
    answers unless ``decimal_comma`` is set."""
    return bool(_COMMA_DECIMAL.fullmatch(one) and _POINT_DECIMAL.fullmatch(other))


def slow_match(gold: str, predicted: str, timeout_s: int = 5, rel_tol: float = 1e-6, decimal_comma: bool = False) -> bool:
    """What the pool runs: quantities in different units converted through pint
    (``0.12 m`` = ``12 cm``), everything else through Math-Verify (:func:`math_match`)."""
    g, p = _quantity(gold, decimal_comma), _quantity(predicted, decimal_comma)
    if g is not None and p is not None and _units_differ(g, p):
        verdict = _units_match(g, p, rel_tol)
        return _close(g, p, rel_tol) if verdict is None else verdict
    return math_match(gold, predicted, timeout_s)


# --------------------------------------------------------------------------- Math-Verify


class _TimeoutLog(logging.Handler):
    """Counts Math-Verify's "Timeout during parsing/comparison" warnings: its only sign that
    it ran out of time (it then answers False, as if the answers differed)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("Timeout during"):
            self.count += 1


_MATH_VERIFY_TIMEOUTS = _TimeoutLog()


def math_match(gold: str, predicted: str, timeout_s: int = 5) -> bool:
    """Math-Verify equivalence (``1/2`` = ``0.5`` = ``\\frac{1}{2}``, sets, intervals...).

    Math-Verify bounds its time with ``signal.alarm``, which only works in the main
    thread; elsewhere (threads, async actors) it runs without its own timeout. When it
    does run out of time it answers False; that raises :class:`CheckTimedOut` here, so
    the check is counted as a timeout rather than taken for "not equal".
    """
    from math_verify import parse, verify  # imported on first use: it pulls in sympy

    watched = logging.getLogger("math_verify")
    if _MATH_VERIFY_TIMEOUTS not in watched.handlers:
        watched.addHandler(_MATH_VERIFY_TIMEOUTS)
    before = _MATH_VERIFY_TIMEOUTS.count
    in_main = threading.current_thread() is threading.main_thread()
    timeout = max(1, int(timeout_s)) if in_main else None
    try:
        gold_parsed = parse(_as_math(gold), parsing_timeout=timeout)
        pred_parsed = parse(_as_math(predicted), parsing_timeout=timeout)
        same = bool(gold_parsed and pred_parsed and verify(gold_parsed, pred_parsed, timeout_seconds=timeout))
    except Exception:  # Math-Verify is total by default; guard against the odd escape
        same = False
    if not same and _MATH_VERIFY_TIMEOUTS.count != before:
        raise CheckTimedOut(f"Math-Verify ran past its {timeout} s bound")
    return same


#: ``sqrt(2)`` written as code: inside ``$…$`` Math-Verify reads it as s·q·r·t(2), and ``3 sqrt(2)`` as 3.
_CODE_SQRT = re.compile(r"(?<![\\A-Za-z])sqrt\s*\(([^()]*)\)")


#: E-notation (``5e-3``): inside ``$…$`` Math-Verify reads it as 5·e − 3.
_E_NOTATION = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)[eE]([-+]?\d+)(?![\w.])")


def _as_math(text: str) -> str:
    t = text.strip()
    if "sqrt" in t:
        t = _CODE_SQRT.sub(r"\\sqrt{\1}", t)
    if "e" in t or "E" in t:
        t = _E_NOTATION.sub(r"\1\\times 10^{\2}", t)
    if t.startswith("$") or "\\boxed" in t:
        return t
    return f"${t}$"
