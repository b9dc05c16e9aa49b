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
import os
import reprlib
from collections.abc import Awaitable, Callable
from typing import Any

from prmtree.engine.contracts import Policy
from prmtree.engine.errors import PolicyConfigError, raised
from prmtree.engine.records import Completion, GenerationRequest, safe_text
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
    constructor; an object (given, or named ``module:obj``) is checked whole, its ``name``
    too. Returns the class, function or instance. Raises PolicyConfigError."""
    if not isinstance(spec, str):
        if inspect.iscoroutinefunction(spec):  # ``async def generate(request)`` given itself, as by name
            return _function_policy(spec, _shown(spec), kwargs)
        if inspect.isfunction(spec) or inspect.ismethod(spec):
            raise _not_async(_shown(spec), spec)
        if inspect.isclass(spec):
            raise PolicyConfigError(f"policy {_shown(spec)!r} is a class: pass an instance ({spec.__name__}(...)), or "
                                    f"its name '{spec.__module__}:{spec.__qualname__}' with its arguments")
        return _instance_checked(spec, type(spec).__name__)
    target = POLICIES.get(spec)
    kwargs = dict(kwargs or {})
    if inspect.iscoroutinefunction(target):
        return _function_policy(target, spec, kwargs)
    if _is_policy_object(target):  # ``module:obj`` naming an instance: built already, as the Python API takes it
        if kwargs:
            raise PolicyConfigError(f"policy {spec!r} is a {type(target).__name__} object, built already: it takes "
                                    f"no arguments, got {sorted(kwargs)}")
        return _instance_checked(target, spec)
    if not callable(target):
        raise PolicyConfigError(f"policy {spec!r} is a {type(target).__name__}, not a policy: {_ACCEPTED}")
    if inspect.isclass(target):
        _check_generate(target, spec)
        _check_class_name(target, spec)
    elif _takes_request(target):
        if inspect.isfunction(target) or inspect.ismethod(target):
            raise _not_async(spec, target)  # a plain function taking the request: written without async
        raise PolicyConfigError(f"policy {spec!r} is a callable {type(target).__name__} object, not a policy: give it "
                                "'async def generate(self, request)' (prmtree calls generate, never __call__), or "
                                "name an 'async def generate(request)' function")
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


#: What a policy named ``module:obj`` may be, for a refusal to say.
_ACCEPTED = ("name a policy class, an object with 'async def generate(self, request)', a function returning such "
             "an object, or an 'async def generate(request)' function")


def _is_policy_object(target: Any) -> bool:
    """Whether ``target`` (named ``module:obj``) is a policy already built: an object, not
    a class or function, with a ``generate`` of its own or its class's."""
    if inspect.isclass(target) or inspect.isroutine(target):
        return False
    return inspect.getattr_static(target, "generate", _ABSENT) is not _ABSENT


def _takes_request(target: Any) -> bool:
    """Whether calling ``target`` takes the request: a generate written as something else,
    never a function building a policy (that takes the policy's arguments)."""
    try:
        return "request" in inspect.signature(target).parameters
    except (TypeError, ValueError):  # no signature to read
        return False


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
        raise PolicyConfigError(f"policy {shown!r} has no generate(request) method: define 'async def "
                                "generate(self, request)' in its class")
    if not inspect.iscoroutinefunction(generate):
        raise PolicyConfigError(f"policy {shown!r}: generate must be 'async def generate(self, request)'")


def _check_instance_generate(policy: Any, shown: str) -> None:
    """An object's ``generate``: one it holds itself (``self.generate = inner.generate``, a
    delegation) comes before its class's, as Python looks it up."""
    try:
        own = object.__getattribute__(policy, "__dict__").get("generate", _ABSENT)
    except AttributeError:  # no __dict__ (__slots__): only its class's
        own = _ABSENT
    if own is _ABSENT:
        _check_generate(type(policy), shown)
    elif not inspect.iscoroutinefunction(own):
        raise PolicyConfigError(f"policy {shown!r}: the generate it holds ({_shown(own)}) must be an async "
                                "function of the request")


def _check_class_name(cls: type, shown: str) -> None:
    """A class's ``name``, where it can be read unbuilt: a method is refused before any
    model loads (a property is read once built)."""
    name = inspect.getattr_static(cls, "name", None)
    if inspect.isfunction(name) or isinstance(name, (staticmethod, classmethod)):
        _name_text(name, shown)  # raises: a method (a value may be a default the instance replaces)


def _instance_checked(policy: Any, shown: str) -> Any:
    """``policy``, an object, once its ``generate``, optional attributes and ``name`` are
    seen to be usable."""
    _check_instance_generate(policy, shown)
    _lookups_checked(policy)
    policy_name(policy)
    return policy


def resolve_policy(spec: str | Policy, kwargs: dict[str, Any] | None = None) -> Policy:
    """Build a policy from a registered name, ``module:Class`` (or a function building
    one), return ``module:obj`` or an instance as is."""
    target = check_policy(spec, kwargs)
    if not isinstance(spec, str):
        return FunctionPolicy(spec) if inspect.iscoroutinefunction(spec) else spec  # checked whole
    if inspect.iscoroutinefunction(target):
        return FunctionPolicy(target)
    if _is_policy_object(target):
        return target  # checked whole
    try:
        policy = target(**dict(kwargs or {}))
    except (TypeError, ValueError) as exc:  # a bad argument: the message names it
        raise PolicyConfigError(f"cannot build policy {spec!r}: {exc}") from None
    except KeyboardInterrupt:  # Ctrl-C, or a SIGTERM (StopSignal) while the model loads: the run is stopped
        raise
    except BaseException as exc:  # a model that will not load (CUDA out of memory), a missing setting...
        # whatever it is (SystemExit, a library's own BaseException), the configuration names a
        # policy that cannot be built: one line, exit 2, never the crash a rerun resumes from
        raise PolicyConfigError(f"cannot build policy {spec!r}: {raised(exc)}") from None
    return _built_checked(policy, target, spec)


def _built_checked(policy: Any, target: Any, spec: str) -> Policy:
    """What ``target`` built, checked as an instance given itself is: a function building
    the policy is called blind (its result has no signature to read before)."""
    if inspect.iscoroutinefunction(policy):  # a function returning ``async def generate(request)``
        return FunctionPolicy(policy)
    if policy is None or inspect.isclass(policy) or inspect.isroutine(policy):
        kind = "class" if inspect.isclass(policy) else "function"
        built = "None" if policy is None else f"the {kind} {_shown(policy)}"
        raise PolicyConfigError(f"policy {spec!r} returned {built}, not a policy: "
                                f"{_shown(target)}(...) must return an object with 'async def generate(self, request)'")
    return _instance_checked(policy, spec)


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
    """A short name for the output's ``policy`` column: the policy's ``name``, else (None or
    "") its class's. Raises PolicyConfigError for a ``name`` that is no non-empty str (a method, a
    number) or that raises when read: checked with the policy, never found at the first
    write. A lone surrogate in it is written out (``\\udcff``), as in an error row."""
    try:
        name = getattr(policy, "name", None)
    except Exception as exc:
        raise PolicyConfigError(f"policy {type(policy).__name__}: reading its name raised {raised(exc)}; name must be "
                                "a non-empty str") from None
    return type(policy).__name__ if name is None or name == "" else _name_text(name, type(policy).__name__)


def _name_text(name: Any, shown: str) -> str:
    """``name`` as the ``policy`` column stores it (a path as its text); raises
    PolicyConfigError where it is no name."""
    if isinstance(name, os.PathLike):  # a model's folder
        name = os.fspath(name)
    if isinstance(name, str) and name:
        return safe_text(name)
    if callable(name) or isinstance(name, (staticmethod, classmethod)):
        got = "a method: make it an attribute (name = \"...\") or a property"
    else:
        got = f"{reprlib.repr(name)} ({type(name).__name__})"
    raise PolicyConfigError(f"policy {shown}: name must be a non-empty str (the output's policy column), got {got}")
