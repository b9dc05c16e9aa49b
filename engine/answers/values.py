"""What a short answer is, as a retraction compares it: a bare value (``13``, ``$x = 13$``,
``13 apples``), a choice letter or yes/no; and whether two such answers plainly differ.
Anything not plainly comparable (``twelve``, ``\\sqrt{4}``) is never called a change."""

from __future__ import annotations

import math
import re

from prmtree.engine.answers.choices import LEAD_LETTER, SINGLE_LETTER, option_text
from prmtree.engine.answers.marks import strip_answer


LEAD_VALUE = re.compile(r"[-+]?\d+(?:[.,]\d+)*(?::\d+)*(?:\s*/\s*\d+)?(?:\s*%|\s+(?!which\b|and\b|or\b|so\b|because\b)[A-Za-z]+)?")
_MATHS_VALUE = re.compile(r"^(?:\$\$([^$]*)\$\$|\$([^$]*)\$|\\\((.*)\\\)|\\\[(.*)\\\])$", re.DOTALL)
_ASSIGNED = re.compile(r"^[A-Za-z]\s*=\s*")
_OPTION_NAMED = re.compile(r"^(?:option|choice)\s+([A-Z])$|^[(\[]?([A-Z])[)\].]\s+\S.*$")


def bare_answer(text: str, letters: str) -> str | None:
    """``text`` when it is only an answer: a value (``13``, ``-3.0``, ``$\\frac{3}{2}$``,
    ``$x = 13$``, ``13 apples``), one of ``letters`` (``C``, ``(C)``, ``option C``, ``(C) 7``)
    or a yes/no word; else None (``3*4 = 12``, ``3 of them are red``)."""
    t = text.strip().rstrip(".!?").strip().strip("*_").strip()
    maths = _MATHS_VALUE.match(t)
    if maths:
        t = next(g for g in maths.groups() if g is not None).strip()
    t = _ASSIGNED.sub("", t)
    if not t:
        return None
    if SINGLE_LETTER.match(t):
        return t if t.strip("()[]. ") in letters else None
    named = _OPTION_NAMED.match(t)
    if named:
        letter = named.group(1) or named.group(2)
        return letter if letter in letters else None
    if t.lower() in ("yes", "no"):
        return t
    if LEAD_VALUE.fullmatch(t) or _FRACTION_PARTS.fullmatch(t):
        return t
    return None


_PLAIN_NUMBER = re.compile(r"([-+]?\d{1,3}(?:(?:,\d{3})+|(?: \d{3})+)(?:\.\d+)?|[-+]?\d+(?:\.\d+)?)(?:\s+([A-Za-z]+))?")


def plain_form(answer: str, options: object) -> tuple[str, object] | None:
    """An answer as far as a retraction compares it: a choice letter (with the option whose
    text is that value), a plain number with its unit word, yes/no; None for anything else
    (``twelve``, ``10^3``, ``\\sqrt{4}``, ``3,5``: not compared, so never called a change)."""
    a = _ASSIGNED.sub("", strip_answer(answer).strip().strip("$").strip())
    lead = LEAD_LETTER.match(a)
    if lead and (len(a) <= 3 or a[lead.end() - 1] in ")]."):
        return "letter", lead.group(1)
    if a.lower() in ("yes", "no"):
        return "yes/no", a.lower()
    fraction = _FRACTION_PARTS.fullmatch(a)
    if fraction:
        sign, num, den = (fraction.group(1), fraction.group(2), fraction.group(3)) if fraction.group(2) \
            else ("", fraction.group(4), fraction.group(5))
        return ("number", (float(sign + num) / float(den), None)) if float(den) else None
    plain = _PLAIN_NUMBER.fullmatch(a)
    if plain:
        unit = plain.group(2).lower() if plain.group(2) else None
        return "number", (float(plain.group(1).replace(",", "").replace(" ", "")), unit)
    return None


_FRACTION_PARTS = re.compile(r"([-+]?)\\[dt]?frac\s*\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}|([-+]?\d+)\s*/\s*(\d+)")


def another_answer(before: str, new: str, options: object) -> bool:
    """Is ``new`` clearly another answer than ``before``: two different choices (an option's
    letter and its value are one), two different numbers in the same unit, yes and no?
    Anything not plainly comparable (``x=12`` and ``12`` aside) is not called a change."""
    one, other = plain_form(before, options), plain_form(new, options)
    if one is None or other is None:
        return False
    if one[0] != other[0]:  # a letter and a value: the same when that option's text is the value
        letter, value = (one, other) if one[0] == "letter" else (other, one)
        if letter[0] != "letter" or value[0] != "number":
            return False
        text = option_text(options, letter[1])  # type: ignore[arg-type]
        option = plain_form(text, None) if text is not None else None
        return option is not None and option[0] == "number" and option[1][0] != value[1][0]  # type: ignore[index]
    if one[0] == "number":
        (a, unit_a), (b, unit_b) = one[1], other[1]  # type: ignore[misc]
        return (unit_a is None or unit_b is None or unit_a == unit_b) and not math.isclose(a, b, rel_tol=1e-9)
    return one[1] != other[1]


#: One value written twice: "0.75, or 75%", "1/2 (or 0.5)", "4, or equivalently 2+2".
_TWO_FORMS = re.compile(r"^[\s*_]*([^\s,()]+)[,;]?\s+\(?or\s+(equivalently\s+|in\s+other\s+words,?\s+|simply\s+)?"
                        r"([^\s,()]+?)\)?[\s.*_]*$", re.IGNORECASE)


def one_value_twice(answer: str, gold: str) -> str | None:
    """The answer when ``answer`` gives one value in two forms (``0.75, or 75%``, ``1/2, or
    0.5``, ``4, or equivalently 2+2``): the form written as ``gold`` writes it (a percentage
    for a percentage), else the first; None when the two are not plainly one value (``12, or
    13`` hedges)."""
    m = _TWO_FORMS.match(answer)
    if m is None:
        return None
    first, restating, second = m.group(1), m.group(2), m.group(3)
    if restating:
        return first
    a, b = _plain_value(first), _plain_value(second)
    if a is None or b is None or not math.isclose(a, b, rel_tol=1e-9):
        return None
    percent = "%" in gold
    return second if ("%" in first) != percent and ("%" in second) == percent else first


def _plain_value(text: str) -> float | None:
    """A plain number or fraction's value, a percentage as its share (``75%`` is 0.75)."""
    t = text.strip().strip("$").strip()
    share = t.endswith("%")
    form = plain_form(t[:-1].rstrip() if share else t, None)
    if form is None or form[0] != "number" or form[1][1] is not None:  # type: ignore[index]
        return None
    return form[1][0] / 100 if share else form[1][0]  # type: ignore[index]
