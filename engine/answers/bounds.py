"""A bound on a value is not the value: ``> 12``, ``more than 12``, ``\\geq 12``, ``at least
12``, ``no more than 12``, ``12 or more`` and ``2021 onwards`` answer with a range that holds
the value (or, for the strict ones, leaves it out), which a guess satisfies as easily as the
value does.

Math-Verify reads ``\\geq 12`` as 12, and the value readers read ``no more than 12`` as its
number, so each was right for gold 12. Here an answer that is a bound on one number (a
relation or bound words before it, bound words after it; a few words in all) is wrong against
a gold that states the plain value, with one exception: a question that asks for a most
(``the maximum number``, ``how many can the lift hold``) is answered by an upper bound that
holds its number (``at most 12``, ``up to 12``, ``\\leq 12``), and one that asks for a least
(``the minimum``, ``the fewest``) by a lower one (``at least 12``); the bound's number is then
the answer. A strict bound (``more than 12``, ``> 12``, ``over 12``) never is. The question is
read only in its last sentence, and superlatives that name a thing (``least common multiple``,
``greatest common divisor``, ``most frequent``) ask for no extreme.

A gold that states a bound itself (``x > 3``, ``18+``) or a sign (``+3``) leaves every answer
to the other checks, and so do ``N+`` for a one-digit N (an ion's charge, ``2+``) and bound words
a run cannot tell from a verb's (``add up to 12``, ``handed over 12``) inside a sentence.

"N or more" and "N or less" are refused as hedges before this reads them (``extract``), whatever
the question.
"""

from __future__ import annotations

import functools
import re

STRICT, UPPER, LOWER = "strict", "upper", "lower"

#: Relations before a number: those that leave it out, and those that hold it, by direction.
_STRICT_RELATION = r"(?:>(?!=)|<(?!=)|≠|≫|≪|\\(?:gt|lt|neq?|gg|ll|n(?:geq?|leq?|less|gtr))(?![A-Za-z]))"
_UPPER_RELATION = r"(?:<=|≤|⩽|≲|\\(?:leq?|leqslant|lesssim)(?![A-Za-z]))"
_LOWER_RELATION = r"(?:>=|≥|⩾|≳|\\(?:geq?|geqslant|gtrsim)(?![A-Za-z]))"
_RELATION = rf"(?:{_STRICT_RELATION}|{_UPPER_RELATION}|{_LOWER_RELATION})"
_MORE = r"(?:more|greater|larger|bigger|higher|later|longer|older|heavier)"
_LESS = r"(?:less|fewer|smaller|lower|earlier|sooner|shorter|younger|lighter)"
#: Words before a number that leave it out (``more than 12``), in any answer.
_STRICT_WORDS = rf"(?:{_MORE}|{_LESS})\s+than|in\s+excess\s+of|upwards?\s+of|exceeding"
#: The same, but also a verb's particle (``handed over 12``): only where they open a short answer.
_STRICT_PARTICLES = r"(?:(?:well|just|slightly|a\s+little|a\s+bit)\s+)?(?:over|under|above|below|beyond)"
#: Words before a number that hold it, by direction (``no more than 12``, ``at least 12``).
_UPPER_WORDS = (rf"(?:no|not)\s+{_MORE}\s+than|not\s+exceeding|{_LESS}\s+(?:than\s+)?or\s+equal\s+to"
                r"|at\s+(?:the\s+)?most|at\s+the\s+latest|as\s+(?:many|much|high|late)\s+as|max\.?(?=\s+\d)"
                r"|(?:at\s+)?a\s+maximum(?:\s+of)?|at\s+or\s+(?:below|under|before)")
_LOWER_WORDS = (rf"(?:no|not)\s+{_LESS}\s+than|{_MORE}\s+(?:than\s+)?or\s+equal\s+to"
                r"|at\s+(?:the\s+)?least|at\s+the\s+earliest|min\.(?=\s+\d)"
                r"|(?:at\s+)?a\s+minimum(?:\s+of)?|at\s+or\s+(?:above|over|after)")
_UPPER_PARTICLES = r"up\s+to"  # "add up to 12": only where it opens a short answer, or after "is", "holds"...
#: Words after a number that hold it, by direction (``12 or more``, ``12 at most``, ``2021 onwards``).
_UPPER_AFTER = (rf"\s+or\s+(?:{_LESS}|below|under|before)|\s+at\s+(?:the\s+)?most|\s+at\s+the\s+latest"
                r"|\s+max(?:imum)?\.?|\s+tops")
_LOWER_AFTER = (rf"(?<=\d\d)\s*\+|\s+(?:or|and)\s+(?:{_MORE}|above|over|up|beyond|onwards?|after|thereafter)"
                r"|\s+at\s+(?:the\s+)?least|\s+at\s+the\s+earliest|\s+onwards?|\s+and\s+counting|\s+plus|\s+minimum")
_CLAUSE_END = r"(?=\s*(?:[.,;:!?)]|$))"
#: A number as it opens a value: ``12``, ``$12``, ``-3.5``, ``\\frac{1}{2}``.
_NUMBER_START = r"(?:[-+]?[$€£]?\s*\d|\$?\\[dt]?frac\b|\$\s*[-+]?\d)"
_NUMBER = r"[-+]?[$€£]?\s*\d[\d,.]*"
_WRAP = r"[\s$*_()\\{}]*"  # markdown, maths delimiters, braces around the answer
_BEFORE_NUMBER = re.compile(
    rf"^{_WRAP}(?:(?P<strict>{_STRICT_RELATION}\s*|(?:{_STRICT_WORDS}|{_STRICT_PARTICLES})\s+)"
    rf"|(?P<upper>{_UPPER_RELATION}\s*|(?:{_UPPER_WORDS}|{_UPPER_PARTICLES})\s+)"
    rf"|(?P<lower>{_LOWER_RELATION}\s*|(?:{_LOWER_WORDS})\s+))"
    rf"(?P<value>{_NUMBER_START}.*)$", re.IGNORECASE | re.DOTALL)
_NUMBER_THEN_BOUND = re.compile(
    rf"^{_WRAP}(?P<value>{_NUMBER}(?:\s*(?:\\?%|[A-Za-z]+\.?))?(?:\s+[A-Za-z]+)?)"
    rf"(?:(?P<upper>{_UPPER_AFTER})|(?P<lower>{_LOWER_AFTER}))(?![\w+/-])[\s$*_()\\{{}}.!]*$", re.IGNORECASE)
#: ``12+ years``, ``500+ tickets``: "or more" written as a plus between the number and its unit.
_PLUS_UNIT = re.compile(rf"^{_WRAP}(?P<number>[$€£]?\d\d[\d,.]*)\+\s*(?P<unit>[A-Za-z][A-Za-z/.]*(?:\s+[A-Za-z]+)?)"
                        r"[\s$*_()\\{}.!]*$")
#: A number's digits, with its decimal point or thousands commas (``1,200``, ``3.5``).
DIGITS = re.compile(r"\d+(?:[.,]\d+)*")
_BRACED = re.compile(r"\{[^{}]*\}")
_ALL_WORDS = rf"{_UPPER_WORDS}|{_LOWER_WORDS}|{_STRICT_WORDS}|{_UPPER_PARTICLES}|{_STRICT_PARTICLES}"
#: Anything in a gold that states a bound, or a sign (``+3``, an ion's charge ``3+``): then
#: every answer is left to the other checks.
_ANY_BOUND = re.compile(rf"{_RELATION}|\b(?:{_ALL_WORDS})\b|\d\s*\+|(?<=\d)(?:{_UPPER_AFTER}|{_LOWER_AFTER})(?![\w+])"
                        r"|^[\s$]*\+", re.IGNORECASE)
MAX_WORDS = 8
MAX_CHARS = 200  # a bound of eight words never needs more; longer answers would cost the regexes time

#: Bound words ending right before a number inside a sentence (``It is no more than 12``):
#: what the value readers keep with it. "up to", "over", "under" only after words that make
#: them bounds ("is up to 12", "holds up to 40"), not a verb's particle ("add up to 12").
BOUND_BEFORE = re.compile(rf"(?:{_RELATION}|\b(?:{_UPPER_WORDS}|{_LOWER_WORDS}|{_STRICT_WORDS}|max\.?|min\.)"
                          rf"|(?:^|[:;]|\b(?:is|are|was|were|be|been|has|have|had|holds?|carry|carries|seats?|fits?))"
                          rf"\s*(?P<particle>{_UPPER_PARTICLES}|{_STRICT_PARTICLES}))\s*$", re.IGNORECASE)
#: Bound words right after a number, ending its clause (``12 at most.``, ``2021 onwards``), or
#: "or more" before what is counted (``12 or more people.``).
BOUND_AFTER = re.compile(rf"(?:(?:{_UPPER_AFTER}|{_LOWER_AFTER})(?![\w+/-])|\s+or\s+(?:more|fewer|less)(?:\s+[A-Za-z]+){{1,2}})"
                         rf"{_CLAUSE_END}", re.IGNORECASE)
#: The question's asking sentence wants a most, or a least; names that only look like one do not.
_NOT_EXTREME = re.compile(r"\b(?:least|lowest)\s+common\s+(?:multiple|denominator)|\bgreatest\s+common\s+"
                          r"(?:divisor|factor)|\b(?:highest\s+common\s+factor)|\bmost\s+(?:frequent(?:ly)?|common(?:ly)?|"
                          r"likely|popular|often|of\b)|\bat\s+(?:least|most)\b", re.IGNORECASE)
_ASKS_MOST = re.compile(r"\b(?:max(?:imum|imal|imize|imise)?|most|largest|greatest|highest|biggest|longest|latest|"
                        r"capacity|limit(?!\s+of)|top\s+speed|may|allowed|permitted|hold|holds(?!\?)|seats?|accommodates?|"
                        r"(?:can|could)\b[^?.]{0,40}\b(?:hold|fit|carry|seat|contain|accommodate|afford|buy|purchase|"
                        r"store|serve|make|bake|fill|have|take))\b", re.IGNORECASE)
_ASKS_LEAST = re.compile(r"\b(?:min(?:imum|imal|imize|imise)?|least|fewest|smallest|lowest|shortest|earliest|"
                         r"needs?|must|enough|requirement|required|have\s+to\s+be|from\s+what\s+age|"
                         r"since\s+(?:what|which|when))\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")
#: A sentence that tells how to answer, not what to find ("Your answer must be an integer.").
_INSTRUCTION = re.compile(r"^\W*(?:your|the)\s+answer|^\W*(?:answer|you\s+(?:may|must|can)|express|give|round|write|put|"
                          r"please|note|use|show|enter|select|choose)\b", re.IGNORECASE)


def split_bound(answer: str) -> tuple[str, str] | None:
    """``(kind, the number and what follows it)`` where ``answer`` is a bound on one number,
    kind ``STRICT`` (``more than 12``, ``> 12``), ``UPPER`` (``<= 12``, ``at most 12``, ``12 or
    less``) or ``LOWER`` (``at least 12``, ``12 or more``, ``2021 onwards``); else None."""
    return None if len(answer) > MAX_CHARS else _split_bound(answer)  # long answers: no bound, and not kept


@functools.lru_cache(maxsize=65536)  # per checked answer on the driver: a run's answers repeat
def _split_bound(answer: str) -> tuple[str, str] | None:
    if len(answer.split()) > MAX_WORDS or not any(c.isdigit() for c in answer):
        return None
    unbraced, previous = _BRACED.sub("", answer), answer
    while unbraced != previous:  # innermost braces first: "\\frac{\\sqrt{2}}{2}" holds one number
        unbraced, previous = _BRACED.sub("", unbraced), unbraced
    if len(DIGITS.findall(unbraced)) > 1:
        return None  # several numbers ("Above 50%: 3 countries", "12 +/- 0.5"); LaTeX's braces hold one
    if answer.lstrip(" $(").startswith("<") and ">" in answer:
        return None  # "<2, 3>": a vector
    m = _BEFORE_NUMBER.match(answer)
    if m is not None:
        kind = STRICT if m.group("strict") else UPPER if m.group("upper") else LOWER
        return kind, _trimmed(m.group("value"))
    m = _NUMBER_THEN_BOUND.match(answer)
    if m is not None:
        return (UPPER if m.group("upper") else LOWER), _trimmed(m.group("value"))
    m = _PLUS_UNIT.match(answer)
    return (LOWER, f"{m.group('number')} {m.group('unit')}") if m is not None else None


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
def extreme_asked(question: str) -> str | None:
    """``UPPER`` where the question asks for a most (``the maximum number``, ``how many can the
    lift hold``), ``LOWER`` for a least (``the minimum``), None otherwise (or both): the bound
    that states such an answer. Read is the asking sentence: the last one with a question mark,
    else the last that is no instruction on how to answer."""
    sentences = [t for t in _SENTENCE_END.split(question.strip()[-2000:]) if not _INSTRUCTION.match(t)]
    asking = [t for t in sentences if "?" in t]
    asked = (asking or sentences or [""])[-1]
    asked = _NOT_EXTREME.sub(" ", asked)
    most, least = _ASKS_MOST.search(asked) is not None, _ASKS_LEAST.search(asked) is not None
    return UPPER if most and not least else LOWER if least and not most else None
