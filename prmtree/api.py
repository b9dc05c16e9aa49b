"""``prmtree.run``: the one call the CLI, a notebook and a ``ray job`` script share."""

from __future__ import annotations

import asyncio
import os
import platform
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prmtree.engine.config import ConfigError, RunConfig, load_config, merge
from prmtree.engine.driver import Driver, FinishedProblem
from prmtree.engine.output import Slice
from prmtree.engine.problem import InputError, Problem, check_input, iter_problems
from prmtree.engine.resume import OpenedRun, open_run
from prmtree.engine.stats import RunStats
from prmtree.policies.base import Policy, check_policy
from prmtree.rollout_workers import make_executor
from prmtree.rollout_workers.loop_watchdog import note_signal


@dataclass
class RunSummary:
    """What a run did: a view of its :class:`RunStats` (the manifest's numbers), so
    ``summary.rollouts``, ``summary.problems_done`` etc. read the same fields."""

    out: Path | None
    run_stats: RunStats
    retry_pending: int = 0  # problems that failed and the same command will retry
    stopped_by: int | None = None  # the signal (SIGTERM, SIGINT) that stopped the run early

    def __getattr__(self, name: str) -> Any:
        if name == "run_stats":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.run_stats, name)

    @property
    def stats(self) -> dict[str, Any]:
        return self.run_stats.to_dict()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("prmtree", "pyarrow", "networkx", "math-verify", "pydantic"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def build_config(config: RunConfig | str | os.PathLike[str] | dict[str, Any] | None, **overrides: Any) -> RunConfig:
    """A validated config from a RunConfig, a TOML path, a dict, or nothing, plus overrides."""
    if isinstance(config, RunConfig):
        base = config.model_dump()
        return load_config(None, merge(base, overrides)) if overrides else config
    if isinstance(config, dict):
        return load_config(None, merge(config, overrides))
    return load_config(config, overrides)


def run(
    problems: str | os.PathLike[str] | Iterable[Problem],
    *,
    policy: str | Policy | None = None,
    policy_args: dict[str, Any] | None = None,
    strategy: str | None = None,
    out: str | os.PathLike[str] | None = None,
    seed: int | None = None,
    config: RunConfig | str | os.PathLike[str] | dict[str, Any] | None = None,
    shard: str | Slice | None = None,
    force: bool = False,
    config_overrides: dict[str, Any] | None = None,
    on_problem: Callable[[FinishedProblem, RunStats], None] | None = None,
    check_answer: Callable[[str, str], bool] | None = None,
    split_steps: Callable[[str], list[str]] | None = None,
    drivers: int | str | None = None,
    on_progress: Callable[[RunStats], None] | None = None,
) -> RunSummary:
    """Search every problem, label the steps, write Parquet shards under ``out``.

    ``problems`` is an input path (JSONL, JSON, Parquet, a directory of them, or a saved
    Hugging Face dataset) or an iterable of :class:`Problem`; ``policy`` a registered
    name, ``module:Class``, or an instance. Arguments given here override the config.

    ``check_answer(gold, predicted) -> bool`` replaces answer verification and
    ``split_steps(text) -> list[str]`` replaces step segmentation (Python API only).

    If ``out`` holds an earlier run with the same config, the run resumes: finished
    problems are skipped. ``force`` starts over when the config differs. ``shard``
    ("i/N") processes a deterministic slice of the input. Raises :class:`ConfigError`
    for a bad configuration, or when another run is writing the same slice of ``out``.

    ``drivers`` (N, or "auto"; default ``executor.drivers``, 1) runs N drivers over slices
    of the input, sharing one Ray worker pool (``prmtree/multi_driver.py``): the same rows,
    one summary. ``on_problem(finished, stats)`` runs where a problem finishes, so it needs
    one driver; ``on_progress(stats)`` is called in this process with the run's counters
    (after each problem, or a few times a second from several drivers).

    Called from the main thread, SIGTERM / SIGINT stop the run gracefully: no new
    problems, everything finished saved; the summary's ``stopped_by`` is the signal.
    """
    overrides: dict[str, Any] = dict(config_overrides or {})
    if seed is not None:
        overrides["seed"] = seed
    if strategy is not None:
        overrides.setdefault("search", {})["strategy"] = strategy
    if isinstance(policy, str):
        overrides.setdefault("policy", {})["name"] = policy
    if policy_args:
        overrides.setdefault("policy", {}).update(policy_args)
    if drivers is not None:
        overrides.setdefault("executor", {})["drivers"] = drivers
    if policy is not None and not isinstance(policy, str):
        # The instance's class and simple public attributes stand for its arguments in
        # the config, so its hash (and resume's check) sees a different policy.
        overrides["policy"] = {**_describe_instance(policy), **overrides.get("policy", {})}
    cfg = build_config(config, **overrides)
    if policy is not None and not isinstance(policy, str):
        spec, kwargs = policy, None
    else:
        spec, kwargs = cfg.policy.name, cfg.policy.kwargs
    check_policy(spec, kwargs)  # name, async generate, arguments: before any model loads
    judge = cfg.labels.judge
    if cfg.labels.method == "consensus" and judge.name:
        check_policy(judge.name, judge.kwargs)
    try:
        slice_ = Slice.parse(shard) if isinstance(shard, str) else (shard or Slice())
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if isinstance(problems, (str, os.PathLike)):
        check_input(problems)  # missing, or a directory with files it would skip
    hooks = {"check_answer": check_answer, "split_steps": split_steps}
    several = cfg.executor.drivers != 1 and not (cfg.executor.drivers == "auto" and cfg.executor.kind == "inline")
    if several and cfg.executor.attach is None:  # (auto on the inline executor: one driver, this process)
        from prmtree.multi_driver import run_job

        if slice_.count != 1:
            raise ConfigError("--drivers and --shard both slice the input: use one of them")
        if on_problem is not None:
            raise ConfigError("on_problem runs where each problem finishes, so it needs one driver; "
                              "with several drivers pass on_progress(stats) for the run's counters")
        return run_job(problems, cfg, spec, kwargs, out=out, force=force, hooks=hooks, on_progress=on_progress)
    if out is not None and slice_.count == 1 and cfg.executor.attach is None:
        from prmtree.multi_driver import check_layout

        check_layout(Path(out), 1)  # an --out written by --drivers N: say so in its terms
    if on_progress is not None:
        on_problem = _also_progress(on_problem, on_progress)
    return run_checked(problems, cfg, spec, kwargs, out, slice_, force, on_problem, hooks)


def run_checked(
    problems: Any,
    cfg: RunConfig,
    spec: Any,
    kwargs: dict[str, Any] | None,
    out: str | os.PathLike[str] | None,
    slice_: Slice,
    force: bool,
    on_problem: Callable[[FinishedProblem, RunStats], None] | None,
    hooks: dict[str, Any],
    stop: StopHandle | None = None,
) -> RunSummary:
    """One driver on one slice, its arguments already checked: the rest of :func:`run`,
    and what each driver actor of a ``--drivers`` job runs (``stop`` stands in for the
    signals a thread other than the main one cannot receive)."""
    opened = open_run(out, cfg, _versions(), slice_, force) if out is not None else None
    for note in opened.repaired if opened else ():
        sys.stderr.write(f"prmtree: damaged shard: {note}\n")
    try:
        return asyncio.run(_run_async(problems, cfg, spec, kwargs, opened, slice_, on_problem, hooks, stop))
    finally:
        if opened is not None:
            opened.close()  # the slice's lock: the next run may start


def _also_progress(
    on_problem: Callable[[FinishedProblem, RunStats], None] | None, on_progress: Callable[[RunStats], None]
) -> Callable[[FinishedProblem, RunStats], None]:
    def both(finished: FinishedProblem, stats: RunStats) -> None:
        if on_problem is not None:
            on_problem(finished, stats)
        on_progress(stats)

    return both


def _judge_executor(cfg: RunConfig) -> Any:
    """The judge's own policy, in this process, when ``[labels.judge] name`` names one
    (otherwise the judge is the run's policy, asked through the run's executor)."""
    judge = cfg.labels.judge
    if cfg.labels.method != "consensus" or not judge.name:
        return None
    from prmtree.engine.config import ExecutorConfig

    return make_executor(ExecutorConfig(kind="inline", max_concurrency=cfg.executor.max_concurrency),
                         judge.name, judge.kwargs)


def _describe_instance(policy: Any) -> dict[str, Any]:
    cls = type(policy)
    attrs = {
        k: v for k, v in vars(policy).items()
        if not k.startswith("_") and k != "name" and (v is None or isinstance(v, (bool, int, float, str)))
    } if hasattr(policy, "__dict__") else {}
    return {"name": f"{cls.__module__}:{cls.__qualname__}", **attrs}


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
            self._loop.call_soon_threadsafe(self._stop._on_signal, sig)

    def _bind(self, stop: _GracefulStop, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._stop, self._loop = stop, loop
            for sig in self._early:
                loop.call_soon_threadsafe(stop._on_signal, sig)
            self._early.clear()

    def _unbind(self) -> None:
        with self._lock:
            self._stop = self._loop = None


class _GracefulStop:
    """SIGTERM / SIGINT during a run (handlers only in the main thread): the first stops
    taking new problems, flushes what is finished and lets the trees in flight finish;
    the second cancels those (a resume redoes them); a third gets the default action."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer
        self.driver: Driver | None = None
        self.signum: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self, driver: Driver) -> None:
        self.driver = driver
        if threading.current_thread() is threading.main_thread():
            self._loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self._on_signal, sig)
                # the loop's handler runs only when the loop does; this one also while a
                # policy blocks it (the inline executor's watchdog then acts on it)
                signal.signal(sig, note_signal)

    def uninstall(self) -> None:
        if self._loop is not None:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.remove_signal_handler(sig)
            self._loop = None

    def _on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if self.signum is None:
            self.signum = sig
            in_flight = self.driver.request_stop() if self.driver is not None else 0
            try:
                if self.writer is not None:
                    self.writer.flush()  # saved now, in case a SIGKILL ends the grace period
            except OSError:
                pass  # the final flush reports it
            sys.stderr.write(f"\nprmtree: {name}: taking no new problems, finishing the {in_flight} in flight "
                             "(send it again to stop at once)\n")
        else:
            if self.driver is not None:
                self.driver.request_stop(cancel=True)
            sys.stderr.write(f"prmtree: {name} again: cancelling the problems in flight (the next run redoes them)\n")
            self.uninstall()


def _select(items: Iterable[Problem | InputError], slice_: Slice, done: set[str]) -> Iterable[Problem | InputError]:
    """This slice's problems (and input errors) that are not finished yet."""
    for item in items:
        pid = item.id if isinstance(item, Problem) else item.problem_id
        if slice_.owns(pid) and pid not in done:
            yield item


async def _run_async(
    problems: Any,
    cfg: RunConfig,
    spec: Any,
    kwargs: dict[str, Any] | None,
    opened: OpenedRun | None,
    slice_: Slice,
    on_problem: Callable[[FinishedProblem, RunStats], None] | None,
    hooks: dict[str, Any],
    handle: StopHandle | None = None,
) -> RunSummary:
    from prmtree.engine.verify import Verifier

    stats = RunStats.resumed(opened.previous_stats) if opened else RunStats()
    writer = opened.writer if opened else None
    stop = _GracefulStop(writer)
    # Built only now: the output directory is open and the config accepted, so a refused
    # resume never loads a model or starts a cluster.
    executor = make_executor(cfg.executor, spec, kwargs)
    judge_executor = _judge_executor(cfg)
    v = cfg.verify
    verifier = Verifier(custom=hooks["check_answer"], rel_tol=v.rel_tol, timeout_s=v.timeout_s,
                        pool_workers=v.pool_workers, memo_size=v.memo_size)
    try:
        driver = Driver(cfg, executor, writer, verifier=verifier, on_problem=on_problem, stats=stats,
                        split_steps=hooks["split_steps"], judge_executor=judge_executor)
        stop.install(driver)  # after the model loaded: a signal before that simply ends the process
        if handle is not None:
            handle._bind(stop, asyncio.get_running_loop())
        done = opened.done if opened else set()
        skip = lambda pid: pid in done or not slice_.owns(pid)  # noqa: E731 - checked before images are decoded
        items = _select(iter_problems(problems, cfg.input, skip), slice_, done)
        try:
            stats = await driver.run(items)
        except BaseException:
            if writer is not None:
                writer.flush()  # keep every finished problem; a resume does the rest
            raise
        stopped_by = stop.signum  # a signal while closing below stops nothing
    finally:
        await verifier.aclose()
        if judge_executor is not None:
            await judge_executor.close()
        await executor.close()
        stop.uninstall()
        if handle is not None:
            handle._unbind()
    if writer is not None:
        writer.flush() if stopped_by else writer.close()  # a stopped run is not "finished"
    pending = len(writer.manifest.failed) if writer is not None else stats.problems_failed
    return RunSummary(out=writer.out_dir if writer is not None else None, run_stats=stats, retry_pending=pending,
                      stopped_by=stopped_by)
