"""Reading the answer out of model text.

A completion ends in a ``\\boxed{}``, an ``Answer:`` line or just a last line; and the
answer itself comes wrapped in ``$…$``, ``\\text{}`` or ``The answer is …``. Both are
taken off here, before anything compares the answer with the gold one.
"""

from __future__ import annotations

import re

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


def _closing_brace(text: str, open_at: int) -> int:
    """Index of the ``}`` matching ``text[open_at] == "{"``, or -1."""
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _unwrap(text: str) -> str:
    """The answer without what merely surrounds it: whitespace, ``$…$``, ``\\(…\\)``,
    ``\\[…\\]``, and a ``\\boxed{}``/``\\text{}``-like command around the whole of it."""
    t = text.strip()
    while True:
        before = t
        if len(t) >= 2 and t[0] == "$" and t[-1] == "$":
            t = t[1:-1].strip()
        elif t[:2] in ("\\(", "\\[") and t[-2:] in ("\\)", "\\]"):
            t = t[2:-2].strip()
        elif t.startswith("\\"):
            for command in _WRAPPERS:
                if t.startswith(command + "{") and _closing_brace(t, len(command)) == len(t) - 1:
                    t = t[len(command) + 1 : -1].strip()
                    break
        if t == before:
            return t


def _strip_answer(text: str) -> str:
    """``The answer is (B).`` → ``(B)``: what models write around a short answer."""
    t = _unwrap(text).strip("*").strip()
    t = _ANSWER_PREFIX.sub("", t)
    t = _unwrap(t)
    return t[:-1].rstrip() if t.endswith(".") and len(t) > 1 else t
