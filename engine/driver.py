"""The asyncio driver: many trees in flight, waves of requests, results to the writer.

The driver is the only part of the engine that awaits. It keeps up to
``trees_in_flight`` problems searching at once (refilled from a streaming input), so a
backend always has requests to batch; for each tree it asks the strategy for a wave,
submits the wave's requests concurrently, parses the completions, and feeds them back
in issue order. A finished tree is labelled and its rows handed to the writer.

Under a rule that learns its floor, the run starts with a pilot (``engine/pilot.py``):
the first problems of each answer space are searched first, the rest of the pilot's
window waits unstarted, and once the pilot's floors and pool allowance are learned
everything is labelled with them.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prmtree.engine.answers import Verifier
from prmtree.engine.breaker import CircuitBreaker
from prmtree.engine.calibration import answer_space
from prmtree.engine.config import RunConfig
from prmtree.engine.contracts import Executor, cancel_requested
from prmtree.engine.errors import (
    FatalExecutorError,
    GenerationError,
    PolicyContractError,
)
from prmtree.engine.labelers import LabelContext, Labeler, make_labeler
from prmtree.engine.labels import Labelling
from prmtree.engine.pilot import Calibration, Pilot
from prmtree.engine.output import DatasetWriter
from prmtree.engine.records import (
    Completion,
    GenerationRequest,
    InputError,
    Problem,
    Rollout,
    check_completions,
    problem_fingerprint,
)
from prmtree.engine.rollout import parse_completion, with_verdict
from prmtree.engine.search import make_search
from prmtree.engine.search.base import RolloutRequest, TreeSearch
from prmtree.engine.stats import RunStats
from prmtree.engine.steps import Segmenter
from prmtree.engine.tables import RowContext, problem_rows


class PolicyFailure(RuntimeError):
    """A request failed for good (retries spent, or not retryable); its problem is
    recorded as failed and the next run retries it."""


def request_seed(run_seed: int, problem_id: str, node_id: str, batch: int) -> int:
    """The sampling seed of one request: stable across runs, executors and retries."""
    key = f"{run_seed}\x1f{problem_id}\x1f{node_id}\x1f{batch}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def generation_request(config: RunConfig, problem: Problem, request: RolloutRequest) -> GenerationRequest:
    """What a policy is asked for one strategy request: the run's sampling settings,
    step format, and a seed that depends only on (run seed, problem, node, batch)."""
    s = config.search
    return GenerationRequest(
        problem=problem,
        prefix=request.prefix,
        n=request.n,
        max_tokens=s.max_tokens,
        temperature=s.temperature,
        top_p=s.top_p,
        seed=request_seed(config.seed, problem.id, request.node_id, request.batch),
        next_step_only=request.next_step_only,
        step_format=config.steps.step_format,
    )


class _PolicyRaised(Exception):
    """A ``TimeoutError`` the policy raised itself, carried past ``asyncio.wait_for`` (whose
    own timeout is the same class) so it is reported as the policy's error, not the driver's."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(str(exc))
        self.exc = exc


async def _policys_own_timeout(submitted: Awaitable[list[Completion]]) -> list[Completion]:
    try:
        return await submitted
    except (TimeoutError, asyncio.TimeoutError) as exc:
        raise _PolicyRaised(exc) from exc


def retryable(exc: BaseException) -> bool:
    """Whether another attempt may help: a policy says so with GenerationError; a
    timeout may; an unknown exception from a custom policy is given the benefit of the
    doubt; a broken contract never."""
    if isinstance(exc, GenerationError):
        return exc.retryable
    return True


@dataclass
class FinishedProblem:
    """What the driver hands on for each problem: its search, or why it failed."""

    problem: Problem
    search: TreeSearch | None
    error: str | None = None
    stage: str = "policy"
    labelling: Labelling | None = None
    foreign: bool = False  # another slice's pilot member: it taught the pilot, its rows are not ours


class Driver:
    """Runs searches for a stream of problems against one executor."""

    def __init__(
        self,
        config: RunConfig,
        executor: Executor,
        writer: DatasetWriter | None,
        verifier: Verifier | None = None,
        on_problem: Callable[[FinishedProblem, RunStats], None] | None = None,
        stats: RunStats | None = None,
        labeler: Labeler | None = None,
        judge_executor: Executor | None = None,
        split_steps: Callable[[str], list[str]] | None = None,
        calibration: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.executor = executor
        self.writer = writer
        self.policy_name = executor.policy_name
        self.segmenter = Segmenter(split_steps or config.steps.format, config.steps.max_steps)
        self.verifier = verifier or Verifier(config.verify)
        self.on_problem = on_problem
        self.stats = stats or RunStats()
        self.labeler = labeler or make_labeler(config.labels)
        self.judge_executor = judge_executor or executor
        self.label_context = LabelContext(config.output, self._judge, self._judge_request)
        self.breaker = CircuitBreaker(config.executor.breaker_window)
        self.stopping = False  # request_stop(): take no new problems
        self._in_flight: set[asyncio.Task[FinishedProblem]] = set()
        self._waiting_for_pilot = 0  # members searched, waiting to be labelled: they hold no slot
        self._slot_freed = asyncio.Event()  # set when a member starts waiting (its slot is free)
        self.allowance = 0  # rollouts past its budget a problem may draw (the pilot's pool)
        self._foreign: set[str] = set()  # other slices' pilot members searched here
        self.pilot: Pilot | None = None  # the pilot under way (None: learned by an earlier run, or no pilot)
        self.members: set[str] = set()  # the pilot's members, known from an earlier run's calibration
        self.first_floors: dict[str, float] = {}
        decider_class = getattr(self.labeler, "decider_class", None)
        labels, threshold = config.labels, config.output.label_threshold
        self.decider_at = lambda problem, floor: decider_class(problem, labels, threshold, floor)  # noqa: E731
        if calibration:  # a resumed run: what its pilot learned
            self._use(Calibration.from_dict(calibration))
        elif labels.learn_floor and getattr(decider_class, "learns_floor", False):
            self.pilot = Pilot(labels, config.search.budget, self.decider_at, self._use)

    def _use(self, calibration: Calibration) -> None:
        """Label and budget with what the pilot learned (and record it)."""
        self.label_context.floors = {space: f.floor for space, f in calibration.floors.items()}
        self.allowance = calibration.pool.per_problem
        self.members, self.first_floors = set(calibration.members), dict(calibration.first_floors)
        if self.writer is not None:
            self.writer.note_calibration(calibration.as_dict())

    # -- one request ----------------------------------------------------------------

    async def _submit(self, problem: Problem, request: RolloutRequest) -> list[Rollout]:
        gen = generation_request(self.config, problem, request)
        completions = await self.call(gen)
        rollouts = self._parse(problem, request, completions)
        self.breaker.record_output([r.malformed for r in rollouts])  # a backend answering only junk stops the run
        verdicts = await self.verifier.check(problem, [r.answer for r in rollouts])
        return [with_verdict(r, ok) for r, ok in zip(rollouts, verdicts)]

    async def call(self, gen: GenerationRequest, executor: Executor | None = None) -> list[Completion]:
        """One request through the one retry layer: retryable failures are retried with
        backoff, the answer is checked against the policy contract."""
        ex = self.config.executor
        executor = executor or self.executor
        for attempt in range(ex.max_attempts):
            if attempt:
                self.stats.retries += 1
                await asyncio.sleep(ex.retry_backoff_s * 2 ** (attempt - 1))
            try:
                completions = await asyncio.wait_for(_policys_own_timeout(executor.submit(gen)), ex.request_timeout_s)
                checked = check_completions(gen, completions, executor.policy_name)
                self.breaker.record(None)
                return checked
            except FatalExecutorError:
                raise
            except asyncio.CancelledError:
                if cancel_requested(asyncio.current_task()):  # the driver's own stop: not a failure
                    raise
                last: BaseException = GenerationError("generate raised CancelledError")
            except asyncio.TimeoutError:  # the driver's own bound (a policy's TimeoutError comes wrapped)
                last = GenerationError(f"policy timed out after {ex.request_timeout_s:g} s")
            except _PolicyRaised as raised:
                last = raised.exc
            except Exception as exc:  # the policy's own failure: retried if it may pass
                last = exc
            except GeneratorExit:  # this coroutine is being closed
                raise
            except BaseException as exc:  # a bare BaseException subclass let through by an executor
                last = GenerationError(f"generate raised {type(exc).__name__}{': ' + str(exc) if str(exc) else ''}")
            self.breaker.record(last)  # every request failing: stop the run (BackendDownError)
            if not retryable(last):
                break
        kind = "contract" if isinstance(last, PolicyContractError) else type(last).__name__
        tries = f"after {attempt + 1} attempts" if attempt else "not retryable" if not retryable(last) else "1 attempt"
        raise PolicyFailure(f"{kind}: {str(last) or type(last).__name__} ({tries})")

    def _parse(self, problem: Problem, request: RolloutRequest, completions: list[Completion]) -> list[Rollout]:
        stats = self.stats
        stats.requests += 1
        rollouts = []
        for c in completions:
            r = parse_completion(
                problem, c.text, c.num_tokens, c.finish_reason, self.segmenter, None, request.next_step_only,
                len(request.prefix),
            )
            stats.tokens += c.num_tokens
            stats.cached_tokens += c.cached_tokens
            stats.prompt_tokens += c.prompt_tokens
            if r.malformed:
                stats.malformed_rollouts[r.malformed] += 1
            if c.finish_reason == "length":
                stats.truncated_by_length += 1
            rollouts.append(r)
        stats.rollouts += len(rollouts)
        return rollouts

    # -- one tree -------------------------------------------------------------------

    async def search_problem(self, problem: Problem) -> FinishedProblem:
        member = problem.id in self.members or (self.pilot is not None and self.pilot.is_member(problem))
        decider = self.decider_at(problem, None) if member else self.labeler.decider(problem, self.label_context)
        search = make_search(problem, self.config.search, decider, self.config.steps.max_steps)
        search.allowance = 0 if member else self.allowance
        searched = topped_up = False
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
            searched = True
            if member:
                await self._pilot_rounds(problem, search)
                topped_up = True
            labelling = await self.labeler.label(problem, search, self.label_context)
        except PolicyFailure as exc:
            return FinishedProblem(problem, None, str(exc))
        except FatalExecutorError:
            raise
        except Exception as exc:  # a bug in a strategy or a custom verifier: keep the run going
            return FinishedProblem(problem, None, f"internal error: {type(exc).__name__}: {exc}", stage="search")
        finally:
            self.executor.release(problem.id)
            if member and self.pilot is not None and self.pilot.calibration is None:  # a failed member teaches nothing, and must not hold the pilot
                if not searched:
                    self.pilot.searched(problem, None)
                if not topped_up:
                    self.pilot.topped_up(problem, None)
        return FinishedProblem(problem, search, labelling=labelling, foreign=problem.id in self._foreign)

    async def _pilot_rounds(self, problem: Problem, search: TreeSearch) -> None:
        """A member's search is done: report it; at the pilot's first look, top up its
        paths' labels at the first floors (its own budget); report again, and wait until
        the pilot has learned what it is labelled with. Waiting holds no slot."""
        pilot = self.pilot  # None: a member an earlier run's pilot left unfinished, redone as it was
        if pilot is not None:
            pilot.searched(problem, search)
            await self._wait(pilot.first_look)
        first_floors = pilot.first_floors if pilot is not None else self.first_floors
        space = answer_space(problem)
        if space in first_floors:
            search.decider = self.decider_at(problem, first_floors[space])
        while True:
            paths = [search.tree.path_ids(leaf) for leaf in search.tree.leaves()]
            wave, _ = search.sample_paths([ids for ids in paths if ids], fill=True)
            if not wave:
                break
            results = await asyncio.gather(*(self._submit(problem, r) for r in wave), return_exceptions=True)
            for res in results:
                if isinstance(res, BaseException):
                    raise res
            for request, rollouts in zip(wave, results):
                search.record(request.node_id, rollouts)
        if pilot is not None:
            pilot.topped_up(problem, search)
            await self._wait(pilot.learned)

    async def _wait(self, event: asyncio.Event) -> None:
        """Wait for the pilot without holding a slot."""
        self._waiting_for_pilot += 1
        self._slot_freed.set()
        try:
            await event.wait()
        finally:
            self._waiting_for_pilot -= 1

    def _judge_request(self, problem: Problem, steps: tuple[str, ...]) -> GenerationRequest:
        judge = self.config.labels.judge
        key = f"judge\x1f{len(steps)}\x1f{steps[-1]}"
        return GenerationRequest(
            problem=problem, prefix=steps, n=1, max_tokens=judge.max_tokens, temperature=judge.temperature,
            seed=request_seed(self.config.seed, problem.id, key, 0), step_format=self.config.steps.step_format,
            purpose="judge",
        )

    async def _judge(self, gen: GenerationRequest) -> list[Completion]:
        return await self.call(gen, self.judge_executor)

    # -- the stream -----------------------------------------------------------------

    def request_stop(self, cancel: bool = False) -> int:
        """Take no new problems (a SIGTERM); ``run`` returns once the trees in flight are
        done. ``cancel``: cancel those too; a cancelled problem is simply not done, and
        the next run redoes it. Returns how many trees were in flight."""
        self.stopping = True
        if cancel:
            for task in self._in_flight:
                task.cancel()
        return len(self._in_flight)

    def piloting(self) -> bool:
        """Whether the pilot is still choosing members (other slices' problems count)."""
        return self.pilot is not None and self.pilot.calibration is None and not self.pilot.closed

    async def run(self, items: Iterable[Problem | InputError],
                  owns: Callable[[str], bool] | None = None) -> RunStats:
        """Search every problem of ``items``. ``owns``: which ids are this slice's; the
        others (sent only while :meth:`piloting`) are searched if they are pilot members,
        so each slice learns what an unsliced run learns, and are otherwise left alone."""
        pending: set[asyncio.Task[FinishedProblem]] = set()
        held: deque[Problem] = deque()  # the pilot's window, not members: started once it has learned
        pilot = self.pilot
        try:
            for item in items:
                if self.stopping:
                    break
                foreign = owns is not None and not owns(item.id if isinstance(item, Problem) else item.problem_id)
                if isinstance(item, InputError):
                    if not foreign:
                        self._input_error(item)
                    continue
                if pilot is not None and pilot.calibration is None:
                    if pilot.admit(item):
                        if foreign:
                            self._foreign.add(item.id)
                        pending = await self._start(item, pending)
                    elif not foreign:
                        held.append(item)
                    if pilot.window_full:  # read no further until the pilot has learned
                        pending = await self._until_learned(pending)
                    continue
                while held and not self.stopping:
                    pending = await self._start(held.popleft(), pending)
                if not foreign:  # sent before the pilot closed: not ours to do
                    pending = await self._start(item, pending)
            if pilot is not None and pilot.calibration is None:
                pending = await self._until_learned(pending)  # the input ended inside the window, or a stop
            while held and not self.stopping:
                pending = await self._start(held.popleft(), pending)
            while pending:
                pending = await self._collect(pending)
        except FatalExecutorError:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            raise
        finally:
            self.stats.stop_clock()
        return self.stats

    async def _start(self, problem: Problem, pending: set[asyncio.Task[FinishedProblem]]) -> set[asyncio.Task[FinishedProblem]]:
        """Start ``problem``'s search once a slot is free (members waiting for the pilot
        hold none); a stop while waiting starts nothing."""
        while len(pending) - self._waiting_for_pilot >= self.config.executor.trees_in_flight:
            pending = await self._collect(pending, self._slot_freed)
        if self.stopping:
            return pending
        task = asyncio.create_task(self.search_problem(problem))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        pending.add(task)
        return pending

    async def _until_learned(self, pending: set[asyncio.Task[FinishedProblem]]) -> set[asyncio.Task[FinishedProblem]]:
        """No more members (the window is read, or the input ended): wait for them, the
        only trees in flight. A stop first abandons them: nothing of theirs was written,
        and the next run pilots the same problems again."""
        assert self.pilot is not None
        self.pilot.close()
        while self.pilot.calibration is None and pending:
            if self.stopping:
                for task in pending:
                    task.cancel()
            pending = await self._collect(pending)
        return pending

    async def _collect(self, pending: set[asyncio.Task[FinishedProblem]],
                       wake: asyncio.Event | None = None) -> set[asyncio.Task[FinishedProblem]]:
        """Wait for at least one tree to finish (or ``wake`` to be set) and hand it on;
        return the rest."""
        waker = None
        if wake is not None:
            wake.clear()
            waker = asyncio.ensure_future(wake.wait())
        done, _ = await asyncio.wait({*pending, *([waker] if waker else [])}, return_when=asyncio.FIRST_COMPLETED)
        if waker is not None:
            waker.cancel()
            done.discard(waker)
        rest = pending - done
        fatal = None
        for task in done:
            if task.cancelled():  # request_stop(cancel=True): not done, redone by the next run
                continue
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
            self.writer.add_rejected(error.problem_id, error.stage, error.reason, self.stats,
                                     fingerprint=error.fingerprint)

    def _finish(self, finished: FinishedProblem) -> None:
        problem, search = finished.problem, finished.search
        if finished.foreign or problem.id in self._foreign:
            return  # another slice's pilot member: that slice writes it
        if search is None:
            reason = finished.error or "unknown"
            self.stats.problems_failed += 1
            self.stats.failure_reasons[reason_kind(reason)] += 1
            self.stats.failure_examples.setdefault(reason_kind(reason), reason[:300])
            if self.writer is not None:
                self.writer.add_failed(problem.id, f"{finished.stage}: {reason}", self.stats,
                                       fingerprint=problem_fingerprint(problem))
        else:
            assert finished.labelling is not None
            out_dir = self.writer.out_dir if self.writer is not None else None
            rows = problem_rows(RowContext(problem, search, finished.labelling, self.config.output, self.policy_name,
                                           self.config.labels.method, out_dir))
            self._count(problem, search, rows["steps"], len(rows["nodes"]), len(rows["pairs"]))
            if search.drawn:  # the pool: what problems took past their budget (the summary shows it)
                self.stats.labelling["pool_drawn"] += search.drawn
                self.stats.labelling["pool_problems"] += 1
            if search.stats.skipped:  # the summary warns when skips are far above normal, with examples
                self.stats.skip_reasons[search.stats.skipped] += 1
                shown = self.stats.examples.setdefault(search.stats.skipped, [])
                if len(shown) < 3:
                    answers = ", ".join(repr(a) for a in search.stats.root_answers) or "none"
                    shown.append(f"{problem.id}: gold {problem.answer!r}; extracted {answers}")
            if self.writer is not None:
                self.writer.add_problem(problem.id, rows, self.stats, skipped=search.stats.skipped,
                                        fingerprint=problem_fingerprint(problem))
        self.stats.executor = self.executor.stats()
        self.stats.verifier = self.verifier.stats()
        self.stats.labelling.update(self.label_context.counters)
        self.label_context.counters.clear()
        for kind, texts in self.label_context.examples.items():
            self.stats.examples.setdefault(kind, texts[:3])
        if self.on_problem is not None:
            self.on_problem(finished, self.stats)

    def _count(self, problem: Problem, search: TreeSearch, steps: list[dict[str, Any]], nodes: int,
               pairs: int) -> None:
        stats = self.stats
        # per answer space too: coverage (problems with a labelled step) is reported per space
        stats.count_space(answer_space(problem), [row["labels"] for row in steps], bool(search.stats.skipped))
        stats.problems_done += 1
        stats.problems_skipped += bool(search.stats.skipped)
        stats.nodes += nodes
        stats.paths += len(steps)
        stats.pairs += pairs
        for row in steps:
            labels = row["labels"]
            pos, neg = labels.count(True), labels.count(False)  # null: undecided, kept unlabelled
            stats.steps_labelled += pos + neg
            stats.labels_positive += pos
            stats.labels_negative += neg
            stats.steps_per_path[len(labels)] += 1


def reason_kind(reason: str) -> str:
    """A failure's kind for the summary: the text up to the first colon, shortened."""
    head = reason.split(":", 1)[0].strip() if ":" in reason else reason
    return head[:80] or "unknown"
