"""Which worker a request goes to: a tree stays on one worker, so its prefix, and its
image encoding, stay in that worker's KV cache.

Rendezvous hashing of the problem id over the workers picks a tree's worker; the order is
computed once per tree, so routing is a dict lookup after a tree's first request. A
worker over its queue limit spills to the least-loaded one; when every worker is full
the caller waits. A worker marked dead is used again once it answers a poll sent after its
death (:meth:`Router.answered`): Ray restarts an actor in its own time (a vLLM worker reloads
its model for minutes), and a request sent to it meanwhile is lost. When every worker is
down the caller waits for one to answer, and the run stops once none is left to restart:
lost more than ``max_restarts`` times, or dead for good as Ray says (``ray.kill``).
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from prmtree.engine.errors import FatalExecutorError
from prmtree.rollout_workers.ray.images import KnownImages


class NoWorkersLeft(FatalExecutorError):
    """Every rollout worker is dead and none came back."""


@dataclass
class WorkerState:
    """The driver's bookkeeping for one rollout worker (its actor handle and what it holds)."""

    index: int
    actor: Any
    in_flight: int = 0
    alive: bool = True
    down_since: float = 0.0
    deaths: int = 0
    answered: bool = True  # it answered a poll since it was last marked dead: a new loss is a new death
    gone: str = ""  # why Ray will not restart it ("" while it may)
    done: int = 0
    outbox: list = field(default_factory=list)  # (request id, request) waiting to be sent
    pending: dict = field(default_factory=dict)  # request id -> future, sent and not answered
    tasks: list = field(default_factory=list)  # the poller of this worker
    send_timer: Any = None  # armed by the first request of a batch window, None when idle
    images: KnownImages = field(default_factory=lambda: KnownImages(512 << 20))  # hashes it was sent
    reads_paths: bool = True  # it may read images from their files (off after its first failed read)
    sharing: int = 1  # drivers polling it, this one included (as its last poll said)
    polls_sent: int = 0
    unreceived: dict = field(default_factory=dict)  # batch number -> (polls sent before it, its call, items, images)


@dataclass
class PoolStats:
    """Routing counters of one executor, for its ``stats()``."""

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


class Router:
    """The workers of one executor and the choice of one for each request."""

    def __init__(self, queue_limit: int, max_restarts: int, wait_s: float) -> None:
        self.queue_limit = queue_limit
        self.max_restarts = max_restarts
        self.wait_s = wait_s  # while every worker is down, a request looks again this often
        self.stats = PoolStats()
        self.workers: list[WorkerState] = []
        self._by_index: dict[int, WorkerState] = {}
        self._down = 0  # workers marked dead and not back (nor gone: those stay down)
        self._order: dict[str, list[int]] = {}  # live problem id -> worker indices by preference

    def set_workers(self, workers: list[WorkerState]) -> None:
        self.workers = workers
        self._by_index = {w.index: w for w in workers}
        self._down = 0
        self._order.clear()

    def restartable(self, worker: WorkerState) -> bool:
        """Whether Ray may still restart ``worker`` (it restarts an actor ``max_restarts`` times,
        and never one it says is dead for good)."""
        return not worker.gone and worker.deaths <= self.max_restarts

    def live(self) -> list[WorkerState]:
        """The workers up now."""
        if not self._down:  # the common case: every worker up, nothing to scan
            return self.workers
        return [w for w in self.workers if w.alive]

    def mark_dead(self, worker: WorkerState) -> None:
        """``worker`` failed a request, or its poll failed: down until it answers a poll sent
        after now. A death counts only if it answered since its last one (its poller and its
        requests both see one loss)."""
        if worker.alive:
            worker.alive = False
            self._down += 1
        worker.images.clear()  # Ray restarts it with an empty cache: it gets its images again
        if worker.answered:
            worker.answered = False
            worker.deaths += 1
            self.stats.worker_deaths += 1
        worker.down_since = time.monotonic()

    def answered(self, worker: WorkerState, asked_at: float) -> None:
        """``worker`` answered a poll sent at ``asked_at`` (``time.monotonic()``): if that was
        after it was last marked dead, it is up (again), restarted if it had died. A poll
        sent before carries no news: it may have been answered by the worker that died."""
        if asked_at < worker.down_since:
            return
        worker.answered = True
        if not worker.alive and not worker.gone:
            worker.alive = True
            self._down -= 1

    def mark_gone(self, worker: WorkerState, why: str) -> None:
        """Ray says ``worker`` is dead for good (``why``): it is never tried again."""
        if worker.alive:
            self.mark_dead(worker)
        worker.gone = why

    def why_gone(self, worker: WorkerState) -> str:
        """Why ``worker`` will not be restarted, in words."""
        if worker.deaths > self.max_restarts:
            times = "time" if worker.deaths == 1 else "times"
            return (f"worker {worker.index} was lost {worker.deaths} {times}, more than max_restarts = "
                    f"{self.max_restarts}")
        return f"worker {worker.index} {worker.gone}"

    def route(self, problem_id: str) -> WorkerState | None:
        """The worker for ``problem_id``: its first choice unless full; None if all are full,
        or all are down while Ray may restart one (:meth:`revive_in` says how long to wait).

        The first choice is the first live worker in the problem's rendezvous order over all
        workers (the same as rendezvous over the live ones, computed once per tree).
        """
        live = self.live()
        if not live:
            if any(self.restartable(w) for w in self.workers):
                return None
            raise NoWorkersLeft(
                f"all {len(self.workers)} rollout workers are dead and none will be restarted "
                f"({'; '.join(self.why_gone(w) for w in self.workers)}); finished problems are saved, "
                "run the same command again to resume"
            )
        order = self._order.get(problem_id)
        if order is None:
            order = self._order[problem_id] = rendezvous(problem_id, list(self._by_index))
        by_index = self._by_index
        first = by_index[order[0]]
        if not first.alive:
            first = next(by_index[i] for i in order if by_index[i].alive)
        if first.in_flight < self.queue_limit:
            return first
        least = min(live, key=lambda w: w.in_flight)
        if least.in_flight < self.queue_limit:
            self.stats.spills += 1
            return least
        return None

    def revive_in(self) -> float | None:
        """Seconds to wait before routing again when every worker is down (None while one is
        up): a worker is back once its poller hears from it."""
        if self._down < len(self.workers):
            return None
        return self.wait_s

    def sent(self, problem_id: str, worker: WorkerState) -> None:
        """A request of ``problem_id`` went to ``worker``: count it for the tree's affinity."""
        self.stats.requests += 1
        self.stats.routes.setdefault(problem_id, Counter())[worker.index] += 1

    def release(self, problem_id: str) -> None:
        """A tree finished: fold its routing into the affinity statistics."""
        self._order.pop(problem_id, None)
        routes = self.stats.routes.pop(problem_id, None)
        if not routes:
            return
        share = max(routes.values()) / sum(routes.values())
        self.stats.trees += 1
        self.stats.trees_on_one_worker += share >= 0.95
        self.stats.min_affinity = min(self.stats.min_affinity, share)

    def load(self) -> dict[int, int]:
        """Requests in flight per live worker (for the progress bar)."""
        return {w.index: w.in_flight for w in self.workers if w.alive}
