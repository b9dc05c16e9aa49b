"""Is an extracted answer the gold one?

Math answers go to Math-Verify; multiple choice is matched by letter or option text;
numbers within a tolerance; text by normalised equality; or a user callable.
Results are memoised per (problem, extracted answer): rollouts repeat a handful of
answers, and parsing is the hottest CPU path of a run.

Verification is total: anything unparseable is simply "not correct".
"""

from __future__ import annotations

import math
import re
import string
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prmtree.engine.problem import Problem

AnswerCheck = Callable[[str, str], bool]

_NUMBER = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?$", re.IGNORECASE)
_FRACTION = re.compile(r"^([-+]?\d+)\s*/\s*(\d+)$")
_LATEX_FRAC = re.compile(r"^([-+]?)\\[dt]?frac\{(-?\d+)\}\{(\d+)\}$")
_CHOICE = re.compile(r"^\(?([A-Za-z])\)?[.:)]?$")
_CHOICE_LEAD = re.compile(r"^\(?([A-Z])\)?(?:[.:)]|\s|$)")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_TEXT_WRAP = re.compile(r"^\\text\{(.*)\}$")
_PUNCT = str.maketrans("", "", string.punctuation)


def parse_number(text: str) -> float | None:
    """A float from ``3``, ``-2.5``, ``1,000``, ``50%``, ``$4``, ``1/2``, ``\\frac{1}{2}``; else None."""
    t = text.strip().strip("$").strip()
    t = _TEXT_WRAP.sub(r"\1", t)
    t = t.replace(",", "").replace("\\!", "").replace(" ", "")
    if t.endswith("\\%"):
        t = t[:-2]
    elif t.endswith("%"):
        t = t[:-1]
    if t.startswith("\\$"):
        t = t[2:]
    if _NUMBER.match(t):
        value = float(t)
        return value if math.isfinite(value) else None
    m = _FRACTION.match(t)
    if m and int(m.group(2)) != 0:
        return int(m.group(1)) / int(m.group(2))
    m = _LATEX_FRAC.match(t)
    if m and int(m.group(3)) != 0:
        value = int(m.group(2)) / int(m.group(3))
        return -value if m.group(1) == "-" else value
    return None


def numbers_match(gold: str, predicted: str, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> bool:
    g, p = parse_number(gold), parse_number(predicted)
    if g is None or p is None:
        return False
    return math.isclose(g, p, rel_tol=rel_tol, abs_tol=abs_tol)


def normalize_text(text: str) -> str:
    t = _TEXT_WRAP.sub(r"\1", text.strip()).lower().translate(_PUNCT)
    t = _ARTICLES.sub(" ", t)
    return " ".join(t.split())


def text_match(gold: str, predicted: str) -> bool:
    return normalize_text(gold) == normalize_text(predicted) != ""


def choice_match(gold: str, predicted: str, options: dict[str, str] | None = None) -> bool:
    """Match a multiple-choice answer by letter (``B``, ``(B)``, ``B. text``) or option text."""
    gold_letter = _choice_letter(gold)
    pred = _TEXT_WRAP.sub(r"\1", predicted.strip())
    pred_letter = _choice_letter(pred) or _leading_letter(pred)
    if gold_letter and pred_letter:
        return gold_letter == pred_letter
    if options:
        gold_text = options.get(gold_letter, gold) if gold_letter else gold
        for letter, option in options.items():
            if text_match(option, pred):
                return (letter.upper() == gold_letter) if gold_letter else text_match(option, gold_text)
    return text_match(gold, pred)


def _choice_letter(text: str) -> str | None:
    m = _CHOICE.match(text.strip())
    return m.group(1).upper() if m else None


def _leading_letter(text: str) -> str | None:
    m = _CHOICE_LEAD.match(text.strip())
    return m.group(1) if m else None


def math_match(gold: str, predicted: str) -> bool:
    """Math-Verify equivalence (``1/2`` = ``0.5`` = ``\\frac{1}{2}``, sets, intervals...).

    Math-Verify bounds its time with ``signal.alarm``, which only works in the main
    thread; elsewhere (threads, async actors) it runs without its own timeout.
    """
    from math_verify import parse, verify  # imported on first use: it pulls in sympy

    in_main = threading.current_thread() is threading.main_thread()
    timeout = 5 if in_main else None
    try:
        gold_parsed = parse(_as_math(gold), parsing_timeout=timeout)
        pred_parsed = parse(_as_math(predicted), parsing_timeout=timeout)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))
    except Exception:  # Math-Verify is total by default; guard against the odd escape
        return False


def _as_math(text: str) -> str:
    t = text.strip()
    if t.startswith("$") or "\\boxed" in t:
        return t
    return f"${t}$"


class Verifier:
    """Decides correctness of extracted answers, memoised per (problem, answer).

    ``answer_type`` "auto" picks per problem: choice when the gold is a lone letter and
    the problem lists options, number when the gold is numeric, else math with a
    normalised-text fallback.
    """

    def __init__(self, custom: AnswerCheck | None = None, rel_tol: float = 1e-6) -> None:
        self.custom = custom
        self.rel_tol = rel_tol
        self._memo: dict[tuple[str, str], bool] = {}
        self.calls = 0
        self.hits = 0

    def __call__(self, problem: Problem, predicted: str | None) -> bool:
        if predicted is None:
            return False
        self.calls += 1
        key = (problem.id, predicted)
        hit = self._memo.get(key)
        if hit is not None:
            self.hits += 1
            return hit
        result = self._check(problem, predicted)
        self._memo[key] = result
        return result

    def forget(self, problem_id: str) -> None:
        """Drop a finished problem's memo so memory stays flat over long runs."""
        for key in [k for k in self._memo if k[0] == problem_id]:
            del self._memo[key]

    def _check(self, problem: Problem, predicted: str) -> bool:
        gold = problem.answer
        if self.custom is not None:
            try:
                return bool(self.custom(gold, predicted))
            except Exception:
                return False
        kind = problem.answer_type
        if kind == "auto":
            kind = _guess_type(problem)
        if kind == "number":
            if numbers_match(gold, predicted, rel_tol=self.rel_tol):
                return True
            return parse_number(predicted) is None and math_match(gold, predicted)
        if kind == "choice":
            options = problem.meta.get("options") if isinstance(problem.meta, dict) else None
            return choice_match(gold, predicted, options if isinstance(options, dict) else None)
        if kind == "text":
            return text_match(gold, predicted)
        # math
        if gold.strip() == predicted.strip():
            return True
        return math_match(gold, predicted) or text_match(gold, predicted)


def _guess_type(problem: Problem) -> str:
    gold = problem.answer.strip()
    options = problem.meta.get("options") if isinstance(problem.meta, dict) else None
    if _choice_letter(gold) and (options or len(gold.strip("()")) == 1 and gold.strip("()").isupper()):
        return "choice"
    if parse_number(gold) is not None:
        return "number"
    return "math"
