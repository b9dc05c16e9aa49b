"""Building policies: the registry's policy kind, checks before a model loads, and
building the chosen one.

A policy is anything with ``async def generate(request) -> list[Completion]``
(:class:`~prmtree.engine.contracts.Policy`). It never knows whether it runs in the driver
or inside a Ray actor. Built-in backends are registered by dotted path
(``engine/registry.py``) and imported only when chosen, so ``import prmtree`` never
imports vLLM or torch.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from prmtree.engine.contracts import Policy
from prmtree.engine.errors import PolicyConfigError, raised
from prmtree.engine.records import Completion, GenerationRequest
from prmtree.engine.registry import POLICIES


def register_policy(name: str) -> Callable[[Any], Any]:
    """Class (or async function) decorator: make a policy available by ``name``."""
    return POLICIES.register(name)


def available_policies() -> list[str]:
    return sorted(POLICIES.names())


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
        if inspect.iscoroutinefunction(spec):  # ``async def generate(request)`` given itself, as by name
            return _function_policy(spec, _shown(spec), kwargs)
        if inspect.isfunction(spec) or inspect.ismethod(spec):
            raise _not_async(_shown(spec), spec)
        if inspect.isclass(spec):
            raise PolicyConfigError(f"policy {_shown(spec)!r} is a class: pass an instance ({spec.__name__}(...)), or "
                                    f"its name '{spec.__module__}:{spec.__qualname__}' with its arguments")
        _check_generate(type(spec), type(spec).__name__)
        return spec
    target = POLICIES.get(spec)
    kwargs = dict(kwargs or {})
    if inspect.iscoroutinefunction(target):
        return _function_policy(target, spec, kwargs)
    if not callable(target):
        raise PolicyConfigError(f"policy {spec!r} is not a class or an async function")
    if inspect.isclass(target):
        _check_generate(target, spec)
    elif inspect.isfunction(target) and "request" in inspect.signature(target).parameters:
        raise _not_async(spec, target)  # a plain function taking the request: written without async
    try:
        inspect.signature(target).bind(**kwargs)
    except TypeError as exc:
        if str(exc).startswith("missing a required argument"):  # "missing a required argument: 'model'"
            name = str(exc).partition(": ")[2].strip("'")
            raise PolicyConfigError(f"policy {spec!r} needs the argument {name!r}: give it with --policy-arg "
                                    f"{name}=... (or [policy] {name} = ...)") from None
        raise PolicyConfigError(f"policy {spec!r} does not take arguments {sorted(kwargs)}: {exc}") from None
    except ValueError:  # no signature to read (a builtin): building it will tell
        pass
    return target


def _function_policy(fn: Any, shown: str, kwargs: dict[str, Any] | None) -> Any:
    """An ``async def generate(request)`` as the policy: it takes no arguments of its own."""
    if kwargs:
        raise PolicyConfigError(f"policy function {shown!r} takes no keyword arguments, got {sorted(kwargs)}")
    return fn


def _not_async(shown: str, fn: Any) -> PolicyConfigError:
    return PolicyConfigError(f"policy function {shown!r} must be 'async def {fn.__name__}(request)'")


def _shown(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


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
        return FunctionPolicy(spec) if inspect.iscoroutinefunction(spec) else _lookups_checked(spec)
    if inspect.iscoroutinefunction(target):
        return FunctionPolicy(target)
    try:
        policy = target(**dict(kwargs or {}))
    except (TypeError, ValueError) as exc:  # a bad argument: the message names it
        raise PolicyConfigError(f"cannot build policy {spec!r}: {exc}") from None
    except (Exception, SystemExit) as exc:  # a model that will not load (CUDA out of memory), a missing setting...
        # whatever it is, the configuration names a policy that cannot be built: one line,
        # exit 2, never the crash a rerun resumes from
        raise PolicyConfigError(f"cannot build policy {spec!r}: {raised(exc)}") from None
    return _lookups_checked(policy)


#: The attributes prmtree reads from a policy object where it has them.
OPTIONAL_ATTRIBUTES = ("name", "policy_name", "capacity", "close")
_ABSENT = object()


def _lookups_checked(policy: Any) -> Any:
    """``policy``, once its ``__getattr__`` (if it has one) is seen to raise AttributeError
    for a name it lacks: prmtree reads the optional attributes (``name``, ``capacity``,
    ``close``) with ``getattr(policy, name, default)``, which only that error defaults.
    A wrapper forwarding to a settings dict (``return self._settings[key]``) raises
    KeyError instead, and would crash the run where it first looks."""
    if getattr(type(policy), "__getattr__", None) is None:
        return policy
    for name in OPTIONAL_ATTRIBUTES:
        if inspect.getattr_static(policy, name, _ABSENT) is not _ABSENT:
            continue  # defined: its __getattr__ is never asked
        try:
            getattr(policy, name, None)
        except Exception as exc:
            raise PolicyConfigError(
                f"policy {type(policy).__name__}: its __getattr__ raised {type(exc).__name__} for {name!r}, a name "
                "it does not have; it must raise AttributeError there, as prmtree reads its optional attributes "
                f"({', '.join(OPTIONAL_ATTRIBUTES)}) with getattr(policy, name, default)") from None
    return policy



def worker_gpus(spec: str | Policy, kwargs: dict[str, Any] | None = None) -> float:
    """GPUs one worker of this policy needs: the policy's ``worker_gpus(kwargs)`` class
    hook (vLLM: its tensor-parallel size), else 0."""
    target = spec if not isinstance(spec, str) else POLICIES.get(spec)
    hook = getattr(target, "worker_gpus", None)
    return float(hook(dict(kwargs or {}))) if callable(hook) else 0.0


def operational_args(spec: str) -> frozenset[str]:
    """The policy's arguments that change speed, never rows (its ``operational_args``)."""
    try:
        target = POLICIES.get(spec)
    except PolicyConfigError:
        return frozenset()
    return frozenset(getattr(target, "operational_args", ()))


def policy_name(policy: Any) -> str:
    """A short name for the output's ``policy`` column."""
    return str(getattr(policy, "name", None) or type(policy).__name__)
