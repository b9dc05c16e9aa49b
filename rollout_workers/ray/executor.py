"""RayExecutor: ``await submit(request)`` on a pool of RolloutWorker actors.

Requests leave in batches, one actor call per worker per batch window, on a timer armed
by the first request of a window (no task wakes up while idle); results come back by a
long poll per worker. A worker that dies has its requests resubmitted elsewhere
(counted) while Ray restarts it (``max_restarts``); with every worker down they wait for
a restart, which a stop signal ends (their trees are redone by the next run), as does Ray
saying a worker is dead for good (``ActorDiedError``). A freed slot wakes one waiting
request only when someone waits. A batch that cannot be sent fails its requests, never
leaves them waiting. Images go once per worker (``images.py``): a batch carries its
requests' images as hashes, plus the bytes of those the worker lacks, unless the worker
can read them from their files or input cells itself (``worker_reads_images``).
"""

from __future__ import annotations

import asyncio
import math
import pickle
import re
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from prmtree.engine.config import ExecutorConfig
from prmtree.engine.contracts import CANCELLED_BY_PRMTREE
from prmtree.engine.errors import FatalExecutorError, GenerationError, PolicyConfigError, StopSignal
from prmtree.engine.records import Completion, GenerationRequest, Problem, ProblemImage, refer_images
from prmtree.policies.base import check_policy, policy_name, worker_gpus
from prmtree.rollout_workers import loop_watchdog
from prmtree.rollout_workers.ray.actor import RolloutWorker, worker_name, worker_prefix
from prmtree.rollout_workers.ray.images import KnownImages
from prmtree.rollout_workers.ray.routing import NoWorkersLeft, Router, WorkerState
from prmtree.rollout_workers.ray.sizing import (
    START_TIMEOUT_S,
    check_demand,
    connect,
    driver_actors,
    ray_module,
    worker_count,
)


@dataclass(frozen=True)
class PoolHandle:
    """What a driver needs to attach to a running pool: its ``name`` (set it as
    ``ExecutorConfig.attach``) and how many ``workers`` it has."""

    name: str
    workers: int


class _WorkerLost(Exception):
    """The actor holding a request died; the request may go elsewhere."""


class RayExecutor:
    """``await submit(request)`` on a pool of RolloutWorker actors.

    ``start()`` brings up a pool named after ``run_token``; with ``attach`` (or
    ``config.attach``) set to another pool's name (its :meth:`handle`'s ``name``) it joins
    that pool instead (several drivers, one pool) and ``close()`` leaves the workers running.
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
        self.router = Router(self.config.queue_limit, self.config.max_restarts, revive_after_s)
        self.run_token = uuid.uuid4().hex[:8]
        self.client = self.run_token  # this executor's name at the workers
        self._waiting: deque[asyncio.Future] = deque()  # requests waiting for a free slot
        self._started_ray = False
        self.image_cache_bytes = int(self.config.image_cache_mb * (1 << 20))
        # live problem id -> (its Problem, the same with images as hashes, its images by hash)
        self._refs: dict[str, tuple[Problem, Problem, dict[str, ProblemImage]]] = {}
        self.images_sent = 0  # image payloads sent to workers (each image once per worker, ideally)
        self.image_bytes_sent = 0
        self.image_resends = 0  # requests sent again with the bytes after a worker's miss
        self.reads_images = self.config.worker_reads_images == "auto"
        self.image_path_sends = 0  # images left to a worker to read from their files (not sent)
        self.image_path_failures = 0  # ... whose file the worker could not use (then sent as bytes)
        self.image_path_misses = 0  # workers that failed a path read: bytes to them from then on
        self._made_at = time.monotonic()  # a stop signal taken after this is this run's

    @classmethod
    def from_config(cls, config: ExecutorConfig, policy: Any, policy_args: dict[str, Any] | None) -> RayExecutor:
        """A started pool for ``policy``: each worker takes ``num_gpus_per_worker`` GPUs
        (default: what the policy asks for, e.g. vLLM's tensor-parallel size)."""
        gpus = config.num_gpus_per_worker
        executor = cls(policy, policy_args, config,
                       num_gpus_per_worker=worker_gpus(policy, policy_args) if gpus is None else gpus)
        try:
            executor.start()
        except BaseException:  # a refused policy, a stop signal: the workers made so far go too
            executor.abandon()
            raise
        return executor

    @property
    def workers(self) -> list[WorkerState]:
        """The pool's workers as this executor tracks them."""
        return self.router.workers

    def capacity(self) -> int | None:
        """Sequences of the pool this driver may fill, for its sizing: each live worker's
        policy's declared ``max_num_seqs`` / ``batch_capacity`` argument, shared with the
        other drivers polling that worker (several drivers, one pool: each fills its share,
        not the whole pool N times over), summed; None where the policy's arguments do not
        say (the driver then watches latency)."""
        per_worker = self.policy_kwargs.get("max_num_seqs") or self.policy_kwargs.get("batch_capacity")
        if not isinstance(per_worker, int) or per_worker < 1:
            return None
        live = [w for w in self.workers if getattr(w, "alive", True)]
        if not live:
            return per_worker
        return sum(math.ceil(per_worker / max(1, getattr(w, "sharing", 1))) for w in live)

    def handle(self) -> PoolHandle:
        """The pool this executor serves from, for drivers to attach to."""
        return PoolHandle(name=self.attach or self.run_token, workers=len(self.workers))

    # -- lifecycle --------------------------------------------------------------------

    def worker_count(self) -> int:
        """The workers ``start()`` brings up (``--workers auto``: what the cluster holds)."""
        return worker_count(self.config, self.num_gpus_per_worker)

    def start(self) -> None:
        """Connect to Ray (or start a local one) and bring the workers up (or, attaching,
        find the running pool's)."""
        ray = ray_module()
        connection = connect(self.config)
        self._started_ray = connection.started
        with stop_signals_noted() as stopped:
            if self.attach:
                self._attach(ray, stopped)
            else:
                self._start_workers(ray, connection.local, stopped)

    def _start_workers(self, ray: Any, local: bool, stopped: list[int]) -> None:
        remote = ray.remote(RolloutWorker)
        count = self.worker_count()
        drivers = driver_actors(self.config, count)
        check_demand(count * self.config.num_cpus_per_worker + drivers * self.config.num_cpus_per_driver,
                     count * self.num_gpus_per_worker,
                     f"{count} rollout workers" + (f" and {drivers} drivers" if drivers else ""),
                     local=local)
        workers: list[WorkerState] = []
        self.router.set_workers(workers)  # filled as the actors are created: close() kills those made
        for i in range(count):
            actor = remote.options(
                name=worker_name(self.run_token, i),
                num_gpus=self.num_gpus_per_worker,
                num_cpus=self.config.num_cpus_per_worker,
                max_concurrency=self.config.worker_max_concurrency,
                max_restarts=self.config.max_restarts,
                max_task_retries=0,  # resubmission is ours: it re-routes and counts
            ).remote(self.policy_spec, self.policy_kwargs, self.config.request_timeout_s, self.image_cache_bytes)
            workers.append(WorkerState(i, actor, images=KnownImages(self.image_cache_bytes)))
        self.router.set_workers(workers)
        try:
            self._named(ray, wait_ready(ray, [w.actor.ready.remote() for w in self.workers], START_TIMEOUT_S, stopped))
        except ray.exceptions.GetTimeoutError:
            raise FatalExecutorError(f"rollout workers were not placed within {START_TIMEOUT_S:g} s: the cluster "
                                     f"has {ray.available_resources()} free") from None
        except ray.exceptions.ActorDiedError as exc:
            refused = _refused_policy(exc)
            if refused is not None:  # the policy cannot be built there (no CUDA, a missing file): a setting
                raise PolicyConfigError(f"{refused} (in a Ray rollout worker)") from None
            raise FatalExecutorError(f"rollout workers failed to start: {_last_line(exc)}") from None
        except Exception as exc:
            raise FatalExecutorError(f"rollout workers failed to start: {_cause(exc)}") from None

    def _attach(self, ray: Any, stopped: list[int]) -> None:
        """Join the pool named ``self.attach``: its workers, found by name, keep their indices
        (so every driver routes a problem to the same worker)."""
        prefix = worker_prefix(self.attach)
        indices = sorted(int(n[len(prefix):]) for n in ray.util.list_named_actors()
                         if n.startswith(prefix) and n[len(prefix):].isdigit())
        workers = []
        for i in indices:
            try:
                workers.append(WorkerState(i, ray.get_actor(worker_name(self.attach, i)),
                                           images=KnownImages(self.image_cache_bytes),
                                           sharing=self.config.pool_drivers))  # till its polls say
            except ValueError:  # gone between the listing and the lookup
                continue
        if not workers:
            raise NoWorkersLeft(f"no rollout workers of pool {self.attach!r} to attach to; "
                                "finished problems are saved, run the same command again to resume")
        self.router.set_workers(workers)
        try:
            self._named(ray, wait_ready(ray, [w.actor.ready.remote() for w in self.workers], START_TIMEOUT_S, stopped))
        except Exception as exc:
            raise FatalExecutorError(f"rollout workers of pool {self.attach!r} did not answer: {_cause(exc)}") from None

    def _named(self, ray: Any, ready: list[Any]) -> None:
        """The policy's name as the workers built it (a property, or one its constructor
        sets, reads as inline): what the unbuilt spec said until now."""
        name = ray.get(ready[0]).get("policy") if ready else None
        if isinstance(name, str) and name:
            self.policy_name = name

    def abandon(self) -> None:
        """After a failed start: let the workers go (see :meth:`close`), so a caller that goes
        on holds no actor."""
        self._let_workers_go()

    async def close(self) -> None:
        """Stop this executor; the workers too, unless it attached to another's pool (then
        the workers only forget this client)."""
        for w in self.workers:
            for task in w.tasks:
                task.cancel()
            if w.send_timer is not None:
                w.send_timer.cancel()
        self._let_workers_go()

    def _let_workers_go(self) -> None:
        """Kill the workers this executor made (another pool's only forget this client), and
        shut down the Ray it started."""
        ray = ray_module()
        for w in self.workers:
            try:
                if self.attach:
                    w.actor.forget.remote(self.client)
                else:
                    ray.kill(w.actor, no_restart=True)
            except Exception:
                pass
        self.router.set_workers([])
        if self._started_ray:
            ray.shutdown()

    # -- submitting -------------------------------------------------------------------

    def load(self) -> dict[int, int]:
        """Requests in flight per live worker (for the progress bar)."""
        return self.router.load()

    async def submit(self, request: GenerationRequest) -> list[Completion]:
        loop = asyncio.get_running_loop()
        router = self.router
        attempts = misses = 0
        while True:
            worker = router.route(request.problem.id)
            if worker is None:
                pause = router.revive_in()
                if pause is not None:  # every worker down, and Ray may restart one: try it again then
                    if self._stop_taken():  # the tree cannot go on before a restart: dropped as a second stop does
                        asyncio.current_task().cancel(CANCELLED_BY_PRMTREE)
                    await asyncio.sleep(min(pause, STOP_CHECK_S))
                    continue
                # every worker at its queue limit: wait for a slot
                slot = loop.create_future()
                self._waiting.append(slot)
                await slot
                continue
            worker.in_flight += 1
            router.sent(request.problem.id, worker)
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
                    router.mark_dead(worker)
                attempts += 1
                router.stats.resubmissions += 1
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
            if status in ("miss", "unreadable"):  # the worker lacks images it was believed to hold: send them again
                by_path = [key for key in value if worker.images.discard(key)]
                if by_path and status == "unreadable":  # it could not use their files: bytes to it from now on
                    self.image_path_failures += len(by_path)
                    if worker.reads_paths:
                        worker.reads_paths = False
                        self.image_path_misses += 1
                misses += 1
                self.image_resends += 1
                if misses > 3:  # each resend carries the bytes, so this is a worker restarting over and over
                    raise GenerationError(f"worker {worker.index} lost the images of problem "
                                          f"{request.problem.id!r} {misses} times", retryable=True)
                continue
            if status == "err":
                raise value  # the policy's own exception, raised inside the worker
            worker.done += 1
            return value

    def _stop_taken(self) -> bool:
        """Whether the run took a stop signal since this executor was made. A first stop lets
        the trees in flight finish, which a tree waiting for a worker's restart cannot do
        soon; the run's handler records each stop it takes (``loop_watchdog.signal_taken``),
        and that record is the executor's only word of it."""
        return loop_watchdog.stop_taken_since(self._made_at)

    def _wake_one(self) -> None:
        """A slot was freed: let one request waiting for a slot try again (if any waits)."""
        while self._waiting:
            slot = self._waiting.popleft()
            if not slot.done():  # a waiter cancelled meanwhile (its request timed out) is skipped
                slot.set_result(None)
                return

    def _send_later(self, worker: WorkerState, request_id: int, request: GenerationRequest,
                    loop: asyncio.AbstractEventLoop) -> None:
        """Queue a request; the first of a batch window arms the timer that sends the batch."""
        worker.outbox.append((request_id, request))
        if worker.send_timer is None:
            worker.send_timer = loop.call_later(self.batch_window_s, self._send, worker)
        if not worker.tasks or worker.tasks[0].done():  # its poller ends only once the worker is gone
            worker.tasks = [loop.create_task(self._poll(worker))]

    def _send(self, worker: WorkerState) -> None:
        """Hand the worker its waiting requests: one actor call per batch window."""
        worker.send_timer = None
        items, worker.outbox = worker.outbox, []
        if items:
            self._send_batch(worker, items)

    def _send_batch(self, worker: WorkerState, items: list[tuple[int, GenerationRequest]]) -> None:
        """One actor call with ``items``. It runs in a loop callback, where an exception is
        logged and lost: the batch's requests would wait forever. So a batch that cannot be
        prepared or pickled goes again one request at a time, and only the request at fault
        fails, with the error. Only Ray's own errors say the worker is lost: pickle raises
        whatever the object's ``__reduce__`` does (TypeError, PicklingError, RuntimeError
        for a multiprocessing lock), and taking that for a death ended the run."""
        from ray.exceptions import RayActorError, RaySystemError

        read_paths = self.reads_images and worker.reads_paths
        try:
            refs, images = self._with_image_refs(worker, items)
        except Exception as exc:  # a request the executor cannot carry (a problem that skipped validation)
            self._fail_apart(worker, items, exc, f"{type(exc).__name__}: {exc}")
            return
        try:  # a batch lost with the worker shows up as the poll failing; one it never took, in _poll
            sent = worker.actor.enqueue.remote(refs, self.client, images, read_paths, self.batches + 1)
        except (RayActorError, RaySystemError) as exc:  # the handle refused the call: the requests go elsewhere
            self._fail(worker, items, _WorkerLost(str(exc)))
        except Exception as exc:  # Ray could not pickle a request: the worker is fine
            self._unsent(worker, images)
            self._fail_apart(worker, items, exc, "Ray cannot pickle it (an object in problem.meta that pickle "
                                                 f"refuses?): {_root_cause(exc)}")
        else:
            self.batches += 1
            worker.unreceived[self.batches] = (worker.polls_sent, sent, items, images)

    def _check_received(self, worker: WorkerState, received: list[int]) -> None:
        """Forget the batches the worker says arrived. One still missing after two polls sent
        after it (Ray runs one caller's calls to an actor in order, give or take an async
        actor's reordering) never will: Ray could not hand it over (the worker could not
        unpickle an argument: an object in ``problem.meta`` whose class rebuilds differently
        there), and its requests would wait out their time limit."""
        unreceived = worker.unreceived
        for number in received:
            unreceived.pop(number, None)
        if not unreceived or next(iter(unreceived.values()))[0] >= worker.polls_sent - 2:
            return
        for number, (sent_before, call, items, images) in list(unreceived.items()):
            if sent_before >= worker.polls_sent - 2:
                break
            del unreceived[number]
            asyncio.get_running_loop().create_task(self._never_received(worker, call, items, images))

    async def _never_received(self, worker: WorkerState, call: Any, items: list[tuple[int, GenerationRequest]],
                              images: dict[str, bytes] | None) -> None:
        """A batch the worker never took: its requests go again apart, so that only the one at
        fault fails, with the worker's reason (the call's own error)."""
        try:
            await call
            return  # it did take it (its receipt went with a poll answer that was lost): nothing to redo
        except Exception as exc:
            why = f"the worker cannot take it (an object in problem.meta that does not unpickle?): {_last_line(exc)}"
            error: Exception = exc
        if not worker.alive:  # lost with the worker: its poller failed them, and they went elsewhere
            return
        self._unsent(worker, images)
        self._fail_apart(worker, items, error, why)

    def _unsent(self, worker: WorkerState, images: dict[str, bytes] | None) -> None:
        """A batch's ``images`` did not go after all: the worker does not hold them, and
        they were not sent."""
        for key, data in (images or {}).items():
            worker.images.discard(key)
            self.images_sent -= 1
            self.image_bytes_sent -= len(data)

    def _fail_apart(self, worker: WorkerState, items: list[tuple[int, GenerationRequest]], error: Exception,
                    why: str) -> None:
        """A batch that could not go: a lone request fails (not retryable: it would fail the
        same way again); a batch goes again request by request, so that requests batched
        with the bad one do not fail with it."""
        if len(items) > 1:
            for item in items:
                self._send_batch(worker, [item])
            return
        problem_id = items[0][1].problem.id
        failure = GenerationError(f"the ray executor cannot send a request of problem {problem_id!r}: {why}",
                                  retryable=False)
        failure.__cause__ = error
        self._fail(worker, items, failure)

    @staticmethod
    def _fail(worker: WorkerState, items: list[tuple[int, GenerationRequest]], error: BaseException) -> None:
        """Each of ``items``'s requests still waiting gets ``error``."""
        for request_id, _ in items:
            future = worker.pending.get(request_id)
            if future is not None and not future.done():
                future.set_exception(error)

    def _with_image_refs(self, worker: WorkerState, items: list[tuple[int, GenerationRequest]]
                         ) -> tuple[list[tuple[int, GenerationRequest]], dict[str, bytes] | None]:
        """The batch as it travels: each request's images as hashes, and the bytes of the
        images ``worker`` is not known to hold (recorded as held from now on). An image read
        from a file or embedded in an input cell goes without its bytes to a worker that reads
        paths: its reference names the file or cell, and the worker reads it."""
        known = worker.images
        images: dict[str, bytes] | None = None
        by_path: dict[str, int] | None = None  # hash -> size, left to the worker to read
        read_paths = self.reads_images and worker.reads_paths
        out = []
        for request_id, request in items:
            problem = request.problem
            if not problem.images:
                out.append((request_id, request))
                continue
            cached = self._refs.get(problem.id)
            if cached is None or cached[0] is not problem:
                ref, by_hash = refer_images(request)
                cached = self._refs[problem.id] = (problem, ref.problem, by_hash)
            else:
                ref = replace(request, problem=cached[1])
            for key, image in cached[2].items():
                if known.has(key) or (images is not None and key in images) or (
                        by_path is not None and key in by_path):
                    continue
                if read_paths and (image.file or image.cell):
                    if by_path is None:
                        by_path = {}
                    by_path[key] = len(image)
                    continue
                if images is None:
                    images = {}
                images[key] = image.data
            out.append((request_id, ref))
        if images:
            for key, data in images.items():
                known.add(key, len(data))
                self.images_sent += 1
                self.image_bytes_sent += len(data)
        if by_path:
            for key, size in by_path.items():
                known.add(key, size, by_path=True)
            self.image_path_sends += len(by_path)
        if images or by_path:
            known.trim()
        return out, images

    async def _poll(self, worker: WorkerState) -> None:
        """Collect finished requests; when the actor dies, fail what it held. Ray raises
        ``ActorUnavailableError`` while it restarts an actor (every call, for as long as the
        restart takes), ``ActorDiedError`` once it never will (``ray.kill``, its restarts
        used up): then the worker is never tried again, and polling it ends. A dead worker
        is back when a poll sent after its death is answered: this poller is what revives it."""
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        router = self.router
        while True:
            asked_at = time.monotonic()
            worker.polls_sent += 1
            try:
                results, worker.sharing, received = await worker.actor.poll.remote(1.0, self.client)
                self.polls += 1
            except asyncio.CancelledError:
                raise
            except (RayActorError, ActorUnavailableError) as exc:
                if isinstance(exc, ActorDiedError):  # before its requests fail: they must not wait for it
                    router.mark_gone(worker, _why_dead(exc, self.config.max_restarts))
                else:  # down until it answers again: nothing is sent to it while Ray restarts it
                    router.mark_dead(worker)
                lost = _WorkerLost(str(exc))
                worker.unreceived.clear()  # their requests fail here, and go elsewhere
                for future in list(worker.pending.values()):
                    if not future.done():
                        future.set_exception(lost)
                worker.pending.clear()
                if worker.gone:
                    return
                await asyncio.sleep(self.revive_after_s)  # Ray may be restarting it
                continue
            except Exception as exc:  # the answer could not be read here, or Ray could not ask (a lost connection)
                self._results_lost(worker, exc)
                await asyncio.sleep(self.revive_after_s)  # not a spin, if it fails at once again
                continue
            if not worker.alive or not worker.answered:
                router.answered(worker, asked_at)  # back (restarted) if asked after its death
            if worker.unreceived:
                self._check_received(worker, received)
            for request_id, status, value in results:
                future = worker.pending.get(request_id)
                if future is None or future.done():
                    continue
                try:
                    future.set_result((status, _unpacked(status, value)))
                except Exception as exc:  # this request's completions cannot be read here: its failure alone
                    future.set_exception(GenerationError(
                        f"worker {worker.index}'s answer cannot be read by the driver: {_root_cause(exc)}",
                        retryable=True))

    @staticmethod
    def _results_lost(worker: WorkerState, error: Exception) -> None:
        """A poll failed for a reason other than the worker's death (each result travels
        pickled on its own, so not one result's): whichever results it carried are lost, and
        the requests waiting on the worker are failed (retryable: the driver sends them
        again, as the same requests) rather than left to wait out their time limit. The
        worker is fine and keeps being polled."""
        lost = GenerationError(f"the answers of worker {worker.index} could not be read: {_root_cause(error)}",
                               retryable=True)
        for future in list(worker.pending.values()):
            if not future.done():
                future.set_exception(lost)

    def release(self, problem_id: str) -> None:
        """A tree finished: fold its routing into the affinity statistics."""
        self.router.release(problem_id)
        self._refs.pop(problem_id, None)

    def stats(self) -> dict[str, Any]:
        s = self.router.stats
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
            "images_sent": self.images_sent,
            "image_bytes_sent": self.image_bytes_sent,
            "image_resends": self.image_resends,
            "images_read_by_workers": self.image_path_sends - self.image_path_failures,
            "image_path_failures": self.image_path_failures,
            "image_path_misses": self.image_path_misses,
            "trees_on_one_worker": s.trees_on_one_worker,
            "trees": s.trees,
            "min_tree_affinity": round(s.min_affinity, 4),
            "per_worker_done": {str(w.index): w.done for w in self.workers},
        }


def _spec_name(spec: Any, kwargs: dict[str, Any]) -> str:
    """The policy's short name without building it (it is built inside the actors)."""
    if not isinstance(spec, str):
        return policy_name(spec)
    target = check_policy(spec, kwargs)
    return str(getattr(target, "name", None) or getattr(target, "__name__", spec))


#: How often a wait for the workers gives Python a chance to run its signal handlers.
READY_POLL_S = 0.2
#: How often a request waiting for a worker's restart looks for a stop signal.
STOP_CHECK_S = 0.5
_REFUSED = re.compile(r"PolicyConfigError: (.+)$")


def wait_ready(ray: Any, refs: list[Any], timeout_s: float, stopped: list[int] | None = None) -> list[Any]:
    """``ray.get(refs, timeout=timeout_s)`` in short waits: one blocking ``ray.get`` holds
    the main thread in Ray's own code, so a Ctrl-C waited for the whole start (a model's
    load, minutes of waiting for a cluster to grow). Raises the first worker's error,
    ``GetTimeoutError``, or :class:`StopSignal` once ``stopped`` holds a signal. Returns
    ``refs``, all ready."""
    deadline = time.monotonic() + timeout_s
    pending = list(refs)
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ray.exceptions.GetTimeoutError(f"{len(pending)} of {len(refs)} not ready after {timeout_s:g} s")
        ready, pending = ray.wait(pending, num_returns=len(pending), timeout=min(READY_POLL_S, left))
        ray.get(ready)
        if stopped:  # noted before or during this wait, the last one included
            raise StopSignal(stopped[0])
    return refs


@contextmanager
def stop_signals_noted() -> Iterator[list[int]]:
    """While the workers start, a SIGTERM or SIGINT is noted in the list yielded, and
    :func:`wait_ready` ends the start with :class:`StopSignal` (a ``KeyboardInterrupt``:
    exit 143 or 130) at its next turn. Raised in the handler, the interrupt was lost inside
    Ray's wait (a Ctrl-C ended as "not placed within 600 s", or not at all), and Ray's own
    SIGTERM handler printed a C++ stack dump and exited 1. The run's graceful stop takes
    over once the run starts."""
    noted: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield noted
        return
    stops = [sig for sig in (signal.SIGTERM, signal.SIGINT) if signal.getsignal(sig) is not signal.SIG_IGN]
    previous = {sig: signal.signal(sig, lambda signum, frame: noted.append(signum)) for sig in stops}
    try:
        yield noted
    finally:
        for sig, handler in previous.items():  # (one installed from C reads None: the default it replaced)
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _refused_policy(exc: BaseException) -> str | None:
    """The one line of a ``PolicyConfigError`` a worker's constructor raised (Ray keeps only
    its traceback, as text), or None."""
    if not getattr(exc, "actor_init_failed", False):
        return None
    for line in reversed(str(exc).splitlines()):
        found = _REFUSED.search(line.strip())
        if found:
            return found.group(1)
    return None


def _unpacked(status: str, value: Any) -> Any:
    """A result's value as the worker packed it: completions pickled, an error pickled with
    its text (a RuntimeError with the text where it cannot be rebuilt here)."""
    if status == "ok":
        return pickle.loads(value)
    if status == "err":
        blob, text = value
        try:
            return pickle.loads(blob) if blob is not None else RuntimeError(text)
        except Exception:
            return RuntimeError(text)
    return value


def _why_dead(exc: BaseException, max_restarts: int) -> str:
    """Why Ray will not restart an actor, from its ``ActorDiedError`` (after "worker N"). A
    worker that died again while Ray restarted it is seen to die once here, but used two of
    Ray's restarts: Ray's own count is the one that ran out."""
    text = str(exc)
    if "killed by `ray.kill`" in text:
        return "was killed with ray.kill, so Ray will not restart it"
    because = next((line.strip() for line in text.splitlines() if "dead because" in line), _last_line(exc))
    return (f"died and Ray will not restart it ({because.split('. ')[0].rstrip('.')}; max_restarts = "
            f"{max_restarts} restarts used up, or its restart failed)")


def _root_cause(exc: BaseException) -> str:
    """The innermost exception of ``exc``'s chain, in one line: pickle's own words (Ray's
    TypeError around them repeats the whole request, and runs to dozens of lines)."""
    while (exc.__cause__ or exc.__context__) is not None:
        exc = exc.__cause__ or exc.__context__
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _last_line(exc: BaseException) -> str:
    """An actor's death in one line: the last line of Ray's message (the exception itself)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _cause(exc: BaseException) -> BaseException:
    """The policy's own exception inside a RayTaskError, when Ray kept it."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return cause
    return exc
