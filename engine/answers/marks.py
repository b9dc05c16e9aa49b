"""What marks and wraps an answer in model text: ``\\boxed{}``, an ``Answer:`` line,
``$…$``/``\\text{}`` around it, "The answer is" before it, a reasoning model's tags.

The lowest layer of answer reading: finding marked answers and taking their wrapping off,
before anything reads prose (:mod:`.prose`) or compares an answer with the gold one
(:mod:`.compare`). Every function is linear in the text: the driver runs them per rollout.
"""

from __future__ import annotations

import functools
import re


ANSWER_LINE = re.compile(r"(?im)^[ \t*]*(?:final[ \t]+)?answer[ \t*]*[:：][ \t*]*(.+?)[ \t*]*$")
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
    matches = ANSWER_LINE.findall(text)
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


def unwrap(text: str) -> str:
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


def strip_answer(text: str) -> str:
    """``The answer is (B).`` → ``(B)``: what models write around a short answer."""
    t = unwrap(text).strip("*").strip()
    t = _ANSWER_PREFIX.sub("", t)
    t = unwrap(t)
    return t[:-1].rstrip() if t.endswith(".") and len(t) > 1 else t


# --------------------------------------------------------------------------- find_answer
#
# Every pattern below is linear: no nested quantifiers over the same characters, and each
# scan runs once over the text (the driver calls this on its event loop, per rollout).


_THINK_CLOSE = re.compile(r"</think\s*>", re.IGNORECASE)
_SPECIAL_TOKEN = re.compile(r"<\|[^|<>]{1,40}\|>")


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
def top_level_parts(text: str) -> int:
    """How many comma-separated parts ``text`` has outside brackets (a set's braces opened)."""
    t = unwrap(text)
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
