"""The Ray executor: a pool of RolloutWorker actors fed by one driver.

Each worker is an async actor hosting one Policy, built inside the actor from a
serialisable spec (a registry name or ``module:Class`` plus keyword arguments), with
many requests in flight. Routing keeps a tree on one worker (rendezvous hashing of the
problem id over live workers) so its prefix, and its image encoding, stay in that
worker's KV cache; a worker over its queue limit spills to the least-loaded one, and
when every worker is full the driver waits (backpressure). A worker that dies has its
requests resubmitted elsewhere (counted); Ray restarts it (``max_restarts``). With no
worker left the executor raises :class:`NoWorkersLeft`, the run stops with everything
finished flushed, and a resume completes it.

Ray is imported only when this executor is built.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from prmtree.engine.config import ExecutorConfig
from prmtree.policies.base import Completion, GenerationError, GenerationRequest, policy_name
from prmtree.rollout_workers.base import FatalExecutorError


class NoWorkersLeft(FatalExecutorError):
    """Every rollout worker is dead and none came back."""


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - ray is a core dependency
        raise FatalExecutorError(f"the ray executor needs ray ({exc}); install with: pip install ray") from None
    return ray


class RolloutWorker:
    """One policy in one actor. Decorated with ``ray.remote`` when the pool starts.

    The driver hands requests over in batches (``enqueue``) and collects whatever has
    finished with a long poll (``poll``): one actor call carries many requests each way,
    so Ray's per-call cost is shared, and a fast request never waits for a slow one.
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
        self._results: list[tuple[int, str, Any]] = []
        self._finished: asyncio.Event | None = None
        self._tasks: set[asyncio.Task] = set()

    async def ready(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "node": _ray().get_runtime_context().get_node_id()}

    async def enqueue(self, items: list[tuple[int, GenerationRequest]]) -> int:
        """Start every request of a batch; results are collected with :meth:`poll`."""
        for request_id, request in items:
            task = asyncio.ensure_future(self._run(request_id, request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(items)

    async def poll(self, max_wait_s: float = 1.0) -> list[tuple[int, str, Any]]:
        """Everything finished since the last poll, waiting up to ``max_wait_s`` for one."""
        event = self._event()
        if not self._results:
            try:
                await asyncio.wait_for(event.wait(), max_wait_s)
            except asyncio.TimeoutError:
                pass
        results, self._results = self._results, []
        event.clear()
        return results

    def _event(self) -> asyncio.Event:
        if self._finished is None:
            self._finished = asyncio.Event()
        return self._finished

    async def _run(self, request_id: int, request: GenerationRequest) -> None:
        self.in_flight += 1
        try:
            out = await asyncio.wait_for(self.policy.generate(request), self.request_timeout_s)
            result: tuple[int, str, Any] = (request_id, "ok", out)
            self.done += 1
            for c in out:
                self.tokens += c.num_tokens
                self.cached_tokens += c.cached_tokens
        except asyncio.TimeoutError:
            self.errors += 1
            timeout = GenerationError(f"policy timed out after {self.request_timeout_s:g} s in a worker")
            result = (request_id, "err", timeout)
        except Exception as exc:
            self.errors += 1
            result = (request_id, "err", _portable(exc))
        finally:
            self.in_flight -= 1
        self._results.append(result)
        self._event().set()


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
    tasks: list = field(default_factory=list)  # the sender and poller of this worker


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
    """``await submit(request)`` on a pool of RolloutWorker actors."""

    def __init__(
        self,
        policy_spec: Any,
        policy_kwargs: dict[str, Any] | None = None,
        config: ExecutorConfig | None = None,
        *,
        num_gpus_per_worker: float = 0.0,
        revive_after_s: float = 2.0,
        batch_window_s: float = 0.005,
    ) -> None:
        self.policy_spec = policy_spec
        self.policy_kwargs = dict(policy_kwargs or {})
        self.config = config or ExecutorConfig(kind="ray")
        self.num_gpus_per_worker = num_gpus_per_worker
        self.revive_after_s = revive_after_s
        self.batch_window_s = batch_window_s
        self.policy_name = _spec_name(policy_spec, self.policy_kwargs)
        self.batches = 0
        self._next_id = 0
        self.pool = PoolStats()
        self.workers: list[_Worker] = []
        self.run_token = uuid.uuid4().hex[:8]
        self._freed: asyncio.Condition | None = None
        self._started_ray = False

    # -- lifecycle --------------------------------------------------------------------

    def worker_count(self) -> int:
        ray = _ray()
        if self.config.workers != "auto":
            return int(self.config.workers)
        resources = ray.cluster_resources()
        if self.num_gpus_per_worker > 0:
            return max(1, int(resources.get("GPU", 0) // self.num_gpus_per_worker))
        if self.config.num_cpus_per_worker > 0:
            return max(1, int(resources.get("CPU", 1) // self.config.num_cpus_per_worker))
        return 1

    def start(self) -> None:
        """Connect to Ray (or start a local one) and bring the workers up."""
        ray = _ray()
        if not ray.is_initialized():
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            ray.init(address=self.config.address, include_dashboard=False, log_to_driver=True)
            self._started_ray = True
        remote = ray.remote(RolloutWorker)
        count = self.worker_count()
        self.workers = []
        for i in range(count):
            actor = remote.options(
                name=f"prmtree-worker-{self.run_token}-{i}",
                num_gpus=self.num_gpus_per_worker,
                num_cpus=self.config.num_cpus_per_worker,
                max_concurrency=self.config.worker_max_concurrency,
                max_restarts=self.config.max_restarts,
                max_task_retries=0,  # resubmission is ours: it re-routes and counts
            ).remote(self.policy_spec, self.policy_kwargs, self.config.request_timeout_s)
            self.workers.append(_Worker(i, actor))
        try:
            ray.get([w.actor.ready.remote() for w in self.workers], timeout=600)
        except Exception as exc:
            raise FatalExecutorError(f"rollout workers failed to start: {_cause(exc)}") from None

    async def close(self) -> None:
        ray = _ray()
        for w in self.workers:
            for task in w.tasks:
                task.cancel()
        for w in self.workers:
            try:
                ray.kill(w.actor, no_restart=True)
            except Exception:
                pass
        self.workers = []
        if self._started_ray:
            ray.shutdown()

    # -- routing ----------------------------------------------------------------------

    def _live(self) -> list[_Worker]:
        now = time.monotonic()
        for w in self.workers:
            restartable = w.deaths <= self.config.max_restarts
            if not w.alive and restartable and now - w.down_since >= self.revive_after_s:
                w.alive = True  # Ray restarts a dead actor up to max_restarts times: try it again
        return [w for w in self.workers if w.alive]

    def route(self, problem_id: str) -> _Worker | None:
        """The worker for ``problem_id``: its first choice unless full; None if all are full."""
        live = self._live()
        if not live:
            raise NoWorkersLeft(
                f"all {len(self.workers)} rollout workers are dead; finished problems are saved, "
                "run the same command again to resume"
            )
        by_index = {w.index: w for w in live}
        first = by_index[rendezvous(problem_id, list(by_index))[0]]
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
        if self._freed is None:
            self._freed = asyncio.Condition()
        attempts = 0
        while True:
            worker = self.route(request.problem.id)
            if worker is None:  # every worker at its queue limit: wait for a slot
                async with self._freed:
                    await self._freed.wait()
                continue
            worker.in_flight += 1
            self.pool.requests += 1
            self.pool.routes.setdefault(request.problem.id, Counter())[worker.index] += 1
            self._next_id += 1
            request_id = self._next_id
            future = asyncio.get_running_loop().create_future()
            self._start(worker)
            worker.pending[request_id] = future
            worker.outbox.append((request_id, request))
            try:
                # No timer here: the driver bounds the wait, and the worker bounds the policy.
                status, value = await future
            except _WorkerLost:
                if worker.alive:
                    worker.alive = False
                    worker.deaths += 1
                    worker.down_since = time.monotonic()
                    self.pool.worker_deaths += 1
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
                async with self._freed:
                    self._freed.notify()
            if status == "err":
                raise value  # the policy's own exception, raised inside the worker
            worker.done += 1
            return value

    def _start(self, worker: _Worker) -> None:
        if not worker.tasks:
            loop = asyncio.get_running_loop()
            worker.tasks = [loop.create_task(self._send(worker)), loop.create_task(self._poll(worker))]

    async def _send(self, worker: _Worker) -> None:
        """Hand the worker its waiting requests, one actor call per batch window."""
        while True:
            await asyncio.sleep(self.batch_window_s)
            if not worker.outbox:
                continue
            items, worker.outbox = worker.outbox, []
            self.batches += 1
            worker.actor.enqueue.remote(items)  # a lost batch shows up as the poll failing

    async def _poll(self, worker: _Worker) -> None:
        """Collect finished requests; when the actor dies, fail what it held."""
        from ray.exceptions import ActorUnavailableError, RayActorError

        while True:
            try:
                results = await worker.actor.poll.remote()
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
