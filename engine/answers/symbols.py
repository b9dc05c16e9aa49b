"""Maths written with Unicode symbols (``2√2``, ``x²``, ``½``, ``57 − 45``, ``4 ⋅ 3``)
rewritten as the ASCII and LaTeX the readers know (``2\\sqrt{2}``, ``x^2``, ``1/2``,
``57 - 45``, ``4 × 3``).

Models write these often (they are one token each), and a reader that stops at a symbol
it does not know reads ``2√2`` as ``2`` and ``4²`` as ``4``: a wrong answer graded right.
Invisible format characters (a left-to-right mark, a zero-width space, a byte-order mark)
are dropped: ``\\u200e-4`` shows as ``-4`` and is -4, not an unreadable answer graded wrong.
Text that is all ASCII (the common case, per rollout) is returned as it is, untouched.
"""

from __future__ import annotations

import functools
import re
from fractions import Fraction

#: Minus signs and times dots that are always those: ``−``, ``‒``, ``﹣``, ``－``; ``⋅``, ``∙``.
_ALWAYS = (("\u2212", "-"), ("\u2012", "-"), ("\ufe63", "-"), ("\uff0d", "-"), ("\u22c5", "×"), ("\u2219", "×"))
#: An en dash used as a minus sign: before a number, after a space, a bracket, ``=`` or the
#: start (``–2.5``), or between two numbers of a sum (``57 – 45 = 12``); between two numbers
#: otherwise it is a range (``3–5``, ``pages 3 – 5``) and stays.
_DASH = re.compile("\u2013")
_SUM_AFTER = re.compile(r"\s\d[\d.,]*\s*=")
#: A middle dot used as a times sign between numbers or spaces: ``4·3``, ``4 · 3`` (not ``col·lecció``).
#: (``⋅`` and ``∙`` are always one: :data:`_ALWAYS`.)
_MIDDLE_DOT = re.compile("\u00b7")
_SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻", "0123456789+-")
#: A run of superscripts (:func:`_power` leaves a unit's square and a footnote's mark).
_SUPERSCRIPT_RUN = re.compile(r"[⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻]+")
_UNIT_BEFORE = re.compile(r"\d\s?(?:[cmk]?m|ft)$")
#: A root and what it takes: a number, a letter, a bracket's or a brace's content.
_ROOT = re.compile(r"√\s*(?:(\d+(?:\.\d+)?)|([A-Za-z])(?![A-Za-z])|\(([^()]*)\)|\{([^{}]*)\})")
_VULGAR = {"½": (1, 2), "⅓": (1, 3), "⅔": (2, 3), "¼": (1, 4), "¾": (3, 4), "⅕": (1, 5), "⅖": (2, 5),
           "⅗": (3, 5), "⅘": (4, 5), "⅙": (1, 6), "⅚": (5, 6), "⅛": (1, 8), "⅜": (3, 8), "⅝": (5, 8),
           "⅞": (7, 8)}
#: A vulgar fraction (:func:`_fraction` takes the whole number of a mixed number before it: ``1½``, ``2 ¾``).
_FRACTION = re.compile("[" + "".join(_VULGAR) + "]")
_WHOLE_BEFORE = re.compile(r"(?<![\d.,])\d+\s?$")
_PI = re.compile(r"π([A-Za-z])?")
#: Unicode's format characters (category Cf) that show nothing: soft hyphen, Arabic letter mark,
#: Mongolian vowel separator, zero-width space, direction marks, embeddings and isolates, word
#: joiner and invisible operators, byte-order mark, annotation marks. (The Cf characters that
#: draw a mark, such as the Arabic number sign U+0600 or a flag's tags, stay; so do the
#: zero-width non-joiner and joiner, U+200C/U+200D, part of the spelling in Persian and Indic
#: scripts and of emoji sequences.)
_INVISIBLE_CHARS = ("\u00ad\u061c\u180e\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f"
                    "\ufeff\ufff9-\ufffb")
_INVISIBLE = re.compile(f"[{_INVISIBLE_CHARS}]+")
#: Any character this module rewrites: most non-ASCII text (names, accents, other scripts) has none.
_ANY = re.compile("[\u2212\u2012\ufe63\uff0d\u22c5\u2219\u2013\u00b7⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻√π" + "".join(_VULGAR)
                  + _INVISIBLE_CHARS + "]")
#: Texts longer than this are rewritten afresh (not memoised), and only in their last
#: ``TAIL_CHARS``: a final answer is read from a text's end (``sentences.SCAN_CHARS``).
_MEMO_CHARS = 512
TAIL_CHARS = 4_000


def ascii_math(text: str) -> str:
    """``text`` with its Unicode maths as ASCII and LaTeX; text without any (ASCII, or only
    accents and other scripts) as it is. A long text's last ``TAIL_CHARS`` only."""
    if text.isascii():
        return text
    if len(text) > _MEMO_CHARS:
        if len(text) > TAIL_CHARS:
            head, tail = text[:-TAIL_CHARS], text[-TAIL_CHARS:]
            return head + _rewrite(tail) if _ANY.search(tail) else text
        return _rewrite(text) if _ANY.search(text) else text
    return _rewritten(text)


@functools.lru_cache(maxsize=1 << 14)
def _rewritten(text: str) -> str:
    return _rewrite(text) if _ANY.search(text) else text


def _rewrite(text: str) -> str:
    """Each rewrite only where its characters are: this runs on model text, per rollout."""
    t = _INVISIBLE.sub("", text)  # first: "−\u200b4" is -4 to the rewrites below
    for char, ascii_form in _ALWAYS:  # (str.translate is slow on non-ASCII text)
        if char in t:
            t = t.replace(char, ascii_form)
    if "\u2013" in t:
        t = _DASH.sub(_dash, t)
    if "\u00b7" in t:
        t = _MIDDLE_DOT.sub(_middle_dot, t)
    if _SUPERSCRIPT_RUN.search(t):
        t = _SUPERSCRIPT_RUN.sub(_power, t)
    if "√" in t:
        t = _ROOT.sub(_root, t)
    if _FRACTION.search(t):
        t = _fractions(t)
    if "π" in t:
        t = _PI.sub(lambda m: "\\pi " + m.group(1) if m.group(1) else "\\pi", t)
    return t


def _power(m: re.Match[str]) -> str:
    """``^2`` or ``^{-19}``; a unit's square or cube after a number as it is (``12 cm²``, ``5m²``:
    the unit readers know those, and Math-Verify reads ``5m^2`` as a product), and a lone ``¹``
    too (a footnote's mark: ``1,200¹``; a power of one is never written)."""
    if m.group(0) == "¹" or (m.group(0) in "²³" and _UNIT_BEFORE.search(m.string, max(0, m.start() - 6), m.start())):
        return m.group(0)
    exponent = m.group(0).translate(_SUPERSCRIPTS)
    return "^" + exponent if len(exponent) == 1 else "^{" + exponent + "}"


def _root(m: re.Match[str]) -> str:
    return "\\sqrt{" + next(g for g in m.groups() if g is not None).strip() + "}"


def _dash(m: re.Match[str]) -> str:
    """A minus sign where :data:`_DASH` says (a number follows at once, after the start, a
    bracket, ``=``, ``$`` or a word's space; or a sum's ``=`` follows), else the dash."""
    t, i = m.string, m.start()
    before, after = t[max(0, i - 2) : i], t[i + 1 : i + 2]
    if after.isdigit() and (not before or before[-1] in "([=$" or (before[-1].isspace()
                                                                  and (len(before) < 2 or not before[0].isdigit()))):
        return "-"
    if len(before) == 2 and before[0].isdigit() and before[1].isspace() and _SUM_AFTER.match(t, i + 1):
        return "-"
    return "\u2013"


def _middle_dot(m: re.Match[str]) -> str:
    """A times sign between numbers, brackets or spaces (``4·3``, ``4 · 3``); else the dot."""
    t, i = m.string, m.start()
    before, after = t[i - 1 : i], t[i + 1 : i + 2]
    return "×" if before and after and (before.isdigit() or before in ") \t") and (after.isdigit()
                                                                                   or after in "( \t") else "\u00b7"


def _fractions(t: str) -> str:
    """Each vulgar fraction as ``a/b``, a mixed number's whole part taken in (``1½`` is 3/2, not
    1 and a stray half). The fractions are found first and the whole number read back from
    each: a pattern that opens with the optional digits tries every position of the text."""
    out, last = [], 0
    for m in _FRACTION.finditer(t):
        numerator, denominator = _VULGAR[m.group(0)]
        whole = _WHOLE_BEFORE.search(t, max(last, m.start() - 12), m.start())
        start = m.start()
        if whole is not None:
            numerator += int(whole.group(0).strip()) * denominator
            start = whole.start()
        space = " " if start and t[start - 1].isdigit() else ""  # (2.5½: not 2.51/2)
        out += [t[last:start], f"{space}{numerator}/{denominator}"]
        last = m.end()
    return "".join(out) + t[last:]

#: A mixed number in LaTeX (``1\frac{1}{2}``, ``2 \dfrac{3}{4}``): Math-Verify and the number
#: readers take it for a product (1·½) or miss it; it is the improper fraction.
_LATEX_MIXED = re.compile(r"(?<![\d.\w}])(\d+)\s?\\[dt]?frac\{(\d+)\}\{(\d+)\}")
#: A repeating decimal (``0.\overline{3}``, ``1.2\overline{45}``): Math-Verify reads its
#: whole-number part only (0), so it is rewritten as its exact fraction.
_REPEATING = re.compile(r"(?<![\d.])(\d*)\.(\d*)\\overline\{(\d+)\}")


def exact_numbers(text: str) -> str:
    """``text`` with LaTeX mixed numbers and repeating decimals as fractions (``3/2``, ``1/3``)."""
    if "frac" in text:
        text = _LATEX_MIXED.sub(lambda m: f"{int(m.group(1)) * int(m.group(3)) + int(m.group(2))}/{m.group(3)}", text)
    if "overline" in text:
        text = _REPEATING.sub(_repeating, text)
    return text


def _repeating(m: re.Match[str]) -> str:
    whole, fixed, period = int(m.group(1) or 0), m.group(2), m.group(3)
    value = Fraction(whole) + Fraction(int(fixed or 0), 10 ** len(fixed)) \
        + Fraction(int(period), 10 ** len(fixed) * (10 ** len(period) - 1))
    return f"{value.numerator}/{value.denominator}" if value.denominator != 1 else str(value.numerator)
