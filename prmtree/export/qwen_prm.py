"""``qwen-prm``: JSONL in the Qwen2.5-Math-PRM convention (model card of Qwen/Qwen2.5-Math-PRM-7B).

System / user / assistant messages whose assistant turn is the steps, each followed by
``<extra_0>`` (in an export with images every ``content`` is a list of parts, as Qwen2-VL's
processor takes them, so the column has one type); ``text`` is those messages rendered with the ChatML template (images as
``<|vision_start|><|image_pad|><|vision_end|>``, as Qwen2-VL's template writes them), or
with ``tokenizer``'s own chat template; ``labels`` holds one 1/0 per ``<extra_0>`` (floats
with ``soft=True``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from prmtree.engine.errors import raised
from prmtree.engine.output import listed_files
from prmtree.engine.registry import EXPORT_FORMATS
from prmtree.export.base import ExportError, ExportOptions
from prmtree.export.jsonl import Builder, JsonlFormat
from prmtree.export.rows import decided, defuse, ids, question_text, soft_values

QWEN_STEP_TOKEN = "<extra_0>"
QWEN_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
QWEN_VISION = "<|vision_start|><|image_pad|><|vision_end|>"
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|endoftext|>")


@EXPORT_FORMATS.register("qwen-prm")
class QwenPRM(JsonlFormat):
    name = "qwen-prm"
    description = "JSONL in the Qwen2.5-Math-PRM convention: chat messages, steps joined by <extra_0>, rendered text"
    soft_labels = True
    options = frozenset({"system_prompt", "tokenizer"})

    def write(self, out: Path, target: Path, options: ExportOptions) -> int:
        # one type per column: if any row has an image, every row's contents are parts lists
        self._parts = any(
            pc.sum(pc.fill_null(pc.list_value_length(pq.read_table(out / f, columns=["images"]).column("images")), 0)).as_py()
            for f in listed_files(out, "steps"))
        return super().write(out, target, options)

    def builder(self, options: ExportOptions) -> Builder:
        soft = options.soft
        parts = getattr(self, "_parts", True)
        system_prompt = QWEN_SYSTEM_PROMPT if options.system_prompt is None else options.system_prompt
        render = chatml if options.tokenizer is None else _template_renderer(options.tokenizer)
        no_images = None if options.tokenizer is None else _cannot_render_images(render, options.tokenizer)
        markers = (QWEN_STEP_TOKEN, *CHATML_TOKENS)

        def build(row: dict[str, Any], images: list[str]) -> dict[str, Any] | None:
            steps, labels, values = decided(row)
            if not steps:
                return None
            if images and no_images:
                raise ExportError(no_images)
            question = defuse(question_text(row["prompt"]).strip(), markers)
            answer = "".join(defuse(s.strip(), markers) + QWEN_STEP_TOKEN for s in steps)
            # always a system turn ("" for none): without one, Qwen's chat templates (a trainer's,
            # or --tokenizer's) put in their default system prompt ("You are a helpful assistant.")
            turns = [("system", system_prompt)]
            turns += [("user", question), ("assistant", answer)]
            if parts:  # every content a parts list: one type per column for pyarrow and `datasets`
                messages = [{"role": role, "content": [{"type": "text", "text": text}]} for role, text in turns]
                messages[-2]["content"][:0] = [{"type": "image", "image": p} for p in images]
            else:
                messages = [{"role": role, "content": text} for role, text in turns]
            text = render(messages)
            if text.count(QWEN_STEP_TOKEN) != len(steps):  # a template that rewrites the assistant's text
                raise ExportError(
                    f"the chat template of {str(options.tokenizer)!r} rendered problem {row['problem_id']!r} with "
                    f"{text.count(QWEN_STEP_TOKEN)} {QWEN_STEP_TOKEN} markers for its {len(steps)} labelled steps "
                    "(a reasoning model's template drops the text before a '</think>', for one): its rewards would be "
                    "read at the wrong steps; export without --tokenizer (ChatML), or with a template that keeps "
                    "the assistant's text")
            return {
                "messages": messages,
                "text": text,
                "labels": soft_values(labels, values) if soft else [int(x) for x in labels],
                "images": images,
                **ids(row),
            }

        return build


def chatml(messages: list[dict[str, Any]]) -> str:
    """Messages rendered as Qwen2.5's ChatML (Qwen2-VL's image placeholder for image parts)."""
    parts = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            content = "".join(QWEN_VISION if p["type"] == "image" else p.get("text") or "" for p in content)
        parts.append(f"<|im_start|>{message['role']}\n{content}<|im_end|>\n")
    return "".join(parts)


def _template_renderer(tokenizer: str | Path) -> Callable[[list[dict[str, Any]]], str]:
    """Messages rendered with the chat template of the local tokenizer in ``tokenizer``."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ExportError("rendering with a tokenizer's chat template needs transformers installed") from None
    if not Path(tokenizer).is_dir():  # (transformers would take it for a hub repo id and say that is malformed)
        raise ExportError(f"--tokenizer {str(tokenizer)!r} is no folder: give the folder of a tokenizer saved with "
                          "save_pretrained (tokenizer_config.json and its chat template)")
    try:
        tok = AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot load a tokenizer from {str(tokenizer)!r}: {str(exc).splitlines()[0]}") from None
    if not getattr(tok, "chat_template", None):
        raise ExportError(f"the tokenizer in {str(tokenizer)!r} has no chat template")

    def render(messages: list[dict[str, Any]]) -> str:
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)

    return render


def _cannot_render_images(render: Callable[[list[dict[str, Any]]], str], tokenizer: str | Path) -> str | None:
    """Why ``render`` (a tokenizer's chat template) cannot write a message with image parts
    (a text model's template joins contents as strings), or None: an image row then stops
    the export in one line instead of a traceback."""
    probe = [{"role": "user", "content": [{"type": "image", "image": "images/x.png"}, {"type": "text", "text": "q"}]}]
    fix = "use a vision model's tokenizer (Qwen2-VL's), or leave --tokenizer out for ChatML"
    try:
        text = render(probe)
    except Exception as exc:  # noqa: BLE001 - any template failure: the same answer
        return f"the chat template of {str(tokenizer)!r} cannot render a message with images ({raised(exc)}): {fix}"
    if "images/x.png" in text or "'type'" in text:  # a text template that printed the parts list as it is
        return f"the chat template of {str(tokenizer)!r} writes a message's image parts as text: {fix}"
    return None
