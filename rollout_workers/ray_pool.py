"""The Ray executor: a pool of RolloutWorker actors fed by one driver (or several).

Each worker is an async actor hosting one Policy, built inside the actor from a
serialisable spec (a registry name or ``module:Class`` plus keyword arguments), with
many requests in flight. Routing keeps a tree on one worker (rendezvous hashing of the
problem id over live workers) so its prefix, and its image encoding, stay in that
worker's KV cache; a worker over its queue limit spills to the least-loaded one, and
when every worker is full the driver waits (backpressure). A worker that dies has its
requests resubmitted elsewhere (counted); Ray restarts it (``max_restarts``). With no
worker left the executor raises :class:`NoWorkersLeft`, the run stops with everything
finished flushed, and a resume completes it.

Several drivers may share one pool (``--drivers N``, ``prmtree/multi_driver.py``): the
job starts the workers, and each driver's executor *attaches* to them by name
(``ExecutorConfig.attach``) instead of starting its own. Each executor is a separate
client of the workers: requests and results are kept per client, so one driver never
collects another's results, and a client that stops polling (its driver died) is
forgotten after ``CLIENT_TIMEOUT_S``.

The driver's cost per request is what limits one driver: routing is a dict lookup after
a tree's first request (rendezvous order cached per problem), batches leave on a timer
armed by the first request of a window (no task wakes up while idle), and a freed slot
wakes one waiting request only when someone waits.

Ray is imported only when this executor is built.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import math
import os
import sys
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from prmtree.engine.config import ConfigError, ExecutorConfig
from prmtree.policies.base import Completion, GenerationError, GenerationRequest, policy_name
from prmtree.rollout_workers.base import FatalExecutorError


class NoWorkersLeft(FatalExecutorError):
    """Every rollout worker is dead and none came back."""


#: A worker forgets a client (a driver) that has not polled for this long: its driver died,
#: and its results would otherwise pile up. A live driver polls at least once a second.
CLIENT_TIMEOUT_S = 300.0


def worker_name(pool: str, index: int) -> str:
    """The Ray name of worker ``index`` of pool ``pool`` (drivers attach by it)."""
    return f"prmtree-worker-{pool}-{index}"


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - ray is a core dependency
        raise FatalExecutorError(f"the ray executor needs ray ({exc}); install with: pip install ray") from None
    return ray


#: Seconds to wait for actors (workers, drivers) to be placed and answer: on a cluster that
#: must grow to fit them, its autoscaler's time.
START_TIMEOUT_S = 600.0
_local = {"cluster": False}  # set by connect(): Ray started (or found) on this machine, no address


def connect(config: ExecutorConfig) -> bool:
    """Connect to the Ray cluster at ``config.address`` (none: start a local one) unless this
    process already is; True when this call connected (the caller then shuts Ray down)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address=config.address, include_dashboard=False, log_to_driver=True)
    _local["cluster"] = config.address is None and not os.environ.get("RAY_ADDRESS")
    return True


def check_demand(cpus: float, gpus: float, what: str) -> None:
    """Refuse, or warn about, a job whose actors need more than the cluster has: Ray keeps
    an actor it cannot place pending forever, without a word. A local Ray cannot grow, so
    there it is a one-line :class:`ConfigError`; a remote cluster may autoscale, so there
    it is a warning, and the actors' start is bounded by ``START_TIMEOUT_S``."""
    ray = _ray()
    total = ray.cluster_resources()
    short = [f"{need:g} {kind} (the cluster has {total.get(kind, 0.0):g})"
             for kind, need in (("CPU", cpus), ("GPU", gpus)) if need > total.get(kind, 0.0) + 1e-9]
    if not short:
        return
    message = (f"{what} need {' and '.join(short)}: lower [executor] workers, num_cpus_per_worker, "
               "num_gpus_per_worker, drivers or num_cpus_per_driver")
    if _local["cluster"]:
        raise ConfigError(message + " (a local Ray cannot grow)")
    sys.stderr.write(f"prmtree: {message}; waiting up to {START_TIMEOUT_S:g} s for the cluster to grow\n")


#: ``--drivers auto`` on a fresh output directory: one driver per this many workers.
#: Measured (``benchmarks/ray_scaling.py``): one driver core sustains 10,000-15,000
#: rollouts/s of the simulated policy, i.e. it saturates about 4 latency-bound workers
#: that each serve 2,560 rollouts/s. A real GPU serves far fewer (a 7B VLM about 20
#: rollouts/s, a small fast model about 100), and real completions cost the driver more
#: to split and check than the simulated ones (allow 4x): about 3,000 rollouts/s per
#: driver, i.e. 30 workers at 100 rollouts/s. An extra driver costs one CPU core; a
#: missing one leaves GPUs idle, so the rule errs towards more drivers.
WORKERS_PER_DRIVER = 32


def auto_drivers(workers: int) -> int:
    """``--drivers auto`` for a pool of ``workers``: one driver per ``WORKERS_PER_DRIVER``."""
    return max(1, math.ceil(workers / WORKERS_PER_DRIVER))


def driver_actors(config: ExecutorConfig, workers: int) -> int:
    """Driver actors a job of ``workers`` workers starts: none for one driver (the job's
    own process drives)."""
    drivers = config.drivers if isinstance(config.drivers, int) else auto_drivers(workers)
    return drivers if drivers > 1 else 0


class _Client:
    """One driver's side of a worker: its finished results, waiting for its next poll."""

    __slots__ = ("results", "event", "tasks", "last_seen")

    def __init__(self) -> None:
        self.results: list[tuple[int, str, Any]] = []
        self.event = asyncio.Event()
        self.tasks: set[asyncio.Future] = set()
        self.last_seen = time.monotonic()


class RolloutWorker:
    """One policy in one actor. Decorated with ``ray.remote`` when the pool starts.

    The driver hands requests over in batches (``enqueue``) and collects whatever has
    finished with a long poll (``poll``): one actor call carries many requests each way,
    so Ray's per-call cost is shared, and a fast request never waits for a slow one.
    Results are kept per ``client`` (one per driver), so drivers sharing the worker never
    see each other's. A request is one task with a timer (not a task awaiting another
    under ``wait_for``): the worker's own CPU per request counts where workers share cores.
    """

    def __init__(self, policy_spec: Any, policy_kwargs: dict[str, Any], request_timeout_s: float = 600.0) -> None:
        from prmtree.policies.base import resolve_policy

        self.policy = resolve_policy(policy_spec, policy_kwargs or None)
        self.request_timeout_s = request_timeout_s
        self.in_flight = 0
        self.done = 0
        self.errors = 0
        self.tokens = 0
        self.cached_tokens = 0
        self._clients: dict[str, _Client] = {}
        self._expired: set[asyncio.Future] = set()

    async def ready(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "node": _ray().get_runtime_context().get_node_id()}

    async def enqueue(self, items: list[tuple[int, GenerationRequest]], client: str = "") -> int:
        """Start every request of a batch; results are collected with :meth:`poll`."""
        c = self._client(client)
        loop = asyncio.get_running_loop()
        for request_id, request in items:
            task = asyncio.ensure_future(self.policy.generate(request))
            timer = loop.call_later(self.request_timeout_s, self._expire, task)
            c.tasks.add(task)
            self.in_flight += 1
            task.add_done_callback(functools.partial(self._finished, c, request_id, timer))
        return len(items)

    async def poll(self, max_wait_s: float = 1.0, client: str = "") -> list[tuple[int, str, Any]]:
        """Everything finished for ``client`` since its last poll, waiting up to ``max_wait_s``
        for one."""
        c = self._client(client)
        if not c.results:
            try:
                await asyncio.wait_for(c.event.wait(), max_wait_s)
            except asyncio.TimeoutError:
                pass
        results, c.results = c.results, []
        c.event.clear()
        c.last_seen = time.monotonic()
        self._reap(c.last_seen)
        return results

    def forget(self, client: str) -> int:
        """Drop ``client`` (its driver closed): cancel its requests, discard its results."""
        c = self._clients.pop(client, None)
        if c is None:
            return 0
        for task in list(c.tasks):
            task.cancel()
        return len(c.tasks)

    def _client(self, client: str) -> _Client:
        c = self._clients.get(client)
        if c is None:
            c = self._clients[client] = _Client()
        return c

    def _reap(self, now: float) -> None:
        for name, c in list(self._clients.items()):
            if now - c.last_seen > CLIENT_TIMEOUT_S:
                self.forget(name)

    def _expire(self, task: asyncio.Future) -> None:
        self._expired.add(task)
        task.cancel()

    def _finished(self, c: _Client, request_id: int, timer: asyncio.TimerHandle, task: asyncio.Future) -> None:
        timer.cancel()
        self.in_flight -= 1
        c.tasks.discard(task)
        result: tuple[int, str, Any]
        if task in self._expired:
            self._expired.discard(task)
            self.errors += 1
            timeout = GenerationError(f"policy timed out after {self.request_timeout_s:g} s in a worker")
            result = (request_id, "err", timeout)
        elif task.cancelled():  # its client was forgotten: nobody waits for it
            return
        elif task.exception() is not None:
            self.errors += 1
            exc = task.exception()
            if not isinstance(exc, Exception):  # SystemExit & co. from a policy: an error, not the driver's exit
                exc = RuntimeError(f"{type(exc).__name__}: {exc}")
            result = (request_id, "err", _portable(exc))
        else:
            out = task.result()
            result = (request_id, "ok", out)
            self.done += 1
            for completion in out:
                self.tokens += completion.num_tokens
                self.cached_tokens += completion.cached_tokens
        c.results.append(result)
        c.event.set()


def _portable(exc: BaseException) -> BaseException:
    """The exception itself if it pickles, else a RuntimeError carrying its text."""
    import pickle

    try:
        pickle.dumps(exc)
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


class _WorkerLost(Exception):
    """The actor holding a request died; the request may go elsewhere."""


@dataclass
class _Worker:
    index: int
    actor: Any
    in_flight: int = 0
    alive: bool = True
    down_since: float = 0.0
    deaths: int = 0
    done: int = 0
    outbox: list = field(default_factory=list)  # (request id, request) waiting to be sent
    pending: dict = field(default_factory=dict)  # request id -> future, sent and not answered
    tasks: list = field(default_factory=list)  # the poller of this worker
    send_timer: Any = None  # armed by the first request of a batch window, None when idle


@dataclass
class PoolStats:
    requests: int = 0
    resubmissions: int = 0
    spills: int = 0
    worker_deaths: int = 0
    routes: dict[str, Counter] = field(default_factory=dict)  # live problem id -> worker index counts
    trees: int = 0  # finished trees whose routing was recorded
    trees_on_one_worker: int = 0  # ... of which at least 95% of requests went to one worker
    min_affinity: float = 1.0  # the lowest share of a tree's requests on its busiest worker


def rendezvous(problem_id: str, indices: list[int]) -> list[int]:
    """Workers in order of preference for ``problem_id`` (highest random weight first).

    When a worker leaves, only the problems it was first choice for move, and each moves
    to its own second choice: the rest keep their caches.
    """
    def weight(i: int) -> int:
        return int.from_bytes(hashlib.blake2b(f"{problem_id}\x1f{i}".encode(), digest_size=8).digest(), "little")

    return sorted(indices, key=weight, reverse=True)


class RayExecutor:
    """``await submit(request)`` on a pool of RolloutWorker actors.

    ``start()`` brings up a pool named after ``run_token``; with ``attach`` (or
    ``config.attach``) set to another executor's ``run_token`` it joins that pool instead
    (several drivers, one pool) and ``close()`` leaves the workers running.
    """

    def __init__(
        self,
        policy_spec: Any,
        policy_kwargs: dict[str, Any] | None = None,
        config: ExecutorConfig | None = None,
        *,
        num_gpus_per_worker: float = 0.0,
        revive_after_s: float = 2.0,
        batch_window_s: float = 0.005,
        attach: str | None = None,
    ) -> None:
        self.policy_spec = policy_spec
        self.policy_kwargs = dict(policy_kwargs or {})
        self.config = config or ExecutorConfig(kind="ray")
        self.num_gpus_per_worker = num_gpus_per_worker
        self.revive_after_s = revive_after_s
        self.batch_window_s = batch_window_s
        self.attach = attach if attach is not None else self.config.attach
        self.policy_name = _spec_name(policy_spec, self.policy_kwargs)
        self.batches = 0
        self.polls = 0
        self._next_id = 0
        self.pool = PoolStats()
        self.workers: list[_Worker] = []
        self.run_token = uuid.uuid4().hex[:8]
        self.client = self.run_token  # this executor's name at the workers
        self._by_index: dict[int, _Worker] = {}
        self._down = 0  # workers marked dead and not yet tried again
        self._order: dict[str, list[int]] = {}  # live problem id -> worker indices by preference
        self._waiting: deque[asyncio.Future] = deque()  # requests waiting for a free slot
        self._started_ray = False

    # -- lifecycle --------------------------------------------------------------------

    def worker_count(self) -> int:
        ray = _ray()
        if self.config.workers != "auto":
            return int(self.config.workers)
        resources = ray.cluster_resources()
        if self.num_gpus_per_worker > 0:
            return max(1, int(resources.get("GPU", 0) // self.num_gpus_per_worker))
        if self.config.num_cpus_per_worker > 0:  # the most workers that leave their drivers room
            cpus, per = resources.get("CPU", 1), self.config.num_cpus_per_worker
            n = max(1, int(cpus // per))
            while n > 1 and n * per + driver_actors(self.config, n) * self.config.num_cpus_per_driver > cpus + 1e-9:
                n -= 1
            return n
        return 1

    def start(self) -> None:
        """Connect to Ray (or start a local one) and bring the workers up (or, attaching,
        find the running pool's)."""
        ray = _ray()
        self._started_ray = connect(self.config)
        if self.attach:
            self._attach(ray)
            return
        remote = ray.remote(RolloutWorker)
        count = self.worker_count()
        drivers = driver_actors(self.config, count)
        check_demand(count * self.config.num_cpus_per_worker + drivers * self.config.num_cpus_per_driver,
                     count * self.num_gpus_per_worker,
                     f"{count} rollout workers" + (f" and {drivers} drivers" if drivers else ""))
        self._set_workers([])
        for i in range(count):
            actor = remote.options(
                name=worker_name(self.run_token, i),
                num_gpus=self.num_gpus_per_worker,
                num_cpus=self.config.num_cpus_per_worker,
                max_concurrency=self.config.worker_max_concurrency,
                max_restarts=self.config.max_restarts,
                max_task_retries=0,  # resubmission is ours: it re-routes and counts
            ).remote(self.policy_spec, self.policy_kwargs, self.config.request_timeout_s)
            self.workers.append(_Worker(i, actor))
        self._set_workers(self.workers)
        try:
            ray.get([w.actor.ready.remote() for w in self.workers], timeout=START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise FatalExecutorError(f"rollout workers were not placed within {START_TIMEOUT_S:g} s: the cluster "
                                     f"has {ray.available_resources()} free") from None
        except Exception as exc:
            raise FatalExecutorError(f"rollout workers failed to start: {_cause(exc)}") from None

    def _attach(self, ray: Any) -> None:
        """Join the pool named ``self.attach``: its workers, found by name, keep their indices
        (so every driver routes a problem to the same worker)."""
        prefix = f"prmtree-worker-{self.attach}-"
        indices = sorted(int(n[len(prefix):]) for n in ray.util.list_named_actors()
                         if n.startswith(prefix) and n[len(prefix):].isdigit())
        workers = []
        for i in indices:
            try:
                workers.append(_Worker(i, ray.get_actor(worker_name(self.attach, i))))
            except ValueError:  # gone between the listing and the lookup
                continue
        if not workers:
            raise NoWorkersLeft(f"no rollout workers of pool {self.attach!r} to attach to; "
                                "finished problems are saved, run the same command again to resume")
        self._set_workers(workers)
        try:
            ray.get([w.actor.ready.remote() for w in self.workers], timeout=START_TIMEOUT_S)
        except Exception as exc:
            raise FatalExecutorError(f"rollout workers of pool {self.attach!r} did not answer: {_cause(exc)}") from None

    def _set_workers(self, workers: list[_Worker]) -> None:
        self.workers = workers
        self._by_index = {w.index: w for w in workers}
        self._down = 0
        self._order.clear()

    async def close(self) -> None:
        """Stop this executor; the workers too, unless it attached to another's pool (then
        the workers only forget this client)."""
        ray = _ray()
        for w in self.workers:
            for task in w.tasks:
                task.cancel()
            if w.send_timer is not None:
                w.send_timer.cancel()
        for w in self.workers:
            try:
                if self.attach:
                    w.actor.forget.remote(self.client)
                else:
                    ray.kill(w.actor, no_restart=True)
            except Exception:
                pass
        self._set_workers([])
        if self._started_ray:
            ray.shutdown()

    # -- routing ----------------------------------------------------------------------

    def _live(self) -> list[_Worker]:
        if not self._down:  # the common case: every worker up, nothing to scan
            return self.workers
        now = time.monotonic()
        for w in self.workers:
            restartable = w.deaths <= self.config.max_restarts
            if not w.alive and restartable and now - w.down_since >= self.revive_after_s:
                w.alive = True  # Ray restarts a dead actor up to max_restarts times: try it again
                self._down -= 1
        return [w for w in self.workers if w.alive]

    def _mark_dead(self, worker: _Worker) -> None:
        worker.alive = False
        worker.deaths += 1
        worker.down_since = time.monotonic()
        self._down += 1
        self.pool.worker_deaths += 1

    def route(self, problem_id: str) -> _Worker | None:
        """The worker for ``problem_id``: its first choice unless full; None if all are full.

        The first choice is the first live worker in the problem's rendezvous order over all
        workers (the same as rendezvous over the live ones, computed once per tree).
        """
        live = self._live()
        if not live:
            raise NoWorkersLeft(
                f"all {len(self.workers)} rollout workers are dead; finished problems are saved, "
                "run the same command again to resume"
            )
        order = self._order.get(problem_id)
        if order is None:
            order = self._order[problem_id] = rendezvous(problem_id, list(self._by_index))
        by_index = self._by_index
        first = by_index[order[0]]
        if not first.alive:
            first = next(by_index[i] for i in order if by_index[i].alive)
        if first.in_flight < self.config.queue_limit:
            return first
        least = min(live, key=lambda w: w.in_flight)
        if least.in_flight < self.config.queue_limit:
            self.pool.spills += 1
            return least
        return None

    def load(self) -> dict[int, int]:
        """Requests in flight per live worker (for the progress bar)."""
        return {w.index: w.in_flight for w in self.workers if w.alive}

    # -- submitting -------------------------------------------------------------------

    async def submit(self, request: GenerationRequest) -> list[Completion]:
        loop = asyncio.get_running_loop()
        attempts = 0
        while True:
            worker = self.route(request.problem.id)
            if worker is None:  # every worker at its queue limit: wait for a slot
                slot = loop.create_future()
                self._waiting.append(slot)
                await slot
                continue
            worker.in_flight += 1
            self.pool.requests += 1
            self.pool.routes.setdefault(request.problem.id, Counter())[worker.index] += 1
            self._next_id += 1
            request_id = self._next_id
            future = loop.create_future()
            worker.pending[request_id] = future
            self._send_later(worker, request_id, request, loop)
            try:
                # No timer here: the driver bounds the wait, and the worker bounds the policy.
                status, value = await future
            except _WorkerLost:
                if worker.alive:
                    self._mark_dead(worker)
                attempts += 1
                self.pool.resubmissions += 1
                if attempts > 3 + 2 * len(self.workers) * (1 + self.config.max_restarts):
                    raise NoWorkersLeft(
                        f"request for problem {request.problem.id!r} failed on {attempts} workers; "
                        "finished problems are saved, run the same command again to resume"
                    ) from None
                await asyncio.sleep(0.05 * attempts)
                continue
            finally:
                worker.pending.pop(request_id, None)
                worker.in_flight -= 1
                self._wake_one()
            if status == "err":
                raise value  # the policy's own exception, raised inside the worker
            worker.done += 1
            return value

    def _wake_one(self) -> None:
        """A slot was freed: let one request waiting for a slot try again (if any waits)."""
        while self._waiting:
            slot = self._waiting.popleft()
            if not slot.done():  # a waiter cancelled meanwhile (its request timed out) is skipped
                slot.set_result(None)
                return

    def _send_later(self, worker: _Worker, request_id: int, request: GenerationRequest,
                    loop: asyncio.AbstractEventLoop) -> None:
        """Queue a request; the first of a batch window arms the timer that sends the batch."""
        worker.outbox.append((request_id, request))
        if worker.send_timer is None:
            worker.send_timer = loop.call_later(self.batch_window_s, self._send, worker)
        if not worker.tasks:
            worker.tasks = [loop.create_task(self._poll(worker))]

    def _send(self, worker: _Worker) -> None:
        """Hand the worker its waiting requests: one actor call per batch window."""
        worker.send_timer = None
        items, worker.outbox = worker.outbox, []
        if not items:
            return
        self.batches += 1
        try:
            worker.actor.enqueue.remote(items, self.client)  # a batch lost in flight shows up as the poll failing
        except Exception as exc:  # the handle refused the call: the requests go elsewhere
            lost = _WorkerLost(str(exc))
            for request_id, _ in items:
                future = worker.pending.get(request_id)
                if future is not None and not future.done():
                    future.set_exception(lost)

    async def _poll(self, worker: _Worker) -> None:
        """Collect finished requests; when the actor dies, fail what it held."""
        from ray.exceptions import ActorUnavailableError, RayActorError

        while True:
            try:
                results = await worker.actor.poll.remote(1.0, self.client)
                self.polls += 1
            except (RayActorError, ActorUnavailableError) as exc:
                lost = _WorkerLost(str(exc))
                for future in list(worker.pending.values()):
                    if not future.done():
                        future.set_exception(lost)
                worker.pending.clear()
                await asyncio.sleep(self.revive_after_s)  # Ray may be restarting it
                continue
            for request_id, status, value in results:
                future = worker.pending.get(request_id)
                if future is not None and not future.done():
                    future.set_result((status, value))

    def release(self, problem_id: str) -> None:
        """A tree finished: fold its routing into the affinity statistics."""
        self._order.pop(problem_id, None)
        routes = self.pool.routes.pop(problem_id, None)
        if not routes:
            return
        share = max(routes.values()) / sum(routes.values())
        self.pool.trees += 1
        self.pool.trees_on_one_worker += share >= 0.95
        self.pool.min_affinity = min(self.pool.min_affinity, share)

    def stats(self) -> dict[str, Any]:
        s = self.pool
        return {
            "kind": "ray",
            "in_flight": self.load(),
            "workers": len(self.workers),
            "requests": s.requests,
            "resubmissions": s.resubmissions,
            "spills": s.spills,
            "batches": self.batches,
            "polls": self.polls,
            "worker_deaths": s.worker_deaths,
            "trees_on_one_worker": s.trees_on_one_worker,
            "trees": s.trees,
            "min_tree_affinity": round(s.min_affinity, 4),
            "per_worker_done": {str(w.index): w.done for w in self.workers},
        }


def _spec_name(spec: Any, kwargs: dict[str, Any]) -> str:
    """The policy's short name without building it (it is built inside the actors)."""
    if not isinstance(spec, str):
        return policy_name(spec)
    from prmtree.policies.base import check_policy

    target = check_policy(spec, kwargs)
    return str(getattr(target, "name", None) or getattr(target, "__name__", spec))


def _cause(exc: BaseException) -> BaseException:
    """The policy's own exception inside a RayTaskError, when Ray kept it."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return cause
    return exc
