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

from prmtree.engine.answers.extract import _strip_answer
from prmtree.engine.answers.kinds import Options, _clean_options
from prmtree.engine.answers.normalize import (
    _canon_math,
    _choice_letter,
    _is_words,
    _option_letter,
    _Quantity,
    _quantity,
    normalize_text,
    parse_number,
)
from prmtree.engine.answers.pool import CheckTimedOut

_CHOICE_LEAD = re.compile(r"^[(\[]?([A-Z])[)\]]?(?:[.:)]|\s|$)")
# A leading letter the answer goes on to call wrong (``A is wrong, B``) is not its choice.
_CHOICE_DENIED = re.compile(r"^\s*(?:is|are)\s+(?:not|wrong|incorrect|false)\b|^\s*isn't\b", re.IGNORECASE)
# ``No, it is not.``: a yes/no word, then punctuation, a bracket, a line break or a clause
# restating it; ``no idea`` is not ``no``, ``yes or no`` is neither.
_YES_NO_LEAD = re.compile(
    r"^[*_\s]*(yes|no)\b[*_]*(?:\s*[,.;:!?()\[\]\u2014\u2013-]|\s*$|\s*\n|\s+(?:it|it's|its|they|there|this|that|"
    r"the|he|she|we|i|you|these|those|because|since)\b)", re.IGNORECASE)
_YES_AND_NO = re.compile(r"^[*_\s]*(?:yes|no)[*_]*\s*(?:or|and|/)?\s*[*_]*(?:yes|no)\b", re.IGNORECASE)

# --------------------------------------------------------------------------- text


def text_match(gold: str, predicted: str) -> bool:
    """Normalised equality; a yes/no gold also accepts ``No, it is not.``-style answers
    (the word, then punctuation or a restating clause: ``no idea`` is not ``no``)."""
    g, p = normalize_text(gold), normalize_text(predicted)
    if not g or not p:
        return False
    if g == p:
        return True
    if g not in ("yes", "no"):
        return False
    raw = _strip_answer(predicted).strip()
    lead = _YES_NO_LEAD.match(raw)
    return bool(lead) and lead.group(1).lower() == g and not _YES_AND_NO.match(raw)


# --------------------------------------------------------------------------- numbers


def numbers_match(gold: str, predicted: str, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> bool:
    """Equal within tolerance, units ignored; ``50%`` also equals ``0.5``."""
    g, p = _quantity(gold), _quantity(predicted)
    if g is None or p is None:
        return False
    return _close(g, p, rel_tol, abs_tol)


def _close(g: _Quantity, p: _Quantity, rel_tol: float, abs_tol: float = 1e-9) -> bool:
    if math.isclose(g.value, p.value, rel_tol=rel_tol, abs_tol=abs_tol):
        return True
    if g.percent != p.percent:
        scaled = (g.value, p.value * 100) if g.percent else (g.value * 100, p.value)
        return math.isclose(*scaled, rel_tol=rel_tol, abs_tol=abs_tol)
    return False


# --------------------------------------------------------------------------- multiple choice


def choice_match(gold: str, predicted: str, options: dict[str, str] | Sequence[str] | None = None) -> bool:
    """Match a multiple-choice answer by letter (``B``, ``(B)``, ``B. text``, ``Option B``) or
    option text (``blue``); the gold may itself be a letter or an option's text."""
    opts = _clean_options(options)
    gold_letter = _choice_letter(_strip_answer(gold)) or _option_letter(gold, opts)
    pred = _strip_answer(predicted)
    pred_letter = _bare if (_bare := _choice_letter(pred)) in opts else (_option_letter(pred, opts) or _choice_letter(pred) or _leading_letter(pred))  # noqa: E501 - issue 19: a bare letter is the option's letter
    if gold_letter and pred_letter:
        return gold_letter == pred_letter
    gold_text = opts.get(gold_letter, gold) if gold_letter else gold
    return text_match(gold_text, pred)


def _leading_letter(text: str) -> str | None:
    """``B because ...``, ``B) 12 V``: the letter an answer opens with, unless the answer
    goes on to call it wrong (``A is wrong, B``)."""
    t = text.strip()
    m = _CHOICE_LEAD.match(t)
    return m.group(1) if m and not _CHOICE_DENIED.match(t[m.end():]) else None


# --------------------------------------------------------------------------- the cheap paths


def cheap_check(
    kind: str, gold: str, predicted: str, options: Options = (), rel_tol: float = 1e-6
) -> tuple[bool | None, str]:
    """Decide without sympy where string work can: ``(verdict, gold_for_math)``, where a
    ``None`` verdict means "ask Math-Verify whether ``gold_for_math`` equals ``predicted``".

    Text and choice always decide here; numbers decide when the prediction parses as one
    (or is plain words); math decides on equal LaTeX, two plain numbers, or words.
    """
    if not predicted.strip():
        return False, gold
    if kind == "choice":
        return choice_match(gold, predicted, dict(options)), gold
    if kind == "text":
        return text_match(gold, predicted), gold
    if gold.strip() == predicted.strip():
        return True, gold
    if kind == "number":
        g = _quantity(gold)
        if g is not None:
            p = _quantity(predicted)
            if p is not None:
                return _close(g, p, rel_tol), g.text
            if _is_words(predicted) or not any(c.isdigit() or c == "\\" for c in predicted):
                return False, g.text
            return None, g.text
    g_canon, p_canon = _canon_math(gold), _canon_math(predicted)
    if g_canon and g_canon == p_canon:
        return True, gold
    g_num, p_num = parse_number(g_canon), parse_number(p_canon)
    if g_num is not None and p_num is not None:
        return math.isclose(g_num, p_num, rel_tol=rel_tol, abs_tol=1e-9), gold
    if _is_words(gold) or _is_words(predicted):  # words are not expressions: never t·e·a·l
        return text_match(gold, predicted), gold
    return None, gold


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


def _as_math(text: str) -> str:
    t = text.strip()
    if t.startswith("$") or "\\boxed" in t:
        return t
    return f"${t}$"
