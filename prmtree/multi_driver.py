"""Several drivers in one Ray job (``--drivers N``): one pool of rollout workers, N drivers.

One driver is one event loop on one core, and past a few saturated workers that core is
what limits a run (``benchmarks/ray_scaling.py``). So the job starts ONE pool of rollout
workers in its own process, then N driver actors; driver ``i`` runs the input's slice
``i/N`` (the ``--slice`` slices) with its executor attached to the pool by name
(``ExecutorConfig.attach``). Every driver routes a problem to the same worker (rendezvous
over worker indices), writes its slice's shards and manifest into the one output
directory, and a rerun of the same command resumes each slice. The rows are those of one
driver: which driver searches a problem changes nothing in it.

Python API: the same call, ``prmtree.run(..., drivers=N)`` (or ``executor.drivers`` in
the config), returning one :class:`~prmtree.runner.RunSummary`; :func:`run_job` is its
several-drivers branch. Problems finish in the driver actors, so ``on_problem`` needs one
driver; ``on_progress(stats)`` is called in the job's process with the merged counters.
An input path must be readable where the drivers run (a shared filesystem on a cluster,
as ``--out`` must be); a list of :class:`~prmtree.engine.problem.Problem` travels through
Ray, each driver getting its slice (and the first ``pilot_window`` problems, which every driver
pilots).

The job polls its drivers for their counters (one progress view), merges their
summaries into one, forwards SIGTERM / SIGINT to every driver as a graceful stop, and
reports a driver that died by its slice (:class:`DriversStopped`, exit 1): the other
slices finish, and the same command completes the lost one, whose lock died with its
process.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dis
import functools
import importlib.util
import inspect
import math
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import types
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from prmtree.engine.config import RunConfig
from prmtree.engine.errors import ConfigError, FatalExecutorError, raised
from prmtree.engine.output import Slice, manifest_layout
from prmtree.engine.records import InputError, Problem
from prmtree.engine.resume import open_run
from prmtree.engine.stats import RunStats
from prmtree.rollout_workers.ray import (
    START_TIMEOUT_S,
    PoolHandle,
    RayExecutor,
    auto_drivers,
    connect,
)
from prmtree.rollout_workers.ray.sizing import is_local
from prmtree.runner import NO_ROWS, DriverJob, RunSummary, StopHandle, is_echo, run_checked, versions

#: How often the job asks its drivers for their counters (for ``on_progress``).
PROGRESS_INTERVAL_S = 0.25
#: How long the drivers have to end once a second stop asked them to cancel what is in
#: flight (a few tenths of a second when they run); a driver still there then is frozen
#: (stopped, or its process stuck where Python's handlers cannot run) and is killed.
CANCEL_WAIT_S = 5.0


#: A driver that used less CPU than this over a second after the second stop is stuck. Five
#: clock ticks: the kernel charges CPU a tick (10 ms) at a time, so a thread that only wakes
#: now and then can read one tick a second; a flush reads close to a hundred.
FROZEN_CPU_S = 0.05


def cpu_reading(pid: int | str = "self", thread: int | None = None) -> tuple[str, float] | None:
    """A process's (or one of its threads') state letter and CPU seconds so far, read from
    /proc (None where there is none, or the process is gone)."""
    where = f"/proc/{pid}/task/{thread}/stat" if thread is not None else f"/proc/{pid}/stat"
    try:
        fields = Path(where).read_text().rsplit(")", 1)[1].split()
        return fields[0], (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class ProgressWatch:
    """Whether a driver makes progress, from readings of its CPU (``cpu_reading``: a local
    driver process's, a Ray driver actor's run thread's): a driver flushing large shards
    after the second stop is at work and is left to end (killed, it would lose the problems
    that flush saves); one stopped (SIGSTOP) or stuck is not. No reading (no /proc, no
    answer) counts as no progress."""

    def __init__(self) -> None:
        self.seen: tuple[float, float] | None = None  # (when, its CPU seconds then)

    def frozen(self, reading: tuple[str, float] | None) -> bool:
        """Whether the process is making no progress: stopped, or under ``FROZEN_CPU_S`` of
        CPU over the last second and not waiting on the disk."""
        if reading is None:
            return True
        state, cpu = reading
        now, seen = time.monotonic(), self.seen
        if seen is None or now - seen[0] >= 1.0:
            self.seen = (now, cpu)
        if state in "Tt":
            return True
        return seen is not None and now - seen[0] >= 1.0 and cpu - seen[1] < FROZEN_CPU_S and state != "D"


class DriversStopped(FatalExecutorError):
    """One or more drivers stopped before their slice was done (the actor died, or its run
    stopped: no worker left). The other slices ran to the end; ``summary`` is theirs, and
    the same command finishes the rest."""

    def __init__(self, message: str, summary: RunSummary, slices: list[str]) -> None:
        super().__init__(message)
        self.summary = summary
        self.slices = slices


def layout_in(out: Path) -> int | None:
    """The slice count of the manifests already in ``out`` (1: a single driver), or None."""
    counts = sorted(set(manifest_layout(out).values()))
    return counts[0] if counts else None


def check_layout(out: Path, drivers: int) -> None:
    """Refuse, in one line, a driver count other than the one ``out`` was written with
    (a union of two slice layouts would hold some problems twice)."""
    found = layout_in(out)
    if found is None or found == drivers:
        return
    held = "one driver" if found == 1 else f"{found} drivers (--drivers {found}, or --slice i/{found})"
    this = "unsharded (one driver)" if drivers == 1 else f"--drivers {drivers}"
    use = "no --drivers (or --drivers 1)" if found == 1 else f"--drivers {found} (or auto, or --slice i/{found})"
    raise ConfigError(f"{out} holds the output of {held}; this run is {this}: one output directory takes "
                      f"one slice layout, so run it with {use} or use another --out")


class SliceDriver:
    """One driver of a job, in its own actor: ``run`` searches one slice of the input with an
    executor attached to the job's pool. A threaded actor, so ``progress`` and ``stop``
    answer while ``run`` works."""

    def __init__(self) -> None:
        self._stop = StopHandle()
        self._latest: RunStats | None = None
        self._last = 0.0
        self._thread: int | None = None  # the thread ``run`` works in (its native id)

    def run(self, problems: Any, job: DriverJob) -> RunSummary:
        """``problems`` travels as its own argument: Ray resolves an object reference only
        there (this slice's problems, or the input path)."""
        self._thread = threading.get_native_id()
        return run_checked(replace(job, problems=problems), self._snapshot, self._stop)

    def _snapshot(self, finished: Any, stats: RunStats) -> None:
        """Keep a copy of the counters for ``progress`` (taken in the run's own thread, so
        nothing changes under the copy)."""
        now = time.monotonic()
        if now - self._last >= PROGRESS_INTERVAL_S / 2:
            self._last = now
            self._latest = copy.deepcopy(stats)

    def progress(self) -> RunStats | None:
        return self._latest

    def ready(self) -> bool:
        return True

    def stop(self, sig: int) -> None:
        self._stop.request(sig)

    def cpu(self) -> tuple[str, float] | None:
        """The state and CPU seconds of the thread ``run`` works in (answered while it
        works), so that the job can tell a driver at work from a frozen one after the
        second stop. The thread's, not the process's: Ray's own threads spend ~0.02 s a
        second in an idle actor."""
        return cpu_reading(thread=self._thread) if self._thread is not None else cpu_reading()


def run_job(job: DriverJob, on_progress: Callable[[RunStats], None] | None = None) -> RunSummary:
    """Start the pool and ``executor.drivers`` drivers over slices of ``job.problems``;
    one :class:`~prmtree.runner.RunSummary` for all of them.

    ``auto`` is the driver count ``out`` already holds (so a rerun resumes whatever the
    cluster's size now), else one driver per ``WORKERS_PER_DRIVER`` workers. The
    job's ``trees_in_flight`` and ``queue_limit`` are shared out: each driver takes 1/N,
    so the workers see the load one driver with these settings would give them.
    Raises :class:`ConfigError` before any worker starts for a refused output directory,
    and :class:`DriversStopped` naming the slices whose driver stopped early.
    """
    import ray

    from prmtree.rollout_workers import make_executor

    cfg, spec, kwargs, out, force = job.config, job.policy, job.policy_args, job.out, job.force
    if cfg.executor.kind != "ray":
        raise ConfigError(f"{cfg.executor.drivers} drivers (--drivers, [executor] drivers) need the ray executor "
                          "(--executor ray, [executor] kind = \"ray\"): the drivers share one Ray worker pool")
    out_dir = Path(out).resolve() if out is not None else None  # None: write nothing (a benchmark)
    requested = cfg.executor.drivers
    drivers = requested if isinstance(requested, int) else layout_in(out_dir) if out_dir else None
    # Ray joined, not started here (ray.init before, or a cluster's address): its runtime_env
    # decides what the workers import, and cloudpickle sends lambdas and a notebook's
    # functions whole, so nothing is refused
    probe = not ray.is_initialized() and is_local(cfg.executor.address)
    if probe and drivers is not None and drivers > 1:  # driver actors run the functions: refused before Ray starts
        check_portable(job, through_ray=True)
    if drivers is not None and out_dir is not None:
        precheck(out_dir, cfg, drivers, force)  # a refused directory never starts a worker
    started = time.perf_counter()
    connected = connect(cfg.executor).started
    actors: list[Any] = []
    try:
        if drivers is not None and drivers > 1:
            actors = _start_drivers(cfg, drivers)  # their processes start while the workers load
        # the pool reserves room for the drivers: their count where the output already says it
        pool = make_executor(cfg.executor if drivers is None else cfg.executor.model_copy(update={"drivers": drivers}),
                             spec, kwargs)
        try:
            assert isinstance(pool, RayExecutor)  # kind "ray", checked above
            handle = pool.handle()
            if drivers is None:
                drivers = auto_drivers(handle.workers)
                if probe and drivers > 1:  # auto chose several: now they may run the functions
                    check_portable(job, through_ray=True)
                if out_dir is not None:
                    precheck(out_dir, cfg, drivers, force)
                actors = _start_drivers(cfg, drivers) if drivers > 1 else []
            if drivers == 1:  # auto on a small pool: this process is the driver
                one = _driver_config(cfg, handle, 1)
                on_problem = None if on_progress is None else lambda finished, stats: on_progress(stats)
                return run_checked(replace(job, config=one, out=out_dir, slice=Slice(), force=False), on_problem)
            return _run_drivers(job, out_dir, actors, handle, on_progress, started)
        finally:
            asyncio.run(pool.close())
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
        if connected:
            ray.shutdown()


def _start_drivers(cfg: RunConfig, drivers: int) -> list[Any]:
    """The driver actors, named ``prmtree-driver-<job>-<slice index>``."""
    import ray

    job = uuid.uuid4().hex[:8]
    remote = ray.remote(SliceDriver)
    return [
        remote.options(name=f"prmtree-driver-{job}-{i}", num_cpus=cfg.executor.num_cpus_per_driver,
                       max_concurrency=4, max_restarts=0).remote()
        for i in range(drivers)
    ]


def check_sliceable(slice_: Slice, on_problem: Any) -> None:
    """What several drivers refuse whatever runs them, in one line: a slice of their own
    (they slice the input already), and ``on_problem`` (problems finish in the drivers)."""
    if slice_.count != 1:
        raise ConfigError("--drivers and --slice both slice the input: use one of them")
    if on_problem is not None:
        raise ConfigError("on_problem runs where each problem finishes, so it needs one driver; "
                          "with several drivers pass on_progress(stats) for the run's counters")


def check_portable(job: DriverJob, through_ray: bool = False) -> None:
    """The drivers receive ``check_answer`` and ``split_steps`` by pickle and import what
    is pickled by name: say so in one line, before anything starts, for one that cannot
    travel. Driver processes (``spawn``, plain pickle) refuse a lambda, a closure, a
    function of a notebook or of ``python -c``; Ray (``through_ray``: cloudpickle sends those
    whole) a function whose module a new process does not find: Ray's workers get the
    script's folder and the working directory, not a folder the script added to sys.path.
    A Ray this process joined but did not start is not checked (its runtime_env decides
    what the workers import)."""
    for name, fn in (("check_answer", job.check_answer), ("split_steps", job.split_steps)):
        if fn is None:
            continue
        why = _not_importable_by_ray(fn) if through_ray else _not_picklable(fn)
        if why:
            raise ConfigError(f"{name} must be importable to run in several driver processes (a function of a "
                              f"module or script, not a lambda or a closure): {why}")


def _not_picklable(fn: Any) -> str | None:
    """Why plain pickle cannot send ``fn`` to a spawned driver, or None."""
    main = sys.modules.get("__main__")
    if getattr(fn, "__module__", None) == "__main__" and not getattr(main, "__file__", None):
        return "it is defined in an interactive __main__ the driver processes cannot import"
    try:
        pickle.dumps(fn)
    except Exception as exc:
        return str(exc)
    return None


def _not_importable_by_ray(fn: Any) -> str | None:
    """Why a Ray driver actor could not import a module ``fn`` pickles through, or None: a
    module that cloudpickle names and that a new process, given the folders Ray gives its
    workers, does not find (asked of one process: only top-level names are looked up,
    nothing is imported)."""
    modules = _pickled_by_name(fn)
    if "__main__" in modules:
        return ("it goes by reference to the script's __main__ (a decorated function, such as an lru_cache "
                "wrapper), which Ray's workers cannot import: define it in a module of its own")
    tops = sorted({module.partition(".")[0] for module in modules}
                  - set(sys.builtin_module_names) - sys.stdlib_module_names)
    specs = {top: spec for top in tops if (spec := importlib.util.find_spec(top)) is not None}
    if not specs:  # none, or none found here either (then cloudpickle sends it whole)
        return None
    folders = [os.getcwd()]
    if sys.argv and sys.argv[0]:
        folders.append(os.path.dirname(os.path.realpath(sys.argv[0])))
    probe = ("import importlib.util, sys; tops, sys.path[:0] = sys.argv[1].split(','), sys.argv[2:]; "
             "print(','.join(t for t in tops if importlib.util.find_spec(t) is None))")
    found = subprocess.run([sys.executable, "-c", probe, ",".join(specs), *folders], capture_output=True,
                           text=True, timeout=120)
    missing = [top for top in found.stdout.strip().split(",") if top in specs] if found.returncode == 0 else []
    if not missing:
        return None
    spec = specs[missing[0]]
    where = spec.origin or ", ".join(spec.submodule_search_locations or [])
    return (f"its module {missing[0]!r} ({where}) is found only through sys.path as this process changed it, and "
            "Ray's workers do not get that: install it, put it beside the script, add its folder to PYTHONPATH, "
            "or register it with ray.cloudpickle.register_pickle_by_value")


def _pickled_by_name(fn: Any, seen: set[int] | None = None) -> set[str]:
    """The modules cloudpickle sends ``fn`` through by name (the receiver imports them), as it
    decides: a function or class that is its module's attribute goes by name (unless its
    module is registered to go by value); any other (a ``__main__`` function, a lambda, a
    closure) goes whole, with the globals its code names and its closure's cells, each by
    the same rule, and a module among them by name. A ``functools.partial`` goes with its
    function and arguments, a bound method or classmethod with its owner, any other object
    with its class and its attributes."""
    seen = set() if seen is None else seen
    if id(fn) in seen or len(seen) > 500:
        return set()
    seen.add(id(fn))
    try:
        return _by_name_within(fn, seen)
    except Exception:  # an object that will not be looked at (a proxy, a property that raises): no claim
        return set()


def _by_name_within(fn: Any, seen: set[int]) -> set[str]:
    """:func:`_pickled_by_name` of ``fn``, one step down."""
    if isinstance(fn, types.ModuleType):
        return set() if _by_value(fn.__name__) else {fn.__name__}
    if isinstance(fn, functools.partial):
        parts = [fn.func, *fn.args, *fn.keywords.values()]
        return set().union(*(_pickled_by_name(p, seen) for p in parts))
    if isinstance(fn, (staticmethod, classmethod)):
        return _pickled_by_name(fn.__func__, seen)
    if inspect.ismethod(fn):
        owner = fn.__self__
        return _pickled_by_name(owner if isinstance(owner, type) else type(owner), seen)
    if isinstance(fn, (dict, list, tuple, set, frozenset)):  # a container: what it holds
        items = [*fn.keys(), *fn.values()] if isinstance(fn, dict) else list(fn)
        return set().union(*(_pickled_by_name(v, seen) for v in items))
    module = getattr(fn, "__module__", None)
    plain = isinstance(fn, type) or inspect.isfunction(fn)
    if isinstance(module, str) and (module != "__main__" or not plain) and _named(fn, module):
        # by name: a function or class of a module, or a wrapper (lru_cache) even in __main__
        return set() if _by_value(module) else {module}
    if not plain:  # any other object: its class, and its state
        state = vars(fn).values() if isinstance(getattr(fn, "__dict__", None), dict) else ()
        return _pickled_by_name(type(fn), seen).union(*(_pickled_by_name(v, seen) for v in state))
    if isinstance(fn, type):  # sent whole: its methods and what they name
        return set().union(*(_pickled_by_name(v, seen) for v in vars(fn).values()
                             if inspect.isfunction(v) or isinstance(v, (staticmethod, classmethod))))
    out: set[str] = set()
    codes, names = [fn.__code__], set()
    while codes:  # the globals its code reads or writes, nested functions' too (not attribute names)
        code = codes.pop()
        names.update(op.argval for op in dis.get_instructions(code) if op.opname in _GLOBAL_OPS)
        codes.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    for name in names & fn.__globals__.keys():
        out |= _pickled_by_name(fn.__globals__[name], seen)
    for cell in fn.__closure__ or ():
        with contextlib.suppress(ValueError):  # an empty cell
            out |= _pickled_by_name(cell.cell_contents, seen)
    # and what cloudpickle sends with it: defaults, annotations, attributes
    for extra in (fn.__defaults__ or (), fn.__kwdefaults__ or {}, fn.__annotations__, fn.__dict__):
        out |= _pickled_by_name(extra, seen)
    return out


_GLOBAL_OPS = {"LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL"}  # what cloudpickle collects a function's globals by


def _by_value(module: str) -> bool:
    """Whether ``module`` is registered with cloudpickle to go by value (Ray's own answer to
    a module its workers cannot import: ``ray.cloudpickle.register_pickle_by_value``)."""
    from ray import cloudpickle

    registered = getattr(cloudpickle, "list_registry_pickle_by_value", lambda: set())()
    return module in registered or module.partition(".")[0] in registered


def _named(fn: Any, module: str) -> bool:
    """Whether ``fn`` is its module's attribute of its qualified name (what pickles by
    name): not a lambda, a closure or a function made at run time."""
    found: Any = sys.modules.get(module)
    for part in getattr(fn, "__qualname__", "<unknown>").split("."):
        found = getattr(found, part, None)
    return found is fn


def precheck(out: Path, cfg: RunConfig, drivers: int, force: bool) -> None:
    """Open every slice as its driver will (layout, config, another writer, damaged shards)
    and let it go again: a refusal comes now, in one line, before any worker starts."""
    check_layout(out, drivers)
    found = versions()
    for i in range(drivers):
        opened = open_run(out, cfg, found, Slice(i, drivers) if drivers > 1 else Slice(), force)
        opened.close()
        for note in opened.repaired:
            sys.stderr.write(f"prmtree: repaired: {note}\n")


def _driver_config(cfg: RunConfig, pool: PoolHandle, drivers: int) -> RunConfig:
    """Driver i's config: attached to the pool, one driver, its share of the job's load."""
    return driver_share(cfg, drivers, attach=pool.name, pool_drivers=drivers)


def driver_share(cfg: RunConfig, drivers: int, **executor: Any) -> RunConfig:
    """One of ``drivers`` drivers' config: one driver, its share of the job's trees in flight
    and queue, and the ``executor`` settings given (where it attaches)."""
    ex = cfg.executor
    share = ex.model_copy(update={
        "drivers": 1,
        "trees_in_flight": math.ceil(ex.trees_in_flight / drivers),
        "queue_limit": math.ceil(ex.queue_limit / drivers),
        **executor,
    })
    return cfg.model_copy(update={"executor": share})


def _inputs(problems: Any, drivers: int, cfg: RunConfig) -> list[Any]:
    """What each driver reads: the path, or its part sent once through Ray's object store."""
    import ray

    parts = split_inputs(problems, drivers, pilot_window(cfg))
    return parts if isinstance(problems, (str, os.PathLike)) else [ray.put(part) for part in parts]


def pilot_window(cfg: RunConfig) -> int:
    """How many of the input's first problems a pilot may choose members from (0: no pilot)."""
    return cfg.labels.pilot_window if cfg.labels.learn_floor else 0


def split_inputs(problems: Any, drivers: int, window: int = 0) -> list[Any]:
    """What each driver reads: the path (absolute, as a driver's working directory may
    differ; each driver reads it whole), or its part of an in-memory list: the first
    ``window`` problems of the list, whatever their slice, then its own slice's. A driver
    pilots other slices' problems too (``runner._select``), so the pilot of every driver
    sees the first ``window`` problems an unsliced run's pilot sees, and learns what it
    learns; with only its slice, each driver would learn from other members, and label
    differently."""
    if isinstance(problems, (str, os.PathLike)):
        return [str(Path(problems).resolve())] * drivers
    parts: list[list[Any]] = [[] for _ in range(drivers)]
    slices = [Slice(i, drivers) for i in range(drivers)]
    seen = 0  # problems of the list so far
    for item in problems:
        if isinstance(item, Problem):
            pid = item.id
            seen += 1
        elif isinstance(item, InputError):
            pid = item.problem_id
        else:
            raise TypeError(f"expected Problem objects, got {type(item).__name__}")
        if seen <= window and isinstance(item, Problem):
            for part in parts:  # every pilot's candidates; only the owner writes its rows
                part.append(item)
        else:
            parts[next(i for i, s in enumerate(slices) if s.owns(pid))].append(item)
    return parts


def _run_drivers(job: DriverJob, out: Path | None, actors: list[Any], pool: PoolHandle,
                 on_progress: Callable[[RunStats], None] | None, started: float) -> RunSummary:
    """Run slice i on actor i; wait, forwarding signals and reporting progress; merge."""
    import ray


    drivers = len(actors)
    try:  # Ray keeps an actor it cannot place pending without a word
        ray.get([a.ready.remote() for a in actors], timeout=START_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        raise FatalExecutorError(f"driver actors were not placed within {START_TIMEOUT_S:g} s: the cluster has "
                                 f"{ray.available_resources()} free; each reserves num_cpus_per_driver") from None
    cfg = job.config
    one = _driver_config(cfg, pool, drivers)
    inputs = _inputs(job.problems, drivers, cfg)
    where = str(out) if out is not None else None
    jobs = [replace(job, problems=None, config=one, out=where, slice=Slice(i, drivers), force=False)
            for i in range(drivers)]
    runs = {a.run.remote(inputs[i], jobs[i]): i for i, a in enumerate(actors)}
    results: dict[int, Any] = {}
    stopped: dict[int, str] = {}
    latest: dict[int, RunStats] = {}
    signals = JobSignals(drivers)
    watches = {i: ProgressWatch() for i in range(drivers)}
    signals.install()
    try:
        pending = list(runs)
        last_progress = 0.0
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=PROGRESS_INTERVAL_S)
            for ref in ready:
                i = runs[ref]
                try:
                    results[i] = ray.get(ref)
                    latest[i] = results[i].run_stats
                except Exception as exc:  # the actor died, or its run raised
                    stopped[i] = _reason(exc)
                    latest.pop(i, None)
                    rest = ("the other drivers go on" if len(pending) > 1 else "the other driver goes on"
                            if pending else "no other driver is running")
                    sys.stderr.write(f"prmtree: the driver of slice {i}/{drivers} stopped: {stopped[i]}; {rest}\n")
            live = [actors[runs[ref]] for ref in pending]
            for sig in signals.take():
                for actor in live:
                    actor.stop.remote(sig)
            if pending and signals.overdue():
                frozen = _frozen_drivers({runs[ref]: actors[runs[ref]] for ref in pending}, watches)
                if frozen:
                    why = signals.killed([f"{i}/{drivers}" for i in frozen])
                    for i in frozen:
                        ray.kill(actors[i], no_restart=True)
                        stopped[i] = why
                    pending = [ref for ref in pending if runs[ref] not in frozen]
                if not pending:
                    signals.cancel_by = None  # said and done
            if on_progress is not None and time.perf_counter() - last_progress >= PROGRESS_INTERVAL_S:
                last_progress = time.perf_counter()
                latest.update(_poll_progress({runs[ref]: actors[runs[ref]] for ref in pending}))
                if latest:
                    merged = sum(latest.values(), RunStats())
                    merged.started = started
                    on_progress(merged)
    finally:
        signals.uninstall()
    return merge_summaries(results, stopped, drivers, out, signals.first, started, on_progress)


def merge_summaries(results: dict[int, RunSummary], stopped: dict[int, str], drivers: int, out: Path | None,
                    stopped_by: int | None, started: float,
                    on_progress: Callable[[RunStats], None] | None = None,
                    partial: dict[int, RunStats] | None = None) -> RunSummary:
    """The job's one summary from its drivers' (``results`` by slice index); raises
    :class:`DriversStopped` naming the slices in ``stopped`` (index: why). ``partial``: the
    last counters a stopped driver reported (its finished problems are saved, and count)."""
    parts = [results[i].run_stats for i in sorted(results)] + [s for _, s in sorted((partial or {}).items())]
    stats = sum(parts, RunStats())
    stats.started = started
    stats.stop_clock()
    if on_progress is not None:  # the last report is the summary's counters, whatever the interval left out
        on_progress(stats)
    pending = sum(r.retry_pending for r in results.values())
    if stopped_by and not stopped and not partial and len(results) == drivers and \
            not any(r.stopped_by for r in results.values()):
        stopped_by = None  # every slice had started all of its problems when the stop came: the run is complete
    unusable = next((r.unusable for r in results.values() if r.unusable), None)  # a slice's rows were all bad input
    if unusable is None and results and not partial and all(r.empty for r in results.values()):
        unusable = NO_ROWS  # no slice's input held a row
    summary = RunSummary(out=out, run_stats=stats, retry_pending=pending,
                         retry_futile=sum(r.retry_futile for r in results.values()), stopped_by=stopped_by,
                         unusable=None if stats.problems_done or pending else unusable)
    if stopped:
        names = [f"{i}/{drivers}" for i in sorted(stopped)]
        why = "; ".join(f"slice {i}/{drivers}: {stopped[i]}" for i in sorted(stopped))
        whose = "the driver of slice" if len(names) == 1 else "the drivers of slices"
        how = "stopped as asked" if stopped_by else "ran to the end"
        done = f"; slices {', '.join(f'{i}/{drivers}' for i in sorted(results))} {how}" if results else ""
        raise DriversStopped(f"{whose} {', '.join(names)} stopped early ({why}){done}; every finished problem "
                             "is saved: run the same command again to finish", summary, names)
    return summary


def _frozen_drivers(live: dict[int, Any], watches: dict[int, ProgressWatch]) -> list[int]:
    """The slices (of ``live``: index -> driver actor) whose driver makes no progress. Each
    is asked for its process's CPU (its own /proc, wherever Ray placed it); one that does not
    answer within a second (its process stopped, or a thread holding the GIL) is frozen."""
    import ray

    refs = {actor.cpu.remote(): i for i, actor in live.items()}
    ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=1.0)
    readings: dict[int, tuple[str, float] | None] = {}
    for ref in ready:
        try:
            readings[refs[ref]] = ray.get(ref)
        except Exception:  # it died meanwhile: its run's result says so
            readings[refs[ref]] = None
    return [i for i in sorted(live) if watches[i].frozen(readings.get(i))]


def _poll_progress(live: dict[int, Any]) -> dict[int, RunStats]:
    """The running drivers' latest counters (a driver slow to answer is left for next time)."""
    import ray

    refs = {actor.progress.remote(): i for i, actor in live.items()}
    ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=1.0)
    out = {}
    for ref in ready:
        try:
            stats = ray.get(ref)
        except Exception:  # it died meanwhile: its run's result says so
            continue
        if stats is not None:
            out[refs[ref]] = stats
    return out


def _reason(exc: BaseException) -> str:
    """Why a driver stopped, in one line: the run's own exception, or how its actor died."""
    from ray.exceptions import RayActorError

    if isinstance(exc, RayActorError):
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        return f"its actor died ({first[:200]})" if first else "its actor died"
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    return raised(exc)


class JobSignals:
    """SIGTERM / SIGINT to the job (main thread only): the first asks every driver to take no
    new problems and finish those in flight (a driver still piloting drops them: they cannot
    finish before its pilot learns); the second, to cancel those (the next run redoes them);
    a driver still running ``CANCEL_WAIT_S`` after the second and making no progress is killed
    (:meth:`overdue`, :class:`ProgressWatch`); a third gets the default action (never an
    ignored SIGINT's SIG_IGN)."""

    def __init__(self, drivers: int) -> None:
        self.drivers = drivers
        self.first: int | None = None
        self._last: tuple[int, float] | None = None  # the last signal acted on, and when
        self._again = False  # a second stop was forwarded
        self.cancel_by: float | None = None  # when drivers still running after the second stop are killed
        self._received: list[int] = []
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._on_signal)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, sig: int, frame: Any) -> None:
        now = time.monotonic()
        if is_echo(self._last, sig, now):
            return  # the same stop delivered twice (to the job and to its group)
        self._last = (sig, now)
        if self._again:  # a third: the default action (kept away from the second's echo till now)
            last_resort = self._previous.get(sig)
            self.uninstall()
            if not callable(last_resort):  # SIG_IGN (a job started with `&` in a script) would end nothing
                signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
            return
        self._received.append(sig)
        name = signal.Signals(sig).name
        if self.first is None:
            self.first = sig
            sys.stderr.write(f"\nprmtree: {name}: the {self.drivers} drivers take no new problems and finish "
                             "those in flight; a pilot not finished is dropped and the next run pilots again "
                             "(send it again to stop at once)\n")
        else:
            sys.stderr.write(f"prmtree: {name} again: the drivers cancel the problems in flight "
                             f"(the next run redoes them); a driver not ended within {CANCEL_WAIT_S:g} s and making no "
                             "progress is killed\n")
            self._again = True
            self.cancel_by = time.monotonic() + CANCEL_WAIT_S

    def overdue(self) -> bool:
        """Whether the drivers had their time to cancel and end since the second stop."""
        return self.cancel_by is not None and time.monotonic() >= self.cancel_by

    def killed(self, slices: list[str]) -> str:
        """Say that the drivers of ``slices`` were killed for not ending, and for making no
        progress; the reason each gets."""
        whose = "the driver of slice" if len(slices) == 1 else "the drivers of slices"
        late = f"did not end within {CANCEL_WAIT_S:g} s of the second stop and made no progress"
        sys.stderr.write(f"prmtree: {whose} {', '.join(slices)} {late}: killed (SIGKILL); what its last flush saved "
                         "is on disk and the same command resumes the rest\n")
        return f"it {late}, so it was killed"

    def take(self) -> list[int]:
        """Signals received since the last call, to forward to the drivers."""
        got, self._received = self._received, []
        return got
