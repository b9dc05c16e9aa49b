"""``visualprm``: JSONL in InternVL's fine-tuning format, as VisualPRM and MM-PRM train on it.

Checked against InternVL ``internvl_chat/tools/reasoning_data_pipeline/
visualprm_data_pipeline_postprocess.py``: a system turn with VisualPRM's PRM prompt, the
first user turn ``<image>\\n### Question:\\n...\\n\\n### Solution Process:\\n<step 1>``, then
one ``gpt`` turn ``+``/``-`` per step and one ``human`` turn per further step. ``image`` is
always a list of paths relative to the file's folder (``images/`` beside it): InternVL's
multi-image reader (``internvl_chat_finetune.py``, ``multi_modal_multi_image_get_item``)
counts the ``<image>`` tags in the human turns and accepts a system turn first, where the
single-string reader would prepend a second ``<image>`` to the system prompt. A
``<name>_meta.json`` beside the file is InternVL's ``--meta_path`` entry (root, annotation,
length). ``values`` (MC values) is extra.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from prmtree.engine.registry import EXPORT_FORMATS
from prmtree.export.base import ExportOptions, atomic_open
from prmtree.export.jsonl import Builder, JsonlFormat
from prmtree.export.rows import decided, defuse, ids, question_text

IMAGE_TAG = "<image>"
#: What InternVL's reader and chat template take for its own, defused in a question or step: an
#: image tag or token of the wrong count zeroes the row's loss (``ignore_flag``), and a turn's
#: end splits the conversation early (its targets then all ignored).
INTERNVL_TOKENS = (IMAGE_TAG, "<IMG_CONTEXT>", "<img>", "</img>", "<|im_start|>", "<|im_end|>", "<|endoftext|>")
# VisualPRM's system prompt (InternVL internvl_chat/tools/reasoning_data_pipeline/utils/constants.py).
VISUALPRM_SYSTEM_PROMPT = """You are an advanced AI assistant, designed to serve as a process supervision model. \
In this task, I will provide a problem statement followed by the first step of the solution process. For each \
subsequent turn, I will give you a new step in the solution. Your role is to assess whether the solution process is \
correct up to the current step.

- In the **first round**, I will input the problem and the first step of the solution process.
- In **each subsequent round**, I will provide the next step in the solution.

For each step, you should:

- Respond with **"+"** if you believe the solution process is correct up to this step.
- Respond with **"-"** if you detect any issues or errors in the process up to this step.

Please note:
- Only respond with **"+"** or **"-"**. Do not provide any additional explanations, comments, or justifications.

Your task is to verify the accuracy and correctness of each step in the given solution process."""


@EXPORT_FORMATS.register("visualprm")
class VisualPRM(JsonlFormat):
    name = "visualprm"
    description = "JSONL for InternVL fine-tuning as VisualPRM / MM-PRM: image + conversations with +/- per step"
    options = frozenset({"system_prompt"})

    def outputs(self, target: Path) -> list[Path]:
        return [target, meta_path(target)]

    def builder(self, options: ExportOptions) -> Builder:
        system_prompt = VISUALPRM_SYSTEM_PROMPT if options.system_prompt is None else options.system_prompt

        def build(row: dict[str, Any], images: list[str]) -> dict[str, Any] | None:
            steps, labels, values = decided(row)
            if not steps:
                return None
            markers = INTERNVL_TOKENS
            if len(images) == 1:
                tags = f"{IMAGE_TAG}\n"
            else:
                tags = "".join(f"Image-{i}: {IMAGE_TAG}\n" for i in range(1, len(images) + 1))
            question = defuse(question_text(row["prompt"]).strip(), markers)
            # always a system turn: without one InternVL's preprocess uses its chat template's default
            # system message, and "--system-prompt ''" (none) would train with InternVL's own prompt
            conversations = [{"from": "system", "value": system_prompt}]
            for k, (step, label) in enumerate(zip(steps, labels)):
                value = defuse(step.strip(), markers)
                if k == 0:
                    value = f"{tags}### Question:\n{question}\n\n### Solution Process:\n{value}"
                conversations += [{"from": "human", "value": value}, {"from": "gpt", "value": "+" if label else "-"}]
            return {"image": images, "conversations": conversations, "values": values, **ids(row)}

        return build

    def write(self, out: Path, target: Path, options: ExportOptions) -> int:
        n = super().write(out, target, options)
        _write_internvl_meta(target, n)
        return n


def meta_path(target: Path) -> Path:
    """InternVL's ``--meta_path`` file beside ``target``: ``<name>_meta.json``."""
    return target.with_name(f"{target.stem}_meta.json")


def _write_internvl_meta(target: Path, n: int) -> None:
    """InternVL's ``--meta_path`` file: the dataset's image root, annotation file and length."""
    meta = {
        target.stem: {
            "root": str(target.parent.resolve()) + os.sep,
            "annotation": str(target.resolve()),
            "data_augment": False,
            "repeat_time": 1,
            "length": n,
        }
    }
    with atomic_open(meta_path(target)) as handle:
        handle.write(json.dumps(meta, indent=2) + "\n")
