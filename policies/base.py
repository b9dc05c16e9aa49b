"""The policy contract, its request/completion records, and the policy registry.

A policy is anything with ``async def generate(request) -> list[Completion]``. It never
knows whether it runs in the driver or inside a Ray actor. Built-in backends are
registered by dotted path and imported only when chosen, so ``import prmtree`` never
imports vLLM or torch.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from prmtree.engine.problem import Problem
from prmtree.engine.steps import StepFormat

FINISH_REASONS = ("stop", "length")
PURPOSES = ("solve", "judge")


@dataclass(frozen=True)
class GenerationRequest:
    """Ask for ``n`` continuations of ``prefix`` (steps already taken) for ``problem``."""

    problem: Problem
    prefix: tuple[str, ...]
    n: int
    max_tokens: int = 1024
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int = 0
    next_step_only: bool = False
    step_format: StepFormat = StepFormat()  # how to write steps: the run's format, for every policy
    purpose: str = "solve"  # "solve": continue the prefix; "judge": is the prefix's last step correct?

    @property
    def continues(self) -> bool:
        """The model continues an open assistant turn holding the prefix (not a judge's question)."""
        return bool(self.prefix) and self.purpose == "solve"

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, tuple):
            object.__setattr__(self, "prefix", tuple(self.prefix))
        if isinstance(self.step_format, str):
            object.__setattr__(self, "step_format", StepFormat(self.step_format))
        if self.purpose not in PURPOSES:
            raise ValueError(f"GenerationRequest.purpose must be one of {', '.join(PURPOSES)}, got {self.purpose!r}")
        if self.purpose == "judge" and not self.prefix:
            raise ValueError("a judge request needs the steps to judge in its prefix")
        if self.n < 1:
            raise ValueError(f"GenerationRequest.n must be at least 1, got {self.n}")
        if self.max_tokens < 1:
            raise ValueError(f"GenerationRequest.max_tokens must be at least 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"GenerationRequest.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"GenerationRequest.top_p must be in (0, 1], got {self.top_p}")


@dataclass
class Completion:
    """One continuation of a request's prefix."""

    text: str
    num_tokens: int = 0
    finish_reason: str = "stop"  # "stop" | "length"
    cached_tokens: int = 0  # prompt tokens served from the prefix cache, if reported
    prompt_tokens: int = 0  # the request's prompt length, if reported

    # A request's prompt is shared by its n completions: backends report the prompt's
    # token counts on the first completion only, so sums over completions stay right.


@runtime_checkable
class Policy(Protocol):
    async def generate(self, request: GenerationRequest) -> list[Completion]: ...


class PolicyConfigError(ValueError):
    """A policy cannot be built or used as configured (unknown name, bad argument, sync
    ``generate``). Never retried: the run stops at load with this one line (exit 2)."""


class GenerationError(RuntimeError):
    """One request failed. ``retryable``: whether trying again may help (a timeout, a 503,
    a dropped connection) or not (a 400 for this request, an answer that breaks the
    contract). The driver is the only layer that retries."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable

    def __reduce__(self) -> tuple[Any, ...]:  # keep the flag across Ray's pickling
        return (_generation_error, (str(self), self.retryable))


def _generation_error(message: str, retryable: bool) -> GenerationError:
    return GenerationError(message, retryable=retryable)


class PolicyContractError(GenerationError):
    """A policy answered with something that is not ``n`` well-formed completions."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)

    def __reduce__(self) -> tuple[Any, ...]:
        return (PolicyContractError, (str(self),))


def check_completions(request: GenerationRequest, completions: Any, who: str = "policy") -> list[Completion]:
    """The policy contract, checked where answers enter the engine: a list of exactly
    ``request.n`` Completions with text, non-negative token counts and a known finish reason."""
    if not isinstance(completions, list):
        raise PolicyContractError(f"{who}.generate must return a list of Completion, got {type(completions).__name__}")
    if len(completions) != request.n:
        raise PolicyContractError(f"{who}.generate returned {len(completions)} completions for n={request.n}")
    for c in completions:
        if not isinstance(c, Completion):
            raise PolicyContractError(f"{who}.generate must return Completion objects, got {type(c).__name__}")
        if not isinstance(c.text, (str, bytes)):
            raise PolicyContractError(f"{who}: Completion.text must be a string, got {type(c.text).__name__}")
        for name in ("num_tokens", "cached_tokens", "prompt_tokens"):
            value = getattr(c, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PolicyContractError(f"{who}: Completion.{name} must be an int >= 0, got {value!r}")
        if c.finish_reason not in FINISH_REASONS:
            raise PolicyContractError(
                f"{who}: Completion.finish_reason must be one of {', '.join(FINISH_REASONS)}, got {c.finish_reason!r}"
            )
    return completions


_BUILTIN: dict[str, str] = {
    "simulated": "prmtree.policies.simulated:SimulatedPolicy",
    "vllm": "prmtree.policies.vllm_policy:VLLMPolicy",
    "openai": "prmtree.policies.openai_policy:OpenAIPolicy",
    "hf": "prmtree.policies.hf_policy:HFPolicy",
}
BUILTIN_POLICIES = frozenset(_BUILTIN)
_REGISTRY: dict[str, Any] = {}


def register_policy(name: str) -> Callable[[Any], Any]:
    """Class (or async function) decorator: make a policy available by ``name``."""

    def decorate(obj: Any) -> Any:
        _REGISTRY[name] = obj
        return obj

    return decorate


def available_policies() -> list[str]:
    names = set(_BUILTIN) | set(_REGISTRY) | {ep.name for ep in _entry_points()}
    return sorted(names)


def _entry_points() -> list[Any]:
    from importlib.metadata import entry_points

    return list(entry_points(group="prmtree.policies"))


def _import_dotted(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PolicyConfigError(f"cannot import policy module {module_name!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise PolicyConfigError(f"module {module_name!r} has no attribute {attr!r}") from None


def _lookup(name: str) -> Any:
    if ":" in name:
        return _import_dotted(name)
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _BUILTIN:
        return _import_dotted(_BUILTIN[name])
    for ep in _entry_points():
        if ep.name == name:
            return ep.load()
    raise PolicyConfigError(f"unknown policy {name!r}; known: {', '.join(available_policies())} (or module:Class)")


class FunctionPolicy:
    """Wraps a plain ``async def generate(request)`` as a policy."""

    def __init__(self, fn: Callable[[GenerationRequest], Awaitable[list[Completion]]]) -> None:
        self.fn = fn
        self.name = getattr(fn, "__name__", "function")

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        return await self.fn(request)


def check_policy(spec: str | Policy, kwargs: dict[str, Any] | None = None) -> Any:
    """Everything about a policy that can be checked without building it (no model
    loads): the name resolves, ``generate`` is ``async``, the arguments fit the
    constructor. Returns the class, function or instance. Raises PolicyConfigError."""
    if not isinstance(spec, str):
        _check_generate(type(spec), type(spec).__name__)
        return spec
    target = _lookup(spec)
    kwargs = dict(kwargs or {})
    if inspect.iscoroutinefunction(target):
        if kwargs:
            raise PolicyConfigError(f"policy function {spec!r} takes no keyword arguments, got {sorted(kwargs)}")
        return target
    if not callable(target):
        raise PolicyConfigError(f"policy {spec!r} is not a class or an async function")
    if inspect.isclass(target):
        _check_generate(target, spec)
    elif inspect.isfunction(target) and "request" in inspect.signature(target).parameters:
        # a plain function taking the request: a policy function written without async
        raise PolicyConfigError(f"policy function {spec!r} must be 'async def {target.__name__}(request)'")
    try:
        inspect.signature(target).bind(**kwargs)
    except TypeError as exc:
        raise PolicyConfigError(f"policy {spec!r} does not take arguments {sorted(kwargs)}: {exc}") from None
    except ValueError:  # no signature to read (a builtin): building it will tell
        pass
    return target


def _check_generate(cls: type, shown: str) -> None:
    generate = getattr(cls, "generate", None)
    if generate is None:
        raise PolicyConfigError(f"policy {shown!r} has no generate(request) method")
    if not inspect.iscoroutinefunction(generate):
        raise PolicyConfigError(f"policy {shown!r}: generate must be 'async def generate(self, request)'")


def resolve_policy(spec: str | Policy, kwargs: dict[str, Any] | None = None) -> Policy:
    """Build a policy from a registered name, ``module:Class``, or return an instance as is."""
    target = check_policy(spec, kwargs)
    if not isinstance(spec, str):
        return spec
    if inspect.iscoroutinefunction(target):
        return FunctionPolicy(target)
    try:
        return target(**dict(kwargs or {}))
    except (TypeError, ValueError) as exc:
        raise PolicyConfigError(f"cannot build policy {spec!r}: {exc}") from None


def worker_gpus(spec: str | Policy, kwargs: dict[str, Any] | None = None) -> float:
    """GPUs one worker of this policy needs: the policy's ``worker_gpus(kwargs)`` class
    hook (vLLM: its tensor-parallel size), else 0."""
    target = spec if not isinstance(spec, str) else _lookup(spec)
    hook = getattr(target, "worker_gpus", None)
    return float(hook(dict(kwargs or {}))) if callable(hook) else 0.0


def operational_args(spec: str) -> frozenset[str]:
    """The policy's arguments that change speed, never rows (its ``operational_args``)."""
    try:
        target = _lookup(spec)
    except PolicyConfigError:
        return frozenset()
    return frozenset(getattr(target, "operational_args", ()))


def policy_name(policy: Any) -> str:
    """A short name for the output's ``policy`` column."""
    return str(getattr(policy, "name", None) or type(policy).__name__)
