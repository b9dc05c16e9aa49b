"""A run's steps rows as the text formats need them: the question, the decided steps, markers defused.

Paths are cut at their first undecided (null) label. Text that would be read as a marker
(the placeholder, ``<extra_0>``, ``<image>``, ChatML tokens) is defused with a word joiner
(U+2060) after its first character, so every marker in an export is one the exporter put there.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prmtree.engine.output import read_table

WORD_JOINER = "\u2060"
_STEP_NUMBER = re.compile(r"^\s*step\s*\d+\s*[:.]", re.IGNORECASE)


def iter_rows(out: Path, table: str = "steps", batch_rows: int = 1024) -> Iterator[dict[str, Any]]:
    """The rows of ``table`` as dicts, a batch at a time (images stay bytes in Arrow until needed)."""
    data = read_table(out, table)
    for batch in data.to_batches(max_chunksize=batch_rows):
        yield from batch.to_pylist()


def ids(row: dict[str, Any]) -> dict[str, Any]:
    """The columns that tie a record back to its steps row."""
    return {"problem_id": row["problem_id"], "path_id": row.get("path_id")}


def question_text(prompt: Any) -> str:
    """The question of a steps row: the prompt string, or the text parts of a chat prompt's user turns."""
    if isinstance(prompt, str):
        return prompt
    parts = []
    for message in prompt or []:
        if message.get("role") not in (None, "user"):
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
            continue
        parts.extend(p.get("text") or "" for p in content or [] if p.get("type") == "text")
    return "\n".join(p for p in parts if p)


def decided(row: dict[str, Any]) -> tuple[list[str], list[bool], list[float | None]]:
    """Steps, labels and values of a row, cut at the first undecided (null) label."""
    steps = [str(s) for s in row.get("completions") or []]
    labels = list(row.get("labels") or [])
    values = list(row.get("values") or [])
    values += [None] * (len(labels) - len(values))
    n = min(len(steps), len(labels))
    for i in range(n):
        if labels[i] is None:
            n = i
            break
    return steps[:n], [bool(x) for x in labels[:n]], values[:n]


def soft_values(labels: list[bool], values: list[float | None]) -> list[float]:
    """MC values as soft labels; a step whose value was not measured gets its hard label (1.0 / 0.0)."""
    return [float(v) if v is not None and not math.isnan(v) else float(lab) for lab, v in zip(labels, values)]


def defuse(text: str, markers: tuple[str, ...]) -> str:
    """``text`` with each marker broken by a word joiner after its first character."""
    for marker in markers:
        if marker in text:
            text = text.replace(marker, marker[0] + WORD_JOINER + marker[1:])
    return text


def numbered(k: int, step: str) -> str:
    """``Step k: <step>`` unless the step already starts with a step number."""
    return step if _STEP_NUMBER.match(step) else f"Step {k}: {step}"


def tagged_solution(question: str, steps: list[str], tag: str) -> str:
    """Math-Shepherd's layout: ``<question> Step 1: <step> <tag>\\nStep 2: <step> <tag>``."""
    lines = [f"{numbered(k, defuse(s.strip(), (tag,)))} {tag}" for k, s in enumerate(steps, start=1)]
    return f"{defuse(question.strip(), (tag,))} " + "\n".join(lines)
