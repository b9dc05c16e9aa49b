"""The two contracts at the edges of the engine: a :class:`Policy` writes completions,
an :class:`Executor` runs a policy somewhere (in the driver, on Ray actors).

A search strategy never knows which executor serves it, and a policy never knows it is
inside one. Implementations live in ``policies/`` and ``rollout_workers/``; the engine
sees only these protocols.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Protocol, runtime_checkable

from prmtree.engine.errors import ConfigError
from prmtree.engine.records import Completion, GenerationRequest


@runtime_checkable
class Policy(Protocol):
    """Anything with ``async def generate(request) -> list[Completion]``."""

    async def generate(self, request: GenerationRequest) -> list[Completion]: ...


@runtime_checkable
class Executor(Protocol):
    """What the driver needs from wherever rollouts run."""

    policy_name: str  # the policy's short name, for the output's ``policy`` column

    async def submit(self, request: GenerationRequest) -> list[Completion]:
        """The policy's completions for ``request``; raises its error, or FatalExecutorError."""
        ...

    def release(self, problem_id: str) -> None:
        """The problem's tree is finished: routing state for it may go."""
        ...

    def stats(self) -> dict[str, Any]:
        """Counters for the manifest (requests, resubmissions, worker deaths, ...)."""
        ...

    def load(self) -> dict[int, int]:
        """Requests in flight per worker, for the progress view."""
        ...

    async def close(self) -> None:
        """Stop workers and release the policy's resources."""
        ...


def declared_capacity(backend: Any) -> int | None:
    """The sequences ``backend`` (a policy or an executor) serves at once, where it says so:
    an optional ``capacity`` attribute, an int or a method returning one (None: unknown,
    so the driver finds the level by watching latency). Optional: neither contract needs it."""
    try:
        capacity = getattr(backend, "capacity")
    except ConfigError:
        raise
    except AttributeError as exc:
        if inspect.getattr_static(backend, "capacity", _ABSENT) is _ABSENT:
            return None  # declares none
        # a property that failed (an engine not built yet) is no "unknown": probing would flood it
        raise ConfigError(f"{_name(backend)}.capacity raised AttributeError: {exc}") from None
    except Exception as exc:
        raise ConfigError(f"{_name(backend)}.capacity raised {type(exc).__name__}: {exc}") from None
    if callable(capacity):
        if inspect.iscoroutinefunction(capacity):
            raise ConfigError(f"{_name(backend)}.capacity must be a plain method or attribute, not async: the "
                              "driver reads it between requests")
        try:
            capacity = capacity()
        except ConfigError:  # an executor's capacity() asking its policy: already said
            raise
        except Exception as exc:
            raise ConfigError(f"{_name(backend)}.capacity() raised {type(exc).__name__}: {exc}") from None
    if capacity is None:
        return None
    try:  # a bool or a text is no count (True would be 1 sequence): refused with the rest
        number = math.nan if isinstance(capacity, (bool, str, bytes)) else float(capacity)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number >= 1 and number.is_integer()):
        raise ConfigError(f"{_name(backend)}.capacity must be the sequences it serves at once (a whole number, at "
                          f"least 1) or None, got {capacity!r}")
    return int(number)


_ABSENT = object()


def _name(backend: Any) -> str:
    """How a backend is named in a refusal: its policy's name, else its class."""
    return str(getattr(backend, "policy_name", None) or getattr(backend, "name", None) or type(backend).__name__)


#: The message of every cancellation prmtree sends a request's task (a time limit, a stop):
#: what tells it from one a policy's own library sends and withdraws (anyio's cancel scopes,
#: under httpx, cancel their task again at each await until the scope exits).
CANCELLED_BY_PRMTREE = "cancelled by prmtree"


def cancel_requested(task: Any) -> bool:
    """Whether the running asyncio ``task`` got a ``CancelledError`` because someone
    cancelled it (a stop, a timeout: it must propagate), rather than because a policy
    raised one of its own (that request's failure). Python 3.10 cannot tell them apart
    (no ``Task.cancelling``): there every ``CancelledError`` counts as a cancellation."""
    cancelling = getattr(task, "cancelling", None)
    return task is None or cancelling is None or cancelling() > 0
