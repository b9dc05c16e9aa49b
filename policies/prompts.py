"""One place that turns a GenerationRequest into a model's input.

Every backend uses it, so the same request gives the same prompt text everywhere:

* a system prompt asking for the configured step format and a final ``\\boxed{}``
  answer (overridable);
* a user turn with the image(s) and the question;
* the prefix steps as an *unfinished* assistant turn that the model continues (no
  end-of-turn token after it: chat templates' ``continue_final_message``), ending with
  the delimiter that opens the next step;
* for ``next_step_only``, stop strings at the step delimiter.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prmtree.policies.base import GenerationRequest

FORMAT_INSTRUCTIONS = {
    "blank_line": "Write one step per paragraph, separated by a blank line.",
    "step_marker": 'Begin every step with "Step N:" on a new line.',
    "tags": "Wrap every step in <step></step> tags.",
}
DEFAULT_SYSTEM_PROMPT = (
    "Solve the problem step by step. {format_instruction} "
    "Finish with the final answer written as \\boxed{{answer}}."
)


@dataclass(frozen=True)
class PromptStyle:
    """How prompts are written: the step format and the system prompt."""

    step_format: str = "blank_line"
    system_prompt: str | None = None  # None: DEFAULT_SYSTEM_PROMPT; "" : no system turn

    def __post_init__(self) -> None:
        if self.step_format not in FORMAT_INSTRUCTIONS:
            raise ValueError(
                f"step_format must be one of {', '.join(FORMAT_INSTRUCTIONS)}, got {self.step_format!r}"
            )

    def system_text(self) -> str:
        if self.system_prompt is not None:
            return self.system_prompt
        return DEFAULT_SYSTEM_PROMPT.format(format_instruction=FORMAT_INSTRUCTIONS[self.step_format])

    def stop_strings(self) -> list[str]:
        """Where one step ends (for ``next_step_only``)."""
        return {"blank_line": ["\n\n"], "step_marker": ["\nStep "], "tags": ["</step>"]}[self.step_format]

    def prefix_text(self, prefix: Sequence[str]) -> str:
        """The steps taken so far, written so the model's continuation is the next step."""
        if not prefix:
            return ""
        n = len(prefix)
        if self.step_format == "blank_line":
            return "\n\n".join(prefix) + "\n\n"
        if self.step_format == "step_marker":
            return "\n".join(f"Step {i + 1}: {s}" for i, s in enumerate(prefix)) + f"\nStep {n + 1}:"
        return "".join(f"<step>{s}</step>" for s in prefix) + "<step>"


def messages(
    request: GenerationRequest,
    style: PromptStyle,
    *,
    image_parts: str = "template",
) -> list[dict[str, Any]]:
    """Chat messages for ``request``.

    ``image_parts``: "template" gives ``{"type": "image"}`` parts (for a processor's
    chat template), "data_url" gives OpenAI ``image_url`` parts with base64 PNG data,
    "none" drops images (text-only models).
    """
    out: list[dict[str, Any]] = []
    system = style.system_text()
    if system:
        out.append({"role": "system", "content": system})
    question = request.problem.question
    images = request.problem.images
    if image_parts == "none" or not images:
        out.append({"role": "user", "content": question})
    else:
        parts: list[dict[str, Any]] = []
        for image in images:
            if image_parts == "data_url":
                encoded = base64.b64encode(image.data).decode("ascii")
                parts.append({"type": "image_url", "image_url": {"url": f"data:{_mime(image.data)};base64,{encoded}"}})
            else:
                parts.append({"type": "image"})
        parts.append({"type": "text", "text": question})
        out.append({"role": "user", "content": parts})
    if request.prefix:
        out.append({"role": "assistant", "content": style.prefix_text(request.prefix)})
    return out


def _mime(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:3] == b"GIF":
        return "image/gif"
    return "application/octet-stream"


def render(template_owner: Any, request: GenerationRequest, style: PromptStyle, *, multimodal: bool) -> str:
    """The prompt text, rendered with a tokenizer's or processor's chat template.

    With a prefix, the last (assistant) message is left open: no end-of-turn token, so the
    model continues it; without one, the assistant turn is opened for the model.
    """
    msgs = messages(request, style, image_parts="template" if multimodal else "none")
    continuing = bool(request.prefix)
    text = template_owner.apply_chat_template(
        msgs,
        tokenize=False,
        add_generation_prompt=not continuing,
        continue_final_message=continuing,
    )
    if continuing:
        # Templates strip trailing whitespace of the open message; the delimiter matters.
        tail = style.prefix_text(request.prefix)
        stripped = tail.rstrip()
        if text.endswith(stripped) and not text.endswith(tail):
            text = text + tail[len(stripped):]
    return text


def continuation_for_parsing(text: str, request: GenerationRequest, style: PromptStyle) -> str:
    """A backend's continuation, completed with the delimiter the prompt opened.

    The prompt ends with the opening of the next step (``<step>``, ``Step N:``); the
    model's text starts inside that step, so segmentation needs the opening back.
    """
    if not request.prefix or style.step_format == "blank_line":
        return text
    if style.step_format == "tags":
        return "<step>" + text
    return f"Step {len(request.prefix) + 1}:" + text
