"""Request time limits that cost a set insert, not a timer each.

``asyncio.timeout`` schedules a timer per request (a ``TimerHandle`` on the loop's heap,
cancelled again when the request returns): about 5 us of the driver's CPU per request,
~3% of it on the realistic mix. A request limit is seconds to minutes long and needs no
better than a fraction of a second of precision, so here requests due in the same tick
share one timer: entering a limit adds the request to its tick's set, leaving removes
it, and the tick's timer cancels whatever is still there. A limit fires at most one
tick late (a tick is a quarter second, or an eighth of a short limit), never early.

Semantics are ``asyncio.timeout``'s: the task is cancelled and the ``async with`` raises
``TimeoutError``; a cancellation from elsewhere passes through as ``CancelledError``.
``expired`` tells the limit's own ``TimeoutError`` from one the awaited code raised. A limit
over ~30 years is none. Python 3.10 has no ``Task.uncancel``: there a cancel from elsewhere
in the same loop turn as the limit's expiry is taken for the limit's (a ``TimeoutError``).
"""

from __future__ import annotations

import asyncio
import math
from types import TracebackType

from prmtree.engine.contracts import CANCELLED_BY_PRMTREE

TICK_S = 0.25  # the coarsest tick: how late a limit may fire
MIN_TICK_S = 1e-6
NEVER_S = 1e9  # a limit longer than this (~30 years) is no limit


class Deadlines:
    """The ticks of one event loop: each tick's limits and the one timer that ends them."""

    def __init__(self) -> None:
        self._due: dict[float, set[Deadline]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # whose timers the ticks are

    def bound(self, timeout_s: float) -> Deadline:
        """``async with deadlines.bound(t):`` the body, cancelled after ``t`` seconds (inf: never)."""
        return Deadline(self, timeout_s)

    def _add(self, deadline: Deadline, loop: asyncio.AbstractEventLoop, timeout_s: float) -> float:
        if loop is not self._loop:  # another loop (a second asyncio.run): the old ticks' timers died with theirs
            self._loop, self._due = loop, {}
        tick = max(MIN_TICK_S, min(TICK_S, timeout_s / 8))
        due = math.ceil((loop.time() + timeout_s) / tick) * tick
        waiting = self._due.get(due)
        if waiting is None:
            waiting = self._due[due] = set()
            loop.call_at(due, self._expire, due)
        waiting.add(deadline)
        return due

    def _remove(self, deadline: Deadline, due: float) -> None:
        waiting = self._due.get(due)
        if waiting is not None:
            waiting.discard(deadline)

    def _expire(self, due: float) -> None:
        for deadline in self._due.pop(due, ()):
            deadline.expire()


class Deadline:
    """One limit (an async context manager, as ``asyncio.timeout``)."""

    __slots__ = ("_deadlines", "_timeout_s", "_task", "_cancelling", "_due", "expired")

    def __init__(self, deadlines: Deadlines, timeout_s: float) -> None:
        self._deadlines, self._timeout_s = deadlines, timeout_s
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0
        self._due: float | None = None
        self.expired = False

    async def __aenter__(self) -> Deadline:
        if self._timeout_s < NEVER_S:
            task = asyncio.current_task()
            if task is None:
                raise RuntimeError("a Deadline must be used inside a task")
            cancelling = getattr(task, "cancelling", None)  # Python 3.11+
            self._task, self._cancelling = task, cancelling() if cancelling is not None else 0
            self._due = self._deadlines._add(self, asyncio.get_running_loop(), max(self._timeout_s, 0.0))
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._due is not None:
            self._deadlines._remove(self, self._due)
            self._due = None
        if self.expired:
            assert self._task is not None
            uncancel = getattr(self._task, "uncancel", None)  # Python 3.10: every cancel counts as ours
            ours = uncancel is None or uncancel() <= self._cancelling  # (undone even if the body swallowed it)
            if ours and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc

    def expire(self) -> None:
        """The tick passed with the body still running: cancel it."""
        if self._task is not None and not self._task.done():
            self.expired = True
            self._task.cancel(CANCELLED_BY_PRMTREE)
