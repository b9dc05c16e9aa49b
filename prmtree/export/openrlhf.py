"""``openrlhf``: JSONL for OpenRLHF's PRM trainer (``openrlhf.cli.train_prm``).

Reader: ``openrlhf/datasets/process_reward_dataset.py``. ``input`` is the question and the
steps, each step followed by the placeholder token (``ки`` by default, as in
``examples/scripts/train_prm_mistral.sh``); ``label`` is one label per placeholder:
``"+"``/``"-"`` (``--reward_tokens + -``), or with ``soft=True`` the MC values as floats
(positive token first in ``--reward_tokens``). The reader tokenises ``input`` with
``add_special_tokens=False`` and truncation, finds the placeholder ids and keeps the first
``len(placeholders)`` labels, so labels stay aligned after truncation. OpenRLHF dropped the
PRM trainer in v0.9.6 (commit 6a981c8c, 2026-03-19): use ``openrlhf<=0.9.5``. Float labels
only load in v0.5.0-v0.5.5.post2: from commit 2134835b (Jan 2025) its reader assigns them
into an integer tensor and fails. ``images`` (relative paths) is extra: the text trainer
ignores it.
"""

from __future__ import annotations

from typing import Any

from prmtree.engine.registry import EXPORT_FORMATS
from prmtree.export.base import ExportOptions
from prmtree.export.jsonl import Builder, JsonlFormat
from prmtree.export.rows import (
    decided,
    ids,
    question_text,
    soft_values,
    tagged_solution,
)


@EXPORT_FORMATS.register("openrlhf")
class OpenRLHF(JsonlFormat):
    name = "openrlhf"
    description = "JSONL for OpenRLHF's PRM trainer (openrlhf<=0.9.5): a placeholder after each step, label list"
    soft_labels = True
    options = frozenset({"placeholder"})

    def builder(self, options: ExportOptions) -> Builder:
        soft, placeholder = options.soft, options.placeholder

        def build(row: dict[str, Any], images: list[str]) -> dict[str, Any] | None:
            steps, labels, values = decided(row)
            if not steps:
                return None
            label: list[Any] = soft_values(labels, values) if soft else ["+" if x else "-" for x in labels]
            text = tagged_solution(question_text(row["prompt"]), steps, placeholder)
            return {"input": text, "label": label, "images": images, **ids(row)}

        return build
