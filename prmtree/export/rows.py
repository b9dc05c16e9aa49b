"""A run's steps rows as the exports need them: the question, the decided steps, markers defused.

One rule for every export: a path is cut at its first undecided (null) label, every
per-step column with it (a run with ``[labels] undecided = "keep"`` keeps null labels in
its own tables, never in an export: a trainer would read a null as a label), and a path
with no decided step is left out. A path cut short has no final answer, so its
``final_correct`` is null. Paths the cut makes the same (several paths through one
undecided step) are one record: the first, or the first unflagged one where they differ in
``flagged``. Text that would be read as a marker
(the placeholder, ``<extra_0>``, ``<image>``, ChatML tokens) is defused with a word joiner
(U+2060) after its first character, so every marker in an export is one the exporter put there.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from prmtree.engine.output import read_table

WORD_JOINER = "\u2060"
#: A step's own number (``Step 2:``, ``step 2.``, ``**Step 2:**``, ``## Step 2:``), written over
#: by ours; a closing ``**`` only with an opening one, no decimal (``Step 2.1:``), no newline.
_STEP_NUMBER = re.compile(r"^\s*(?:#{1,6}\s*)?(\*\*)?\s*step\s*\d+(?!\.\d)\s*(?:\*\*)?\s*[:.)](?(1)\s*\*\*)[ \t]*",
                          re.IGNORECASE)


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


#: List columns that are not one entry per step (a chat prompt is a list of messages).
_NOT_PER_STEP = frozenset({"prompt", "images"})


def decided_length(labels: list[bool | None] | None) -> int:
    """How many steps of a path an export keeps: those before its first undecided label."""
    labels = list(labels or [])
    return next((i for i, x in enumerate(labels) if x is None), len(labels))


def cut_row(row: dict[str, Any]) -> dict[str, Any] | None:
    """``row`` with every per-step column cut at the first undecided label; None when no
    step is decided (the rule every export follows)."""
    labels = row.get("labels") or []
    n = decided_length(labels)
    if n == 0:
        return None
    if n == len(labels):
        return row
    out = dict(row)
    for key, value in row.items():
        if key not in _NOT_PER_STEP and isinstance(value, list) and len(value) == len(labels):
            out[key] = value[:n]
    if "final_correct" in out:
        out["final_correct"] = None  # the kept steps do not reach the answer
    return out


def decided_key(row: dict[str, Any]) -> int | None:
    """What makes a path's export record: its problem and its decided steps (None: no step
    decided). A hash, so an export of millions of paths keeps a few bytes per path."""
    steps = row.get("completions") or []
    n = min(len(steps), decided_length(row.get("labels")))
    return None if n == 0 else hash((row.get("problem_id"), *map(str, steps[:n])))


def unique_rows(rows: list[dict[str, Any]], seen: set[int]) -> list[dict[str, Any]]:
    """``rows`` (one problem's, say) with one row per decided path not in ``seen``, in
    order; where paths cut alike differ in ``flagged``, an unflagged one stands for them
    (one flagged for a disagreement on steps the cut removed must not hide the path from
    a user who filters flags out). Adds the kept keys to ``seen``."""
    chosen: dict[int, dict[str, Any]] = {}
    for row in rows:
        key = decided_key(row)
        if key is None or key in seen:
            continue
        if key not in chosen or (chosen[key].get("flagged") and not row.get("flagged")):
            chosen[key] = row  # a replaced row keeps its place
    seen.update(chosen)
    return list(chosen.values())


def by_problem(rows: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Runs of consecutive rows of one problem (a problem's rows are written together)."""
    group: list[dict[str, Any]] = []
    for row in rows:
        if group and row.get("problem_id") != group[0].get("problem_id"):
            yield group
            group = []
        group.append(row)
    if group:
        yield group


def cut_table(table: pa.Table) -> pa.Table:
    """:func:`cut_row` over a steps table (images stay Arrow: only the per-step columns are
    rebuilt, and only when some path has an undecided label or no step)."""
    if "labels" not in table.column_names or table.num_rows == 0:
        return table
    labels = table.column("labels")
    lengths = pc.list_value_length(labels)
    if pc.list_flatten(labels).null_count == 0 and pc.min(lengths).as_py() not in (0, None):
        return table
    label_lists = labels.to_pylist()
    keep_n = [decided_length(x) for x in label_lists]
    full = [len(x or []) for x in label_lists]
    columns = {}
    for name in table.column_names:
        column = table.column(name)
        if name in _NOT_PER_STEP or not pa.types.is_list(column.type):
            continue
        values = column.to_pylist()
        if all(v is None or len(v) == f for v, f in zip(values, full)):
            columns[name] = pa.array([v if v is None else v[:n] for v, n in zip(values, keep_n)], column.type)
    for name, array in columns.items():
        table = table.set_column(table.schema.get_field_index(name), table.schema.field(name), array)
    if "final_correct" in table.column_names:
        finals = [None if n < f else x for x, n, f in zip(table.column("final_correct").to_pylist(), keep_n, full)]
        i = table.schema.get_field_index("final_correct")
        table = table.set_column(i, table.schema.field(i), pa.array(finals, table.schema.field(i).type))
    table = table.filter(pa.array([n > 0 for n in keep_n], pa.bool_()))
    flags = table.column("flagged").to_pylist() if "flagged" in table.column_names else [None] * table.num_rows
    rows = [{"problem_id": pid, "completions": steps, "labels": labels, "flagged": flag, "at": i}
            for i, (pid, steps, labels, flag) in enumerate(zip(table.column("problem_id").to_pylist(),
                                                               table.column("completions").to_pylist(),
                                                               table.column("labels").to_pylist(), flags))]
    keep = sorted(row["at"] for row in unique_rows(rows, set()))
    return table if len(keep) == table.num_rows else table.take(pa.array(keep, pa.int64()))


def without_flagged(table: pa.Table) -> pa.Table:
    """The rows of ``table`` a ``consensus`` run did not flag (MC and the judge disagreed)."""
    if "flagged" not in table.column_names:
        return table
    return table.filter(pc.invert(pc.fill_null(table.column("flagged"), False)))


def soft_values(labels: list[bool], values: list[float | None]) -> list[float]:
    """MC values as soft labels; a step whose value was not measured gets its hard label (1.0 / 0.0)."""
    return [float(v) if v is not None and not math.isnan(v) else float(lab) for lab, v in zip(labels, values)]


def defuse(text: str, markers: tuple[str, ...]) -> str:
    """``text`` with each marker broken by a word joiner after its first character, until none
    is left: a marker whose start repeats its end (``aa`` in ``aaa``) is found again in what
    one pass leaves. Markers are 2 characters or more, without U+2060 (``ExportOptions``)."""
    for marker in markers:
        while marker in text:
            text = text.replace(marker, marker[0] + WORD_JOINER + marker[1:])
    return text


def numbered(k: int, step: str) -> str:
    """``Step k: <step>``, in place of a number the step gives itself (``Step 1.``,
    ``**Step 1:**``): readers split the solution at ``Step 1:`` (TRL's Math-Shepherd converter),
    so one left in the step's text (``**Step 1: Title**``, a mention) is defused."""
    return f"Step {k}: {defuse(_STEP_NUMBER.sub('', step, count=1), ('Step 1:',))}"


def in_step_number(text: str) -> bool:
    """Whether ``text`` occurs in the ``Step k: `` that :func:`numbered` puts before step k,
    for some k >= 1: in ``Step 1: `` when it has no digit, else in ``Step D: `` or
    ``Step 1D: `` for its first run of digits D (D starts the number, or ends it)."""
    digits = re.search(r"[0-9]+", text)
    numbers = ["1"] if digits is None else [digits.group(), "1" + digits.group()]
    return any(text in f"Step {k}: " for k in numbers if not k.startswith("0"))


def tagged_solution(question: str, steps: list[str], tag: str) -> str:
    """Math-Shepherd's layout: ``<question> Step 1: <step> <tag>\\nStep 2: <step> <tag>``. A
    ``Step 1:`` in the question is defused: the first step is where readers find it."""
    lines = [f"{numbered(k, defuse(s.strip(), (tag,)))} {tag}" for k, s in enumerate(steps, start=1)]
    return f"{defuse(question.strip(), (tag, 'Step 1:'))} " + "\n".join(lines)
