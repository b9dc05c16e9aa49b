"""One place that turns a GenerationRequest into a model's input.

Every backend uses it, so the same request gives the same prompt text everywhere:

* a system prompt asking for the request's step format and a final ``\\boxed{}``
  answer (overridable);
* a user turn with the image(s) and the question;
* the prefix steps as an *unfinished* assistant turn that the model continues (no
  end-of-turn token after it: chat templates' ``continue_final_message``), ending with
  the delimiter that opens the next step;
* for ``next_step_only``, stop strings at the step delimiter.
"""

from __future__ import annotations

import base64
import io
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from prmtree.engine.records import GenerationRequest, ProblemImage, decode_rgb, high_depth
from prmtree.engine.steps import StepFormat

DEFAULT_SYSTEM_PROMPT = (
    "Solve the problem step by step. {format_instruction} "
    "Finish with the final answer written as \\boxed{{answer}}."
)


JUDGE_SYSTEM_PROMPT = (
    "You check one step of a solution to a problem about an image. Decide whether the last "
    "step shown is correct (right reasoning and right values, given the image and the steps "
    "before it). End your reply with exactly one line: 'Verdict: correct' or 'Verdict: incorrect'."
)


def judge_question(request: GenerationRequest) -> str:
    """The user turn of a judge request: the problem, the steps so far, which one to check."""
    steps = "\n".join(f"Step {i + 1}: {s}" for i, s in enumerate(request.prefix))
    n = len(request.prefix)
    return (
        f"Problem: {request.problem.question}\n\nSolution steps:\n{steps}\n\n"
        f"Is step {n} correct? Answer 'Verdict: correct' or 'Verdict: incorrect'."
    )


@dataclass(frozen=True)
class PromptStyle:
    """How a backend writes its system prompt (the step format comes with each request)."""

    system_prompt: str | None = None  # None: DEFAULT_SYSTEM_PROMPT; "" : no system turn

    def system_text(self, step_format: StepFormat) -> str:
        if self.system_prompt is not None:
            return self.system_prompt
        return DEFAULT_SYSTEM_PROMPT.format(format_instruction=step_format.instruction)


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
    system = style.system_text(request.step_format) if request.purpose == "solve" else JUDGE_SYSTEM_PROMPT
    if system:
        out.append({"role": "system", "content": system})
    question = request.problem.question if request.purpose == "solve" else judge_question(request)
    images = request.problem.images
    if image_parts == "none" or not images:
        if images:
            _say_images_dropped()
        out.append({"role": "user", "content": question})
    else:
        parts: list[dict[str, Any]] = []
        for image in images:
            if image_parts == "data_url":
                parts.append({"type": "image_url", "image_url": {"url": data_url(image)}})
            else:
                parts.append({"type": "image"})
        parts.append({"type": "text", "text": question})
        out.append({"role": "user", "content": parts})
    if request.continues:
        out.append({"role": "assistant", "content": request.step_format.prefix_text(request.prefix)})
    return out


#: Data URLs of the images sent lately, by content hash: a problem's image goes out with each
#: of its requests, and looking at its header and encoding it once is enough. Bounded by
#: characters held (an image may be tens of MB), not by count.
_SENT: OrderedDict[str, str] = OrderedDict()
_SENT_MAX_CHARS = 64 << 20
_sent_chars = 0
_SENT_LOCK = threading.Lock()


def data_url(image: ProblemImage) -> str:
    """The image as an OpenAI ``image_url`` data URL, its bytes as given where a server
    decodes them as the run's readers do. Otherwise a PNG of what :func:`decode_rgb` shows:
    a server opens the bytes with PIL and converts to RGB, so it would show a photo with
    an EXIF orientation unrotated (``datasets`` shows it rotated), a 16-bit image white and
    a transparent one on black (``transformers serve``; vLLM lays it on white, as the run's
    readers do), and may not read a TIFF or BMP at all."""
    key = image.sha256 if isinstance(image, ProblemImage) else None
    with _SENT_LOCK:
        if key is not None and key in _SENT:
            _SENT.move_to_end(key)
            return _SENT[key]
    data = bytes(image)
    if _needs_decoding(data):
        buffer = io.BytesIO()
        decode_rgb(data).save(buffer, "PNG")
        data = buffer.getvalue()
    url = f"data:{_mime(data)};base64,{base64.b64encode(data).decode('ascii')}"
    if key is not None and len(url) <= _SENT_MAX_CHARS // 4:
        global _sent_chars
        with _SENT_LOCK:
            if key not in _SENT:
                _SENT[key] = url
                _sent_chars += len(url)
            while _sent_chars > _SENT_MAX_CHARS:
                _sent_chars -= len(_SENT.popitem(last=False)[1])
    return url


def _needs_decoding(data: bytes) -> bool:
    if _mime(data) == "application/octet-stream":
        return True
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:  # the header only
            return (high_depth(image.mode) or image.getexif().get(_ORIENTATION, 1) not in (None, 1)
                    or image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info)
    except Exception:  # noqa: BLE001 - not for us to judge: the server says what it makes of it
        return False


_ORIENTATION = 0x0112  # the EXIF tag


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


_images_dropped_said = False


def _say_images_dropped() -> None:
    """Once per process: a problem's images went to no model (a text-only model, or
    ``send_images = false``). Its rows keep the images, but its labels come from answers
    given without them, which nothing else would show."""
    global _images_dropped_said
    if not _images_dropped_said:
        _images_dropped_said = True
        logging.getLogger("prmtree").warning(
            "prmtree: a model here takes no images (a text-only model, send_images = false, or the openai policy's "
            "completions endpoint): problems with images are answered from their text alone, and their rows keep "
            "images the labels never saw")


def render(template_owner: Any, request: GenerationRequest, style: PromptStyle, *, multimodal: bool) -> str:
    """The prompt text, rendered with a tokenizer's or processor's chat template.

    With a prefix, the last (assistant) message is left open: no end-of-turn token, so the
    model continues it; without one, the assistant turn is opened for the model.
    """
    msgs = messages(request, style, image_parts="template" if multimodal else "none")
    continuing = request.continues
    text = template_owner.apply_chat_template(
        msgs,
        tokenize=False,
        add_generation_prompt=not continuing,
        continue_final_message=continuing,
    )
    if continuing:
        # Templates strip trailing whitespace of the open message; the delimiter matters.
        tail = request.step_format.prefix_text(request.prefix)
        stripped = tail.rstrip()
        if text.endswith(stripped) and not text.endswith(tail):
            text = text + tail[len(stripped):]
    return text


def continuation_for_parsing(text: str, request: GenerationRequest) -> str:
    """A backend's continuation, completed with the step opening the prompt ended on.

    The prompt ends with the opening of the next step (``<step>``, ``Step N:``); the
    model's text starts inside that step, so segmentation needs the opening back.
    """
    if not request.continues:
        return text
    return request.step_format.restore_opening(text, len(request.prefix))
