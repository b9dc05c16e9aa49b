"""What an answer's text stands for: normalised words, canonical LaTeX, a number with its
unit, a choice letter.

Both typing (:mod:`.kinds`) and comparing (:mod:`.compare`) read answers through these, so
they sit below both. The pure string functions are LRU-cached: golds, options and answers
recur across problems and rollouts, and these run on the driver's event loop.
"""

from __future__ import annotations

import functools
import math
import re
import string
from typing import NamedTuple

from prmtree.engine.answers.extract import _strip_answer, _unwrap

_NUMBER = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?$", re.IGNORECASE)
_FRACTION = re.compile(r"^([-+]?\d+)\s*/\s*(\d+)$")
_LATEX_FRAC = re.compile(r"^([-+]?)\\[dt]?frac\{(-?\d+)\}\{(\d+)\}$")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_CHOICE = re.compile(r"^[(\[]?([A-Za-z])[)\]]?[.:)]?$")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_TEXT_WRAP = re.compile(r"^\\text\{(.*)\}$")
_DECIMAL_POINT = re.compile(r"(?<=\d)\.(?=\d)")
_PUNCT = str.maketrans("", "", string.punctuation + "’‘“”")
_WORDY = re.compile(r"^[A-Za-z][A-Za-z'’\-\s.,!?]*$")
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

# --------------------------------------------------------------------------- text


@functools.lru_cache(maxsize=1 << 16)
def normalize_text(text: str) -> str:
    """Lower case, no punctuation (decimal points kept), no articles.

    Number words stay words (``seven`` is not ``7``), as Math-Verify has always judged them.
    """
    t = _strip_answer(text).lower()
    t = _DECIMAL_POINT.sub("\0", t).translate(_PUNCT).replace("\0", ".")
    t = _ARTICLES.sub(" ", t)
    return " ".join(t.split())


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


# --------------------------------------------------------------------------- choice letters


def _choice_letter(text: str) -> str | None:
    m = _CHOICE.match(text.strip())
    return m.group(1).upper() if m else None


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
