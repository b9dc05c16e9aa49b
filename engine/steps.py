"""Step segmentation and final-answer extraction.

Segmentation decides what a "step" is, which is where PRM data succeeds or fails, so
it is pluggable: blank-line blocks (the default), ``Step N:`` markers, explicit
``<step>...</step>`` tags, or any callable ``str -> list[str]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

StepFormat = Literal["blank_line", "step_marker", "tags"]
STEP_FORMATS: tuple[str, ...] = ("blank_line", "step_marker", "tags")

_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_STEP_MARKER = re.compile(r"(?im)^[ \t]*(?:\*\*)?step[ \t]*\d+[ \t]*(?:\*\*)?[ \t]*[:.)][ \t]*(?:\*\*)?")
_STEP_TAG = re.compile(r"<step>(.*?)(?:</step>|\Z)", re.DOTALL)
_ANSWER_LINE = re.compile(r"(?im)^[ \t*]*(?:final[ \t]+)?answer[ \t*]*[:：][ \t*]*(.+?)[ \t*]*$")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Segmenter:
    """Splits model text into steps.

    ``max_steps`` merges neighbouring steps so a solution has at most that many
    (VisualPRM uses 12); empty steps are always dropped.
    """

    format: StepFormat | Callable[[str], list[str]] = "blank_line"
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if not callable(self.format) and self.format not in STEP_FORMATS:
            raise ValueError(
                f"step format must be one of {', '.join(STEP_FORMATS)} or a callable, got {self.format!r}"
            )
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.max_steps}")

    def split(self, text: str) -> list[str]:
        """Steps of ``text``, stripped, without empty ones, merged down to ``max_steps``."""
        if callable(self.format):
            raw = list(self.format(text))
        elif self.format == "blank_line":
            raw = _BLANK_LINE.split(text)
        elif self.format == "step_marker":
            parts = _STEP_MARKER.split(text)
            # Text before the first marker is kept only if it says something.
            raw = parts
        else:
            raw = _STEP_TAG.findall(text)
            if not raw and text.strip():
                raw = [text]  # no tags at all: one giant step, still a usable rollout
        steps = [s.strip() for s in raw if s and s.strip()]
        if self.max_steps is not None and len(steps) > self.max_steps:
            steps = merge_steps(steps, self.max_steps)
        return steps

    def first_step(self, text: str) -> list[str]:
        """For next-step-only generation: at most the first step of ``text``."""
        return self.split(text)[:1]


def merge_steps(steps: Sequence[str], max_steps: int) -> list[str]:
    """Merge neighbouring steps into ``max_steps`` groups of near-equal size, in order."""
    n = len(steps)
    if n <= max_steps:
        return list(steps)
    merged = []
    for group in range(max_steps):
        start = group * n // max_steps
        end = (group + 1) * n // max_steps
        merged.append("\n\n".join(steps[start:end]))
    return merged


def normalize_step(step: str) -> str:
    """The form of a step that decides identity: whitespace collapsed, ends stripped."""
    return _WHITESPACE.sub(" ", step).strip()


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
