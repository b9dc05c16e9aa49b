"""The asyncio driver: many trees in flight, waves of requests, results to the writer.

The driver is the only part of the engine that awaits. It keeps enough problems
searching at once (refilled from a streaming input) that the backend stays full: trees
are started until the sequences they have in flight reach what the backend serves at
once (its declared ``capacity``; found by watching latency where it declares none) and
fewer are started under backpressure (:class:`Concurrency`); ``trees_in_flight`` only
caps it. For each tree it asks the strategy for a wave,
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
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from prmtree.engine.answers import Verifier
from prmtree.engine.breaker import RETRY_AFTER_MAX_S, CircuitBreaker, retry_after
from prmtree.engine.calibration import answer_space
from prmtree.engine.config import RunConfig
from prmtree.engine.contracts import CANCELLED_BY_PRMTREE, Executor, cancel_requested, declared_capacity
from prmtree.engine.deadlines import Deadlines
from prmtree.engine.errors import (
    ConfigError,
    FatalExecutorError,
    GenerationError,
    PilotFailedError,
    PolicyContractError,
    exception_text,
)
from prmtree.engine.labelers import LabelContext, Labeler, make_labeler
from prmtree.engine.labels import Labelling
from prmtree.engine.loop_load import LoopLoad
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


NOT_RETRYABLE = "not retryable)"  # how a PolicyFailure's reason ends when its last attempt could not pass


def retry_may_pass(reason: str) -> bool:
    """Whether running a failed problem again may succeed: not when its policy said the
    failure is not retryable (a broken contract, a refusal), nor for a bug in a strategy
    or a custom verifier (``internal error``: the same seeded run meets it again)."""
    return not reason.endswith(NOT_RETRYABLE) and "internal error: " not in reason


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


def retryable(exc: BaseException) -> bool:
    """Whether another attempt may help: a policy says so with GenerationError; a
    timeout may; an unknown exception from a custom policy is given the benefit of the
    doubt; a broken contract never."""
    if isinstance(exc, GenerationError):
        return exc.retryable
    return True


HEAD_ROUNDS = 2  # a next step that only heads the one after it is continued at most this often

HEADROOM = 1.25  # sequences kept in flight per sequence of declared capacity: a queue, so the engine never waits for the driver


#: extra attempts a request may make when the backend answered "busy" (a 429 or 503) while it
#: served other requests: a server at its capacity is up, and a request refused for its
#: load has not failed; without them a problem was lost to three 429s in a row (``max_attempts``)
#: in a run the server was serving. A server refusing everything spends attempts as before.
BUSY_RETRIES = 8


def said_busy(exc: BaseException) -> bool:
    """Whether a failed attempt is the backend's own answer that it is over its capacity (a
    429 or 503, an "overloaded" error), not a failure of the request."""
    if getattr(exc, "overloaded", False):  # the policy said so (the flag does not cross a process: Ray's
        return True  # pickling keeps the message, read below)
    text = exception_text(exc).lower()
    # (the openai policy's 429s that no wait can pass say so: no load to back off from)
    return ("overload" in text or "http 429" in text or "http 503" in text) and "no retry can pass" not in text


def overloaded(exc: BaseException) -> bool:
    """Whether a failed attempt says the backend is over its capacity (:func:`said_busy`, or
    the driver's own timeout), rather than that one request failed."""
    return said_busy(exc) or "timed out after" in exception_text(exc).lower()


class Concurrency:
    """How many sequences the driver keeps in flight: additive increase, multiplicative
    decrease (AIMD), the way TCP finds a link's rate.

    With a declared ``capacity`` the limit starts at ``capacity × HEADROOM`` and stays
    there unless the backend reports overload. Without one (an OpenAI-compatible server)
    it starts at ``start`` and doubles each round trip (every ``limit`` sequences
    completed) until the first sign of backpressure. After it (and after an overload
    under a declared capacity) the limit grows additively: per round trip, by an eighth
    of itself, at least 1 sequence and at most ``step`` (:meth:`additive_step`), so a
    halving takes 6 to 8 round trips to climb back. The limit grows only while it is used
    (at least half of it claimed: ``in_use``), so an idle stretch (the pilot, a slow
    tail) does not run it up to a flood for the next burst.

    Backpressure is an overloaded error, or **the load's latency**: at the end of each
    round trip, the median over the last ``LATENCY_WINDOW`` requests of the latency per
    decoded token (a request's fixed cost counted as ``FIXED_TOKENS`` tokens) above
    ``tolerance`` × the lowest such median seen. Per token, since a request's latency grows
    with what it writes (next-step requests beside whole rollouts); a median of a window,
    since single requests vary (judged one by one against their lowest smoothed latency,
    ordinary jitter cut a server with no limit to 1 sequence). The lowest ever, not a
    recent lowest: a saturated server's latency rises by a few percent per additive step,
    and a sliding baseline rose with it (the limit climbed to 25× the knee). A server that
    got slower for other reasons is therefore read as loaded, as before.
    Each decrease halves the limit, at most once per round trip, and the requests sent
    before it (they report the old load) are left out of the window. Pure bookkeeping:
    the driver reads ``limit`` and reports each request's ``completed`` / ``overload``."""

    LATENCY_WINDOW = 32  # requests whose median latency is the round trip's level
    MIN_SAMPLES = 8  # a level needs at least these many requests
    FIXED_TOKENS = 16  # a request's fixed cost (prefill, the network), in decoded tokens

    def __init__(self, capacity: int | None = None, start: int = 64, step: int = 16, tolerance: float = 2.0,
                 min_rise_s: float = 0.005, floor: int = 1) -> None:
        self.start, self.step, self.tolerance, self.min_rise_s, self.floor = start, step, tolerance, min_rise_s, floor
        self.capacity: int | None = None
        self.ceiling: float = math.inf
        self.limit = start
        self.slow_start = True
        self.decreases = 0
        self.latency_decreases = 0
        self._done = 0  # sequences completed since the limit last changed
        self._since_cut = 0  # sequences completed since the last decrease
        self._stale = 0  # sequences sent before the last decrease, still to come back
        self._cut_at = 0.0  # when (perf_counter) the limit was last halved
        self._latency: float | None = None  # smoothed (EMA) latency of a request
        self._window: deque[tuple[float, int]] = deque(maxlen=self.LATENCY_WINDOW)  # (latency, tokens)
        self.baseline: float | None = None  # the lowest level seen (s per token)
        self.peak = 0  # the highest limit held
        self.set_capacity(capacity)
        self.peak = self.limit

    def set_capacity(self, capacity: int | None) -> None:
        """The backend says how many sequences it serves (None: it does not know)."""
        if capacity == self.capacity:
            return
        self.capacity = capacity
        if capacity is None:
            self.ceiling = math.inf
            return
        self.ceiling = max(self.floor, math.ceil(capacity * HEADROOM))
        if not self.decreases:  # nothing said it is too much: fill it at once
            self.limit = int(self.ceiling)
        self.limit = min(self.limit, int(self.ceiling))
        self.slow_start = False
        self.peak = max(self.peak, self.limit)

    def completed(self, sequences: int, latency_s: float, tokens: int = 0, in_use: int | None = None) -> bool:
        """A request of ``sequences`` came back after ``latency_s``, its longest completion
        ``tokens`` long, with ``in_use`` sequences claimed (None: the limit counts as used);
        whether the limit grew."""
        self._latency = latency_s if self._latency is None else 0.8 * self._latency + 0.2 * latency_s
        self._done += sequences
        self._since_cut += sequences
        if self._stale > 0:  # sent before the last decrease: it reports the old load
            self._stale -= sequences
        elif self.capacity is None:  # only an unknown backend's latency is judged
            self._window.append((latency_s, tokens))
        if self._done < self.limit:
            return False
        self._done = 0
        if self.capacity is None and self._slower():
            self._decrease()
            self.latency_decreases += 1
            return False
        if self.limit >= self.ceiling or (in_use is not None and 2 * in_use < self.limit):
            return False
        grown = self.limit * 2 if self.slow_start else self.limit + self.additive_step()
        self.limit = int(min(self.ceiling, grown))
        self.peak = max(self.peak, self.limit)
        return True

    def _slower(self) -> bool:
        """Whether this round trip's latency per token is well above the lowest seen (and
        by at least ``min_rise_s`` for a typical request)."""
        if len(self._window) < self.MIN_SAMPLES:
            return False
        per_token = sorted(latency / (tokens + self.FIXED_TOKENS) for latency, tokens in self._window)
        level = per_token[len(per_token) // 2]
        baseline = self.baseline
        typical = sorted(tokens for _, tokens in self._window)[len(self._window) // 2] + self.FIXED_TOKENS
        slower = baseline is not None and level > self.tolerance * baseline and (
            level - baseline) * typical > self.min_rise_s
        if baseline is None:
            self.baseline = level
            return False
        if not slower:
            self.baseline = min(baseline, level)
        return slower

    def additive_step(self) -> int:
        """How much the limit grows per round trip after the first backpressure: an eighth
        of it, at least 1 sequence and at most ``step`` (additive relative to the limit)."""
        return max(1, min(self.step, self.limit // 8))

    def overload(self) -> None:
        """An attempt failed with the backend over its capacity."""
        self._decrease()

    def _decrease(self) -> None:
        now = time.perf_counter()
        if (self.decreases and self._since_cut < self.limit  # already halved for this round trip
                and (self._latency is None or now - self._cut_at < self._latency)):
            return
        self._cut_at = now
        self.slow_start = False
        self.decreases += 1
        self._stale = self.limit  # at most this many were sent at the old limit
        self.limit = max(self.floor, self.limit // 2)
        self._done = self._since_cut = 0
        self._window.clear()

    def as_dict(self) -> dict[str, Any]:
        """For the run's stats (manifest ``stats.driver.sizing``): where it settled."""
        return {"capacity": self.capacity, "limit": self.limit, "peak": self.peak, "decreases": self.decreases,
                "latency_decreases": self.latency_decreases,
                "latency_ms": None if self._latency is None else round(self._latency * 1000, 3)}


def timed_out(reason: str) -> bool:
    """Whether a request's failure was the driver's (or a worker's) time limit."""
    return "policy timed out after" in reason


def decoded_tokens(completions: list[Completion]) -> int:
    """The decoding steps a request took: its longest completion's tokens, estimated from
    the text (~4 characters a token) where the backend gave none (an OpenAI server's n
    choices share one count)."""
    tokens = max([c.num_tokens for c in completions], default=0)
    return tokens or max([len(c.text) for c in completions], default=0) // 4


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
        # silence: three request timeouts with nothing succeeding (a hung backend, one request in flight)
        self.breaker = CircuitBreaker(config.executor.breaker_window, silence_s=3 * config.executor.request_timeout_s)
        self._served: dict[int, int] = {}  # requests each executor (by id: the policy's, a judge's) answered
        self._deadlines = Deadlines()  # every request's time limit
        self.stopping = False  # request_stop(): take no new problems
        #: run(): every problem of the input was started and none was dropped, so a stop that
        #: came after the last one started cost nothing: the run is complete
        self.complete = False
        self._dropped = 0  # problems a stop cancelled or never started: the next run does them
        self._in_flight: set[asyncio.Task[FinishedProblem]] = set()
        self._waiting_for_pilot = 0  # members searched, waiting to be labelled: they hold no slot
        self._wake = asyncio.Event()  # a tree finished, or there may be room for another
        self._finished: deque[asyncio.Task[FinishedProblem]] = deque()  # done, not yet handed on
        self._admitting = False  # the run waits for room to start a tree
        # sizing: each tree claims the sequences of its current wave; trees start while the
        # claims are under the concurrency limit (see Concurrency)
        self.concurrency = Concurrency(declared_capacity(executor))
        self._claims: dict[str, int] = {}
        self._claimed = 0
        self._wave_size = float(config.search.k)  # a new tree's claim: the mean wave, smoothed
        self._requests_seen = 0
        self.loop_load = LoopLoad()  # how much of the run this loop set the pace (the summary warns)
        self._gate: deque[tuple[asyncio.Future[None], str, int]] = deque()  # waves waiting for room
        self.allowance = 0  # rollouts past its budget a problem may draw (the pilot's pool)
        self._foreign: set[str] = set()  # other slices' pilot members searched here
        self._member_failure: str | None = None  # the first pilot member's failure (other slices' too)
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
        if request.next_step_only:
            completions = await self._past_heads(gen, completions)
        rollouts = self._parse(problem, request, completions)
        self.breaker.record_output([r.malformed for r in rollouts])  # a backend answering only junk stops the run
        verdicts = await self.verifier.check(problem, [r.answer for r in rollouts])
        return [with_verdict(r, ok) for r, ok in zip(rollouts, verdicts)]

    async def _past_heads(self, gen: GenerationRequest, completions: list[Completion]) -> list[Completion]:
        """One step at a time (mcts) stops at the step delimiter, so a model that opens with a
        header, filler or ``<think>`` stops right after it, and that fragment would be a node
        and a labelled step of its own. Such completions are continued: asked again with the
        fragment as the last prefix step (the prompt the model saw, written out), the two
        joined as one step, as the reader merges them in a whole solution. At most
        ``HEAD_ROUNDS`` rounds; completions with the same fragment share one request."""
        segmenter = self.segmenter
        latest = {i: c for i, c in enumerate(completions)}  # the part each round wrote, to check
        heads_so_far = {i: () for i in latest}  # the fragments continued past, per completion
        for round_ in range(HEAD_ROUNDS):
            heads: dict[tuple[str, ...], list[int]] = {}
            for i, c in latest.items():
                if c.finish_reason == "stop" and segmenter.heads_next(c.text):
                    heads.setdefault(heads_so_far[i] + (c.text.strip(),), []).append(i)
            if not heads:
                break
            follows = [
                replace(gen, prefix=gen.prefix + written, n=len(at),
                        seed=request_seed(gen.seed, gen.problem.id, "\x1e".join(written), round_))
                for written, at in heads.items()
            ]
            if len(follows) == 1:
                answers = [await self._follow(follows[0])]
            else:  # all of them end before a failure fails the problem (none left running for it)
                answers = await asyncio.gather(*(self._follow(f) for f in follows), return_exceptions=True)
                for answered in answers:
                    if isinstance(answered, BaseException):
                        raise answered
            completions, latest = list(completions), {}
            join = gen.step_format.delimiter
            for (written, at), more in zip(heads.items(), answers):
                for i, c in zip(at, more):
                    was = completions[i]
                    completions[i] = Completion(  # both requests' tokens: the run's totals count them all
                        join.join(written + (c.text,)), was.num_tokens + c.num_tokens, c.finish_reason,
                        was.cached_tokens + c.cached_tokens, was.prompt_tokens + c.prompt_tokens,
                        was.shared_tokens + c.shared_tokens,
                    )
                    latest[i], heads_so_far[i] = c, written
        return completions

    async def _follow(self, gen: GenerationRequest) -> list[Completion]:
        """A follow-up request of :meth:`_past_heads`, counted among the run's requests."""
        completions = await self.call(gen)
        self.stats.requests += 1
        return completions

    async def call(self, gen: GenerationRequest, executor: Executor | None = None) -> list[Completion]:
        """One request through the one retry layer: retryable failures are retried with
        exponential backoff (at most ``retry_backoff_max_s``), or after the wait the server
        asked for (``GenerationError.retry_after``: a 429's ``Retry-After``) where that is
        longer, up to ``RETRY_AFTER_MAX_S``; the answer is checked against the policy
        contract. Each attempt's latency or overload feeds the concurrency limit."""
        ex = self.config.executor
        executor = executor or self.executor
        asked = 0.0  # the wait the last attempt's server asked for
        rejoin = 0  # the wave this request's tree gave up while it waits out an overload
        attempt = spent = busy = 0  # attempts sent; those spent of max_attempts; busy answers forgiven
        served = self._served.get(id(executor), 0)  # its successes by the last failure (or the first send)
        while spent < ex.max_attempts:
            if attempt:
                self.stats.retries += 1
                backoff = min(ex.retry_backoff_max_s, ex.retry_backoff_s * 2 ** min(attempt - 1, 60))
                await asyncio.sleep(max(backoff, min(asked, RETRY_AFTER_MAX_S)))
                if rejoin:  # retry once the smaller limit has room for it
                    await self._room_for(gen.problem.id, rejoin)
                    rejoin = 0
            attempt += 1
            spent += 1
            deadline = self._deadlines.bound(ex.request_timeout_s)
            try:
                sent = time.perf_counter()
                async with deadline:
                    completions = await executor.submit(gen)
                checked = check_completions(gen, completions, executor.policy_name)
                self.breaker.record(None)
                self._served[id(executor)] = self._served.get(id(executor), 0) + 1
                latency = time.perf_counter() - sent  # tokens only where latency is judged: the rollout path
                self._completed(gen.n, latency, decoded_tokens(checked) if self.concurrency.capacity is None else 0)
                return checked
            except FatalExecutorError:
                raise
            except asyncio.CancelledError:
                if cancel_requested(asyncio.current_task()):  # the driver's own stop: not a failure
                    raise
                last: BaseException = GenerationError("generate raised CancelledError")
            except TimeoutError as exc:  # the driver's own bound, or one the policy raised
                if deadline.expired:
                    last = GenerationError(f"policy timed out after {ex.request_timeout_s:g} s")
                else:
                    last = exc
            except Exception as exc:  # the policy's own failure: retried if it may pass
                last = exc
            except GeneratorExit:  # this coroutine is being closed
                raise
            except BaseException as exc:  # a bare BaseException subclass let through by an executor
                detail = exception_text(exc)
                last = GenerationError(f"generate raised {type(exc).__name__}{': ' + detail if detail else ''}")
            self.breaker.record(last)  # every request failing: stop the run (BackendDownError)
            asked = retry_after(last) or 0.0
            if (said_busy(last) and ex.max_attempts > 1 and busy < BUSY_RETRIES
                    and self._served.get(id(executor), 0) > served):
                busy += 1  # refused for the load while others were served: not this request's failure
                spent -= 1
            served = self._served.get(id(executor), 0)
            if overloaded(last):
                self.concurrency.overload()
                held = self._claims.get(gen.problem.id)
                if held and spent < ex.max_attempts:  # its room goes to waiting waves while it backs off
                    self._claim(gen.problem.id, 0)
                    rejoin = held
            if not retryable(last):
                break
        kind = "contract" if isinstance(last, PolicyContractError) else type(last).__name__
        tries = f"after {attempt} attempts" if attempt > 1 else "1 attempt"
        if not retryable(last):
            tries = f"{tries}, not retryable" if attempt > 1 else "not retryable"
        raise PolicyFailure(f"{kind}: {exception_text(last) or type(last).__name__} ({tries})")

    def _completed(self, sequences: int, latency_s: float, tokens: int) -> None:
        """A request came back: tell the concurrency limit (and, now and then, re-read
        the backend's capacity: a lazily built engine, a pool that lost a worker; every 16
        requests while it is unknown, so an engine built by its first requests is filled
        before probing has doubled far past it)."""
        self._requests_seen += 1
        if not self._requests_seen & (255 if self.concurrency.capacity is not None else 15):
            try:
                self.concurrency.set_capacity(declared_capacity(self.executor))
            except ConfigError:  # a capacity gone odd mid-run (0, 2.5): keep the last; the request succeeded
                pass
        if not self._requests_seen & 255:
            self.loop_load.tick()
        if self.concurrency.completed(sequences, latency_s, tokens, self._claimed):
            self._open_gate()
            if self._admitting:
                self._wake.set()

    def _claim(self, problem_id: str, sequences: int) -> None:
        """``problem_id``'s tree now has ``sequences`` in flight (its wave)."""
        old = self._claims.get(problem_id, 0)
        self._claims[problem_id] = sequences
        self._claimed += sequences - old
        if sequences < old:
            if self._gate:
                self._open_gate()
            if self._admitting and self._claimed < self.concurrency.limit:
                self._wake.set()

    async def _room_for(self, problem_id: str, sequences: int) -> None:
        """Claim ``sequences`` for the tree's next wave, first waiting while the other
        trees' waves fill the limit (the limit shrank: backpressure reaches the trees
        already searching, not only the next ones). Waiting claims nothing."""
        others = self._claimed - self._claims.get(problem_id, 0)
        if others == 0 or (not self._gate and others + sequences <= self.concurrency.limit):
            self._claim(problem_id, sequences)
            return
        self._claim(problem_id, 0)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (future, problem_id, sequences)
        self._gate.append(entry)
        self._open_gate()
        try:
            await future  # claimed on its behalf when opened
        except BaseException:
            if entry in self._gate:
                self._gate.remove(entry)
            raise

    def _open_gate(self) -> None:
        """Let waiting waves go, first come first, while they fit (one always may, when
        nothing is in flight)."""
        limit = self.concurrency.limit
        while self._gate:
            future, problem_id, sequences = self._gate[0]
            if future.done():
                self._gate.popleft()
                continue
            if self._claimed and self._claimed + sequences > limit:
                return
            self._gate.popleft()
            self._claims[problem_id] = sequences
            self._claimed += sequences
            future.set_result(None)

    def _unclaim(self, problem_id: str) -> None:
        self._claim(problem_id, 0)
        self._claims.pop(problem_id, None)

    def _parse(self, problem: Problem, request: RolloutRequest, completions: list[Completion]) -> list[Rollout]:
        stats = self.stats
        stats.requests += 1
        rollouts = []
        depth, last_step = len(request.prefix), request.prefix[-1] if request.prefix else ""
        for c in completions:
            r = parse_completion(
                problem, c.text, c.num_tokens, c.finish_reason, self.segmenter, None, request.next_step_only,
                depth, last_step,
            )
            stats.tokens += c.num_tokens + c.shared_tokens
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
        """Search ``problem`` and label it. A member of the pilot under way whose search
        fails for the policy is searched once more from scratch before the pilot learns
        without it: its requests carry the same seeds, so a second search that passes grows
        the tree a run where it passed grew, and one transient failure changes no floor
        (with several drivers each pilots alone: a member lost by one driver only would
        leave its slice with floors its siblings did not learn). Only a failure that may pass
        (not one the policy called not retryable), while the backend answered others (not a
        dead backend: the pilot then says it learned nothing, as before), and not a timeout
        (a hung member would hold the pilot, and every problem waiting on it, twice as long,
        past the breaker's silence limit). One that fails again teaches nothing and must not
        hold the pilot: it is reported lost."""
        member = problem.id in self.members or (self.pilot is not None and self.pilot.is_member(problem))
        served = self._served.get(id(self.executor), 0)
        finished = await self._search(problem, member)
        why = finished.error or ""
        if (finished.search is None and finished.stage == "policy" and self._piloting_member(problem)
                and retry_may_pass(why) and not timed_out(why) and await self._answers_others(served)):
            self.stats.labelling["pilot_searched_again"] += 1  # its first search's work is in the totals
            finished = await self._search(problem, member)
        if finished.search is None and self._piloting_member(problem):
            assert self.pilot is not None
            why = finished.error or "unknown"
            if problem.id not in self.pilot.reported:
                self.pilot.searched(problem, None, why)
            self.pilot.topped_up(problem, None, why)
        return finished

    async def _answers_others(self, served: int) -> bool:
        """Whether the backend answered a request since it had answered ``served``: waits
        (a rare path: a pilot member failed) while other trees have requests in flight."""
        key = id(self.executor)
        while self._served.get(key, 0) <= served:
            if not self._claimed:
                return False
            await asyncio.sleep(0.05)
        return True

    def _piloting_member(self, problem: Problem) -> bool:
        """Whether ``problem`` is a member of a pilot that has not learned yet."""
        return self.pilot_unlearned() and self.pilot is not None and self.pilot.is_member(problem)

    async def _search(self, problem: Problem, member: bool) -> FinishedProblem:
        """One search of ``problem`` from scratch, its pilot rounds (a member) and its labels."""
        decider = self.decider_at(problem, None) if member else self.labeler.decider(problem, self.label_context)
        search = make_search(problem, self.config.search, decider, self.config.steps.max_steps)
        search.allowance = 0 if member else self.allowance
        try:
            while not search.done():
                wave = search.next_requests()
                if not wave:
                    if search.done():
                        break
                    raise RuntimeError(f"strategy {search.name} issued no requests and is not done")
                sequences = sum(r.n for r in wave)
                self._wave_size += 0.01 * (sequences - self._wave_size)
                await self._room_for(problem.id, sequences)
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
            if member:
                await self._pilot_rounds(problem, search)
            labelling = await self.labeler.label(problem, search, self.label_context)
        # a stop (CancelledError), or the run's end (FatalExecutorError: a lost engine fails every
        # request in flight at once) raise on: not the member's own failure, or the pilot would
        # learn from the survivors
        except PolicyFailure as exc:
            return FinishedProblem(problem, None, str(exc))
        except FatalExecutorError:
            raise
        except Exception as exc:  # a bug in a strategy or a custom verifier: keep the run going
            return FinishedProblem(problem, None, f"internal error: {type(exc).__name__}: {exc}", stage="search")
        finally:
            self._unclaim(problem.id)
            self.executor.release(problem.id)
        return FinishedProblem(problem, search, labelling=labelling, foreign=problem.id in self._foreign)

    async def _pilot_rounds(self, problem: Problem, search: TreeSearch) -> None:
        """A member's search is done: report it; at the pilot's first look, top up its
        paths' labels at the first floors (its own budget); report again, and wait until
        the pilot has learned what it is labelled with. Waiting holds no slot."""
        pilot = self.pilot  # None: a member an earlier run's pilot left unfinished, redone as it was
        if pilot is not None:
            pilot.searched(problem, search)
            await self._wait(pilot.first_look, problem.id)
        first_floors = pilot.first_floors if pilot is not None else self.first_floors
        space = answer_space(problem)
        if space in first_floors:
            search.decider = self.decider_at(problem, first_floors[space])
        while True:
            paths = [search.tree.path_ids(leaf) for leaf in search.tree.leaves()]
            wave, _ = search.sample_paths([ids for ids in paths if ids], fill=True)
            if not wave:
                break
            await self._room_for(problem.id, sum(r.n for r in wave))
            results = await asyncio.gather(*(self._submit(problem, r) for r in wave), return_exceptions=True)
            for res in results:
                if isinstance(res, BaseException):
                    raise res
            for request, rollouts in zip(wave, results):
                search.record(request.node_id, rollouts)
        if pilot is not None:
            pilot.topped_up(problem, search)
            await self._wait(pilot.learned, problem.id)

    async def _wait(self, event: asyncio.Event, problem_id: str) -> None:
        """Wait for the pilot without holding a slot (nor a claim)."""
        self._waiting_for_pilot += 1
        self._claim(problem_id, 0)
        self._wake.set()
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

    def pilot_unlearned(self) -> bool:
        """Whether the pilot has not learned yet: a stop now cancels its trees, since they
        cannot finish without it, and the next run pilots again."""
        return self.pilot is not None and self.pilot.calibration is None

    def request_stop(self, cancel: bool = False) -> int:
        """Take no new problems (a SIGTERM); ``run`` returns once the trees in flight are
        done. ``cancel``: cancel those too; a cancelled problem is simply not done, and
        the next run redoes it. Returns how many trees were in flight."""
        self.stopping = True
        in_flight = len(self._in_flight)
        if self.pilot_unlearned():
            # before the pilot learned, its members cannot finish: none is done, and the
            # next run pilots the same problems again
            self.pilot.abandoned = True
            cancel = True
        if cancel:
            for task in self._in_flight:
                task.cancel(CANCELLED_BY_PRMTREE)
        return in_flight

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
        self.loop_load.watch(asyncio.get_running_loop())
        read_all = False
        try:
            for item in items:
                if self.stopping:
                    break
                foreign = owns is not None and not owns(item.id if isinstance(item, Problem) else item.problem_id)
                if isinstance(item, InputError):
                    if not foreign:
                        self._input_error(item)
                    continue
                if pilot is not None and pilot.calibration is None and not pilot.failed:
                    if pilot.admit(item):
                        if foreign:
                            self._foreign.add(item.id)
                        pending = await self._start(item, pending)
                    elif not foreign:
                        held.append(item)
                    if pilot.window_full:  # read no further until the pilot has learned
                        pending = await self._until_learned(pending)
                    continue
                if pilot is not None and pilot.failed and (held or not foreign):
                    raise PilotFailedError(self._pilot_failure())  # more to label, and nothing to label it with
                while held and not self.stopping:
                    pending = await self._start(held.popleft(), pending)
                if not foreign:  # sent before the pilot closed: not ours to do
                    pending = await self._start(item, pending)
            else:
                read_all = True
            if pilot is not None and pilot.calibration is None:
                pending = await self._until_learned(pending)  # the input ended inside the window, or a stop
            if pilot is not None and pilot.failed and held:
                raise PilotFailedError(self._pilot_failure())
            while held and not self.stopping:
                pending = await self._start(held.popleft(), pending)
            while pending:
                pending = await self._collect(pending)
            self.complete = read_all and not held and not self._dropped
        except FatalExecutorError:
            if pilot is not None and pilot.calibration is None:
                pilot.abandoned = True  # nothing served any more: it must not learn from what is left
            for task in pending:
                task.cancel(CANCELLED_BY_PRMTREE)
            await asyncio.gather(*pending, return_exceptions=True)
            raise
        finally:
            self.loop_load.unwatch()
            self.stats.stop_clock()
        return self.stats

    def _full(self, pending: set[asyncio.Task[FinishedProblem]]) -> bool:
        """No room for another tree: ``trees_in_flight`` reached, or the trees' waves
        fill the concurrency limit (members waiting for the pilot count for neither;
        with no tree searching there is always room for one)."""
        active = len(pending) - self._waiting_for_pilot
        if active >= self.config.executor.trees_in_flight:
            return True
        return active > 0 and (self._claimed >= self.concurrency.limit or bool(self._gate))

    async def _start(self, problem: Problem, pending: set[asyncio.Task[FinishedProblem]]) -> set[asyncio.Task[FinishedProblem]]:
        """Start ``problem``'s search once there is room (see ``_full``); a stop while
        waiting starts nothing."""
        while self._full(pending):
            pending = await self._collect(pending, for_room=True)
        if self.stopping:
            self._dropped += 1  # read but never started: the next run does it
            return pending
        self._claim(problem.id, max(1, round(self._wave_size)))  # until its first wave says
        task = asyncio.create_task(self.search_problem(problem))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        task.add_done_callback(self._task_done)
        pending.add(task)
        return pending

    def _task_done(self, task: asyncio.Task[FinishedProblem]) -> None:
        self._finished.append(task)
        self._wake.set()

    async def _until_learned(self, pending: set[asyncio.Task[FinishedProblem]]) -> set[asyncio.Task[FinishedProblem]]:
        """No more members (the window is read, or the input ended): wait for them, the
        only trees in flight. A stop first abandons them: nothing of theirs was written,
        and the next run pilots the same problems again."""
        assert self.pilot is not None
        self.pilot.close()
        while self.pilot.calibration is None and pending:
            if self.stopping:
                self.pilot.abandoned = True  # learns nothing from what the stop cut short
                for task in pending:
                    task.cancel(CANCELLED_BY_PRMTREE)
            pending = await self._collect(pending)
        return pending

    def _pilot_failure(self) -> str:
        """Why the run stops when every pilot problem failed and others wait (an input of
        members only just ends, its failures retried with a pilot as any are)."""
        reason = self._member_failure or "unknown"
        count = len(self.pilot.members) if self.pilot is not None else 0
        return (f"the pilot learned nothing: all {count} of its problems failed (e.g. {reason}), so no other "
                "problem was started, as their labels need the floors it learns; fix the cause, then run the "
                "same command again: it pilots the same problems again")

    async def _collect(self, pending: set[asyncio.Task[FinishedProblem]],
                       for_room: bool = False) -> set[asyncio.Task[FinishedProblem]]:
        """Wait for at least one tree to finish (``for_room``: or for room to start one)
        and hand the finished on; return the rest. Trees report themselves done (a
        callback), so this costs what finished, not what is in flight."""
        self._admitting = for_room
        try:
            while not self._finished and not (for_room and not self._full(pending)):
                self._wake.clear()
                await self._wake.wait()
        finally:
            self._admitting = False
        done = []
        while self._finished:
            task = self._finished.popleft()
            if task in pending:
                pending.discard(task)
                done.append(task)
        rest = pending
        fatal = None
        for task in done:
            if task.cancelled():  # request_stop(cancel=True): not done, redone by the next run
                self._dropped += 1
                continue
            if task.exception() is not None:
                fatal = fatal or task.exception()
                continue
            self._finish(task.result())
        if fatal is not None:
            for task in rest:
                task.cancel(CANCELLED_BY_PRMTREE)
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
        if (search is None and self._member_failure is None and self.pilot is not None
                and self.pilot.is_member(problem)):  # (another slice's member is not counted below)
            self._member_failure = finished.error or "unknown"
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
                                        fingerprint=problem_fingerprint(problem), space=answer_space(problem))
        self.stats.executor = self.executor.stats()
        self.stats.driver = {**self.loop_load.as_dict(), "sizing": self.concurrency.as_dict()}
        self.stats.record_verifier(self.verifier.stats())
        self.stats.labelling.update(self.label_context.counters)
        self.label_context.counters.clear()
        for kind, texts in self.label_context.examples.items():
            self.stats.examples.setdefault(kind, texts[:3])
        if self.on_problem is not None:
            self.on_problem(finished, self.stats)

    def _count(self, problem: Problem, search: TreeSearch, steps: list[dict[str, Any]], nodes: int,
               pairs: int) -> None:
        # per answer space too: coverage (problems with a labelled step) is reported per space
        self.stats.count_problem(answer_space(problem), [row["labels"] for row in steps], nodes, pairs,
                                 bool(search.stats.skipped))


def reason_kind(reason: str) -> str:
    """A failure's kind for the summary: the text up to the first colon, shortened."""
    head = reason.split(":", 1)[0].strip() if ":" in reason else reason
    return head[:80] or "unknown"
