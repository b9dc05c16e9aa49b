"""Calendar dates: ``March 3, 2021``, ``3 March 2021`` and ``2021-03-03`` are one date.

Document, chart and infographic questions (DocVQA, ChartQA, InfographicVQA) ask for dates,
and models write them in whichever convention they like. Math-Verify reads none of them
as a date, so ``3 March 2021`` was wrong for ``March 3, 2021``. A date compares as the
(year, month, day) it can mean: ``03/04/2021`` may be March 4 or April 3 (a part past 12
fixes the order), ``3/3/21`` either century; a weekday counts only against a gold that names one.

Against a gold date, an answer of a few words (``dated March 3, 2021``, ``early March
2021``) is read for the dates it states: the answer must state every part the gold states,
and may say more (``March 3, 2021`` for ``2021``). A date it takes back (``not March 4``,
``originally scheduled for March 4``) is left out, and the date a thing was moved to wins;
one that is only a bound or an estimate (``before March 3``, ``March 3 or later``) is
another date; two days or months offered (``March 3 or 4``), or a date doubted
(``Unlikely to be March 3``), are wrong. Ranges (``2019-2021``, ``between 2019 and 2021``,
``March 3-5, 2021``) compare end by end, and one end is not the range; decades (``the
1990s``, ``the '90s``) compare as decades, and a year is not one.

What is not only a date is left to the other checks: a bare year against a number
(``2,021``), a year after anything but words that say it is one (``more than 2021``,
``\\sqrt{2021}``), an answer with other numbers beside its dates (``It grew 12% in March
2021``), and anything else that writes no date. A month alone is a date only after a word
that makes it a time (``peaked in May``; not ``The Long March``).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass

from prmtree.engine.answers.normalize import words_value
from prmtree.engine.answers.times import WRITTEN_TIME, latex_free

#: A date's possible readings: (year, month, day), None where the text does not say.
Reading = tuple[int | None, int | None, int | None]

_MONTH_NAMES = ("january february march april may june july august september october november "
                "december").split()
_MONTHS = {name: i + 1 for i, name in enumerate(_MONTH_NAMES)}
_MONTHS.update({name[:3]: i + 1 for i, name in enumerate(_MONTH_NAMES)})
_MONTHS["sept"] = 9
#: A month: spelled out in any case but "march" and "may" (verbs: "they march 5 miles", "5
#: may enter"); abbreviated, with a capital (``Mar``, ``MAR``; "mar", "jan" are words). Alone
#: (no day or year by it), only with a capital, and "May" only as the whole answer ("May be").
_FULL = "|".join(n for n in _MONTH_NAMES if n not in ("march", "may"))
_ABBREVIATED = "|".join(a for n in _MONTH_NAMES if n != "may" for a in (n[:3].capitalize(), n[:3].upper())) \
    + "|Sept|SEPT"
#: Before a dot, a month abbreviated (``Mar. 4``): lookbehinds of fixed width, one per width.
NOT_AFTER_MONTH = r"(?<!\b(?:Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Oct|Nov|Dec))(?<!\bSept)"
AFTER_MONTH = r"(?:(?<=\b(?:Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Oct|Nov|Dec))|(?<=\bSept))"
MONTH = rf"(?:(?i:{_FULL})|March|MARCH|May|MAY|{_ABBREVIATED})"
_WEEKDAY_NAMES = "monday tuesday wednesday thursday friday saturday sunday".split()
#: A weekday: spelled out, or abbreviated with a capital (``Wed``; "wed", "Sat", "Sun" are words).
_WEEKDAY = (r"(?:(?i:" + "|".join(_WEEKDAY_NAMES) + r")|Mon|Tue|Tues|Wed|Weds|Thu|Thur|Thurs|Fri"
            r"|(?:Sat|Sun)(?=\.?,?\s+(?:\d|[A-Z][a-z]{2})))\b\.?")  # "Sun", "Sat" only before a date: words
_ORDINALS = ("first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth "
             "fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth").split()
#: ``third``, ``twenty-first``: a day of the month in words.
_ORDINAL_DAYS = {w: i + 1 for i, w in enumerate(_ORDINALS)}
_ORDINAL_DAYS.update({f"{tens}{sep}{w}": base + i + 1 for tens, base in (("twenty", 20), ("thirty", 30))
                      for i, w in enumerate(_ORDINALS[:9]) for sep in ("-", " ")})
_ORDINAL_DAYS["thirtieth"] = 30
_DAY = (r"(\d{1,2}|(?i:" + "|".join(sorted(_ORDINAL_DAYS, key=len, reverse=True)) + r"))(?:st|nd|rd|th)?(?![\d:])")
_YEAR = r"(\d{4})(?!\d)"
_THEN_YEAR = r"(?:(?:\s*,\s*|\s+)(?:of\s+)?" + _YEAR + r")?"
_TO = r"\s*(?:-|\u2013|\u2014|(?i:to|through|thru|until|till)\b)\s*"

_MONTH_PART = r"\b(" + MONTH + ")"
#: Every form of a date or a range of them, longest first; one group per part.
_FORMS = [
    ("month_days", _MONTH_PART + r"\.?\s+" + _DAY + _TO + _DAY + _THEN_YEAR),  # March 3-5, 2021
    ("days_month", r"(\d{1,2})(?:st|nd|rd|th)?" + _TO + _DAY + r"\s+(?:of\s+)?" + _MONTH_PART + r"\b\.?" + _THEN_YEAR),
    ("iso", r"(?<![\d.,/:-])(\d{4})(?P<iso_sep>[-/.])(\d{1,2})(?P=iso_sep)(\d{1,2})(?![\d%]|[.,/:-]\d)"),
    ("numeric", r"(?<![\w.,/:-])(\d{1,2})(?P<numeric_sep>[/.-])(\d{1,2})(?P=numeric_sep)(\d{4})(?![\d%]|[.,/:-]\d)"),
    ("numeric_short", r"(?<![\w.,/:-])(\d{1,2})/(\d{1,2})/(\d{2})(?![\d%]|[.,/:-]\d)"),
    # 2019-2021, 2019 to 2021, 2019-21, 2010/11; not 1999/2000 (a fraction), nor 2000 - 20 (a difference)
    ("years", r"(?<![\d.,/:-])(\d{4})(?:\s*(?:-|\u2013|\u2014|(?i:to|through|thru|until|till)\b)\s*(\d{4})"
              r"|(?:-|\u2013|/)(\d{2}))(?![\d%]|[.,/:-]\d)"),
    ("day_mon_year", r"(?<![\w.,/:-])(\d{1,2})-" + _MONTH_PART + r"-(\d{4}|\d{2})(?![\d%]|[.,/:-]\d)"),  # 25-Dec-1987
    ("month_day", _MONTH_PART + r"\.?\s+(?:the\s+)?" + _DAY + _THEN_YEAR),
    ("day_month", r"(?<![\d.,])(?:the\s+)?" + _DAY + r"\s+(?:of\s+|day\s+of\s+)?" + _MONTH_PART + r"\b\.?" + _THEN_YEAR),
    ("month_year", _MONTH_PART + r"\b\.?,?\s+(?:of\s+)?" + _YEAR),
    ("decade", r"(?<![\w'\u2019])(?:(1\d|20)(\d)0['\u2019]?s|['\u2019](\d)0s|([2-9])0s"
               r"|(?i:(twenties|thirties|forties|fifties|sixties|seventies|eighties|nineties)))\b"),
    ("month", r"\b" + _MONTH_PART + r"\b\.?"),
    ("year", r"(?<![\d.,$/:-])(1\d{3}|20\d{2})(?![\d%]|[.,/:-]\d)"),
]
#: A date or a range of dates as written in text, no bare year or month (no groups): what the
#: value readers read whole (``4 March 2021``, ``03/04/2021``, ``2010 - 2015``, ``the 1990's``).
_D = r"\d{1,2}(?:st|nd|rd|th)?(?![\d:])"
_THEN_Y = r"(?:(?:\s*,\s*|\s+)(?:of\s+)?\d{4}(?!\d))?"
#: A day and month with a year; without one, a capitalised month and no word after them:
#: "12 June bugs", "5 june", "March 5 blocks", "5 March Madness" are no dates.
_WITH_YEAR = r"(?:\s*,\s*|\s+)(?:of\s+)?\d{4}(?!\d)"
_NO_WORD = r"(?!\s+[A-Za-z])"
_CAPITAL_MONTH = "(?:" + "|".join(n.capitalize() + "|" + n.upper() for n in _MONTH_NAMES) + "|" + _ABBREVIATED + ")"
_ONE_DATE = "(?:" + "|".join([
    r"\b" + MONTH + r"\.?\s+" + _D + _TO + _D + _THEN_Y,
    _D + _TO + _D + r"\s+(?:of\s+)?" + MONTH + r"\b\.?" + _THEN_Y,
    r"\d{4}(?:-\d{1,2}-|/\d{1,2}/|\.\d{1,2}\.)\d{1,2}(?!\d)",
    r"\d{1,2}(?:-\d{1,2}-\d{4}|/\d{1,2}/\d{2}(?:\d{2})?|\.\d{1,2}\.\d{4})(?!\d)",
    r"\d{1,2}-" + MONTH + r"-\d{2}(?:\d{2})?(?!\d)",
    r"\d{4}(?:\s*(?:-|\u2013|\u2014)\s*\d{4}|(?:-|\u2013|/)\d{2})(?![\d%]|[.,/:-]\d)",
    r"\b" + MONTH + r"\.?\s+(?:the\s+)?" + _D + _WITH_YEAR,
    r"(?:the\s+)?" + _D + r"\s+(?:of\s+)?" + MONTH + r"\b\.?" + _WITH_YEAR,
    r"\b" + _CAPITAL_MONTH + r"\.?\s+(?:the\s+)?" + _D + _NO_WORD,
    r"(?:the\s+)?" + _D + r"\s+(?:of\s+)?" + _CAPITAL_MONTH + r"\b\.?" + _NO_WORD,
    r"\b" + MONTH + r"\b\.?,?\s+(?:of\s+)?\d{4}(?!\d)",
    r"\d{3}0['\u2019]?s\b",
]) + ")"
#: (Every form holds a digit within its first 16 characters: a quick test before the forms.)
WRITTEN_DATE = r"(?=[\dJFMASONDjfmasond]|the\b)(?=\D{0,16}\d)" + _ONE_DATE + r"(?:\s*(?:-|\u2013|\u2014|(?i:to|through|thru|until|till)\b)\s*" + _ONE_DATE + ")?"
_DATE = re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in _FORMS))
#: How many groups each form has (its parts, and a separator a part must repeat).
_GROUPS = {name: re.compile(pattern).groups for name, pattern in _FORMS}
_DECADE_WORDS = {w: 10 * (i + 2) for i, w in enumerate(
    "twenties thirties forties fifties sixties seventies eighties nineties".split())}

#: What every written date holds: a quick test that spares the rest for most answers.
_HINT = re.compile(r"\d{4}|\d[/.-]\d{1,2}[/.-]\d|\d0['\u2019]?s\b|ties\b|(?i:\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec))")


@dataclass(frozen=True)
class WrittenDate:
    """What a written date can mean: its readings, or two (a range: its two ends, each a
    set of readings); ``decade``: ``the 1990s`` (its reading is the decade's first year)."""

    ends: tuple[frozenset[Reading], ...]
    decade: bool = False
    year_only: bool = False  # a bare year (``2021``): a number too

    def same(self, other: WrittenDate) -> bool:
        """Whether ``other`` states what this one states (and perhaps more): end by end,
        each part this one gives equal in some reading of both."""
        if self.decade != other.decade or len(self.ends) != len(other.ends):
            return False
        return all(any(_covers(g, a) for g in mine for a in theirs) for mine, theirs in zip(self.ends, other.ends))


def _covers(gold: Reading, answer: Reading) -> bool:
    return all(g is None or g == a for g, a in zip(gold, answer))


def _reading(year: int | None, month: int | None, day: int | None) -> Reading | None:
    """A valid (year, month, day), or None (``February 30``, month 13)."""
    if month is not None and not 1 <= month <= 12:
        return None
    if day is not None:
        last = calendar.monthrange(year if year is not None else 2000, month)[1] if month is not None else 31
        if not 1 <= day <= last:
            return None
    return year, month, day


def _readings(*candidates: Reading | None) -> frozenset[Reading]:
    return frozenset(r for r in candidates if r is not None)


def _month(name: str) -> int:
    return _MONTHS[name.rstrip(".").lower()[:4] if name.lower().startswith("sept") else name.rstrip(".").lower()[:3]]


def _day(text: str) -> int:
    """``3`` or ``third`` → 3."""
    return int(text) if text.isdigit() else _ORDINAL_DAYS[" ".join(text.lower().split())]


def _year(text: str | None) -> int | None:
    return int(text) if text else None


def _date(form: str, parts: tuple[str | None, ...]) -> WrittenDate | None:
    """The date of one match of ``form``; None where it is no date (``13/13/2021``)."""
    if form == "month_days":
        month, first, last, year = _month(parts[0]), _day(parts[1]), _day(parts[2]), _year(parts[3])
        return _range(_readings(_reading(year, month, first)), _readings(_reading(year, month, last)))
    if form == "days_month":
        first, last, month, year = int(parts[0]), _day(parts[1]), _month(parts[2]), _year(parts[3])
        return _range(_readings(_reading(year, month, first)), _readings(_reading(year, month, last)))
    if form == "years":
        first, second = int(parts[0]), parts[1] or parts[2]
        last = int(second) if len(second) == 4 else first - first % 100 + int(second)
        if len(second) == 2 and last <= first:
            last += 100  # 1999-00
        if not 1000 <= first < last <= 2999 or (len(second) == 2 and int(second) <= 12 and last - first > 5):
            return None  # 1999-12, 1995-10 (December 1999? October 1995?): no range of years; 2014-20 is one
        return WrittenDate(((_reading(first, None, None),), (_reading(last, None, None),)))  # type: ignore[arg-type]
    if form == "iso":
        return _single(_readings(_reading(int(parts[0]), int(parts[2]), int(parts[3]))))
    if form in ("numeric", "numeric_short"):
        a, b = int(parts[0]), int(parts[2] if form == "numeric" else parts[1])
        written = parts[3] if form == "numeric" else parts[2]
        years = [int(written)] if len(written) == 4 else [1900 + int(written), 2000 + int(written)]
        return _single(_readings(*(r for y in years for r in (_reading(y, a, b), _reading(y, b, a)))))
    if form == "day_mon_year":
        years = [int(parts[2])] if len(parts[2]) == 4 else [1900 + int(parts[2]), 2000 + int(parts[2])]
        return _single(_readings(*(_reading(y, _month(parts[1]), int(parts[0])) for y in years)))
    if form == "month_day":
        return _single(_readings(_reading(_year(parts[2]), _month(parts[0]), _day(parts[1]))))
    if form == "day_month":
        return _single(_readings(_reading(_year(parts[2]), _month(parts[1]), _day(parts[0]))))
    if form == "month_year":
        return _single(_readings(_reading(int(parts[1]), _month(parts[0]), None)))
    if form == "month":
        return _single(_readings(_reading(None, _month(parts[0]), None)))
    if form == "decade":
        century, tens, short, bare, word = parts
        start = (int(century) * 100 + int(tens) * 10 if century else 1900 + int(short or bare) * 10 if (short or bare)
                 else 1900 + _DECADE_WORDS[word.lower()])
        return WrittenDate((frozenset({(start, None, None)}),), decade=True)
    year = int(parts[0])
    return WrittenDate((frozenset({(year, None, None)}),), year_only=True)


def _single(readings: frozenset[Reading]) -> WrittenDate:
    return WrittenDate((readings,))  # no valid reading: a date that matches none


def _range(first: frozenset[Reading], last: frozenset[Reading]) -> WrittenDate:
    return WrittenDate((first, last))


@dataclass(frozen=True)
class _Found:
    date: WrittenDate
    start: int
    end: int


def _dates_in(text: str) -> list[_Found]:
    """The dates ``text`` writes, in order, ranges joined (``2019 to 2021``, ``March 3 to March
    5, 2021``: an end without a year takes the other's)."""
    found = []
    for m in _DATE.finditer(text):
        form = m.lastgroup  # the form's own group closes last
        assert form is not None
        first = _DATE.groupindex[form] + 1
        parts = tuple(m.group(first + i) for i in range(_GROUPS[form]))
        if form == "month" and not _month_alone(text, m):
            continue  # "May be 5", "The Long March", "April Ludgate"
        date = _date(form, parts)
        if date is not None:
            found.append(_Found(date, m.start(), m.end()))
    return _join_ranges(text, found)


_RANGE_JOIN = re.compile(r"^\s*(?:-|\u2013|\u2014|to|through|thru|until|till|and)\s*$", re.IGNORECASE)
_BETWEEN = re.compile(r"\b(?:between|from)\s+(?:the\s+)?$", re.IGNORECASE)


def _join_ranges(text: str, found: list[_Found]) -> list[_Found]:
    """Two dates joined by "-", "to", "until" (or "and" after "between") are one range, unless
    the first is taken back ("moved from March 10 to March 3")."""
    joined: list[_Found] = []
    i = 0
    while i < len(found):
        a = found[i]
        if i + 1 < len(found) and len(a.date.ends) == len(found[i + 1].date.ends) == 1 \
                and a.date.decade == found[i + 1].date.decade:
            b = found[i + 1]
            between = text[a.end:b.start]
            taken_back = _TAKEN_BACK.search(text[max(0, a.start - 40):a.start])  # moved from March 10 to March 3
            if _RANGE_JOIN.match(between) and not taken_back \
                    and (between.strip().lower() != "and" or _BETWEEN.search(text[:a.start])):
                last = next(iter(b.date.ends[0]), None)  # none: no such day ("February 30")
                first = frozenset(_fill(r, last) for r in a.date.ends[0]) if last else a.date.ends[0]
                joined.append(_Found(WrittenDate((first, b.date.ends[0]), a.date.decade), a.start, b.end))
                i += 2
                continue
        joined.append(a)
        i += 1
    return joined


def _fill(first: Reading, last: Reading) -> Reading:
    """A range's first end without a year takes the last's: ``March 3 to March 5, 2021``."""
    if first[0] is None and first[1] is not None and last[0] is not None:
        return last[0], first[1], first[2]
    return first


#: Said just before a date, words that take it back: ``not March 4``, ``originally scheduled for
#: March 4``, ``moved from``, ``instead of``.
_TAKEN_BACK = re.compile(
    r"(?:\b(?:not|never|no\s+longer)|n't)(?:\s+[a-z']+){0,2}?\s+(?:on\s+|in\s+|for\s+|the\s+)?[(\[]?$"
    r"|\b(?:previously|formerly|originally|initially)(?:\s+[a-z']+){0,2}?\s+(?:on\s+|in\s+|for\s+|the\s+)?[(\[]?$"
    r"|\b(?:instead\s+of|rather\s+than|except|(?:moved|changed|shifted|rescheduled|postponed|delayed)\s+from)"
    r"\s+(?:on\s+|in\s+|the\s+)?[(\[]?$", re.IGNORECASE)
#: Said just before a date, a word that makes it a bound, not the date: ``before March 3``, ``two
#: days after the submission date of March 1``.
_BOUND = re.compile(r"\b(?:before|after)(?:\s+(?!not\b)[\w']+){1,4}?\s+of\s+$|\b(?:before|after|prior\s+to|(?:later|earlier)\s+than|up\s+to|until|till|pre|within\s+[\w\s]{1,20}?of"
                    r"|the\s+(?:week|month|day\s+(?:following|after|before))\s+of|(?:days?|weeks?|months?|years?)\s+"
                    r"(?:from|after|before))\s+(?:the\s+)?$|\bthe\s+day\s+(?:following|after|before)\s+$", re.IGNORECASE)
#: Said just after a date, words that make it a bound or an estimate: ``March 3 or later``.
_BOUND_AFTER = re.compile(r"[\s,]*(?:or\s+(?:later|earlier|after|before|thereabouts|so)\b|at\s+the\s+(?:latest|earliest)\b"
                          r"|\(?\s*(?:\u00b1|\+/-|\+|plus|minus)\s*(?:\d|one|two|a)\b|onwards?\b)", re.IGNORECASE)
#: Two days of one month: ``March 3 and 4``, ``3 or 4 March 2021``, ``March 3/4``.
_TWO_DAYS = re.compile(r"(?<![/.\d-])\b\d{1,2}(?:st|nd|rd|th)?\s*(?:and|or|&|/)\s*\d{1,2}(?:st|nd|rd|th)?\b(?![/.-]\d)", re.IGNORECASE)
#: A time of day beside a date (``March 3, 2021 at 10 a.m.``): not another number.
_TIME = re.compile(WRITTEN_TIME)
#: Before an answer's first date, words that doubt or refuse it (or call it wrong).
_DOUBT = re.compile(r"\b(?:cannot|can't|can\s+not|unable|insufficient|unlikely|doubt\w*|impossible|unknown|unclear|"
                    r"wrong|incorrect|false|guess\w*|not\s+sure|uncertain|maybe|perhaps|possibly|probably)\b", re.IGNORECASE)
#: Said just before a date, words that make it the date things were moved to.
_MOVED_TO = re.compile(r"\b(?:moved|postponed|rescheduled|changed|pushed|delayed|brought\s+forward|shifted)\s+(?:back\s+)?"
                       r"(?:to|until|till)\s+(?:the\s+)?$", re.IGNORECASE)
#: "not until March 3", "not before": the date, not a take-back.
_NOT_UNTIL = re.compile(r"\bnot(?:\s+[a-z']+)?\s+(?:until|till|before|later\s+than)\s+(?:the\s+)?$", re.IGNORECASE)
#: ``1990\text{s}``: a decade, whose "s" LaTeX would part from it.
_LATEX_DECADE = re.compile(r"(\d0)\\(?:text|mathrm|textrm)\s*\{(['\u2019]?s)\}")
#: Before a month named alone, a word that makes it a time (``peaked in April``, ``on Dec.``).
_BEFORE_MONTH = re.compile(r"(?:^|\b(?i:in|on|during|by|until|till|of|from|to|and|or|be|is|was|early|late|mid))[\s*_]*$")
_WORD_AFTER = re.compile(r"\s+([a-z]+(?:-[a-z]+)?)", re.IGNORECASE)
#: After a month named alone, a capitalised word: a name (``April Ludgate``, ``March On``).
_NAME_AFTER = re.compile(r"\s+[A-Z][a-z]")
#: Two months offered: ``March and April 2021``, ``March or April``.
_TWO_MONTHS = re.compile(r"\b" + MONTH + r"\b\.?\s*(?:and|or|&|/)\s*" + MONTH + r"\b")
_WEEKDAY_IN = re.compile(_WEEKDAY)
_DENIED_WEEKDAY = re.compile(r"(?:\bnot|n't)\s+(?:on\s+)?(?:a\s+)?" + _WEEKDAY, re.IGNORECASE)
#: After a year that ends an answer, nothing but these: ``2021.``, ``2021 AD``.
_YEAR_ENDS = re.compile(r"[\s.*_]*(?:(?i:AD|CE|A\.D\.|C\.E\.)[\s.*_]*)?$")
#: Before a year that is the whole answer, only words that say it is a year: ``In 2021``,
#: ``founded in 2021``, ``SINCE 1892``, ``the year 2021``.
_YEAR_LEAD = re.compile(r"[\s*_]*(?:(?i:in|the|year|of|since|est|est\.|established|founded|built|opened|born|published|"
                        r"released|dated|sometime|during|on|it|was|is|answer|date|circa|ca\.|c\.|from|by|:)[\s*_:,]*)*")
#: Words a gold says beside its date that an answer need not repeat.
_JOINING = frozenset("on in of the from to between and through until till dated date year years is was it about "
                     "around approximately approx early mid late ad ce circa c".split())
#: The most words of an answer read for the dates it states (``The letter was dated
#: Wednesday, March 3, 2021.``); a longer one is a sentence about something else.
MAX_DATE_WORDS = 20


def _bound(text: str, found: _Found) -> bool:
    """Whether ``text`` gives the date it writes at ``found`` only as a bound or an estimate
    (``before March 3``, ``March 3 or later``; ``not until March 3`` is the date)."""
    before = text[max(0, found.start - 30):found.start]
    return bool(_BOUND.search(before) and not _NOT_UNTIL.search(before) or _BOUND_AFTER.match(text, found.end))


def _month_alone(text: str, m: re.Match[str]) -> bool:
    """Whether a month written with no day or year beside it is a date: capitalised ("march"
    is a verb), after a word that makes it a time or opening the answer, and no name ("The
    Long March", "April Ludgate"); "May" only as the whole answer or after such a word ("May be")."""
    before = text[max(0, m.start() - 20):m.start()]
    if not m.group(0)[0].isupper() or not _BEFORE_MONTH.search(before) or _NAME_AFTER.match(text, m.end()):
        return False
    after = _WORD_AFTER.match(text, m.end())
    if after and words_value(after.group(1)) is not None:
        return False  # "June twenty-one": a day in words this reader does not take
    return m.group(0).rstrip(".") not in ("May", "MAY") or bool(before.strip() or not text[m.end():].strip(" .*_"))


def _taken_back(before: str) -> bool:
    return bool(_TAKEN_BACK.search(before)) and not _NOT_UNTIL.search(before)


def _weekdays(text: str) -> set[str]:
    return {m.group(0).rstrip(".").lower()[:3] for m in _WEEKDAY_IN.finditer(text)}


def _rest(text: str, found: list[_Found]) -> str:
    """``text`` without the dates found in it."""
    for f in reversed(found):
        text = text[:f.start] + " " + text[f.end:]
    return text


def _besides(text: str, found: list[_Found]) -> set[str]:
    """The words of ``text`` other than its dates, weekdays and the words around a date."""
    rest = _WEEKDAY_IN.sub(" ", _rest(text, found))
    return {w for w in re.findall(r"[a-z0-9]+", rest.lower()) if w not in _JOINING}


def dates_match(gold: str, predicted: str) -> bool | None:
    """Whether ``predicted`` gives the date ``gold`` gives; None where this cannot tell (the
    gold is no date, or a bare year against an answer that writes only years or none, a long
    sentence, dates that agree and differ at once)."""
    if not _HINT.search(gold) or not _HINT.search(predicted):
        return None
    gold, predicted = latex_free(_LATEX_DECADE.sub(r"\1\2", gold)), latex_free(_LATEX_DECADE.sub(r"\1\2", predicted))
    in_gold = _dates_in(gold)
    if len(in_gold) != 1:
        return None
    target = in_gold[0].date
    if _besides(gold, in_gold):  # "Annual report, March 2021": more than a date
        return None
    if len(predicted.split()) > MAX_DATE_WORDS:
        return None
    written = _dates_in(predicted)
    if target.year_only and all(f.date.year_only for f in written):
        # a year against numbers is the number checks' ("2,021", "2021 people", "2,300 in 2015");
        # a year and words before it is a year ("In 2021.", "founded in 2021", "SINCE 1892")
        if len(written) != 1 or not _YEAR_LEAD.fullmatch(predicted, 0, written[0].start) \
                or not _YEAR_ENDS.match(predicted, written[0].end):
            return None  # "more than 2021", "\sqrt{2021}", "2021!", "x > 2021"
        return target.same(written[0].date)
    if not written:
        return None
    if re.search(r"\d", _TIME.sub(" ", _rest(predicted, written))):
        return None  # other numbers too ("It grew 12% in March 2021", "2 years (2019-2021)"): not only a date
    if _TWO_DAYS.search(predicted) or _TWO_MONTHS.search(predicted):
        return False  # "March 3 and 4", "3 or 4 March 2021", "March and April 2021": two days or months
    if _DOUBT.search(predicted, 0, written[0].start):
        return False  # "Unlikely to be March 3", "Cannot be determined from March 2021 data", "Guess: March 3"
    stated = [(f, _bound(predicted, f)) for f in written if not _taken_back(predicted[max(0, f.start - 40):f.start])]
    if not stated:
        return False  # every date it writes, it takes back: "It was not held on March 4."
    moved = [i for i, (f, _) in enumerate(stated) if _MOVED_TO.search(predicted[max(0, f.start - 30):f.start])]
    if moved:  # "scheduled for March 4 but moved to March 3": the date it was moved to
        stated = stated[moved[-1]:]
    gold_days, said_days = _weekdays(gold), _weekdays(predicted)
    if gold_days and said_days and (said_days != gold_days or _DENIED_WEEKDAY.search(predicted)):
        return False  # "Thursday, March 3" or "Mon/Tue, March 8" for "Wednesday, March 3"; "not Monday"
    agree = {target.same(f.date) and not bound for f, bound in stated}
    if len(agree) == 1:
        return agree.pop()
    return False if re.search(r"\bor\b", predicted, re.IGNORECASE) else None  # "March 3 or March 4": a hedge
