"""One registry shape for everything pluggable: strategies, labellers, policies,
executors and export formats.

A component is found by name in this order: one registered in this process
(``@STRATEGIES.register("name")``), a built-in (a dotted path, imported only when it is
chosen, so ``import prmtree`` loads no backend), an entry point of the kind's group
(``prmtree.policies``, ...), or a ``module:Class`` path. The built-ins are listed here
and nowhere else, as strings: the config validates names against this module without
importing the layers above it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

from prmtree.engine.errors import ConfigError, PolicyConfigError, raised

T = TypeVar("T")


class Registry:
    """Names to components of one kind (see the module docstring)."""

    def __init__(
        self, kind: str, builtins: dict[str, str], *, error: type[Exception] = ConfigError, sort: bool = False
    ) -> None:
        self.kind = kind  # "strategy", "policy", ...: for messages
        self.group = f"prmtree.{kind.replace(' ', '_')}s" if not kind.endswith("y") else f"prmtree.{kind[:-1]}ies"
        self._builtins = dict(builtins)
        self._registered: dict[str, Any] = {}
        self._error = error
        self._sort = sort  # list names alphabetically (else: built-ins first, in their order)

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: make ``obj`` available as ``name`` (a later registration wins)."""

        def decorate(obj: T) -> T:
            self._registered[name] = obj
            return obj

        return decorate

    def unregister(self, name: str) -> None:
        """Forget a name registered with :meth:`register` (built-ins and entry points stay)."""
        self._registered.pop(name, None)

    def names(self) -> list[str]:
        """Every known name: built-ins first, in their order, then the others sorted."""
        extra = (set(self._registered) | {ep.name for ep in self._entry_points()}) - set(self._builtins)
        names = list(self._builtins) + sorted(extra)
        return sorted(names) if self._sort else names

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (":" in name or name in self._registered or name in self._builtins
                                          or any(ep.name == name for ep in self._entry_points()))

    def require(self, name: str) -> str:
        """``name`` when it is known; a ValueError naming the known ones otherwise (what a
        config validator raises, without importing the component)."""
        if name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return name

    def get(self, name: str) -> Any:
        """The component called ``name``; raises this registry's error, naming the known ones."""
        if name in self._registered:
            return self._registered[name]
        if name in self._builtins:
            return self._import(self._builtins[name], name)
        if ":" in name:
            return self._import(name, name)
        for ep in self._entry_points():
            if ep.name == name:
                try:
                    return ep.load()
                except (Exception, SystemExit) as exc:
                    raise self._error(f"cannot load {self.kind} {name!r} ({ep.value}): {raised(exc)}") from None
        raise self._error(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}" + self._dotted_hint())

    def find(self, name: str) -> Any | None:
        """:meth:`get`, or None where the name does not resolve."""
        try:
            return self.get(name)
        except Exception:
            return None

    def _dotted_hint(self) -> str:
        return " (or module:Class)"

    def _import(self, spec: str, name: str) -> Any:
        """``module:attr`` for the component called ``name``. Whatever the module raises
        while it is imported (a SyntaxError, a KeyError from reading ``os.environ``, a failed
        assert) is this registry's one-line error: the configuration names code that does
        not load, which no rerun of the same command fixes."""
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            # the module itself not found (not one it imports): say where it is looked for
            hint = ("; a module of your own is found in the folder prmtree runs in, or on PYTHONPATH"
                    if getattr(exc, "name", None) == module_name.split(".")[0] else "")
            raise self._error(f"cannot import {self.kind} module {module_name!r}: {exc}{hint}") from None
        except (Exception, SystemExit) as exc:
            raise self._error(f"cannot import {self.kind} {name!r}: module {module_name!r} raised {raised(exc)}") from None
        try:
            return getattr(module, attr)
        except AttributeError:
            raise self._error(f"module {module_name!r} has no attribute {attr!r}") from None

    def _entry_points(self) -> list[Any]:
        from importlib.metadata import entry_points

        return list(entry_points(group=self.group))


STRATEGIES = Registry("strategy", {
    "omega": "prmtree.engine.search.omega:OmegaSearch",
    "shepherd": "prmtree.engine.search.shepherd:ShepherdSearch",
    "mcts": "prmtree.engine.search.mcts:MCTSSearch",
})
LABELERS = Registry("labelling method", {
    "mc": "prmtree.engine.labelers:MCLabeler",
    "calibrated": "prmtree.engine.labelers:CalibratedLabeler",
    "consensus": "prmtree.engine.labelers:ConsensusLabeler",
})
POLICIES = Registry("policy", {
    "simulated": "prmtree.policies.simulated:SimulatedPolicy",
    "vllm": "prmtree.policies.vllm_policy:VLLMPolicy",
    "openai": "prmtree.policies.openai_policy:OpenAIPolicy",
    "hf": "prmtree.policies.hf_policy:HFPolicy",
}, error=PolicyConfigError, sort=True)
EXECUTORS = Registry("executor", {
    "inline": "prmtree.rollout_workers.inline:InlineExecutor",
    "ray": "prmtree.rollout_workers.ray:RayExecutor",
    "host": "prmtree.rollout_workers.host:HostExecutor",
})
EXPORT_FORMATS = Registry("export format", {})  # filled by prmtree/export/ (formats register themselves)
