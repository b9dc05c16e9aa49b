"""Reading the answer out of model text.

A completion ends in a ``\\boxed{}``, an ``Answer:`` line or just a last line; and the
answer itself comes wrapped in ``$…$``, ``\\text{}`` or ``The answer is …``. Both are
taken off here, before anything compares the answer with the gold one.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Any

from prmtree.engine.steps import split_structured

_ANSWER_LINE = re.compile(r"(?im)^[ \t*]*(?:final[ \t]+)?answer[ \t*]*[:：][ \t*]*(.+?)[ \t*]*$")
_ANSWER_PREFIX = re.compile(
    r"^(?:so,?\s+)?(?:the\s+)?(?:correct\s+|final\s+|best\s+)?(?:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*",
    re.IGNORECASE,
)
_WRAPPERS = (
    "\\boxed", "\\text", "\\textbf", "\\textit", "\\textrm", "\\textnormal", "\\mathrm", "\\mathbf", "\\mbox", "\\fbox",
)


def last_boxed(text: str) -> str | None:
    """Contents of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = start + 1
    while i < len(text) and text[i].isalpha():
        i += 1
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text) or text[i] != "{":
        return None
    j = closing_brace(text, i)
    return None if j is None else text[i + 1 : j].strip()  # None: unbalanced, truncated output


def closing_brace(text: str, i: int) -> int | None:
    """The index of the ``}`` that closes the ``{`` at ``text[i]``; None when it never closes."""
    depth = 0
    for j in range(i, len(text)):
        ch = text[j]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return j
    return None


def extract_answer(text: str) -> str | None:
    """The final answer written in ``text``: last ``\\boxed{}``, else ``Answer:``, else last line.

    Returns ``None`` when the text is empty or the box is unterminated.
    """
    if not text or not text.strip():
        return None
    if "\\boxed" in text or "\\fbox" in text:
        boxed = last_boxed(text)
        return boxed if boxed else None
    matches = _ANSWER_LINE.findall(text)
    if matches:
        return matches[-1].strip() or None
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()
    return None


def _brace_pairs(text: str) -> dict[int, int]:
    """Every ``{`` index -> the index of its matching ``}`` (unclosed ones absent), in one pass."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for i, ch in enumerate(text):
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            pairs[stack.pop()] = i
    return pairs


def _unwrap(text: str) -> str:
    """The answer without what merely surrounds it: whitespace, ``$…$``, ``\\(…\\)``,
    ``\\[…\\]``, and a ``\\boxed{}``/``\\text{}``-like command around the whole of it.

    Linear in the length: the layers are peeled by moving two indices over the text, and
    braces are matched once (a model's ``\\text{`` nested 20,000 deep once took a minute of
    the event loop when each layer rescanned and copied the rest)."""
    lo, hi = 0, len(text)
    pairs: dict[int, int] | None = None
    while True:
        while lo < hi and text[lo].isspace():
            lo += 1
        while hi > lo and text[hi - 1].isspace():
            hi -= 1
        before = (lo, hi)
        if hi - lo >= 2 and text[lo] == "$" and text[hi - 1] == "$":
            lo, hi = lo + 1, hi - 1
        elif hi - lo >= 4 and text[lo : lo + 2] in ("\\(", "\\[") and text[hi - 2 : hi] in ("\\)", "\\]"):
            lo, hi = lo + 2, hi - 2
        elif lo < hi and text[lo] == "\\":
            for command in _WRAPPERS:
                brace = lo + len(command)
                if brace < hi and text.startswith(command + "{", lo):
                    if pairs is None:
                        pairs = _brace_pairs(text)
                    if pairs.get(brace) == hi - 1:
                        lo, hi = brace + 1, hi - 1
                    break
        if (lo, hi) == before:
            return text[lo:hi]


def _strip_answer(text: str) -> str:
    """``The answer is (B).`` → ``(B)``: what models write around a short answer."""
    t = _unwrap(text).strip("*").strip()
    t = _ANSWER_PREFIX.sub("", t)
    t = _unwrap(t)
    return t[:-1].rstrip() if t.endswith(".") and len(t) > 1 else t



# --------------------------------------------------------------------------- find_answer
#
# Every pattern below is linear: no nested quantifiers over the same characters, and each
# scan runs once over the text (the driver calls this on its event loop, per rollout).

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


#: ``No, it is not.``: a yes/no word, then punctuation, a bracket, a line break or a clause
#: restating it; ``no idea`` is not ``no``, ``yes or no`` is neither, nor are ``no-one``
#: and ``No. 7`` (a word and a number).
_YES_NO_LEAD = re.compile(
    r"^[*_\s]*(yes|no)\b[*_]*(?:\s*[,;:!?()\[\]]|\s*\.(?!\s*\d)|\s*[\u2014\u2013-](?!\w)|\s*$|\s*\n|"
    r"\s+(?:it|it's|its|they|there|this|that|the|he|she|we|i|you|these|those|because|since)\b)", re.IGNORECASE)
#: Where a stated answer ends: a sentence end, a line end, or "I hope it is correct".
_SENTENCE_END = re.compile(r"\.(?:\s|$)|\n|\s*I\s+hope\s+it\s+is\s+correct", re.IGNORECASE)
#: ``… the count is (C) 80``: the verb after which the stated value comes.
_COPULA = re.compile(r"\s(?:is|are|was|were|equals|=|would\s+be|will\s+be|becomes)\s", re.IGNORECASE)
#: Inline or display maths: ``$…$``, ``$$…$$``, ``\(…\)``, ``\[…\]``.
_MATH_SPAN = re.compile(r"\$\$(.+?)\$\$|\$([^$]+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
#: ``(C)`` inside a sentence: a parenthesised choice letter.
_PAREN_LETTER = re.compile(r"(?<![A-Za-z\\])\(([A-Za-z])\)")
#: ``B is correct``, ``option B``, ``choice (B)``: a capital letter named as the choice.
_NAMED_LETTER = re.compile(
    r"\b(?:option|choice)\s+\(?([A-Z])\)?(?![A-Za-z])|(?<![A-Za-z'])([A-Z])\s+is\s+(?:the\s+)?"
    r"(?:correct|right|valid|true|best|answer)\b"
)
#: Hedges: two choices offered (``A or B``, ``B/C``), or doubt stated.
_HEDGE_LETTERS = re.compile(r"^\W*\(?[A-Z]\)?\s*(?:or|/|and/or)\s*\(?[A-Z]\)?\W*$")
_HEDGE_WORDS = re.compile(
    r"\b(?:either|not\s+sure|unsure|uncertain|can(?:no|')t\s+(?:tell|be\s+sure)|i\s+(?:think|guess)|"
    r"maybe|possibly|perhaps|probably)\b",
    re.IGNORECASE,
)
_NUMBER_IN_TEXT = re.compile(r"(?<!\S)[-+]?\d+(?:[.,]\d+)*(?:\s*%|\s+[a-z]+)?")
_LEAD_VALUE = re.compile(r"[-+]?\d+(?:[.,]\d+)*(?:\s*/\s*\d+)?(?:\s*%|\s+(?!which\b|and\b|or\b|so\b|because\b)[A-Za-z]+)?")
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
_NEGATED_VALUE = re.compile(
    r"\b(?:not|cannot|can't|can’t|isn't|isn’t|aren't|wasn't|weren't|doesn't|don't|didn't|won't|never|"
    r"no\s+longer)(?:\s+(?!(?:is|are|was|were|equals|be)\b)[A-Za-z']+)??\s+(?:be\s+)?[-+]?\$?\d",
    re.IGNORECASE)
_DIGITS = re.compile(r"\d+(?:[.,]\d+)*")
#: An aside in brackets (``5 (not counting the teacher)``): not what the sentence states.
_ASIDE = re.compile(r"\([^()]*\)")


def _denied(text: str) -> bool:
    """Does ``text`` deny its one value (``It can't be 5``)? With another value it states
    that one (``not 10, which is 1,000.99``); an aside in brackets denies nothing. Only the
    few words before the value are read: linear in the text."""
    low = text.lower()
    if "not" not in low and "n't" not in low and "n’t" not in low and "never" not in low and "no longer" not in low:
        return False  # the common case, without the patterns
    t = _ASIDE.sub(" ", text) if "(" in text else text
    numbers = _DIGITS.findall(t)
    if len(numbers) != 1:
        return False
    at = t.find(numbers[0])
    return bool(_NEGATED_VALUE.search(t[max(0, at - 48) : at + len(numbers[0])]))


#: A line that labels its value: "Total: 12", "Number of apples: 12".
_LABELLED = re.compile(r"[A-Za-z][\w ()'-]{0,40}[:：]\s*(\S.*)")
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
    :func:`_denied` reads it (a negation right before the value), and must deny the
    sentence's first value: ``12, not 8: 8 only counts …`` states 12. The cheap test first:
    this runs per rollout."""
    low = text.lower()
    if "not" not in low and "n't" not in low and "n’t" not in low and "never" not in low:
        return None
    denial = _NEGATED_VALUE.search(text)
    if denial is None:
        return None
    number = _DIGITS.match(text, denial.end() - 1)
    first = _DIGITS.search(text)
    if number is None or first is None or first.start() != number.start():
        return None
    after = _INSTEAD.match(text, number.end())
    if after is None or not _INSTEAD_CONNECTOR.search(text, number.end(), after.end()):
        return None
    rest = text[after.end() :].strip()
    value = _value(rest)
    # the value must end its clause: "but 7 is also wrong", "that's 7 less than 12", "7 - 2 = 5" state no 7
    return value if _CLAUSE_END.match(rest, len(value)) else None


#: ``4 \pi``, ``4 \sqrt 2``, ``12^2``, ``4(3)``, ``2 times the radius``: a number that only
#: opens an expression (a unit does not: ``12 \text{ cm}``, ``30^\circ``, ``3 times``, ``12 (cm)``).
_EXPRESSION_AFTER = re.compile(
    r"\s*\((?=\s*[-+\d\w\\])(?![^()]*?(?<![\\A-Za-z])[A-Za-z]{2})|\s*(?:\\(?:pi|sqrt|times|cdot|frac|dfrac|tfrac|sin|cos|tan|log|ln|pm|mp|div)(?![A-Za-z])"
    r"|[*×·]\s*(?=[\dA-Za-z(\\])|[π√]"
    r"|\^(?!\s*\{?\s*\\circ)|(?:plus|minus|divided\s+by|multiplied\s+by|squared|cubed)\b"
    r"|(?:times|over)\s+(?:the|a|an|its|his|her|their|this|that\b|[-+]?\d))", re.IGNORECASE)
_NUMBER_HEAD = re.compile(r"[-+]?\d+(?:[.,]\d+)*(?:\s*/\s*\d+)?")


def _opens_expression(text: str, at: int = 0) -> bool:
    """Whether the number at ``text[at:]`` only opens an expression (:data:`_EXPRESSION_AFTER`)."""
    head = _NUMBER_HEAD.match(text, at)
    return bool(head and _EXPRESSION_AFTER.match(text, head.end()))
#: A relative clause's ``is`` (``…, which is 3 squared``) restates; it does not state the answer.
_RESTATING = (" which", " what", ",which")
#: Several choices named as the answer. Letters alone: ``B and C``, ``A, B``, ``(A) and (B)``,
#: ``B plus C``, ``A B``.
_LETTERS_ONLY = re.compile(
    r"^[\s(\[]*[A-Z][)\].]?(?:(?:[\s,;&/+]|\band\b|\balso\b|\bplus\b|\bas\s+well\s+as\b)+[(\[]?[A-Z][)\].]?)+[\s.]*$")
#: ... one taken back: ``A. No wait, B.``, ``B. Correction: C.``
_CORRECTED = re.compile(
    r"(?i:\b(?:no,?\s+wait|wait(?:,?\s+no)?|actually|correction|sorry|i\s+mean|hmm|on\s+second\s+thought))\b"
    r"[\s,:]*[(\[]?([A-Z])[)\]]?[\s.!]*$")
_LEAD_LETTER = re.compile(r"^[\s(\[]*([A-Z])(?:[)\].:]|\s|$)")
#: ... or, the options' texts taken out, letters at the start or after a separator, each
#: followed by punctuation or the end: ``A) 3 and B) 12``, ``(A) Insects, (D) Mouse``.
_LISTED_LETTER = re.compile(r"(?:^|[,;&/]|\band\b|\bor\b)\s*[(\[]?([A-Z])(?:[)\]]|[.:](?=\s|$)|(?=\s*(?:[,;]|$)))")
#: A gold naming several choice letters (a multi-select question: ``AC``, ``A, C``; not ``DNA``).
_LETTERS_GOLD = re.compile(r"^\W*[A-H](?:\W*[A-H])+\W*$")
_REJECTING = re.compile(r"\b(?:not|wrong|incorrect|false|isn't|aren't|doesn't|don't|while|whereas|but|since|because|"
                        r"unlike|rather\s+than|instead\s+of)\b", re.IGNORECASE)
_SINGLE_LETTER = re.compile(r"^\s*[(\[]?[A-Z][)\].]?\s*$")
_TEXT_COMMAND = re.compile(r"\\text\{\s*([^{}]*?)\s*\}")
#: A claim's reason (``…, since 23 = 4·5 + 3``, ``… when x = 2``): its values are not the answer.
_JUSTIFICATION = re.compile(r"[,;]?\s+\(?(?:since|because|as|given|when|where|whereas|while|if|due\s+to)\b",
                            re.IGNORECASE)
_LEADING_JUSTIFICATION = re.compile(r"^\s*(?:since|because|as|given(?:\s+that)?|if|when|where|with)\b[^,]*,", re.IGNORECASE)
#: A consequence: the value after it is the one concluded (``the radius is 3, so the area is 28.27``).
_COPULA_ADVERB = re.compile(r"(?:therefore|thus|hence|consequently)\b,?\s*", re.IGNORECASE)
#: A sentence that opens with its reason and no comma to end it: its last value is the claim's.
_LEADING_REASON = re.compile(r"^\s*(?:since|because|given\s+that)\b(?![^,]*,)", re.IGNORECASE)
_CONSEQUENCE = re.compile(r"\b(?:so|thus|therefore|hence|yields?|we\s+(?:get|have|find|obtain))\b", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think\s*>", re.IGNORECASE)
_SPECIAL_TOKEN = re.compile(r"<\|[^|<>]{1,40}\|>")
#: A value (or choice letter), then an aside about it in words: ``3 (three)``, ``12, not 13``,
#: ``B, not C``, ``**12**``; not ``3(2+1)`` or ``2 (\\sqrt{2})``, products, nor ``5 (or 6)``, a hedge.
_VALUE_ASIDE = re.compile(
    r"^[*_`]*(\$?[-+]?\d[\d,.]*(?:\s*%|\s+[A-Za-z]+)?\$?|[(\[]?[A-Z][)\]]?)[*_`]*"
    r"(?:\s+\((?![^()]*\\)(?![^()]*\b(?i:or|maybe|perhaps|possibly|probably|sure|certain)\b)(?=[^()]*[A-Za-z]{3})[^()]*\)"
    r"|\s*[,;]\s*\(?not\s+(?:\$?[-+]?\d|[(\[]?[A-Z]\b)[^()]*\)?|[*_`]+)\s*\.?$")
#: What lies between two values of one chain (``f(2) = 4 + 8 = 12``): the later one is the answer.
_CHAIN = re.compile(r"[\s\d.+\-*/×÷()^]*$")

#: Characters of prose read for a stated answer (from the end); bounds the driver's CPU per rollout.
_SCAN = 4_000


@dataclass(frozen=True)
class Found:
    """What :func:`find_answer` read: the ``answer`` (None: none found) and, when the text
    may not be graded, why (``refused``: ``"no answer"``, ``"hedged"``, ...)."""

    answer: str | None
    refused: str | None = None


def all_boxed(text: str) -> list[tuple[int, str]]:
    """``(end, contents)`` of every ``\\boxed{…}``/``\\fbox{…}`` in order, braces balanced; an
    unterminated last box (truncated output) ends the list. One pass over the text."""
    found: list[tuple[int, str]] = []
    n = len(text)
    search = _BOX_COMMAND.search
    m = search(text)
    while m is not None:
        i = m.end()  # past "\\boxed"/"\\fbox": the rest of the command's letters, then spaces
        while i < n and text[i].isalpha():
            i += 1
        while i < n and text[i] == " ":
            i += 1
        if i >= n or text[i] != "{":
            m = search(text, i)
            continue
        close = text.find("}", i + 1)
        if close < 0:
            return found  # unbalanced: truncated output
        if text.find("{", i + 1, close) >= 0:  # nested braces: match them one by one
            j = closing_brace(text, i)
            if j is None:
                return found  # unbalanced: truncated output
            close = j
        found.append((close + 1, text[i + 1 : close].strip()))
        m = search(text, close + 1)
    return found


_BOX_COMMAND = re.compile(r"\\boxed|\\fbox")


@functools.lru_cache(maxsize=1 << 12)
def _top_level_parts(text: str) -> int:
    """How many comma-separated parts ``text`` has outside brackets (a set's braces opened)."""
    t = _unwrap(text)
    for opener, closer in (("\\{", "\\}"), ("{", "}")):
        if t.startswith(opener) and t.endswith(closer):
            t = t[len(opener) : -len(closer)]
            break
    depth, parts = 0, 1
    for ch in t:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts += 1
    return parts


def _stated(text: str) -> str:
    """What a phrase states, up to its sentence's end (``$10,455$. I hope…`` → ``$10,455$``).
    Maths spans are kept whole: a ``.`` inside ``$…$`` does not end the sentence. One pass."""
    t = text.lstrip()[:_SCAN]
    end = dollars = opens = closes = 0
    for m in _SENTENCE_END.finditer(t):
        cut = m.start()
        chunk = t[end:cut]
        dollars += chunk.count("$")
        opens += chunk.count("\\[")
        closes += chunk.count("\\]")
        end = cut
        if dollars % 2 == 0 and opens == closes:
            stated = t[:cut].strip()
            if stated:
                return stated
    return t.strip()


def _reduce(sentence: str, yes_no: bool = False) -> str:
    """The answer a sentence states: after its ``is``/``=`` a value (``The largest $n$ is
    34.`` → ``34``, ``The count is (C) 80.`` → ``(C) 80``), else its last maths span
    (``Therefore $x \\geq 5$ is the solution``), else its one number (``increases by
    100%``), else the sentence. For a yes/no question (``yes_no``), a sentence that opens
    with its verdict (``No, it is smaller.``) states that verdict: it is kept whole, for
    the comparison to read (its "is" names the reason, not the answer)."""
    s = sentence.strip().strip('"').replace('\\"', "").strip().rstrip(".").strip()
    if _HEDGE_WORDS.search(s):  # "not sure, maybe 12": kept whole, and refused as hedged
        return s
    if yes_no and _YES_NO_LEAD.match(s):
        return s
    if _denied(s):  # "It can't be 5": kept whole, and refused as no answer
        return s
    label = _LABELLED.fullmatch(s)
    if label and _bare_answer(label.group(1), "ABCDEFGHIJ") is not None:  # "Total: 12", "Area: 12 cm"
        return label.group(1).strip()
    instead = _stated_instead(s)
    if instead is not None:  # "It isn't 5; it's 7": the value stated instead
        return instead
    if s[:1].isdigit() or s[:1] in "$-+":
        reason = _JUSTIFICATION.search(s, 1)
        if reason and not _COPULA.search(s, 0, reason.start()):  # "4, because x = 2": the value, not its reason
            return _value(s[: reason.start()].strip(" ,;"))
    copulas = list(_COPULA.finditer(s))
    stated = _stated_value(s, copulas)
    if stated is not None:
        return stated
    spans = list(_MATH_SPAN.finditer(s))
    if spans:
        inner = next(g for g in spans[-1].groups() if g is not None).strip()
        if inner:
            return inner
    if copulas:
        rest = s[copulas[-1].end() :].strip()
        if rest:
            return rest
    numbers = list(_NUMBER_IN_TEXT.finditer(s))
    if len(numbers) == 1 and len(s.split()) > 3:
        if not _opens_expression(s, numbers[0].start()):  # "4 \\pi square cm" is no number
            return numbers[0].group(0).strip()
    return s


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
        return _value(s[found[0][1] :].strip())  # a hedge ("2 or x = -2") is kept whole there
    lead = _LEADING_JUSTIFICATION.match(s)
    if lead is None and _LEADING_REASON.match(s):  # "Because the side is 3 the hypotenuse is 5"
        cut = _JUSTIFICATION.search(s, 1)
        claimed = [f for f in found if cut is None or f[0] < cut.start()] or found
        return _value(s[claimed[-1][1] :].strip())
    start = lead.end() if lead else 0
    cut = _JUSTIFICATION.search(s, start + 1)
    end = cut.start() if cut else len(s)
    found = [f for f in found if start <= f[0] < end] or found
    chosen, previous = None, 0
    for copula, at in found:
        rest = s[at:].strip()
        if _HEDGE_OR.match(rest) or _VALUE_OR_VALUE.match(rest):
            return rest
        # a later value wins after a consequence ("so the area is", "is therefore"), or closing a
        # chain of values ("f(2) = 4 + 8 = 12", "the square whose side is 3 is 9")
        if chosen is None or _CONSEQUENCE.search(s, previous, at) or _CHAIN.match(s, previous, copula):
            chosen = rest
        previous = at
    return _value(chosen)  # type: ignore[arg-type]


def _value(rest: str) -> str:
    """``0.6, which means …`` → ``0.6``; ``12 distinct sequences that …`` → ``12 distinct``:
    a value and at most one word after it; maths and choices are kept whole; markdown
    emphasis around it (``**5**``) is not part of it."""
    if not rest:
        return rest
    if rest[0] in "*_`":
        return _value(rest.lstrip("*_`")).strip("*_`")
    if rest[:1] in "$\\([":
        spans = _MATH_SPAN.match(rest)
        if spans:
            return next(g for g in spans.groups() if g is not None).strip()
        return rest
    if _HEDGE_OR.match(rest) or _VALUE_OR_VALUE.match(rest):  # "12 or 13": kept whole, and refused as hedged
        return rest
    if _opens_expression(rest):  # "4 \\pi square cm": an expression, kept whole
        return rest
    m = _LEAD_VALUE.match(rest)
    return m.group(0).strip() if m else rest


def _first_answer(text: str) -> int | None:
    """Where "answer" first stands in ``text`` (0 when case folding may move offsets), or None:
    the patterns that name the answer (:data:`_ANSWER_LINE`, :data:`_FINAL_PHRASE`) all hold
    the word, and they try every position (~80 us per 2 KB of prose), so they start near it."""
    if not text.isascii():  # case folding may change lengths: no offsets from it
        return 0 if "answer" in text.casefold() else None
    first = text.lower().find("answer")
    return None if first < 0 else first


def _last_phrase(text: str, first: int | None) -> re.Match[str] | None:
    """The last :data:`_FINAL_PHRASE` in ``text``, whose first "answer" is at ``first``."""
    if first is None:
        return None
    start = first
    for _ in range(2):  # back over the (at most two) words a phrase opens with: "the correct answer"
        while start > 0 and text[start - 1].isspace():
            start -= 1
        while start > 0 and text[start - 1].isalpha():
            start -= 1
    last = None
    for last in _FINAL_PHRASE.finditer(text, start):  # noqa: B007 (the last is kept)
        pass
    return last


def _answer_lines(text: str, first: int | None) -> list[str]:
    """Every :data:`_ANSWER_LINE` in ``text``, whose first "answer" is at ``first``: one is
    read from its line's start, so the search starts at the start of that word's line."""
    return [] if first is None else _ANSWER_LINE.findall(text, text.rfind("\n", 0, first) + 1)


def _named_answer(text: str, yes_no: bool = False) -> str | None:
    """The answer ``text`` names outright: its last ``Answer:`` line, else its last ``the answer
    is …`` phrase, reduced to what it states; None without either."""
    first = _first_answer(text)
    lines = _answer_lines(text, first)
    if lines and lines[-1].strip():
        line = lines[-1].strip()
        return _reduce(line, yes_no) if len(line.split()) > 3 or _MATH_SPAN.search(line) else line
    phrase = _last_phrase(text, first)
    if phrase is not None:  # the last one: "Final Answer: The final answer is 7" states 7
        stated = _stated(text[phrase.end() :])
        if stated:
            return _reduce(stated, yes_no) if len(stated.split()) > 3 else stated
        spans = list(_MATH_SPAN.finditer(text, phrase.start()))
        if spans:  # "Answer \[ 9 \]": the maths after the phrase
            return _reduce(spans[-1].group(0))
    return None


def _prose_answer(text: str, yes_no: bool = False, stated_only: bool = False) -> str | None:
    """Only the text's last ``_SCAN`` characters are read: a final answer is stated at the end.
    An answer stated in prose, nothing boxed: an ``Answer:`` line, then the last ``the
    answer is …`` phrase, then the last ``Therefore, …`` sentence, then (not ``stated_only``)
    the maths the text ends on or its last line; each reduced to what it states (a whole last
    line is never taken blindly)."""
    text = text[-_SCAN:]
    named = _named_answer(text, yes_no)
    if named is not None:
        return named
    conclusion = _last_conclusion(text)
    if conclusion is not None:
        stated = _stated(text[conclusion:])
        if stated:
            return _reduce(stated, yes_no)
    if stated_only:
        return None
    tail = text.rstrip()
    spans = list(_MATH_SPAN.finditer(tail)) if tail.rstrip(" .,;:!").endswith(("$", ")", "]")) else None
    if spans and not tail[spans[-1].end() :].strip(" .,;:!"):  # the text ends on maths
        return _reduce(spans[-1].group(0))
    for line in reversed(text.splitlines()):
        if line.strip() and not _CLOSER.fullmatch(line):
            return _reduce(line, yes_no)
    return None


def _read_prose(text: str, yes_no: bool = False) -> tuple[str | None, bool]:
    """A prose answer read as a reader reads a solution, from its end: closing lines, pauses
    and checks or notes after the answer dropped ("Hope this helps!", "Wait.", "Check: 15 / 3
    = 5", "Note: …", "Explanation: …").

    The last ``Answer:`` line or "the answer is" phrase wins; a later step that corrects it
    ("Wait, I made an error. The count is 13.") makes two answers: ``(answer, True)``. With
    none, the last step's own conclusion or stated value wins over a working "Therefore, x =
    3." before it ("Therefore, x = 3.\n\nThe count is 12." is 12), but a last line that states
    no value of its own ("In total we counted 6 rows and 7 columns.") leaves that conclusion."""
    text = text[-_SCAN:]
    found = _last_step(text) if "\n" in text.strip() else None
    if found is not None and text[found[1] + len(found[0]) :].strip() and _AFTERWORD.search(text, found[1]):
        if _prose_answer(text[: found[1] + len(found[0])], yes_no, stated_only=True) is None:
            found = _last_step(text, afterwords=True)  # nothing stated before the check: it is the answer
    if found is None:
        return _prose_answer(text, yes_no), False
    last, at = found
    if not text[: at + len(last)].strip():
        return _prose_answer(text, yes_no), False
    before = text[:at]
    named_before = _named_answer(before, yes_no) if before.strip() else None
    named_last = _named_answer(last, yes_no)
    if named_before is not None and named_last is not None:  # named twice: the last, unless it corrects the first
        return (named_before, True) if _corrects(last, named_before, named_last) else (named_last, False)
    if named_before is not None or named_last is not None:  # named once: it stands, unless what follows corrects it
        named, later = (named_last, text[at + len(last) :]) if named_last is not None else (named_before, text[at:])
        return named, _corrects(later, named, None)  # type: ignore[arg-type]
    own = _prose_answer(last, yes_no, stated_only=True)  # a conclusion of its own
    if own is not None or not before.strip():
        return own if own is not None else _prose_answer(last, yes_no), False
    line = _prose_answer(last, yes_no)  # its maths or last line, reduced to what it states
    earlier = None if _states_a_value(line, last, yes_no) else _stated_before(before, yes_no, "ABCDEFGHIJ")
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
    if yes_no and _YES_NO_LEAD.match(reading) is not None:  # "No, the two differ."
        return True
    line = _LAST_SENTENCE.split(line.strip())[-1]  # "However, I missed one. The total is 13.": its last sentence
    if _SUPPOSED.search(line) or _OPENS_ASIDE.match(line):
        return False
    main = _RELATIVE_CLAUSE.sub("", line)  # "…, which is also the number of tiles": a restatement
    if _CHAIN_END.search(main):
        return True
    claim = _PARENTHETICAL.sub("", _FRAMING.sub("", main))
    if len(_DIGITS.findall(claim)) == 1 and _ENDS_ON_VALUE.search(claim):
        return True
    if _ASIDE_WORDS.search(line):
        return False
    values = _DIGITS.findall(_ASIDE.sub(" ", line) if "(" in line else line)
    return len(values) == 1 and _answer_kind(reading, None) is not None


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
#: A step that corrects an answer named before it: a retraction or an admitted error ("Wait",
#: "Actually", "Let me recount", "I made an error", "On second thought"); not "However", "a
#: common mistake", "error bars" or "I double-checked", which comment on a right answer.
_CORRECTING = re.compile(r"\b(?:wait|actually|correction|correct\s+myself|(?:i\s+)?made\s+(?:a|an)\s+(?:\w+\s+)?"
                         r"(?:error|mistake)|my\s+(?:error|mistake|bad)|re-?count\w*|re-?examin\w*|looking\s+again"
                         r"|on\s+second\s+thought|i\s+missed|overlooked|oops|sorry|hmm+)\b", re.IGNORECASE)
#: ... unless it only supposes ("if the hidden face were counted it would be 5", "this assumes …").
_SUPPOSING = re.compile(r"\b(?:if|would|assum\w*|suppos\w*|often|could|might|note)\b", re.IGNORECASE)
_NUMBER_IN_STEP = re.compile(r"(?<![\w.])[-+]?\d+(?:,\d{3})*(?:\.\d+)?(?![\w.]*\d)")
_YES_NO_IN_STEP = re.compile(r"\b(yes|no)\b(?!\s+(?:one|longer|more|other|matter|doubt))", re.IGNORECASE)


def _corrects(step: str, named: str, named_again: str | None) -> bool:
    """Does ``step``, after an answer ``named`` outright, correct it: a correcting word, no
    supposing, and another answer of the same kind (``named_again``, the step's own named
    answer, else its last number, choice letter or yes/no)? "Wait, let me double-check: 3 × 4
    = 12." after 12 corrects nothing."""
    if not _CORRECTING.search(step) or _SUPPOSING.search(step):
        return False
    kind = _answer_kind(named, None)
    if kind is None:
        return False
    if named_again is not None:
        again = _answer_kind(named_again, None)
        return again is not None and again[0] == kind[0] and _another_answer(named, named_again, None)
    if kind[0] == "number":  # one other number stated: "Wait, I think it's 13."; not "3 baskets of 4 apples"
        others = {float(n.replace(",", "")) for n in _NUMBER_IN_STEP.findall(step)}
        others = {n for n in others if not math.isclose(n, kind[1][0], rel_tol=1e-9)}  # type: ignore[index]
        return len(others) == 1
    if kind[0] == "letter":
        letters = [m.group(1) or m.group(2) for m in _NAMED_LETTER.finditer(step)]
        letters += [m.group(1) for m in _PAREN_LETTER.finditer(step) if m.group(1).isupper()]
        letters += re.findall(r"\b(?:is|fits?|be)\s+\(?([A-H])\)?(?![\w'])", step)
        return bool(letters) and letters[-1] != kind[1]
    words = _YES_NO_IN_STEP.findall(step)  # yes/no
    return bool(words) and words[-1].lower() != kind[1]


#: A closing line that answers nothing: a pleasantry ("Hope this helps!", "Let me know if you
#: have any other questions about the 6x7 grid.", "Thanks!"), a rule or fence alone ("---"),
#: emoji alone; not "***12***", nor "[]" or "∅" (answers).
_CLOSER = re.compile(r"[-*_`~=\s]{3,}|[\s\U0001F300-\U0001FAFF\u2600-\u27BF\uFE0F\u200D]+|[\s*_]{0,8}(?:(?:i\s+)?hope\s+(?:this|that|it|my)\b|thanks?(?:\s+you)?"
                     r"(?:\s+for\b|\W*$)|good\s+luck\W*$|happy\s+to\s+help\b|is\s+there\s+anything\s+else\b"
                     r"|(?:if\s+you\s+have\s+(?:any\s+)?(?:more|other|further)\s+questions|let\s+me\s+know|feel\s+free)\b)"
                     r"[^\n]{0,160}", re.IGNORECASE)


def hedged(answer: str, gold: str = "") -> bool:
    """Does ``answer`` hedge between several answers (``A or B``, ``3 or 4``) or state doubt
    (``not sure``), where ``gold`` does not? Long answers (an option's text) are not read
    for ``or``."""
    a = _strip_answer(answer) if len(answer) < 500 else answer
    if _HEDGE_LETTERS.match(a):
        return True
    if len(a) < 100 and _HEDGE_WORDS.search(a) and not _HEDGE_WORDS.search(gold):
        return True
    return len(a) < 100 and bool(_HEDGE_OR.match(a) or _VALUE_OR_VALUE.match(a)) and not _OR.search(gold)


def choice_in(answer: str, options: object) -> str:
    """``The count is (C) 80`` → ``(C) 80``; ``Because B is valid`` → ``B``: the choice a
    sentence names, for multiple-choice problems. An answer that is an option's text or a
    bare letter is kept as it is."""
    letters = _option_keys(options) or "ABCDEFGHIJ"
    t = _strip_answer(answer)
    if len(t) <= 3:
        return answer
    for m in _PAREN_LETTER.finditer(t):
        if m.group(1).upper() in letters:  # the first: "(D) (a)" is D
            return t[m.start() :].strip() if m.start() > 0 else answer
    for m in _NAMED_LETTER.finditer(t):
        letter = m.group(1) or m.group(2)
        if letter in letters:
            return letter
    return answer


def _option_keys(options: object) -> str:
    if isinstance(options, dict):
        return "".join(str(k).strip("()[]. ").upper()[:1] for k in options)
    if isinstance(options, (list, tuple)):
        return "".join(chr(65 + i) for i in range(min(len(options), 26)))
    return ""


def reasoning_markup(text: str) -> bool:
    """Whether ``text`` carries a reasoning model's tags (``<think>``, ``</think>``,
    ``<answer>``): one scan for ``<`` on the common path (it runs per rollout)."""
    return "<" in text and ("think>" in text or "</think" in text or "<answer>" in text)


def final_part(text: str) -> str | None:
    """The part of ``text`` that answers: after a reasoning model's last ``</think>`` (a box
    inside the trace is a guess it went on to test; nothing after it: the trace's own), inside
    its last non-empty ``<answer>…</answer>``; None when the output opens a ``<think>`` that
    never closes (cut off mid-thought: no answer yet); any other text as it is."""
    closes = list(_THINK_CLOSE.finditer(text)) if "</" in text else []
    if closes:
        tail = text[closes[-1].end() :]
        if "<|" in tail:  # chat special tokens (<|im_end|>) are no answer
            tail = _SPECIAL_TOKEN.sub("", tail)
        if tail.strip():
            text = tail
        else:  # nothing after the trace: its own answer, without its opening tag
            text = text[: closes[-1].start()]
            text = text[text.rfind("<think>") + len("<think>") :] if "<think>" in text else text
    elif _SPECIAL_TOKEN.sub("", text).lstrip().startswith("<think>"):  # opened the output and never closed
        return None
    if "<answer>" in text:
        blocks = [b.split("</answer>", 1)[0] for b in text.split("<answer>")[1:]]
        found = next((b for b in reversed(blocks) if b.strip()), None)
        # every block empty: the text around them (which may state the answer, or nothing)
        return found if found is not None else text.replace("<answer>", " ").replace("</answer>", " ")
    return text


#: A gold answer that names more than one answer (``A or B``, ``yes or no``, ``either … or …``)
#: or doubts itself (``not sure``).
_HEDGED_GOLD = re.compile(  # choice letters are capitals: ``x/y`` and ``m/s`` are answers
    r"^\s*(?:\(?[A-Z]\)?\s*(?i:or|/)\s*\(?[A-Z]\)?|(?i:yes\s*(?:or|/)\s*no|no\s*(?:or|/)\s*yes"
    r"|either\s.+\sor\s.+|not\s+sure|unsure|i\s+don'?t\s+know))\s*\.?\s*$",
)
_OPEN_BRACE = re.compile(r"(?<!\\)\{")
_CLOSE_BRACE = re.compile(r"(?<!\\)\}")


def gold_problem(gold: str) -> str | None:
    """Why a gold answer's text cannot judge anything, or None: it hedges between choices or
    doubts itself (a model hedging the same way would be right: ``A or B``, ``not sure``),
    says there is no answer (``N/A``), or is cut off (unbalanced braces: ``\\frac{1}{``).
    One rule for the run's input and for :func:`prmtree.grade`."""
    text = gold.strip()
    if text.lower() in ("n/a", "n.a."):
        return "says there is no answer: give the gold answer, or drop the row"
    if _HEDGED_GOLD.match(text):
        return "is hedged (more than one answer): give the one gold answer"
    if len(_OPEN_BRACE.findall(text)) != len(_CLOSE_BRACE.findall(text)):  # ``\\{`` is a set's brace
        return "has unbalanced braces (cut off?): give the whole gold answer"
    return None


def several_choices(answer: str, options: object = None) -> bool:
    """Does ``answer`` name more than one choice (``B and C``, ``A, B``, ``A. No wait, B.``)?
    A single-choice problem's gold is one of them, so such an answer would be right by luck.
    An option's own text never counts (``(D) Both A and B``); without options the letters are
    A to H (``B. I and II`` names B)."""
    letters = set(_option_keys(options) or "ABCDEFGH")
    t = _strip_answer(answer[:300])  # a list of choices is short: its opening is read
    if "\\text" in t:
        t = _TEXT_COMMAND.sub(r" \1 ", t)
    t = t.replace(")(", ") (")
    if _LETTERS_ONLY.match(t):
        return len(set(re.findall(r"[A-Z]", t)) & letters) > 1
    corrected, lead = _CORRECTED.search(t), _LEAD_LETTER.match(t)
    if corrected and lead and corrected.group(1) != lead.group(1) and {corrected.group(1), lead.group(1)} <= letters:
        return True
    texts = _option_texts(options)
    if not texts or _REJECTING.search(t):  # "B. Options A, C, D do not fit": one choice, others ruled out
        return False
    for text in texts:  # longest first: an option's text may hold another's
        if text in t:  # (a pattern per option only where it can match: this runs per rollout)
            t = re.sub(r"(?<!\w)" + re.escape(text) + r"(?!\w)", " ", t)
    return len({m.group(1) for m in _LISTED_LETTER.finditer(t)} & letters) > 1


def _option_texts(options: object) -> list[str]:
    values = options.values() if isinstance(options, dict) else options if isinstance(options, (list, tuple)) else ()
    return sorted({str(v).strip() for v in values if str(v).strip()}, key=len, reverse=True)


def find_answer(text: str, gold: str = "", options: object = None, choice: bool = False,
                markup: bool | None = None) -> Found:
    """The final answer in ``text``, for a problem whose gold answer is ``gold``.

    Boxes first: several boxes make one set/tuple answer when the gold has several parts,
    else the last box counts; but a final-answer phrase (``Final Answer: …``, ``the answer
    is …``) after the last box wins over boxed working values. Nothing boxed: the answer
    stated in prose (:func:`_prose_answer`). With ``options`` (or ``choice``), a choice
    named inside a sentence is read out (:func:`choice_in`). A hedged answer is refused. A
    reasoning model's answer is read after its ``</think>`` (:func:`final_part`); ``markup``:
    whether the text has its tags, when the caller checked already.
    """
    if text and (reasoning_markup(text) if markup is None else markup):
        text = final_part(text)  # type: ignore[assignment]
        if text is None:
            return Found(None, "unfinished reasoning")
    if not text or text.isspace():
        return Found(None, "no answer")
    answer: str | None
    boxes = all_boxed(text) if ("\\boxed" in text or "\\fbox" in text) else []
    if boxes:
        tail = text[boxes[-1][0] :][-_SCAN:]
        phrase = _last_phrase(tail, _first_answer(tail))
        stated = _stated(tail[phrase.end() :]) if phrase else ""
        if stated:
            answer = _unwrap(_reduce(stated, _is_yes_no(gold)) if len(stated.split()) > 3 else stated)
        else:
            contents = [c for c in dict.fromkeys(c for _, c in boxes) if c] if len(boxes) > 1 else ()
            if len(contents) > 1 and gold and _top_level_parts(gold) > 1:
                answer = ", ".join(contents)
            else:
                answer = boxes[-1][1] or None
    elif "\\boxed" in text or "\\fbox" in text:
        return Found(None, "unterminated box")
    else:
        answer, corrected = _read_prose(text, _is_yes_no(gold))
        if corrected:  # "The answer is 12.\n\nLet me recount: there are 13.": two answers given
            return Found(answer.strip(), "hedged")  # type: ignore[union-attr]
    if answer:
        taken = retracted(text, answer, gold, options)  # "The answer is 12. Wait, actually 13.": two answers
        if taken is not None:
            return taken if taken.refused else read_answer_memo(taken.answer, gold, options, choice)
    return read_answer_memo(answer, gold, options, choice)


#: A last sentence that takes the stated answer back and states another in its place:
#: ``Wait, actually 13.``, ``Wait, no, it's 13.``, ``Hmm, that's wrong; it's 13``, ``No, 13.``,
#: ``Correction: C``, ``Sorry, I mean x = 13``, ``Actually, $13$ is correct.``, ``Or 13.``
_RETRACTION = re.compile(
    r"[\s*_]*(?:(?:(?:no,?\s+|oh,?\s+)?wait|hmm+|hold\s+on|actually|correction|sorry|oops|i\s+mean|on\s+second\s+thought"
    r"|no(?=\s*,)|or)\b(?:[\s,:;!.*_\u2014\u2026]|-(?!\s*\d))*)+"
    r"(?:no[,.!]?\s+(?=\S))?(?:(?:that(?:'s|’s|\s+is)|this\s+is)\s+(?:wrong|incorrect|not\s+right)[,;:.!]?\s*)?"
    r"(?:(?:it(?:'s|’s|\s+is|\s+should\s+be|\s+must\s+be)|the\s+(?:final\s+)?answer\s+is"
    r"|(?:that\s+|it\s+)?should\s+be|make\s+that|i\s+meant?)\s+)?(?:[a-z]\s*=\s*)?"
    r"(.*?)(?:\s+(?:is\s+(?:correct|right|the\s+answer)|instead))?[\s.!?*_]*", re.IGNORECASE | re.DOTALL)
_RETRACTION_LEADS = ("wait", "no", "oh", "hmm", "hold on", "actually", "correction", "sorry", "oops", "i mean",
                     "on second", "or")
#: End-of-text tokens after the last sentence (``<|im_end|>``, ``</s>``, ``<end_of_turn>``, ``<｜end▁of▁sentence｜>``).
_TRAILING_TOKENS = re.compile(r"(?:\s*<[|｜]?/?[^<>\s]{1,40}[|｜]?>)+\s*$")
_MATHS_VALUE = re.compile(r"^(?:\$\$([^$]*)\$\$|\$([^$]*)\$|\\\((.*)\\\)|\\\[(.*)\\\])$", re.DOTALL)
_ASSIGNED = re.compile(r"^[A-Za-z]\s*=\s*")
_OPTION_NAMED = re.compile(r"^(?:option|choice)\s+([A-Z])$|^[(\[]?([A-Z])[)\].]\s+\S.*$")


def says_nothing(step: str, found: Found) -> bool:
    """Is ``found``, read from a solution's last ``step``, that step as it stands, with no value
    or choice in it (``Wait``, ``Hope this helps!``)? Then the answer is the whole text's,
    as :func:`prmtree.grade` reads it (``… the answer is 12.\n\nWait`` is 12)."""
    answer = found.answer
    if answer is None or found.refused is not None or len(step) > 200:
        return False
    if answer.strip().rstrip(".!") != step.strip().rstrip(".!") or _ANY_DIGIT.search(step):
        return False  # (the common case: something was read out of the step)
    return _bare_answer(answer, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") is None


_ANY_DIGIT = re.compile(r"\d")


def _bare_answer(text: str, letters: str) -> str | None:
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
    if _SINGLE_LETTER.match(t):
        return t if t.strip("()[]. ") in letters else None
    named = _OPTION_NAMED.match(t)
    if named:
        letter = named.group(1) or named.group(2)
        return letter if letter in letters else None
    if t.lower() in ("yes", "no"):
        return t
    if _LEAD_VALUE.fullmatch(t) or _FRACTION_PARTS.fullmatch(t):
        return t
    return None




def _retraction(text: str, letters: str) -> tuple[int, str] | None:
    """The text's last sentence when it takes an answer back for another value or choice
    (``Wait, actually 13.``, ``Correction: C``): where it starts (the end of the sentence
    before it) and the answer it states. Only a sentence that *is* the new answer counts:
    ``Wait, let me check: 3 × 4 = 12`` and ``Actually, 3 of them are red`` state no new
    answer; nor does an earlier sentence. A few string scans on the common path (per rollout)."""
    body = text.rstrip()
    if body.endswith(">"):  # end-of-text tokens: the retraction is the sentence before them
        body = _TRAILING_TOKENS.sub("", body)
    body = body.rstrip(" \t\n.!?*_\u2026")
    cut = max(body.rfind("\n"), body.rfind(". "), body.rfind("! "), body.rfind("? "), body.rfind("\u2026 "))
    start = cut + 1
    if not body[start : start + 24].lstrip(" \t*_").lower().startswith(_RETRACTION_LEADS):
        return None
    m = _RETRACTION.fullmatch(body + ".", start)
    if m is None:
        return None
    new = _bare_answer(m.group(1), letters)
    return None if new is None else (max(cut, 0), new)


_PLAIN_NUMBER = re.compile(r"([-+]?\d{1,3}(?:(?:,\d{3})+|(?: \d{3})+)(?:\.\d+)?|[-+]?\d+(?:\.\d+)?)(?:\s+([A-Za-z]+))?")


def _answer_kind(answer: str, options: object) -> tuple[str, object] | None:
    """An answer as far as a retraction compares it: a choice letter (with the option whose
    text is that value), a plain number with its unit word, yes/no; None for anything else
    (``twelve``, ``10^3``, ``\\sqrt{4}``, ``3,5``: not compared, so never called a change)."""
    a = _ASSIGNED.sub("", _strip_answer(answer).strip().strip("$").strip())
    lead = _LEAD_LETTER.match(a)
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


def _another_answer(before: str, new: str, options: object) -> bool:
    """Is ``new`` clearly another answer than ``before``: two different choices (an option's
    letter and its value are one), two different numbers in the same unit, yes and no?
    Anything not plainly comparable (``x=12`` and ``12`` aside) is not called a change."""
    one, other = _answer_kind(before, options), _answer_kind(new, options)
    if one is None or other is None:
        return False
    if one[0] != other[0]:  # a letter and a value: the same when that option's text is the value
        letter, value = (one, other) if one[0] == "letter" else (other, one)
        if letter[0] != "letter" or value[0] != "number":
            return False
        text = _option_text(options, letter[1])  # type: ignore[arg-type]
        option = _answer_kind(text, None) if text is not None else None
        return option is not None and option[0] == "number" and option[1][0] != value[1][0]  # type: ignore[index]
    if one[0] == "number":
        (a, unit_a), (b, unit_b) = one[1], other[1]  # type: ignore[misc]
        return (unit_a is None or unit_b is None or unit_a == unit_b) and not math.isclose(a, b, rel_tol=1e-9)
    return one[1] != other[1]


def _stated_before(text: str, yes_no: bool, letters: str) -> str | None:
    """The answer ``text`` states outright (a box, ``Answer:``, "the answer is", "Therefore",
    or a last line that is only an answer: ``B.``, ``12.``), or None: a working value on a
    last line is no answer to take back."""
    bare = _bare_answer(text.strip().rsplit("\n", 1)[-1], letters)
    if bare is not None:
        return bare
    if "\\boxed" in text or "\\fbox" in text:
        boxes = all_boxed(text)
        return boxes[-1][1] if boxes else None
    return _prose_answer(text, yes_no, stated_only=True)


def _option_text(options: object, letter: str) -> str | None:
    """The text of the option ``letter`` names (its key read as :func:`_option_keys` reads it)."""
    at = _option_keys(options).find(letter)
    if at < 0:
        return None
    values = list(options.values()) if isinstance(options, dict) else list(options)  # type: ignore[call-overload]
    return str(values[at]).strip()


def retracted(text: str, answer: str, gold: str = "", options: object = None) -> Found | None:
    """``text`` whose last sentence takes back the answer it stated for another (``The answer
    is 12. Wait, actually 13.``): refused as hedged, since right either way would reward
    guessing twice. The same answer again (``12. Actually, 12.0.``, ``C. Actually, 12.`` where
    C is 12), or one not plainly comparable with it, takes nothing back. With no answer stated
    before it, the retraction's answer is the answer (``Step 1: 3·4 = 12. Actually, 13.`` is
    13). None: no retraction."""
    letters = _option_keys(options) or "ABCDEFGH"
    found = _retraction(text, letters)
    if found is None:
        return None
    start, new = found
    cut = start + 1 if text[start : start + 1] in (".", "!", "?") else start  # (a full stop is the statement's)
    before = _stated_before(text[:cut], _is_yes_no(gold), letters)
    if before is None:
        return Found(new)
    return Found(answer.strip(), "hedged") if _another_answer(before, new, options) else None


def _is_yes_no(gold: str) -> bool:
    """Is ``gold`` a yes/no verdict (its answer may then open a sentence: ``No, it is not.``)?"""
    return len(gold) < 8 and gold.strip().strip(".*_").lower() in ("yes", "no")


#: Answers (and golds) longer than this are read afresh each time rather than memoised.
_MEMO_CHARS = 256
_MEMO_SIZE = 1 << 15


def read_answer_memo(answer: str | None, gold: str = "", options: object = None, choice: bool = False) -> Found:
    """:func:`read_answer`, memoised by its arguments: it is pure, and a run reads the same few
    answers (``B``, ``12``, ``\\frac{1}{2}``) for the same gold again and again, where its
    choice and hedge patterns cost microseconds per rollout. Long answers and options that
    cannot be a key are read afresh."""
    if (answer is None or type(answer) is not str or type(gold) is not str or type(choice) is not bool
            or len(answer) > _MEMO_CHARS or len(gold) > _MEMO_CHARS):
        return read_answer(answer, gold, options, choice)
    if options is None:
        okey: Any = None
    elif type(options) is dict and all(type(k) is str for k in options):  # keys read as text
        okey = ("dict", tuple(options.items()))
    elif type(options) in (list, tuple):
        okey = ("seq", tuple(options))
    else:
        return read_answer(answer, gold, options, choice)
    try:
        return _read_keyed(answer, gold, okey, choice)
    except TypeError:  # unhashable option values
        return read_answer(answer, gold, options, choice)


@functools.lru_cache(maxsize=_MEMO_SIZE)
def _read_keyed(answer: str, gold: str, okey: Any, choice: bool) -> Found:
    options = None if okey is None else dict(okey[1]) if okey[0] == "dict" else okey[1]
    return read_answer(answer, gold, options, choice)


def read_answer(answer: str | None, gold: str = "", options: object = None, choice: bool = False) -> Found:
    """``answer`` (already the final answer) as it is graded: a choice named inside a
    sentence read out (``options`` given, or ``choice``); refused: a hedged answer, several
    choices for a one-choice gold, a value the answer denies (``not 5``)."""
    answer = answer.strip() if answer else None
    if not answer:
        return Found(None, "no answer")
    gold = gold if isinstance(gold, str) else str(gold)
    one_choice = bool(options or choice or _SINGLE_LETTER.match(gold))
    if one_choice and not _LETTERS_GOLD.match(gold.strip()) and several_choices(answer, options):
        return Found(answer, "hedged")
    if (not one_choice and len(answer) < 300 and _denied(answer) and not _NEGATED_VALUE.search(gold)
            and not _is_yes_no(gold)):
        return Found(None, "negated")  # "It can't be 5", "not 5 apples": no value stated
    if options or choice:
        answer = choice_in(answer, options)
    aside = _VALUE_ASIDE.match(answer)
    if aside:  # "3 (three)", "12, not 13", "**12**": the value
        answer = aside.group(1)
    if hedged(answer, gold):
        return Found(answer, "hedged")
    return Found(answer)
