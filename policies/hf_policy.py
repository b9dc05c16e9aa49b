"""Hugging Face transformers backend: ``generate`` on CPU or CUDA, for small models and debugging.

One request is one batched ``generate`` call with ``num_return_sequences = n``. Calls
run one at a time in a worker thread (a model is not re-entrant), seeded per request.
"""

from __future__ import annotations

import asyncio
import io
import threading
from typing import Any

from prmtree.engine.errors import PolicyConfigError
from prmtree.engine.records import Completion, GenerationRequest, decode_rgb
from prmtree.policies.prompts import PromptStyle, continuation_for_parsing, render


def _require_transformers() -> Any:
    try:
        import torch  # noqa: F401
        import transformers
    except ImportError as exc:
        raise PolicyConfigError(
            f"the hf policy needs torch and transformers ({exc}); install with: pip install 'prmtree[hf]'"
        ) from None
    return transformers


class HFPolicy:
    name = "hf"

    def __init__(
        self,
        model: str,
        device: str = "auto",
        dtype: str = "auto",
        system_prompt: str | None = None,
    ) -> None:
        transformers = _require_transformers()
        import torch

        self.style = PromptStyle(system_prompt)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        torch_dtype = getattr(torch, dtype) if dtype != "auto" else (torch.bfloat16 if device == "cuda" else torch.float32)
        config = transformers.AutoConfig.from_pretrained(model)
        self.multimodal = hasattr(config, "vision_config")
        if self.multimodal:
            self.processor = transformers.AutoProcessor.from_pretrained(model)
            self.tokenizer = self.processor.tokenizer
            auto = transformers.AutoModelForImageTextToText
        else:
            self.processor = None
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(model)
            auto = transformers.AutoModelForCausalLM
        self.model = auto.from_pretrained(model, dtype=torch_dtype).to(device).eval()
        self._lock = threading.Lock()

    def prompt(self, request: GenerationRequest) -> str:
        owner = self.processor if self.multimodal else self.tokenizer
        return render(owner, request, self.style, multimodal=self.multimodal and bool(request.problem.images))

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        return await asyncio.to_thread(self._generate, request)

    def _generate(self, request: GenerationRequest) -> list[Completion]:
        import torch

        prompt = self.prompt(request)
        if self.multimodal and request.problem.images:
            images = [decode_rgb(im.data) for im in request.problem.images]
            inputs = self.processor(text=[prompt], images=images, return_tensors="pt")
        else:
            inputs = self.tokenizer([prompt], return_tensors="pt", add_special_tokens=False)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        prompt_len = inputs["input_ids"].shape[1]
        sampling = request.temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": request.max_tokens,
            "num_return_sequences": request.n,
            "do_sample": sampling,
            "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        }
        if sampling:
            kwargs.update(temperature=request.temperature, top_p=request.top_p)
        if request.next_step_only:
            kwargs.update(stop_strings=list(request.step_format.stop_strings), tokenizer=self.tokenizer)
        with self._lock, torch.no_grad():
            torch.manual_seed(request.seed)
            output = self.model.generate(**inputs, **kwargs)
        out = []
        eos = self.tokenizer.eos_token_id
        for row in output[:, prompt_len:]:
            ids = row.tolist()
            finished = eos in ids
            if finished:
                ids = ids[: ids.index(eos)]
            pad = self.tokenizer.pad_token_id
            ids = [t for t in ids if t != pad]
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            reason = "stop" if finished or len(ids) < request.max_tokens else "length"
            if request.next_step_only:
                text, cut = _first_step(text, list(request.step_format.stop_strings))
                reason = "stop" if cut else reason
            out.append(Completion(continuation_for_parsing(text, request), len(ids), reason))
        return out


def _first_step(text: str, stops: list[str]) -> tuple[str, bool]:
    """Text up to the first stop string (``generate`` may run a token past it)."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
