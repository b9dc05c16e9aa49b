"""Maths written with Unicode symbols (``2√2``, ``x²``, ``½``, ``57 − 45``, ``4 ⋅ 3``)
rewritten as the ASCII and LaTeX the readers know (``2\\sqrt{2}``, ``x^2``, ``1/2``,
``57 - 45``, ``4 × 3``).

Models write these often (they are one token each), and a reader that stops at a symbol
it does not know reads ``2√2`` as ``2`` and ``4²`` as ``4``: a wrong answer graded right.
Text that is all ASCII (the common case, per rollout) is returned as it is, untouched.
"""

from __future__ import annotations

import functools
import re

_MINUS = str.maketrans({"\u2212": "-", "\u2012": "-", "\ufe63": "-", "\uff0d": "-"})
#: An en dash used as a minus sign: before a number, after a space, a bracket, ``=`` or the
#: start (``–2.5``), or between two numbers of a sum (``57 – 45 = 12``); between two numbers
#: otherwise it is a range (``3–5``, ``pages 3 – 5``) and stays.
_DASH_MINUS = re.compile(r"(?:(?<=^)|(?<=[(\[=$])|(?<=[^\d\s]\s))\u2013(?=\d)|(?<=\d\s)\u2013(?=\s\d[\d.,]*\s*=)")
#: A dot used as a times sign: ``4 ⋅ 3``, ``4·3``, ``2 ∙ r``.
_DOT_TIMES = re.compile(r"\s*[\u22c5\u2219]\s*|(?<=[\d\s)])\u00b7(?=[\s\d(])")
_SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻", "0123456789+-")
#: A run of superscripts, but not a unit's square or cube after a number (``12 cm²``, ``5m²``: the
#: unit readers know those, and Math-Verify reads ``5m^2`` as a product).
_SUPERSCRIPT_RUN = re.compile(r"(?<!\d[cmk]m)(?<!\d\s[cmk]m)(?<!\d[m])(?<!\d\s[m])(?<!\dft)(?<!\d\sft)[⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻]+")
#: A root and what it takes: a number, a letter, a bracket's or a brace's content.
_ROOT = re.compile(r"√\s*(?:(\d+(?:\.\d+)?)|([A-Za-z])(?![A-Za-z])|\(([^()]*)\)|\{([^{}]*)\})")
_VULGAR = {"½": (1, 2), "⅓": (1, 3), "⅔": (2, 3), "¼": (1, 4), "¾": (3, 4), "⅕": (1, 5), "⅖": (2, 5),
           "⅗": (3, 5), "⅘": (4, 5), "⅙": (1, 6), "⅚": (5, 6), "⅛": (1, 8), "⅜": (3, 8), "⅝": (5, 8),
           "⅞": (7, 8)}
#: A vulgar fraction, after the whole number of a mixed number if any (``1½``, ``2 ¾``).
_FRACTION = re.compile(r"(?<![\d.])(?:(\d+)\s?)?([" + "".join(_VULGAR) + r"])")
_PI = re.compile(r"π([A-Za-z])?")


def ascii_math(text: str) -> str:
    """``text`` with its Unicode maths as ASCII and LaTeX; ASCII text as it is."""
    if text.isascii():
        return text
    return _rewritten(text)


@functools.lru_cache(maxsize=1 << 14)
def _rewritten(text: str) -> str:
    t = text.translate(_MINUS)
    if "\u2013" in t:
        t = _DASH_MINUS.sub("-", t)
    t = _DOT_TIMES.sub(lambda m: " × " if m.group(0).strip() != m.group(0) else "×", t)
    t = _SUPERSCRIPT_RUN.sub(_power, t)
    if "√" in t:
        t = _ROOT.sub(_root, t)
    t = _FRACTION.sub(_fraction, t)
    if "π" in t:
        t = _PI.sub(lambda m: "\\pi " + m.group(1) if m.group(1) else "\\pi", t)
    return t


def _power(m: re.Match[str]) -> str:
    exponent = m.group(0).translate(_SUPERSCRIPTS)
    return "^" + exponent if len(exponent) == 1 else "^{" + exponent + "}"


def _root(m: re.Match[str]) -> str:
    return "\\sqrt{" + next(g for g in m.groups() if g is not None).strip() + "}"


def _fraction(m: re.Match[str]) -> str:
    numerator, denominator = _VULGAR[m.group(2)]
    if m.group(1):
        numerator += int(m.group(1)) * denominator  # 1½ is 3/2, not 1 and a stray half
    return f"{numerator}/{denominator}"
