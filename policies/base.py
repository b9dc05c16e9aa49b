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

FINISH_REASONS = ("stop", "length")


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

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, tuple):
            object.__setattr__(self, "prefix", tuple(self.prefix))
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


class PolicyError(RuntimeError):
    """A policy could not be found, built, or returned something that is not completions."""


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
        raise PolicyError(f"cannot import policy module {module_name!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise PolicyError(f"module {module_name!r} has no attribute {attr!r}") from None


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
    raise PolicyError(f"unknown policy {name!r}; known: {', '.join(available_policies())} (or module:Class)")


class FunctionPolicy:
    """Wraps a plain ``async def generate(request)`` as a policy."""

    def __init__(self, fn: Callable[[GenerationRequest], Awaitable[list[Completion]]]) -> None:
        self.fn = fn
        self.name = getattr(fn, "__name__", "function")

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        return await self.fn(request)


def resolve_policy(spec: str | Policy, kwargs: dict[str, Any] | None = None) -> Policy:
    """Build a policy from a registered name, ``module:Class``, or return an instance as is."""
    if not isinstance(spec, str):
        if not hasattr(spec, "generate"):
            raise PolicyError(f"{type(spec).__name__} has no generate(request) method")
        return spec
    target = _lookup(spec)
    kwargs = dict(kwargs or {})
    if inspect.iscoroutinefunction(target):
        if kwargs:
            raise PolicyError(f"policy function {spec!r} takes no keyword arguments, got {sorted(kwargs)}")
        return FunctionPolicy(target)
    try:
        policy = target(**kwargs)
    except TypeError as exc:
        raise PolicyError(f"cannot build policy {spec!r} with arguments {sorted(kwargs)}: {exc}") from None
    if not hasattr(policy, "generate"):
        raise PolicyError(f"policy {spec!r} has no generate(request) method")
    return policy


def policy_class(spec: str) -> Any:
    """The class (or function) a policy spec names, without building it."""
    return _lookup(spec)


def policy_name(policy: Any) -> str:
    """A short name for the output's ``policy`` column."""
    return str(getattr(policy, "name", None) or type(policy).__name__)
