"""``math-shepherd``: JSONL with the columns of peiyi9979/Math-Shepherd.

``input`` is the question, then ``Step k: ... ки`` lines; ``label`` the same text with each
``ки`` replaced by ``+``/``-``; and ``task``. TRL's former converter
(``examples/datasets/math_shepherd.py``) parses it back, labels aligned, except that for a
question opening with one of its hard-coded prefixes ("What is the smallest positive",
"Round to the nearest", ...) it keeps step 1 in the prompt and drops that step's label, and
a step holding its internal stand-in character ``ⶻ`` makes it fail an assertion.
"""

from __future__ import annotations

from typing import Any

from prmtree.engine.registry import EXPORT_FORMATS
from prmtree.export.base import PLACEHOLDER, ExportOptions
from prmtree.export.jsonl import Builder, JsonlFormat
from prmtree.export.rows import decided, ids, question_text, tagged_solution


@EXPORT_FORMATS.register("math-shepherd")
class MathShepherd(JsonlFormat):
    name = "math-shepherd"
    description = "JSONL with Math-Shepherd's columns: input (steps tagged ки), label (+/-), task"
    options = frozenset({"task"})

    def builder(self, options: ExportOptions) -> Builder:
        task = options.task

        def build(row: dict[str, Any], images: list[str]) -> dict[str, Any] | None:
            steps, labels, _ = decided(row)
            if not steps:
                return None
            text = tagged_solution(question_text(row["prompt"]), steps, PLACEHOLDER)
            parts = text.split(PLACEHOLDER)  # exactly one tag per step: defuse() broke any other
            label = "".join(part + ("+" if x else "-") for part, x in zip(parts, labels)) + parts[-1]
            return {"input": text, "label": label, "task": task, "images": images, **ids(row)}

        return build
