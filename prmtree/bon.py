"""Best of N with a process reward model: sample N solutions, let the PRM pick one.

``prmtree bon`` (and :func:`best_of_n`) asks a policy for N full solutions per problem
through the same path as ``prmtree run``: the run's config, its executor (inline or
Ray), the driver's one retry layer (:meth:`Driver.call`, seeds from
:func:`request_seed`), the run's step segmenter and its answer :class:`Verifier`. A
PRM then scores every step of every solution, and each selection rule picks one
solution per problem:

* ``prm-min``: the solution whose lowest step reward is highest (one bad step sinks it);
* ``prm-last``: the last step's reward (the issue's "orm": with a step PRM it *is* the
  last step's reward, so it is reported under this name);
* ``prm-mean``: the mean step reward;
* ``prm-prod``: the product of the step rewards (the chance that no step is wrong, if
  the rewards were independent);
* ``orm``: the PRM reading the whole solution as a single step (one reward for the full
  text, no intermediate step markers): an outcome reward from the same model, which
  differs from ``prm-last`` because the model sees no step boundaries;

beside baselines that use no reward model:

* ``majority``: a vote over the extracted final answers (numbers compared by value,
  text normalised); ties are broken by a seeded draw among the tied answers;
* ``random``: one solution drawn with a seed;
* ``oracle``: right when any of the N is right (the ceiling every rule is under).

A rule's ties go to the earliest sample (the samples' order is itself random). Several
N (``--n 1,2,4,8``) are measured on one sampling at the largest N: the first n samples
of each problem stand for a best-of-n, so the curve's points are nested, not
independent draws. Accuracies carry 95% Wilson score intervals (over problems); each
rule's gain over ``random`` and ``majority`` carries a 95% paired bootstrap interval
(problems resampled, 2000 times), which is the fair test of "beats": two overlapping
Wilson intervals can still hide a clear paired difference.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import math
import os
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from prmtree.engine.answers import Verifier, normalize_text, parse_number
from prmtree.engine.config import RunConfig
from prmtree.engine.contracts import CANCELLED_BY_PRMTREE
from prmtree.engine.driver import Driver, PolicyFailure, generation_request
from prmtree.engine.errors import ConfigError, raised
from prmtree.engine.problem import check_input, iter_problems
from prmtree.engine.records import InputError, Problem
from prmtree.engine.rollout import parse_completion
from prmtree.engine.search.base import RolloutRequest

#: The selection rules that read the PRM's step rewards, then the ones that do not.
PRM_RULES = ("prm-min", "prm-last", "prm-mean", "prm-prod")
METHODS = (*PRM_RULES, "orm", "majority", "random", "oracle")
#: The request's node id: part of each problem's sampling seed (stable across runs).
NODE_ID = "best-of-n"
Z95 = 1.959963984540054
BOOTSTRAP = 2000
_MODULE_ATTR = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class Scorer(Protocol):
    """What best-of-N needs from a PRM: per-step rewards in [0, 1] for many solutions (None
    for a step it did not read, as ``PRM`` gives past its length limit)."""

    def score_batch(self, items: list[tuple[Problem, list[str]]]) -> list[list[float | None]]: ...


@dataclass
class Candidate:
    """One sampled solution: its steps, answer and verdict, and the PRM's rewards."""

    text: str
    steps: tuple[str, ...]
    answer: str | None
    correct: bool
    malformed: str | None = None
    step_scores: list[float | None] = field(default_factory=list)  # one per step (empty: not scored; None: not read)
    whole_score: float | None = None  # the full text scored as one step (``orm``)


@dataclass
class Sampled:
    """A problem's N solutions, in sample order."""

    problem: Problem
    candidates: list[Candidate]


class NothingSampled(ConfigError):
    """No problem got its N solutions: every one failed (``failed``), or no input row was
    usable. Not a usage error: the command exits 3 or 4, as ``prmtree run`` does."""

    def __init__(self, message: str, failed: bool) -> None:
        super().__init__(message)
        self.failed = failed


@dataclass
class Sampling:
    """What sampling produced: the problems that got their N solutions, and the rest."""

    sampled: list[Sampled]
    failed: dict[str, str] = field(default_factory=dict)  # problem id -> why its request failed
    input_errors: int = 0


# -- choosing ----------------------------------------------------------------------------


def aggregate(rule: str, scores: Sequence[float | None]) -> float:
    """A solution's score under ``rule`` from its step rewards (-inf when it has none, or a
    step the PRM did not read: it is unscored, ranked last, not judged on part of it)."""
    if not scores or any(s is None for s in scores):
        return -math.inf
    if rule == "prm-min":
        return min(scores)
    if rule == "prm-last":
        return scores[-1]
    if rule == "prm-mean":
        return sum(scores) / len(scores)
    if rule == "prm-prod":  # in logs: 30 steps of 0.5 must not underflow into a tie at 0
        return sum(math.log(max(s, 1e-300)) for s in scores)
    raise ValueError(f"unknown rule {rule!r}; rules: {', '.join(PRM_RULES)}")


def pick(rule: str, candidates: Sequence[Candidate]) -> int:
    """The index ``rule`` picks (``prm-*`` or ``orm``): the highest score, the earliest on a tie."""
    if rule == "orm":
        values = [c.whole_score if c.whole_score is not None else -math.inf for c in candidates]
    else:
        values = [aggregate(rule, c.step_scores) for c in candidates]
    best = max(values)
    return values.index(best)


def vote_key(answer: str) -> str:
    """What a vote counts as one answer: numbers by value (``12`` = ``12.0``), else the
    normalised text (``Yes.`` = ``yes``)."""
    number = parse_number(answer)
    return f"#{number:.12g}" if number is not None else normalize_text(answer)


def _derived_seed(*parts: object) -> int:
    key = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


def majority_pick(candidates: Sequence[Candidate], seed: int, problem_id: str) -> int | None:
    """The index of a solution giving the most common final answer; a tie between answers
    is settled by a draw seeded by (``seed``, problem, N), the same on every run. None
    when no solution has an answer."""
    keys = [vote_key(c.answer) if c.answer is not None else None for c in candidates]
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None
    top = max(counts.values())
    tied = sorted(k for k, v in counts.items() if v == top)
    winner = tied[0] if len(tied) == 1 else \
        random.Random(_derived_seed(seed, problem_id, len(candidates), "majority")).choice(tied)
    return keys.index(winner)


def random_pick(n: int, seed: int, problem_id: str) -> int:
    """A seeded draw among ``n`` solutions (seeded by ``seed``, problem and ``n``)."""
    return random.Random(_derived_seed(seed, problem_id, n, "random")).randrange(n)


def hits(candidates: Sequence[Candidate], seed: int, problem_id: str) -> dict[str, bool]:
    """Whether each method's choice among ``candidates`` is right."""
    out = {rule: candidates[pick(rule, candidates)].correct for rule in (*PRM_RULES, "orm")}
    voted = majority_pick(candidates, seed, problem_id)
    out["majority"] = voted is not None and candidates[voted].correct
    out["random"] = candidates[random_pick(len(candidates), seed, problem_id)].correct
    out["oracle"] = any(c.correct for c in candidates)
    return out


# -- statistics --------------------------------------------------------------------------


def wilson(successes: int, total: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default); (0, 1) for no trials."""
    if total == 0:
        return 0.0, 1.0
    p = successes / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == total else min(1.0, centre + half)
    return lo, hi


def paired_bootstrap(a: Sequence[bool], b: Sequence[bool], seed: int,
                     resamples: int = BOOTSTRAP) -> tuple[float, float, float]:
    """The difference of accuracies ``a - b`` over the same problems, with a 95% paired
    bootstrap interval (problems resampled with replacement)."""
    import numpy as np

    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if diff.size == 0:
        return 0.0, 0.0, 0.0
    rng = np.random.default_rng(_derived_seed(seed, "bootstrap"))
    means = diff[rng.integers(0, diff.size, size=(resamples, diff.size))].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(diff.mean()), float(lo), float(hi)


@dataclass
class BonResult:
    """Accuracy of every method at every N, with intervals; :meth:`to_json` is the report."""

    ns: list[int]
    problems: int
    seed: int
    hits: dict[int, dict[str, list[bool]]]  # N -> method -> per problem, in input order
    failed: dict[str, str] = field(default_factory=dict)
    input_errors: int = 0

    def accuracy(self, n: int, method: str) -> float:
        h = self.hits[n][method]
        return sum(h) / len(h) if h else 0.0

    def interval(self, n: int, method: str) -> tuple[float, float]:
        h = self.hits[n][method]
        return wilson(sum(h), len(h))

    def versus(self, n: int, method: str, baseline: str) -> tuple[float, float, float]:
        return paired_bootstrap(self.hits[n][method], self.hits[n][baseline], self.seed)

    def best_prm(self, n: int) -> str:
        """The PRM rule with the highest accuracy at ``n`` (the first listed on a tie)."""
        return max(PRM_RULES, key=lambda r: self.accuracy(n, r))

    def to_json(self) -> dict[str, Any]:
        """One N: ``{"n": 8, "problems": P, "methods": {m: acc}, "ci": {m: [lo, hi]}, ...}``.
        Several N: the same keys, ``"n"`` a list and each method's value a list in that
        order (``methods[m][i]`` is the accuracy at ``n[i]``). ``vs`` holds each reward
        rule's gain over ``random`` and ``majority`` as ``[diff, lo, hi]``."""
        single = len(self.ns) == 1

        def per_n(f: Callable[[int], Any]) -> Any:
            return f(self.ns[0]) if single else [f(n) for n in self.ns]

        def r(x: float) -> float:
            return round(x, 4)

        return {
            "n": self.ns[0] if single else list(self.ns),
            "problems": self.problems,
            "methods": {m: per_n(lambda n, m=m: r(self.accuracy(n, m))) for m in METHODS},
            "ci": {m: per_n(lambda n, m=m: [r(x) for x in self.interval(n, m)]) for m in METHODS},
            "ci_method": "wilson 95%",
            "vs": {m: {b: per_n(lambda n, m=m, b=b: [r(x) for x in self.versus(n, m, b)]) for b in ("random", "majority")}
                   for m in (*PRM_RULES, "orm")},
            "vs_method": f"paired bootstrap 95%, {BOOTSTRAP} resamples of problems",
            "best_prm": per_n(self.best_prm),
            "seed": self.seed,
            "sampling": "one sampling at the largest N; smaller N take each problem's first n samples",
            "failed": len(self.failed),
            "input_errors": self.input_errors,
        }


def evaluate(sampled: Sequence[Sampled], ns: Sequence[int], seed: int) -> BonResult:
    """Every method's hits at every N in ``ns``, on the first N samples of each problem."""
    ns = sorted(set(ns))
    out: dict[int, dict[str, list[bool]]] = {n: {m: [] for m in METHODS} for n in ns}
    for s in sampled:
        for n in ns:
            if len(s.candidates) < n:
                raise ValueError(f"problem {s.problem.id!r} has {len(s.candidates)} samples, fewer than N = {n}")
            for m, ok in hits(s.candidates[:n], seed, s.problem.id).items():
                out[n][m].append(ok)
    return BonResult(list(ns), len(sampled), seed, out)


# -- scoring -----------------------------------------------------------------------------


def load_scorer(prm: Any) -> Scorer:
    """A scorer from a PRM directory (``prmtree.PRM.load``), a ``module:attr`` naming a
    scorer object, class or no-argument factory, or an object with ``score_batch``."""
    if hasattr(prm, "score_batch"):
        return prm
    if not isinstance(prm, (str, os.PathLike)):
        raise ConfigError(f"the PRM must be a directory, module:attr, or an object with score_batch; got {type(prm).__name__}")
    text = str(prm)
    if not Path(text).exists() and _MODULE_ATTR.match(text):
        module, _, attr = text.partition(":")
        try:
            target: Any = importlib.import_module(module)
            for part in attr.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"--prm {text!r}: cannot import it ({exc})") from None
        try:
            scorer = target if hasattr(target, "score_batch") and not isinstance(target, type) else target()
        except Exception as exc:  # a class or factory that needs arguments, or fails: one line, not a traceback
            raise ConfigError(f"--prm {text!r}: cannot build it: calling it with no arguments raised "
                              f"{raised(exc)}") from None
        if not hasattr(scorer, "score_batch"):
            raise ConfigError(f"--prm {text!r} gives a {type(scorer).__name__}, which has no score_batch(items)")
        return scorer
    if not Path(text).is_dir():
        raise ConfigError(f"--prm {text!r} is not a directory (a PRM saved by `prmtree train --out`)")
    try:
        from prmtree.train import PRM
    except ImportError as exc:
        raise ConfigError(f"loading a PRM needs the training extra: pip install 'prmtree[train]' ({exc})") from None
    try:
        loaded: Scorer = PRM.load(text)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"--prm {text!r}: cannot load the PRM: {exc}") from None
    return loaded


def _checked(scores: Any, steps: int, problem_id: str) -> list[float | None]:
    """The rewards as floats in [0, 1], None kept (a step the PRM did not read)."""
    if not isinstance(scores, Sequence) or len(scores) != steps:
        got = len(scores) if isinstance(scores, Sequence) else type(scores).__name__
        raise ValueError(f"the PRM returned {got} rewards for a solution of {steps} steps (problem {problem_id!r})")
    try:
        out = [None if s is None else float(s) for s in scores]
    except (TypeError, ValueError):
        raise ValueError(f"the PRM returned rewards that are not numbers (problem {problem_id!r}): "
                         f"{list(scores)[:3]!r}") from None
    bad = next((s for s in out if s is not None and not 0.0 <= s <= 1.0), None)  # NaN fails this too
    if bad is not None:
        raise ValueError(f"the PRM returned a reward of {bad} (problem {problem_id!r}): rewards must be in [0, 1]")
    return out


def score(sampled: Sequence[Sampled], scorer: Scorer, batch_size: int = 64) -> None:
    """Fill each candidate's step rewards, and its whole-text reward (``orm``), in batches.
    A candidate with no steps (an empty completion) gets none, and one with a step the PRM
    did not read (None: past its length limit) is unscored too: every rule ranks them last."""
    jobs: list[tuple[Candidate, bool, tuple[Problem, list[str]]]] = []
    for s in sampled:
        for c in s.candidates:
            if c.steps:
                jobs.append((c, False, (s.problem, list(c.steps))))
                jobs.append((c, True, (s.problem, [c.text.strip()])))
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        try:
            results = scorer.score_batch([item for _, _, item in chunk])
        except Exception as exc:  # the user's scorer: its failure in one line, not a traceback
            raise ValueError(f"the PRM's score_batch raised {raised(exc)}") from None
        if not isinstance(results, Sequence):
            raise ValueError(f"the PRM's score_batch returned {type(results).__name__}, not a list of reward lists")
        if len(results) != len(chunk):
            raise ValueError(f"the PRM's score_batch returned {len(results)} results for {len(chunk)} solutions")
        for (c, whole, (problem, steps)), scores in zip(chunk, results):
            checked = _checked(scores, len(steps), problem.id)
            if whole:
                c.whole_score = checked[0]
            else:
                c.step_scores = checked


# -- sampling ----------------------------------------------------------------------------


def build_run_config(
    policy: Any = None,
    policy_args: dict[str, Any] | None = None,
    seed: int | None = None,
    config: Any = None,
    config_overrides: dict[str, Any] | None = None,
) -> tuple[RunConfig, Any, dict[str, Any] | None]:
    """The run's config and the policy to build, exactly as ``prmtree.run`` reads them."""
    from prmtree.api import build_config, policy_overrides
    from prmtree.policies.base import check_policy

    overrides: dict[str, Any] = dict(config_overrides or {})
    if seed is not None:
        overrides["seed"] = seed
    policy_overrides(policy, policy_args, overrides)
    cfg = build_config(config, **overrides)
    spec, kwargs = (policy, None) if policy is not None and not isinstance(policy, str) else (cfg.policy.name, cfg.policy.kwargs)
    check_policy(spec, kwargs)  # before any model loads
    return cfg, spec, kwargs


async def _sample_async(items: Iterable[Problem | InputError], cfg: RunConfig, spec: Any,
                        kwargs: dict[str, Any] | None, n: int,
                        check_answer: Callable[[str, str], bool] | None,
                        split_steps: Callable[[str], list[str]] | None) -> Sampling:
    from prmtree.rollout_workers import make_executor
    from prmtree.rollout_workers.inline import use_daemon_threads
    from prmtree.runner import close_bounded

    use_daemon_threads()
    executor = make_executor(cfg.executor, spec, kwargs)
    verifier = Verifier(cfg.verify, custom=check_answer)
    driver = Driver(cfg, executor, None, verifier=verifier, split_steps=split_steps)
    out = Sampling([])
    order: list[str] = []
    done: dict[str, Sampled] = {}

    async def one(problem: Problem) -> None:
        gen = generation_request(cfg, problem, RolloutRequest(NODE_ID, (), n))
        try:
            completions = await driver.call(gen)
        except PolicyFailure as exc:
            out.failed[problem.id] = str(exc)
            return
        finally:
            executor.release(problem.id)
        rollouts = [parse_completion(problem, c.text, c.num_tokens, c.finish_reason, driver.segmenter, None)
                    for c in completions]
        verdicts = await verifier.check(problem, [r.answer for r in rollouts])
        done[problem.id] = Sampled(problem, [
            Candidate(c.text if isinstance(c.text, str) else "", r.steps, r.answer, bool(ok), r.malformed)
            for c, r, ok in zip(completions, rollouts, verdicts)
        ])

    pending: set[asyncio.Task[None]] = set()
    try:
        for item in items:
            if isinstance(item, InputError):
                out.input_errors += 1
                continue
            order.append(item.id)
            if len(pending) >= cfg.executor.trees_in_flight:
                finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    task.result()  # a FatalExecutorError stops the whole sampling
            pending.add(asyncio.create_task(one(item)))
        while pending:
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                task.result()
    finally:
        for task in pending:
            task.cancel(CANCELLED_BY_PRMTREE)  # a policy swallowing it is walked away from
        await asyncio.gather(*pending, return_exceptions=True)
        await verifier.aclose()
        await close_bounded(f"policy {executor.policy_name!r}", executor.close, cfg.executor.close_timeout_s)
    out.sampled = [done[pid] for pid in order if pid in done]
    return out


def sample(
    problems: str | os.PathLike[str] | Iterable[Problem],
    n: int,
    *,
    policy: Any = "simulated",
    policy_args: dict[str, Any] | None = None,
    seed: int | None = None,
    config: Any = None,
    config_overrides: dict[str, Any] | None = None,
    check_answer: Callable[[str, str], bool] | None = None,
    split_steps: Callable[[str], list[str]] | None = None,
) -> Sampling:
    """``n`` full solutions per problem through the run's policy, executor, segmenter and
    verifier (one request of ``n`` per problem, seeded by the run seed and the problem)."""
    if n < 1:
        raise ConfigError(f"N must be at least 1, got {n}")
    if check_answer is not None:
        from prmtree.engine.answers.verifier import check_custom

        try:
            check_custom(check_answer)  # an async def: refused before any model loads
        except TypeError as exc:
            raise ConfigError(str(exc)) from None
    cfg, spec, kwargs = build_run_config(policy, policy_args, seed, config, config_overrides)
    if isinstance(problems, (str, os.PathLike)):
        check_input(problems, cfg.input)
    return asyncio.run(_sample_async(iter_problems(problems, cfg.input), cfg, spec, kwargs, n, check_answer,
                                     split_steps))


def best_of_n(
    problems: str | os.PathLike[str] | Iterable[Problem],
    prm: Any,
    n: int | Sequence[int] = 8,
    *,
    policy: Any = "simulated",
    policy_args: dict[str, Any] | None = None,
    seed: int | None = None,
    config: Any = None,
    config_overrides: dict[str, Any] | None = None,
    check_answer: Callable[[str, str], bool] | None = None,
    split_steps: Callable[[str], list[str]] | None = None,
) -> BonResult:
    """Sample max(N) solutions per problem, score them with ``prm`` (a PRM directory,
    ``module:attr``, or any object with ``score_batch``), and measure every method at
    every N. Raises :class:`ConfigError` for bad arguments, before anything is sampled."""
    ns = [n] if isinstance(n, int) else sorted(set(n))
    if not ns or min(ns) < 1:
        raise ConfigError(f"N must be at least 1, got {n}")
    scorer = load_scorer(prm)  # a bad --prm is refused before any sampling
    run_seed = seed if seed is not None else build_run_config(policy, policy_args, None, config, config_overrides)[0].seed
    got = sample(problems, max(ns), policy=policy, policy_args=policy_args, seed=run_seed, config=config,
                 config_overrides=config_overrides, check_answer=check_answer, split_steps=split_steps)
    if not got.sampled:
        why = f"{len(got.failed)} failed (e.g. {next(iter(got.failed.values()))})" if got.failed else \
            f"{got.input_errors} bad input rows" if got.input_errors else "the input is empty"
        raise NothingSampled(f"no problem was sampled: {why}", failed=bool(got.failed))
    score(got.sampled, scorer)
    result = evaluate(got.sampled, ns, run_seed)
    result.failed, result.input_errors = got.failed, got.input_errors
    return result


# -- report ------------------------------------------------------------------------------


def print_table(result: BonResult, console: Any = None) -> None:
    """Accuracy [95% interval] of each method at each N, the best PRM rule marked."""
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console(markup=False)
        if not console.is_terminal:  # a log or a pipe: one row per line, not wrapped at 80 columns
            console = Console(markup=False, width=max(console.width, 14 + 24 * len(result.ns)))
    table = Table(title=f"best of N on {result.problems} problems")
    table.add_column("method")
    for n in result.ns:
        table.add_column(f"N={n}", justify="right")
    for m in METHODS:
        cells = []
        for n in result.ns:
            lo, hi = result.interval(n, m)
            mark = " *" if m == result.best_prm(n) else ""
            cells.append(f"{100 * result.accuracy(n, m):.1f} [{100 * lo:.1f}, {100 * hi:.1f}]{mark}")
        table.add_row(m, *cells)
    console.print(table)
    console.print("accuracy % [95% Wilson interval]")
    n = result.ns[-1]
    best = result.best_prm(n)
    parts = []
    for base in ("random", "majority"):
        d, lo, hi = result.versus(n, best, base)
        parts.append(f"{100 * d:+.1f} points vs {base} [{100 * lo:+.1f}, {100 * hi:+.1f}]")
    console.print(f"* the best PRM rule at each N; at N={n}, {best}: {'; '.join(parts)} (paired bootstrap 95%)")
    if result.failed:
        console.print(f"{len(result.failed)} problems failed and are not counted "
                      f"(e.g. {next(iter(result.failed.items()))})")
    if result.input_errors:
        console.print(f"{result.input_errors} bad input rows skipped")


def check_plotting() -> None:
    """Refuse ``--png`` before sampling when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("--png needs matplotlib: pip install matplotlib") from None


def write_png(result: BonResult, path: str | os.PathLike[str]) -> None:
    """Several N: accuracy against N (log scale) with interval bands; one N: bars with
    error bars."""
    check_plotting()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    if len(result.ns) > 1:
        banded = {result.best_prm(result.ns[-1]), "majority", "random"}  # bands for all would hide the lines
        for m in METHODS:
            acc = [result.accuracy(n, m) for n in result.ns]
            style = "--" if m in ("oracle", "random", "majority") else "-"
            (line,) = ax.plot(result.ns, acc, style, marker="o", label=m)
            if m in banded:
                lo, hi = zip(*(result.interval(n, m) for n in result.ns))
                ax.fill_between(result.ns, lo, hi, alpha=0.12, color=line.get_color())
        ax.set_xscale("log", base=2)
        ax.set_xticks(result.ns, [str(n) for n in result.ns])
        ax.set_xlabel("N (solutions per problem)")
        ax.legend(fontsize=8, ncol=2)
    else:
        n = result.ns[0]
        acc = [result.accuracy(n, m) for m in METHODS]
        err = [[max(0.0, a - result.interval(n, m)[0]) for a, m in zip(acc, METHODS)],
               [max(0.0, result.interval(n, m)[1] - a) for a, m in zip(acc, METHODS)]]
        colors = ["tab:blue"] * len(PRM_RULES) + ["tab:cyan", "tab:orange", "tab:gray", "tab:green"]
        ax.bar(METHODS, acc, yerr=err, capsize=3, color=colors)
        ax.tick_params(axis="x", rotation=30)
    ax.set_ylabel("accuracy" + (" (bands: 95% Wilson intervals)" if len(result.ns) > 1 else " (95% Wilson intervals)"))
    ax.set_title(f"best of {'N' if len(result.ns) > 1 else result.ns[0]} on {result.problems} problems")
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")  # the file is ``path`` as named, whatever its suffix
    plt.close(fig)


def parse_ns(text: str) -> list[int]:
    """``"8"`` or ``"1,2,4,8"`` as sorted distinct positive integers (ValueError otherwise)."""
    try:
        ns = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ValueError(f"--n takes a number or a list like 1,2,4,8; got {text!r}") from None
    if not ns or ns[0] < 1:
        raise ValueError(f"--n values must be at least 1; got {text!r}")
    return ns
