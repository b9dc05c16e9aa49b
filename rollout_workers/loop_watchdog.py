"""A thread that ends the process when ``generate`` holds the event loop and never lets go.

The inline executor times each synchronous stretch of a policy's ``generate`` and stops
the run cleanly when one ends after more than the request timeout (``EventLoopBlocked``).
A stretch that never ends (``time.sleep(10**6)``, a socket read with no timeout) freezes
the loop for good: no timeout fires, and SIGTERM / Ctrl-C reach only the loop's own
handlers, which never run. Only this thread can act then. It exits with status 1 once
a stretch has run ``limit_s`` plus a grace period, or with 128 + the signal number
(143, 130) a second after a stop signal arrives during a stretch. Nothing is flushed:
the manifest lists only shards already on disk, so the rerun searches the unflushed
problems again.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

GRACE_S = 5.0  # past the limit: a stretch that does end in time stops the run cleanly instead
SIGNAL_GRACE_S = 1.0


class LoopWatchdog:
    """``enter()`` / ``leave()`` around each synchronous stretch of ``generate``."""

    def __init__(self, limit_s: float, who: str) -> None:
        self.limit_s = limit_s
        self.who = who
        self._since: float | None = None
        self._thread: threading.Thread | None = None

    def enter(self) -> None:
        self._since = time.monotonic()
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="prmtree-loop-watchdog", daemon=True)
            self._thread.start()

    def leave(self) -> None:
        self._since = None

    def _watch(self) -> None:
        tick = min(0.5, max(0.05, self.limit_s / 20))
        while True:
            time.sleep(tick)
            since = self._since
            if since is None:
                continue
            held = time.monotonic() - since
            sig = _signals.get("last")
            if sig is not None and sig[1] >= since and time.monotonic() - sig[1] >= SIGNAL_GRACE_S:
                self._exit(128 + sig[0], f"{signal.Signals(sig[0]).name} arrived while it held the loop "
                                         f"({held:.0f} s so far)")
            if held > self.limit_s + GRACE_S:
                self._exit(1, f"it has held the loop for {held:.0f} s (request_timeout_s = {self.limit_s:g} s) "
                              "and not returned")

    def _exit(self, status: int, why: str) -> None:
        sys.stderr.write(
            f"prmtree: error: policy {self.who!r}: generate blocks the event loop: {why}; stopping at once. "
            "Problems on disk are kept: run the same command again to resume. Use await asyncio.sleep, "
            "an async client, or await asyncio.to_thread(...) for blocking work\n"
        )
        sys.stderr.flush()
        os._exit(status)


_signals: dict[str, tuple[int, float]] = {}


def note_signal(signum: int, frame: Any) -> None:
    """A Python-level handler for SIGTERM / SIGINT beside the event loop's own (which runs
    only when the loop does): it runs in the main thread even while ``generate`` blocks."""
    _signals["last"] = (signum, time.monotonic())
