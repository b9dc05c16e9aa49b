"""What a short answer is, as a retraction compares it: a bare value (``13``, ``$x = 13$``,
``13 apples``), a choice letter or yes/no; and whether two such answers plainly differ.
Anything not plainly comparable (``twelve``, ``\\sqrt{4}``) is never called a change."""

from __future__ import annotations

import math
import re

from prmtree.engine.answers.choices import LEAD_LETTER, SINGLE_LETTER, option_text
from prmtree.engine.answers.dates import WRITTEN_DATE
from prmtree.engine.answers.marks import strip_answer
from prmtree.engine.answers.times import WRITTEN_TIME


LEAD_VALUE = re.compile(WRITTEN_DATE + "|" + WRITTEN_TIME + r"|[-+]?\d+(?:[.,]\d+)*(?::\d+|\s:\s\d+|-\d+)*(?:\s*/\s*\d+)?(?:\s*%|\s+(?!which\b|and\b|or\b|so\b|because\b)[A-Za-z]+(?:/[A-Za-z]+)?(?:\^\{?\d\}?|[²³])?)?")
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


_PLAIN_NUMBER = re.compile(r"([-+]?\d{1,3}(?:(?:,\d{3})+|(?: \d{3})+)(?:\.\d+)?|[-+]?\d+(?:\.\d+)?)(?:\s*(%)|\s+([A-Za-z]+))?")
#: A ratio or a time: "3:2", "10 : 30".
_RATIO = re.compile(r"(\d+)\s*:\s*(\d+)")


def plain_form(answer: str, options: object) -> tuple[str, object] | None:
    """An answer as far as a retraction compares it: a choice letter (with the option whose
    text is that value), a plain number with its unit word or ``%``, a ratio or time (``3:2``),
    yes/no; None for anything else
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
        unit = plain.group(2) or (plain.group(3).lower() if plain.group(3) else None)
        return "number", (float(plain.group(1).replace(",", "").replace(" ", "")), unit)
    ratio = _RATIO.fullmatch(a)
    if ratio:
        return "ratio", (int(ratio.group(1)), int(ratio.group(2)))
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
        if (unit_a == "%") != (unit_b == "%"):  # "0.75" and "75%": one share
            a, b = (a / 100, b) if unit_a == "%" else (a, b / 100)
            return not math.isclose(a, b, rel_tol=1e-9)
        return (unit_a is None or unit_b is None or unit_a == unit_b) and not math.isclose(a, b, rel_tol=1e-9)
    return one[1] != other[1]


#: One value written twice: "0.75, or 75%", "1/2 (or 0.5)", "4, or equivalently 2+2".
_TWO_FORMS = re.compile(r"^[\s*_]*([^\s,()]+)[,;]?\s+\(?or\s+(equivalently\s+|in\s+other\s+words,?\s+|simply\s+)?"
                        r"([^\s,()]+?)\)?[\s.*_]*$", re.IGNORECASE)


def one_value_twice(answer: str, gold: str) -> str | None:
    """The answer when ``answer`` gives one value in two forms (``0.75, or 75%``, ``1/2, or
    0.5``, ``4, or equivalently 2+2``): the form the gold is written in (its number, or a
    percentage for a percentage), else the first; None when the two are not plainly one
    value (``12, or 13`` and ``12, or equivalently 13`` hedge)."""
    m = _TWO_FORMS.match(answer)
    if m is None:
        return None
    first, restating, second = m.group(1), m.group(2), m.group(3)
    a, b = _plain_value(first), _plain_value(second)
    if a is None or b is None:  # "4, or equivalently 2+2": not both plain values, taken at the writer's word
        return first if restating else None
    if not math.isclose(a[0], b[0], rel_tol=1e-9):
        return None
    wanted = _plain_value(gold.strip())
    for form, value in ((first, a), (second, b)):
        if wanted is not None and math.isclose(value[1], wanted[1], rel_tol=1e-9) and value[2] == wanted[2]:
            return form  # the gold's own number: "50%" for 50% (and for 50, which compares as 50%)
    for form, value in ((first, a), (second, b)):
        if wanted is not None and math.isclose(value[1], wanted[1], rel_tol=1e-9):
            return form
    return first


def two_values(answer: str) -> bool:
    """Does ``answer`` offer two different plain values (``12 (or 13)``, ``2, or equivalently
    -2``)? A hedge, whatever words join them."""
    m = _TWO_FORMS.match(answer)
    if m is None:
        return False
    a, b = _plain_value(m.group(1)), _plain_value(m.group(3))
    return a is not None and b is not None and not math.isclose(a[0], b[0], rel_tol=1e-9)


def _plain_value(text: str) -> tuple[float, float, bool] | None:
    """A plain number, fraction or percentage as (its value, the number written, whether a
    percentage): ``75%`` is (0.75, 75, True)."""
    t = text.strip().strip("$").strip()
    share = t.endswith("%")
    form = plain_form(t[:-1].rstrip() if share else t, None)
    if form is None or form[0] != "number" or form[1][1] is not None:  # type: ignore[index]
        return None
    number = form[1][0]  # type: ignore[index]
    return (number / 100 if share else number), number, share
