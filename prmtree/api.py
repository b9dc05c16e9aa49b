"""``prmtree.run``: the one call the CLI, a notebook and a ``ray job`` script share."""

from __future__ import annotations

import functools
import inspect
import os
import sys
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prmtree.engine.config import SECRET_NAME, RunConfig, load_config, merge
from prmtree.engine.contracts import Policy
from prmtree.engine.driver import FinishedProblem
from prmtree.engine.errors import ConfigError
from prmtree.engine.labelers import check_labeler
from prmtree.engine.output import Slice
from prmtree.engine.problem import check_input, holds_rows
from prmtree.engine.records import Problem
from prmtree.engine.stats import RunStats
from prmtree.engine.answers.verifier import check_custom
from prmtree.engine.steps import check_splitter
from prmtree.policies.base import check_policy
from prmtree.runner import DriverJob, RunSummary, RunWarning, run_checked, with_progress


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
    slice: str | Slice | None = None,  # noqa: A002 - the CLI's --slice
    force: bool = False,
    config_overrides: dict[str, Any] | None = None,
    on_problem: Callable[[FinishedProblem, RunStats], None] | None = None,
    check_answer: Callable[[str, str], bool] | None = None,
    split_steps: Callable[[str], list[str]] | None = None,
    drivers: int | str | None = None,
    on_progress: Callable[[RunStats], None] | None = None,
    shard: str | Slice | None = None,
    rerun_changed: bool = False,
    retry_errors: bool = False,
) -> RunSummary:
    """Search every problem, label the steps, write Parquet shards under ``out``.

    ``problems`` is an input path (JSONL, JSON, Parquet, a directory of them, or a saved
    Hugging Face dataset) or an iterable of :class:`Problem`; ``policy`` a registered
    name, ``module:Class``, or an instance. Arguments given here override the config.

    ``check_answer(gold, predicted) -> bool`` replaces answer verification and
    ``split_steps(text) -> list[str]`` replaces step segmentation (Python API only).

    If ``out`` holds an earlier run with the same config, the run resumes: finished
    problems are skipped. Each problem's fingerprint (question, answer, meta, image bytes)
    is recorded: a resume refuses a labelled problem whose input changed unless
    ``rerun_changed`` (then its rows are dropped and it is redone), retries a bad input row
    that changed (every one with ``retry_errors``), and says which recorded problems are
    gone from the input. ``force`` starts over when the config differs. ``slice``
    ("i/N") processes a deterministic slice of the input. Raises :class:`ConfigError`
    for a bad configuration, or when another run is writing the same slice of ``out``.

    ``drivers`` (N, or "auto"; default ``executor.drivers``, 1) runs N drivers over slices
    of the input: the same rows, one summary. They share one Ray worker pool
    (``prmtree/multi_driver.py``); N > 1 implies the Ray executor (a local Ray unless
    ``[executor] address`` names a cluster) unless ``[executor] kind`` names another one.
    With ``kind = "inline"`` named, or ``drivers="auto"`` and no Ray address, they are N
    processes on this machine around the policy, built once in this process
    (``prmtree/local_drivers.py``; auto: one per 512 sequences the policy serves at once,
    and this process alone for a policy that declares none). A script that starts driver
    processes must guard its call with ``if __name__ == "__main__":`` (they import it). ``on_problem(finished, stats)`` runs where a problem finishes, so it needs
    one driver; ``on_progress(stats)`` is called in this process with the run's counters
    (after each problem, or a few times a second from several drivers).

    Called from the main thread, SIGTERM / SIGINT stop the run gracefully: no new
    problems, everything finished saved; the summary's ``stopped_by`` is the signal (None where
    every problem had started when it came and all finished: the run is complete).
    """
    overrides: dict[str, Any] = dict(config_overrides or {})
    if seed is not None:
        overrides["seed"] = seed
    if strategy is not None:
        overrides.setdefault("search", {})["strategy"] = strategy
    policy_overrides(policy, policy_args, overrides)
    # the custom functions are part of what decides the rows: named in the config, so a resume
    # with another one (or none) is refused as any other changed setting is, not mixed in
    if check_answer is not None:
        overrides["verify"] = {**overrides.get("verify", {}), "custom": callable_name(check_answer)}
    if split_steps is not None:
        overrides["steps"] = {**overrides.get("steps", {}), "custom": callable_name(split_steps)}
    if drivers is not None:
        overrides.setdefault("executor", {})["drivers"] = drivers
    cfg = build_config(config, **overrides)
    for key, function, argument in (("verify.custom", check_answer, "check_answer"),
                                    ("steps.custom", split_steps, "split_steps")):
        named = cfg.verify.custom if key == "verify.custom" else cfg.steps.custom
        if named and function is None:  # a name in a config file: no function comes with it
            raise ConfigError(f"{key} = {named!r} names the Python API's {argument} function, which only "
                              f"prmtree.run({argument}=...) passes; remove it from the config (a run's manifest "
                              "records it)")
    if policy is not None and not isinstance(policy, str):
        spec, kwargs = policy, None
    else:
        spec, kwargs = cfg.policy.name, cfg.policy.kwargs
    check_policy(spec, kwargs)  # name, async generate, arguments: before any model loads
    check_labeler(cfg.labels.method)
    try:
        if split_steps is not None:
            check_splitter(split_steps)
        if check_answer is not None:
            check_custom(check_answer)  # an async def: refused before any model loads
    except TypeError as exc:
        raise ConfigError(str(exc)) from None
    judge = cfg.labels.judge
    if cfg.labels.method == "consensus" and judge.name:
        check_policy(judge.name, judge.kwargs)
    try:
        if shard is not None:  # the older name of ``slice`` ("shard" is a Parquet file of a table)
            warnings.warn("prmtree.run(shard=...) is now slice=...", DeprecationWarning, stacklevel=2)
            slice = slice or shard
        slice_ = Slice.parse(slice) if isinstance(slice, str) else (slice or Slice())
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if isinstance(problems, (str, os.PathLike)):
        check_input(problems, cfg.input)  # missing, a directory with files it would skip, fields no row has
    if force and out is not None and (  # --force deletes first: a typo must not cost a finished run
            not holds_rows(problems) if isinstance(problems, (str, os.PathLike))
            else isinstance(problems, (list, tuple)) and not problems):
        raise ConfigError(f"--force starts {str(out)!r} over, but the input holds no problem (no row was read), so "
                          "nothing would replace what it holds: check --input")
    ex = cfg.executor
    several = ex.drivers != 1
    if (several and ex.kind == "inline" and "kind" not in ex.model_fields_set
            and (ex.drivers != "auto" or ex.address is not None)):
        # N drivers (or auto with a Ray address) share one Ray worker pool unless inline was named;
        # auto on the inline executor sizes driver processes by the policy's capacity instead
        cfg = cfg.model_copy(update={"executor": ex.model_copy(update={"kind": "ray"})})
    ray = sys.modules.get("ray")
    if cfg.executor.kind == "ray" and cfg.executor.attach is None and not (ray and ray.is_initialized()):
        from prmtree.rollout_workers.ray import check_address

        check_address(cfg.executor.address)  # nothing listening there: refused before out is touched
    job = DriverJob(problems, cfg, spec, kwargs, out, slice_, force, check_answer, split_steps,
                    rerun_changed=rerun_changed, retry_errors=retry_errors)
    if several and cfg.executor.attach is None:
        if cfg.executor.kind == "inline":  # driver processes around this one's policy (auto: maybe only this one)
            from prmtree.local_drivers import run_local_job

            return _warned(run_local_job(job, on_progress=on_progress, on_problem=on_problem))
        from prmtree.multi_driver import check_sliceable, run_job

        check_sliceable(slice_, on_problem)
        return _warned(run_job(job, on_progress=on_progress))
    if out is not None and slice_.count == 1 and cfg.executor.attach is None:
        from prmtree.multi_driver import check_layout

        check_layout(Path(out), 1)  # an --out written by --drivers N: say so in its terms
    if on_progress is not None:
        on_problem = with_progress(on_problem, on_progress)
    return _warned(run_checked(job, on_problem))


def _warned(summary: RunSummary) -> RunSummary:
    """``summary``, once each of its warnings is issued as a :class:`RunWarning`: a script
    calling :func:`run` hears what `prmtree run` prints under its table (a ``check_answer``
    that failed on every answer would otherwise pass as wrong answers in silence)."""
    for line in summary.warnings:
        warnings.warn(line, RunWarning, stacklevel=3)
    return summary


def policy_overrides(policy: Any, policy_args: dict[str, Any] | None, overrides: dict[str, Any]) -> None:
    """``[policy]`` as ``policy`` and ``policy_args`` set it, into ``overrides``: a name, or an
    instance's class and simple public attributes standing for its arguments (so the config's
    hash, and resume's check, see a different policy), and the arguments. Raises ConfigError
    for arguments given with an instance (recorded, never used: it is built) and for one
    called ``name`` (it would replace the policy named)."""
    instance = policy is not None and not isinstance(policy, str)
    if policy_args and instance:
        raise ConfigError(f"policy_args ({', '.join(map(str, policy_args))}) are for a policy prmtree builds (a name "
                          "or module:Class); this policy is an instance, already built: give them to its constructor")
    if policy_args and "name" in policy_args:
        raise ConfigError("a policy argument may not be called 'name': [policy] name is the policy to build "
                          "(--policy), so it would replace it; rename that argument of the policy's constructor")
    if isinstance(policy, str):
        overrides.setdefault("policy", {})["name"] = policy
    if policy_args:
        overrides.setdefault("policy", {}).update(policy_args)
    if instance:
        overrides["policy"] = {**_describe_instance(policy), **overrides.get("policy", {})}


def callable_name(function: Any) -> str:
    """``module:qualname`` of a custom function (an object's class where it has no name of
    its own), with a ``functools.partial``'s arguments: what the config records of it. Two
    functions of one name (two lambdas of one script) are one to it."""
    if isinstance(function, functools.partial):
        args = [repr(a) for a in function.args] + [f"{k}={v!r}" for k, v in sorted(function.keywords.items())]
        return f"{callable_name(function.func)}({', '.join(args)})"
    qualname = getattr(function, "__qualname__", None) or type(function).__qualname__
    module = getattr(function, "__module__", None) or type(function).__module__
    return f"{module}:{qualname}"


def _describe_instance(policy: Any) -> dict[str, Any]:
    if inspect.isfunction(policy):  # an ``async def generate(request)``: named as on the command line
        return {"name": f"{policy.__module__}:{policy.__qualname__}"}
    if inspect.ismethod(policy):  # a bound ``async def``: its object's settings, and which method
        owner = _describe_instance(policy.__self__)
        return {**owner, "name": f"{owner['name']}.{policy.__name__}"}
    cls = type(policy)
    attrs = {  # a secret (an API key) is no setting of the rows, and must not be written into the run
        k: v for k, v in vars(policy).items()
        if not k.startswith("_") and k != "name" and not SECRET_NAME.search(k)
        and (v is None or isinstance(v, (bool, int, float, str)))
    } if hasattr(policy, "__dict__") else {}
    return {"name": f"{cls.__module__}:{cls.__qualname__}", **attrs}


