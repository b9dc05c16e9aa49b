"""Times of day: ``5 p.m.``, ``9:00 AM`` and ``17:00`` are one time; ``10 a.m.`` is not ``10 p.m.``.

Document and chart questions (DocVQA, ChartQA) ask for times, and models write them in
whichever convention they like. Math-Verify reads ``10 p.m.`` as the number 10, so it took
``10 a.m.`` for ``10 p.m.``; string checks took ``5 p.m.`` for no ``5:00 PM``. A time
compares as the seconds of the day it can mean: a half of the day (``a.m.``/``p.m.``,
noon, midnight, ``in the morning``) or an hour past 12 fixes it; a bare 12-hour reading
(``3:45``) may mean either half, and matches a time that names one.

Against a gold time, an answer of a few words (``approx. 5 p.m.``, ``5 a.m. EST``, ``The
store closes at 5 p.m.``) is read for the times it states: one it takes back (``not 5
p.m.``, ``previously 9 a.m.``) is left out, one that is only a bound (``after 5 p.m.``) is
another time, and the verdict is theirs when they all agree. Two answers that write times
(ranges) compare them pair by pair, and what the gold says besides its times the answer
must say too, in any order (``Monday, 9 a.m.`` for ``9 a.m. on Monday``, not ``9 a.m. on
Tuesday``). A time of day is no length of time (``3 p.m.`` is not ``3 hours``). Anything
else is left to the other checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from prmtree.engine.answers.normalize import words_value

#: ``5 p.m.``, ``9:00 AM``, ``17:00``, ``at 10:30:15 pm``, ``3 o'clock``: hours, then minutes
#: (two digits) and seconds, then a half of the day; a bare hour is a time only with a half
#: of the day or "o'clock" (``10`` alone is a number).
_CLOCK = re.compile(
    r"^[\s$*_]*(?:at\s+)?(\d{1,2})(?::(\d{2})(?::(\d{2}))?)?\s*"
    r"(?:([ap])\.?\s?m\b\.?|(o['\u2019]\s?clock)\b)?[\s$*_.]*$",
    re.IGNORECASE,
)
#: A time with a half of the day (``9 a.m.``, ``9:00 in the morning``) or "o'clock", as written
#: in text (for the value readers).
TIME_OF_DAY = (r"\d{1,2}(?:[:.]\d{2})?(?::\d{2})?(?i:(?:\s*o['\u2019]\s?clock)?\s+(?:in\s+the\s+(?:morning|afternoon|evening)|at\s+night|tonight)\b"
               r"|\s*[ap]\.?\s?m\b\.?|\s*o['\u2019]\s?clock\b)")
_CLOCK_FORM = r"\d{1,2}:\d{2}(?::\d{2})?"
#: Two times joined as a range (``9 a.m. to 5 p.m.``, ``10:30-11:15``): one answer, read whole.
TIME_RANGE = (r"(?:" + TIME_OF_DAY + "|" + _CLOCK_FORM + r")\s*(?:-|\u2013|\u2014|(?i:to|until|till|through)\b)\s*(?:"
              + TIME_OF_DAY + "|" + _CLOCK_FORM + r"(?![\d:]))")
#: A time or a range of times as written in text: what the value readers read whole.
WRITTEN_TIME = r"(?:" + TIME_RANGE + "|" + TIME_OF_DAY + ")"
#: Every time written in a short answer: those of :data:`TIME_OF_DAY`, and ``17:00`` (not the
#: ``1:50`` of a map scale ``1:50,000``, nor the ``3:59`` of ``3:59.4``).
_TIME_IN_TEXT = re.compile(r"(?<![\w:.,])(?:" + TIME_OF_DAY + r"|\d{1,2}:\d{2}(?::\d{2})?(?![\d:]|[.,]\d))")
#: Noon and midnight, written as the 12-hour times they are.
_NOON = re.compile(r"\b(?:12(?::00)?\s*)?(?:noon|midday)\b", re.IGNORECASE)
_MIDNIGHT = re.compile(r"\b(?:12(?::00)?\s*)?midnight\b", re.IGNORECASE)
#: What every written time holds: a quick test that spares the rest for most answers.
_HINT = re.compile(r":|[ap]\.?\s?m\b|clock|noon|midnight|midday|morning|afternoon|evening|night|past|\d{4}\s*h", re.IGNORECASE)
#: LaTeX a time comes wrapped in: ``5\text{ a.m.}``, ``5\,\text{p.m.}``, ``17{:}00``.
_LATEX_TEXT = re.compile(r"\\(?:text|mathrm|textrm)\s*\{([^{}]*)\}")
_LATEX_SPACE = re.compile(r"\\[,;: !]|~")
#: A number and a word: a quantity (``3 hours``, ``5 apples``), never a time of day.
_QUANTITY = re.compile(r"^[\s$]*[-+]?\d[\d.,]*\s*[A-Za-z]")
#: A bare hour: ``9`` against ``9 o'clock`` or ``9 p.m.``.
_HOUR = re.compile(r"^[\s$]*(\d{1,2})[\s$.]*$")
#: The most words of an answer read for the times it writes (``scheduled for 7:30 p.m. in the
#: main hall``); a longer one is a sentence about something else.
MAX_WORDS = 12


@dataclass(frozen=True)
class ClockTime:
    """What a written time can mean: the seconds of the day, one or (a bare 12-hour reading)
    two; ``hour_only``: written without minutes (``9 p.m.``, ``9 o'clock``)."""

    seconds: frozenset[int]
    hour_only: bool = False


#: A half of the day in words: ``9:00 in the morning``, ``8 o'clock at night``.
_HALF_IN_WORDS = re.compile(r"\b(\d{1,2}(?::\d{2})?)(?:\s*o['\u2019]\s?clock)?\s+(?:in\s+the\s+(morning)|in\s+the\s+"
                            r"(?:afternoon|evening)|(at\s+night|tonight))\b", re.IGNORECASE)
#: ``8.30 a.m.``: a dot between hours and minutes, with a half of the day (else a decimal).
_DOTTED = re.compile(r"\b(\d{1,2})\.(\d{2})(?=\s*[ap]\.?\s?m\b)", re.IGNORECASE)
#: ``1700 hours``, ``0900 hrs``: a 24-hour time written as four digits.
_FOUR_DIGITS = re.compile(r"\b([01]\d|2[0-3])([0-5]\d)\s*(?:hours|hrs|h)\b", re.IGNORECASE)
#: ``five o'clock``: an hour in words.
_HOUR_WORDS = "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve"
_WORD_OCLOCK = re.compile(r"\b(" + _HOUR_WORDS + r")(?=\s+o['\u2019]\s?clock\b)", re.IGNORECASE)
#: Minutes past an hour: ``20 past 9``, ``half past 7``, ``quarter past 9``.
_HOUR_IN_WORDS = r"\d{1,2}|" + _HOUR_WORDS
_PAST = re.compile(r"(?<![:.\d])\b(\d{1,2}|(?:a\s+)?quarter|half|five|ten|twenty|twenty[-\s]five)\s+past\s+("
                   + _HOUR_IN_WORDS + r")\b(?![:.]\d)", re.IGNORECASE)
_FRACTION_MINUTES = {"half": 30, "quarter": 15, "a quarter": 15}
#: A range whose first hour borrows the second's half of the day: ``2-4 p.m.``, ``between 2 and 4 p.m.``.
_SHARED_HALF = re.compile(r"\b(\d{1,2}(?::\d{2})?)(\s*(?:-|\u2013|\u2014|to|and|until|till)\s*)(\d{1,2}(?::\d{2})?)\s*([ap])\.?\s?m\b\.?",
                          re.IGNORECASE)


def _half_in_words(m: re.Match[str]) -> str:
    """``9 in the morning`` → ``9 a.m.``; at night (tonight), 12 to 4 are a.m. (``2 o'clock at night``)."""
    hour = int(m.group(1).split(":")[0])
    morning = m.group(2) is not None or (m.group(3) is not None and (hour == 12 or hour <= 4))
    return m.group(1) + (" a.m." if morning else " p.m.")


def _shared_half(m: re.Match[str]) -> str:
    """``2-4 p.m.`` → ``2 p.m.-4 p.m.``; ``11 to 1 p.m.`` → ``11 a.m. to 1 p.m.`` (the first
    hour is the other half where it comes after the second on a 12-hour clock)."""
    first, second, half = int(m.group(1).split(":")[0]), int(m.group(3).split(":")[0]), m.group(4).lower()
    if not (1 <= first <= 12 and 1 <= second <= 12):
        return m.group(0)
    first_half = half if first % 12 <= second % 12 else ("a" if half == "p" else "p")
    return f"{m.group(1)} {first_half}.m.{m.group(2)}{m.group(3)} {half}.m."


#: Minutes to an hour: ``quarter to 9``, ``20 to 9`` (a first number past 12 is no hour: not a range).
_TO = re.compile(r"(?<![:.\d])\b((?:a\s+)?quarter|twenty|twenty[-\s]five|1[3-9]|[2-5]\d)\s+to\s+(" + _HOUR_IN_WORDS
                 + r")\b(?![:.]\d)", re.IGNORECASE)


def _to(m: re.Match[str]) -> str:
    """``quarter to 9`` → ``8:45``."""
    minutes, hour = _minutes(m.group(1)), _number(m.group(2))
    if not 1 <= hour <= 12 or minutes >= 60:
        return m.group(0)
    return f"{hour - 1 if hour > 1 else 12}:{60 - minutes:02d}"


def _past(m: re.Match[str]) -> str:
    """``20 past 9`` → ``9:20``."""
    minutes = _minutes(m.group(1))
    return f"{_number(m.group(2))}:{minutes:02d}" if minutes < 60 else m.group(0)


def _minutes(written: str) -> int:
    """``quarter`` → 15, ``half`` → 30, ``twenty-five`` or ``25`` → 25."""
    return _FRACTION_MINUTES.get(" ".join(written.lower().split())) or _number(written)


def _number(written: str) -> int:
    """``9`` or ``nine`` → 9 (the patterns let only numbers through)."""
    return int(written) if written.isdigit() else words_value(written) or 0


def latex_free(text: str) -> str:
    """``text`` without the LaTeX around a time or a date: ``5\\text{ a.m.}``, ``17{:}00``,
    ``\\text{March 3, 2021}``."""
    if "\\" in text or "{:}" in text or "~" in text:
        text = _LATEX_SPACE.sub(" ", _LATEX_TEXT.sub(r" \1", text.replace("{:}", ":")))
    return text


def _plain(text: str) -> str:
    """``text`` without the LaTeX around a time; noon, midnight, ``20 past 9``, ``five
    o'clock``, ``1700 hours``, ``8.30 a.m.``, a half of the day in words and a range's shared
    half of the day written as times."""
    text = latex_free(text)
    lower = text.lower()
    if "past" in lower:
        text = _PAST.sub(_past, text)
    if " to " in lower:
        text = _TO.sub(_to, text)
    if "clock" in lower:
        text = _WORD_OCLOCK.sub(lambda m: str(_number(m.group(1))), text)
    if "h" in lower:
        text = _FOUR_DIGITS.sub(r"\1:\2", text)
    if "." in text:
        text = _DOTTED.sub(r"\1:\2", text)
    if "noon" in lower or "midday" in lower or "midnight" in lower:
        text = _MIDNIGHT.sub("12:00 a.m.", _NOON.sub("12:00 p.m.", text))
    if "morning" in lower or "afternoon" in lower or "evening" in lower or "night" in lower:
        text = _HALF_IN_WORDS.sub(_half_in_words, text)
    if "m" in text or "M" in text:
        text = _SHARED_HALF.sub(_shared_half, text)
    return text


def clock_time(text: str) -> ClockTime | None:
    """The time ``text`` writes, or None where it is no time of day (a number, a ratio ``3:2``,
    an hour past 23, a minute past 59, ``13 p.m.``)."""
    m = _CLOCK.match(text)
    if m is None:
        return None
    hour_s, minute_s, second_s, half, oclock = m.groups()
    if minute_s is None and half is None and not oclock:
        return None
    hour, minute, second = int(hour_s), int(minute_s or 0), int(second_s or 0)
    if minute > 59 or second > 59:
        return None
    within, hour_only = minute * 60 + second, minute_s is None
    if half is not None:
        if not 1 <= hour <= 12:
            return None
        base = (hour % 12 + (12 if half.lower() == "p" else 0)) * 3600
        return ClockTime(frozenset({base + within}), hour_only)
    if hour > 23 or (oclock and not 1 <= hour <= 12):
        return None
    if hour == 0 or hour > 12 or hour_s.startswith("0"):  # a 24-hour reading (05:00): one time
        return ClockTime(frozenset({hour * 3600 + within}), hour_only)
    return ClockTime(frozenset({(hour % 12) * 3600 + within, (hour % 12 + 12) * 3600 + within}), hour_only)


def times_match(gold: str, predicted: str) -> bool | None:
    """Whether ``predicted`` gives the time of day ``gold`` gives (either may be the time);
    None where this cannot tell (no time on either side, a long sentence, times that agree and
    differ at once)."""
    if not _HINT.search(gold) and not _HINT.search(predicted):
        return None
    gold, predicted = _plain(gold), _plain(predicted)
    g, p = clock_time(gold), clock_time(predicted)
    if g is not None and p is not None:
        return bool(g.seconds & p.seconds)
    time, other = (g, predicted) if g is not None else (p, gold)
    if time is None:
        hour, text = (_bare_hour(gold), predicted) if _HOUR.match(gold) else (_bare_hour(predicted), gold)
        if hour is None:
            return _same_times(gold, predicted)
        # "9" against "The meeting ends at 9 o'clock" (and no other number)
        written = _times_in(text)
        if written and len(written) == 1 and written[0].hour_only and not re.search(r"\d", _TIME_IN_TEXT.sub(" ", text)):
            return bool(written[0].seconds & hour.seconds)
        return None
    if time.hour_only:  # "9" for "9 o'clock", as "12" stands for "12 cm"
        hour = _bare_hour(other)
        if hour is not None:
            return bool(time.seconds & hour.seconds)
    written = _times_in(other)
    if written is None:
        return None
    if not written:
        return False if _QUANTITY.match(other) else None  # "3 p.m." is no "3 hours"
    if other is gold:  # the answer is one time: one end of a range is not the range
        if len(written) > 1:
            return False
        same = bool(time.seconds & written[0].seconds)
        return None if same and _besides_times(gold) else same  # "9 a.m." for "9 a.m. on Monday": not said
    stated = _stated_times(other)
    if not stated:  # every time it writes, it takes back: "It does not close at 5 p.m."
        return False
    agree = {bool(time.seconds & t.seconds) and not bound for t, bound in stated}
    return agree.pop() if len(agree) == 1 else None


def _bare_hour(text: str) -> ClockTime | None:
    """``9`` as the hour it can name (9:00 or 21:00); None for anything else."""
    hour = _HOUR.match(text)
    return clock_time(f"{hour.group(1)}:00") if hour else None


def one_time_twice(answer: str) -> bool:
    """``4 p.m. or 16:00``, ``5 p.m. (17:00)``: one time in two forms, no hedge."""
    written = _times_in(_plain(answer))
    return bool(written) and len(written) == 2 and bool(written[0].seconds & written[1].seconds) \
        and len(written[0].seconds) == len(written[1].seconds) == 1


def _times_in(text: str) -> list[ClockTime] | None:
    """The times a short answer writes, in order; None for a long one."""
    if len(text.split()) > MAX_WORDS:
        return None
    found = (clock_time(m.group(0)) for m in _TIME_IN_TEXT.finditer(text))
    return [t for t in found if t is not None]


#: Said just before a time, a word that takes it back: ``4 p.m., not 5 p.m.``, ``does not close at``, ``10 a.m.
#: (previously 9 a.m.)``, ``6 p.m. instead of 5 p.m.``, ``moved from 9 a.m.``.
_TAKEN_BACK = re.compile(r"(?:\b(?:not|never|no|cannot)|n't)(?:\s+(?!until\b|till\b|later\b|earlier\b)[a-z']+){0,2}?\s+"
                         r"(?:at\s+|by\s+|the\s+)?[(\[]?$"
                         r"|\b(?:previously|formerly|originally|instead\s+of|rather\s+than|except"
                         r"|(?:moved|changed|shifted|rescheduled)\s+from)\s+(?:at\s+|until\s+|by\s+|the\s+)?[(\[]?$", re.IGNORECASE)
#: Said just before a time, a word that makes it a bound, not the time: ``after 5 p.m.``.
_BOUND = re.compile(r"(?:\b(?:before|after|past)|(?<!\bnot\s)(?<!\bno\s)\b(?:later|earlier)\s+than)\s+(?:at\s+)?$", re.IGNORECASE)


def _stated_times(answer: str) -> list[tuple[ClockTime, bool]]:
    """The times a short answer states, each with whether it is only a bound (``after 5
    p.m.``); those it takes back (``not 5 p.m.``) are left out."""
    if len(answer.split()) > MAX_WORDS:
        return []
    stated = []
    for m in _TIME_IN_TEXT.finditer(answer):
        before = answer[max(0, m.start() - 24): m.start()]
        t = clock_time(m.group(0))
        if t is not None and not _TAKEN_BACK.search(before):
            stated.append((t, bool(_BOUND.search(before))))
    return stated


#: Words that join times (``from 9 a.m. to 5 p.m.``, ``17:00 hrs``): not what an answer says besides them.
_JOINING = frozenset("from to until till through between and at on the is it about around approx approximately "
                     "roughly hrs hr hours h".split())
#: Days as abbreviated or plural: ``Mon``, ``Fri.``, ``Mondays`` say Monday.
_WEEK = "monday tuesday wednesday thursday friday saturday sunday".split()
_DAYS = {d[:3]: d for d in _WEEK if d[:3] not in ("wed", "sat", "sun")}  # lower-case, those are words
_DAYS.update({"tues": "tuesday", "thur": "thursday", "thurs": "thursday", "weds": "wednesday"})
_DAYS.update({d + "s": d for d in _WEEK})
#: A word an answer denies (``9 a.m. on Tuesday, not Monday``, ``every day except Monday``),
#: or offers as another answer (``on Monday or Tuesday``).
_DENIED = re.compile(r"\b(?:not|no|never|except|or)\s+(?:on\s+|the\s+)?([a-z0-9]+)")


def _same_times(gold: str, predicted: str) -> bool | None:
    """Two short answers that write times (a range: ``9 a.m. to 5 p.m.``) give others if they
    write a different number of them or one pair differs; if each pair agrees, the same where
    the answer says all the gold says besides (``Monday, 9 a.m.`` for ``9 a.m. on Monday``),
    others where it says something else instead (``9 a.m. on Tuesday``), None where it says less."""
    g, p = _times_in(gold), _times_in(predicted)
    if not g or not p:
        return None
    if len(g) != len(p) or not all(a.seconds & b.seconds for a, b in zip(g, p)):
        return False
    said, answered = set(_besides_times(gold)), set(_besides_times(predicted))
    denied = {_DAYS.get(w, w) for w in _DENIED.findall(_TIME_IN_TEXT.sub(" ", predicted).lower())}
    if said <= answered and not said & denied and " or " not in f" {predicted.lower()} ":  # in any order
        return True
    return False if answered - said else None  # "on Tuesday" for "on Monday"; a bare time: not said


#: A day abbreviated with a capital (``Wed 3 p.m.``, ``Sat.``): lower-case "sat", "sun", "wed" are words.
_DAY_ABBREVIATION = re.compile(r"\b(Mon|Tue|Tues|Wed|Weds|Thu|Thur|Thurs|Fri|Sat|Sun)\b\.?")
_DAY_NAMES = {d[:3].capitalize(): d for d in _WEEK}


def _besides_times(text: str) -> list[str]:
    """The words of ``text`` other than its times and the words joining them."""
    text = _DAY_ABBREVIATION.sub(lambda m: " " + _DAY_NAMES[m.group(1)[:3]] + " ", text)
    rest = _TIME_IN_TEXT.sub(" ", text).lower()
    return [_DAYS.get(w, w) for w in re.findall(r"[a-z0-9]+", rest) if w not in _JOINING]
