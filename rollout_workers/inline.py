"""The in-process executor: the policy runs in the driver's event loop.

For laptops, tests, and a single GPU with vLLM in-process. Concurrency is bounded so a
backend gets large batches without the driver queueing without limit.

A policy that blocks the loop (``time.sleep`` or a synchronous HTTP call inside
``async def generate``) freezes every timeout, so a hung backend would hang the run.
Each synchronous stretch of ``generate`` (the code between two of its awaits) is timed;
one longer than the request timeout stops the run with :class:`EventLoopBlocked` naming
the policy (exit 1, everything finished saved), and no request in flight calls the
policy again (each would block once more). One that never ends is ended by
:mod:`~prmtree.rollout_workers.loop_watchdog` (the process exits: 1, or 143 / 130 on a
stop signal). Shorter stretches are allowed: a policy may do some CPU work
(tokenizing, image resizing) inline.
"""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import Coroutine, Generator
from typing import Any

from prmtree.engine.config import ExecutorConfig
from prmtree.engine.contracts import Policy
from prmtree.engine.errors import FatalExecutorError
from prmtree.engine.records import Completion, GenerationRequest
from prmtree.policies.base import policy_name, resolve_policy
from prmtree.rollout_workers.loop_watchdog import LoopWatchdog


class EventLoopBlocked(FatalExecutorError):
    """``generate`` held the event loop longer than the request timeout. Fatal: the run
    stops (finished problems saved), since every request would do the same."""


@types.coroutine
def _timed(coro: Coroutine[Any, Any, Any], limit_s: float, who: str,
           watchdog: LoopWatchdog | None = None) -> Generator[Any, Any, Any]:
    """Run ``coro`` as ``await coro`` would, timing each step it takes without yielding to
    the loop; raise :class:`EventLoopBlocked` after a step longer than ``limit_s``. The
    ``watchdog`` ends the process if a step never returns."""
    if not isinstance(coro, types.CoroutineType):  # another awaitable: nothing to time
        return (yield from coro.__await__())
    send, value = coro.send, None
    while True:
        start = time.perf_counter()
        if watchdog is not None:
            watchdog.enter()
        try:
            yielded = send(value)
        except StopIteration as stop:
            _check(time.perf_counter() - start, limit_s, who)
            return stop.value
        finally:
            if watchdog is not None:
                watchdog.leave()
        held = time.perf_counter() - start
        if held > limit_s:
            coro.close()
            _check(held, limit_s, who)
        try:
            value, send = (yield yielded), coro.send
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # a cancellation (or a thrown error) goes to the policy
            value, send = exc, coro.throw


def _check(held_s: float, limit_s: float, who: str) -> None:
    if held_s > limit_s:
        raise EventLoopBlocked(
            f"policy {who!r}: generate blocked the event loop for {held_s:.1f} s (over request_timeout_s = "
            f"{limit_s:g} s, so no timeout could fire); use await asyncio.sleep, an async client, or run "
            "blocking work in a thread (await asyncio.to_thread(...))"
        )


class InlineExecutor:
    """``await submit(request)`` runs ``policy.generate`` with at most ``max_concurrency`` in flight."""

    def __init__(self, policy: Policy, config: ExecutorConfig | None = None) -> None:
        config = config or ExecutorConfig()
        max_concurrency, block_limit_s = config.max_concurrency, config.request_timeout_s
        self.policy = policy
        self.policy_name = policy_name(policy)
        self.max_concurrency = max_concurrency
        self.block_limit_s = block_limit_s  # the request timeout: see EventLoopBlocked
        self._slots: asyncio.Semaphore | None = None
        self._blocked: EventLoopBlocked | None = None  # set once generate blocked the loop
        self._watchdog = LoopWatchdog(block_limit_s, self.policy_name) if block_limit_s < float("inf") else None
        self.in_flight = 0
        self.requests = 0

    @classmethod
    def from_config(cls, config: ExecutorConfig, policy: Any, policy_args: dict[str, Any] | None) -> InlineExecutor:
        """The policy built in this process, ``max_concurrency`` requests in flight."""
        return cls(resolve_policy(policy, policy_args), config)

    async def submit(self, request: GenerationRequest) -> list[Completion]:
        if self._slots is None:  # created lazily: it must belong to the running loop
            self._slots = asyncio.Semaphore(self.max_concurrency)
        async with self._slots:
            if self._blocked is not None:  # the run is stopping: do not block the loop again
                raise self._blocked
            self.in_flight += 1
            self.requests += 1
            try:
                return await _timed(self.policy.generate(request), self.block_limit_s, self.policy_name,
                                    self._watchdog)
            except EventLoopBlocked as exc:
                self._blocked = exc
                raise
            finally:
                self.in_flight -= 1

    def release(self, problem_id: str) -> None:
        """Nothing is routed: nothing to forget."""

    def stats(self) -> dict[str, Any]:
        return {"kind": "inline", "requests": self.requests, "in_flight": self.load()}

    def load(self) -> dict[int, int]:
        return {0: self.in_flight}

    async def close(self) -> None:
        close = getattr(self.policy, "close", None)
        if close is not None:
            result = close()
            if asyncio.iscoroutine(result):
                await result
