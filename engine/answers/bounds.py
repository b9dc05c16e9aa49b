"""A bound on a value is not the value: ``> 12``, ``more than 12``, ``over 12``, ``\\geq 12``,
``at least 12``, ``12+`` and ``2021 onwards`` answer with a range that holds the value (or,
for the strict ones, that leaves it out), which a guess satisfies as easily as the value does.

Math-Verify reads ``\\geq 12`` and ``12+`` as 12, and the value readers read ``no more than
12`` as its number, so each was right for gold 12. Here an answer that is a bound on one
number (a relation or bound words before it, bound words after it; a few words in all) is
wrong against a gold that states no bound, with one exception: where the question asks for
an extreme (``the most``, ``the minimum``, ``at least``), a bound that holds its number
(``at most 2``, ``\\leq 2``, ``no fewer than 3``) states that extreme, and its number is the
answer. A strict bound (``more than 12``, ``> 12``, ``over 12``) never is. A gold that states
a bound itself (``x > 3``, ``18+``) leaves the comparison to the other checks. Approximations
are not bounds (``about 12``, ``~12``, ``\\approx 12`` stay right), and neither is a sign
(``+12``).

Also here, since a year's era is the same kind of qualifier: ``1776 BC`` is not 1776 (AD),
nor ``2,500 years ago`` 2500 BC.
"""

from __future__ import annotations

import functools
import re

#: Relations before a number that leave it out: ``>``, ``<``, ``\\gt``, ``≠``, ``\\ngeq``.
_STRICT_RELATION = r"(?:>(?!=)|<(?!=)|≠|≫|≪|\\(?:gt|lt|neq?|gg|ll|n(?:geq?|leq?|less|gtr))(?![A-Za-z]))"
#: Relations before a number that hold it: ``>=``, ``≥``, ``\\geq``, ``≲``.
_RELATION = (rf"(?:{_STRICT_RELATION}|>=|<=|≥|≤|⩾|⩽|≳|≲"
             r"|\\(?:geq?|leq?|geqslant|leqslant|gtrsim|lesssim)(?![A-Za-z]))")
_COMPARATIVE = (r"(?:more|less|fewer|greater|larger|bigger|smaller|higher|lower|later|earlier|sooner|older|"
                r"younger|longer|shorter|heavier|lighter)")
#: Words before a number that bound it and leave it out, in any answer (``more than 12``).
_STRICT_WORDS = rf"{_COMPARATIVE}\s+than|in\s+excess\s+of|upwards?\s+of|exceeding"
#: The same, but also a verb's particle (``add up to 12``, ``handed over 12``): bounds only
#: where they open a short answer (``over 12``), never read inside a sentence.
_STRICT_PARTICLES = r"(?:(?:well|just|slightly|a\s+little|a\s+bit)\s+)?(?:over|under|above|below|beyond)"
#: Words before a number that bound it and hold it (``at least 12``, ``no more than 12``).
_HOLDING_WORDS = (rf"(?:no|not|any)\s+{_COMPARATIVE}\s+than|not\s+exceeding"
                  rf"|{_COMPARATIVE}\s+(?:than\s+)?or\s+equal\s+to|at\s+(?:the\s+)?(?:least|most|earliest|latest)"
                  r"|as\s+(?:many|much|few|little|high|low|early|late)\s+as|(?:max\.?|min\.)(?=\s+\d)"
                  r"|at\s+or\s+(?:above|below|over|under|after|before)|(?:at\s+)?a\s+(?:minimum|maximum)(?:\s+of)?")
_HOLDING_PARTICLES = r"up\s+to"  # "count up to 12"
_BOUND_WORDS = rf"{_HOLDING_WORDS}|{_STRICT_WORDS}|{_HOLDING_PARTICLES}|{_STRICT_PARTICLES}"
#: Words after a number that bound it (``12 or more``, ``12 at most``, ``2021 onwards``, ``12+``,
#: ``12 max``; not ``45 min``, minutes): each holds its number. Inside a sentence only where
#: they end its clause.
_BOUND_AFTER = (r"(?:\s*\+|\s+(?:or|and)\s+(?:more|less|fewer|above|below|over|under|higher|lower|greater|"
                r"later|earlier|up|upwards?|beyond|onwards?|after|before|thereafter|older|younger|longer|"
                r"shorter)|\s+at\s+(?:the\s+)?(?:least|most|earliest|latest)|\s+onwards?|\s+upwards?|"
                r"\s+and\s+(?:up|counting)|\s+plus|\s+or\s+(?:greater|larger|smaller|bigger)|\s+(?:max(?:imum)?\.?|minimum)"
                r"|\s+tops)")
_CLAUSE_END = r"(?=\s*(?:[.,;:!?)]|$))"
#: A number as it opens a value: ``12``, ``$12``, ``-3.5``, ``\\frac{1}{2}``.
_NUMBER_START = r"(?:[-+]?[$€£]?\s*\d|\$?\\[dt]?frac\b|\$\s*[-+]?\d)"
_NUMBER = r"[-+]?[$€£]?\s*\d[\d,.]*"
_WRAP = r"[\s$*_()\\{}]*"  # markdown, maths delimiters, braces around the answer
_BEFORE_NUMBER = re.compile(rf"^{_WRAP}(?:(?P<strict>{_STRICT_RELATION})\s*|(?P<relation>{_RELATION})\s*"
                            rf"|(?P<strict_words>{_STRICT_WORDS}|{_STRICT_PARTICLES})\s+"
                            rf"|(?:{_HOLDING_WORDS}|{_HOLDING_PARTICLES})\s+)"
                            rf"(?P<value>{_NUMBER_START}.*)$", re.IGNORECASE | re.DOTALL)
_NUMBER_THEN_BOUND = re.compile(rf"^{_WRAP}(?P<value>{_NUMBER}(?:\s*(?:\\?%|[A-Za-z]+\.?))?(?:\s+[A-Za-z]+)?)"
                                rf"{_BOUND_AFTER}(?![\w+/-]){_WRAP}[.!]?{_WRAP}$", re.IGNORECASE)
#: ``12+ years``, ``3+ hours``: "or more" written as a plus between the number and its unit.
_PLUS_UNIT = re.compile(rf"^{_WRAP}(?P<number>{_NUMBER})\+\s*(?P<unit>[A-Za-z][A-Za-z/.]*(?:\s+[A-Za-z]+)?){_WRAP}[.!]?$")
_NUMBERS = re.compile(r"\d+(?:[.,]\d+)*")
_BRACED = re.compile(r"\{[^{}]*\}")
#: Anything in a gold that states a bound, or a sign (``+3``, an ion's charge written ``3+``):
#: then every answer is left to the other checks.
_ANY_BOUND = re.compile(rf"{_RELATION}|\b(?:{_BOUND_WORDS})\b|(?<=\d){_BOUND_AFTER}(?![\w+])|^[\s$]*\+",
                        re.IGNORECASE)
MAX_WORDS = 8

#: Bound words ending right before a number inside a sentence (``It is no more than 12``):
#: what the value readers keep with it.
BOUND_BEFORE = re.compile(rf"(?:{_RELATION}|\b(?:{_HOLDING_WORDS}|{_STRICT_WORDS})"
                          rf"|(?:^|[:;]|\b(?:is|are|was|were|be|been|has|have|had|holds?|carry|carries|seats?|fits?))"
                          rf"\s*(?P<particle>{_HOLDING_PARTICLES}|{_STRICT_PARTICLES}))\s*$", re.IGNORECASE)
#: Bound words right after a number, ending its clause (``12 at most.``, ``2021 onwards``), or
#: "or more" before what is counted (``12 or more people.``).
BOUND_AFTER = re.compile(rf"(?:{_BOUND_AFTER}(?![\w+/-])|\s+or\s+(?:more|fewer|less)(?:\s+[A-Za-z]+){{1,2}}){_CLAUSE_END}",
                         re.IGNORECASE)
#: An era after a year, kept with it by the value readers (``44 BC``, ``79 AD``).
ERA_AFTER = re.compile(r"\s+(?:B\.C\.(?:E\.)?|A\.D\.|BCE?|AD|CE)(?![A-Za-z])")

#: A question that asks for an extreme, which a bound holding its number states: a most or a
#: least, what is needed or enough, what something can hold.
_EXTREME = re.compile(r"\b(?:max(?:imum|imal|imize|imise)?|min(?:imum|imal|imize|imise)?|most|least|largest|"
                      r"smallest|greatest|fewest|highest|lowest|longest|shortest|earliest|latest|limit|up\s+to|"
                      r"capacity|no\s+(?:more|less|fewer)\s+than|at\s+(?:most|least)|needs?|needed|required?|"
                      r"requires|must|enough|suffice|sufficient|can\b[^?.]{0,40}\b(?:hold|fit|carry|seat|contain|"
                      r"accommodate|afford|buy|purchase|store|serve))\b", re.IGNORECASE)

#: A year's era after its number (``1776 BC``, ``500 BCE``, ``44 B.C.``, ``44 \\text{ BC}``), and
#: the common era named (``79 AD``, ``AD 79``, ``79 CE``).
_BC = re.compile(r"\d(?:\s+|\s*\\text\{\s*)(?:B\.?\s?C\.?(?:\s?E\.?)?|BCE)(?![A-Za-z^_])", re.IGNORECASE)
#: Letters that name a segment or a point (``2BC``, ``\\frac{BC}{2}``): a gold of geometry, not of years.
_SEGMENT = re.compile(r"(?<![A-Za-z])(?:BC|AD|CE)(?![A-Za-z.])")
_AD = re.compile(r"\d\s+(?:A\.?\s?D\.?|C\.?E\.?)(?![A-Za-z])|\b(?:AD|A\.D\.)\s+\d")


@functools.lru_cache(maxsize=65536)  # per checked answer on the driver: a run's answers repeat
def split_bound(answer: str) -> tuple[bool, str] | None:
    """``(strict, the number and what follows it)`` where ``answer`` is a bound on one number
    (``>= 12`` → ``(False, "12")``, ``more than 12`` → ``(True, "12")``, ``12 or more`` →
    ``(False, "12")``), else None."""
    if len(answer.split()) > MAX_WORDS or not any(c.isdigit() for c in answer):
        return None
    unbraced, previous = _BRACED.sub("", answer), answer
    while unbraced != previous:  # innermost braces first: "\\frac{\\sqrt{2}}{2}" holds one number
        unbraced, previous = _BRACED.sub("", unbraced), unbraced
    if len(_NUMBERS.findall(unbraced)) > 1:
        return None  # several numbers ("Above 50%: 3 countries", "12 +/- 0.5"); LaTeX's braces hold one
    if answer.lstrip(" $(").startswith("<") and ">" in answer:
        return None  # "<2, 3>": a vector
    m = _BEFORE_NUMBER.match(answer)
    if m is not None:
        return bool(m.group("strict") or m.group("strict_words")), _trimmed(m.group("value"))
    m = _NUMBER_THEN_BOUND.match(answer)
    if m is not None:
        return False, _trimmed(m.group("value"))
    m = _PLUS_UNIT.match(answer)
    return (False, f"{m.group('number')} {m.group('unit')}") if m is not None else None


def _trimmed(value: str) -> str:
    """A bound's number without the wrapping the bound's words sat in (``(> 12)``, ``$\\geq
    12$``): closing brackets only where they close nothing of the number's own."""
    value = value.strip(" $*_.")
    while value[-1:] in (")", "}") and value.count(value[-1]) > value.count("(" if value[-1] == ")" else "{"):
        value = value[:-1].rstrip(" $*_.")
    return value


def states_bound(gold: str) -> bool:
    """Whether a gold answer states a bound itself (``x > 3``, ``18+``, ``at least 5``) or a
    sign (``+3``)."""
    return _ANY_BOUND.search(gold) is not None


@functools.lru_cache(maxsize=4096)
def asks_for_extreme(question: str) -> bool:
    """Whether a question asks for a most or a least (``the maximum number``, ``at least how
    many``, ``how many does she need``): there a bound that holds its number states it."""
    return _EXTREME.search(question) is not None


def eras_differ(gold: str, predicted: str) -> bool:
    """Whether the answer dates its number BC (``1776 BC``) where the gold does not, or the
    common era where the gold says BC: the same digits, other years. An answer that names no
    era against a BC gold is left to the other checks (a sentence's reader may have left the
    era out: "He died in 44 BC." reads 44)."""
    gold_era, predicted_era = _era(gold), _era(predicted)
    if gold_era == "segment":
        return False  # "2 BC" against gold "2BC": a segment
    if predicted_era == "BC":
        return gold_era != "BC"
    return gold_era == "BC" and predicted_era == "AD"


@functools.lru_cache(maxsize=65536)  # per comparison on the driver: golds and answers repeat
def _era(text: str) -> str | None:
    """``"BC"``, ``"AD"`` (or CE), ``"segment"`` (letters BC, AD or CE that name no era), or None."""
    if _BC.search(text):
        return "BC"
    if _AD.search(text):
        return "AD"
    return "segment" if _SEGMENT.search(text) else None
