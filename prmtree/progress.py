"""A live progress bar for long runs: problems, rollouts/s, tokens/s, labels +/-, errors, ETA."""

from __future__ import annotations

import signal

import time
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)


class ProgressReporter:
    """Context manager whose :meth:`progress` is a run's ``on_progress`` callback (and
    :meth:`update` its per-problem ``on_problem``)."""

    def __init__(self, total: int | None, enabled: bool = True) -> None:
        self.enabled = enabled
        self.total = total
        self._progress: Progress | None = None
        self._task: Any = None
        self._last = 0.0

    def __enter__(self) -> ProgressReporter:
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]problems"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeRemainingColumn(),
                transient=True,
            )
            # its refresh thread starts with the stop signals blocked (a thread keeps the mask
            # it was made with): Ctrl-C and SIGTERM then always reach the main thread, where
            # the run's handlers are, even while the main thread holds them a moment itself
            stops = {signal.SIGINT, signal.SIGTERM}
            held = signal.pthread_sigmask(signal.SIG_BLOCK, stops)
            try:
                self._progress.start()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
            self._task = self._progress.add_task("run", total=self.total, detail="")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, finished: Any, stats: Any) -> None:
        self.progress(stats)

    def progress(self, stats: Any) -> None:
        """Show ``stats`` (a run's :class:`RunStats`, or a ``--drivers`` job's merged ones)."""
        if self._progress is None:
            return
        now = time.perf_counter()
        done = stats.problems_done + stats.problems_failed
        if now - self._last < 0.1 and (self.total is None or done < self.total):
            return
        self._last = now
        elapsed = max(now - stats.started, 1e-9)
        detail = (
            f"{stats.rollouts_this_session / elapsed:,.0f} rollouts/s  {stats.tokens / elapsed:,.0f} tok/s  "
            f"labels +{stats.labels_positive}/-{stats.labels_negative}  "
            f"errors {stats.problems_failed + stats.input_errors}"
        )
        load = stats.executor.get("in_flight") or {}
        if len(load) > 1:
            detail += "  workers " + "/".join(str(v) for _, v in sorted(load.items()))
        self._progress.update(self._task, completed=done, detail=detail)
