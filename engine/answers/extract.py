"""Reading the answer out of model text: :func:`find_answer` for a whole completion,
:func:`read_answer` for an answer already found.

A completion ends in a ``\\boxed{}``, an ``Answer:`` line or prose; boxes are found by
:mod:`.marks`, prose is read by :mod:`.prose`, a last-sentence retraction by
:mod:`.retractions`, and what is found is refused where grading it would reward a guess
(hedged, several choices, a denied value).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from prmtree.engine.answers.choices import (
    LETTERS_GOLD,
    SINGLE_LETTER,
    also_offered,
    choice_in,
    option_keys,
    several_choices,
)
from prmtree.engine.answers.kinds import _clean_options
from prmtree.engine.answers.marks import all_boxed, final_part, reasoning_markup, top_level_parts, unwrap
from prmtree.engine.answers.prose import first_answer, last_phrase, phrase_stated, read_prose, stated_before
from prmtree.engine.answers.retractions import last_retraction
from prmtree.engine.answers.sentences import (
    NEGATED_VALUE,
    SCAN_CHARS,
    denied,
    hedged,
    value_stated,
    values_offered,
)
from prmtree.engine.answers.symbols import ascii_math, exact_numbers
from prmtree.engine.answers.values import another_answer, bare_answer, one_value_twice, two_values


#: A value (or choice letter), then an aside about it in words: ``3 (three)``, ``12, not 13``,
#: ``B, not C``, ``**12**``; not ``3(2+1)`` or ``2 (\\sqrt{2})``, products, nor ``5 (or 6)``, a hedge.
_VALUE_ASIDE = re.compile(
    r"^[*_`]*(\$?[-+]?\d[\d,.]*(?:\s*%|\s+[A-Za-z]+)?\$?|[(\[]?[A-Z][)\]]?)[*_`]*"
    r"(?:\s+\((?![^()]*\\)(?![^()]*\b(?i:or|maybe|perhaps|possibly|probably|sure|certain)\b)(?=[^()]*[A-Za-z]{3})[^()]*\)"
    r"|\s*[,;]\s*\(?not\s+(?:\$?[-+]?\d|[(\[]?[A-Z]\b)[^()]*\)?|[*_`]+)\s*\.?$")


#: Words, then a denial of other words: ``blue, not red`` (the reader reads ``blue``).
_WORDS_NOT = re.compile(r"^([A-Za-z][\w'-]*(?:\s[A-Za-z][\w'-]*){0,3})\s*[,;]\s*not\s+(?:a\s+|an\s+|the\s+)?"
                        r"[A-Za-z][\w'-]*(?:\s[A-Za-z][\w'-]*){0,3}\s*\.?$")
#: A choice letter, then text (its option's, if :func:`read_answer` finds it so): ``B, 12 cm``.
_LETTER_RESTATED = re.compile(r"^\(?([A-Z])\)?\s*[,:\u2014-]\s*(\S.*)$")


#: An exact value, then its decimal: ``6\\pi \\approx 18.85``, ``\\sqrt{13} ≈ 3.61``, ``8\\sqrt{3} ≈ 13.86``.
_APPROXIMATED = re.compile(r"^(?P<exact>.*?(?:\\(?:pi|sqrt|frac|dfrac|tfrac)(?![A-Za-z])|/).*?)\s*(?:≈|\\approx)\s*"
                           r"(?P<decimal>[-+]?\d+\.\d+)\s*\$?\s*\.?$")
_DECIMAL_GOLD = re.compile(r"^\s*\$?[-+]?\d*\.\d+\$?\s*$")


def _approximated(answer: str, gold: str) -> str:
    """An answer that states an exact value and its rounding (``6\\pi \\approx 18.85``) states
    both: the rounding where the gold is a decimal, else the exact value. A value with a unit
    and its conversion (``100 km/h ≈ 62 mph``) is left to the other readers: the first stands."""
    m = _APPROXIMATED.match(answer)
    if m is None:
        return answer
    return m.group("decimal") if _DECIMAL_GOLD.match(gold) else m.group("exact").strip().strip("$").strip()


@dataclass(frozen=True)
class Found:
    """What :func:`find_answer` read: the ``answer`` (None: none found) and, when the text
    may not be graded, why (``refused``: ``"no answer"``, ``"hedged"``, ...)."""

    answer: str | None
    refused: str | None = None


#: A gold answer that names more than one answer (``A or B``, ``yes or no``, ``either … or …``)
#: or doubts itself (``not sure``).
_HEDGED_GOLD = re.compile(  # choice letters are capitals: ``x/y`` and ``m/s`` are answers
    r"^\s*(?:\(?[A-Z]\)?\s*(?i:or|/)\s*\(?[A-Z]\)?|(?i:yes\s*(?:or|/)\s*no|no\s*(?:or|/)\s*yes"
    r"|either\s.+\sor\s.+|not\s+sure|unsure|i\s+don'?t\s+know))\s*\.?\s*$",
)
_OPEN_BRACE = re.compile(r"(?<!\\)\{")
_CLOSE_BRACE = re.compile(r"(?<!\\)\}")


def gold_problem(gold: str) -> str | None:
    """Why a gold answer's text cannot judge anything, or None: it hedges between choices or
    doubts itself (a model hedging the same way would be right: ``A or B``, ``not sure``),
    says there is no answer (``N/A``), or is cut off (unbalanced braces: ``\\frac{1}{``).
    One rule for the run's input and for :func:`prmtree.grade`."""
    text = gold.strip()
    if text.lower() in ("n/a", "n.a."):
        return "says there is no answer: give the gold answer, or drop the row"
    if _HEDGED_GOLD.match(text):
        return "is hedged (more than one answer): give the one gold answer"
    if len(_OPEN_BRACE.findall(text)) != len(_CLOSE_BRACE.findall(text)):  # ``\\{`` is a set's brace
        return "has unbalanced braces (cut off?): give the whole gold answer"
    return None


def find_answer(text: str, gold: str = "", options: object = None, choice: bool = False,
                markup: bool | None = None) -> Found:
    """The final answer in ``text``, for a problem whose gold answer is ``gold``.

    Boxes first: several boxes make one set/tuple answer when the gold has several parts,
    else the last box counts; but a final-answer phrase (``Final Answer: …``, ``the answer
    is …``) after the last box wins over boxed working values. Nothing boxed: the answer
    stated in prose (:func:`prmtree.engine.answers.prose.read_prose`). With ``options`` (or ``choice``), a choice
    named inside a sentence is read out (:func:`choice_in`). A hedged answer is refused. A
    reasoning model's answer is read after its ``</think>`` (:func:`final_part`); ``markup``:
    whether the text has its tags, when the caller checked already.
    """
    if text and (reasoning_markup(text) if markup is None else markup):
        text = final_part(text)  # type: ignore[assignment]
        if text is None:
            return Found(None, "unfinished reasoning")
    if not text or text.isspace():
        return Found(None, "no answer")
    text = ascii_math(text)  # "2√2", "x²", "57 − 45": as the readers below know them
    answer: str | None
    choices = _choices(gold, options, choice)
    boxes = all_boxed(text) if ("\\boxed" in text or "\\fbox" in text) else []
    if boxes:
        tail = text[boxes[-1][0] :][-SCAN_CHARS:]
        phrase = last_phrase(tail, first_answer(tail))
        stated = phrase_stated(tail, phrase) if phrase else ""
        if stated:
            answer = unwrap(value_stated(stated, _is_yes_no(gold, options), choices) if len(stated.split()) > 3 else stated)
        else:
            contents = [c for c in dict.fromkeys(c for _, c in boxes) if c] if len(boxes) > 1 else ()
            if choices and len(contents) > 1 and _several_boxed(contents, choices, options):  # "\boxed{B} or \boxed{C}"
                return Found(", ".join(contents), "hedged")
            if len(contents) > 1 and gold and top_level_parts(gold) > 1:
                answer = ", ".join(contents)
            else:
                answer = boxes[-1][1] or None
    elif "\\boxed" in text or "\\fbox" in text:
        return Found(None, "unterminated box")
    else:
        answer, corrected = read_prose(text, _is_yes_no(gold, options), choices)
        if corrected:  # "The answer is 12.\n\nLet me recount: there are 13.": two answers given
            return Found(answer.strip(), "hedged")  # type: ignore[union-attr]
    if answer and choices and also_offered(text[-400:], answer, choices):  # "B. C is also possible."
        return Found(answer.strip(), "hedged")
    if answer:
        taken = retracted(text, answer, gold, options)  # "The answer is 12. Wait, actually 13.": two answers
        if taken is not None:
            return taken if taken.refused else read_answer_memo(taken.answer, gold, options, choice)
    return read_answer_memo(answer, gold, options, choice)


def says_nothing(step: str, found: Found) -> bool:
    """Is ``found``, read from a solution's last ``step``, that step as it stands, with no value
    or choice in it (``Wait``, ``Hope this helps!``)? Then the answer is the whole text's,
    as :func:`prmtree.grade` reads it (``… the answer is 12.\n\nWait`` is 12)."""
    answer = found.answer
    if answer is None or found.refused is not None or len(step) > 200:
        return False
    if answer.strip().rstrip(".!") != step.strip().rstrip(".!") or _ANY_DIGIT.search(step):
        return False  # (the common case: something was read out of the step)
    return bare_answer(answer, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") is None


_ANY_DIGIT = re.compile(r"\d")


def retracted(text: str, answer: str, gold: str = "", options: object = None) -> Found | None:
    """``text`` whose last sentence takes back the answer it stated for another (``The answer
    is 12. Wait, actually 13.``): refused as hedged, since right either way would reward
    guessing twice. The same answer again (``12. Actually, 12.0.``, ``C. Actually, 12.`` where
    C is 12), or one not plainly comparable with it, takes nothing back. With no answer stated
    before it, the retraction's answer is the answer (``Step 1: 3·4 = 12. Actually, 13.`` is
    13). None: no retraction."""
    letters = option_keys(options) or "ABCDEFGH"
    yes_no = _is_yes_no(gold, options)
    found = last_retraction(text, letters, yes_no)
    if found is None:
        return None
    start, new = found
    cut = start + 1 if text[start : start + 1] in (".", "!", "?") else start  # (a full stop is the statement's)
    before = stated_before(text[:cut], yes_no, letters, _choices(gold, options, False))
    if before is None:
        return Found(new)
    before = one_value_twice(before, gold) or before  # "0.75, or 75%. Wait, actually 0.8.": one answer, then another
    if not another_answer(before.replace("\\$", "").strip("$ "), new, options):  # ("$\\$12$": 12)
        return None
    return Found(before if new in answer else answer.strip(), "hedged")  # (what was stated, not the retraction)


def _several_boxed(contents: list[str], choices: str, options: object = None) -> bool:
    """Do the boxes name more than one of a multiple-choice question's letters? A box of an
    option's text and a box of its letter name one (``$\\boxed{12}$, so the answer is
    $\\boxed{B}$`` where B is 12)."""
    named = {str(c).strip("()[]. ") for c in (bare_answer(c, choices) for c in contents) if c is not None}
    texts = {_plain(text): key for key, text in _clean_options(options).items()} if options else {}
    return len({c if len(c) == 1 and c in choices else texts.get(_plain(c), c) for c in named}) > 1  # (a letter is its own)


def _plain(text: str) -> str:
    """An option's text or a box's content as they are compared for :func:`_several_boxed`:
    without maths dollars, spaces and case."""
    return "".join(text.strip().strip("$").split()).lower()


def _choices(gold: str, options: object, choice: bool) -> str:
    """The letters of a multiple-choice question (its options', else A to H when it is one by
    its ``answer_type`` or its one-letter gold), or "" for any other question."""
    if options or choice or (len(gold) < 8 and SINGLE_LETTER.match(gold)):  # (cheap test first: per rollout)
        return option_keys(options) or "ABCDEFGH"
    return ""


def _is_yes_no(gold: str, options: object = None) -> bool:
    """Is ``gold`` a yes/no verdict, or a choice between the options Yes and No (ScienceQA's,
    MMMU's ``["Yes", "No"]`` with gold ``B``)? Its answer may then open a sentence: ``No, it is not.``"""
    if len(gold) < 8 and gold.strip().strip(".*_").lower() in ("yes", "no"):
        return True
    if isinstance(options, dict):
        options = list(options.values())
    return (isinstance(options, (list, tuple)) and len(options) == 2
            and sorted(str(o).strip().strip(".").lower() for o in options) == ["no", "yes"])


#: Answers (and golds) longer than this are read afresh each time rather than memoised.
_MEMO_CHARS = 256
_MEMO_SIZE = 1 << 15


def read_answer_memo(answer: str | None, gold: str = "", options: object = None, choice: bool = False) -> Found:
    """:func:`read_answer`, memoised by its arguments: it is pure, and a run reads the same few
    answers (``B``, ``12``, ``\\frac{1}{2}``) for the same gold again and again, where its
    choice and hedge patterns cost microseconds per rollout. Long answers and options that
    cannot be a key are read afresh."""
    if (answer is None or type(answer) is not str or type(gold) is not str or type(choice) is not bool
            or len(answer) > _MEMO_CHARS or len(gold) > _MEMO_CHARS):
        return read_answer(answer, gold, options, choice)
    if options is None:
        okey: Any = None
    elif type(options) is dict and all(type(k) is str for k in options):  # keys read as text
        okey = ("dict", tuple(options.items()))
    elif type(options) in (list, tuple):
        okey = ("seq", tuple(options))
    else:
        return read_answer(answer, gold, options, choice)
    try:
        return _read_keyed(answer, gold, okey, choice)
    except TypeError:  # unhashable option values
        return read_answer(answer, gold, options, choice)


@functools.lru_cache(maxsize=_MEMO_SIZE)
def _read_keyed(answer: str, gold: str, okey: Any, choice: bool) -> Found:
    options = None if okey is None else dict(okey[1]) if okey[0] == "dict" else okey[1]
    return read_answer(answer, gold, options, choice)


def read_answer(answer: str | None, gold: str = "", options: object = None, choice: bool = False) -> Found:
    """``answer`` (already the final answer) as it is graded: a choice named inside a
    sentence read out (``options`` given, or ``choice``); refused: a hedged answer, several
    choices for a one-choice gold, a value the answer denies (``not 5``)."""
    answer = exact_numbers(ascii_math(answer).strip()) if answer else None  # (stripped after: "\u200b 12")
    if not answer:
        return Found(None, "no answer")
    gold = gold if isinstance(gold, str) else str(gold)
    one_choice = bool(options or choice or SINGLE_LETTER.match(gold))
    if one_choice and not LETTERS_GOLD.match(gold.strip()) and several_choices(answer, options):
        return Found(answer, "hedged")
    if (not one_choice and len(answer) < 300 and denied(answer) and not NEGATED_VALUE.search(gold)
            and not _is_yes_no(gold)):
        return Found(None, "negated")  # "It can't be 5", "not 5 apples": no value stated
    if options or choice:
        answer = choice_in(answer, options)
    if answer[0] == "*" or answer[-1] == "*":  # "**Paris**" (emphasis) is Paris
        answer = answer.strip("*").strip() or answer
    if "≈" in answer or "\\approx" in answer:
        answer = _approximated(answer, gold)
    aside = _VALUE_ASIDE.match(answer) or _WORDS_NOT.match(answer)
    if aside:  # "3 (three)", "12, not 13", "**12**", "blue, not red": the value
        answer = aside.group(1)
    elif options and len(answer) < 200:
        restated = _LETTER_RESTATED.match(answer)
        if restated and restated.group(2).strip().rstrip(".").lower() == _clean_options(
                options).get(restated.group(1), "").strip().rstrip(".").lower():
            answer = restated.group(1)  # "B, 12 cm": the choice, its option's text said again
    if " or " in answer.lower() and gold and top_level_parts(gold) > 1:
        answer = values_offered(answer) or answer  # "x = -1 or x = 3" for the gold "-1, 3": both roots
    if "or " in answer.lower():
        if two_values(answer):  # "12 (or 13)", "2, or equivalently -2"
            return Found(answer, "hedged")
        answer = one_value_twice(answer, gold) or answer  # "0.75, or 75%": one value, not a hedge
    if hedged(answer, gold):
        return Found(answer, "hedged")
    return Found(answer)
