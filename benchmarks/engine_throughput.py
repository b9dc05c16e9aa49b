"""Engine throughput: the driver's CPU per rollout, end to end and by stage.

Everything the driver does except the model: search, parsing, answer checking, labelling
and Parquet writing (embedded PNGs), inline executor, pinned to one core. Three parts:

1. **strategies**: the zero-latency simulated policy (integer answers), omega, shepherd
   and mcts: rollouts/s on one core.
2. **realistic answer mix**: the simulated solver's boxed integer rewritten into what a VLM
   writes for the problem's real answer kind (``MixedAnswerPolicy``): words, yes/no,
   multiple choice, numbers with units, LaTeX fractions and radicals, intervals,
   expressions, each right answer in one of several equivalent forms and each wrong one a
   plausible or odd inequivalent form (the mix of ``verify_mix.py``). Reports the driver's
   CPU per rollout and its split by stage (``StageClock``): search (strategy
   ``next_requests``/``observe``/``done``), parse (segment, extract), verify (on the
   driver; Math-Verify's pool CPU is another process, reported beside it), label, write
   (rows and Parquet), and the rest (asyncio, executor, request building). The simulated
   policy's own text generation runs in the driver here but is a model's work, so it is
   measured and left out. A small warm-up run goes first, so one-off costs of a process's
   first run (imports, the check pool's start) are not spread over the rollouts. Targets:
   <= 0.1 ms per rollout, verify <= 10% of it.
3. **image QA vs one question at a time**: word answers (``teal``, ``triangle``, ``yes``),
   a simulated GPU holding 1,024 sequences at 50 ms a call, k = 16, budget 200: prmtree
   (many trees in flight) against the peers' loop (one question at a time, each search
   step waiting for its k rollouts: ``trees_in_flight = 1``). Target: >= 20x.

    python benchmarks/engine_throughput.py [--problems 2000] [--profile] [--only mix]
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import json
import os
import pstats
import random
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import prmtree
from prmtree.engine.records import Problem
from prmtree.engine.synthetic import generate_problems
from prmtree.engine.records import Completion, GenerationRequest
from prmtree.policies.simulated import SimulatedPolicy

sys.path.insert(0, str(Path(__file__).parent))
from verify_mix import MIX, answer_forms  # noqa: E402 - the answer mix, shared with verify_mix.py

RESULTS = Path(__file__).parent / "results"
STAGES = ("search", "parse", "verify", "label", "write")
TARGET_MS_PER_ROLLOUT = 0.1
TARGET_MS_PER_ROLLOUT_ISSUE21 = 0.05  # issue 21: a driver at <= 0.05 ms per rollout
TARGET_VERIFY_SHARE = 0.10
TARGET_OVER_PEERS = 20.0
IMAGE_QA = {"words": 70, "yes_no": 30}

# --------------------------------------------------------------------------- the answer mix

_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def mixed_problems(n: int, seed: int, weights: dict[str, int]) -> list[Problem]:
    """Synthetic problems whose gold answers are of the kinds in ``weights`` (``verify_mix.MIX``
    names), typed ``auto``. ``meta["mix"]`` keeps the integer the simulated solver computes
    and the forms ``MixedAnswerPolicy`` writes; multiple-choice options go to ``meta["options"]``."""
    rng = random.Random(seed)
    out = []
    for p in generate_problems(n, seed=seed):
        kind = rng.choices(list(weights), weights=list(weights.values()))[0]
        gold, meta, correct, wrong, tail = answer_forms(rng, kind)
        mix = {"kind": kind, "int_gold": p.answer, "correct": correct, "wrong": wrong, "tail": tail}
        out.append(replace(p, answer=gold, answer_type="auto", meta={**p.meta, **meta, "mix": mix}))
    return out


_MASK64 = (1 << 64) - 1


def _mix64(key: int) -> int:
    """SplitMix64's finaliser: 64 well-mixed bits from an integer key (a fresh ``Random`` per
    completion cost ~4 us of seeding, a GPU's work charged to the driver's core inline)."""
    z = (key * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


class MixedAnswerPolicy(SimulatedPolicy):
    """The simulated solver, writing the problem's real answer kind instead of an integer.

    It solves the problem with its integer gold (``meta["mix"]["int_gold"]``), then rewrites
    each completion's ``\\boxed{}``: the right integer becomes one of the gold's equivalent
    forms (the gold itself half the time), a wrong one an inequivalent form (a plausible
    wrong answer tied to the wrong value, 3 times in 4, or an odd one). Deterministic: the
    choice depends only on the request's seed, the completion's index and the boxed value.
    """

    name = "simulated"

    def _understand(self, problem: Problem) -> Any:
        # The solver works on the integer problem (same id), understood once per problem: no
        # copy of the request or the problem per call.
        solved = self._solved.get(problem.id)
        if solved is None:
            mix = problem.meta.get("mix") if isinstance(problem.meta, dict) else None
            solved = super()._understand(replace(problem, answer=mix["int_gold"]) if mix else problem)
        return solved

    def complete(self, request: GenerationRequest) -> list[Completion]:
        out = super().complete(request)
        mix = request.problem.meta.get("mix")
        if not mix or request.purpose == "judge":
            return out
        return [self._rewrite(c, mix, request.seed, i) for i, c in enumerate(out)]

    @staticmethod
    def _rewrite(c: Completion, mix: dict[str, Any], seed: int, index: int) -> Completion:
        text = c.text
        at = text.rfind("\\boxed{")  # the last \\boxed{...}: a match cannot span a later one
        m = _BOXED.match(text, at) if at >= 0 else None
        if m is None:
            for m in _BOXED.finditer(text):
                pass
            if m is None:
                return c
        value = m.group(1).strip()
        z = _mix64(seed * 131 + index)
        u = (z >> 32) * (1.0 / (1 << 32))  # uniform in [0, 1), from the high bits
        pick = z & 0xFFFFFFFF  # the low bits, independent of u: an index by modulo (bias < 1e-8)
        if value == mix["int_gold"]:
            answer = mix["correct"][0] if u < 0.5 else mix["correct"][pick % len(mix["correct"])]
        elif u < 0.75:
            answer = mix["wrong"][int(value) % len(mix["wrong"])] if value.lstrip("-").isdigit() else mix["wrong"][0]
        else:
            answer = mix["tail"][pick % len(mix["tail"])]
        return Completion(f"{text[: m.start(1)]}{answer}{text[m.end(1):]}", c.num_tokens, c.finish_reason,
                          c.cached_tokens, c.prompt_tokens)


# --------------------------------------------------------------------------- stage timing


class StageClock:
    """Seconds spent in each driver stage, by wrapping the functions that make it up.

    Only the outermost timed call counts (a stage calling another is the caller's), and an
    ``async`` stage is timed step by step (``_Stepped``), so time spent suspended at an
    ``await`` (other trees running, the pool working) is not charged to it. Timing is the
    driver thread's CPU time (``thread_time``, ~0.2 us a reading), so a pool worker sharing
    the pinned core does not inflate it.
    """

    def __init__(self) -> None:
        self.seconds = dict.fromkeys((*STAGES, "policy"), 0.0)
        self._active = False

    def timed(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        clock = self

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if clock._active:
                return fn(*args, **kwargs)
            clock._active = True
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                clock.seconds[stage] += time.thread_time() - start
                clock._active = False

        return wrapper

    def timed_async(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        clock = self

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:  # a coroutine function, as the labeller check asks
            return await _Stepped(fn(*args, **kwargs), clock, stage)

        return wrapper

    @contextmanager
    def installed(self) -> Iterator[StageClock]:
        """Wrap the stage functions for the duration of the block."""
        import prmtree.engine.driver as driver_module
        from prmtree.engine.driver import Driver
        from prmtree.engine.registry import LABELERS, STRATEGIES
        from prmtree.engine.output import DatasetWriter
        from prmtree.engine.answers import Verifier

        patches: list[tuple[Any, str, Callable[..., Any]]] = [
            (driver_module, "make_search", self.timed("search", driver_module.make_search)),
            (Driver, "_parse", self.timed("parse", Driver._parse)),
            (Verifier, "check", self.timed_async("verify", Verifier.check)),
            # the pool's batches run as tasks of their own: handing checks to Math-Verify is verify work
            (Verifier, "_pool_batch", self.timed_async("verify", Verifier._pool_batch)),
            (driver_module, "problem_rows", self.timed("write", driver_module.problem_rows)),
            (DatasetWriter, "add_problem", self.timed("write", DatasetWriter.add_problem)),
            (DatasetWriter, "flush", self.timed("write", DatasetWriter.flush)),
            (SimulatedPolicy, "complete", self.timed("policy", SimulatedPolicy.complete)),
            (MixedAnswerPolicy, "complete", self.timed("policy", MixedAnswerPolicy.complete)),
        ]
        seen = set()
        for cls in map(STRATEGIES.get, STRATEGIES.names()):
            for name in ("next_requests", "observe", "done"):
                owner = next(k for k in cls.__mro__ if name in vars(k))
                if (owner, name) not in seen:
                    seen.add((owner, name))
                    patches.append((owner, name, self.timed("search", vars(owner)[name])))
        for cls in map(LABELERS.get, LABELERS.names()):
            owner = next(k for k in cls.__mro__ if "label" in vars(k))
            if (owner, "label") not in seen:
                seen.add((owner, "label"))
                patches.append((owner, "label", self.timed_async("label", vars(owner)["label"])))
        originals = [(owner, name, owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name))
                     for owner, name, _ in patches]
        try:
            for owner, name, wrapped in patches:
                setattr(owner, name, wrapped)
            yield self
        finally:
            for owner, name, original in reversed(originals):
                setattr(owner, name, original)


class _Stepped:
    """An awaitable running a coroutine one step at a time, timing each step (not the waits)."""

    __slots__ = ("coro", "clock", "stage")

    def __init__(self, coro: Any, clock: StageClock, stage: str) -> None:
        self.coro, self.clock, self.stage = coro, clock, stage

    def __await__(self) -> Any:
        coro, clock, stage = self.coro, self.clock, self.stage
        value: Any = None
        error: BaseException | None = None
        while True:
            outer = not clock._active
            if outer:
                clock._active = True
                start = time.thread_time()
            try:
                yielded = coro.throw(error) if error is not None else coro.send(value)
            except StopIteration as stop:
                return stop.value
            finally:
                if outer:
                    clock.seconds[stage] += time.thread_time() - start
                    clock._active = False
            try:
                value, error = (yield yielded), None
            except BaseException as exc:  # cancellation: hand it to the coroutine
                value, error = None, exc


# --------------------------------------------------------------------------- measuring


def measure(problems: list[Problem], strategy: str = "omega", policy: SimulatedPolicy | None = None,
            config: dict[str, Any] | None = None, clock: StageClock | None = None) -> dict[str, Any]:
    """One run into a scratch directory: rollouts, wall and CPU time, rollouts/s."""
    out = Path(tempfile.mkdtemp(prefix="prmtree-bench-"))
    try:
        t, cpu = time.perf_counter(), time.process_time()
        s = prmtree.run(problems, policy=policy or SimulatedPolicy(), strategy=strategy, out=out, seed=0,
                        config=config)
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        size = sum(f.stat().st_size for f in out.rglob("*.parquet"))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {
        "strategy": strategy,
        "problems": len(problems),
        "rollouts": s.rollouts,
        "requests": s.requests,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "rollouts_per_s": round(s.rollouts / wall, 1),
        "rollouts_per_cpu_s": round(s.rollouts / cpu, 1),
        "steps_labelled": s.steps_labelled,
        "parquet_mb": round(size / 1e6, 2),
        "verifier": s.stats["verifier"],
    }


def strategies(problems: list[Problem], profile: bool) -> list[dict[str, Any]]:
    results = []
    for strategy in ("omega", "shepherd", "mcts"):
        if profile and strategy == "omega":
            prof = cProfile.Profile()
            prof.enable()
            r = measure(problems, strategy)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        else:
            r = measure(problems, strategy)
        r.pop("verifier")
        results.append(r)
        print(f"{strategy:9s} {r['rollouts']:>9,} rollouts in {r['wall_s']:6.2f} s: "
              f"{r['rollouts_per_s']:>9,.0f} rollouts/s (one core), {r['parquet_mb']} MB of Parquet")
    return results


def mix_budget(n: int, profile: bool) -> dict[str, Any]:
    """The realistic answer mix: driver CPU per rollout, then its split by stage."""
    problems = mixed_problems(n, seed=99, weights=MIX)
    kinds: dict[str, int] = {}
    for p in problems:
        kinds[p.meta["mix"]["kind"]] = kinds.get(p.meta["mix"]["kind"], 0) + 1
    # A warm-up run first: the first run in a process pays one-off costs (imports on first
    # use, Math-Verify's pool and its sympy start, first-call caches) that a long run does
    # not pay per rollout; measured apart, they are reported as ``warmup_cpu_s``.
    t0 = time.process_time()
    measure(mixed_problems(max(20, n // 20), seed=7, weights=MIX), policy=MixedAnswerPolicy())
    warmup_cpu = time.process_time() - t0
    policy_clock = StageClock()  # the simulated model's CPU only, to subtract from the plain run
    plain = _with_policy_clock(lambda: measure(problems, policy=MixedAnswerPolicy()), policy_clock)
    clock = StageClock()
    if profile:
        prof = cProfile.Profile()
        prof.enable()
    with clock.installed():
        timed = measure(problems, policy=MixedAnswerPolicy())
    if profile:
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
    assert timed["rollouts"] == plain["rollouts"], "the timed run must do the same work"
    rollouts = plain["rollouts"]
    driver_cpu = plain["cpu_s"] - policy_clock.seconds["policy"]
    timed_driver = timed["cpu_s"] - clock.seconds["policy"]
    stages = {k: clock.seconds[k] for k in STAGES}
    stages["other"] = max(0.0, timed_driver - sum(stages.values()))
    ms = {k: round(1000 * v / rollouts, 5) for k, v in stages.items()}
    share = {k: round(v / timed_driver, 3) for k, v in stages.items()}
    verifier = plain["verifier"]
    result = {
        "problems": n,
        "kinds": kinds,
        "rollouts": rollouts,
        "requests": plain["requests"],
        "driver_cpu_s": round(driver_cpu, 3),
        "policy_cpu_s": round(policy_clock.seconds["policy"], 3),
        "driver_cpu_ms_per_rollout": round(1000 * driver_cpu / rollouts, 4),
        "driver_rollouts_per_cpu_s": round(rollouts / driver_cpu, 1),
        # The simulated model's text is the same work in every run: its CPU is this host's
        # speed at the moment, and driver / model compares runs the host's drift spoils.
        "model_cpu_ms_per_rollout": round(1000 * policy_clock.seconds["policy"] / rollouts, 5),
        "driver_to_model_cpu": round(driver_cpu / policy_clock.seconds["policy"], 3),
        "stage_ms_per_rollout": ms,
        "stage_share": share,
        "timed_run_driver_cpu_ms_per_rollout": round(1000 * timed_driver / rollouts, 4),
        "warmup_cpu_s": round(warmup_cpu, 3),  # a small run before both, its one-off costs left out of them
        "verifier": verifier,
        "pool_cpu_ms_per_rollout": round(1000 * verifier.get("pool_cpu_s", 0.0) / rollouts, 4),
        "target_ms_per_rollout": TARGET_MS_PER_ROLLOUT,
        "target_verify_share": TARGET_VERIFY_SHARE,
        "target_met": 1000 * driver_cpu / rollouts <= TARGET_MS_PER_ROLLOUT and share["verify"] <= TARGET_VERIFY_SHARE,
        "target_ms_per_rollout_issue21": TARGET_MS_PER_ROLLOUT_ISSUE21,
        "target_issue21_met": 1000 * driver_cpu / rollouts <= TARGET_MS_PER_ROLLOUT_ISSUE21,
    }
    print(f"\nrealistic answer mix, omega, {n} problems, {rollouts:,} rollouts: driver CPU "
          f"{result['driver_cpu_ms_per_rollout']:.4f} ms per rollout ({result['driver_rollouts_per_cpu_s']:,.0f} "
          f"rollouts per CPU-second; simulated model's {result['policy_cpu_s']} s left out, "
          f"the driver's {result['driver_to_model_cpu']}x the model's: the same work each run, the host's speed now)")
    print(f"{'stage':8s} {'ms/rollout':>11s} {'share':>7s}")
    for k in (*STAGES, "other"):
        print(f"{k:8s} {ms[k]:>11.5f} {share[k]:>7.1%}")
    print(f"Math-Verify pool (another process): {verifier.get('pool_checks', 0)} checks, "
          f"{result['pool_cpu_ms_per_rollout']:.4f} ms CPU per rollout; memo hits "
          f"{verifier.get('memo_hits', 0):,} of {verifier.get('checks', 0):,} checks")
    return result


def _with_policy_clock(run: Callable[[], dict[str, Any]], clock: StageClock) -> dict[str, Any]:
    """``run()`` with only the simulated model's text generation timed."""
    originals = [(cls, vars(cls)["complete"]) for cls in (SimulatedPolicy, MixedAnswerPolicy)]
    try:
        for cls, original in originals:
            cls.complete = clock.timed("policy", original)  # type: ignore[method-assign]
        return run()
    finally:
        for cls, original in originals:
            cls.complete = original  # type: ignore[method-assign]


def image_qa(n: int, peers_n: int) -> dict[str, Any]:
    """Word answers on a 1,024-sequence simulated GPU: prmtree against one question at a time."""
    problems = mixed_problems(n, seed=7, weights=IMAGE_QA)
    search = {"k": 16, "budget": 200}
    latency = {"latency_s": 0.05, "batch_capacity": 1024}
    ours = measure(problems, policy=MixedAnswerPolicy(**latency), config={"search": search})
    peers = measure(problems[:peers_n], policy=MixedAnswerPolicy(**latency),
                    config={"search": search, "executor": {"trees_in_flight": 1}})
    ratio = ours["rollouts_per_s"] / peers["rollouts_per_s"]
    for r in (ours, peers):
        r.pop("verifier")
    result = {"latency_model": latency, "search": search, "prmtree": ours, "one_question_at_a_time": peers,
              "speedup": round(ratio, 1), "target_speedup": TARGET_OVER_PEERS, "target_met": ratio >= TARGET_OVER_PEERS}
    print(f"\nimage QA (word answers, 1,024-sequence GPU at 50 ms, k=16, budget 200): prmtree "
          f"{ours['rollouts_per_s']:,.0f} rollouts/s ({ours['cpu_s']} s CPU in {ours['wall_s']} s), one question "
          f"at a time {peers['rollouts_per_s']:,.0f} rollouts/s: {ratio:.1f}x (target >= {TARGET_OVER_PEERS:g}x)")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=2000)
    parser.add_argument("--qa-problems", type=int, default=100)
    parser.add_argument("--peers-problems", type=int, default=10)
    parser.add_argument("--only", choices=["strategies", "mix", "image_qa"], action="append")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "engine_throughput.json"))
    args = parser.parse_args()
    parts = args.only or ["strategies", "mix", "image_qa"]
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    payload: dict[str, Any] = {}
    if "strategies" in parts:
        results = strategies(generate_problems(args.problems, seed=99), args.profile)
        payload.update(target_rollouts_per_s=10_000, results=results,
                       target_met=all(r["rollouts_per_s"] >= 10_000 for r in results))
    if "mix" in parts:
        payload["realistic_mix"] = mix_budget(args.problems, args.profile)
    if "image_qa" in parts:
        payload["image_qa"] = image_qa(args.qa_problems, args.peers_problems)
    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() and args.only else {}
    out.write_text(json.dumps({**previous, **payload}, indent=2))


if __name__ == "__main__":
    main()
