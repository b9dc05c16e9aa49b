"""The executor contract: where a policy's ``generate`` runs, seen from the driver.

A search strategy never knows which executor serves it, and a policy never knows it
is inside one. Implementations: :class:`~prmtree.rollout_workers.inline.InlineExecutor`
(the policy in the driver's event loop) and
:class:`~prmtree.rollout_workers.ray_pool.RayExecutor` (a pool of Ray actors).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from prmtree.policies.base import Completion, GenerationRequest


class FatalExecutorError(RuntimeError):
    """The executor cannot serve any request (e.g. no worker left): the run must stop.

    Problems already finished are flushed; the same command resumes the rest.
    """


class BackendDownError(FatalExecutorError):
    """The circuit breaker tripped: the last requests all failed (``engine/breaker.py``)."""


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
