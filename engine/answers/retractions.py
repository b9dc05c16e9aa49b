"""An answer taken back: a last sentence that retracts the stated answer for another
(``Wait, actually 13.``, ``Correction: C``), and a later step that corrects an answer named
outright (``Wait, I made an error. The count is 13.``). Either makes two answers, refused as
hedged by :mod:`.extract`, since right either way would reward guessing twice."""

from __future__ import annotations

import math
import re

from prmtree.engine.answers.choices import NAMED_LETTER, PAREN_LETTER
from prmtree.engine.answers.sentences import copula_value
from prmtree.engine.answers.values import another_answer, bare_answer, plain_form


#: A step that corrects an answer named before it: a retraction or an admitted error ("Wait",
#: "Actually", "Let me recount", "I made an error", "On second thought"); not "However", "a
#: common mistake", "error bars" or "I double-checked", which comment on a right answer.
_CORRECTING = re.compile(r"\b(?:wait|actually|correction|correct\s+myself|(?:i\s+)?made\s+(?:a|an)\s+(?:\w+\s+)?"
                         r"(?:error|mistake)|my\s+(?:error|mistake|bad)|re-?count\w*|re-?examin\w*|looking\s+again"
                         r"|on\s+second\s+thought|i\s+missed|overlooked|oops|sorry|hmm+)\b", re.IGNORECASE)
#: ... unless it only supposes ("if the hidden face were counted it would be 5", "this assumes …").
_SUPPOSING = re.compile(r"\b(?:if|would|assum\w*|suppos\w*|often|could|might|note)\b", re.IGNORECASE)
_NUMBER_IN_STEP = re.compile(r"(?<![\w.])[-+]?\d+(?:,\d{3})*(?:\.\d+)?(?![\w.]*\d)")
_CHECKING = re.compile(r"\b(?:check\w*|verif\w*|confirm\w*|double-check\w*)\b", re.IGNORECASE)
_RATIO_IN_STEP = re.compile(r"(?<![\d:])(\d+)\s*:\s*(\d+)(?![\d:])")
_YES_NO_IN_STEP = re.compile(r"\b(yes|no)\b(?!\s+(?:one|longer|more|other|matter|doubt))", re.IGNORECASE)


def corrects(step: str, named: str, named_again: str | None) -> bool:
    """Does ``step``, after an answer ``named`` outright, correct it: a correcting word, no
    supposing, and another answer of the same kind (``named_again``, the step's own named
    answer, else its last number, choice letter or yes/no)? "Wait, let me double-check: 3 × 4
    = 12." after 12 corrects nothing."""
    if not _CORRECTING.search(step) or _SUPPOSING.search(step):
        return False
    kind = plain_form(named, None)
    if kind is None:
        return False
    if named_again is not None:
        again = plain_form(named_again, None)
        return again is not None and again[0] == kind[0] and another_answer(named, named_again, None)
    if kind[0] == "number":  # one other number stated: "Wait, I think it's 13."; not "3 baskets of 4 apples"
        others = {float(n.replace(",", "")) for n in _NUMBER_IN_STEP.findall(step)}
        others = {n for n in others if not math.isclose(n, kind[1][0], rel_tol=1e-9)}  # type: ignore[index]
        return len(others) == 1
    if kind[0] == "letter":
        letters = [m.group(1) or m.group(2) for m in NAMED_LETTER.finditer(step)]
        letters += [m.group(1) for m in PAREN_LETTER.finditer(step) if m.group(1).isupper()]
        letters += re.findall(r"\b(?:is|fits?|be)\s+\(?([A-H])\)?(?![\w'])", step)
        return bool(letters) and letters[-1] != kind[1]
    if kind[0] == "ratio":  # "The ratio is 2:3." after 3:2
        ratios = {(int(a), int(b)) for a, b in _RATIO_IN_STEP.findall(step)} - {kind[1]}
        return len(ratios) == 1
    words = _YES_NO_IN_STEP.findall(step)  # yes/no
    return bool(words) and words[-1].lower() != kind[1]


#: A last sentence that takes the stated answer back and states another in its place:
#: ``Wait, actually 13.``, ``Wait, no, it's 13.``, ``Hmm, that's wrong; it's 13``, ``No, 13.``,
#: ``Correction: C``, ``Sorry, I mean x = 13``, ``Actually, $13$ is correct.``, ``Or 13.``
_RETRACTION = re.compile(
    r"[\s*_]*(?:(?:(?:no,?\s+|oh,?\s+)?wait|hmm+|hold\s+on|actually|correction|sorry|oops|i\s+mean|on\s+second\s+thought"
    r"|edit|update|no(?=\s*,)|or)\b(?:[\s,:;!.*_\u2014\u2026]|-(?!\s*\d))*)+"
    r"(?:(?:looking\s+(?:at\s+it\s+)?again|(?:up)?on\s+(?:a\s+)?(?:closer\s+)?(?:look|inspection|review|reflection)"
    r"|let\s+me\s+(?:look|check)\s+again|re-?checking|i\s+think)\b[\s,:;!.*_]*)*"
    r"(?:no[,.!]?\s+(?=\S))?(?:(?:that(?:'s|’s|\s+is)|this\s+is)\s+(?:wrong|incorrect|not\s+right)[,;:.!]?\s*)?"
    r"(?:(?:it(?:'s|’s|\s+is|\s+should\s+be|\s+must\s+be)|the\s+(?:final\s+)?answer\s+is"
    r"|(?:that\s+|it\s+)?should\s+be|make\s+that|i\s+meant?)\s+)?(?:[a-z]\s*=\s*)?"
    r"(.*?)(?:\s+(?:is\s+(?:correct|right|the\s+answer)|instead))?[\s.!?*_]*", re.IGNORECASE | re.DOTALL)
_RETRACTION_LEADS = ("wait", "no", "oh", "hmm", "hold on", "actually", "correction", "sorry", "oops", "i mean",
                     "on second", "or", "edit", "update")
#: A retraction whose new answer is a yes/no verdict: ``Actually, no, that is a cat.``,
#: ``Wait, yes, there is a dog.`` (read only where no value or choice was stated instead).
_YES_NO_RETRACTION = re.compile(r"[\s*_]*(?:(?:(?:oh,?\s+)?wait|hold\s+on|actually|on\s+second\s+thought|edit)\b"
                                r"[\s,:;!.*_\u2014]*)+(yes|no)\b(?![\s,]*(?:wait|actually)\b)(?=\s*[,.;!\u2014-]|\s*$)",
                                re.IGNORECASE)
#: ... unless what follows the word confirms rather than reverses: "Actually, yes, I'm confident."
_CONFIRMING = re.compile(r"\b(?:right|correct|agree\w*|confident|sure|certain|indeed|exactly|matches|as\s+(?:i|stated|said)"
                         r"|counted\s+correctly|that'?s\s+it|confirm\w*|none|(?:double-?)?check\w*|verif\w*|stand\s+by|stick\s+with"
                         r"|keep|still)\b", re.IGNORECASE)
#: End-of-text tokens after the last sentence (``<|im_end|>``, ``</s>``, ``<end_of_turn>``, ``<｜end▁of▁sentence｜>``).
_TRAILING_TOKENS = re.compile(r"(?:\s*<[|｜]?/?[^<>\s]{1,40}[|｜]?>)+\s*$")


def last_retraction(text: str, letters: str, yes_no: bool = False) -> tuple[int, str] | None:
    """The text's last sentence when it takes an answer back for another value or choice
    (``Wait, actually 13.``, ``Correction: C``): where it starts (the end of the sentence
    before it) and the answer it states. Only a sentence that *is* the new answer counts:
    ``Wait, let me check: 3 × 4 = 12`` and ``Actually, 3 of them are red`` state no new
    answer; nor does an earlier sentence. One that states its value after an "is" or "=" does,
    unless it checks or supposes (``Wait, actually I double counted one; the total is 17``). A
    few string scans on the common path (per rollout). ``yes_no``: the question is answered
    yes or no, so a verdict reversed in words (``Actually, no, that is a cat.``) is one too."""
    body = text.rstrip().replace("\\$", "  ")  # an escaped dollar is a currency sign: "$\\$13$" states 13 (same length)
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
    new = bare_answer(m.group(1), letters)
    if new is None and not _CHECKING.search(m.group(1)) and not _SUPPOSING.search(m.group(1)):
        stated = copula_value(m.group(1))  # "Wait, actually I double counted one; the total is 17."
        new = bare_answer(stated, letters) if stated is not None else None
    if new is None and yes_no:
        verdict = _YES_NO_RETRACTION.match(body, start)  # "Actually, no, that is a cat."
        if verdict is not None and not _CONFIRMING.search(body, verdict.end()):
            new = verdict.group(1).lower()
    return None if new is None else (max(cut, 0), new)
