"""Reading the answer out of model text.

A completion ends in a ``\\boxed{}``, an ``Answer:`` line or just a last line; and the
answer itself comes wrapped in ``$…$``, ``\\text{}`` or ``The answer is …``. Both are
taken off here, before anything compares the answer with the gold one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
    depth = 0
    for j in range(i, len(text)):
        ch = text[j]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None  # unbalanced: truncated output


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


@dataclass(frozen=True)
class Found:
    """What :func:`find_answer` read: the ``answer`` (None: none found) and, when the text
    may not be graded, why (``refused``: ``"no answer"``, ``"hedged"``, ...)."""

    answer: str | None
    refused: str | None = None


def hedged(answer: str, gold: str) -> bool:
    """Does ``answer`` hedge between several answers (``A or B``), where ``gold`` does not?"""
    return False


def find_answer(text: str, gold: str = "", options: object = None) -> Found:
    """The final answer in ``text`` for a problem whose gold answer is ``gold``."""
    answer = extract_answer(text)
    if answer is None:
        return Found(None, "no answer")
    if hedged(answer, gold):
        return Found(answer, "hedged")
    return Found(answer)
