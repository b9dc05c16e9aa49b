"""How much of the run the driver's own event loop set the pace.

A driver keeps an engine full until its one core cannot keep up: then the engine waits
for the driver, and more trees in flight add nothing (benchmarks/README.md, section 5:
one inline driver makes ~10,000-13,500 rollouts/s; a 1,024-sequence engine at 50 ms asks
for 20,480). From inside the driver the engine's own occupancy is not visible (a
request's latency includes the time its answer waited for the busy loop), but the loop's
is: the loop's thread on a CPU nearly all the time means it, not the engine, was waited for.
So the run is cut into windows of at least ``WINDOW_S`` seconds, and a window whose
thread was on a CPU for ``SATURATED`` of it or more counts as saturated; the summary
warns when those windows are a large part of the run (``prmtree.summary``).

Cheap on the hot path: :meth:`LoopLoad.tick` is called every few hundred requests and
reads two clocks.
"""

from __future__ import annotations

import time
from collections.abc import Callable

WINDOW_S = 5.0  # a window's least length: long enough that a collection or a flush is not a trend
#: The share of a window the loop's thread was on a CPU for it to count as saturated. Measured
#: (benchmarks/gpu_utilisation.py, 5-s windows): where the driver was the limit (1,024 and
#: 4,096 sequences at 50 / 200 ms, the engine 57-62% busy) its windows ran at 0.86-0.98 of a
#: core, the rest of the gap being the lulls between the engine's batches; where the engine
#: was (1,024 at 200 ms, 98% busy) at 0.02-0.42, and 256 at 20 ms (93% busy) at 0.53-0.78.
SATURATED = 0.85


class LoopLoad:
    """Windows of the loop's CPU against the wall clock: seconds watched, seconds saturated."""

    def __init__(self, window_s: float | None = None, saturated: float | None = None,
                 clocks: tuple[Callable[[], float], Callable[[], float]] | None = None) -> None:
        self.window_s = WINDOW_S if window_s is None else window_s
        self.saturated = SATURATED if saturated is None else saturated
        self._clocks = clocks or (time.perf_counter, time.thread_time)  # (wall, the loop thread's CPU)
        self.watched_s = 0.0  # closed windows, all together
        self.saturated_s = 0.0  # ... those the loop was saturated in
        self._wall: float | None = None  # the open window's start (None: not started)
        self._cpu = 0.0

    def tick(self) -> None:
        """Called from the loop's thread now and then; closes the window once it is long enough."""
        wall, cpu = self._clocks[0](), self._clocks[1]()
        if self._wall is None:
            self._wall, self._cpu = wall, cpu
            return
        length = wall - self._wall
        if length < self.window_s:
            return
        self.watched_s += length
        if cpu - self._cpu >= self.saturated * length:
            self.saturated_s += length
        self._wall, self._cpu = wall, cpu

    def as_dict(self) -> dict[str, float]:
        """For the run's stats (several drivers' add up)."""
        return {"loop_watched_s": round(self.watched_s, 3), "loop_saturated_s": round(self.saturated_s, 3)}
