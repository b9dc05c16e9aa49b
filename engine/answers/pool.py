"""A small process pool for the slow answer checks (Math-Verify), bounded in time and self-healing.

Why a process pool: Math-Verify/sympy takes tens of milliseconds to seconds per comparison
and holds the GIL, so on the driver's event loop (or in a thread) it stalls every tree in
flight. In a pool worker it runs in that process's *main* thread, where Math-Verify's own
``signal.alarm`` timeouts work, and a check that hangs or crashes costs one worker, not the run.

Guarantees, per check: it is "not equal" (``False``, counted) only if it alone runs past
its bound twice, or kills its worker. A check past ``timeout_s`` is run once more, under
``patience`` times that bound (with the caller's ``patient`` function, whose own inner
bound is as much longer): a check slowed by a loaded machine, up to that factor, still
gets its verdict, so the rows of a run do not depend on how busy the machine was; the clock runs only while it holds a worker (at most
``workers`` round trips are handed to the pool at once, so nothing waits in the pool's queue
on the clock). A hung or broken pool is killed and a fresh one started for the next check.
Checks of one request travel together (one round trip per worker, not per check: each round
trip costs the driver 0.1-0.3 ms of thread wake-ups); a batch that times out or breaks is
re-run one check at a time, so its innocent members still get their verdicts.
``run`` and ``run_many`` never raise (cancellation aside).

Where no process pool can start (a daemonic process may not have children; a sandbox
may forbid ``fork``), checks run in threads instead, with a warning and ``pool_kind =
"thread"`` in the stats: a check the pool never ran is not "not equal", and answering
every Math-Verify check ``False`` would label every such rollout wrong without a sound.
Threads keep the time bound (a hung check is answered ``False`` and its thread
abandoned) but share the driver's GIL.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import multiprocessing
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any

SlowCheck = Callable[[str, str], bool]
log = logging.getLogger(__name__)
#: Failed starts of a process pool that never started before threads take over.
NEVER_STARTED_LIMIT = 3
#: A check past its bound is run once more under this many times the bound.
PATIENCE = 3.0


class CheckTimedOut(Exception):
    """Raised by a slow check that ran out of its own time bound (Math-Verify's, inside
    ours): answered "not equal" and counted as a timeout, like one the pool cut short."""


def _init_worker() -> None:
    """Runs once per worker: pay sympy's import before the first timed check, ignore Ctrl-C
    (the driver handles it and shuts the pool down)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        from math_verify import parse

        parse("$1$")
    except Exception:  # a custom slow check may not need Math-Verify at all
        pass


def _ping() -> bool:
    return True


def _timed_call(fn: SlowCheck, gold: str, predicted: str) -> tuple[bool | None, float]:
    """Runs in the worker: the verdict and the CPU it cost (exceptions are "not equal").
    Thread time: a worker process runs its calls in its main thread, and in thread mode
    the process's CPU would count the driver's too."""
    cpu = time.thread_time()
    verdict: bool | None
    try:
        verdict = bool(fn(gold, predicted))
    except CheckTimedOut:
        verdict = None  # counted by the driver's side
    except Exception:
        verdict = False
    return verdict, time.thread_time() - cpu


def _timed_batch(fn: SlowCheck, pairs: list[tuple[str, str]]) -> tuple[list[bool | None], float]:
    """Several checks in one round trip: each costs the driver ~0.1-0.3 ms of thread wake-ups."""
    verdicts, cpu = [], 0.0
    for gold, predicted in pairs:
        verdict, spent = _timed_call(fn, gold, predicted)
        verdicts.append(verdict)
        cpu += spent
    return verdicts, cpu


class CheckPool:
    """``await pool.run(fn, gold, predicted)`` in a worker process, time-bounded, never raising.

    ``fn`` must pickle (a module-level function, or a ``functools.partial`` of one). The pool
    starts on first use; ``start_timeout_s`` bounds a (re)start, which imports sympy. Its
    workers do not import the parent's ``__main__`` (see :func:`_main_unseen`) unless
    ``import_main``: the checks it runs are defined there.
    """

    def __init__(
        self,
        workers: int,
        timeout_s: float,
        start_timeout_s: float = 120.0,
        context: str = "spawn",
        import_main: bool = False,
        patience: float = PATIENCE,
    ) -> None:
        if workers < 1:
            raise ValueError(f"pool workers must be >= 1, got {workers}")
        self.workers = workers
        self.timeout_s = timeout_s
        self.patience = patience
        self.start_timeout_s = start_timeout_s
        self._context = multiprocessing.get_context(context)
        self._import_main = import_main
        self._started = False  # a process pool has answered once
        self._failed_starts = 0
        self._pool: concurrent.futures.Executor | None = None
        self.kind = "process"  # "thread" once a process pool could not start
        self._warm: list[concurrent.futures.Future] = []
        self._generation = 0
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._closes = 0  # bumped by close(): checks in flight then end instead of restarting a pool
        self.checks = 0
        self.time_s = 0.0
        self.cpu_s = 0.0
        self.timeouts = 0
        self.patient_retries = 0  # checks run again under the longer bound after a timeout
        self.failures = 0
        self.restarts = 0

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (a driver may be shipped to a Ray actor): the copy starts its own pool."""
        return {**self.__dict__, "_pool": None, "_warm": [], "_slots": None}

    async def run(self, fn: SlowCheck, gold: str, predicted: str, patient: SlowCheck | None = None) -> bool:
        """The check's verdict; ``False`` when it runs out of time twice (the second time as
        ``patient``, default ``fn``, under ``patience`` times the bound), crashes its worker,
        or the pool cannot start."""
        self.checks += 1
        return await self._run_one(fn, gold, predicted, patient or fn)

    async def _run_one(self, fn: SlowCheck, gold: str, predicted: str, patient: SlowCheck,
                       patiently: bool = False) -> bool:
        """A check whose pool broke under it is retried once on a fresh pool, so a check that
        merely shared a pool with a crashing or hung one is not marked wrong; one that ran out
        of time is retried once, patiently (``patiently``: this is that retry already).

        In threads a check cannot be stopped, so it is not started again beside itself: its
        first try waits the whole patient time (``1 + patience`` bounds) instead."""
        closes = self._closes
        async with self._slot():
            broke = 0
            if patiently:
                call, bound = patient, self.timeout_s * self.patience
            elif self.kind == "thread":
                call, bound, patiently = fn, self.timeout_s * (1 + self.patience), True
            else:
                call, bound = fn, self.timeout_s
            while True:
                if self._closes != closes:
                    return False
                status, value = await self._submit(_timed_call, call, gold, predicted, bound=bound)
                if status == "ok":
                    verdict, cpu = value
                    self.cpu_s += cpu
                    if verdict is not None:
                        return verdict
                    status = "timeout"  # the check ran out of its own (inner) time
                if status == "timeout":
                    if patiently:  # out of time twice: "not equal"
                        self.timeouts += 1
                        return False
                    self.patient_retries += 1
                    patiently, call, bound = True, patient, self.timeout_s * self.patience
                    continue
                if status == "error":
                    break
                broke += 1  # "broken": the pool died under it (another check's timeout or crash)
                if broke == 2:
                    break
            self.failures += 1
            return False

    async def run_many(self, fn: SlowCheck, pairs: Sequence[tuple[str, str]],
                       patient: SlowCheck | None = None) -> list[bool]:
        """Verdicts for several checks, in order: one round trip per worker rather than per
        check. A batch that times out or breaks its pool is re-run one check at a time, each
        under its own bound, so only the culprit is answered ``False``; a check in a batch
        that ran out of its own time is re-run alone, patiently."""
        patient = patient or fn
        if len(pairs) <= 1:
            return [await self.run(fn, gold, predicted, patient) for gold, predicted in pairs]
        chunks = [list(pairs[i :: self.workers]) for i in range(min(self.workers, len(pairs)))]
        results = await asyncio.gather(*(self._run_chunk(fn, chunk, patient) for chunk in chunks))
        verdicts = [False] * len(pairs)
        for i, chunk_verdicts in enumerate(results):
            verdicts[i :: self.workers] = chunk_verdicts
        return verdicts

    async def _run_chunk(self, fn: SlowCheck, pairs: list[tuple[str, str]], patient: SlowCheck) -> list[bool]:
        closes = self._closes
        async with self._slot():
            self.checks += len(pairs)
            status, value = await self._submit(_timed_batch, fn, pairs)
        if status == "ok":
            verdicts, cpu = value
            self.cpu_s += cpu
            out = []
            for (gold, predicted), verdict in zip(pairs, verdicts):
                if verdict is None:  # out of its own time: once more alone, under the longer bound
                    self.patient_retries += 1
                    verdict = await self._run_one(fn, gold, predicted, patient, patiently=True)
                out.append(verdict)
            return out
        if self._closes != closes:
            return [False] * len(pairs)
        return [await self._run_one(fn, gold, predicted, patient) for gold, predicted in pairs]

    async def _submit(self, call: Callable[..., Any], *args: Any, bound: float | None = None) -> tuple[str, Any]:
        """One round trip on the current pool, bounded by ``bound`` (default ``timeout_s``): ``("ok", result)``,
        or ``"timeout"`` / ``"broken"`` (the pool is then replaced) / ``"error"``."""
        generation = self._generation
        try:
            pool = await self._started_pool()
        except (asyncio.TimeoutError, BrokenProcessPool, OSError, RuntimeError):
            self._restart(generation)
            return "broken", None
        generation = self._generation
        started = time.perf_counter()
        try:
            future = pool.submit(call, *args)
            return "ok", await asyncio.wait_for(asyncio.wrap_future(future), bound or self.timeout_s)
        except asyncio.TimeoutError:
            self._restart(generation)  # the worker is stuck: kill it, or it holds a slot forever
            return "timeout", None
        except (BrokenProcessPool, RuntimeError):  # RuntimeError: submit on a pool shut down under us
            self._restart(generation)
            return "broken", None
        except Exception:  # e.g. fn or its result does not pickle: the check's fault, not the pool's
            return "error", None
        finally:
            self.time_s += time.perf_counter() - started

    def _slot(self) -> asyncio.Semaphore:
        """A semaphore of ``workers`` slots for the running loop (asyncio primitives are
        bound to one loop; a Verifier may outlive an ``asyncio.run``)."""
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(self.workers))
        return self._slots[1]

    async def _started_pool(self) -> concurrent.futures.Executor:
        """The pool, started if needed, once its workers have imported sympy: a cold start
        takes seconds and must not count against the first checks' time bound. Processes
        that cannot be created at all, or a pool that has never once started in
        ``NEVER_STARTED_LIMIT`` tries, are replaced by threads for good (see the module's
        doc); a pool that worked before is only restarted."""
        if self._pool is None:
            self._pool, self._warm = self._new_pool()
        pool, warm = self._pool, self._warm
        try:
            if not all(f.done() for f in warm):
                await asyncio.wait_for(asyncio.gather(*(asyncio.wrap_future(f) for f in warm)), self.start_timeout_s)
            for f in warm:
                f.result()  # raises BrokenProcessPool if a worker died starting
        except (asyncio.TimeoutError, BrokenProcessPool, OSError, RuntimeError) as exc:
            if self.kind == "process" and pool is self._pool and not self._started:
                self._failed_starts += 1
                if self._failed_starts >= NEVER_STARTED_LIMIT:
                    self._to_threads(exc)
                    self._generation += 1
                    self._pool, self._warm = self._new_pool()
                    _kill(pool)
                    return self._pool
            raise
        self._started = self._started or self.kind == "process"
        return pool

    def _new_pool(self) -> tuple[concurrent.futures.Executor, list[concurrent.futures.Future]]:
        if self.kind == "process":
            try:
                with contextlib.nullcontext() if self._import_main else _main_unseen():
                    pool = concurrent.futures.ProcessPoolExecutor(
                        max_workers=self.workers, mp_context=self._context, initializer=_init_worker
                    )
                    return pool, [pool.submit(_ping) for _ in range(self.workers)]  # starts the processes
            except Exception as exc:  # AssertionError: a daemonic process may not have children
                self._to_threads(exc)
        return _DaemonThreads(), []

    def _to_threads(self, exc: BaseException) -> None:
        self.kind = "thread"
        log.warning("answer checks: no process pool can start here (%s: %s); running Math-Verify in "
                    "threads instead: verdicts are the same, but sympy now shares the driver's CPU",
                    type(exc).__name__, exc)

    def _restart(self, generation: int) -> None:
        """Kill the pool that ``generation`` ran on (once: several failing checks may report the
        same broken pool); the next check starts a fresh one."""
        if generation != self._generation:
            return
        self._generation += 1
        self.restarts += 1
        pool, self._pool, self._warm = self._pool, None, []
        if pool is not None:
            _kill(pool)

    def close(self) -> None:
        """Stop the workers now: checks in flight are answered ``False``; a later check
        starts a fresh pool."""
        pool, self._pool, self._warm = self._pool, None, []
        self._generation += 1
        self._closes += 1
        if pool is not None:
            _kill(pool)

    def stats(self) -> dict[str, float]:
        return {
            "pool_checks": self.checks,
            "pool_time_s": round(self.time_s, 6),
            "pool_cpu_s": round(self.cpu_s, 6),
            "timeouts": self.timeouts,
            "patient_retries": self.patient_retries,
            "pool_failures": self.failures,
            "pool_restarts": self.restarts,
            "pool_kind": self.kind,
        }


_MAIN_HIDDEN = threading.Lock()


@contextlib.contextmanager
def _main_unseen() -> Iterator[None]:
    """Start processes without the parent's ``__main__``: a spawned process re-imports it
    (to find functions defined there), so a script without an ``if __name__ ==
    "__main__":`` guard (the README's example policy is one) would run its whole job again
    in every worker. The checks live in modules; the workers need not see the script."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    with _MAIN_HIDDEN:  # two pools starting in two threads must not save each other's None
        saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
        try:
            main.__dict__.pop("__file__", None)
            if "__spec__" in saved:
                main.__dict__["__spec__"] = None
            yield
        finally:
            main.__dict__.pop("__file__", None)
            main.__dict__.update(saved)


class _DaemonThreads(concurrent.futures.Executor):
    """One daemon thread per call (``CheckPool``'s slots bound how many): a hung check must
    not hold the process open at exit, as a ``ThreadPoolExecutor``'s threads, joined at
    exit, would."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()

        def work() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=work, name="prmtree-check", daemon=True).start()
        return future


def _kill(pool: concurrent.futures.Executor) -> None:
    """Shut ``pool`` down without waiting and SIGKILL its workers: a hung worker never reads the
    shutdown sentinel. Does not block; the pool's manager thread reaps the processes. A
    thread cannot be killed: a hung one is abandoned (it ends with its check, or the process)."""
    if isinstance(pool, _DaemonThreads):
        return
    kill_workers = getattr(pool, "kill_workers", None)  # public from Python 3.14
    if kill_workers is not None:
        try:
            kill_workers()
            return
        except Exception:
            pass
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False)  # futures still pending fail with BrokenProcessPool once workers die
    for process in processes:
        try:
            process.kill()
        except Exception:  # already gone
            pass
