"""Choice letters: which choice an answer names (``the count is (C) 80`` → ``(C) 80``) and
whether it names several (``B and C``, ``A. No wait, B.``), which a one-choice gold would
reward as a lucky guess."""

from __future__ import annotations

import functools
import re

from prmtree.engine.answers.kinds import _clean_options
from prmtree.engine.answers.marks import strip_answer


#: ``(C)`` inside a sentence: a parenthesised choice letter.
PAREN_LETTER = re.compile(r"(?<![A-Za-z\\])\(([A-Za-z])\)")
#: ``B is correct``, ``option B``, ``choice (B)``: a capital letter named as the choice.
NAMED_LETTER = re.compile(
    r"\b(?i:option|choice)\s+\(?([A-Z])\)?(?![A-Za-z])|(?<![A-Za-z'])([A-Z])\s+is\s+(?:the\s+)?"
    r"(?:correct|right|valid|true|best|answer)\b"
)
#: Several choices named as the answer. Letters alone: ``B and C``, ``A, B``, ``(A) and (B)``,
#: ``B plus C``, ``A B``.
_LETTERS_ONLY = re.compile(
    r"^[\s(\[]*[A-Z][)\].]?(?:(?:[\s,;&/+]|\band\b|\balso\b|\bplus\b|\bas\s+well\s+as\b)+[(\[]?[A-Z][)\].]?)+[\s.]*$")
#: ... one taken back: ``A. No wait, B.``, ``B. Correction: C.``
_CORRECTED = re.compile(
    r"(?i:\b(?:no,?\s+wait|wait(?:,?\s+no)?|actually|correction|sorry|i\s+mean|hmm|on\s+second\s+thought))\b"
    r"[\s,:.!]*[(\[]?([A-Z])[)\]]?[\s.!]*$")
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
    """``The count is (C) 80`` → ``(C) 80``; ``Because B is valid`` → ``B``; ``Sample B has
    the higher temperature`` → ``B`` where B is "sample B" (:func:`_option_named`): the choice
    a sentence names, for multiple-choice problems. An answer that is an option's text or a
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
    if " " in t and options:
        return _option_named(t, options) or answer
    return answer


#: An option of words only (ScienceQA's "sample B", "neither; the samples have the same
#: temperature"): one a sentence may state in passing. Numbers, signs and maths are read by
#: the value readers, not found inside a sentence.
_WORD_OPTION = re.compile(r"[A-Za-z][A-Za-z'’\-\s,;:.()]*")
_TWO_LETTERS = re.compile(r"[A-Za-z]{2}")
#: What a sentence's option is compared in: lower-case words, a clause's punctuation as "|".
_CLAUSE_MARK = re.compile(r"\s*[,;:\u2014\u2013]\s*")
_NOT_WORD = re.compile(r"[^\w'|]+")
#: A sentence that opens with a choice letter marked as one: "A: …", "(A) …", "A, because …" (not "A plant …").
_MARKED_LEAD = re.compile(r"[\s*_]*(?:\(\s*[A-Za-z]\s*\)|\[[A-Za-z]\]|[A-Z][*_]*(?:[).:,\]]|$))")
#: Words before an option that open a clause: "So sample B …", "Thus, the Moon …".
_LEAD_WORDS = frozenset("so thus hence therefore then clearly finally overall a an the".split())
#: Words that state the option closing a sentence: "It's sample B.", "The answer is the Moon.";
#: not "… hotter than sample B", "… points to sample B".
_COPULAS = frozenset("is are was were be it's that's choose chose pick picked select selected option choice".split())
#: What keeps a sentence from choosing the option it names: a negation, a contrast, a
#: condition, a doubt, another choice, a question ("It is not sample B.", "If sample B were
#: heated", "Maybe sample B", "Sample B or neither", "Sample B?").
_NOT_CHOSEN = re.compile(
    r"\b(?:not|no|never|neither|nor|none|nothing|cannot|without|except|wrong|incorrect|false|untrue|unlike|rather"
    r"|instead|but|whereas|while|although|though|however|if|unless|whether|or|either|both|also|equally|maybe|perhaps"
    r"|possibly|probably|likely|unlikely|might|could|unsure|uncertain|sure|think|guess|believe|doubt|same|equal"
    r"|identical|than)\b|n't\b")


def _option_named(sentence: str, options: object) -> str | None:
    """The letter of the one option a sentence states in its words ("Sample B has the higher
    temperature." where B is "sample B"): options of words only, one of them named (an option
    inside a longer named one is that one: "sample A" in "sample A and B"), opening a clause
    or stated at the sentence's end ("It is sample B."), and nothing that takes it back or
    compares ("It is not sample B.", "Maybe sample B", "sample A and sample B are equal",
    "… hotter than sample B", "Sample B? …"). None otherwise, and for a sentence that is just
    the option's text (the caller compares that as it is)."""
    if len(sentence) > 300 or "\n" in sentence or "?" in sentence or ". " in sentence.rstrip(". "):
        return None
    if _MARKED_LEAD.match(sentence):
        return None  # "A: sample B", "A, because it is sample B": its letter is read, and checked against its text
    is_dict = isinstance(options, dict)
    try:
        table = _word_options(tuple(options.items()) if is_dict else tuple(options), is_dict)  # type: ignore
    except TypeError:  # unhashable option values
        return None
    if not table:
        return None
    words = f" {_clause_words(sentence)} "
    found: str | None = None
    rest, named = words, ""
    for letter, option in table:  # longest first: a named option's words are no other's
        if option in rest:
            if found is not None:
                return None  # two options named
            found, named = letter, option
            while option in rest:  # (" x x ": replace() skips an occurrence that shares a space)
                rest = rest.replace(option, " ")
    if found is None or rest.strip(" |") == "" or _NOT_CHOSEN.search(rest):
        return None
    at = words.find(named)
    while at >= 0:  # (a rare second time: "In sample B the particles …, so sample B …")
        before = words[:at].split()
        while before and before[-1] in _LEAD_WORDS:
            before.pop()
        if not before or before[-1] == "|":
            return found
        if before[-1] in _COPULAS and not words[at + len(named) :].strip(" |"):
            return found
        at = words.find(named, at + 1)
    return None


def _clause_words(text: str) -> str:
    """``Thus, Sample B’s`` → ``thus | sample b's``: lower-case words, clauses marked."""
    t = _CLAUSE_MARK.sub(" | ", text.lower().replace("’", "'").replace("*", " "))
    return " ".join(_NOT_WORD.sub(" ", t).split())


@functools.lru_cache(maxsize=1 << 12)
def _word_options(raw: tuple, is_dict: bool) -> tuple[tuple[str, str], ...]:
    """``((letter, " words "), …)``, longest first, where every option is words (else ``()``:
    a set with numbers or maths in it is not read this way, nor a yes/no one)."""
    table = []
    for letter, text in _clean_options(dict(raw) if is_dict else raw).items():
        text = text.strip()
        if not _WORD_OPTION.fullmatch(text) or not _TWO_LETTERS.search(text):
            return ()
        words = _clause_words(text).split()
        while words and words[0] in ("a", "an", "the"):
            words.pop(0)
        if not words:
            return ()
        table.append((letter, f" {' '.join(words)} "))
    if len(table) < 2 or {w.strip() for _, w in table} <= {"yes", "no"}:
        return ()
    return tuple(sorted(table, key=lambda row: len(row[1]), reverse=True))


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


#: A sentence that opens with its choice and goes on: "B. The radius is 6.", "A: 12 cm", "(B)
#: because …", "B, since …", "A is correct because …" (its values are the reason, not the answer).
_LETTER_FIRST = re.compile(
    r"[\s*_]*(?:\(([A-Z])\)|\[([A-Z])\]|([A-Z]))[*_]*(?:[.:]\s+\S|,?\s+(?:because|since|as|given|due\s+to)\b"
    r"|\s+is\s+(?:the\s+)?(?:correct|right|best|true|answer)\b)")
#: ... its text, then the reason: "(B) 6 cm because the radius is 3 cm".
_LETTER_TEXT_REASON = re.compile(r"[\s*_]*(?:\(([A-Z])\)|([A-Z])[.)])[*_]*(\s+[^\s,;]+(?:\s+[^\s,;]+){0,2}?)"
                                 r",?\s+(?:because|since|as|given|due\s+to)\b")
#: ... followed by what may be an option's text: "A: 12 cm", "B. isosceles".
_LETTER_TEXT = re.compile(r"[\s*_]*(?:\([A-Z]\)|\[[A-Z]\]|[A-Z])[*_]*[.:]\s+(\S.*)$")
#: "I choose A.", "I'd go with B.", "I would say (C)": a choice made in words.
_CHOSEN = re.compile(r"\b(?:choose|chose|pick|select|go\s+with|going\s+with|say|opt\s+for)\s+(?:option\s+|choice\s+)?"
                     r"[(\[]?([A-Z])[)\]]?(?![\w'’])")
#: "Not B, so A.", "…, so B.", "So it must be B.": a choice concluded at the sentence's end.
_CONCLUDED = re.compile(r"(?:\b(?:so|thus|therefore|hence)[,:]?\s+|^)(?:it\s+(?:is|must\s+be)\s+|the\s+answer\s+is\s+)?"
                        r"(?:option\s+|choice\s+)?[(\[]?([A-Z])[)\]]?[.!]?\s*$", re.IGNORECASE)


def choice_stated(sentence: str, letters: str) -> str | None:
    """The choice (one of ``letters``) a sentence of a multiple-choice answer states before any
    value in it is read: its opening letter when a reason or text follows ("B because the
    radius is 6" is B, not 6), a letter it calls correct ("Among the choices, C is too large,
    so B is correct."), one chosen in words ("I'd go with B.") or concluded ("Not B, so A.");
    None without one (or with several named: those are refused as they stand)."""
    if not letters or several_choices(sentence, None):
        return None
    if len({m.group(1) for m in _LISTED_LETTER.finditer(sentence)} & set(letters)) > 1:
        return None  # "A. 8, B. 12": several listed, refused as they stand
    first = _LETTER_FIRST.match(sentence)
    if first is not None:
        letter = first.group(1) or first.group(2) or first.group(3)
        if letter in letters:
            text = _LETTER_TEXT.match(sentence)
            if text is not None and len(text.group(1).split()) <= 3:
                return sentence.strip()  # "A: 12 cm": the letter and its text, for the check to compare
            return letter
    with_text = _LETTER_TEXT_REASON.match(sentence)
    if with_text is not None and (with_text.group(1) or with_text.group(2)) in letters:
        return sentence[: with_text.end(3)].strip()  # "(B) 6 cm because …": the choice and its text
    for m in NAMED_LETTER.finditer(sentence):
        letter = m.group(1) or m.group(2)
        if letter in letters:
            return letter
    for pattern in (_CHOSEN, _CONCLUDED):
        m = pattern.search(sentence)
        if m is not None and m.group(1) in letters:
            return m.group(1)
    return None


def names_a_choice(text: str, letters: str) -> bool:
    """Does ``text`` name one of ``letters`` as a choice: opening with it (``B``, ``(B) 12``,
    ``B. text``), a parenthesised one inside (``the total is (C) 80``) or one named outright
    (``option A fits``, ``A is correct``)?"""
    lead = LEAD_LETTER.match(text)
    if lead and lead.group(1) in letters:
        return True
    if any(m.group(1) in letters for m in PAREN_LETTER.finditer(text)):
        return True
    return any((m.group(1) or m.group(2)) in letters for m in NAMED_LETTER.finditer(text))


#: Another choice offered as well: "C is also possible.", "But C could also be correct.", "C also works."
_ALSO_CHOICE = re.compile(r"(?<![\w'’])[(\[]?([A-Z])[)\]]?\s+(?:is|could|might|would|may)?\s*(?:be\s+)?(?:also|equally)\s+"
                          r"(?:be\s+)?(?:possible|correct|right|valid|works?|plausible|fine|true)\b")


def also_offered(text: str, answer: str, letters: str) -> bool:
    """Does ``text`` offer another of ``letters`` as well as the choice ``answer`` opens with
    ("The answer is B. C is also possible.")? Two choices: right by luck, whichever is graded."""
    if "also" not in text and "equally" not in text:
        return False
    lead = LEAD_LETTER.match(answer)
    if lead is None or lead.group(1) not in letters:
        return False
    return any(m.group(1) in letters and m.group(1) != lead.group(1) for m in _ALSO_CHOICE.finditer(text))


def answer_choice(sentence: str, letters: str) -> str | None:
    """The choice a sentence gives as the answer, not one it merely mentions: a letter called
    correct ("Actually, C is correct."), chosen ("I pick option C") or concluded ("so C.");
    "Option A (3 cm) is the radius." mentions A and answers nothing."""
    m = _CALLED_CORRECT.search(sentence)
    if m is not None and m.group(1) in letters:
        return m.group(1)
    for pattern in (_CHOSEN, _CONCLUDED):
        m = pattern.search(sentence)
        if m is not None and m.group(1) in letters:
            return m.group(1)
    return None


_CALLED_CORRECT = re.compile(r"(?<![A-Za-z'])(?:(?i:option|choice)\s+)?[(\[]?([A-Z])[)\]]?\s+(?:is|must\s+be)\s+(?:the\s+)?"
                             r"(?:correct|right|best|true|answer)\b")
