"""How much of the run the driver's own event loop set the pace.

A driver keeps an engine full until its one core cannot keep up: then the engine waits
for the driver, and more trees in flight add nothing (benchmarks/README.md, section 5,
simulated-GPU utilisation: one inline driver makes ~10,000-13,900 rollouts/s; a
1,024-sequence engine at 50 ms asks for 20,480). From inside the driver the engine's own
occupancy is not visible (a request's latency includes the time its answer waited for the
busy loop), but the loop's is: a loop that never waits for the engine is what the engine
waits for.

So the loop's idle time is measured where it idles, in its selector's ``select`` called
with a timeout (the one place an asyncio loop blocks; with a zero timeout, callbacks were
ready and the call only polls): a window of at least ``WINDOW_S`` seconds idle less than
``1 - SATURATED`` of it counts as saturated, and the summary warns when those windows are
a large part of the run (``prmtree.summary``). Time the loop could not run while it had
work (its core shared with another process, the GIL held by another thread between polls)
counts as busy, as it should: the loop was not waiting for the engine then. Two things
count as idle that are not quite: getting the GIL back when a blocking ``select`` wakes
(up to the 5-ms switch interval, when another thread of the process holds it), and the
selector's oversleep past a timer (about 2% of the 1,024 x 50 ms benchmark run). A loop
without a Python-level selector of the ``selectors`` module (uvloop, Windows' proactor)
falls back to the loop thread's CPU time, which misses the time the loop could not run.

Cheap on the hot path: two clock readings per ``select``, and :meth:`LoopLoad.tick`
every few hundred requests.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Callable
from typing import Any

WINDOW_S = 5.0  # a window's least length: long enough that a collection or a flush is not a trend
#: The share of a window the loop must be busy (not idle in ``select``) for the window to
#: count as saturated. Measured (benchmarks/gpu_utilisation.py, 5-s windows): where the
#: driver was the limit (1,024 and 4,096 sequences at 50 / 200 ms, the engine 56-62% busy)
#: 0.85-0.99, the rest being lulls between the engine's batches; where the engine was
#: (1,024 at 200 ms, 98% busy) 0.02-0.42, and 256 at 20 ms (93% busy) 0.52-0.73.
SATURATED = 0.85


class LoopLoad:
    """Windows of the loop's busy time against the wall clock: seconds watched, saturated."""

    def __init__(self, window_s: float | None = None, saturated: float | None = None,
                 clocks: tuple[Callable[[], float], Callable[[], float]] | None = None) -> None:
        self.window_s = WINDOW_S if window_s is None else window_s
        self.saturated = SATURATED if saturated is None else saturated
        #: (wall, busy so far); busy: wall less the time idle in select, once watching a loop
        self._fallback = clocks or (time.perf_counter, time.thread_time)
        self._clocks = self._fallback
        self.watched_s = 0.0  # closed windows, all together
        self.saturated_s = 0.0  # ... those the loop was saturated in
        self.idle_s = 0.0  # time the watched loop spent blocked in select
        self._wall: float | None = None  # the open window's start (None: not started)
        self._busy = 0.0
        self._selector: Any = None  # the watched loop's selector, its own select put back by unwatch
        self._own_select: Any = None  # an instance-level select it had before ours (another wrapper)
        self._wrapper: Any = None  # ours

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Measure ``loop``'s idle time in its selector (until :meth:`unwatch`); a loop
        without a Python-level selector keeps the CPU-time fallback."""
        selector = getattr(loop, "_selector", None)
        if not isinstance(selector, selectors.BaseSelector) or not hasattr(selector, "__dict__") \
                or self._selector is not None:
            return
        select = selector.select
        perf_counter = time.perf_counter

        def timed_select(timeout: float | None = None) -> Any:
            if self._wrapper is not timed_select:  # unwatched, but left under another wrapper: pass through
                return select(timeout)
            if timeout is not None and timeout <= 0:  # a poll: callbacks were ready, the loop was not idle
                return select(timeout)  # (and getting the GIL back after it is no idling either)
            start = perf_counter()
            try:
                return select(timeout)
            finally:
                self.idle_s += perf_counter() - start

        own = vars(selector).get("select")
        self._wrapper = timed_select
        try:
            selector.select = timed_select
        except (AttributeError, TypeError):  # a selector that takes no attributes
            self._wrapper = None
            return
        self._selector, self._own_select = selector, own
        self._clocks = (perf_counter, lambda: perf_counter() - self.idle_s)
        self._wall = None  # a window opened on the other clock is not compared with this one

    def unwatch(self) -> None:
        """Put the selector's own ``select`` back."""
        if self._selector is not None:
            installed = vars(self._selector)
            if installed.get("select") is self._wrapper:  # (one wrapped over ours since is left as it is)
                if self._own_select is not None:  # someone else's wrapper was there first: theirs again
                    installed["select"] = self._own_select
                else:
                    del installed["select"]
            self._selector = self._own_select = self._wrapper = None
            self._clocks = self._fallback  # a later tick: the fallback clocks, in a new window
            self._wall = None

    def tick(self) -> None:
        """Called from the loop's thread now and then; closes the window once it is long enough."""
        wall, busy = self._clocks[0](), self._clocks[1]()
        if self._wall is None:
            self._wall, self._busy = wall, busy
            return
        length = wall - self._wall
        if length < self.window_s:
            return
        self.watched_s += length
        if busy - self._busy >= self.saturated * length:
            self.saturated_s += length
        self._wall, self._busy = wall, busy

    def as_dict(self) -> dict[str, float]:
        """For the run's stats. Several drivers' add up: ``loops`` counts them."""
        return {"loops": 1, "loop_watched_s": round(self.watched_s, 3), "loop_saturated_s": round(self.saturated_s, 3)}
