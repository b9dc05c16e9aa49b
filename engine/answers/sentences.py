"""The value one sentence states: after its ``is``/``=`` (``The largest $n$ is 34.`` → ``34``),
not in its reason (``…, since 23 = 4·5 + 3``) nor in a restatement (``9, which is 3
squared``); a denied value (``It can't be 5``) and a hedge (``12 or 13``) are kept whole,
for the reader to refuse. Also where a stated phrase ends, and whether an answer hedges."""

from __future__ import annotations

import re

from prmtree.engine.answers.bounds import BOUND_AFTER, BOUND_BEFORE, DIGITS
from prmtree.engine.answers.choices import choice_stated, names_a_choice
from prmtree.engine.answers.dates import AFTER_MONTH, MAX_DATE_WORDS, NOT_AFTER_MONTH, WRITTEN_DATE
from prmtree.engine.answers.eras import ERA_AFTER
from prmtree.engine.answers.marks import strip_answer
from prmtree.engine.answers.times import MAX_WORDS, WRITTEN_TIME, one_time_twice
from prmtree.engine.answers.values import LEAD_VALUE, bare_answer, two_values


#: ``No, it is not.``: a yes/no word, then punctuation, a bracket, a line break or a clause
#: restating it; ``no idea`` is not ``no``, ``yes or no`` is neither, nor are ``no-one``
#: and ``No. 7`` (a word and a number).
YES_NO_LEAD = re.compile(
    r"^[*_\s]*(yes|no)\b[*_]*(?:\s*[,;:!?()\[\]]|\s*\.(?!\s*\d)|\s*[\u2014\u2013-](?!\w)|\s*$|\s*\n|"
    r"\s+(?:it|it's|its|they|there|this|that|the|he|she|we|i|you|these|those|because|since)\b)", re.IGNORECASE)
#: A yes/no verdict in other words: "Yep.", "Of course!", "Correct."; "Nope.", "Certainly not.".
_YES_WORDS = re.compile(r"[*_\s]*(?:yep|yeah|yup|sure|of\s+course|absolutely|certainly|definitely|correct|true|indeed"
                        r"|affirmative)\b(?![\s,]*not\b)", re.IGNORECASE)
_NO_WORDS = re.compile(r"[*_\s]*(?:nope|nah|not\s+really|(?:certainly|absolutely|definitely|of\s+course)\s+not|false"
                       r"|negative|incorrect)\b", re.IGNORECASE)
#: A verdict a sentence ends on: "…, so yes.", "There are 2 dogs, so yes.", "The count is 0, so no."
_FINAL_VERDICT = re.compile(r"(?:[,;:.]|\b(?:so|thus|therefore|hence)\b)\s*(?:the\s+answer\s+is\s+)?(yes|no)[.!*_\s]*$",
                            re.IGNORECASE)
#: What is not there, said plainly: "There is no dog in the image.", "I don't see any dog.",
#: "No dog is visible.", "The image does not contain a dog." (POPE's graders read these as no).
_ABSENT = re.compile(r"[*_\s]*(?:there\s+(?:is|are)\s+(?:no(?!\s+(?:doubt|question|need|way)\b)|not\s+(?:a|an|any))\b|there\s+(?:isn't|aren't|is\s+not|are\s+not)\b"
                     r"|no\s+\w+(?:\s+\w+)?\s+(?:is|are)\s+(?:visible|present|shown|seen)\b|i\s+(?:don't|do\s+not|can't|cannot)"
                     r"\s+see\b|the\s+(?:image|picture|photo)\s+(?:does\s+not|doesn't)\s+(?:contain|show|have|include)\b)",
                     re.IGNORECASE)


_SENTENCES = re.compile(r"(?<=[.!?])\s+")


def implied_verdict(text: str) -> str | None:
    """The yes/no verdict an answer gives without opening with the word: a synonym ("Yep",
    "Certainly not"), a verdict it ends on ("I can see a cat, so yes."), or an absence said
    plainly ("There is no dog in the image." is no); None where it gives none this way (a
    present thing is no verdict: "There is a cat." answers "Is there a dog?" with no)."""
    t = text.strip()
    if len(t.split()) <= 4:  # a word or two ("Yeah, there is."), not "True, but not in this image"
        if _NO_WORDS.match(t):
            return "no"
        if _YES_WORDS.match(t):
            return "yes"
    end = _FINAL_VERDICT.search(t)
    if end is not None and not re.search(r"\b(?:yes|no)\s*(?:or|/|and)\s*$", t[: end.start(1)], re.IGNORECASE):
        return end.group(1).lower()
    return "no" if _ABSENT.match(t) else None


#: Where a stated answer ends: a sentence end (not the dot of "approx. 12", nor of "9 a.m. on
#: Monday", where no capital follows, nor of "Mar. 4", where a number follows), a line end, or "I hope it is correct".
_SENTENCE_END = re.compile(r"(?<!\bapprox)(?<!\b[ap]\.m)(?-i:" + NOT_AFTER_MONTH + r")\.(?:\s|$)|(?<=\b[ap]\.m)\.(?:\s+(?=(?-i:[A-Z]))|\s*$)"
                           r"|(?-i:" + AFTER_MONTH + r")\.(?:\s+(?!\d{1,2}(?:st|nd|rd|th)?(?:\s*[,.;)]|\s+\d{4}|\s*$)|\d{4})|\s*$)|\n|\s*I\s+hope\s+it\s+is\s+correct", re.IGNORECASE)
#: ``… the count is (C) 80``: the verb after which the stated value comes.
_COPULA = re.compile(r"\s(?:is|are|was|were|equals|=|would\s+be|will\s+be|becomes)\s", re.IGNORECASE)
#: Inline or display maths: ``$…$``, ``$$…$$``, ``\(…\)``, ``\[…\]``.
MATH_SPAN = re.compile(r"\$\$(.+?)\$\$|\$((?:\\.|[^$\\])+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
#: Hedges: two choices offered (``A or B``, ``B/C``), or doubt stated.
_HEDGE_LETTERS = re.compile(r"^\W*\(?[A-Z]\)?\s*(?:or|/|and/or)\s*\(?[A-Z]\)?\W*$")
_HEDGE_WORDS = re.compile(
    r"\b(?:either|not\s+sure|unsure|uncertain|can(?:no|')t\s+(?:tell|be\s+sure)|i\s+(?:think|guess)|"
    r"maybe|possibly|perhaps|probably)\b",
    re.IGNORECASE,
)
_NUMBER_IN_TEXT = re.compile(r"(?<!\S)" + WRITTEN_DATE + r"|(?<!\S)" + WRITTEN_TIME + r"|(?<!\S)[-+]?\d+(?:[.,]\d+)*(?::\d+|-\d+|/\d+)*(?:\s*%|\s+[a-z]+)?")  # 3:2, 10:30, 3/2: one value
#: ``12 or 13``, ``2 or x = -2`` (the second value may restate its unknown): two answers offered.
_RESTATED = r"(?!(?:equivalently|equally|simply|in\s+other\s+words)\b)"  # "4, or equivalently 2+2": one answer
_HEDGE_OR = re.compile(r"^\W*(?:either\s+)?[^\s,]+(?:\s+[^\s,]+)?,?\s+or\s+" + _RESTATED
                       + r"(?:[A-Za-z]\w*\s*=\s*)?[^\s,]+(?:\s+[^\s,]+)?\W*$", re.IGNORECASE)
_OR = re.compile(r"\s(?:or)\s", re.IGNORECASE)
#: ``2 or x = -2 are the solutions``, ``12 or 13 apples``: a value, "or", another value, whatever follows.
_VALUE_OR_VALUE = re.compile(r"^\W*[-+]?\$?\d[^\s,]*,?\s+or\s+(?:\$?[A-Za-z]\w*\s*=\s*)?[-+]?\$?\d", re.IGNORECASE)


#: ``not 5 apples``, ``It can't be 5``, ``cannot determine 5``: a negation at most two words
#: before the value, none of them a verb that states it (``the cubes that are not red is 5``
#: states 5).
NEGATED_VALUE = re.compile(
    r"\b(?:not|cannot|can't|can’t|isn't|isn’t|aren't|wasn't|weren't|doesn't|don't|didn't|won't|never|"
    r"no\s+longer)(?:\s+(?!(?:is|are|was|were|equals|be)\b)[A-Za-z']+)??\s+(?:be\s+)?[-+]?\$?\d",
    re.IGNORECASE)
#: An aside in brackets (``5 (not counting the teacher)``): not what the sentence states.
ASIDE = re.compile(r"\([^()]*\)")


def denied(text: str) -> bool:
    """Does ``text`` deny its one value (``It can't be 5``)? With another value it states
    that one (``not 10, which is 1,000.99``); an aside in brackets denies nothing. Only the
    few words before the value are read: linear in the text."""
    low = text.lower()
    if "not" not in low and "n't" not in low and "n’t" not in low and "never" not in low and "no longer" not in low:
        return False  # the common case, without the patterns
    t = ASIDE.sub(" ", text) if "(" in text else text
    numbers = DIGITS.findall(t)
    if len(numbers) != 1:
        return False
    at = t.find(numbers[0])
    return bool(NEGATED_VALUE.search(t[max(0, at - 48) : at + len(numbers[0])]))


#: A line that labels its value: "Total: 12", "Number of apples: 12".
_LABELLED = re.compile(r"[A-Za-z][\w ()'-]{0,40}(?:(?<!\d)(?<!\d\s)[:：]|(?<=\d)[:：](?=\s)|(?<=step|part)\s*\d+[:：])\s*(\S.*)",
                       re.IGNORECASE)  # not the colon of 3:2, 10:30 or 3 : 2, unless after "Step 2"
#: After a denied value, a clause that states another in its place: ``isn't 5; it's 7``,
#: ``not 5 but 7``, ``not 5 - rather 7``. A connector is needed: ``not 5, 6 is too big`` and
#: ``12 - 3`` state nothing instead.
_INSTEAD = re.compile(r"\s*[,;:\u2014\u2013-]?\s*(?:(?:but\s+)?(?:rather|instead)\s+|but\s+)?(?:(?:it|that|this|the\s+answer)"
                      r"(?:'s|’s|\s+is|\s+should\s+be|\s+must\s+be)\s+)?(?=[-+$]?\d)", re.IGNORECASE)
_CLAUSE_END = re.compile(r"\s*(?:[.!;,)]|$)")
_INSTEAD_CONNECTOR = re.compile(r"\b(?:but|rather|instead|it|that|this|answer)\b|['’]s\b", re.IGNORECASE)


def _stated_instead(text: str) -> str | None:
    """The value a sentence states in place of the one it denies first (``The answer isn't 5;
    it's 7`` → ``7``, ``not 5 but 7 apples`` → ``7 apples``), or None. The denial is read as
    :func:`denied` reads it (a negation right before the value), and must deny the
    sentence's first value: ``12, not 8: 8 only counts …`` states 12. The cheap test first:
    this runs per rollout."""
    low = text.lower()
    if "not" not in low and "n't" not in low and "n’t" not in low and "never" not in low:
        return None
    denial = NEGATED_VALUE.search(text)
    if denial is None:
        return None
    number = DIGITS.match(text, denial.end() - 1)
    first = DIGITS.search(text)
    if number is None or first is None or first.start() != number.start():
        return None
    after = _INSTEAD.match(text, number.end())
    if after is None or not _INSTEAD_CONNECTOR.search(text, number.end(), after.end()):
        return None
    rest = text[after.end() :].strip()
    value = _value(rest)
    # the value must end its clause: "but 7 is also wrong", "that's 7 less than 12", "7 - 2 = 5" state no 7
    return value if _CLAUSE_END.match(rest, len(value)) else None


#: ``4 \pi``, ``4 \sqrt 2``, ``12^2``, ``4(3)``, ``2 times the radius``, ``2x + 1``, ``3 sqrt(2)``: a
#: number that only opens an expression (a unit does not: ``12 \text{ cm}``, ``30^\circ``, ``3 times``,
#: ``12 (cm)``, ``12cm``, ``5 m``, ``5g``, ``300K``: a letter of a unit's, or a capital, is its unit).
_EXPRESSION_AFTER = re.compile(
    r"\s*\((?=\s*[-+\d\w\\])(?![^()]*?(?<![\\A-Za-z])[A-Za-z]{2})|\s*(?:\\(?:pi|sqrt|times|cdot|frac|dfrac|tfrac|sin|cos|tan|log|ln|pm|mp|div)(?![A-Za-z])"
    r"|[*×·]\s*(?=[\dA-Za-z(\\])|[π√]"
    r"|\^(?!\s*\{?\s*\\circ)|(?:plus|minus|divided\s+by|multiplied\s+by|squared|cubed)\b"
    r"|(?:times|over)\s+(?:the|a|an|its|his|her|their|this|that\b|[-+]?\d)|(?:sqrt|pi)\b)"
    r"|(?-i:[a-z])(?=\s*(?:[-+*^=]|\\cdot|\\times))|(?-i:[acfijnqruyz])(?![A-Za-z\d'(])"
    r"|\s*[-+]\s*(?=\d*\s*(?:\\(?:sqrt|pi|frac|dfrac|tfrac)(?![A-Za-z])|\((?!\s*\d+\s*\))|\d+/|(?-i:[a-z])(?![A-Za-z])))",
    re.IGNORECASE)
# ("2x + 1", "3x^2", "3a": a coefficient; "3x", "4x4", "12v", "20p", "5g", "300K": a factor, size or unit;
# "2 + 2\sqrt{3}", "16 - 4\pi", "1 - 1/e", "3 + 4i": a sum with an irrational, fractional or unknown term)
_NUMBER_HEAD = re.compile(r"[-+]?\d+(?:[.,]\d+)*(?:\s*/\s*\d+)?")


def _opens_expression(text: str, at: int = 0) -> bool:
    """Whether the number at ``text[at:]`` only opens an expression (:data:`_EXPRESSION_AFTER`)."""
    head = _NUMBER_HEAD.match(text, at)
    return bool(head and _EXPRESSION_AFTER.match(text, head.end()))


#: A relative clause's ``is`` (``…, which is 3 squared``) restates; it does not state the answer.
_RESTATING = (" which", " what", ",which")
#: A claim's reason (``…, since 23 = 4·5 + 3``, ``… when x = 2``): its values are not the answer.
_JUSTIFICATION = re.compile(r"[,;]?\s+\(?(?:since|because|as|given|when|where|whereas|while|if|due\s+to)\b",
                            re.IGNORECASE)
_LEADING_JUSTIFICATION = re.compile(r"^\s*(?:since|because|as|given(?:\s+that)?|if|when|where|with)\b[^,]*,", re.IGNORECASE)
#: A consequence: the value after it is the one concluded (``the radius is 3, so the area is 28.27``).
_COPULA_ADVERB = re.compile(r"(?:therefore|thus|hence|consequently)\b,?\s*", re.IGNORECASE)
#: A sentence that opens with its reason and no comma to end it: its last value is the claim's.
_LEADING_REASON = re.compile(r"^\s*(?:since|because|given\s+that)\b(?![^,]*,)", re.IGNORECASE)
_CONSEQUENCE = re.compile(r"\b(?:so|thus|therefore|hence|yields?|we\s+(?:get|have|find|obtain))\b", re.IGNORECASE)
#: Words that are no number's unit: ``3 at x = 2`` and ``3 and y = 5`` are no chain.
_NOT_UNITS = ("and|or|at|for|of|on|in|to|is|are|was|were|with|when|where|if|by|as|so|from|than|then|the|an|but|since"
              "|because|which|that|this|it|its|each|every|all|per|while|whereas|given|since|except|plus|minus|times")
#: What lies between two values of one chain (``f(2) = 4 + 8 = 12``, ``x = 180° - 140° = 40°``,
#: ``6 cm × 4 cm = 24 cm^2``, ``A = \\pi r^2 = 28.27``): terms (a number with its unit, a letter,
#: a LaTeX command, a bracket) joined by operators or side by side; the later value is the answer.
#: Words other than a number's unit break it: ``the radius is 3 and the area is 9`` is no chain.
_CHAIN_NUMBER = (r"(?:\\?\$)?\d+(?:[.,]\d+)*(?:\s*(?:°|\\?%)|\s*(?!(?:" + _NOT_UNITS + r")\b)[A-Za-z]{2,12}(?![A-Za-z(]))?")
_CHAIN_ATOM = r"(?:" + _CHAIN_NUMBER + r"|[A-Za-z](?![A-Za-z])|\\[A-Za-z]+(?:\{[^{}]*\})*|\([^()]*\))"
_CHAIN_TERM = _CHAIN_ATOM + r"(?:\^\s*(?:\{[^{}]*\}|\d+|[A-Za-z]|\\circ))?"
_CHAIN_OPERATOR = r"(?:[-+*/×÷]|\\(?:times|cdot|div)(?![A-Za-z]))"
# Unambiguous, so a long text that is no chain fails in linear time: terms side by side only
# where the next starts with no digit, whitespace in one place, a sign only on the first term.
_CHAIN = re.compile(r"\s*(?:(?:[-+]\s*)?" + _CHAIN_TERM + r"(?:\s*(?:" + _CHAIN_OPERATOR + r"\s*" + _CHAIN_TERM
                    + r"|(?=[A-Za-z\\(])" + _CHAIN_TERM + r"))*)?\s*$")

#: Characters of prose read for a stated answer (from the end); bounds the driver's CPU per rollout.
SCAN_CHARS = 4_000


def up_to_sentence_end(text: str) -> str:
    """What a phrase states, up to its sentence's end (``$10,455$. I hope…`` → ``$10,455$``).
    Maths spans are kept whole: a ``.`` inside ``$…$`` does not end the sentence. One pass."""
    t = text.lstrip()[:SCAN_CHARS]
    end = dollars = opens = closes = 0
    for m in _SENTENCE_END.finditer(t):
        cut = m.start()
        chunk = t[end:cut]
        dollars += chunk.count("$") - chunk.count("\\$")
        opens += chunk.count("\\[")
        closes += chunk.count("\\]")
        end = cut
        if dollars % 2 == 0 and opens == closes:
            stated = t[:cut].strip()
            if stated:
                return stated
    return t.strip()


def value_stated(sentence: str, yes_no: bool = False, choices: str = "") -> str:
    """The answer a sentence states (:func:`_read_value`). For a multiple-choice question
    (``choices``: its letters), a reading that names no choice gives way to the choice the
    sentence states (:func:`choice_stated`): "B because the radius is 6" is B, not 6, and "A is
    correct." is A; "option A fits" and "the total is (C) 80" are kept as read."""
    read = _read_value(sentence, yes_no)
    if choices and not names_a_choice(read, choices):
        chosen = choice_stated(sentence.strip().strip('"').strip().rstrip(".").strip(), choices)
        if chosen is not None:
            return chosen
    return read


def _read_value(sentence: str, yes_no: bool = False) -> str:
    """The answer a sentence states: after its ``is``/``=`` a value (``The largest $n$ is
    34.`` → ``34``, ``The count is (C) 80.`` → ``(C) 80``), else its last maths span
    (``Therefore $x \\geq 5$ is the solution``), else its one number (``increases by
    100%``), else the sentence. For a yes/no question (``yes_no``), a sentence that opens
    with its verdict (``No, it is smaller.``) states that verdict: it is kept whole, for
    the comparison to read (its "is" names the reason, not the answer)."""
    s = sentence.strip().strip('"').replace('\\"', "").strip().rstrip(".").strip()
    if _HEDGE_WORDS.search(s):  # "not sure, maybe 12": kept whole, and refused as hedged
        return s
    if yes_no:
        if YES_NO_LEAD.match(s):
            return s  # "No, it is smaller.": read whole
        last = _SENTENCES.split(s)[-1]  # "Is there a dog? No, there is not.": its last sentence
        if last is not s and (YES_NO_LEAD.match(last) or implied_verdict(last) is not None):
            return last
        if implied_verdict(s) is not None:
            return s  # "There is no dog.", "I see two dogs, so yes."
    if denied(s):  # "It can't be 5": kept whole, and refused as no answer
        return s
    label = _LABELLED.fullmatch(s)
    if label and bare_answer(label.group(1), "ABCDEFGHIJ") is not None:  # "Total: 12", "Area: 12 cm"
        return label.group(1).strip()
    if ": " in s:
        total = _broken_down(s)
        if total is not None:  # "I count 13 dogs: 9 on the left and 4 on the right."
            return _read_value(total, yes_no)
    instead = _stated_instead(s)
    if instead is not None:  # "It isn't 5; it's 7": the value stated instead
        return instead
    if "," in s or ";" in s:
        total = _TOTAL.search(s)
        if total is not None and len(DIGITS.findall(s, 0, total.start())) >= 2:
            # "There are 3 cars and 4 trucks, making 7 vehicles in total.": 7; but "The third angle is
            # 50 degrees, for a total of 180 degrees." is 50 (one value, then a sum it completes)
            return total.group("value") or total.group("value2")
    if s[:1].isdigit() or s[:1] in "$-+":
        reason = _JUSTIFICATION.search(s, 1)
        if reason and not _COPULA.search(s, 0, reason.start()):  # "4, because x = 2": the value, not its reason
            return _value(s[: reason.start()].strip(" ,;"))
    if " and " in s or ", " in s or " or " in s or "&" in s:
        both = pair_stated(s)
        if both is not None:  # "The solutions are x = 3 and x = -3.": both
            return both
    copulas = list(_COPULA.finditer(s))
    stated = _stated_value(s, copulas)
    if stated is not None:
        return stated
    spans = list(MATH_SPAN.finditer(s))
    if spans:
        inner = next(g for g in spans[-1].groups() if g is not None).strip()
        if inner:
            return inner
    member = _MEMBER_OF.fullmatch(s) if "\\in" in s else None
    if member is not None:  # "x \\in [1, 3]": the set
        return member.group(1)
    point = _POINT_AT.search(s) if s.endswith(")") else None
    if point is not None:  # "The lines intersect at (2, 3).", "The vertex is at (-1, 4).": the point
        return point.group(1)
    if copulas:
        rest = s[copulas[-1].end() :].strip()
        if rest:
            return rest
    if "=" in s:
        chains = list(_UNSPACED_CHAIN.finditer(s))
        if chains:  # "The remaining marbles: 15-7=8": the value the last chain ends on
            return chains[-1].group(1)
    if _TIME_SAID_OF.fullmatch(s):  # "9 a.m. on Monday": all of it is the answer
        return s
    numbers = list(_NUMBER_IN_TEXT.finditer(s))
    if len(numbers) > 1 and numbers[0].start() == 0 and not _DATE_ALONE.fullmatch(numbers[0].group(0).strip()) \
            and not _YEAR_FIRST.match(s) and not _LEADS_TO_DATE.search(s, numbers[0].end(), numbers[1].start()) \
            and re.search(r"[A-Za-z]", s[numbers[0].end() : numbers[1].start()]) \
            and all(_DATE_ALONE.fullmatch(n.group(0).strip()) for n in numbers[1:]):
        numbers = numbers[:1]  # "12 units, recorded in Dec. 2020": the value, then when
    if len(numbers) == 1 and len(s.split()) > 3:
        if _TIME_ALONE.fullmatch(numbers[0].group(0).strip()) and len(s.split()) <= MAX_WORDS:
            return s  # "Flight at 7:30 p.m. to London": the time and what it is said of, compared together
        if _DATE_ALONE.fullmatch(numbers[0].group(0).strip()) and len(s.split()) <= MAX_DATE_WORDS:
            return s  # "before March 3, 2021": the date and what is said of it, compared together
        if not _opens_expression(s, numbers[0].start()):  # "4 \\pi square cm" is no number
            return with_qualifiers(s, numbers[0].start(), numbers[0].end())
    return s


#: A closing clause that totals what the sentence counted: "…, making 7 vehicles in total",
#: "…, for a total of 7", "…, totaling 7", "…, so 7 in total" (a bare "so" needs the "in total").
_TOTAL = re.compile(
    r"[,;]\s*(?:(?:making|totall?ing|giving|for\s+a\s+(?:total|sum)\s+of|(?:which|that)\s+(?:makes|gives)"
    r"(?:\s+a\s+total\s+of)?|a\s+total\s+of)\s+(?P<value>[-+]?\$?\d+(?:[.,]\d+)*)(?:\s+[A-Za-z]+){0,2}"
    r"|(?:so|thus|that's|that\s+is)\s+(?P<value2>[-+]?\$?\d+(?:[.,]\d+)*)(?:\s+[A-Za-z]+)?\s+(?:in\s+total|in\s+all|altogether))"
    r"(?:\s+(?:in\s+total|in\s+all|altogether))?\s*$", re.IGNORECASE)
_DIGITS_AT = re.compile(r"[-+]?\d+(?:[.,]\d+)*")
_BOUND_REACH = 40  # characters before a value where its bound words may start ("not more than or equal to")


def with_qualifiers(s: str, start: int, end: int) -> str:
    """The value ``s[start:end]`` with what qualifies it: the words that bound it (``no more
    than 12``, ``12 at most``, ``2021 at the latest``; :mod:`.bounds`) or its era (``44 BC``;
    :mod:`.eras`). A bound is not its number, nor is 44 BC 44 AD, so the comparison must see them."""
    value = s[start:end]
    digits = _DIGITS_AT.match(value)
    if digits is None:  # a date or a time: their own checks read their bounds
        return value.strip()
    before = BOUND_BEFORE.search(s, max(0, start - _BOUND_REACH), start)
    after = BOUND_AFTER.match(s, start + digits.end()) or BOUND_AFTER.match(s, end) \
        or ERA_AFTER.match(s, start + digits.end())
    if before is None and after is None:
        return value.strip()
    first = start if before is None else before.start("particle") if before.group("particle") else before.start()
    return s[first : max(end, after.end()) if after else end].strip()


def _broken_down(sentence: str) -> str | None:
    """The claim before a colon when what follows breaks its one value down into parts that
    add up to it ("There are 12 apples: 5 red and 7 green." → "There are 12 apples"), else
    None: "In 2019 the values were: 45 and 52" breaks nothing down."""
    head, _, tail = sentence.partition(": ")
    values = DIGITS.findall(head)
    parts = DIGITS.findall(tail)
    if len(values) != 1 or len(parts) < 2 or "," in values[0]:
        return None
    try:
        whole, pieces = float(values[0]), [float(p.replace(",", "")) for p in parts]
    except ValueError:  # "1.2.3"
        return None
    return head if abs(sum(pieces) - whole) < 1e-9 * max(1.0, abs(whole)) else None


#: Arithmetic written without spaces around its "=": "15-7=8", "3x4=12".
_UNSPACED_CHAIN = re.compile(r"[-+]?\d[\d.,]*(?:\s*[-+*/×÷x]\s*\d[\d.,]*)+\s*=\s*([-+]?\d[\d.,]*)(?![\d.,]*\s*[-+*/×÷=])")


def pair_stated(sentence: str) -> str | None:
    """The values of one unknown a sentence ends on after an "is"/"are"/"=" (``The solutions
    are $x = 2$ and $x = 3$.``, ``The roots are 1, 2, and 3.``, ``So x = 3, x = -3.``, ``$x=-1$
    or $x=3$``) as one list (``2, 3``), or None: two unknowns' values (``a = 2, x = 3``) are no list."""
    for copula in _COPULA.finditer(sentence):
        subject = _SUBJECT_VAR.search(sentence, 0, copula.start())
        rest = sentence[copula.end() :].strip()
        values = _values_of_one(rest, subject.group(1) if subject else None)
        if values is not None:  # (values offered with "or" come back as written: a hedge, refused)
            return rest.rstrip(" .!") if " or " in rest.lower() else values
    return None


#: Several values, joined by commas, "and" or "or", each maybe its unknown's (``x = 3``, ``$x_1 = 3$``).
_LIST = re.compile(r"(?:\$?(?:[A-Za-z](?:_\{?\d+\}?)?\s*=\s*)?[-+]?\d+(?:\.\d+)?\$?(?:,\s+|,?\s+(?:and|or|&)\s+)){1,8}"
                   r"\$?(?:[A-Za-z](?:_\{?\d+\}?)?\s*=\s*)?[-+]?\d+(?:\.\d+)?\$?\s*[.!]?\s*", re.IGNORECASE)
_LIST_ITEM = re.compile(r"(?:([A-Za-z])(?:_\{?\d+\}?)?\s*=\s*)?([-+]?\d+(?:\.\d+)?)")
#: The unknown a copula's subject names (``x`` in ``So x = 3, x = -3``), read back from the copula.
_SUBJECT_VAR = re.compile(r"\b([A-Za-z])(?:_\{?\d+\}?)?\$?\s*$")


_TEXT_WORD = re.compile(r"\s*\\(?:text|mathrm)\{\s*(or|and)\s*\}\s*")


def values_offered(answer: str) -> str | None:
    """``x = -1 or x = 3`` (or ``-1 or 3``) as the list ``-1, 3``: what a gold of several values
    is compared with (for a gold of one, the same answer is a hedge); None if it is no such list."""
    rest = _TEXT_WORD.sub(r" \1 ", answer).strip().strip("$").strip()  # "x=-1 \\text{ or } x=3"
    if _LIST.fullmatch(rest) is None:
        return None
    items = _LIST_ITEM.findall(rest)
    return ", ".join(v for _, v in items) if len({var for var, _ in items if var}) <= 1 else None


def _values_of_one(rest: str, subject: str | None) -> str | None:
    """``rest`` as a list of one unknown's values (:data:`_LIST`), or None."""
    if _LIST.fullmatch(rest) is None:
        return None
    items = _LIST_ITEM.findall(rest)
    named = [var for var, _ in items if var]
    if named and not items[0][0] and subject is None:  # "2, x = 3": whose 2 is unknown
        return None
    unknowns = set(named) | ({subject} if subject and named else set())
    if len(unknowns) > 1 or (" or " in rest.lower() and not unknowns):  # "12 or 13": a hedge, read elsewhere
        return None
    if " or " in rest.lower() and subject is None and not items[0][0]:
        return None
    return ", ".join(value for _, value in items)


def copula_value(sentence: str) -> str | None:
    """The value a sentence states after an "is" or "=" (:func:`_stated_value`), or None:
    "I double counted one; the total is 17" states 17, "3 of them are red" states none."""
    return _stated_value(sentence, list(_COPULA.finditer(sentence)))


def _stated_value(s: str, copulas: list[re.Match[str]]) -> str | None:
    """The value after the "is"/"=" that states the answer: the first, or the last one a
    consequence introduces (``the radius is 3, so the area is 28.27`` states 28.27); never one
    in the claim's reason (``the remainder is 3, since 23 = 4·5 + 3``, ``Since the side is 3,
    the area is 9``) nor a restatement (``9, which is 3 squared``). Two values offered are
    kept whole (``x = 2 or x = -2``: refused as hedged). One value (the common case) costs no
    clause reading: this runs per rollout."""
    found = []  # (where the copula starts, where its value starts)
    for m in copulas:
        at = m.end()
        if s[at : at + 1].isalpha():  # "is therefore 18": the adverb is the consequence's
            adverb = _COPULA_ADVERB.match(s, at)
            at = adverb.end() if adverb else at
        c = s[at : at + 4].lstrip().lstrip("*_`")[:1]
        if c and (c.isdigit() or c in "$\\(-+[") and not s.endswith(_RESTATING, 0, m.start()):
            found.append((m.start(), at))
    if not found:
        return None
    if len(found) == 1:
        return _equated(s, found[0][0]) or _value(s[found[0][1] :].strip())  # (a hedge is kept whole there)
    lead = _LEADING_JUSTIFICATION.match(s)
    if lead is None and _LEADING_REASON.match(s):  # "Because the side is 3 the hypotenuse is 5"
        cut = _JUSTIFICATION.search(s, 1)
        claimed = [f for f in found if cut is None or f[0] < cut.start()] or found
        return _value(s[claimed[-1][1] :].strip())
    start = lead.end() if lead else 0
    cut = _JUSTIFICATION.search(s, start + 1)
    end = cut.start() if cut else len(s)
    found = [f for f in found if start <= f[0] < end] or found
    chosen, chosen_at, previous = None, 0, 0
    for copula, at in found:
        rest = s[at:].strip()
        if _HEDGE_OR.match(rest) or _VALUE_OR_VALUE.match(rest):
            return rest
        # a later value wins after a consequence ("so the area is", "is therefore"), or closing a
        # chain of values ("f(2) = 4 + 8 = 12", "the square whose side is 3 is 9")
        if chosen is None or _CONSEQUENCE.search(s, previous, at) or _CHAIN.match(s, previous, copula):
            chosen, chosen_at = rest, copula
        previous = at
    return _equated(s, chosen_at) or _value(chosen)  # type: ignore[arg-type]


#: A term after "=" that ends the sentence: ``f'(x) = 2x`` (after "is", ``3x`` is a factor:
#: "The magnification is 3x.").
_EQUATED_TERM = re.compile(r"\s=\s*\$?([-+]?\d+(?:\.\d+)?[a-z])\$?\s*[.!]?\s*$")


def _equated(s: str, copula: int) -> str | None:
    """The term an equation ends on, where the copula at ``copula`` is its "=" (``2x``), or None."""
    term = _EQUATED_TERM.match(s, copula)
    return term.group(1) if term else None


#: A statement that is only a membership: ``x \\in [1, 3]``, ``$x \\in (0, \\infty)$``.
_MEMBER_OF = re.compile(r"\$?[A-Za-z]\s*\\in\s*(.+?)\$?")
#: A point a sentence ends on, after "at": ``… intersect at (2, 3)``.
_POINT_AT = re.compile(r"\bat\s+(\(\s*[-+]?\d[\d.]*\s*,\s*[-+]?\d[\d.]*\s*(?:,\s*[-+]?\d[\d.]*\s*)?\))$")
#: A date (or range) and nothing else.
_DATE_ALONE = re.compile(WRITTEN_DATE + r"\.?")
#: A sentence that opens with a year ("2021 March 3rd"), or a value that leads to the date after it
#: ("14 days later: March 17", "2 weeks before 3/10/2021"): the date is the answer, not the value.
_YEAR_FIRST = re.compile(r"[12]\d{3}\b")
_LEADS_TO_DATE = re.compile(r":|\b(?:later|earlier|before|after|from|since|until)\b", re.IGNORECASE)
#: A time (or range) and nothing else.
_TIME_ALONE = re.compile(WRITTEN_TIME + r"\.?")
#: A time of day, then what it is said of (``9 a.m. on Monday``), to the end of the clause.
_TIME_SAID_OF = re.compile(WRITTEN_TIME + r"\s+(?=(?:on|at|in|from|every|each|daily|sharp)\b)"
                           r"[^,;:!?\n]+", re.IGNORECASE)


def _value(rest: str) -> str:
    """``0.6, which means …`` → ``0.6``; ``12 distinct sequences that …`` → ``12 distinct``:
    a value and at most one word after it; maths and choices are kept whole; markdown
    emphasis around it (``**5**``) is not part of it."""
    if not rest:
        return rest
    if rest[0] in "*_`":
        return _value(rest.lstrip("*_`")).strip("*_`")
    if rest[:1] in "$\\([":
        spans = MATH_SPAN.match(rest)
        if spans:
            return next(g for g in spans.groups() if g is not None).strip()
        return rest
    if _HEDGE_OR.match(rest) or _VALUE_OR_VALUE.match(rest) or two_values(rest):  # "12 or 13": kept whole, and refused as hedged
        return rest
    if _opens_expression(rest):  # "4 \\pi square cm": an expression, kept whole
        return rest[:-1].rstrip() if rest.endswith("$") and rest.count("$") % 2 else rest  # (a span's closing $)
    chain = _UNSPACED_CHAIN.match(rest)
    if chain:  # "15-7=8": the value the chain ends on
        return chain.group(1)
    values = _values_of_one(rest, None) if "," in rest or " and " in rest or "&" in rest else None
    if values is not None and " or " not in rest.lower():  # "2 and 3" is both (a one-value gold is not it)
        return values
    said_of = _TIME_SAID_OF.match(rest)
    if said_of:  # "9 a.m. on Monday": a time keeps what it is said of, to the clause's end
        return said_of.group(0).strip()
    m = LEAD_VALUE.match(rest)
    return with_qualifiers(rest, 0, m.end()) if m else rest


def hedged(answer: str, gold: str = "") -> bool:
    """Does ``answer`` hedge between several answers (``A or B``, ``3 or 4``) or state doubt
    (``not sure``), where ``gold`` does not? Long answers (an option's text) are not read
    for ``or``."""
    a = strip_answer(answer) if len(answer) < 500 else answer
    if _HEDGE_LETTERS.match(a):
        return True
    if len(a) < 100 and _HEDGE_WORDS.search(a) and not _HEDGE_WORDS.search(gold):
        return True
    return (len(a) < 100 and bool(_HEDGE_OR.match(a) or _VALUE_OR_VALUE.match(a)) and not _OR.search(gold)
            and not one_time_twice(a))  # "4 p.m. or 16:00": one time
