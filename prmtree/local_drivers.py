"""Several drivers on one machine, no Ray (``--drivers N`` with the inline executor).

One driver is one event loop on one core; an engine that serves a large batch quickly
(1,024 sequences at 50 ms: 20K rollouts/s) outruns it (``benchmarks/gpu_utilisation.py``).
This job keeps the policy in this process, serving an
:class:`~prmtree.rollout_workers.host.EngineHost` on a Unix socket (a file in a private
temporary directory: only this user can connect), and starts N driver processes
(``spawn``: nothing of this process's threads or GPU state is inherited), each searching
the input's slice ``i/N`` with a ``host`` executor connected to it. Output, resume and
refusals are those of the Ray ``--drivers`` job (``multi_driver.py``): each driver writes
its slice's shards and manifest into the one output directory, and the rows are those of
one driver.

Signals: the drivers run in their own process group, so a terminal's Ctrl-C reaches the
job alone, and the job forwards each SIGTERM / SIGINT to every driver as SIGTERM (the
first: finish what is in flight; the second: cancel it). A driver starts with SIGINT
ignored, and the job holds what it forwards until the driver says it is ready to take
it: a stop while the drivers start is a stop, not their death. Something that
signals the whole process tree itself (Slurm's ``scancel``, a systemd unit's cgroup) is
seen twice by each driver, which then cancels its trees in flight: the next run redoes
them.

The job merges the drivers' counters for ``on_progress`` and their summaries into one,
and reports a driver that died by its slice (:class:`~prmtree.multi_driver.DriversStopped`):
the others finish, and the same command completes the lost slice. If the job's process
dies, its drivers lose the host, stop, and keep what they finished.

``drivers = "auto"``: the count ``out`` already holds, else :func:`drivers_for_capacity` from the
policy's declared capacity. A named ``[labels.judge]`` policy is built in every driver.
The driver processes import the user's ``__main__`` (``spawn``), so a script must guard
its ``prmtree.run`` with ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prmtree.engine.contracts import declared_capacity
from prmtree.engine.errors import ConfigError, raised
from prmtree.engine.output import Slice
from prmtree.engine.stats import RunStats
from prmtree.multi_driver import (
    PROGRESS_INTERVAL_S,
    JobSignals,
    ProgressWatch,
    check_layout,
    check_portable,
    check_sliceable,
    cpu_reading,
    driver_share,
    layout_in,
    merge_summaries,
    pilot_window,
    precheck,
    split_inputs,
)
from prmtree.policies.base import resolve_policy
from prmtree.rollout_workers.host import EngineHost
from prmtree.rollout_workers.inline import InlineExecutor, use_daemon_threads
from prmtree.rollout_workers.loop_watchdog import loop_watchdog, note_signal, report_exits_to, signal_taken
from prmtree.runner import DriverJob, RunSummary, StopHandle, close_bounded, run_checked, with_progress

#: ``auto``: one driver per this many sequences the engine serves at once. Measured
#: (``benchmarks/gpu_utilisation.py``, this machine): one driver keeps 256 sequences at
#: 50 ms (5K rollouts/s) 98% busy, and 1,024 at 55-65%.
SEQUENCES_PER_DRIVER = 512
#: How long a driver process may take to exit once it has reported its end, and how long
#: the job waits for the drivers it stops when it must end early.
EXIT_WAIT_S = 30.0

#: The engine host's socket folder: ``prmtree-host-<job pid>-<random>`` under the temp dir.
HOST_DIR_PREFIX = "prmtree-host-"
#: A job killed with -9 cannot remove its socket folder; the next job on the machine removes
#: this user's folders of jobs no longer running, once they are this old (by then every
#: driver of a job still running, seen from another PID namespace, has connected).
SWEEP_AGE_S = 60.0
#: How often the job looks at its drivers (exits, signals to forward, progress).
POLL_S = 0.05
#: Where a driver process leaves the reason it ended with, where its pipe to the job cannot
#: carry it: a refusal while it imports the script (before the pipe reaches it), an exit
#: of its loop watchdog (from a thread, at once). A folder only the job's user may enter.
NOTES_ENV = "PRMTREE_DRIVER_NOTES"


def drivers_for_capacity(capacity: int | None, cores: int | None = None) -> int:
    """Drivers for an engine of ``capacity`` sequences: one per ``SEQUENCES_PER_DRIVER``, at
    most one per core this process may use; one where the policy declares no capacity."""
    if capacity is None:
        return 1
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(math.ceil(capacity / SEQUENCES_PER_DRIVER), cores))


def run_local_job(job: DriverJob, on_progress: Callable[[RunStats], None] | None = None,
                  on_problem: Callable[[Any, RunStats], None] | None = None) -> RunSummary:
    """``job`` with ``executor.drivers`` driver processes around one policy in this process;
    one :class:`~prmtree.runner.RunSummary` for all of them. ``auto`` that comes to one
    driver runs in this process (``on_problem`` and ``job.slice`` are then allowed).

    Raises :class:`ConfigError` before the policy is built for a refused output directory
    (with a driver count given), and :class:`~prmtree.multi_driver.DriversStopped` naming the
    slices whose driver stopped early.
    """
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        why = ("prmtree.run with several driver processes was called while a driver process started: the script "
               "runs again in each one (spawn), so put its prmtree.run under if __name__ == \"__main__\":")
        _leave_note("refused", why)  # raised before the driver has its pipe: the job reads it there
        raise ConfigError(why)
    cfg, out = job.config, job.out
    out_dir = Path(out).resolve() if out is not None else None
    requested = cfg.executor.drivers
    drivers = requested if isinstance(requested, int) else layout_in(out_dir) if out_dir else None
    if drivers is not None and drivers > 1:
        _check_several(job, on_problem, out_dir, drivers)
    policy = resolve_policy(job.policy, job.policy_args)  # built once, in this process
    closes_it = False  # a run in this process closes the policy itself
    try:
        if drivers is None:
            drivers = drivers_for_capacity(declared_capacity(policy))
            if drivers > 1:
                _check_several(job, on_problem, out_dir, drivers)
        if drivers == 1:  # auto on a small engine: this process is the driver
            if out_dir is not None and job.slice.count == 1:
                check_layout(out_dir, 1)
            one = cfg.model_copy(update={"executor": cfg.executor.model_copy(update={"drivers": 1})})
            if on_progress is not None:
                on_problem = with_progress(on_problem, on_progress)
            closes_it = True
            return run_checked(replace(job, policy=policy, policy_args=None, config=one, out=out_dir), on_problem)
        executor = InlineExecutor(policy, cfg.executor)
        return asyncio.run(_Job(job, executor, drivers, out_dir, on_progress).run())
    finally:
        if not closes_it:
            _close_policy(policy, cfg.executor.close_timeout_s)


def _check_several(job: DriverJob, on_problem: Any, out: Path | None, drivers: int) -> None:
    """What several drivers refuse, in one line each, before anything is written."""
    check_sliceable(job.slice, on_problem)
    check_portable(job)
    if out is not None:
        precheck(out, job.config, drivers, job.force)


def _close_policy(policy: Any, limit_s: float) -> None:
    """The policy's close, once, bounded: the output is saved before (a close that fails
    or hangs costs nothing saved). A stop signal meanwhile stops the wait, as in one driver's
    run (it was the default action: the job killed, exit 143, though its slices were done)."""
    executor = InlineExecutor(policy)

    async def bounded() -> None:
        use_daemon_threads()  # a close's thread (asyncio.to_thread) is not waited for at the loop's end
        loop, abandon = asyncio.get_running_loop(), asyncio.Event()
        main = threading.current_thread() is threading.main_thread()
        stops = (signal.SIGTERM, signal.SIGINT) if main else ()
        # as in one driver's run: a close that blocks the loop is ended by the watchdog, which
        # acts on a stop signal the loop cannot take (note_signal notes it)
        watchdog = loop_watchdog(limit_s, executor.policy_name).watch() if main else None

        def stop(sig: int) -> None:
            signal_taken(sig)
            abandon.set()

        for sig in stops:
            loop.add_signal_handler(sig, stop, sig)
            signal.signal(sig, note_signal)
        try:
            await close_bounded(f"policy {executor.policy_name!r}", executor.close, limit_s, abandon, watchdog)
        finally:
            for sig in stops:
                loop.remove_signal_handler(sig)
            if watchdog is not None:
                watchdog.stop()

    asyncio.run(bounded())


@dataclass
class _Driver:
    """One driver process as the job sees it."""

    index: int
    process: Any
    control: Any = None  # the read end of its progress and result pipe
    latest: RunStats | None = None
    summary: RunSummary | None = None
    failure: str | None = None
    ready: bool = False  # it takes a SIGTERM as a stop (until then the job holds them)
    held: int = 0  # stops forwarded before it was ready
    refused: bool = False  # it stopped on a ConfigError (a refusal, not a failure)
    reported_at: float | None = None  # when its summary or failure came (it should exit soon after)
    exitcode: int | None = None  # set once it exited (or was ended)
    said: list[str] = field(default_factory=list)
    watch: ProgressWatch = field(default_factory=ProgressWatch)  # is it still making progress?

    @property
    def running(self) -> bool:
        return self.exitcode is None


class _Job:
    """The drivers of one local job, from start to merged summary."""

    def __init__(self, job: DriverJob, executor: InlineExecutor, drivers: int, out: Path | None,
                 on_progress: Callable[[RunStats], None] | None) -> None:
        self.job, self.executor, self.drivers, self.out, self.on_progress = job, executor, drivers, out, on_progress
        self.host = EngineHost(executor, drivers)
        self.team: list[_Driver] = []
        self.signals = JobSignals(drivers)
        self.started = time.perf_counter()
        self._last_progress = 0.0
        # on_progress runs in a thread of its own, one call at a time: a slow callback (a
        # logging service's hiccup) must not stall the engine every driver waits on
        self._progress_call: asyncio.Future[None] | None = None
        self.notes: Path | None = None  # the folder of the drivers' notes (see NOTES_ENV)

    async def run(self) -> RunSummary:
        with _socket_address() as address:
            self.notes = Path(address).parent
            self.signals.install()
            try:
                await self.host.start(address)
                self._start_drivers(address)
                while any(d.running for d in self.team):
                    await asyncio.sleep(POLL_S)
                    self._watch()
            finally:
                self.signals.uninstall()
                await self._end_drivers()
                await self.host.stop()
                if self._progress_call is not None:  # the last call ends before the summary's
                    await asyncio.wait([self._progress_call])
        return self._summary()

    def _start_drivers(self, address: str) -> None:
        """Start the N driver processes, each with SIGINT ignored (a disposition that
        survives ``exec``, and Python keeps): a Ctrl-C while it imports, before it has its
        own process group, is not its death. This process holds SIGINT (blocked) while it
        forks, so a Ctrl-C then is the job's, not lost; a driver's input (a list with its
        images can be large) follows on a pipe of its own once the driver runs."""
        cfg, drivers = self.job.config, self.drivers
        one = driver_share(cfg, drivers, kind="host", attach=address)
        inputs = split_inputs(self.job.problems, drivers, pilot_window(cfg))
        target = str(self.out) if self.out is not None else None
        context = multiprocessing.get_context("spawn")
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()  # started now, not inside the first start() below
        givers = []
        previous = os.environ.get(NOTES_ENV)
        os.environ[NOTES_ENV] = str(self.notes)  # each driver's environment, copied as it starts
        try:
            for i in range(drivers):
                givers.append(self._start_driver(context, i, one, target))
        finally:
            if previous is None:
                os.environ.pop(NOTES_ENV, None)
            else:
                os.environ[NOTES_ENV] = previous
        for give, part in zip(givers, inputs):  # every driver imports meanwhile, all at once
            try:
                give.send(part)
            except (BrokenPipeError, EOFError, OSError):  # it died at once: its exit says so
                pass
            finally:
                give.close()

    def _start_driver(self, context: Any, i: int, one: Any, target: str | None) -> Any:
        """Start driver ``i`` (see :meth:`_start_drivers`); the end of the pipe its input goes on."""
        job = replace(self.job, problems=None, policy=None, policy_args=None, config=one, out=target,
                      slice=Slice(i, self.drivers), force=False)
        read, write = context.Pipe(duplex=False)
        take, give = context.Pipe(duplex=False)
        # not a daemon: a daemonic process may not start children, and a driver's answer checks run in some
        process = context.Process(target=drive, args=(take, job, write), name=f"prmtree-driver-{i}")
        self.team.append(_Driver(i, process, read))
        # SIGINT blocked, then ignored: the driver inherits the ignoring; a Ctrl-C meanwhile
        # stays pending here (Linux never discards a blocked signal) for the job's handler,
        # unless the kernel hands it to another thread of this process (a progress bar's),
        # where it is ignored: a window of a few milliseconds per driver
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            process.start()
        finally:
            signal.signal(signal.SIGINT, interrupt)
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            write.close()
            take.close()
        return give

    def _watch(self) -> None:
        """One look at the drivers: what they said, who exited, signals to forward, progress."""
        now = time.monotonic()
        for d in self.team:
            if not d.running:
                continue
            _receive(d)
            if not d.process.is_alive():
                _receive(d)  # what it said last, before its pipe closed
                d.exitcode = d.process.exitcode
                self._read_note(d)
                self.host.driver_gone()
            elif d.reported_at is not None and now - d.reported_at > EXIT_WAIT_S:
                d.said.append(f"it did not exit within {EXIT_WAIT_S:g} s of its end, so it was killed")
                d.process.kill()
        if self.signals.overdue():
            self._kill_frozen()
        for _ in self.signals.take():
            for d in self.team:
                d.held += 1
        for d in self.team:
            if d.running and d.ready and d.held:
                d.held -= 1
                with contextlib.suppress(ProcessLookupError):
                    os.kill(d.process.pid, signal.SIGTERM)  # its graceful stop (a second: cancel in flight)
        self._report_progress()

    def _read_note(self, d: _Driver) -> None:
        """The reason driver ``d`` left in its note (see ``NOTES_ENV``), where it reported none."""
        if d.summary is not None or d.failure is not None or self.notes is None:
            return
        for kind in ("refused", "failed"):
            with contextlib.suppress(OSError):
                d.failure = (self.notes / f"{d.process.name}.{kind}").read_text()
                d.refused = kind == "refused"
                return

    def _kill_frozen(self) -> None:
        """The drivers still running ``CANCEL_WAIT_S`` after the second stop and making no
        progress, killed: a driver stopped (SIGSTOP) or stuck would hold the job forever. One
        still working (a flush of large shards takes seconds) is left to end: killed, it
        would lose the problems that flush was saving."""
        left = [d for d in self.team if d.running and d.reported_at is None and d.process.is_alive()]
        frozen = [d for d in left if d.watch.frozen(cpu_reading(d.process.pid))]
        if frozen:
            why = self.signals.killed([f"{d.index}/{self.drivers}" for d in frozen])
            for d in frozen:
                d.said.append(why)
                d.process.kill()
        if len(frozen) == len(left):
            self.signals.cancel_by = None  # said and done

    def _report_progress(self) -> None:
        """The merged counters to ``on_progress``, at most every ``PROGRESS_INTERVAL_S`` and
        never two calls at once; a callback that raised ends the job with its exception."""
        call = self._progress_call
        if call is not None:
            if not call.done():
                return
            self._progress_call = None
            call.result()  # raises what the callback raised
        if self.on_progress is None or time.perf_counter() - self._last_progress < PROGRESS_INTERVAL_S:
            return
        known = [d.summary.run_stats if d.summary is not None else d.latest for d in self.team]
        if any(known):
            self._last_progress = time.perf_counter()
            merged = sum((s for s in known if s is not None), RunStats())
            merged.started = self.started
            self._progress_call = asyncio.get_running_loop().run_in_executor(None, self.on_progress, merged)

    async def _end_drivers(self) -> None:
        """Every driver still running (the job is ending early) is asked to stop, then waited
        for together, then killed; the pipes are closed."""
        live = [d for d in self.team if d.process.is_alive()]
        for d in live:
            d.process.terminate()  # SIGTERM: its graceful stop, finishing what is in flight
        deadline = time.monotonic() + EXIT_WAIT_S
        if self.signals.cancel_by is not None:  # stopped twice: what is left of the drivers' time to cancel
            deadline = min(deadline, self.signals.cancel_by)
        while any(d.process.is_alive() for d in live) and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
        for d in self.team:
            if d.process.is_alive():
                d.process.kill()
                d.process.join(5)
            if d.running:
                _receive(d)
                d.exitcode = d.process.exitcode
                self._read_note(d)
            d.control.close()

    def _summary(self) -> RunSummary:
        refused = next((d for d in self.team if d.refused), None)
        if refused is not None:  # a slice's output refused this run (changed input, another run writing it)
            assert refused.failure is not None
            raise ConfigError(refused.failure.removeprefix("ConfigError: "))
        results = {d.index: d.summary for d in self.team if d.summary is not None and d.failure is None}
        stopped = {d.index: "; ".join([d.failure or f"its process exited with code {d.exitcode} and no summary",
                                       *d.said]) for d in self.team if d.index not in results}
        partial = {d.index: d.latest for d in self.team if d.index in stopped and d.latest is not None}
        for i, why in sorted(stopped.items()):
            sys.stderr.write(f"prmtree: the driver of slice {i}/{self.drivers} stopped: {why}\n")
        return merge_summaries(results, stopped, self.drivers, self.out, self.signals.first, self.started,
                               self.on_progress, partial)


@contextlib.contextmanager
def _socket_address() -> Iterator[str]:
    """Where the host listens: a socket file in a temporary directory only this user may
    enter (``mkdtemp`` makes it 0700), so no other user's process can connect and hand the
    host a pickle. Under /tmp where a long ``TMPDIR`` would pass the 108-byte limit of a
    socket's path."""
    base = tempfile.gettempdir()
    if len(os.path.join(base, f"{HOST_DIR_PREFIX}{os.getpid()}-xxxxxxxx", "engine.sock")) > 100:
        base = "/tmp"
    _sweep_host_dirs(base)
    with tempfile.TemporaryDirectory(prefix=f"{HOST_DIR_PREFIX}{os.getpid()}-", dir=base) as where:
        yield os.path.join(where, "engine.sock")


def _sweep_host_dirs(base: str) -> None:
    """Remove the socket folders that jobs killed with -9 left in ``base``: this user's,
    older than ``SWEEP_AGE_S``, whose job's process is gone."""
    for entry in Path(base).glob(f"{HOST_DIR_PREFIX}*-*"):
        try:
            pid = int(entry.name[len(HOST_DIR_PREFIX):].split("-", 1)[0])
            info = entry.lstat()
        except (ValueError, OSError):
            continue
        if (info.st_uid != os.getuid() or not stat.S_ISDIR(info.st_mode)
                or time.time() - info.st_mtime < SWEEP_AGE_S or _running(pid)):
            continue
        shutil.rmtree(entry, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's: running
        return True
    return True


def _receive(d: _Driver) -> None:
    """Read what driver ``d`` sent: counters now and then, its summary or its failure at the end."""
    try:
        while d.control.poll():
            kind, value = d.control.recv()
            if kind == "progress":
                d.latest = value
            elif kind == "ready":
                d.ready = True
            else:
                if kind == "done":
                    d.summary = value
                else:
                    d.failure = value
                    d.refused = kind == "refused"
                d.reported_at = time.monotonic()
    except (EOFError, OSError):  # it exited: its pipe is closed
        pass


def drive(inputs: Any, job: DriverJob, control: Any) -> None:
    """A driver process: search ``job``'s slice (read from ``inputs``) against the host,
    report to the job on ``control``.

    Its own process group first, so the terminal's signals go to the job alone (SIGINT is
    ignored from its start: see :meth:`_Job._start_drivers`); then a SIGTERM is a stop
    request its run acts on as soon as it starts, and the job is told it may send them.
    A driver whose job is gone (killed) says so in one line and exits: see :func:`_orphaned`."""
    os.setpgrp()
    report_exits_to(lambda why: _leave_note("failed", why))  # a blocked loop ends this process from a thread
    stop = StopHandle()
    signal.signal(signal.SIGTERM, lambda sig, frame: stop.request(sig))
    if not _tell(control, ("ready", None)):
        _orphaned(job, "before it started: nothing was done")
    try:
        problems = inputs.recv()
    except (EOFError, OSError):
        _orphaned(job, "before it started: nothing was done")
    inputs.close()
    last_sent = 0.0

    def progress(finished: Any, stats: RunStats) -> None:
        nonlocal last_sent
        now = time.monotonic()
        if now - last_sent >= PROGRESS_INTERVAL_S / 2:
            last_sent = now
            _tell(control, ("progress", stats))  # a job gone is seen by the run: its host is lost

    try:
        summary = run_checked(replace(job, problems=problems), progress, stop)
    except BaseException as exc:  # noqa: BLE001 - reported to the job, then this process exits 1
        kind = "refused" if isinstance(exc, ConfigError) else "failed"
        if not _tell(control, (kind, raised(exc))):
            _orphaned(job, raised(exc))
        control.close()
        sys.exit(1)
    if not _tell(control, ("done", summary)):
        _orphaned(job, "it had finished its slice: everything is saved")
    control.close()


def _leave_note(kind: str, why: str) -> None:
    """In a driver process of a job: leave ``why`` for the job (``kind``: refused, failed)
    in the folder ``NOTES_ENV`` names; elsewhere nothing."""
    folder, name = os.environ.get(NOTES_ENV), multiprocessing.current_process().name
    if folder and name.startswith("prmtree-driver-"):
        with contextlib.suppress(OSError):
            Path(folder, f"{name}.{kind}").write_text(why)


def _tell(control: Any, message: tuple[str, Any]) -> bool:
    """Send ``message`` to the job; False if the job is gone (its end of the pipe closed)."""
    try:
        control.send(message)
    except OSError:  # BrokenPipeError, ConnectionResetError: the job's process died
        return False
    return True


def _orphaned(job: DriverJob, why: str) -> None:
    """The job that started this driver is gone (``kill -9``): nobody is left to report
    to, and the run already saved what it finished. One line, then exit at once: not the
    tracebacks of a broken pipe, nor those of the search's tasks that the lost host ended
    (asyncio logs those when they are garbage-collected, which exiting now skips)."""
    sys.stderr.write(f"prmtree: the driver of slice {job.slice.index}/{job.slice.count}: the job that started it "
                     f"is gone; exiting ({why})\n")
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(1)
