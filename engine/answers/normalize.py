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
from fractions import Fraction
from typing import NamedTuple

from prmtree.engine.answers.marks import strip_answer, unwrap

#: Scientific notation written by hand (2.5 \times 10^{6}, 6.02*10^23) at the start of an answer, before
#: a unit or a percent sign; and 10⁶ written with superscripts.
_TIMES_TEN_LEAD = re.compile(r"([-+]?\d+(?:\.\d+)?)\s*(?:\\times|\\cdot|\*|×|·|x|X)\s*10\s*\^\s*"
                             r"(?:\{\s*([-+]?\d{1,3})\s*\}|([-+]?\d{1,3})(?![\d.]))")
_SUPERSCRIPT = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺", "0123456789-+")
_SUPERSCRIPT_POWER = re.compile(r"10([⁻⁺]?[⁰¹²³⁴⁵⁶⁷⁸⁹]+)")


def _sci_to_e(text: str) -> str:
    """``2.5 \\times 10^{6}`` (or ``2.5x10^6``, ``2.5 × 10⁶``) at the start of ``text`` as
    ``2.5e6``, the rest (a unit, a percent sign) kept: the e-notation every reader here takes."""
    if "10" not in text:
        return text
    t = _SUPERSCRIPT_POWER.sub(lambda m: "10^" + m.group(1).translate(_SUPERSCRIPT), text)
    m = _TIMES_TEN_LEAD.match(t)
    return f"{m.group(1)}e{m.group(2) or m.group(3)}{t[m.end():]}" if m else text
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
#: ``approximately 5``, ``about 12 cm``, ``~3.2``: the value stated, its rounding said aloud.
_APPROX = re.compile(r"^(?:(?:approximately|approx|about|around|roughly)\b\.?|\u2248|\\approx\b)\s*", re.IGNORECASE)

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

# --------------------------------------------------------------------------- text


@functools.lru_cache(maxsize=1 << 16)
def normalize_text(text: str) -> str:
    """Lower case, no punctuation (decimal points kept), no articles.

    Number words stay words (``seven`` is not ``7``), as Math-Verify has always judged them.
    """
    t = strip_answer(text).lower()
    t = _DECIMAL_POINT.sub("\0", t).translate(_PUNCT).replace("\0", ".")
    t = _ARTICLES.sub(" ", t)
    return " ".join(t.split())


#: A hyphen that joins words (``twenty-one``, ``COVID-19``, ``2-1``), not a minus sign (``(2,-1)``, ``-3``).
_JOINING_HYPHEN = re.compile(r"(?<=[\w)\]}])-|-(?![\d.])")


@functools.lru_cache(maxsize=1 << 16)
def words_as_digits(text: str) -> str:
    """:func:`normalize_text` with number words as digits: ``Twenty-one dogs`` → ``21 dogs``,
    ``two`` → ``2`` (so ``two`` equals ``2``, as the VQA evaluation and the issue's graders judge).
    A minus sign is no space: ``(2,-1)`` stays apart from ``(2, 1)``."""
    tokens = normalize_text(_JOINING_HYPHEN.sub(" ", text) if "-" in text else text).split()
    out: list[str] = []
    run: list[str] = []
    for token in [*tokens, ""]:
        if token in _SMALL_WORDS or token in _TENS_WORDS or (run and (token in _SCALE_WORDS or token == "and")):
            run.append(token)
            continue
        if run:
            tail = []
            while run and run[-1] == "and":
                tail.append(run.pop())
            out.append(str(words_value(" ".join(run))))
            out.extend(tail)
            run = []
        if token:
            out.append(token)
    return " ".join(out)


# The VQA evaluation's normalisation (vqaEval.py: processPunctuation, processDigitArticle).
_VQA_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_VQA_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_VQA_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: VQA's lookbehind typo makes it "a period not before a digit"
_VQA_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
                "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_VQA_CONTRACTIONS = dict(pair.split(":") for pair in (
    "aint:ain't arent:aren't cant:can't couldve:could've couldnt:couldn't couldn'tve:couldn't've couldnt've:couldn't've "
    "didnt:didn't doesnt:doesn't dont:don't hadnt:hadn't hadnt've:hadn't've hadn'tve:hadn't've hasnt:hasn't "
    "havent:haven't hed:he'd hed've:he'd've he'dve:he'd've hes:he's howd:how'd howll:how'll hows:how's "
    "Id've:I'd've I'dve:I'd've Im:I'm Ive:I've isnt:isn't itd:it'd itd've:it'd've it'dve:it'd've itll:it'll let's:let's "
    "maam:ma'am mightnt:mightn't mightnt've:mightn't've mightn'tve:mightn't've mightve:might've mustnt:mustn't "
    "mustve:must've neednt:needn't notve:not've oclock:o'clock oughtnt:oughtn't ow's'at:'ow's'at 'ows'at:'ow's'at "
    "'ow'sat:'ow's'at shant:shan't shed've:she'd've she'dve:she'd've she's:she's shouldve:should've "
    "shouldnt:shouldn't shouldnt've:shouldn't've shouldn'tve:shouldn't've somebody'd:somebodyd "
    "somebodyd've:somebody'd've somebody'dve:somebody'd've somebodyll:somebody'll somebodys:somebody's "
    "someoned:someone'd someoned've:someone'd've someone'dve:someone'd've someonell:someone'll someones:someone's "
    "somethingd:something'd somethingd've:something'd've something'dve:something'd've somethingll:something'll "
    "thats:that's thered:there'd thered've:there'd've there'dve:there'd've therere:there're theres:there's "
    "theyd:they'd theyd've:they'd've they'dve:they'd've theyll:they'll theyre:they're theyve:they've twas:'twas "
    "wasnt:wasn't wed've:we'd've we'dve:we'd've weve:we've werent:weren't whatll:what'll whatre:what're "
    "whats:what's whatve:what've whens:when's whered:where'd wheres:where's whereve:where've whod:who'd "
    "whod've:who'd've who'dve:who'd've wholl:who'll whos:who's whove:who've whyll:why'll whyre:why're whys:why's "
    "wont:won't wouldve:would've wouldnt:wouldn't wouldnt've:wouldn't've wouldn'tve:wouldn't've yall:y'all "
    "yall'll:y'all'll y'allll:y'all'll yall'd've:y'all'd've y'alld've:y'all'd've y'all'dve:y'all'd've youd:you'd "
    "youd've:you'd've you'dve:you'd've youll:you'll youre:you're youve:you've"
).split())


@functools.lru_cache(maxsize=1 << 16)
def vqa_normalize(text: str) -> str:
    """An answer as the VQA evaluation compares it: punctuation dropped or made a space,
    periods not before a digit dropped, lower case, ``none``/``zero``…``ten`` as digits,
    articles dropped, contractions restored (``dont`` → ``don't``); apostrophes are kept."""
    t = unwrap(text).replace("\n", " ").replace("\t", " ").strip()
    comma_between_digits = _VQA_COMMA_STRIP.search(t) is not None
    out = t
    for p in _VQA_PUNCT:
        if p + " " in t or " " + p in t or comma_between_digits:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    out = _VQA_PERIOD_STRIP.sub("", out)
    words = [_VQA_NUMBERS.get(w, w) for w in out.lower().split()]
    return " ".join(_VQA_CONTRACTIONS.get(w, w) for w in words if w not in ("a", "an", "the"))


@functools.lru_cache(maxsize=1 << 16)
def _is_words(text: str) -> bool:
    """Plain words (``teal``, ``two cats``, ``New York``): no digits, no LaTeX, at least one
    word of two letters or more, and none of ``pi``, ``sin``, ``infinity``…"""
    t = unwrap(text)
    if not _WORDY.match(t):
        return False
    words = t.lower().translate(_PUNCT).split()
    return any(len(w) > 1 for w in words) and not any(w in _MATH_TOKENS for w in words)


@functools.lru_cache(maxsize=1 << 16)
def _canon_math(text: str) -> str:
    """LaTeX with the noise that never changes a value removed (spacing, ``\\left``, ``\\dfrac``)."""
    t = _MATH_NOISE.sub("", unwrap(text)).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return t[:-1] if t.endswith(".") else t


# --------------------------------------------------------------------------- numbers

# A number as written: a mixed number (``7 3/4``), thousands grouped by spaces (``1 000``)
# or commas (``1,000``), a decimal (a comma in it only with ``decimal_comma``), an exponent,
# a fraction; then an optional scale word (``3 million``, ``12 dozen``: numbers, not units).
_NUM_TEXT = (
    r"[-+]?(?:\\[dt]?frac\{-?\d+\}\{\d+\}|\d+[ \u00a0]+\d+\s*/\s*\d+|\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?:[.,]\d+)?"
    r"|[\d.,]*\d(?:[eE][-+]?\d+)?(?:\s*/\s*\d+)?)"
)
_SCALE_WORDS = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9, "trillion": 10**12, "dozen": 12}
_SCALE = r"(?:\s+(?P<scale>hundred|thousand|million|billion|trillion|dozen)s?(?![A-Za-z]))"
_MIXED = re.compile(r"^([-+]?)(\d+)\s+(\d+)\s*/\s*(\d+)$")
_GROUPED_COMMA = re.compile(r"^[-+]?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d*)?$")
_GROUPED_SPACE = re.compile(r"^[-+]?\d{1,3}(?: \d{3})+(?:[.,]\d+)?$")
_DECIMALS = re.compile(r"\.(\d*)$")
_QUANTITY = re.compile(
    rf"^(?P<num>{_NUM_TEXT}){_SCALE}?(?P<pct>\s*(?:\\?%|percent(?![A-Za-z])|pct(?![A-Za-z])))?(?P<unit>{_UNIT})?$",
    re.IGNORECASE,
)

# Number words (``two``, ``Three.``, ``twenty-one``, ``one hundred five``) read as digits.
_SMALL_WORDS = {
    w: i for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen".split())
}
_TENS_WORDS = {w: 10 * (i + 2) for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())}
_NUMBER_WORD = "|".join([*_SMALL_WORDS, *_TENS_WORDS, *_SCALE_WORDS])
_WORDS_NUMBER = re.compile(rf"^(?:{_NUMBER_WORD})(?:(?:[\s-]+|\s+and\s+)(?:{_NUMBER_WORD}))*(?![A-Za-z])", re.IGNORECASE)


def words_value(words: str) -> int | None:
    """``twenty-one`` → 21, ``three hundred and five`` → 305, ``a dozen``-free; None if not a number."""
    total, current, seen = 0, 0, False
    for w in re.split(r"[\s-]+", words.lower()):
        if w in ("", "and"):
            continue
        if w in _SMALL_WORDS:
            current += _SMALL_WORDS[w]
        elif w in _TENS_WORDS:
            current += _TENS_WORDS[w]
        elif w in _SCALE_WORDS:
            scale = _SCALE_WORDS[w]
            if scale == 100:
                current = max(current, 1) * 100
            else:
                total += max(current, 1) * scale
                current = 0
        else:
            return None
        seen = True
    return total + current if seen else None


class _Number(NamedTuple):
    exact: Fraction
    decimals: int | None  # digits written after the decimal point (0: an integer); None: a fraction


@functools.lru_cache(maxsize=1 << 16)
def _exact_number(text: str, decimal_comma: bool = False) -> _Number | None:
    """The exact value of a bare number as written (``1 000``, ``1,000.5``, ``7 3/4``, ``2/4``,
    ``\\frac{1}{2}``, ``1e6``); None when it is not one (``1,22`` is a list unless ``decimal_comma``)."""
    t = _sci_to_e(text.strip().replace("\u00a0", " ").replace("\u202f", " "))  # 2.5 \times 10^6: 2.5e6
    m = _MIXED.match(t)
    if m:
        if int(m.group(4)) == 0:
            return None
        value = int(m.group(2)) + Fraction(int(m.group(3)), int(m.group(4)))
        return _Number(-value if m.group(1) == "-" else value, None)
    m = _LATEX_FRAC.match(t)
    if m:
        if int(m.group(3)) == 0:
            return None
        value = Fraction(int(m.group(2)), int(m.group(3)))
        return _Number(-value if m.group(1) == "-" else value, None)
    t = t.replace(" ", "") if _GROUPED_SPACE.match(t) else t
    if "/" in t:
        m = _FRACTION.match(t)
        if not m or int(m.group(2)) == 0:
            return None
        return _Number(Fraction(int(m.group(1)), int(m.group(2))), None)
    if "," in t:
        if decimal_comma:
            t = t.replace(".", "").replace(",", ".")
        elif _GROUPED_COMMA.match(t):
            t = t.replace(",", "")
        else:
            return None
    if not _NUMBER.match(t):
        return None
    try:
        value = Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None
    if "e" in t.lower():
        return _Number(value, 0 if value.denominator == 1 else None)
    d = _DECIMALS.search(t)
    return _Number(value, len(d.group(1)) if d else 0)


@functools.lru_cache(maxsize=1 << 16)
def _number_of(text: str, decimal_comma: bool = False) -> _Number | None:
    """:func:`parse_number`'s exact value and stated decimals."""
    t = text.strip().strip("$").strip()
    t = _TEXT_WRAP.sub(r"\1", t)
    t = t.replace("{,}", ",").replace("\\!", "").strip()
    if t.endswith("\\%"):
        t = t[:-2]
    elif t.endswith("%"):
        t = t[:-1]
    if t.startswith("\\$"):
        t = t[2:]
    return _exact_number(t.strip(), decimal_comma)


def parse_number(text: str, decimal_comma: bool = False) -> float | None:
    """A float from ``3``, ``-2.5``, ``1,000``, ``1 000``, ``7 3/4``, ``50%``, ``$4``, ``1/2``,
    ``\\frac{1}{2}``; else None.

    Strict: units and words make it None (see :func:`parse_quantity` for the lenient parse).
    A comma is a thousands separator only before groups of three digits (``1,2`` is a list),
    or the decimal point with ``decimal_comma`` (``3,5`` = 3.5).
    """
    n = _number_of(text, decimal_comma)
    if n is None:
        return None
    return _finite(n.exact)


def _finite(exact: Fraction) -> float | None:
    """``exact`` as a float; None past a float's range (2e400: OverflowError, not an answer)."""
    try:
        value = float(exact)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


class _Quantity(NamedTuple):
    value: float
    percent: bool
    fraction: bool
    text: str  # the number without its unit, for Math-Verify
    exact: Fraction = Fraction(0)
    decimals: int | None = None  # digits stated after the decimal point; 0: an integer; None: a fraction
    unit: str = ""  # the unit as written, canonical (``cm``, ``deg``, ``apples``); "" when none


_UNIT_CANON = (
    (re.compile(r"\\(?:text|mathrm|textrm|mbox)\s*\{([^{}]*)\}"), r"\1"),
    (re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\circ|\\degree|\bdegrees?\b"), "deg"),
    (re.compile(r"\^\s*\{?\s*2\s*\}?|²"), "^2"),
    (re.compile(r"\^\s*\{?\s*3\s*\}?|³"), "^3"),
    (re.compile(r"\s+"), " "),
)


#: Unit names and spellings as their symbols, so an option's "12 cm²" is "12 square centimeters".
_LENGTHS = {"mm": ("millimeter", "millimetre"), "cm": ("centimeter", "centimetre"), "m": ("meter", "metre", "mt"),
            "km": ("kilometer", "kilometre")}
_UNIT_NAMES: dict[str, str] = {}
for _symbol, _names in _LENGTHS.items():
    for _name in (*_names, _symbol):
        for _plural in ("", "s"):
            _UNIT_NAMES[_name + _plural] = _symbol
            for _square in ("square ", "sq ", "sq. "):
                _UNIT_NAMES[_square + _name + _plural] = _symbol + "^2"
            _UNIT_NAMES[_name + _plural + " squared"] = _symbol + "^2"
            _UNIT_NAMES[_name + _plural + " sq"] = _symbol + "^2"
            for _cubic in ("cubic ", "cu ", "cu. "):
                _UNIT_NAMES[_cubic + _name + _plural] = _symbol + "^3"
            _UNIT_NAMES[_name + _plural + " cubed"] = _symbol + "^3"
_UNIT_NAMES.update({
    "kilometers per hour": "km/h", "kilometres per hour": "km/h", "km per hour": "km/h", "kmph": "km/h",
    "kph": "km/h", "km/hr": "km/h", "kmh": "km/h", "meters per second": "m/s", "metres per second": "m/s",
    "m per s": "m/s", "mps": "m/s", "miles per hour": "mph",
    "kilos": "kg", "kgs": "kg", "kilo": "kg", "kilogram": "kg", "kilograms": "kg", "gram": "g", "grams": "g",
    "newton": "N", "newtons": "N", "joule": "J", "joules": "J", "watt": "W", "watts": "W", "volt": "V", "volts": "V",
    "second": "s", "seconds": "s", "sec": "s", "secs": "s", "hour": "h", "hours": "h", "hr": "h", "hrs": "h",
    "minute": "min", "minutes": "min", "mins": "min",
})
del _symbol, _names, _name, _plural, _square, _cubic
#: Units an answer may be told apart by (lower case); a word such as "square" (a reader's cut of
#: "square centimeters"), "in" (inches, or "in total") or "apple" tells nothing.
_KNOWN_UNITS = frozenset(u.lower() for u in _UNIT_NAMES.values()) | {"deg", "mph", "l", "ml", "lb", "lbs", "oz", "ft",
                                                                     "yd", "mi", "mg", "nm", "pa", "kpa", "hz", "khz"}


@functools.lru_cache(maxsize=1 << 14)
def _canon_unit(unit: str) -> str:
    """``\\text{ cm}^2`` → ``cm^2``, ``^\\circ``/``°``/``degrees`` → ``deg``, ``square centimeters`` →
    ``cm^2``, ``newtons`` → ``N``, ``apples`` → ``apple``."""
    u = unit
    for pattern, repl in _UNIT_CANON:
        u = pattern.sub(repl, u)
    u = u.strip().rstrip(".").strip()
    named = _UNIT_NAMES.get(u.lower())
    if named is not None:
        return named
    if len(u) > 3 and u.endswith("s") and u.isalpha():
        u = u[:-1]
    return u


_IN_TOTAL = re.compile(r"\s+(?:in\s+(?:total|all)|altogether|total)$", re.IGNORECASE)
_OPERATOR_UNIT = re.compile(  # "3 times" is a count; "2 times the radius" an expression
    r"(?:plus|minus|divided|over|multiplied|squared|cubed)\b|times\s+(?:the|a|an|its|his|her|their|this|that)\b",
    re.IGNORECASE)


@functools.lru_cache(maxsize=1 << 16)
def _quantity(text: str, decimal_comma: bool = False) -> _Quantity | None:
    """The number in ``12 cm``, ``90^\\circ``, ``$4``, ``x = 3``, ``50%``, ``3 million``, ``two dogs``."""
    t = _LATEX_SPACE.sub(" ", unwrap(text)).strip().rstrip(".").strip()
    t = _CURRENCY.sub("", _ASSIGN.sub("", _APPROX.sub("", t))).strip()
    if "total" in t or " all" in t or "altogether" in t:
        t = _IN_TOTAL.sub("", t)  # "4 in total" is 4 (of what was counted), not 4 inches
    t = _sci_to_e(t)  # 1.6 \times 10^{-19} C: 1.6e-19 C, not 1.6 with a unit "\times 10^{-19} C"
    m = _QUANTITY.match(t)
    if m is None:
        return _word_quantity(t)
    num = m.group("num")
    n = _exact_number(num.replace("\\!", ""), decimal_comma)
    if n is None:
        return None
    exact, decimals = n
    if m.group("scale"):
        exact *= _SCALE_WORDS[m.group("scale").lower()]
        decimals = 0 if exact.denominator == 1 else None
    value = _finite(exact)
    if value is None:
        return None
    percent = m.group("pct") is not None
    fraction = "/" in num or "frac" in num
    shown = _shown(exact, decimals)
    if m.group("unit") and _OPERATOR_UNIT.match(m.group("unit").strip()):
        return None  # "2 times the radius", "3 more than x": an expression, not 2 of a unit
    unit = _canon_unit(m.group("unit")) if m.group("unit") else ""
    return _Quantity(value, percent, fraction, shown + ("\\%" if percent else ""), exact, decimals, unit)


def _shown(exact: Fraction, decimals: int | None) -> str:
    """The number for Math-Verify: ``1000`` for ``1 000``/``1,000``, ``31/4`` for ``7 3/4``, ``3.50``."""
    if exact.denominator == 1:
        return str(exact.numerator)
    if decimals:
        return f"{float(exact):.{decimals}f}"
    return f"{exact.numerator}/{exact.denominator}"


def _word_quantity(t: str) -> _Quantity | None:
    """``two``, ``Twenty-one``, ``three hundred``, ``two dogs``: a number in words (a unit may follow)."""
    if not t[:1].isalpha():
        return None
    m = _WORDS_NUMBER.match(t)
    if m is None:
        return None
    value = words_value(m.group(0))
    rest = t[m.end():]
    if value is None or (rest and not _WORD_UNIT.match(rest)):
        return None
    return _Quantity(float(value), False, False, str(value), Fraction(value), 0, _canon_unit(rest) if rest else "")


_WORD_UNIT = re.compile(rf"^\s+{_UNIT_WORDS}$")


def parse_quantity(text: str, decimal_comma: bool = False) -> float | None:
    """A float from a number as models write it, units and currency dropped (``12 cm`` → 12)."""
    q = _quantity(text, decimal_comma)
    return None if q is None else q.value


# --------------------------------------------------------------------------- choice letters


def _choice_letter(text: str) -> str | None:
    m = _CHOICE.match(text.strip())
    return m.group(1).upper() if m else None


#: What :func:`normalize_text` drops that changes a value: a sign before or after a token (``-3``,
#: ``Na+``, ``B+``), a comparison, a percent, a fraction's or a ratio's slash or colon (``1/2``,
#: ``3:00``); not a hyphen inside a word (``well-known``).
_VALUE_MARKS = re.compile(r"(?<![A-Za-z0-9])[-+](?=\S)|(?<=\S)[-+](?![A-Za-z0-9])|[<>%≤≥]|(?<=\d)[/:](?=\d)")


def same_marks(one: str, other: str) -> bool:
    """Do two texts that normalise alike carry the same :data:`_VALUE_MARKS` (``-3`` is not ``3``,
    ``x < 2`` not ``x > 2``, ``1/2`` not ``12``, ``Na+`` not ``Na``)?"""
    return _VALUE_MARKS.findall(strip_answer(one)) == _VALUE_MARKS.findall(strip_answer(other))


#: One symbol's LaTeX, ASCII and Unicode spellings; LaTeX's spaces as a space (``2\,1/2`` is
#: a mixed number), and what it renders as nothing (``\left``, ``\!``).
_FORM_SYMBOLS = re.compile(
    r"\\(?:geq?|geqslant|leq?|leqslant|neq?|[lg]t|[dt]frac|degree|infty|left|right|displaystyle|q?quad)(?![A-Za-z])"
    r"|[<>!]=|\\%|\^\s*\{?\s*\\circ\s*\}?|×|\\[,;:! ]")
_FORM_SPELLED = {"\\ge": "≥", "\\geq": "≥", "\\geqslant": "≥", ">=": "≥", "\\le": "≤", "\\leq": "≤", "\\leqslant": "≤",
                 "<=": "≤", "\\ne": "≠", "\\neq": "≠", "!=": "≠", "\\lt": "<", "\\gt": ">", "\\dfrac": "\\frac",
                 "\\tfrac": "\\frac", "\\%": "%", "\\degree": "°", "\\infty": "∞", "×": "\\times ", "\\,": " ",
                 "\\;": " ", "\\:": " ", "\\ ": " ", "\\quad": " ", "\\qquad": " "}
_FORM_TEXT = re.compile(r"\\(?:text|textrm|textnormal|mathrm|mbox)\s*\{([^{}]*)\}")
#: ``^{2}``, ``_{n}``, ``\sqrt{3}``: a single token's braces, which LaTeX renders as ``^2``, ``\sqrt3``.
_FORM_BRACED = re.compile(r"([_^]|\\sqrt)\s*\{\s*(\w)\s*\}")
_FORM_COMMAND_SPACE = re.compile(r"(\\[A-Za-z]+)\s+(?![A-Za-z])")
_FORM_SPACE = re.compile(r"\s+")
_FORM_DOLLAR = re.compile(r"(?<!\\)\$")
_FORM_NEEDED = re.compile(r"[^\w.]")  # an answer of letters, digits and points is its own form


@functools.lru_cache(maxsize=1 << 16)
def _option_form(text: str) -> str:
    """``text`` as written maths, its spelling and spacing aside: ``\\dfrac`` is ``\\frac``,
    ``\\geq``/``>=`` are ``≥``, ``\\left(`` is ``(``, ``\\%`` is ``%``, ``^\\circ`` is ``°``,
    ``\\text{…}`` its words, spaces only between two words or numbers (``2 1/2`` is no
    ``21/2``). Equal forms are the same maths: an option stated another way (``(2,1)`` is
    ``(2, 1)``), its signs, units and case kept, unlike :func:`normalize_text`."""
    t = unwrap(text)
    if "$" in t and len(_FORM_DOLLAR.findall(t)) % 2 == 0:
        t = _FORM_DOLLAR.sub("", t)  # inline maths' delimiters, not a lone dollar sign
    t = _FORM_TEXT.sub(r"\1", t)
    t = _FORM_SYMBOLS.sub(lambda m: _FORM_SPELLED.get(m.group(0), "°" if "circ" in m.group(0) else ""), t)
    t = _FORM_BRACED.sub(r"\1\2", t)
    t = _FORM_COMMAND_SPACE.sub(r"\1", t)
    t = _FORM_SPACE.sub(_form_space, t.strip())
    return t[:-1] if t.endswith(".") and len(t) > 1 else t


def _form_space(m: re.Match[str]) -> str:
    """One space between two words or numbers (``x y``, ``2 1/2``); none elsewhere (``(2, 1)``)."""
    before, after = m.string[m.start() - 1 : m.start()], m.string[m.end() : m.end() + 1]
    return " " if (before.isalnum() or before == "_") and (after.isalnum() or after == "_") else ""


def _option_letter(text: str, options: dict[str, str]) -> str | None:
    """The letter of the option whose text ``text`` is (normalised, its signs kept; or the same
    maths written another way, :func:`_option_form`), or whose number it states in a unit the
    option does not contradict (``5 meters`` is not option ``5 cm``, both known units: then no
    letter, and the caller compares the texts, units converted)."""
    if not options:
        return None
    norm = normalize_text(text)
    for letter, option in options.items():
        if normalize_text(option) == norm and norm and same_marks(option, text):
            return letter
    if _FORM_NEEDED.search(text):  # (a boxed number's path skips this: its form is itself)
        form = _option_form(text)
        for letter, option in options.items():
            if _option_form(option) == form and form:
                return letter
    q = _quantity(text)
    if q is not None:
        for letter, option in options.items():
            o = _quantity(option)
            if (o is not None and math.isclose(o.value, q.value, rel_tol=1e-9)
                    and not (o.unit.lower() in _KNOWN_UNITS and q.unit.lower() in _KNOWN_UNITS
                             and o.unit.lower() != q.unit.lower())):
                return letter
    return None
