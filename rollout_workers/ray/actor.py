"""The RolloutWorker actor: one Policy in one Ray actor, serving several drivers.

The policy is built inside the actor from a serialisable spec (a registry name or
``module:Class`` plus keyword arguments). Each result travels back pickled on its own
(cloudpickle), so one the driver cannot read fails its own request, and an exception that
does not pickle is sent as a RuntimeError carrying its text.
Requests arrive with their images as hashes and the worker puts the bytes back from its
:class:`~prmtree.rollout_workers.ray.images.ImageCache`, filled with bytes the driver sent or
read from the images' files (``images.py``).
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from typing import Any

from prmtree.engine.errors import GenerationError
from prmtree.engine.records import GenerationRequest, ImageRef, missing_images, resolve_images
from prmtree.policies.base import policy_name, resolve_policy
from prmtree.rollout_workers.ray.cells import CellReader
from prmtree.rollout_workers.ray.images import ImageCache, read_all


#: A worker forgets a client (a driver) that has not polled for this long: its driver died,
#: and its results would otherwise pile up. A live driver polls at least once a second.
CLIENT_TIMEOUT_S = 300.0
#: A client that polled within this long shares the worker (a dead driver stops counting
#: well before it is forgotten).
SHARING_S = 10.0


def worker_prefix(pool: str) -> str:
    """What the Ray names of pool ``pool``'s workers start with (followed by the index)."""
    return f"prmtree-worker-{pool}-"


def worker_name(pool: str, index: int) -> str:
    """The Ray name of worker ``index`` of pool ``pool`` (drivers attach by it)."""
    return f"{worker_prefix(pool)}{index}"


class _Client:
    """One driver's side of a worker: its finished results, waiting for its next poll."""

    __slots__ = ("results", "event", "tasks", "last_seen", "received")

    def __init__(self) -> None:
        self.results: list[tuple[int, str, Any]] = []
        self.received: list[int] = []  # batches taken since the last poll (their numbers)
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

    def __init__(self, policy_spec: Any, policy_kwargs: dict[str, Any], request_timeout_s: float,
                 image_cache_bytes: int = 512 << 20) -> None:
        self.policy = resolve_policy(policy_spec, policy_kwargs or None)
        self.images = ImageCache(image_cache_bytes)
        self.cells = CellReader()  # images embedded in the input, read where they lie
        self.request_timeout_s = request_timeout_s
        self.in_flight = 0
        self.done = 0
        self.errors = 0
        self.tokens = 0
        self.cached_tokens = 0
        self._clients: dict[str, _Client] = {}
        self._expired: set[asyncio.Future] = set()

    async def ready(self) -> dict[str, Any]:
        import ray  # the real library: inside an actor it is always there

        # the policy's name as built (a property, a name its constructor sets): the rows' policy column
        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(), "policy": policy_name(self.policy)}

    async def enqueue(self, items: list[tuple[int, GenerationRequest]], client: str = "",
                      images: dict[str, bytes] | None = None, read_paths: bool = False, batch: int = 0) -> None:
        """Start every request of a batch; results are collected with :meth:`poll`, which
        also says that batch ``batch`` arrived (one Ray could not hand over never does).

        ``images`` are the bytes (by hash) of the batch's images this worker was not known
        to hold. With ``read_paths``, an image the cache lacks whose reference names a file
        or an input cell is read from there (in a thread) and kept if its sha256 matches. A request
        naming an image still lacking is answered ``miss`` (with the hashes; ``unreadable``
        where this batch failed to read one of their files) at once, and the driver sends it
        again with the bytes.
        """
        c = self._client(client)
        c.received.append(batch)
        cache = self.images
        for key, data in (images or {}).items():  # before any await: a batch sent later may name them
            cache.put(key, data)
        unreadable: set[str] = set()  # hashes whose files this batch could not use
        wanted: dict[str, ImageRef] = {}  # in the batch's order, as the driver lists them
        read: dict[str, bytes] = {}
        if read_paths:
            for _, request in items:
                for im in request.problem.images:
                    if isinstance(im, ImageRef) and (im.file or im.cell) and im.sha256 not in cache:
                        wanted[im.sha256] = im
            if wanted:  # file reads off the event loop: other requests' policies keep running
                read, failed = await asyncio.to_thread(read_all, list(wanted.values()), self.cells)
                for key, data in read.items():
                    cache.add_read(key, data)
                if failed:
                    unreadable = set(failed)
                    cache.read_failures += len(failed)
                    cache.last_read_error = next(iter(failed.values()))
                for key, data in (images or {}).items():  # a batch that ran meanwhile may have trimmed them
                    if key not in cache:
                        cache.put(key, data)
        # From here on no await: the batch's images are used and trimmed in one go.
        loop = asyncio.get_running_loop()
        for request_id, request in items:
            if request.problem.images:
                missing = missing_images(request, cache)
                if missing:  # "unreadable": the driver should stop leaving this worker files to read
                    cache.misses += 1
                    c.results.append((request_id, "unreadable" if unreadable.intersection(missing) else "miss",
                                      missing))
                    c.event.set()
                    continue
                request = resolve_images(request, cache)
            task = asyncio.ensure_future(self.policy.generate(request))
            timer = loop.call_later(self.request_timeout_s, self._expire, task)
            c.tasks.add(task)
            self.in_flight += 1
            task.add_done_callback(functools.partial(self._finished, c, request_id, timer))
        # after the batch took its images (one over the bound still served it), in the driver's order
        uses = [[im.sha256 for im in request.problem.images if isinstance(im, ImageRef)] for _, request in items]
        cache.settle(uses, [*(images or {}), *(key for key in wanted if key in read)])
        return len(items)

    def image_stats(self) -> dict[str, Any]:
        """The image cache's counters (images held, puts, repeat puts, misses, evictions) and
        the cell reader's (row groups read, files mapped)."""
        return {**self.images.stats(), **self.cells.stats()}

    async def poll(self, max_wait_s: float = 1.0, client: str = ""
                   ) -> tuple[list[tuple[int, str, Any]], int, list[int]]:
        """Everything finished for ``client`` since its last poll, waiting up to ``max_wait_s``
        for one; how many drivers share this worker now (those that polled within
        ``SHARING_S``), so that each fills its share of the worker, not all of it; and the
        numbers of the batches that arrived since the last poll."""
        c = self._client(client)
        if not c.results:
            try:
                await asyncio.wait_for(c.event.wait(), max_wait_s)
            except asyncio.TimeoutError:
                pass
        results, c.results = c.results, []
        received, c.received = c.received, []
        c.event.clear()
        now = c.last_seen = time.monotonic()
        self._reap(now)
        return results, sum(1 for other in self._clients.values() if now - other.last_seen <= SHARING_S), received

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
            result = (request_id, "err", _packed_error(timeout))
        elif task.cancelled():  # its client was forgotten: nobody waits for it
            return
        elif task.exception() is not None:
            self.errors += 1
            exc = task.exception()
            if not isinstance(exc, Exception):  # SystemExit & co. from a policy: an error, not the driver's exit
                exc = RuntimeError(f"{type(exc).__name__}: {exc}")
            result = (request_id, "err", _packed_error(exc))
        else:
            out = task.result()
            try:  # cloudpickle, as Ray would: a policy's own completion class may live in its script
                result = (request_id, "ok", _dumps(out))
            except Exception as exc:  # completions that cannot travel: this request's error alone
                self.errors += 1
                result = (request_id, "err", _packed_error(RuntimeError(
                    f"the policy's completions cannot be pickled: {type(exc).__name__}: {exc}")))
            self.done += 1
            for completion in out:
                self.tokens += completion.num_tokens
                self.cached_tokens += completion.cached_tokens
        c.results.append(result)
        c.event.set()


def _dumps(value: Any) -> bytes:
    """``value`` pickled as Ray would send it (cloudpickle: a class of the policy's own script
    goes whole); the driver reads it with plain ``pickle.loads``."""
    from ray import cloudpickle  # inside a worker Ray is always there; importing this module needs none

    return cloudpickle.dumps(value)


def _packed_error(exc: BaseException) -> tuple[bytes | None, str]:
    """A policy's exception as it travels: pickled here (None where it cannot be), with its
    text, for the driver to rebuild it or, where it cannot (a class only the workers can
    import, an ``__init__`` that takes more than its message as ``openai.APIStatusError``'s
    does), to raise a RuntimeError with that text. Each result travels pickled on its own,
    so that one the driver cannot read fails its own request, not the whole poll."""
    text = f"{type(exc).__name__}: {exc}"
    try:
        return _dumps(exc), text
    except Exception:
        return None, text
