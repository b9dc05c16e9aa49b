"""Hugging Face transformers backend: ``generate`` on CPU or CUDA, for small models and debugging.

One request is one batched ``generate`` call with ``num_return_sequences = n``. Calls
run one at a time in a worker thread (a model is not re-entrant), seeded per request.
Sampling is the request's alone: the checkpoint's ``generation_config.json`` gives only
its special token ids (as with vLLM, a folder's ``top_k=1`` must not collapse the k
rollouts to one).
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
        owner = self.processor if self.multimodal else self.tokenizer
        if self.multimodal and not getattr(owner, "chat_template", None) and getattr(self.tokenizer, "chat_template", None):
            owner.chat_template = self.tokenizer.chat_template  # a folder whose template is its tokenizer's only
        if not getattr(owner, "chat_template", None):
            raise PolicyConfigError(
                f"the model folder {model} has no chat template, and the hf policy renders every prompt with one; "
                "use an instruction-tuned (chat) model, or add its template (chat_template.jinja) to the folder"
            )
        self.model = auto.from_pretrained(model, dtype=torch_dtype).to(device).eval()
        self.eos_ids = _eos_ids(self.model.generation_config, self.tokenizer)
        self.pad_id = _pad_id(self.model.generation_config, self.tokenizer, self.eos_ids)
        self.model.generation_config = transformers.GenerationConfig(
            bos_token_id=self.model.generation_config.bos_token_id,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
        )
        self._lock = threading.Lock()

    def prompt(self, request: GenerationRequest) -> str:
        owner = self.processor if self.multimodal else self.tokenizer
        return render(owner, request, self.style, multimodal=self.multimodal and bool(request.problem.images))

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        return await asyncio.to_thread(self._generate, request)

    def _generate(self, request: GenerationRequest) -> list[Completion]:
        import torch
        from transformers import StoppingCriteriaList

        prompt = self.prompt(request)
        if self.multimodal and request.problem.images:
            images = [decode_rgb(im.data) for im in request.problem.images]
            inputs = self.processor(text=[prompt], images=images, return_tensors="pt")
        else:
            inputs = self.tokenizer([prompt], return_tensors="pt", add_special_tokens=False)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        prompt_len = inputs["input_ids"].shape[1]
        stopping = StoppingCriteriaList()
        if request.next_step_only:
            stops = list(request.step_format.stop_strings)
            stopping.append(_StopInGeneratedText(self.tokenizer, stops, prompt_len))
        with self._lock, torch.no_grad():
            torch.manual_seed(request.seed)
            output = self.model.generate(
                **inputs, generation_config=self._sampling(request), stopping_criteria=stopping
            )
        out = []
        for row in output[:, prompt_len:]:
            ids = row.tolist()
            end = next((i for i, t in enumerate(ids) if t in self.eos_ids), None)
            finished = end is not None
            if finished:
                ids = ids[:end]
            ids = [t for t in ids if t != self.pad_id]
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            reason = "stop" if finished or len(ids) < request.max_tokens else "length"
            if request.next_step_only:
                text, cut = _first_step(text, list(request.step_format.stop_strings))
                reason = "stop" if cut else reason
            out.append(Completion(continuation_for_parsing(text, request), len(ids), reason))
        return out

    def _sampling(self, request: GenerationRequest) -> Any:
        """The request's sampling alone: every knob it does not set stays at transformers'
        neutral value (``top_k=0`` is off), as the model's generation config holds only ids."""
        from transformers import GenerationConfig

        sampling = request.temperature > 0
        knobs = {"temperature": request.temperature, "top_p": request.top_p, "top_k": 0} if sampling else {}
        return GenerationConfig(
            max_new_tokens=request.max_tokens, num_return_sequences=request.n, do_sample=sampling, **knobs
        )


def _eos_ids(generation_config: Any, tokenizer: Any) -> list[int]:
    """Where a sequence ends: the checkpoint's eos ids and the tokenizer's (as vLLM stops at both)."""
    ids = generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def _pad_id(generation_config: Any, tokenizer: Any, eos_ids: list[int]) -> int | None:
    """The tokenizer's pad id (0 is an id), else the checkpoint's, else the first eos id."""
    for pad in (tokenizer.pad_token_id, generation_config.pad_token_id):
        if pad is not None:
            return pad
    return eos_ids[0] if eos_ids else None


class _StopInGeneratedText:
    """Stops a sequence once its generated text holds a stop string.

    transformers' own ``stop_strings`` also match across the prompt: a prompt ending in
    "\\n" and a first generated "Step 1" would end at "\\nStep ". Only the last few
    generated tokens are decoded (enough to cover the longest stop string; a match is
    checked at every token, so it ends there), never prompt tokens. Called by ``generate``
    like a ``transformers.StoppingCriteria`` (not subclassed: this module imports
    transformers only when the policy is built).
    """

    def __init__(self, tokenizer: Any, stops: list[str], prompt_len: int) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        self.prompt_len = prompt_len
        self.window = max(len(s) for s in stops) + 4  # tokens: each decodes to at least one character

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        tails = input_ids[:, self.prompt_len :][:, -self.window :]
        texts = self.tokenizer.batch_decode(tails, skip_special_tokens=True)
        done = [any(s in text for s in self.stops) for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _first_step(text: str, stops: list[str]) -> tuple[str, bool]:
    """Text up to the first stop string (``generate`` may run a token past it)."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
