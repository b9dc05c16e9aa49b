"""The in-process executor: the policy runs in the driver's event loop.

For laptops, tests, and a single GPU with vLLM in-process. Concurrency is bounded so a
backend gets large batches without the driver queueing without limit.

A policy that blocks the loop (``time.sleep`` or a synchronous HTTP call inside
``async def generate``) freezes every timeout, so a hung backend would hang the run.
Each synchronous stretch of ``generate`` (the code between two of its awaits) is timed;
one longer than the request timeout stops the run with :class:`EventLoopBlocked` naming
the policy (exit 1, everything finished saved), and no request in flight calls the
policy again (each would block once more). One that never ends is ended by
:mod:`~prmtree.rollout_workers.loop_watchdog` (the process exits: 1, or 143 / 130 on a
stop signal). Shorter stretches are allowed: a policy may do some CPU work
(tokenizing, image resizing) inline.

A policy that goes on after its request is cancelled (a time limit, a stop) gets
``CANCEL_GRACE_S`` to finish (an abort sent to its server); then the request walks away
from it, so one that swallows ``CancelledError`` cannot hold its tree, or a stopping run,
forever.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import os
import queue
import threading
import time
import types
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from prmtree.engine.config import ExecutorConfig
from prmtree.engine.contracts import CANCELLED_BY_PRMTREE, Policy, cancel_requested, declared_capacity
from prmtree.engine.errors import FatalExecutorError, GenerationError, exception_text
from prmtree.engine.records import Completion, GenerationRequest
from prmtree.policies.base import policy_name, resolve_policy
from prmtree.rollout_workers.loop_watchdog import LoopWatchdog, loop_watchdog


#: Seconds a policy may go on after its request was cancelled before the request walks away.
CANCEL_GRACE_S = 2.0


class EventLoopBlocked(FatalExecutorError):
    """``generate`` held the event loop longer than the request timeout. Fatal: the run
    stops (finished problems saved), since every request would do the same."""


@types.coroutine
def _timed(coro: Coroutine[Any, Any, Any], limit_s: float, who: str,
           watchdog: LoopWatchdog | None = None) -> Generator[Any, Any, Any]:
    """Run ``coro`` as ``await coro`` would, timing each step it takes without yielding to
    the loop; raise :class:`EventLoopBlocked` after a step longer than ``limit_s``. The
    ``watchdog`` ends the process if a step never returns."""
    if not isinstance(coro, types.CoroutineType):  # another awaitable: nothing to time
        return (yield from coro.__await__())
    send, value = coro.send, None
    cancelled_at: float | None = None  # when a cancellation was passed on to the policy
    while True:
        start = time.perf_counter()
        if watchdog is not None:
            watchdog.enter(who)
        try:
            yielded = send(value)
        except StopIteration as stop:
            _check(time.perf_counter() - start, limit_s, who)
            return stop.value
        except Exception:
            raise
        except asyncio.CancelledError as exc:
            if cancel_requested(asyncio.current_task()):  # this request was cancelled: a stop, a timeout
                raise
            raise _raised_by_policy(exc) from exc
        except BaseException as exc:  # SystemExit, KeyboardInterrupt, GeneratorExit... raised by generate
            raise _raised_by_policy(exc) from exc
        finally:
            if watchdog is not None:
                watchdog.leave()
        held = time.perf_counter() - start
        if held > limit_s:
            coro.close()
            _check(held, limit_s, who)
        if cancelled_at is not None and not _still_cancelled():
            cancelled_at = None  # the cancellation was withdrawn: anyio's cancel scopes (httpx) cancel and uncancel
        walk_away = None
        try:
            if cancelled_at is None:
                value, send = (yield yielded), coro.send
            elif (yield from _within_grace(yielded, cancelled_at + CANCEL_GRACE_S)):
                value, send = None, coro.send  # what the policy awaited came, its cancellation still pending
            else:
                walk_away = asyncio.CancelledError(f"policy {who!r} went on {CANCEL_GRACE_S:g} s after its "
                                                   "cancellation")
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # a cancellation (or a thrown error) goes to the policy
            # this request cancelled by prmtree (a time limit, a stop), not by the policy's own code
            cancelled = isinstance(exc, asyncio.CancelledError) and exc.args[:1] == (CANCELLED_BY_PRMTREE,)
            if cancelled and cancelled_at is not None:
                walk_away = exc  # cancelled again while the policy ignores the first: at once
            else:
                if cancelled:
                    cancelled_at = time.perf_counter()
                value, send = exc, coro.throw
        if walk_away is not None:
            _carry_on(coro, yielded)
            raise walk_away


def _still_cancelled() -> bool:
    """Whether the running task's cancellation stands (Python 3.11+ counts them: a library's
    own cancel scope cancels its task and withdraws the cancellation, ``uncancel``). Python
    3.10 cannot tell, so there a policy is never walked away from."""
    cancelling = getattr(asyncio.current_task(), "cancelling", None)
    return cancelling is not None and cancelling() > 0


@types.coroutine
def _within_grace(awaited: Any, until: float) -> Generator[Any, Any, bool]:
    """Wait for what a policy awaits after its cancellation, or until ``until``
    (``perf_counter``): whether it came in time."""
    if not isinstance(awaited, asyncio.Future):  # a bare yield (asyncio.sleep(0)): one turn of the loop
        yield awaited
        return time.perf_counter() < until
    awaited._asyncio_future_blocking = False  # as a task does with the future it takes over
    loop = asyncio.get_running_loop()
    gate = loop.create_future()

    def open_gate(_: Any = None) -> None:
        if not gate.done():
            gate.set_result(None)

    timer = loop.call_later(max(0.0, until - time.perf_counter()), open_gate)
    awaited.add_done_callback(open_gate)
    try:
        yield from gate
    finally:
        timer.cancel()
        awaited.remove_done_callback(open_gate)
    return awaited.done()


#: Walked-away policy coroutines finishing in tasks of their own (held: a task nobody
#: references can be collected mid-run).
_CARRIED: set[asyncio.Task[None]] = set()


def _carry_on(coro: Coroutine[Any, Any, Any], awaited: Any) -> None:
    """Let a walked-away policy coroutine finish in a task of its own, nobody waiting for it:
    its cleanup (an abort that took longer than the grace, an ``async with`` giving a
    connection back to its pool) still runs. Closing it instead skipped every async
    ``finally`` and leaked an httpx pool slot per walk-away. Cancelled (the run's loop
    closing), it is closed: one that swallows cancellations forever ends then."""
    task = asyncio.get_running_loop().create_task(_finish_detached(coro, awaited))
    _CARRIED.add(task)
    task.add_done_callback(_CARRIED.discard)


async def _finish_detached(coro: Coroutine[Any, Any, Any], awaited: Any) -> None:
    await _drive_detached(coro, awaited)


@types.coroutine
def _drive_detached(coro: Coroutine[Any, Any, Any], awaited: Any) -> Generator[Any, Any, None]:
    yielded = awaited
    while True:
        if isinstance(yielded, asyncio.Future):
            yielded._asyncio_future_blocking = True  # as awaiting it sets: the task takes it over
        try:
            value, send = (yield yielded), coro.send
        except asyncio.CancelledError:
            _abandon(coro)
            return
        except BaseException as exc:  # noqa: BLE001 - anything else thrown goes to the policy
            value, send = exc, coro.throw
        try:
            yielded = send(value)
        except BaseException:  # noqa: BLE001 - it finished, or raised: nobody waits for the outcome
            return


def _abandon(coro: Coroutine[Any, Any, Any]) -> None:
    """Close a policy's coroutine; one that ignores the close too (awaits in its
    ``finally``) is left to the garbage collector."""
    try:
        coro.close()
    except RuntimeError:  # "coroutine ignored GeneratorExit"
        pass


def _check(held_s: float, limit_s: float, who: str) -> None:
    if held_s > limit_s:
        raise EventLoopBlocked(
            f"policy {who!r}: generate blocked the event loop for {held_s:.1f} s (over request_timeout_s = "
            f"{limit_s:g} s, so no timeout could fire); use await asyncio.sleep, an async client, or run "
            "blocking work in a thread (await asyncio.to_thread(...))"
        )


class InlineExecutor:
    """``await submit(request)`` runs ``policy.generate`` with at most ``max_concurrency`` in flight."""

    def __init__(self, policy: Policy, config: ExecutorConfig | None = None) -> None:
        config = config or ExecutorConfig()
        max_concurrency, block_limit_s = config.max_concurrency, config.request_timeout_s
        self.policy = policy
        self.policy_name = policy_name(policy)
        self.max_concurrency = max_concurrency
        self.block_limit_s = block_limit_s  # the request timeout: see EventLoopBlocked
        self._slots: asyncio.Semaphore | None = None
        self._blocked: EventLoopBlocked | None = None  # set once generate blocked the loop
        self._watchdog: LoopWatchdog | None = None  # the running loop's (made on the first request)
        self.in_flight = 0
        self.requests = 0

    @classmethod
    def from_config(cls, config: ExecutorConfig, policy: Any, policy_args: dict[str, Any] | None) -> InlineExecutor:
        """The policy built in this process, ``max_concurrency`` requests in flight."""
        return cls(resolve_policy(policy, policy_args), config)

    async def submit(self, request: GenerationRequest) -> list[Completion]:
        if self._slots is None:  # created lazily: it must belong to the running loop
            self._slots = asyncio.Semaphore(self.max_concurrency)
        async with self._slots:
            if self._blocked is not None:  # the run is stopping: do not block the loop again
                raise self._blocked
            self.in_flight += 1
            self.requests += 1
            if self.block_limit_s < float("inf"):  # the running loop's (shared with the run)
                self._watchdog = loop_watchdog(self.block_limit_s, self.policy_name)
            try:
                return await _timed(self.policy.generate(request), self.block_limit_s, self.policy_name,
                                    self._watchdog)
            except EventLoopBlocked as exc:
                self._blocked = exc
                raise
            finally:
                self.in_flight -= 1

    def capacity(self) -> int | None:
        """The policy's declared capacity (sequences at once); None where it does not say."""
        return declared_capacity(self.policy)

    def release(self, problem_id: str) -> None:
        """Nothing is routed: nothing to forget."""

    def stats(self) -> dict[str, Any]:
        return {"kind": "inline", "requests": self.requests, "in_flight": self.load()}

    def load(self) -> dict[int, int]:
        return {0: self.in_flight}

    async def close(self) -> None:
        """The policy's ``close``, if it has one. A synchronous one (vLLM's ``shutdown``) runs
        in a thread of its own, so a slow or hung one cannot freeze the loop: the caller
        bounds this coroutine in time (``close_timeout_s``) and walks away from it."""
        close = getattr(self.policy, "close", None)
        if close is None:
            return
        if inspect.iscoroutinefunction(close):
            await close()
            return
        result = await in_daemon_thread(close)
        if inspect.isawaitable(result):
            await result


def _raised_by_policy(exc: BaseException) -> GenerationError:
    """A policy's ``generate`` raised something that is not an ``Exception`` (a
    ``CancelledError`` nobody asked for, ``SystemExit``, ``GeneratorExit``...): that
    request's failure, retried like any unknown error, never the run's end."""
    detail = exception_text(exc)
    return GenerationError(f"generate raised {type(exc).__name__}{': ' + detail if detail else ''}")


class DaemonThreadPool(concurrent.futures.ThreadPoolExecutor):
    """A run's default executor (what ``asyncio.to_thread`` uses): daemon threads, never
    joined. ``ThreadPoolExecutor`` joins its threads when the loop closes and again when the
    process exits, so one policy call stuck in a thread (a hung HTTP client, a GPU call
    whose request timed out long ago) kept a finished run from returning, and its process
    from exiting, until the call ended. Work still running at the end was abandoned by its
    request: nothing waits for it. (A ``ThreadPoolExecutor`` by type alone, as the loop asks;
    none of its machinery is used.)"""

    def __init__(self, max_workers: int | None = None) -> None:  # noqa: D107 - no super().__init__: no joined threads
        self._max_workers = max_workers or min(32, (os.cpu_count() or 1) + 4)
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads = 0
        self._shut = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        with self._lock:
            if self._shut:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            self._work.put((future, fn, args, kwargs))
            if not self._idle.acquire(blocking=False) and self._threads < self._max_workers:
                self._threads += 1
                threading.Thread(target=self._worker, name=f"prmtree-thread-{self._threads}", daemon=True).start()
            return future

    def _worker(self) -> None:
        while (item := self._work.get()) is not None:
            future, fn, args, kwargs = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:  # noqa: BLE001 - handed to whoever awaits the future
                    future.set_exception(exc)
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Idle threads end; busy ones end after their call, unwaited for."""
        with self._lock:
            self._shut = True
            for _ in range(self._threads):
                self._work.put(None)


def use_daemon_threads() -> None:
    """The running loop's default executor becomes a :class:`DaemonThreadPool`."""
    asyncio.get_running_loop().set_default_executor(DaemonThreadPool())


async def in_daemon_thread(fn: Callable[[], Any]) -> Any:
    """``fn()`` in a daemon thread: awaiting it can be abandoned (cancelled) and the thread
    never holds up the process's exit, as a hung ``asyncio.to_thread`` would."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            future.set_result(value) if ok else future.set_exception(value)

    def target() -> None:
        try:
            outcome = (True, fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            outcome = (False, exc)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop is gone: nobody waits any more
            pass

    threading.Thread(target=target, name="prmtree-close", daemon=True).start()
    return await future
