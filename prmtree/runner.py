"""One driver over one slice of the input, from an open output directory to its summary.

:func:`prmtree.run` checks its arguments and calls :func:`run_checked` here once; a
``--drivers N`` job (``prmtree/multi_driver.py``) calls it in each driver actor.
Signals: SIGTERM / SIGINT stop a run gracefully (the first takes no new problems and
flushes what finished; the second cancels the trees in flight).
"""

from __future__ import annotations

import asyncio
import gc
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prmtree.engine.config import ExecutorConfig, RunConfig
from prmtree.engine.contracts import Executor, cancel_requested
from prmtree.engine.driver import Driver, FinishedProblem, retry_may_pass
from prmtree.engine.output import Slice
from prmtree.engine.problem import iter_problems
from prmtree.engine.records import InputError, Problem
from prmtree.engine.resume import OpenedRun, check_adopted, open_run, reconcile_input
from prmtree.engine.stats import RunStats
from prmtree.engine.errors import describe_os_error, raised
from prmtree.rollout_workers import make_executor
from prmtree.rollout_workers.inline import use_daemon_threads
from prmtree.rollout_workers.loop_watchdog import (
    LoopWatchdog,
    claim_arrival,
    forget_arrivals,
    loop_watchdog,
    note_signal,
    note_stop_request,
    signal_taken,
)


@dataclass
class RunSummary:
    """What a run did: a view of its :class:`RunStats` (the manifest's numbers), so
    ``summary.rollouts``, ``summary.problems_done`` etc. read the same fields."""

    out: Path | None
    run_stats: RunStats
    retry_pending: int = 0  # problems that failed and the same command will retry
    retry_futile: int = 0  # of those, how many failed for a reason a retry does not clear (not retryable)
    stopped_by: int | None = None  # the signal (SIGTERM, SIGINT) that stopped the run early
    unusable: str | None = None  # set when no input row was usable: why, with an example (not a success)
    empty: bool = False  # the slice's input held no row at all (a job of several slices says so if all were)

    def __getattr__(self, name: str) -> Any:
        if name == "run_stats":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.run_stats, name)

    @property
    def stats(self) -> dict[str, Any]:
        return self.run_stats.to_dict()

    @property
    def warnings(self) -> list[str]:
        """What the run's summary warns about (`prmtree run` prints them under its table;
        :func:`prmtree.run` also issues each as a :class:`RunWarning`): a custom
        ``check_answer`` that failed, labels far from normal, a driver that could not keep up."""
        from prmtree.summary import run_warnings

        return run_warnings(self)


class RunWarning(UserWarning):
    """A line of the run's summary warnings, issued by :func:`prmtree.run` so that a script
    hears what `prmtree run` would print (``warnings.simplefilter("error", RunWarning)``
    turns them into errors)."""


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("prmtree", "pyarrow", "networkx", "math-verify", "pydantic"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


@dataclass(frozen=True)
class DriverJob:
    """One driver's work on one slice, its arguments already checked: what :func:`run`
    hands to :func:`run_checked`, and each driver actor of a ``--drivers`` job runs."""

    problems: Any  # an input path or an iterable of Problem
    config: RunConfig
    policy: Any  # a registered name, module:Class or a Policy instance
    policy_args: dict[str, Any] | None = None
    out: str | os.PathLike[str] | None = None
    slice: Slice = field(default_factory=Slice)
    force: bool = False
    check_answer: Callable[[str, str], bool] | None = None  # replaces answer verification
    split_steps: Callable[[str], list[str]] | None = None  # replaces step segmentation
    rerun_changed: bool = False  # redo problems whose input changed since they were labelled
    retry_errors: bool = False  # retry every bad input row, changed or not


def with_progress(
    on_problem: Callable[[FinishedProblem, RunStats], None] | None, on_progress: Callable[[RunStats], None]
) -> Callable[[FinishedProblem, RunStats], None]:
    """One driver's ``on_problem`` that also reports the counters to ``on_progress`` (where
    several drivers' are merged by their job instead)."""
    def both(finished: FinishedProblem, stats: RunStats) -> None:
        if on_problem is not None:
            on_problem(finished, stats)
        on_progress(stats)

    return both


def run_checked(
    job: DriverJob,
    on_problem: Callable[[FinishedProblem, RunStats], None] | None = None,
    stop: StopHandle | None = None,
) -> RunSummary:
    """One driver on one slice: the rest of :func:`prmtree.run`, and what each driver actor
    of a ``--drivers`` job runs (``stop`` stands in for the signals a thread other than
    the main one cannot receive)."""
    built: list[Executor | None] = []  # [policy, judge], built early only where labelled rows are to be removed

    def build_before_removing() -> None:
        """--force or --rerun-changed is about to remove labelled rows: build the policy
        (and a named judge) first, so one that cannot be built (a wrong argument, a model
        that does not load) removes nothing. Otherwise they are built in ``_run_async``,
        once the output is accepted, so a refused resume never loads a model."""
        if not built:
            built.append(make_executor(job.config.executor, job.policy, job.policy_args))
            try:
                built.append(_judge_executor(job.config))
            except BaseException:
                _close_unused(built, job.config)
                raise

    handed = False
    opened = None
    try:
        opened = (open_run(job.out, job.config, versions(), job.slice, job.force, build_before_removing)
                  if job.out is not None else None)
        for note in opened.repaired if opened else ():
            sys.stderr.write(f"prmtree: repaired: {note}\n")
        if opened is not None:
            if opened.adopted is not None:  # another slice's calibration: its pilot's problems must be ours
                if not isinstance(job.problems, (str, os.PathLike)) and iter(job.problems) is job.problems:
                    job = replace(job, problems=list(job.problems))
                check_adopted(opened, job.problems, job.config.input)  # before anything is written
            job = _check_input_changes(job, opened, build_before_removing)
        handed = True
        with collector_tuned():
            return asyncio.run(_run_async(job, opened, on_problem, stop, tuple(built) if built else None))
    finally:
        if not handed:  # built, then refused before the run: closed unused
            _close_unused(built, job.config)
        if opened is not None:
            opened.close()  # the slice's lock: the next run may start


def _close_unused(built: list[Executor | None], cfg: RunConfig) -> None:
    """Close the executors built for a run that then did not start (bounded, in one line each)."""
    for executor in built:
        if executor is not None:
            asyncio.run(close_bounded(f"policy {executor.policy_name!r}", executor.close,
                                      cfg.executor.close_timeout_s))
    built.clear()


#: The cyclic collector's youngest-generation threshold during a run (CPython's default: 700).
GC_YOUNG_THRESHOLD = 100_000
#: ... and the middle generation's: collected every 30 young collections (default: 10).
GC_MIDDLE_THRESHOLD = 30
_gc_lock = threading.Lock()
_gc_runs = 0  # runs in this process now (threads of one process share the collector)
_gc_restore: tuple[tuple[int, ...], bool] | None = None  # (thresholds, whether we froze) to put back


@contextmanager
def collector_tuned() -> Iterator[None]:
    """The cyclic garbage collector set for a run, and put back after it. A run allocates
    millions of short-lived objects (requests, completions, rollouts) beside a large heap that
    lives throughout (modules, memos, trees): at CPython's default thresholds the collector
    took about a sixth of the driver's CPU (issue 21; 0.035 ms per rollout on the realistic
    mix), mostly rescanning that heap. So, for the run, what is alive at its start is frozen
    (``gc.freeze``: never rescanned), the youngest generation is collected every 100,000
    net allocations instead of 700 and the middle one every 30 young collections instead of
    10: a tree's objects live seconds, and most are gone by the time they would be scanned.
    On the realistic mix (2,000 problems) the collector's time fell from ~2.0 s to 1.1-1.5 s
    (young collections ~1.0 s whatever the threshold: they scan the long-lived memo entries;
    the middle generation 0.04-0.9 s, run 1-4 times instead of 8; young pauses ~19 ms, one
    every ~0.4 s) and the driver's CPU per rollout by ~9%; 10,000, 50,000, 200,000 and
    400,000 measured in the same sweep were worse, or no better with longer pauses
    (benchmarks/README.md, section 2). Reference counting still frees nearly everything at
    once; cycles are collected, less often. At the end, what the run kept (memo entries,
    mostly: ~490,000 objects at 2,000 problems, named tuples the collector never untracks)
    goes to the oldest generation unscanned, as freezing the whole heap and thawing it does:
    restoring the thresholds used to set off a middle collection that scanned them all once,
    0.77 s, 4.5% of the run's CPU, only to promote them there; a cycle the run left behind
    waits for the next full collection. A collector the caller disabled (threshold 0),
    set higher, or froze itself is left as it is; nested or concurrent runs restore once, at
    the last one's end. Nothing a run computes depends on it."""
    global _gc_runs, _gc_restore
    with _gc_lock:
        _gc_runs += 1
        if _gc_runs == 1:
            thresholds = gc.get_threshold()
            freeze = gc.get_freeze_count() == 0
            _gc_restore = (thresholds, freeze)
            if 0 < thresholds[0] < GC_YOUNG_THRESHOLD:
                gc.set_threshold(GC_YOUNG_THRESHOLD, max(thresholds[1], GC_MIDDLE_THRESHOLD), *thresholds[2:])
            if freeze:
                gc.freeze()
    try:
        yield
    finally:
        with _gc_lock:
            _gc_runs -= 1
            if _gc_runs == 0 and _gc_restore is not None:
                thresholds, froze = _gc_restore
                _gc_restore = None
                if froze:  # what the run kept goes to the oldest generation unscanned (see above)
                    gc.freeze()
                    gc.unfreeze()
                gc.set_threshold(*thresholds)


def _check_input_changes(job: DriverJob, opened: OpenedRun,
                         before_removing: Callable[[], None] | None = None) -> DriverJob:
    """Before any work: what changed in the input since the manifest was written
    (``reconcile_input``). A one-shot iterator of problems is read into a list first, as
    the input is then read twice."""
    m = opened.writer.manifest
    if not (m.completed or m.rejected or m.failed):
        return job
    if not isinstance(job.problems, (str, os.PathLike)) and iter(job.problems) is job.problems:
        job = replace(job, problems=list(job.problems))
    for note in reconcile_input(opened, job.problems, job.config.input, job.slice,
                                rerun_changed=job.rerun_changed, retry_errors=job.retry_errors,
                                before_removing=before_removing):
        sys.stderr.write(f"prmtree: {note}\n")
    return job


#: Why a run made nothing, where its input held no row (every slice's, for a sliced run).
NO_ROWS = "the input holds no problem (no row was read): nothing to label; check --input"


def _empty(manifest: Any) -> bool:
    """Nothing recorded at all: the (slice's) input held no row."""
    return not (manifest.completed or manifest.failed or manifest.skipped or manifest.rejected)


def _unusable(manifest: Any, slice_: Slice) -> str | None:
    """Why no input row was usable (every row recorded is bad input; or, unsliced, the input
    held no row at all), or None. One slice of several may own no row: that is no fault."""
    if _empty(manifest):
        return NO_ROWS if slice_.count == 1 else None
    if manifest.completed or manifest.failed or manifest.skipped:
        return None
    key, reason = next(iter(manifest.rejected.items()))
    n = len(manifest.rejected)
    return (f"no input row was usable: {'all ' if n > 1 else ''}{n} row{'s are' if n > 1 else ' is'} bad input "
            f"(e.g. {key!r}: {reason[:200]}); fix the input and run the same command again (rows that changed are "
            "retried; --retry-errors retries them all)")


def _judge_executor(cfg: RunConfig) -> Any:
    """The judge's own policy, in this process, when ``[labels.judge] name`` names one
    (otherwise the judge is the run's policy, asked through the run's executor)."""
    judge = cfg.labels.judge
    if cfg.labels.method != "consensus" or not judge.name:
        return None
    return make_executor(ExecutorConfig(kind="inline", max_concurrency=cfg.executor.max_concurrency),
                         judge.name, judge.kwargs)


class StopHandle:
    """Ask a run to stop from another thread, as a signal would (a first request: no new
    problems; a second: cancel those in flight). A ``--drivers`` job's driver actors run
    in threads, where signal handlers cannot be installed, so the job asks through this."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stop: _GracefulStop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._early: list[int] = []  # asked before the run started

    def request(self, sig: int = signal.SIGTERM) -> None:
        with self._lock:
            if self._stop is None or self._loop is None:
                self._early.append(sig)
                return
            note_stop_request(sig)  # taken up by the loop at once, or the watchdog ends a stuck run
            self._loop.call_soon_threadsafe(self._stop._on_signal, sig)

    def _bind(self, stop: _GracefulStop, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._stop, self._loop = stop, loop
            for sig in self._early:  # not noted for the watchdog: the run's first stretch (reading its
                loop.call_soon_threadsafe(stop._on_signal, sig)  # input) may hold the loop a while yet
            self._early.clear()

    def _unbind(self) -> None:
        with self._lock:
            self._stop = self._loop = None


class _GracefulStop:
    """SIGTERM / SIGINT during a run (handlers only in the main thread): the first stops
    taking new problems, flushes what is finished and lets the trees in flight finish;
    the second cancels those (a resume redoes them); a third gets the default action."""

    def __init__(self, writer: Any, stats: RunStats, merge_echoes: bool = True) -> None:
        self.writer = writer
        self.merge_echoes = merge_echoes  # False in a job's driver: the job forwards each stop once
        self.stats = stats  # what an early flush records
        self.driver: Driver | None = None
        self.signum: int | None = None
        self._last: tuple[int, float] | None = None  # the last OS signal acted on, and when it arrived
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closing: asyncio.Event | None = None  # set up once the run's work is over; set: stop waiting
        self.saved = False  # the output is final (its last flush succeeded): what a late signal may say
        self.finishing = False  # the final flush is under way (a failed one waits to try again)
        self.stopping = asyncio.Event()  # set by a stop then: the final flush tries once more, then gives up

    def install(self, driver: Driver) -> None:
        self.driver = driver
        if threading.current_thread() is threading.main_thread():
            self._loop = asyncio.get_running_loop()
            forget_arrivals()
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self._on_os_signal, sig)
                # the loop's handler runs only when the loop does; this one also while a
                # policy blocks it (the inline executor's watchdog then acts on it)
                signal.signal(sig, note_signal)

    def uninstall(self) -> None:
        if self._loop is not None:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.remove_signal_handler(sig)
            self._loop = None

    def _on_os_signal(self, sig: int) -> None:
        """A signal from the OS: acted on unless it is an echo of the last one (by when each
        arrived, not when the loop got to it: the first one's flush may take a while).
        Stops a job forwards (through ``StopHandle``, or as SIGTERMs to a driver process:
        ``merge_echoes`` False) were told apart by the job: each one is acted on."""
        at = claim_arrival(sig)
        if not self.merge_echoes:
            self._on_signal(sig)
            return
        if at is None:  # noted together with the one before it
            at = self._last[1] if self._last is not None and self._last[0] == sig else time.monotonic()
        if is_echo(self._last, sig, at):
            signal_taken(sig)
            return
        self._last = (sig, at)
        self._on_signal(sig)

    def _on_signal(self, sig: int) -> None:
        signal_taken(sig)  # the loop runs: the watchdog leaves the stopping to us
        name = signal.Signals(sig).name
        if self.closing is not None:  # the run's work is over: only the policy's close is left
            if not self.closing.is_set():
                self.closing.set()
                saved = "everything finished is saved; " if self.saved else ""
                sys.stderr.write(f"\nprmtree: {name}: {saved}not waiting for the policy to close\n")
            return
        if self.finishing:  # every problem is finished: only a failed final flush's wait is left to cut short
            if not self.stopping.is_set():
                self.stopping.set()
                sys.stderr.write(f"\nprmtree: {name}: the final flush is not waited for: one last try now; what "
                                 "it cannot write, the next run redoes\n")
            return
        if self.signum is None:
            self.signum = sig
            piloting = self.driver is not None and self.driver.pilot_unlearned()
            in_flight = self.driver.request_stop() if self.driver is not None else 0
            try:
                if self.writer is not None:
                    self.writer.flush(self.stats)  # saved now, in case a SIGKILL ends the grace period
            except OSError as exc:  # nothing it held is marked done: the final flush tries again
                sys.stderr.write(f"\nprmtree: {name}: the flush failed ({describe_os_error(exc)}); nothing is "
                                 "marked done that is not on disk, the final flush tries again\n")
            sys.stderr.write(f"\nprmtree: {name}: {stop_plan(in_flight, piloting)}\n")
        else:
            if self.driver is not None:
                self.driver.request_stop(cancel=True)
            sys.stderr.write(f"prmtree: {name} again: cancelling the problems in flight (the next run redoes them)\n")
            if self._loop is not None:  # a third gets the default action, but not this one's echo
                self._loop.call_later(ECHO_WINDOW_S, self.uninstall)
            else:
                self.uninstall()


#: A SIGTERM this soon after the one before is the same stop delivered twice, not a second
#: stop: GNU ``timeout``, ``kill -- -PGID``, Slurm and systemd signal a process and then its
#: process group. A supervisor escalating sends it again later. SIGINT is a person's (a
#: terminal sends it once per Ctrl-C): a quick second Ctrl-C is a second stop.
ECHO_WINDOW_S = 0.25


def is_echo(first: tuple[int, float] | None, sig: int, at: float | None = None) -> bool:
    """Whether a SIGTERM arriving ``at`` (now if None) repeats ``first`` (its signal, its
    ``time.monotonic()``) within :data:`ECHO_WINDOW_S`: one ``timeout`` cancels nothing."""
    if first is None or first[0] != sig or sig != signal.SIGTERM:
        return False
    return (time.monotonic() if at is None else at) - first[1] < ECHO_WINDOW_S


def stop_plan(in_flight: int, piloting: bool) -> str:
    """What a first stop signal does, in words. Before the pilot has learned, its trees
    cannot finish (rows are labelled with what it learns), so they are dropped at once."""
    if piloting:
        return (f"taking no new problems; the pilot is not finished, so its {in_flight} trees in flight are "
                "dropped and the next run pilots again")
    return f"taking no new problems, finishing the {in_flight} in flight (send it again to stop at once)"


async def close_bounded(what: str, close: Callable[[], Awaitable[Any]], limit_s: float,
                        abandon: asyncio.Event | None = None, watchdog: LoopWatchdog | None = None,
                        saved: bool = True) -> None:
    """Close ``what`` (``close()``), waiting at most ``limit_s`` or until ``abandon`` is set
    (a stop signal). The output is final before this runs (``saved``; False where its last
    flush failed: then the messages claim nothing), so a close that raises (of any
    class), hangs or never returns is reported in one line and left behind; it never
    costs the output, nor keeps the process from ending (a close that blocks the loop
    itself is ended by the ``watchdog``, bounded by ``limit_s`` too)."""
    kept = " (everything finished is saved)" if saved else ""
    if watchdog is not None:
        watchdog.phase(f"closing {what}", limit_s)

    async def guarded() -> BaseException | None:
        try:
            await close()
        except asyncio.CancelledError:
            if cancel_requested(asyncio.current_task()):
                raise
            return asyncio.CancelledError("close raised CancelledError")
        except BaseException as exc:  # noqa: BLE001 - SystemExit from a task would end the loop
            return exc
        return None

    task = asyncio.ensure_future(guarded())
    waits: set[asyncio.Future[Any]] = {task}
    if abandon is not None:
        waits.add(asyncio.ensure_future(abandon.wait()))
    try:
        await asyncio.wait(waits, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for other in waits - {task}:
            other.cancel()
    if task.done():
        error = None if task.cancelled() else task.result()
        if error is not None:
            sys.stderr.write(f"prmtree: warning: closing {what} failed: {raised(error)}{kept}\n")
        return
    task.cancel()  # not awaited: a close that ignores it is left behind
    why = "on a stop signal" if abandon is not None and abandon.is_set() else \
        f"it did not return within {limit_s:g} s (close_timeout_s)"
    sys.stderr.write(f"prmtree: warning: gave up closing {what}: {why}{kept}\n")


def _select(items: Iterable[Problem | InputError], slice_: Slice, done: set[str],
            piloting: Callable[[], bool] = lambda: False) -> Iterable[Problem | InputError]:
    """This slice's problems (and input errors) that are not finished yet; while the
    driver's pilot is open, other slices' problems too (the driver pilots them, so every
    slice learns what an unsliced run would, and writes nothing of theirs)."""
    for item in items:
        pid = item.id if isinstance(item, Problem) else item.problem_id
        if pid not in done and (slice_.owns(pid) or (piloting() and isinstance(item, Problem))):
            yield item


def _count_executor(stats: RunStats, executor: Executor) -> None:
    """The executor's counters as they stand: the driver copies them as each problem
    finishes, so a worker lost after the last one (a stop, a stopped run) was not counted."""
    try:
        stats.executor = executor.stats()
    except Exception:
        pass  # a broken executor's counters: the last copied stand


async def _run_async(
    job: DriverJob,
    opened: OpenedRun | None,
    on_problem: Callable[[FinishedProblem, RunStats], None] | None,
    handle: StopHandle | None = None,
    built: tuple[Executor | None, ...] | None = None,
) -> RunSummary:
    cfg, slice_ = job.config, job.slice
    from prmtree.engine.answers import Verifier

    use_daemon_threads()  # a policy's call stuck in a thread holds up neither the run's end nor the exit

    stats = RunStats.resumed(opened.previous_stats) if opened else RunStats()
    writer = opened.writer if opened else None
    # a driver of a job (a handle) gets its stops from the job, which told echoes apart already
    stop = _GracefulStop(writer, stats, merge_echoes=handle is None)
    # Built only now (unless ``built`` before labelled rows were removed: run_checked): the output
    # directory is open and the config accepted, so a refused resume never loads a model or
    # starts a cluster.
    if built is None:
        executor = make_executor(cfg.executor, job.policy, job.policy_args)
        judge_executor = _judge_executor(cfg)
    else:
        executor, judge_executor = built  # type: ignore[assignment]
    verifier = Verifier(cfg.verify, custom=job.check_answer)
    watchdog = None
    if threading.current_thread() is threading.main_thread() or handle is not None:  # where stops arrive
        # the loop itself is watched, not only generate: a policy's background task that
        # blocks it would otherwise hang the run and ignore SIGTERM (a driver actor's run,
        # in a thread of its own, gets its stops through ``handle``: watched the same way)
        watchdog = loop_watchdog(cfg.executor.request_timeout_s, executor.policy_name).watch()
        if writer is not None:
            watchdog.excused = lambda: writer.flushing  # writing shards: the run's own work
    stopped_by = None
    try:
        driver = Driver(cfg, executor, writer, verifier=verifier, on_problem=on_problem, stats=stats,
                        split_steps=job.split_steps, judge_executor=judge_executor,
                        calibration=writer.manifest.calibration if writer is not None else None)
        stop.install(driver)  # after the model loaded: a signal before that simply ends the process
        if handle is not None:
            handle._bind(stop, asyncio.get_running_loop())
        done = opened.done if opened else set()
        piloting = driver.piloting
        skip = lambda pid: pid in done or not (slice_.owns(pid) or piloting())  # noqa: E731 - before images are decoded
        known_ids = opened.known_ids if opened else None
        items = _select(iter_problems(job.problems, cfg.input, skip, known_ids), slice_, done, piloting)
        try:
            stats = await driver.run(items, owns=slice_.owns if slice_.count > 1 else None)
        except BaseException:
            if writer is not None:
                _count_executor(stats, executor)
                writer.flush(stats)  # keep every finished problem; a resume does the rest
            stop.saved = True
            raise
        _count_executor(stats, executor)
        stopped_by = stop.signum  # a signal while closing below stops nothing
        if stopped_by and driver.complete:  # it came after the last problem started, and they all finished
            # said before the final flush (which may fail): complete only once the rows are on disk
            saves = " once the final flush has saved their rows" if writer is not None else ""
            sys.stderr.write(f"prmtree: every problem had started before the {signal.Signals(stopped_by).name} "
                             f"and all of them finished: the run is complete{saves}\n")
            stopped_by = None
        # The output first, the policy after: a close that raises or hangs costs nothing.
        if writer is not None:
            if stopped_by:
                writer.flush(stats)  # a stopped run is not "finished"
            else:  # a full disk at the very end is waited out (flush_give_up_s); a stop ends the wait
                stop.finishing = True
                if stop.signum is not None:  # one came after the last start: the run is complete, but
                    stop.stopping.set()  # whoever sent it waits for no full disk (one try, then exit)
                await writer.aclose(stats, stop.stopping)
        stop.saved = True
    finally:
        stop.closing = asyncio.Event()
        limit = cfg.executor.close_timeout_s
        await verifier.aclose()
        if judge_executor is not None:
            await close_bounded(f"judge {judge_executor.policy_name!r}", judge_executor.close, limit, stop.closing,
                                watchdog, stop.saved)
        await close_bounded(f"policy {executor.policy_name!r}", executor.close, limit, stop.closing, watchdog,
                            stop.saved)
        if watchdog is not None:
            watchdog.stop()
        stop.uninstall()
        if handle is not None:
            handle._unbind()
    pending = len(writer.manifest.failed) if writer is not None else stats.problems_failed
    futile = sum(not retry_may_pass(r) for r in writer.manifest.failed.values()) if writer is not None else 0
    return RunSummary(out=writer.out_dir if writer is not None else None, run_stats=stats, retry_pending=pending,
                      retry_futile=futile,
                      stopped_by=stopped_by, unusable=_unusable(writer.manifest, slice_) if writer is not None else None,
                      empty=writer is not None and _empty(writer.manifest))
