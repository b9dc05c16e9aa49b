"""Is an extracted answer the gold one?

Answers are typed first (:func:`answer_kind`): plain words are *text* and never reach sympy
(Math-Verify reads ``teal`` as the product t·e·a·l, calls it equal to ``tale``, and spends up
to hundreds of milliseconds doing so); numbers, with their units, currency and percent signs,
are *number*; fractions and LaTeX are *math*; a lone letter with options is *choice*.

Each check then takes the cheapest path that can decide it: string equality, normalised
text, a number parse, letter/option matching. Only what these cannot decide (``\\sqrt{2}/2``
against ``\\frac{1}{\\sqrt{2}}``) goes to Math-Verify: in-process for the synchronous
``Verifier.__call__``, in a process pool with a time bound for ``await Verifier.check`` (see
``engine/answer_check_pool.py``), so the driver's event loop never blocks on sympy.

Verdicts are memoised in a bounded LRU keyed by (answer kind, gold, predicted answer),
shared across problems: golds such as ``yes``, ``B`` or ``\\frac{1}{2}`` recur across a dataset.
Verification is total: anything unparseable, slow beyond its bound, or crashing is "not correct".
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import re
import string
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from prmtree.engine.answer_check_pool import CheckPool, CheckTimedOut

if TYPE_CHECKING:
    from prmtree.engine.problem import Problem

AnswerCheck = Callable[[str, str], bool]
AnswerKind = Literal["math", "choice", "number", "text"]
Options = tuple[tuple[str, str], ...]

_NUMBER = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?$", re.IGNORECASE)
_FRACTION = re.compile(r"^([-+]?\d+)\s*/\s*(\d+)$")
_LATEX_FRAC = re.compile(r"^([-+]?)\\[dt]?frac\{(-?\d+)\}\{(\d+)\}$")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_CHOICE = re.compile(r"^[(\[]?([A-Za-z])[)\]]?[.:)]?$")
_CHOICE_LEAD = re.compile(r"^[(\[]?([A-Z])[)\]]?(?:[.:)]|\s|$)")
# A leading letter the answer goes on to call wrong (``A is wrong, B``) is not its choice.
_CHOICE_DENIED = re.compile(r"^\s*(?:is|are)\s+(?:not|wrong|incorrect|false)\b|^\s*isn't\b", re.IGNORECASE)
# ``No, it is not.``: a yes/no word, then punctuation, a bracket, a line break or a clause
# restating it; ``no idea`` is not ``no``, ``yes or no`` is neither.
_YES_NO_LEAD = re.compile(
    r"^[*_\s]*(yes|no)\b[*_]*(?:\s*[,.;:!?()\[\]\u2014\u2013-]|\s*$|\s*\n|\s+(?:it|it's|its|they|there|this|that|"
    r"the|he|she|we|i|you|these|those|because|since)\b)", re.IGNORECASE)
_YES_AND_NO = re.compile(r"^[*_\s]*(?:yes|no)[*_]*\s*(?:or|and|/)?\s*[*_]*(?:yes|no)\b", re.IGNORECASE)
_OPTION_PREFIX = re.compile(r"^[(\[]?[A-Za-z][)\]]?[.:)]\s+|^\([A-Za-z]\)\s*")
_ANSWER_PREFIX = re.compile(
    r"^(?:so,?\s+)?(?:the\s+)?(?:correct\s+|final\s+|best\s+)?(?:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*",
    re.IGNORECASE,
)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_TEXT_WRAP = re.compile(r"^\\text\{(.*)\}$")
_DECIMAL_POINT = re.compile(r"(?<=\d)\.(?=\d)")
_PUNCT = str.maketrans("", "", string.punctuation + "’‘“”")
_WORDY = re.compile(r"^[A-Za-z][A-Za-z'’\-\s.,!?]*$")
_WRAPPERS = (
    "\\boxed", "\\text", "\\textbf", "\\textit", "\\textrm", "\\textnormal", "\\mathrm", "\\mathbf", "\\mbox", "\\fbox",
)
_LATEX_SPACE = re.compile(r"\\[,;:! ]|~|\\quad|\\qquad")
_MATH_NOISE = re.compile(r"\\left(?![a-zA-Z])|\\right(?![a-zA-Z])|\\displaystyle|\\[,;:! ]|\s+")
_ASSIGN = re.compile(r"^[A-Za-z]\s*=\s*")
_CURRENCY = re.compile(r"^(?:\\\$|\$|€|£|¥|usd\s*|us\$)", re.IGNORECASE)

#: Tokens that make a word-looking answer mathematics (``pi``, ``sin x``), not text.
_MATH_TOKENS = frozenset(
    "pi infinity inf oo sin cos tan cot sec csc log ln exp sqrt arcsin arccos arctan sinh cosh tanh".split()
)
# Units: a known unit of two letters or more may touch the number (``12cm``); a one-letter unit
# needs a space (``12 m``: ``2n`` and ``3h`` are more likely expressions); any word(s) may
# follow a space (``3 apples``).
_UNITS_LONG = (
    "cm|mm|km|nm|kg|mg|sec|ms|min|hrs|hr|ml|mL|ft|in|yd|mi|lbs|lb|oz|kW|kPa|kHz|Hz|Pa|mph|kph|kmh|kcal|cal|deg"
)
_UNITS_ANY = _UNITS_LONG + "|m|g|s|h|l|L|K|V|W|J|N"
_UNIT_POWER = r"(?:\^\{?\d\}?|[²³])?"
_UNIT_PER = rf"(?:/(?:{_UNITS_ANY}){_UNIT_POWER})?"
_UNIT_WORDS = r"[A-Za-z][A-Za-z.]+(?:[/\s-][A-Za-z][A-Za-z.]*){0,3}"
_UNIT_DEGREES = r"\^\s*\{?\s*\\circ\s*\}?|°|\\circ|\\degree"
_UNIT_LATEX = rf"\\(?:text|mathrm|textrm|mbox)\s*\{{[^{{}}]*\}}{_UNIT_POWER}"
_UNIT = (
    rf"(?:\s*(?:{_UNIT_DEGREES}|{_UNIT_LATEX})"
    rf"|\s*(?:{_UNITS_LONG}){_UNIT_POWER}{_UNIT_PER}(?![A-Za-z])"
    rf"|\s+(?:{_UNITS_ANY}){_UNIT_POWER}{_UNIT_PER}(?![A-Za-z])"
    rf"|\s+{_UNIT_WORDS}{_UNIT_POWER})"
)
_QUANTITY = re.compile(
    rf"^(?P<num>[-+]?(?:\\[dt]?frac\{{-?\d+\}}\{{\d+\}}|[\d.,]*\d(?:[eE][-+]?\d+)?(?:\s*/\s*\d+)?))"
    rf"(?P<pct>\s*\\?%)?(?P<unit>{_UNIT})?$"
)

# --------------------------------------------------------------------------- normalising
# The pure string functions below are LRU-cached: golds, options and answers recur across
# problems and rollouts, and these run on the driver's event loop.


def _closing_brace(text: str, open_at: int) -> int:
    """Index of the ``}`` matching ``text[open_at] == "{"``, or -1."""
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _unwrap(text: str) -> str:
    """The answer without what merely surrounds it: whitespace, ``$…$``, ``\\(…\\)``,
    ``\\[…\\]``, and a ``\\boxed{}``/``\\text{}``-like command around the whole of it."""
    t = text.strip()
    while True:
        before = t
        if len(t) >= 2 and t[0] == "$" and t[-1] == "$":
            t = t[1:-1].strip()
        elif t[:2] in ("\\(", "\\[") and t[-2:] in ("\\)", "\\]"):
            t = t[2:-2].strip()
        elif t.startswith("\\"):
            for command in _WRAPPERS:
                if t.startswith(command + "{") and _closing_brace(t, len(command)) == len(t) - 1:
                    t = t[len(command) + 1 : -1].strip()
                    break
        if t == before:
            return t


def _strip_answer(text: str) -> str:
    """``The answer is (B).`` → ``(B)``: what models write around a short answer."""
    t = _unwrap(text).strip("*").strip()
    t = _ANSWER_PREFIX.sub("", t)
    t = _unwrap(t)
    return t[:-1].rstrip() if t.endswith(".") and len(t) > 1 else t


@functools.lru_cache(maxsize=1 << 16)
def normalize_text(text: str) -> str:
    """Lower case, no punctuation (decimal points kept), no articles.

    Number words stay words (``seven`` is not ``7``), as Math-Verify has always judged them.
    """
    t = _strip_answer(text).lower()
    t = _DECIMAL_POINT.sub("\0", t).translate(_PUNCT).replace("\0", ".")
    t = _ARTICLES.sub(" ", t)
    return " ".join(t.split())


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


@functools.lru_cache(maxsize=1 << 16)
def _is_words(text: str) -> bool:
    """Plain words (``teal``, ``two cats``, ``New York``): no digits, no LaTeX, at least one
    word of two letters or more, and none of ``pi``, ``sin``, ``infinity``…"""
    t = _unwrap(text)
    if not _WORDY.match(t):
        return False
    words = t.lower().translate(_PUNCT).split()
    return any(len(w) > 1 for w in words) and not any(w in _MATH_TOKENS for w in words)


@functools.lru_cache(maxsize=1 << 16)
def _canon_math(text: str) -> str:
    """LaTeX with the noise that never changes a value removed (spacing, ``\\left``, ``\\dfrac``)."""
    t = _MATH_NOISE.sub("", _unwrap(text)).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return t[:-1] if t.endswith(".") else t


# --------------------------------------------------------------------------- numbers


def parse_number(text: str) -> float | None:
    """A float from ``3``, ``-2.5``, ``1,000``, ``50%``, ``$4``, ``1/2``, ``\\frac{1}{2}``; else None.

    Strict: units and words make it None (see :func:`parse_quantity` for the lenient parse).
    A comma is a thousands separator only before groups of three digits (``1,2`` is a list).
    """
    t = text.strip().strip("$").strip()
    t = _TEXT_WRAP.sub(r"\1", t)
    t = _THOUSANDS.sub("", t.replace("{,}", ",")).replace("\\!", "").replace(" ", "")
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


class _Quantity(NamedTuple):
    value: float
    percent: bool
    fraction: bool
    text: str  # the number without its unit, for Math-Verify


@functools.lru_cache(maxsize=1 << 16)
def _quantity(text: str) -> _Quantity | None:
    """The number in ``12 cm``, ``90^\\circ``, ``$4``, ``x = 3``, ``50%``."""
    t = _LATEX_SPACE.sub(" ", _unwrap(text)).strip().rstrip(".").strip()
    t = _CURRENCY.sub("", _ASSIGN.sub("", t)).strip()
    m = _QUANTITY.match(t)
    if m is None:
        return None
    num = m.group("num")
    value = parse_number(num)
    if value is None:
        return None
    percent = m.group("pct") is not None
    fraction = "/" in num or "frac" in num
    return _Quantity(value, percent, fraction, _THOUSANDS.sub("", num) + ("\\%" if percent else ""))


def parse_quantity(text: str) -> float | None:
    """A float from a number as models write it, units and currency dropped (``12 cm`` → 12)."""
    q = _quantity(text)
    return None if q is None else q.value


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
    pred_letter = _option_letter(pred, opts) or _choice_letter(pred) or _leading_letter(pred)
    if gold_letter and pred_letter:
        return gold_letter == pred_letter
    gold_text = opts.get(gold_letter, gold) if gold_letter else gold
    return text_match(gold_text, pred)


def _choice_letter(text: str) -> str | None:
    m = _CHOICE.match(text.strip())
    return m.group(1).upper() if m else None


def _leading_letter(text: str) -> str | None:
    """``B because ...``, ``B) 12 V``: the letter an answer opens with, unless the answer
    goes on to call it wrong (``A is wrong, B``)."""
    t = text.strip()
    m = _CHOICE_LEAD.match(t)
    return m.group(1) if m and not _CHOICE_DENIED.match(t[m.end():]) else None


def _option_letter(text: str, options: dict[str, str]) -> str | None:
    """The letter of the option whose text ``text`` is (normalised, or the same number)."""
    if not options:
        return None
    norm = normalize_text(text)
    for letter, option in options.items():
        if normalize_text(option) == norm and norm:
            return letter
    q = _quantity(text)
    if q is not None:
        for letter, option in options.items():
            o = _quantity(option)
            if o is not None and math.isclose(o.value, q.value, rel_tol=1e-9):
                return letter
    return None


def _clean_options(options: Any) -> dict[str, str]:
    """``{"A": "red"}``, ``{"(a)": "red"}`` or ``["red", "blue"]``/``["A. red", …]`` → ``{"A": "red"}``."""
    if isinstance(options, dict):
        return {(_choice_letter(str(k)) or str(k).strip().upper()): str(v) for k, v in options.items()}
    if isinstance(options, (list, tuple)):
        return {chr(65 + i): _OPTION_PREFIX.sub("", str(v).strip()) for i, v in enumerate(options[:26])}
    return {}


def _options_of(problem: Problem) -> Options:
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


# --------------------------------------------------------------------------- typing


def answer_kind(problem: Problem) -> AnswerKind:
    """The kind of check a problem's answers get: its ``answer_type``, or for ``"auto"`` a
    guess from the gold answer (and the options in ``meta``, if any)."""
    if problem.answer_type != "auto":
        return problem.answer_type  # type: ignore[return-value]
    return _auto_kind(problem.answer, _options_of(problem))


@functools.lru_cache(maxsize=1 << 16)
def _auto_kind(gold: str, options: Options) -> AnswerKind:
    g = _unwrap(gold)
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


# --------------------------------------------------------------------------- the verifier

_MemoKey = tuple[str, str, str, Options]


class Verifier:
    """Decides correctness of extracted answers: cheap paths first, Math-Verify when needed.

    ``check`` (async, what the driver uses) sends Math-Verify work to a process pool of
    ``pool_workers``, each check bounded by ``timeout_s``; ``__call__`` (sync) runs it
    in-process. ``custom(gold, predicted)`` replaces all of it and runs in-process (it need
    not pickle). ``slow_check(gold, predicted)`` replaces Math-Verify and must pickle (a
    module-level function): the hook for other equivalence checkers and for fault injection.
    Call ``close()``/``await aclose()`` when done, to stop the pool's workers.
    """

    def __init__(
        self,
        custom: AnswerCheck | None = None,
        rel_tol: float = 1e-6,
        timeout_s: float = 5.0,
        pool_workers: int = 1,
        memo_size: int = 100_000,
        slow_check: AnswerCheck | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.custom = custom
        self.rel_tol = rel_tol
        self.timeout_s = timeout_s
        self.memo_size = memo_size
        # In the pool, Math-Verify's own per-phase timeout (two parses and a verify) stays inside
        # ours, so a merely slow check ends in the worker instead of costing a pool restart.
        self.slow_check = slow_check
        self._pool_check_fn = slow_check or functools.partial(math_match, timeout_s=max(1, int(timeout_s // 2)))
        self._inline_check_fn = self._pool_check_fn  # the same bound in-process: the same verdicts
        check_module = getattr(getattr(slow_check, "func", slow_check), "__module__", None)
        self._pool = CheckPool(workers=pool_workers, timeout_s=timeout_s, import_main=check_module == "__main__")
        self._memo: OrderedDict[_MemoKey, bool] = OrderedDict()
        self._inflight: dict[_MemoKey, asyncio.Future[bool]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._checks = 0
        self._memo_hits = 0
        self._quick = 0
        self._inline = 0

    def __getstate__(self) -> dict[str, Any]:
        """Picklable after use too: checks in flight belong to this process's event loop."""
        return {**self.__dict__, "_inflight": {}, "_tasks": set()}

    # -- the synchronous path (tests, parse_completion) ------------------------------------

    def __call__(self, problem: Problem, predicted: str | None) -> bool:
        """The verdict, computed in this thread (Math-Verify in-process when needed)."""
        if predicted is None:
            return False
        self._checks += 1
        key, verdict, gold_for_math = self._decide(problem, predicted)
        if verdict is not None:
            return verdict
        self._inline += 1
        try:
            verdict = bool(self._inline_check_fn(gold_for_math, predicted))
        except CheckTimedOut:
            self._pool.timeouts += 1
            verdict = False
        except Exception:
            verdict = False
        self._remember(key, verdict)
        return verdict

    def quick(self, problem: Problem, predicted: str | None) -> bool | None:
        """The verdict from the memo or the cheap paths; ``None`` means "needs Math-Verify"."""
        if predicted is None:
            return False
        self._checks += 1
        return self._decide(problem, predicted)[1]

    # -- the asynchronous path (the driver) ------------------------------------------------

    async def check(self, problem: Problem, answers: Sequence[str | None]) -> list[bool]:
        """Verdicts for all answers of one request, in order. Cheap paths first; the distinct
        answers left go to the pool concurrently (shared with any concurrent request asking the
        same). Never raises: a failed, hung or crashed check is ``False``."""
        verdicts = [False] * len(answers)
        slow: dict[_MemoKey, tuple[list[int], str, str]] = {}
        for i, predicted in enumerate(answers):
            if predicted is None:
                continue
            self._checks += 1
            try:
                key, verdict, gold_for_math = self._decide(problem, predicted)
            except Exception:
                continue
            if verdict is not None:
                verdicts[i] = verdict
            elif key in slow:
                self._memo_hits += 1
                slow[key][0].append(i)
            else:
                slow[key] = ([i], gold_for_math, predicted)
        if slow:
            try:
                found = await self._slow({key: (gold, predicted) for key, (_, gold, predicted) in slow.items()})
            except Exception:  # a bug here must not take the request down: unknown is "not correct"
                found = {}
            for key, (indices, _, _) in slow.items():
                for i in indices:
                    verdicts[i] = found.get(key) is True
        return verdicts

    async def _slow(self, checks: dict[_MemoKey, tuple[str, str]]) -> dict[_MemoKey, bool]:
        """Verdicts from the pool for these (memo key → gold, predicted) checks. The ones not
        already in flight for a concurrent request go as one batch; the rest are awaited."""
        loop = asyncio.get_running_loop()
        waiting: dict[_MemoKey, asyncio.Future[bool]] = {}
        fresh: list[tuple[_MemoKey, str, str]] = []
        for key, (gold, predicted) in checks.items():
            future = self._inflight.get(key)
            if future is None:
                future = self._inflight[key] = loop.create_future()
                fresh.append((key, gold, predicted))
            else:
                self._memo_hits += 1
            waiting[key] = future
        if fresh:
            task = asyncio.ensure_future(self._pool_batch(fresh))
            self._tasks.add(task)  # a strong reference: the loop keeps only weak ones
            task.add_done_callback(self._tasks.discard)
        return {key: await asyncio.shield(future) for key, future in waiting.items()}

    async def _pool_batch(self, fresh: list[tuple[_MemoKey, str, str]]) -> None:
        """Run ``fresh`` in the pool; resolve and forget their in-flight futures, whatever happens."""
        futures = [self._inflight[key] for key, _, _ in fresh]
        verdicts = [False] * len(fresh)
        try:
            verdicts = await self._pool.run_many(self._pool_check_fn, [(g, p) for _, g, p in fresh])
            for (key, _, _), verdict in zip(fresh, verdicts):
                self._remember(key, verdict)  # a timeout or crash too: retrying costs as much again
        except Exception:
            pass
        finally:  # also on cancellation (loop shutting down): nobody waits forever
            for (key, _, _), future, verdict in zip(fresh, futures, verdicts):
                self._inflight.pop(key, None)
                if not future.done():
                    future.set_result(verdict)

    # -- shared ----------------------------------------------------------------------------

    def _decide(self, problem: Problem, predicted: str) -> tuple[_MemoKey, bool | None, str]:
        """``(memo key, verdict or None, gold for Math-Verify)`` from the memo, a custom
        check or the cheap paths."""
        gold = problem.answer
        if not isinstance(predicted, str):
            predicted = str(predicted)
        if self.custom is not None:
            key: _MemoKey = ("custom", gold, predicted, ())
        else:
            options = _options_of(problem)
            kind = problem.answer_type if problem.answer_type != "auto" else _auto_kind(gold, options)
            key = (kind, gold, predicted, options if kind == "choice" else ())
        hit = self._recall(key)
        if hit is not None:
            self._memo_hits += 1
            return key, hit, gold
        if self.custom is not None:
            try:
                verdict: bool | None = bool(self.custom(gold, predicted))
            except Exception:
                verdict = False
            gold_for_math = gold
        else:
            verdict, gold_for_math = cheap_check(key[0], gold, predicted, key[3], self.rel_tol)
        if verdict is not None:
            self._quick += 1
            self._remember(key, verdict)
        return key, verdict, gold_for_math

    def _recall(self, key: _MemoKey) -> bool | None:
        try:
            verdict = self._memo[key]
            self._memo.move_to_end(key)
            return verdict
        except KeyError:  # absent (or evicted by another thread between the two lines)
            return None

    def _remember(self, key: _MemoKey, verdict: bool) -> None:
        if self.memo_size <= 0:
            return
        self._memo[key] = verdict
        self._memo.move_to_end(key)
        while len(self._memo) > self.memo_size:
            try:
                self._memo.popitem(last=False)
            except KeyError:
                break

    def stats(self) -> dict[str, float]:
        """Counters for the manifest: ``checks`` answers checked (``None`` answers aside), of
        which ``memo_hits`` from the memo (or shared with an identical check in flight),
        ``quick`` by the cheap paths or the custom check, ``inline_checks`` by in-process
        Math-Verify (sync path) and ``pool_checks`` in the pool, taking ``pool_time_s`` wall and
        ``pool_cpu_s`` worker CPU; ``timeouts`` and ``pool_failures`` (worker crashed) were
        answered ``False``; ``pool_restarts`` counts pools killed and replaced."""
        return {
            "checks": self._checks,
            "memo_hits": self._memo_hits,
            "quick": self._quick,
            "inline_checks": self._inline,
            **self._pool.stats(),
            "memo_entries": len(self._memo),
        }

    def close(self) -> None:
        """Stop the pool's workers (a later ``check`` starts a fresh pool)."""
        self._pool.close()

    async def aclose(self) -> None:
        """``close()`` for async callers; it does not block (workers are killed, not joined)."""
        self.close()
