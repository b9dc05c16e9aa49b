"""An answer stated in prose, nothing boxed, read as a reader reads a solution: from its end.

Closing lines, pauses and paragraphs that check or explain are dropped; the last
``Answer:`` line or "the answer is" phrase wins, unless a later step corrects it
(:mod:`.retractions`); without one, the last step's own stated value wins over a working
"Therefore, x = 3." before it, unless it is an aside, a supposition or a breakdown. Only the
text's end is split and read: this runs per rollout.
"""

from __future__ import annotations

import re

from prmtree.engine.answers.choices import answer_choice
from prmtree.engine.answers.marks import ANSWER_LINE, all_boxed
from prmtree.engine.answers.retractions import corrects
from prmtree.engine.answers.sentences import (
    ASIDE,
    DIGITS,
    MATH_SPAN,
    SCAN_CHARS,
    YES_NO_LEAD,
    denied,
    pair_stated,
    up_to_sentence_end,
    value_stated,
)
from prmtree.engine.answers.values import bare_answer, plain_form
from prmtree.engine.steps import split_structured


#: A phrase that names the final answer: it wins over boxed working values before it.
_FINAL_PHRASE = re.compile(
    r"(?:\bfinal\s+answer\b[^\S\n]*(?:is\b)?[^\S\n]*[:：]?|\b(?:the\s+)?(?:correct\s+|best\s+)?answer\s+(?:is|would\s+be|should\s+be)\b"
    r"[^\S\n]*[:：]?|\banswer[^\S\n]*[:：])[^\S\n]*\**[^\S\n]*",
    re.IGNORECASE,
)
#: A sentence that concludes (``Therefore, …``): the weaker signal, used when nothing else is.
#: The words only; where they may stand is :func:`_last_conclusion`'s (a pattern with its
#: boundary in front costs ~200 us per 2 KB of prose, this ~25).
_CONCLUSION = re.compile(
    r"(?:Therefore|Thus|Hence|So|In\s+conclusion|Consequently|We\s+(?:find|get|obtain|conclude)\s+that|This\s+gives"
    r"|therefore|thus|hence|so|we\s+find\s+that)\b[,:]?[^\S\n]*"
)


def _last_conclusion(text: str) -> int | None:
    """Where the last concluding phrase of ``text`` ends, or None. A capitalised one (``Thus,``)
    stands at the start, after a space or after ``.!?:$``; a lower-case one (``so``) only opens a
    sentence (after ``.!?``, a line break or the start, spaces between): ``and so on`` concludes
    nothing."""
    start = max(0, len(text) - _CONCLUSION_TAIL)
    while True:  # the text's end first: where a conclusion usually is
        for m in reversed(list(_CONCLUSION.finditer(text, start))):
            i = m.start()
            if text[i].isupper():
                if i == 0 or text[i - 1].isspace() or text[i - 1] in ".!?:$":
                    return m.end()
                continue
            while i > 0 and text[i - 1] != "\n" and text[i - 1].isspace():
                i -= 1
            if i == 0 or text[i - 1] in ".!?\n":
                return m.end()
        if start == 0:
            return None
        start = 0


_CONCLUSION_TAIL = 400


def first_answer(text: str) -> int | None:
    """Where "answer" first stands in ``text`` (0 when case folding may move offsets), or None:
    the patterns that name the answer (:data:`ANSWER_LINE`, :data:`_FINAL_PHRASE`) all hold
    the word, and they try every position (~80 us per 2 KB of prose), so they start near it."""
    if not text.isascii():  # case folding may change lengths: no offsets from it
        return 0 if "answer" in text.casefold() else None
    first = text.lower().find("answer")
    return None if first < 0 else first


def last_phrase(text: str, first: int | None) -> re.Match[str] | None:
    """The last :data:`_FINAL_PHRASE` in ``text`` that names an answer (:func:`_names_nothing`),
    whose first "answer" is at ``first``."""
    if first is None:
        return None
    start = first
    for _ in range(2):  # back over the (at most two) words a phrase opens with: "the correct answer"
        while start > 0 and text[start - 1].isspace():
            start -= 1
        while start > 0 and text[start - 1].isalpha():
            start -= 1
    for phrase in reversed(list(_FINAL_PHRASE.finditer(text, start))):
        if not _names_nothing(text, phrase):
            return phrase
    return None


#: Words between "the answer is" and its value that state nothing: "The answer is therefore 12".
#: Lower case and followed by more of the sentence only: "The answer is Still Life." and "The
#: answer is just." state those words.
_PHRASE_ADVERB = re.compile(r"(?:therefore|thus|hence|consequently|indeed|just|simply|clearly|still|then|also"
                            r"|definitely|certainly|obviously|evidently|surely)\b[,:]?[^\S\n]*(?=[^\s.!?])")
#: What judges an answer rather than states one: "This answer is reasonable.", "The answer is
#: correct.", "... is consistent with the graph." ("right" only of "this/my answer": "The answer is
#: right." may name a direction).
_JUDGED = re.compile(r"(?:correct|reasonable|verified|consistent|valid|plausible|accurate|confirmed|sensible"
                     r"|justified|acceptable|appropriate)\b", re.IGNORECASE)
_RIGHT = re.compile(r"right\b", re.IGNORECASE)
_OWN = re.compile(r"\b(?:this|that|my|our)\s+$", re.IGNORECASE)
#: After a judging word, what may be a value: "The answer is correct: 12" states 12.
_VALUE_LIKE = re.compile(r"[\d$\\:=]|\b[A-Z]\b")


def phrase_stated(text: str, phrase: re.Match[str]) -> str:
    """What the final-answer ``phrase`` in ``text`` states, up to its sentence's end, past the
    words that only lead to it ("is therefore 18", "is clearly yes")."""
    lead = _PHRASE_ADVERB.match(text, phrase.end())
    return up_to_sentence_end(text[lead.end() if lead else phrase.end() :])


def _names_nothing(text: str, phrase: re.Match[str], stated: str | None = None) -> bool:
    """Does a "the answer is" ``phrase`` of ``text`` name no answer, only judge one ("I believe
    this answer is correct.", "This answer is reasonable.") with no value after the judging
    word ("correct: 12" states 12)? An answer stated before it stands. ``stated``: what the
    phrase states (:func:`phrase_stated`), where the caller has it. (Suppositions and denials
    after an answer are left to the older reading: every narrower rule tried for them took
    some corrections for suppositions, a wrong answer graded right.)"""
    stated = phrase_stated(text, phrase) if stated is None else stated
    word = _JUDGED.match(stated)
    if word is None and _OWN.search(text, max(0, phrase.start() - 6), phrase.start()):
        word = _RIGHT.match(stated)  # "right" only of "this/my answer"
    return word is not None and not _VALUE_LIKE.search(stated, word.end())


def _answer_lines(text: str, first: int | None) -> list[str]:
    """Every :data:`ANSWER_LINE` in ``text``, whose first "answer" is at ``first``: one is
    read from its line's start, so the search starts at the start of that word's line."""
    return [] if first is None else ANSWER_LINE.findall(text, text.rfind("\n", 0, first) + 1)


#: An answer named before the word: "12 is the answer.", "So (B) is the correct answer."; the
#: subject must be only an answer (:func:`bare_answer`): "The sum of 5 and 7 is the answer" names none.
#: Matched from a sentence's (or clause's) start: see :func:`_last_named_first`.
_NAMED_FIRST = re.compile(
    r"[\s*_]*(?:(?:so|thus|therefore|hence|clearly|then)\b[,\s]*)?"
    r"(\S(?:[^\n.!?,;:]|[.,:](?=\d)){0,40}?|\$[^$\n]{1,40}\$)[*_]*\s+(?:is|would\s+be|must\s+be)\s+(?:the|my|our)\s+"
    r"(?:final\s+|correct\s+|right\s+|best\s+)?answer\b", re.IGNORECASE)
#: Where a sentence or clause starts: after a line break, or after ``.!?:,;`` and a space.
_CLAUSE_START = re.compile(r"\n|[.!?:,;](?=[^\S\n])")
_ANSWER_WORD = re.compile(r"answer\b", re.IGNORECASE)
_NAMING_SPAN = 110  # characters before "answer" a naming may start: a lead word, 40 of subject, "is the final"
_OPTION_WORD = re.compile(r"^(?:option|choice)\s+(?=\(?[A-Z]\)?$)", re.IGNORECASE)


def _last_named_first(text: str, first: int | None) -> tuple[int, str] | None:
    """The answer named before "is the answer" by ``text``'s last sentence (``text``'s first
    "answer" is at ``first``) and where that naming ends, or None. Only a last sentence that
    plainly declares it counts: "13 is the answer? No, …", "12 is the answer, or 13.", "If we
    ignore the shaded one, 13 is the answer. Including it, the total is 12." and "13 is the
    answer only if …" name nothing. Read back from the text's last "answer", with no pattern
    tried at every position: this runs per rollout."""
    if first is None:
        return None
    last_word = None
    for last_word in _ANSWER_WORD.finditer(text, max(first, len(text) - 400)):  # noqa: B007
        pass
    if last_word is None:
        return None
    end = last_word.end()
    other = _OR_ANOTHER.fullmatch(text, end)
    if other is None and not _SENTENCE_CLOSE.fullmatch(text, end):
        return None
    window = max(0, last_word.start() - _NAMING_SPAN)
    starts = [0] if window == 0 else []
    starts += [m.end() for m in _CLAUSE_START.finditer(text, window, last_word.start())]
    for at in reversed(starts[-3:]):  # the nearest clause start first ("12\n is the answer": the one before)
        named = _NAMED_FIRST.match(text, at)
        if named is not None and named.end() == end:
            break
    else:
        return None
    subject = bare_answer(_OPTION_WORD.sub("", named.group(1)), "ABCDEFGHIJ")
    if subject is None:
        return None
    if other is not None:
        if bare_answer(other.group(1), "ABCDEFGHIJ") is None:
            return None
        return end, f"{subject}, or {other.group(1)}"  # a hedge: refused
    if _NOT_DECLARED.search(text, max(0, text.rfind(".", 0, named.start(1)) + 1), named.start(1)):
        return None
    return end, subject


#: "12 is the answer, or 13.": a second answer offered after the first.
_OR_ANOTHER = re.compile(r"[*_]*,?\s+or\s+(\S+?)[*_]*\s*[.!]?[\s*_]*", re.IGNORECASE)
#: What may follow a last sentence's "is the answer": its full stop, emphasis, nothing else.
_SENTENCE_CLOSE = re.compile(r"[*_]*\s*[.!]?[\s*_]*")
#: Words before a named-first answer that suppose, doubt or recall a first try: "If we ignore
#: the shaded one, 13 is the answer.", "At first glance, 20 is the answer."
_NOT_DECLARED = re.compile(r"\b(?:if|would|could|might|unless|naive\w*|first|guess\w*|initially|mistake\w*|wrong"
                           r"|not|maybe|perhaps|probably|think|some|suppos\w*|assum\w*)\b", re.IGNORECASE)


def _named_answer(text: str, yes_no: bool = False, choices: str = "") -> str | None:
    """The answer ``text`` names outright: its last ``Answer:`` line, else its last ``the answer
    is …`` phrase, reduced to what it states; None without either."""
    first = first_answer(text)
    lines = _answer_lines(text, first)
    if lines and lines[-1].strip():
        line = lines[-1].strip()
        opening = _FINAL_PHRASE.match(line, 4 if line[:4].lower() == "the " else 0)
        stated = phrase_stated(line, opening) if opening is not None else ""
        if opening is not None and not _names_nothing(line, opening, stated) and not denied(stated):
            return _phrase_answer(line, opening, yes_no, choices, stated)  # "The final answer is no. I hope it is correct."
        lead = leading_answer(line, choices)
        if lead is not None:  # "Answer: 3. There are 5 rows.": 3, not the explanation's 5
            return lead
        return value_stated(line, yes_no, choices) if len(line.split()) > 3 or MATH_SPAN.search(line) else line
    phrase = last_phrase(text, first)
    named_first = _last_named_first(text, first)
    if named_first is not None and (phrase is None or named_first[0] >= phrase.start()):
        return named_first[1]  # "12 is the answer.", "So (B) is the correct answer."
    if phrase is not None:  # the last one: "Final Answer: The final answer is 7" states 7
        return _phrase_answer(text, phrase, yes_no, choices)
    return None


def _phrase_answer(text: str, phrase: re.Match[str], yes_no: bool, choices: str,
                   stated: str | None = None) -> str | None:
    """What a final-answer ``phrase`` of ``text`` states, reduced to its value: its sentence
    (the first stated, not a later one: "The answer is no. The bird is red." is no), else the
    maths after it ("Answer \\[ 9 \\]"). ``stated``: :func:`phrase_stated`, where the caller has it."""
    stated = phrase_stated(text, phrase) if stated is None else stated
    if stated:
        return value_stated(stated, yes_no, choices) if len(stated.split()) > 3 else stated
    spans = list(MATH_SPAN.finditer(text, phrase.start()))
    return value_stated(spans[-1].group(0)) if spans else None


#: A short answer, then a sentence that explains it (``3. There are 5 rows.``, ``Paris. It is the
#: capital …``).
_LEAD_THEN_SENTENCE = re.compile(r"[*_]*(?P<x>(?:[^.\n(*_]|\.(?=\d)){1,40}?)[*_]*\.\s+(?=[A-Z\"'*])")
#: ... unless that sentence takes it back, pauses or hedges: "C. Wait, no. B." is two answers.
_NOT_EXPLAINING = re.compile(r"[\s*_\"']*(?:wait|actually|no\b|sorry|hmm|or\b|correction|i\s+mean|oops|hold\s+on|maybe"
                             r"|perhaps|alternatively)", re.IGNORECASE)
#: Words that open a reply without answering ("Okay. The car is red." answers red), and verdicts,
#: which the yes/no readers read with what follows them ("Yes. No." takes it back).
_NO_ANSWER_WORD = re.compile(r"(?:ok(?:ay)?|sure|well|so|hmm+|first|alright|right|great|now|then|here|note|wait"
                             r"|yes|no|yeah|yep|nope|true|false|correct|incorrect|indeed|actually"
                             r"|mr|mrs|ms|dr|st|mt|prof|fig|no|vol|ch|sec|eq|approx|vs|etc|e\.g|i\.e"
                             r"|let'?s|step|solution|explanation|reasoning|analysis|thus|therefore|hence)$", re.IGNORECASE)


def leading_answer(line: str, choices: str = "") -> str | None:
    """The short answer a line (an ``Answer:`` line, or a whole one-line reply) opens with before
    explaining it: a value or choice
    (``3``, ``(B)``, ``2019``) or a name of at most three capitalised words (``Paris``, ``John
    Smith``, ``Blue``); None when the line does not open so (``B. 12 cm`` is a choice and its
    text, read elsewhere), or what follows takes it back (``C. Wait, no. B.``)."""
    m = _LEAD_THEN_SENTENCE.match(line)
    if m is None or _NOT_EXPLAINING.match(line, m.end()):
        return None
    x = m.group("x").strip()
    if _NO_ANSWER_WORD.match(x):
        return None
    if bare_answer(x, choices or "ABCDEFGHIJ") is not None:
        return x
    words = x.split()
    if 0 < len(words) <= 3 and all(w[:1].isupper() and w.replace("-", "").replace("'", "").isalpha() for w in words):
        return x
    return None


def _prose_answer(text: str, yes_no: bool = False, stated_only: bool = False, choices: str = "") -> str | None:
    """Only the text's last ``SCAN_CHARS`` characters are read: a final answer is stated at the end.
    An answer stated in prose, nothing boxed: an ``Answer:`` line, then the last ``the
    answer is …`` phrase, then the last ``Therefore, …`` sentence, then (not ``stated_only``)
    the maths the text ends on or its last line; each reduced to what it states (a whole last
    line is never taken blindly)."""
    text = text[-SCAN_CHARS:]
    named = _named_answer(text, yes_no, choices)
    if named is not None:
        return named
    conclusion = _last_conclusion(text)
    if conclusion is not None:
        stated = up_to_sentence_end(text[conclusion:])
        if stated:
            return value_stated(stated, yes_no, choices)
    if stated_only:
        return None
    tail = text.rstrip()
    spans = list(MATH_SPAN.finditer(tail)) if tail.rstrip(" .,;:!").endswith(("$", ")", "]")) else None
    if spans and not tail[spans[-1].end() :].strip(" .,;:!"):  # the text ends on maths
        both = pair_stated(tail[tail.rfind("\n") + 1 :]) if len(spans) > 1 else None
        return both if both is not None else value_stated(spans[-1].group(0))  # ("are $x = 2$ and $x = 3$": both)
    for line in reversed(text.splitlines()):
        if line.strip() and not _CLOSER.fullmatch(line):
            return value_stated(line, yes_no, choices)
    return None


def read_prose(text: str, yes_no: bool = False, choices: str = "") -> tuple[str | None, bool]:
    """A prose answer read as a reader reads a solution, from its end: closing lines, pauses
    and checks or notes after the answer dropped ("Hope this helps!", "Wait.", "Check: 15 / 3
    = 5", "Note: …", "Explanation: …").

    The last ``Answer:`` line or "the answer is" phrase wins; a later step that corrects it
    ("Wait, I made an error. The count is 13.") makes two answers: ``(answer, True)``. With
    none, the last step's own conclusion or stated value wins over a working "Therefore, x =
    3." before it ("Therefore, x = 3.\n\nThe count is 12." is 12), but a last line that states
    no value of its own ("In total we counted 6 rows and 7 columns.") leaves that conclusion."""
    text = text[-SCAN_CHARS:]
    if "\n" not in text.strip() and first_answer(text) is None and _last_conclusion(text) is None:
        lead = leading_answer(text.strip(), choices)
        if lead is not None:  # one line: "Paris. It is the capital city shown on the map."
            return lead, False
    if choices and "\n" in text.strip():  # "B\nC": two bare choices, one to a line
        pair = [line for line in text.rstrip().rsplit("\n", 3)[-3:] if line.strip()][-2:]
        letters = [bare_answer(line, choices) if len(line) < 24 else None for line in pair]
        if len(letters) == 2 and None not in letters:
            one, other = (str(x).strip("()[]. ") for x in letters)
            if len(one) == len(other) == 1 and one != other:
                return f"{one}, {other}", True
    if yes_no and "\n" in text.strip():  # "Yes\nNo": two verdicts, one to a line
        pair = [line.strip(" \t*_.!").lower() for line in text.rstrip().rsplit("\n", 3)[-3:] if line.strip()][-2:]
        if pair in (["yes", "no"], ["no", "yes"]):
            return pair[-1], True
    found = _last_step(text) if "\n" in text.strip() else None
    if found is not None and text[found[1] + len(found[0]) :].strip() and _AFTERWORD.search(text, found[1]):
        if stated_before(text[: found[1] + len(found[0])], yes_no, choices or "ABCDEFGHIJ", choices) is None:
            found = _last_step(text, afterwords=True)  # nothing stated before the check: it is the answer
    if found is None:
        return _prose_answer(text, yes_no, choices=choices), False
    last, at = found
    if not text[: at + len(last)].strip():
        return _prose_answer(text, yes_no, choices=choices), False
    before = text[:at]
    named_before = _named_answer(before, yes_no, choices) if before.strip() else None
    named_last = _named_answer(last, yes_no, choices)
    if named_before is not None and named_last is not None:  # named twice: the last, unless it corrects the first
        return (named_before, True) if corrects(last, named_before, named_last) else (named_last, False)
    if named_before is not None or named_last is not None:  # named once: it stands, unless what follows corrects it
        named, later = (named_last, text[at + len(last) :]) if named_last is not None else (named_before, text[at:])
        return named, corrects(later, named, None)  # type: ignore[arg-type]
    if choices:  # a bare choice, then what explains it ("B\n\nThe radius is 6, …"), or another bare choice
        line = before.strip().rsplit("\n", 1)[-1]
        letter = bare_answer(line, choices) if 0 < len(line) < 24 else None
        if letter is not None and len(letter.strip("()[]. ")) == 1:
            again = bare_answer(last, choices)
            if again is None:  # an explanation; two answers only if it gives another as the answer
                other = answer_choice(last, choices)
                return letter, other is not None and other != letter.strip("()[]. ")
            if again.strip("()[]. ") != letter.strip("()[]. ") and len(again.strip("()[]. ")) == 1:
                return f"{letter}, {again}", True  # "B\n\nC": two choices
    own = _prose_answer(last, yes_no, stated_only=True, choices=choices)  # a conclusion of its own
    if own is not None or not before.strip():
        return own if own is not None else _prose_answer(last, yes_no, choices=choices), False
    line = _prose_answer(last, yes_no, choices=choices)  # its maths or last line, reduced to what it states
    earlier = None if _states_a_value(line, last, yes_no) else stated_before(before, yes_no, choices or "ABCDEFGHIJ", choices)
    return (earlier, False) if earlier is not None else (line, False)


#: A sentence that supposes ("if you exclude …, there would be 6"): never the answer.
_SUPPOSED = re.compile(r"\b(?:if|would|could|might|assum\w*|suppos\w*)\b", re.IGNORECASE)
#: A sentence that opens as an aside ("Also, …", "For comparison, …", "Except for Sunday, …").
_OPENS_ASIDE = re.compile(r"\W*(?:also|but|however|for\s+(?:comparison|example|instance)|in\s+comparison|except"
                          r"|note|remember|initially|by\s+the\s+way)\b", re.IGNORECASE)
#: Words that make a sentence an aside rather than an answer, unless its claim ends on its value.
_ASIDE_WORDS = re.compile(r"\b(?:also|note|possible|possibly|but|except|excluding|besides|comparison)\b", re.IGNORECASE)
#: What frames a claim without being it: "With 10 rows, …", "…, excluding the 5 rotten ones, …".
_FRAMING = re.compile(r"^(?:with|including|excluding|after|besides|not\s+counting|without|counting|adding)\b[^,]*,\s*",
                      re.IGNORECASE)
_PARENTHETICAL = re.compile(r",\s*(?:excluding|including|not\s+counting|without|besides|plus|minus)\b[^,]*,",
                            re.IGNORECASE)
_ENDS_ON_VALUE = re.compile(r"\s(?:is|are|was|were|equals|be|has|have|had)\s+(?:about\s+|only\s+|exactly\s+)?"
                            r"\$?[-+]?\d[\d,.]*\$?(?:\s*[^\s.!?,;]+)?\s*[.!]?\s*$", re.IGNORECASE)
_CHAIN_END = re.compile(r"=\s*\$?[-+]?\d[\d,.]*\$?(?:\s*[^\s.!?,;]+)?\s*[.!]?\s*$")
_RELATIVE_CLAUSE = re.compile(r",\s*which\b.*$")
_LAST_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def _states_a_value(reading: str | None, step: str, yes_no: bool) -> bool:
    """Does a last step whose reading is ``reading`` state the answer, over a conclusion before
    it? A short line does ("12", "No.", "C. quadrilateral"), as does a yes/no verdict, a chain
    that ends on its value ("Distance = 20 × 2 = 40 km."), a claim that ends on its one value
    once its framing is set aside ("With 10 rows, the hall has 90 seats.", "The total,
    excluding the 5 rotten ones, is 85.") and a sentence with one value and no aside ("There
    are 12 apples."). A supposition never does ("… there would be 6."), nor an aside ("For
    comparison, last year the total was 20."), nor a breakdown ("Each of the 3 rows has 4
    apples.", "That is 12 from Monday plus 12 from Tuesday.")."""
    if reading is None:
        return False
    line = step.strip().splitlines()[-1] if step.strip() else ""
    if len(reading.split()) <= 3 and _unreduced(reading, step):
        return True
    if yes_no and YES_NO_LEAD.match(reading) is not None:  # "No, the two differ."
        return True
    line = _LAST_SENTENCE.split(line.strip())[-1]  # "However, I missed one. The total is 13.": its last sentence
    if _SUPPOSED.search(line) or _OPENS_ASIDE.match(line):
        return False
    main = _RELATIVE_CLAUSE.sub("", line)  # "…, which is also the number of tiles": a restatement
    if _CHAIN_END.search(main):
        return True
    claim = _PARENTHETICAL.sub("", _FRAMING.sub("", main))
    if len(DIGITS.findall(claim)) == 1 and _ENDS_ON_VALUE.search(claim):
        return True
    if _ASIDE_WORDS.search(line):
        return False
    values = DIGITS.findall(ASIDE.sub(" ", line) if "(" in line else line)
    return len(values) == 1 and plain_form(reading, None) is not None


def _unreduced(reading: str, step: str) -> bool:
    """Is ``reading`` the step's last line as it stands (no value read out of it)? A sentence
    so read states nothing of its own; a short line ("12", "No.", "C. quadrilateral") is an
    answer, and the caller tells them apart by length."""
    lines = step.strip().splitlines()
    return bool(lines) and reading.strip().rstrip(".!") == lines[-1].strip().strip('"').rstrip(".!").strip()


_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n\s*")


def _last_step(text: str, afterwords: bool = False) -> tuple[str, int] | None:
    """The last step of ``text`` that can hold its answer and where it starts: the built-in
    step reader's last step of the last paragraph that has one (a list item, a ``Step N:``
    line, a header's section, or the paragraph), closing lines, pauses and paragraphs of
    checks or notes (:data:`_AFTERWORD`) dropped unless ``afterwords``. Only the end is split:
    this runs per rollout."""
    ends = [(m.start(), m.end()) for m in _PARAGRAPH_BREAK.finditer(text)]
    bounds = [0, *(e for _, e in ends)], [*(s for s, _ in ends), len(text)]
    for start, end in zip(reversed(bounds[0]), reversed(bounds[1])):
        block = text[start:end]
        if start and not afterwords and _AFTERWORD.match(block):
            continue
        for piece in reversed(split_structured(block)):
            if not (_CLOSER.fullmatch(piece) or _PAUSE.fullmatch(piece)):
                return piece, start + block.rfind(piece)
    return None


#: A step with nothing to read: a pause or a note to self ("Wait.", "Hmm...", "Let me check.").
_PAUSE = re.compile(r"[\W_]*(?:(?:no,?\s+|oh,?\s+)?wait|hmm+|sorry|oops|actually|hold\s+on|let\s+me\s+(?:re)?"
                    r"(?:check|verify|double-check|think|see)(?:\s+(?:again|this|that))?)[\W_]*", re.IGNORECASE)
#: A paragraph after the answer that checks or explains it: "Check: 15 / 3 = 5", "To verify: …",
#: "**Explanation:** …", "Note: …". Its numbers are not the answer.
_AFTERWORD = re.compile(r"[\s#*_>-]*(?:(?:sanity\s+)?check(?:ing)?|verif(?:y|ication|ying)|to\s+verify|double[-\s]?check"
                        r"(?:ing)?|note|explanation|reasoning|justification|breakdown|proof|why)\b[^\n]{0,20}?[:：]",
                        re.IGNORECASE)
#: A closing line that answers nothing: a pleasantry ("Hope this helps!", "Let me know if you
#: have any other questions about the 6x7 grid.", "Thanks!"), a rule or fence alone ("---"),
#: emoji alone; not "***12***", nor "[]" or "∅" (answers).
_CLOSER = re.compile(r"[-*_`~=\s]{3,}|[\s\U0001F300-\U0001FAFF\u2600-\u27BF\uFE0F\u200D]+|[\s*_]{0,8}(?:(?:i\s+)?hope\s+(?:this|that|it|my)\b|thanks?(?:\s+you)?"
                     r"(?:\s+for\b|\W*$)|good\s+luck\W*$|happy\s+to\s+help\b|is\s+there\s+anything\s+else\b"
                     r"|(?:if\s+you\s+have\s+(?:any\s+)?(?:more|other|further)\s+questions|let\s+me\s+know|feel\s+free)\b)"
                     r"[^\n]{0,160}", re.IGNORECASE)


def stated_before(text: str, yes_no: bool, letters: str, choices: str = "") -> str | None:
    """The answer ``text`` states outright (a box, ``Answer:``, "the answer is", "Therefore",
    or a last line that is only an answer: ``B.``, ``12.``), or None: a working value on a
    last line is no answer to take back. ``letters``: those a bare answer may be; ``choices``: a
    multiple-choice question's (:func:`value_stated`)."""
    bare = bare_answer(text.strip().rsplit("\n", 1)[-1], letters)
    if bare is not None:
        return bare
    if "\\boxed" in text or "\\fbox" in text:
        boxes = all_boxed(text)
        return boxes[-1][1] if boxes else None
    return _prose_answer(text, yes_no, stated_only=True, choices=choices)
