"""Choice letters: which choice an answer names (``the count is (C) 80`` → ``(C) 80``) and
whether it names several (``B and C``, ``A. No wait, B.``), which a one-choice gold would
reward as a lucky guess."""

from __future__ import annotations

import re

from prmtree.engine.answers.marks import strip_answer


#: ``(C)`` inside a sentence: a parenthesised choice letter.
PAREN_LETTER = re.compile(r"(?<![A-Za-z\\])\(([A-Za-z])\)")
#: ``B is correct``, ``option B``, ``choice (B)``: a capital letter named as the choice.
NAMED_LETTER = re.compile(
    r"\b(?:option|choice)\s+\(?([A-Z])\)?(?![A-Za-z])|(?<![A-Za-z'])([A-Z])\s+is\s+(?:the\s+)?"
    r"(?:correct|right|valid|true|best|answer)\b"
)
#: Several choices named as the answer. Letters alone: ``B and C``, ``A, B``, ``(A) and (B)``,
#: ``B plus C``, ``A B``.
_LETTERS_ONLY = re.compile(
    r"^[\s(\[]*[A-Z][)\].]?(?:(?:[\s,;&/+]|\band\b|\balso\b|\bplus\b|\bas\s+well\s+as\b)+[(\[]?[A-Z][)\].]?)+[\s.]*$")
#: ... one taken back: ``A. No wait, B.``, ``B. Correction: C.``
_CORRECTED = re.compile(
    r"(?i:\b(?:no,?\s+wait|wait(?:,?\s+no)?|actually|correction|sorry|i\s+mean|hmm|on\s+second\s+thought))\b"
    r"[\s,:]*[(\[]?([A-Z])[)\]]?[\s.!]*$")
LEAD_LETTER = re.compile(r"^[\s(\[]*([A-Z])(?:[)\].:]|\s|$)")
#: ... or, the options' texts taken out, letters at the start or after a separator, each
#: followed by punctuation or the end: ``A) 3 and B) 12``, ``(A) Insects, (D) Mouse``.
_LISTED_LETTER = re.compile(r"(?:^|[,;&/]|\band\b|\bor\b)\s*[(\[]?([A-Z])(?:[)\]]|[.:](?=\s|$)|(?=\s*(?:[,;]|$)))")
#: A gold naming several choice letters (a multi-select question: ``AC``, ``A, C``; not ``DNA``).
LETTERS_GOLD = re.compile(r"^\W*[A-H](?:\W*[A-H])+\W*$")
_REJECTING = re.compile(r"\b(?:not|wrong|incorrect|false|isn't|aren't|doesn't|don't|while|whereas|but|since|because|"
                        r"unlike|rather\s+than|instead\s+of)\b", re.IGNORECASE)
SINGLE_LETTER = re.compile(r"^\s*[(\[]?[A-Z][)\].]?\s*$")
_TEXT_COMMAND = re.compile(r"\\text\{\s*([^{}]*?)\s*\}")


def choice_in(answer: str, options: object) -> str:
    """``The count is (C) 80`` → ``(C) 80``; ``Because B is valid`` → ``B``: the choice a
    sentence names, for multiple-choice problems. An answer that is an option's text or a
    bare letter is kept as it is."""
    letters = option_keys(options) or "ABCDEFGHIJ"
    t = strip_answer(answer)
    if len(t) <= 3:
        return answer
    for m in PAREN_LETTER.finditer(t):
        if m.group(1).upper() in letters:  # the first: "(D) (a)" is D
            return t[m.start() :].strip() if m.start() > 0 else answer
    for m in NAMED_LETTER.finditer(t):
        letter = m.group(1) or m.group(2)
        if letter in letters:
            return letter
    return answer


def option_keys(options: object) -> str:
    if isinstance(options, dict):
        return "".join(str(k).strip("()[]. ").upper()[:1] for k in options)
    if isinstance(options, (list, tuple)):
        return "".join(chr(65 + i) for i in range(min(len(options), 26)))
    return ""


def several_choices(answer: str, options: object = None) -> bool:
    """Does ``answer`` name more than one choice (``B and C``, ``A, B``, ``A. No wait, B.``)?
    A single-choice problem's gold is one of them, so such an answer would be right by luck.
    An option's own text never counts (``(D) Both A and B``); without options the letters are
    A to H (``B. I and II`` names B)."""
    letters = set(option_keys(options) or "ABCDEFGH")
    t = strip_answer(answer[:300])  # a list of choices is short: its opening is read
    if "\\text" in t:
        t = _TEXT_COMMAND.sub(r" \1 ", t)
    t = t.replace(")(", ") (")
    if _LETTERS_ONLY.match(t):
        return len(set(re.findall(r"[A-Z]", t)) & letters) > 1
    corrected, lead = _CORRECTED.search(t), LEAD_LETTER.match(t)
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


def option_text(options: object, letter: str) -> str | None:
    """The text of the option ``letter`` names (its key read as :func:`option_keys` reads it)."""
    at = option_keys(options).find(letter)
    if at < 0:
        return None
    values = list(options.values()) if isinstance(options, dict) else list(options)  # type: ignore[call-overload]
    return str(values[at]).strip()
