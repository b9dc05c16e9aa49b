"""Several drivers on one machine, no Ray (``--drivers N`` with the inline executor).

One driver is one event loop on one core; an engine that serves a large batch quickly
(1,024 sequences at 50 ms: 20K rollouts/s) outruns it (``benchmarks/gpu_utilisation.py``).
This job keeps the policy in this process, serving an
:class:`~prmtree.rollout_workers.host.EngineHost` on a Unix socket, and starts N driver
processes (``spawn``: nothing of this process's threads or GPU state is inherited), each
searching the input's slice ``i/N`` with a ``host`` executor connected to it. Output,
resume and refusals are those of the Ray ``--drivers`` job (``multi_driver.py``): each
driver writes its slice's shards and manifest into the one output directory, and the
rows are those of one driver.

The job forwards SIGTERM / SIGINT to its drivers as a graceful stop (they run in their
own process group, so a terminal's Ctrl-C reaches them once, through the job), merges
their counters for ``on_progress`` and their summaries into one, and reports a driver
that died by its slice (:class:`~prmtree.multi_driver.DriversStopped`): the others
finish, and the same command completes the lost slice. If the job's process dies, its
drivers lose the host, stop, and keep what they finished.

``drivers = "auto"``: the count ``out`` already holds, else :func:`auto_drivers` from
the policy's declared capacity.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import os
import pickle
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from prmtree.engine.contracts import declared_capacity
from prmtree.engine.errors import ConfigError
from prmtree.engine.output import Slice
from prmtree.engine.stats import RunStats
from prmtree.multi_driver import (
    PROGRESS_INTERVAL_S,
    JobSignals,
    driver_share,
    layout_in,
    merge_summaries,
    pilot_window,
    precheck,
    split_inputs,
)
from prmtree.policies.base import resolve_policy
from prmtree.rollout_workers.host import EngineHost
from prmtree.rollout_workers.inline import InlineExecutor
from prmtree.runner import DriverJob, RunSummary, run_checked

#: ``auto``: one driver per this many sequences the engine serves at once. Measured
#: (``benchmarks/gpu_utilisation.py``, this machine): one driver keeps 512 sequences at
#: 50 ms (10K rollouts/s) full, and 1,024 at 65%.
SEQUENCES_PER_DRIVER = 512
#: How long the job waits for a driver process to exit once its slice is done.
EXIT_WAIT_S = 30.0


def auto_drivers(capacity: int | None, cores: int | None = None) -> int:
    """Drivers for an engine of ``capacity`` sequences: one per ``SEQUENCES_PER_DRIVER``, at
    most one per core this process may use; one where the policy declares no capacity."""
    if capacity is None:
        return 1
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(math.ceil(capacity / SEQUENCES_PER_DRIVER), cores))


def run_local_job(job: DriverJob, on_progress: Callable[[RunStats], None] | None = None) -> RunSummary:
    """``job`` with ``executor.drivers`` driver processes around one policy in this process;
    one :class:`~prmtree.runner.RunSummary` for all of them.

    Raises :class:`ConfigError` before the policy is built for a refused output directory
    (with a driver count given), and :class:`~prmtree.multi_driver.DriversStopped` naming the
    slices whose driver stopped early.
    """
    cfg, out = job.config, job.out
    out_dir = Path(out).resolve() if out is not None else None
    requested = cfg.executor.drivers
    drivers = requested if isinstance(requested, int) else layout_in(out_dir) if out_dir else None
    if drivers is not None and drivers > 1:
        _check_portable(job)
    if drivers is not None and out_dir is not None and drivers > 1:
        precheck(out_dir, cfg, drivers, job.force)
    policy = resolve_policy(job.policy, job.policy_args)  # built once, in this process
    if drivers is None:
        drivers = auto_drivers(declared_capacity(policy))
        if drivers > 1:
            _check_portable(job)
        if out_dir is not None and drivers > 1:
            precheck(out_dir, cfg, drivers, job.force)
    if drivers == 1:  # auto on a small engine: this process is the driver
        one = cfg.model_copy(update={"executor": cfg.executor.model_copy(update={"drivers": 1})})
        on_problem = None if on_progress is None else lambda finished, stats: on_progress(stats)
        return run_checked(replace(job, policy=policy, policy_args=None, config=one, out=out_dir), on_problem)
    return asyncio.run(_run(job, policy, drivers, out_dir, on_progress))


def _check_portable(job: DriverJob) -> None:
    """The driver processes receive the job by pickle: say so in one line, before anything
    starts, for a check or splitter that cannot travel (a lambda, a closure)."""
    for name, fn in (("check_answer", job.check_answer), ("split_steps", job.split_steps)):
        if fn is None:
            continue
        try:
            pickle.dumps(fn)
        except Exception as exc:
            raise ConfigError(f"{name} must pickle to run in several driver processes (a module-level "
                              f"function, not a lambda or a closure): {exc}") from None


class _Driver:
    """One driver process as the job sees it."""

    def __init__(self, index: int, process: Any, control: Any) -> None:
        self.index = index
        self.process = process
        self.control = control  # the read end of its progress and result pipe
        self.latest: RunStats | None = None
        self.summary: RunSummary | None = None
        self.failure: str | None = None
        self.exited = asyncio.get_running_loop().create_future()


async def _run(job: DriverJob, policy: Any, drivers: int, out: Path | None,
               on_progress: Callable[[RunStats], None] | None) -> RunSummary:
    started = time.perf_counter()
    cfg = job.config
    executor = InlineExecutor(policy, cfg.executor)
    host = EngineHost(executor, drivers)
    loop = asyncio.get_running_loop()
    context = multiprocessing.get_context("spawn")
    with _socket_address() as address:
        await host.start(address)
        one = driver_share(cfg, drivers, kind="host", attach=address)
        inputs = split_inputs(job.problems, drivers, pilot_window(cfg))
        target = str(out) if out is not None else None
        team: list[_Driver] = []
        signals = JobSignals(drivers)
        signals.install()
        try:
            for i in range(drivers):
                child_job = replace(job, problems=None, policy=None, policy_args=None, config=one, out=target,
                                    slice=Slice(i, drivers), force=False)
                read, write = context.Pipe(duplex=False)
                process = context.Process(target=drive, args=(inputs[i], child_job, write),
                                          name=f"prmtree-driver-{i}", daemon=False)
                process.start()
                write.close()
                team.append(_Driver(i, process, read))
            for d in team:
                loop.add_reader(d.control.fileno(), _receive, d)
            last = 0.0
            while not all(d.exited.done() for d in team):
                await asyncio.sleep(0.05)
                for d in team:
                    if not d.exited.done() and not d.process.is_alive():
                        _receive(d)  # what it said last, before its pipe closed
                        d.exited.set_result(d.process.exitcode)
                for sig in signals.take():
                    for d in team:
                        if d.process.is_alive():
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(d.process.pid, sig)
                if on_progress is not None and time.perf_counter() - last >= PROGRESS_INTERVAL_S:
                    last = time.perf_counter()
                    known = [d.latest for d in team if d.latest is not None and d.summary is None]
                    known += [d.summary.run_stats for d in team if d.summary is not None]
                    if known:
                        merged = sum(known, RunStats())
                        merged.started = started
                        on_progress(merged)
        finally:
            signals.uninstall()
            for d in team:
                with contextlib.suppress(Exception):
                    loop.remove_reader(d.control.fileno())
                if d.process.is_alive():
                    d.process.terminate()
                    await loop.run_in_executor(None, d.process.join, EXIT_WAIT_S)
                if d.process.is_alive():
                    d.process.kill()
                d.control.close()
            await host.stop()
            await _close_policy(executor, cfg.executor.close_timeout_s)
    results = {d.index: d.summary for d in team if d.summary is not None and d.failure is None}
    stopped = {d.index: d.failure or f"its process exited with code {d.process.exitcode} and no summary"
               for d in team if d.index not in results}
    for i, why in sorted(stopped.items()):
        sys.stderr.write(f"prmtree: the driver of slice {i}/{drivers} stopped: {why}\n")
    return merge_summaries(results, stopped, drivers, out, signals.first, started, on_progress)


@contextlib.contextmanager
def _socket_address() -> Iterator[str]:
    """Where the host listens: on Linux a name in the abstract namespace (no file to clean
    up, and no 108-byte path limit for a long ``TMPDIR`` to break); elsewhere a socket file
    in a temporary directory (under /tmp where ``TMPDIR`` makes the path too long)."""
    if sys.platform.startswith("linux"):
        yield f"\0prmtree-host-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        return
    base = tempfile.gettempdir()
    if len(os.path.join(base, "prmtree-host-xxxxxxxx", "engine.sock")) > 100:
        base = "/tmp"
    with tempfile.TemporaryDirectory(prefix="prmtree-host-", dir=base) as where:
        yield os.path.join(where, "engine.sock")


def _receive(d: _Driver) -> None:
    """Read what driver ``d`` sent: counters now and then, its summary or its failure at the end."""
    try:
        while d.control.poll():
            kind, value = d.control.recv()
            if kind == "progress":
                d.latest = value
            elif kind == "done":
                d.summary = value
            else:
                d.failure = value
    except (EOFError, OSError):
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(d.control.fileno())


async def _close_policy(executor: InlineExecutor, limit_s: float) -> None:
    """The policy's close, bounded: the output is already saved."""
    try:
        await asyncio.wait_for(executor.close(), limit_s)
    except Exception as exc:  # a close that fails or hangs costs nothing saved
        sys.stderr.write(f"prmtree: closing policy {executor.policy_name!r} failed: {type(exc).__name__}: {exc}\n")


def drive(problems: Any, job: DriverJob, control: Any) -> None:
    """A driver process: search ``job``'s slice against the host, report to the job on ``control``."""
    os.setpgrp()  # a terminal's signals reach the job alone, which forwards them once
    last = [0.0]

    def progress(finished: Any, stats: RunStats) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_INTERVAL_S / 2:
            last[0] = now
            control.send(("progress", stats))

    try:
        summary = run_checked(replace(job, problems=problems), progress)
    except BaseException as exc:  # noqa: BLE001 - reported to the job, then this process exits 1
        first = str(exc).splitlines()[0] if str(exc) else ""
        with contextlib.suppress(Exception):
            control.send(("failed", f"{type(exc).__name__}: {first}"))
        control.close()
        sys.exit(1)
    control.send(("done", summary))
    control.close()
