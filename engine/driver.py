"""The asyncio driver: many trees in flight, waves of requests, results to the writer.

The driver is the only part of the engine that awaits. It keeps up to
``trees_in_flight`` problems searching at once (refilled from a streaming input), so a
backend always has requests to batch; for each tree it asks the strategy for a wave,
submits the wave's requests concurrently, parses the completions, and feeds them back
in issue order. A finished tree is labelled and its rows handed to the writer.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from prmtree.engine.config import RunConfig
from prmtree.engine.output import DatasetWriter
from prmtree.engine.problem import InputError, Problem
from prmtree.engine.rollout import Rollout, parse_completion
from prmtree.engine.search import make_search
from prmtree.engine.rows import problem_rows
from prmtree.engine.search.base import RolloutRequest, TreeSearch
from prmtree.engine.steps import Segmenter
from prmtree.engine.verify import Verifier
from prmtree.policies.base import Completion, GenerationRequest


class Executor(Protocol):
    async def submit(self, request: GenerationRequest) -> list[Completion]: ...


class PolicyFailure(RuntimeError):
    """A request failed on every attempt; its problem goes to ``errors/``."""


class FatalExecutorError(RuntimeError):
    """The executor cannot serve any request (no worker left): the run must stop.

    Problems already finished are flushed; a resume redoes the rest.
    """


def request_seed(run_seed: int, problem_id: str, node_id: str, batch: int) -> int:
    """The sampling seed of one request: stable across runs, executors and retries."""
    key = f"{run_seed}\x1f{problem_id}\x1f{node_id}\x1f{batch}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


@dataclass
class RunStats:
    """Counters of a run; they go to the manifest and the summary."""

    problems_done: int = 0
    problems_skipped: int = 0
    problems_failed: int = 0
    input_errors: int = 0
    rollouts: int = 0
    requests: int = 0
    tokens: int = 0
    cached_tokens: int = 0
    prompt_tokens: int = 0
    retries: int = 0
    paths: int = 0
    steps_labelled: int = 0
    labels_positive: int = 0
    labels_negative: int = 0
    pairs: int = 0
    nodes: int = 0
    malformed: Counter = field(default_factory=Counter)
    finish_length: int = 0
    path_lengths: Counter = field(default_factory=Counter)
    executor: dict = field(default_factory=dict)  # the executor's counters (Ray: resubmissions, ...)
    worker_load: dict = field(default_factory=dict)  # requests in flight per worker, for progress
    started: float = field(default_factory=time.perf_counter)
    elapsed_s: float = 0.0  # this session's
    elapsed_before_s: float = 0.0  # earlier sessions' (resume)
    rollouts_before: int = 0  # earlier sessions' (resume)

    @property
    def rollouts_per_s(self) -> float:
        """This session's rate (a resumed run's earlier rollouts are not in it)."""
        elapsed = self.elapsed_s or (time.perf_counter() - self.started)
        return (self.rollouts - self.rollouts_before) / elapsed if elapsed > 0 else 0.0

    @classmethod
    def resumed(cls, previous: dict[str, Any]) -> RunStats:
        """Counters that continue those a manifest recorded, so totals add up over resumes."""
        stats = cls()
        for name in (
            "problems_done", "problems_skipped", "problems_failed", "input_errors", "rollouts", "requests",
            "tokens", "cached_tokens", "prompt_tokens", "retries", "paths", "steps_labelled", "labels_positive",
            "labels_negative", "pairs", "nodes",
        ):
            setattr(stats, name, int(previous.get(name, 0)))
        stats.finish_length = int(previous.get("truncated_by_length", 0))
        stats.malformed.update(previous.get("malformed_rollouts", {}))
        hist = previous.get("steps_per_path", {}).get("histogram", {})
        stats.path_lengths.update({int(k): v for k, v in hist.items()})
        stats.elapsed_before_s = float(previous.get("elapsed_s", 0.0))
        stats.rollouts_before = stats.rollouts
        return stats

    def to_dict(self) -> dict[str, Any]:
        lengths = self.path_lengths
        n_paths = sum(lengths.values())
        return {
            "problems_done": self.problems_done,
            "problems_skipped": self.problems_skipped,
            "problems_failed": self.problems_failed,
            "input_errors": self.input_errors,
            "rollouts": self.rollouts,
            "requests": self.requests,
            "tokens": self.tokens,
            "cached_tokens": self.cached_tokens,
            "prompt_tokens": self.prompt_tokens,
            "retries": self.retries,
            "paths": self.paths,
            "steps_labelled": self.steps_labelled,
            "labels_positive": self.labels_positive,
            "labels_negative": self.labels_negative,
            "pairs": self.pairs,
            "nodes": self.nodes,
            "malformed_rollouts": dict(sorted(self.malformed.items())),
            "truncated_by_length": self.finish_length,
            "steps_per_path": {
                "mean": (sum(k * v for k, v in lengths.items()) / n_paths) if n_paths else 0.0,
                "histogram": {str(k): v for k, v in sorted(lengths.items())},
            },
            "executor": self.executor,
            "elapsed_s": round(self.elapsed_before_s + (self.elapsed_s or time.perf_counter() - self.started), 3),
            "rollouts_per_s_last_session": round(self.rollouts_per_s, 1),
        }


@dataclass
class FinishedProblem:
    """What the driver hands on for each problem: its search, or why it failed."""

    problem: Problem
    search: TreeSearch | None
    error: str | None = None
    stage: str = "policy"


class Driver:
    """Runs searches for a stream of problems against one executor."""

    def __init__(
        self,
        config: RunConfig,
        executor: Executor,
        writer: DatasetWriter | None,
        policy_name: str,
        verifier: Verifier | None = None,
        on_problem: Callable[[FinishedProblem, RunStats], None] | None = None,
        stats: RunStats | None = None,
        split_steps: Callable[[str], list[str]] | None = None,
    ) -> None:
        self.config = config
        self.executor = executor
        self.writer = writer
        self.policy_name = policy_name
        self.segmenter = Segmenter(split_steps or config.steps.format, config.steps.max_steps)
        self.verifier = verifier or Verifier(rel_tol=config.verify.rel_tol)
        self.on_problem = on_problem
        self.stats = stats or RunStats()
        if writer is not None:
            writer.stats_provider = self.stats.to_dict

    # -- one request ----------------------------------------------------------------

    def _generation_request(self, problem: Problem, request: RolloutRequest) -> GenerationRequest:
        s = self.config.search
        return GenerationRequest(
            problem=problem,
            prefix=request.prefix,
            n=request.n,
            max_tokens=s.max_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            seed=request_seed(self.config.seed, problem.id, request.node_id, request.batch),
            next_step_only=request.next_step_only,
        )

    async def _submit(self, problem: Problem, request: RolloutRequest) -> list[Rollout]:
        ex = self.config.executor
        gen = self._generation_request(problem, request)
        last: BaseException | None = None
        for attempt in range(ex.max_attempts):
            if attempt:
                self.stats.retries += 1
                await asyncio.sleep(ex.retry_backoff_s * 2 ** (attempt - 1))
            try:
                completions = await asyncio.wait_for(self.executor.submit(gen), ex.request_timeout_s)
                break
            except asyncio.TimeoutError:
                last = TimeoutError(f"policy timed out after {ex.request_timeout_s:g} s")
            except (asyncio.CancelledError, FatalExecutorError):
                raise
            except Exception as exc:  # a policy's own failure: retried, then reported
                last = exc
        else:
            assert last is not None
            reason = str(last) or type(last).__name__
            raise PolicyFailure(f"{type(last).__name__}: {reason} (after {ex.max_attempts} attempts)")
        return self._parse(problem, request, completions)

    def _parse(self, problem: Problem, request: RolloutRequest, completions: list[Completion]) -> list[Rollout]:
        stats = self.stats
        stats.requests += 1
        rollouts = []
        for c in completions:
            r = parse_completion(
                problem, c.text, c.num_tokens, c.finish_reason, self.segmenter, self.verifier, request.next_step_only
            )
            stats.tokens += c.num_tokens
            stats.cached_tokens += c.cached_tokens
            stats.prompt_tokens += c.prompt_tokens
            if r.malformed:
                stats.malformed[r.malformed] += 1
            if c.finish_reason == "length":
                stats.finish_length += 1
            rollouts.append(r)
        stats.rollouts += len(rollouts)
        return rollouts

    # -- one tree -------------------------------------------------------------------

    async def search_problem(self, problem: Problem) -> FinishedProblem:
        search = make_search(problem, self.config.search)
        try:
            while not search.done():
                wave = search.next_requests()
                if not wave:
                    if search.done():
                        break
                    raise RuntimeError(f"strategy {search.name} issued no requests and is not done")
                if len(wave) == 1:
                    results: list[Any] = [await self._submit(problem, wave[0])]
                else:
                    results = await asyncio.gather(
                        *(self._submit(problem, r) for r in wave), return_exceptions=True
                    )
                    for res in results:
                        if isinstance(res, BaseException):
                            raise res
                for request, rollouts in zip(wave, results):
                    search.observe(request, rollouts)
        except PolicyFailure as exc:
            return FinishedProblem(problem, None, str(exc))
        except FatalExecutorError:
            raise
        except Exception as exc:  # a bug in a strategy or a custom verifier: keep the run going
            return FinishedProblem(problem, None, f"internal error: {type(exc).__name__}: {exc}", stage="search")
        finally:
            self.verifier.forget(problem.id)
            release = getattr(self.executor, "release", None)
            if release is not None:
                release(problem.id)
        return FinishedProblem(problem, search)

    # -- the stream -----------------------------------------------------------------

    async def run(self, items: Iterable[Problem | InputError]) -> RunStats:
        limit = self.config.executor.trees_in_flight
        pending: set[asyncio.Task[FinishedProblem]] = set()
        try:
            for item in items:
                if isinstance(item, InputError):
                    self._input_error(item)
                    continue
                while len(pending) >= limit:
                    pending = await self._collect(pending)
                pending.add(asyncio.create_task(self.search_problem(item)))
            while pending:
                pending = await self._collect(pending)
        except FatalExecutorError:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            raise
        finally:
            self.stats.elapsed_s = time.perf_counter() - self.stats.started
        return self.stats

    async def _collect(self, pending: set[asyncio.Task[FinishedProblem]]) -> set[asyncio.Task[FinishedProblem]]:
        """Wait for at least one tree to finish and hand it on; return the rest."""
        done, rest = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        fatal = None
        for task in done:
            if task.exception() is not None:
                fatal = fatal or task.exception()
                continue
            self._finish(task.result())
        if fatal is not None:
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
            raise fatal
        return rest

    def _input_error(self, error: InputError) -> None:
        self.stats.input_errors += 1
        if self.writer is not None:
            row = {"problem_id": error.problem_id, "stage": error.stage, "reason": error.reason}
            self.writer.add_problem(error.problem_id, {"errors": [row]}, failed=error.reason)

    def _finish(self, finished: FinishedProblem) -> None:
        problem, search = finished.problem, finished.search
        if search is None:
            self.stats.problems_failed += 1
            if self.writer is not None:
                row = {"problem_id": problem.id, "stage": finished.stage, "reason": finished.error}
                self.writer.add_problem(problem.id, {"errors": [row]}, failed=finished.error or "unknown")
        else:
            out_dir = self.writer.out_dir if self.writer is not None else None
            rows = problem_rows(problem, search, self.config.output, self.policy_name, out_dir)
            self._count(search, rows)
            if self.writer is not None:
                self.writer.add_problem(problem.id, rows, skipped=search.stats.skipped)
        counters = getattr(self.executor, "counters", None)
        if counters is not None:
            self.stats.executor = counters()
            self.stats.worker_load = self.executor.load()
        if self.on_problem is not None:
            self.on_problem(finished, self.stats)

    def _count(self, search: TreeSearch, rows: dict[str, list[dict[str, Any]]]) -> None:
        stats = self.stats
        stats.problems_done += 1
        stats.problems_skipped += bool(search.stats.skipped)
        stats.nodes += len(rows["nodes"])
        stats.paths += len(rows["steps"])
        stats.pairs += len(rows["pairs"])
        for row in rows["steps"]:
            labels = row["labels"]
            pos = sum(labels)
            stats.steps_labelled += len(labels)
            stats.labels_positive += pos
            stats.labels_negative += len(labels) - pos
            stats.path_lengths[len(labels)] += 1
