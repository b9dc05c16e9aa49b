"""A thread that ends the process when the event loop stops running and never lets go.

Synchronous code on the loop (``time.sleep`` or a socket read with no timeout in a
policy's ``generate``, in a policy's own background task, in an ``async def close``)
freezes it: no timeout fires, and SIGTERM / Ctrl-C reach only the loop's own handlers,
which never run. Only a thread can act then. So the loop is watched, not a call: a
callback on the loop ticks every fraction of a second (its heartbeat), and this thread
ends the process when

* the loop has not ticked for ``limit_s`` (the request timeout) plus a grace period:
  exit 1;
* a stop signal arrived and the loop did not take it up (its handler calls
  :func:`signal_taken`) within a second or two: exit 128 + the signal (143, 130).

The message names what held the loop when it is known: a policy's ``generate`` (the
inline executor marks each synchronous stretch with ``enter`` / ``leave``), or a
``phase`` the run declared (closing the policy). Otherwise it names what may: a
``check_answer`` / ``split_steps`` of the user's, which run on the loop, and the policy's
own background work only where its ``generate`` runs on this loop (a driver of a
several-driver job, or of Ray workers, has no policy in its process). Nothing is flushed:
the manifest lists only shards already on disk, so the rerun searches the unflushed
problems again. :func:`report_exits_to` hands the reason to whoever else must know (a
driver process's job, which sees only its exit code).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

GRACE_S = 5.0  # past the limit: a stretch that does end in time stops the run cleanly instead
SIGNAL_GRACE_S = 1.0  # a stop signal not taken up while generate holds the loop
SIGNAL_GRACE_LOOP_S = 2.0  # ... while anything else holds it
SIGNAL_GRACE_EXCUSED_S = 60.0  # ... while ``excused()`` (the run's own flush, writing shards)
_TICK_S = 0.25


class LoopWatchdog:
    """Watches one event loop (``watch``); ``enter()`` / ``leave()`` mark each synchronous
    stretch of ``generate`` so that a hang there is named as the policy's."""

    def __init__(self, limit_s: float, who: str) -> None:
        self.limit_s = limit_s
        self.who = who
        self.excused: Callable[[], bool] = lambda: False  # the loop busy with the run's own work
        self._phase: str | None = None
        self._since: float | None = None
        self._generates_here = False  # a generate of the policy has run on this loop (enter)
        self._beat = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    # -- the loop's side ----------------------------------------------------------------

    def watch(self) -> LoopWatchdog:
        """Start the heartbeat on the running loop and the thread that watches it (once)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._tick()
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="prmtree-loop-watchdog", daemon=True)
            self._thread.start()
        return self

    def _tick(self) -> None:
        self._beat = time.monotonic()
        if self._loop is not None and not self._stopped.is_set():
            self._handle = self._loop.call_later(min(_TICK_S, self.limit_s / 4), self._tick)

    def stop(self) -> None:
        """Stop watching (the loop is about to end)."""
        self._stopped.set()
        if self._handle is not None:
            self._handle.cancel()

    def phase(self, what: str | None, limit_s: float | None = None) -> None:
        """Name what the loop does now (``closing policy 'x'``) and bound it by ``limit_s``."""
        self._phase = what
        if limit_s is not None:
            self.limit_s = limit_s
        self._beat = time.monotonic()

    def enter(self, who: str | None = None) -> None:
        if self._stopped.is_set():
            return
        if who is not None:
            self.who = who
        self._generates_here = True
        self._since = time.monotonic()
        if self._thread is None:
            try:
                self.watch()
            except RuntimeError:  # no running loop: time the stretch only
                pass

    def leave(self) -> None:
        self._since = None

    # -- the thread's side --------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stopped.wait(_TICK_S / 2):
            now = time.monotonic()
            loop = self._loop
            if loop is not None and not loop.is_running():  # between runs, or ended: nothing holds it
                if loop.is_closed():
                    self._stopped.set()
                    return
                self._beat = now
                continue
            since = self._since
            beat = max(self._beat, since or 0.0)  # a stretch of generate counts from its start
            held = now - beat
            excused = self.excused()
            sig = _signals.get("last")
            if sig is not None and sig[1] > _signals.get("taken", (0, -1.0))[1]:
                grace = SIGNAL_GRACE_EXCUSED_S if excused else SIGNAL_GRACE_S if since else SIGNAL_GRACE_LOOP_S
                if now - sig[1] >= grace and beat < sig[1]:
                    self._exit(128 + sig[0], f"{signal.Signals(sig[0]).name} arrived while it held the loop "
                                             f"({held:.0f} s so far)")
            if not excused and held > self.limit_s + GRACE_S:
                setting = "close_timeout_s" if self._phase else "request_timeout_s"
                self._exit(1, f"it has held the loop for {held:.0f} s ({setting} = {self.limit_s:g} s) "
                              "and not returned")

    def _exit(self, status: int, why: str) -> None:
        if self._stopped.is_set():
            return
        resume = "Problems on disk are kept: run the same command again to resume"
        if self._phase:
            blocked, advice = f"{self._phase} blocks the event loop: {why}", "Everything finished is saved"
        elif self._since is not None:
            blocked = f"policy {self.who!r}: generate blocks the event loop: {why}"
            advice = (f"{resume}. Use await asyncio.sleep, an async client, or await asyncio.to_thread(...) "
                      "for blocking work")
        else:
            blocked = f"the event loop is blocked ({self._suspects()}): {why}"
            checks = "a custom check_answer or split_steps runs on this loop and must return promptly"
            advice = (f"{resume}. Use await asyncio.sleep, an async client, or await asyncio.to_thread(...) for "
                      f"blocking work; {checks}" if self._generates_here else f"{resume}. A{checks[1:]}")
        report = _exit_report.get("to")
        if report is not None:
            with contextlib.suppress(Exception):
                report(f"{blocked}; it stopped at once")
        sys.stderr.write(f"prmtree: error: {blocked}; stopping at once. {advice}\n")
        sys.stderr.flush()
        os._exit(status)

    def _suspects(self) -> str:
        """What may hold the loop outside a marked stretch: a policy's background work only
        where its generate runs on this loop; the user's functions in any case."""
        if self._generates_here:
            return f"policy {self.who!r}: a background task or callback runs blocking code outside generate"
        return (f"policy {self.who!r} does not run on this loop: a custom check_answer or split_steps, or another "
                "callback on the loop, runs blocking code")


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopWatchdog] = weakref.WeakKeyDictionary()


def loop_watchdog(limit_s: float, who: str) -> LoopWatchdog:
    """The one watchdog of the running loop (made with ``limit_s`` and ``who`` if it has
    none yet): the run and its executors share it, so one thread decides."""
    loop = asyncio.get_running_loop()
    watchdog = _by_loop.get(loop)
    if watchdog is None or watchdog._stopped.is_set():
        watchdog = _by_loop[loop] = LoopWatchdog(limit_s, who)
    return watchdog


_exit_report: dict[str, Callable[[str], None]] = {}


def report_exits_to(report: Callable[[str], None] | None) -> None:
    """Hand the reason a watchdog ends this process for (one line) to ``report`` too, just
    before the exit; None: only stderr."""
    if report is None:
        _exit_report.pop("to", None)
    else:
        _exit_report["to"] = report


_signals: dict[str, tuple[int, float]] = {}
_arrivals: collections.deque[tuple[int, float]] = collections.deque(maxlen=64)  # noted, not yet claimed


def note_signal(signum: int, frame: Any) -> None:
    """A Python-level handler for SIGTERM / SIGINT beside the event loop's own (which runs
    only when the loop does): it runs in the main thread even while the loop is blocked,
    and as the signal arrives (the loop's handler may run after a long callback)."""
    now = time.monotonic()
    _signals["last"] = (signum, now)
    _arrivals.append((signum, now))


def note_stop_request(signum: int) -> None:
    """A stop asked from another thread (a several-driver job's driver actor, where no
    signal handler can be installed): the watchdog acts on it as on a signal the loop did
    not take up, so a driver stuck in a long computation on its loop cannot outlive it."""
    _signals["last"] = (signum, time.monotonic())


def claim_arrival(signum: int) -> float | None:
    """When the oldest noted, unclaimed ``signum`` arrived, claimed now; None where none is
    noted (two deliveries before the handler ran are noted once: the second came with it)."""
    for i, (sig, at) in enumerate(_arrivals):
        if sig == signum:
            del _arrivals[i]
            return at
    return None


def forget_arrivals() -> None:
    _arrivals.clear()


def signal_taken(signum: int) -> None:
    """The loop's own handler ran for ``signum``: the loop is alive, the run stops itself."""
    _signals["taken"] = (signum, time.monotonic())


def stop_taken_since(moment: float) -> bool:
    """Whether the run's handler took a stop signal at or after ``moment`` (time.monotonic)."""
    taken = _signals.get("taken")
    return taken is not None and taken[1] >= moment
