"""Answer typing: which kind of check a problem's answers get.

Plain words are *text* and never reach sympy (Math-Verify reads ``teal`` as the product
t·e·a·l, calls it equal to ``tale``, and spends up to hundreds of milliseconds doing so);
numbers, with their units, currency and percent signs, are *number*; fractions and LaTeX
are *math*; a lone letter with options is *choice*. A problem's ``answer_type`` says so,
or ``"auto"`` guesses from the gold answer and the options in ``meta``. *vqa* (never
guessed) is the VQA evaluation's exact match after its normalisation.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any, Literal

from prmtree.engine.answers.marks import unwrap
from prmtree.engine.answers.normalize import (
    _choice_letter,
    _is_words,
    _option_letter,
    _quantity,
)
from prmtree.engine.answers.symbols import ascii_math

if TYPE_CHECKING:
    from prmtree.engine.records import Problem

AnswerKind = Literal["math", "choice", "number", "text", "vqa"]
Options = tuple[tuple[str, str], ...]

_OPTION_PREFIX = re.compile(r"^[(\[]?[A-Za-z][)\]]?[.:)]\s+|^\([A-Za-z]\)\s*")


def _clean_options(options: Any) -> dict[str, str]:
    """``{"A": "red"}``, ``{"(a)": "red"}`` or ``["red", "blue"]``/``["A. red", …]`` → ``{"A": "red"}``."""
    if isinstance(options, dict):
        return {(_choice_letter(str(k)) or str(k).strip().upper()): ascii_math(str(v)) for k, v in options.items()}
    if isinstance(options, (list, tuple)):
        # "A. red" -> "red", but an option whose whole text is a letter ("(b)": MathVista) stays itself
        return {chr(65 + i): ascii_math(_OPTION_PREFIX.sub("", str(v).strip()) or str(v).strip())
                for i, v in enumerate(options[:26])}
    return {}


def options_of(problem: Problem) -> Options:
    """The problem's options cleaned to ``(("A", "red"), ...)`` (what the checks and the extractor read)."""
    meta = problem.meta
    raw = meta.get("options") if isinstance(meta, dict) else None
    if not raw or not isinstance(raw, (dict, list, tuple)):
        return ()
    try:  # cleaned once per distinct option set: this runs on every check, memo hits included
        if isinstance(raw, dict):
            return _cleaned_options(tuple(raw.items()), True)
        return _cleaned_options(tuple(raw), False)
    except TypeError:  # unhashable option values
        return tuple(_clean_options(raw).items())


@functools.lru_cache(maxsize=1 << 14)
def _cleaned_options(raw: tuple, is_dict: bool) -> Options:
    return tuple(_clean_options(dict(raw) if is_dict else raw).items())


def answer_kind(problem: Problem) -> AnswerKind:
    """The kind of check a problem's answers get: its ``answer_type``, or for ``"auto"`` a
    guess from the gold answer (and the options in ``meta``, if any)."""
    if problem.answer_type != "auto":
        return problem.answer_type  # type: ignore[return-value]
    return _auto_kind(problem.answer, options_of(problem))


@functools.lru_cache(maxsize=1 << 16)
def _auto_kind(gold: str, options: Options) -> AnswerKind:
    g = unwrap(gold)
    letter = _choice_letter(g)
    if letter and (options or (letter in "ABCDE" and g.strip("()[].:").isupper())):
        return "choice"
    if options and _option_letter(g, dict(options)):
        return "choice"
    if _is_words(g):
        return "text"
    q = _quantity(g)
    if q is not None and not q.fraction:
        return "number"
    return "math"
