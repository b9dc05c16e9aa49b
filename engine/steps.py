"""Step segmentation.

Segmentation decides what a "step" is, which is where PRM data succeeds or fails, so
it is pluggable: blank-line blocks (the default), ``Step N:`` markers, explicit
``<step>...</step>`` tags, or any callable ``str -> list[str]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

STEP_FORMATS: tuple[str, ...] = ("blank_line", "step_marker", "tags")

_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_STEP_MARKER = re.compile(r"(?im)^[ \t]*(?:\*\*)?step[ \t]*\d+[ \t]*(?:\*\*)?[ \t]*[:.)][ \t]*(?:\*\*)?")
_STEP_TAG = re.compile(r"<step>(.*?)(?:</step>|\Z)", re.DOTALL)
_WHITESPACE = re.compile(r"\s+")

_INSTRUCTIONS = {
    "blank_line": "Write one step per paragraph, separated by a blank line.",
    "step_marker": 'Begin every step with "Step N:" on a new line.',
    "tags": "Wrap every step in <step></step> tags.",
}
_STOPS = {"blank_line": ("\n\n",), "step_marker": ("\nStep ",), "tags": ("</step>",)}


@dataclass(frozen=True)
class StepFormat:
    """How steps are written and read: the one place that knows a format's syntax.

    It travels on every ``GenerationRequest``, so any policy (built-in or custom) writes
    steps the way the run's segmenter reads them; prompts, the segmenter and the
    simulated policy all delegate here.
    """

    name: str = "blank_line"

    def __post_init__(self) -> None:
        if self.name not in STEP_FORMATS:
            raise ValueError(f"step format must be one of {', '.join(STEP_FORMATS)}, got {self.name!r}")

    @property
    def instruction(self) -> str:
        """What the system prompt asks the model to do."""
        return _INSTRUCTIONS[self.name]

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """Where one step ends (for ``next_step_only`` generation)."""
        return _STOPS[self.name]

    @property
    def delimiter(self) -> str:
        """What separates two steps in ``join``'s output."""
        return {"blank_line": "\n\n", "step_marker": "\n", "tags": ""}[self.name]

    def split(self, text: str) -> list[str]:
        """The raw pieces of ``text`` (not yet stripped or merged; see :class:`Segmenter`)."""
        if self.name == "blank_line":
            return _BLANK_LINE.split(text)
        if self.name == "step_marker":
            return _STEP_MARKER.split(text)
        raw = _STEP_TAG.findall(text)
        if not raw and text.strip():
            raw = [text]  # no tags at all: one giant step, still a usable rollout
        return raw

    def join(self, steps: Sequence[str], first_index: int = 0) -> str:
        """``steps`` written in this format; ``first_index`` numbers ``Step N:`` markers."""
        if self.name == "blank_line":
            return "\n\n".join(steps)
        if self.name == "step_marker":
            return "\n".join(f"Step {first_index + i + 1}: {s}" for i, s in enumerate(steps))
        return "".join(f"<step>{s}</step>" for s in steps)

    def prefix_text(self, prefix: Sequence[str]) -> str:
        """The steps taken so far, ending with the opening of the next step."""
        if not prefix:
            return ""
        return self.join(prefix) + self.delimiter + self.next_opening(len(prefix))

    def next_opening(self, n_prefix: int) -> str:
        """What opens step ``n_prefix + 1`` after a prefix (the model continues from it)."""
        if self.name == "blank_line" or n_prefix == 0:
            return ""
        return "<step>" if self.name == "tags" else f"Step {n_prefix + 1}:"

    def restore_opening(self, continuation: str, n_prefix: int) -> str:
        """A continuation of a prefix with the opening the prompt ended on put back."""
        return self.next_opening(n_prefix) + continuation if n_prefix else continuation


def as_step_format(value: StepFormat | str) -> StepFormat:
    return value if isinstance(value, StepFormat) else StepFormat(value)


@dataclass(frozen=True)
class Segmenter:
    """Splits model text into steps.

    ``format`` is a :class:`StepFormat` (or its name) or any callable
    ``str -> list[str]``. ``max_steps`` bounds the steps of a whole solution path (VisualPRM
    uses 12): a continuation after ``depth`` steps of prefix is merged down to
    ``max_steps - depth`` steps (at least one), so prefix plus continuation never exceeds
    it when the prefix does not. Empty steps are always dropped.
    """

    format: StepFormat | str | Callable[[str], list[str]] = StepFormat()
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.format, str):
            object.__setattr__(self, "format", StepFormat(self.format))
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.max_steps}")

    def split(self, text: str, depth: int = 0) -> list[str]:
        """Steps of ``text`` (a continuation after ``depth`` steps), stripped, without empty
        ones, merged down to ``max_steps - depth`` (at least one)."""
        fmt = self.format
        raw = fmt.split(text) if isinstance(fmt, StepFormat) else list(fmt(text))
        steps = [s.strip() for s in raw if s and s.strip()]
        room = self.room(depth)
        if room is not None and len(steps) > room:
            steps = merge_steps(steps, room)
        return steps

    def room(self, depth: int) -> int | None:
        """How many steps a continuation after ``depth`` steps may have (None: no bound)."""
        return None if self.max_steps is None else max(1, self.max_steps - depth)

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
