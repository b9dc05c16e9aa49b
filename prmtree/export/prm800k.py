"""``prm800k``: JSONL shaped like PRM800K, for evaluators.

The question, then per-step ratings 1 / -1 and a ``finish_reason``: ``found_error`` at a
step rated -1, ``solution`` when every step is rated 1 and the path's answer is right or wrong,
``give_up`` when the labels stop at an undecided step first (in the run, or in the export's
cut; ``final_correct`` is then null) or the path ends without an answer.

Every field of PRM800K's records is there, so code written for them reads these: the
labelling fields PRM800K had from its human labellers are null / false (``labeler`` is
``"prmtree"``), ``pre_generated_steps`` is the path's steps (as cut, like the ratings), and a step rated -1
has ``chosen_completion`` null, as in PRM800K (no completion was chosen there).
"""

from __future__ import annotations

from typing import Any

from prmtree.engine.registry import EXPORT_FORMATS
from prmtree.export.base import ExportOptions
from prmtree.export.jsonl import Builder, JsonlFormat
from prmtree.export.rows import decided, question_text


@EXPORT_FORMATS.register("prm800k")
class PRM800K(JsonlFormat):
    name = "prm800k"
    description = "JSONL shaped like PRM800K (question, per-step ratings 1 / -1)"
    with_images = False

    def builder(self, options: ExportOptions) -> Builder:
        return _record


def _record(row: dict[str, Any], images: list[str]) -> dict[str, Any] | None:
    steps, labels, _ = decided(row)
    if not steps:
        return None
    if False in labels:
        finish = "found_error"
    elif len(steps) < len(row.get("completions") or []) or row.get("final_correct") is None:
        finish = "give_up"
    else:
        finish = "solution"
    return {
        "labeler": "prmtree",
        "timestamp": None,
        "generation": None,
        "is_quality_control_question": False,
        "is_initial_screening_question": False,
        "question": {
            "problem": question_text(row["prompt"]), "ground_truth_answer": row.get("answer"),
            "ground_truth_solution": None, "pre_generated_steps": list(steps),
            "pre_generated_answer": None, "pre_generated_verifier_score": None,
        },
        "label": {
            "steps": [
                {"completions": [{"text": step, "rating": 1 if label else -1, "flagged": None}],
                 "human_completion": None, "chosen_completion": 0 if label else None}
                for step, label in zip(steps, labels)
            ],
            "total_time": None,
            "finish_reason": finish,
        },
        "problem_id": row["problem_id"],
    }
