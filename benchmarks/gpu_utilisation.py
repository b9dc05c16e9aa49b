"""Simulated-GPU utilisation at default settings: does the driver keep the engine full?

A simulated GPU (``SimulatedPolicy``'s latency model: up to ``batch_capacity`` sequences
decode together in ``latency_s``, the rest wait for room) serves the realistic answer mix
(``engine_throughput.MixedAnswerPolicy``), omega, default labels, **no executor settings**:
the driver sizes its concurrency from the policy's declared capacity. For each capacity ×
latency it reports how busy the GPU was (the decoding work admitted, sequences × latency,
÷ capacity × time: what a real engine would have spent; the sequences merely *held*,
which also counts a finished batch waiting for a saturated event loop to end it, is
reported beside it as ``gpu_held`` and overstated the GPU's work before), rollouts/s, the most trees in flight, and the CPU: the driver process's, the
simulated model's own text generation (which runs in the driver here but is a GPU's
work on a real run) and the driver's CPU per rollout without it.

    python benchmarks/gpu_utilisation.py [--capacities 256 1024 4096] [--latencies 0.02 0.05 0.2]
                                         [--seconds 4] [--one-core]
    python benchmarks/gpu_utilisation.py --executor ray --workers 2 8 --capacities 128 --latencies 0.05
                                         [--inline-capacities 1024] [--out results/gpu_utilisation_ray.json]

``--seconds``: each configuration gets about this many seconds of the GPU's ideal rate
(capacity / latency rollouts/s) in problems, so each is short. Results:
``results/gpu_utilisation.json``.

``--executor ray``: the same, through the Ray executor with N workers (config: only
``kind = "ray"`` and ``workers``); each worker hosts its own metered GPU of ``--capacities``
sequences (built by name, ``gpu_utilisation:MeteredGPU``), which appends its busy integral
to a file under a temporary meter folder; the driver reads the files back and reports the
workers' mean busy. Ray starts with ``max(2, workers)`` logical CPUs (one per worker, the
default ``num_cpus_per_worker``), whatever the real cores. Every run also reports the
machine's CPU by process (``ray_scaling.cpu_snapshot``): driver, workers, Ray's daemons
and the rest of the machine, over the whole run and over the steady window.
``--inline-capacities``: inline runs to put beside them in the same file.

``--drivers N``: inline runs with N driver processes around the GPU in this process
(``--executor inline --drivers N``, ``prmtree/local_drivers.py``). This process is then
the engine host (``host`` in the CPU breakdown: the simulated model's text plus serving the
drivers), the driver processes are ``driver``; their steady window runs from the last
driver's pilot end to the first driver's last tree start (each driver process records
its moments in a file under ``MOMENTS_ENV``: this module is its ``__mp_main__``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import prmtree
from prmtree.engine.records import Completion, GenerationRequest

sys.path.insert(0, str(Path(__file__).parent))
from engine_throughput import STAGES, MixedAnswerPolicy, StageClock, mixed_problems  # noqa: E402
from ray_scaling import cpu_by_kind, cpu_snapshot  # noqa: E402
from verify_mix import MIX  # noqa: E402

RESULTS = Path(__file__).parent / "results"
ROLLOUTS_PER_PROBLEM = 120  # about what omega with default labels spends on this mix (for sizing a config)
METER_FLUSH_S = 0.05  # a worker's meter file is at most this stale when Ray kills the worker
SNAPSHOT_EVERY_S = 1.0  # the machine's per-process CPU is sampled this often during a run
BATCH_JOIN_S = 0.001  # requests admitted within this of a batch's start join it (one timer for them all)
MIN_STEADY_S = 1.0  # a shorter steady window (too few problems for the engine) is reported as none
MOMENTS_ENV = "PRMTREE_BENCH_MOMENTS"  # --drivers N: where each driver process writes its moments


@dataclass
class _Batch:
    """Requests admitted together (within ``BATCH_JOIN_S``): they decode together and end together."""

    opened: float  # loop time
    ends: float
    sequences: int = 0
    waiters: list[asyncio.Future[Any]] = field(default_factory=list)
    # --engine-process: the requests whose text the engine process writes (sent when the batch
    # closes to joiners), their texts once back, and whether the batch's latency is over
    requests: list[Any] = field(default_factory=list)
    sent: int = 0
    texts: list[Any] = field(default_factory=list)
    ended: bool = False


class EngineProcess:
    """The simulated model's text written in a process of its own, as vLLM's engine core runs
    in a process of its own: the driver's process then holds the driver (and receiving the
    texts) but not the simulated model's own work. A batch's requests go as one message when
    the batch closes to joiners (a problem whole the first time it is seen, by id after), the
    texts come back while the batch decodes, and the meter reads the process's CPU.

    Not modelled: a real engine's front end detokenizes in the driver's process; here the
    texts arrive whole (unpickling them is the driver's cost)."""

    def __init__(self, policy_kwargs: dict[str, Any]) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_engine_main, args=(child, policy_kwargs), daemon=True,
                                         name="prmtree-bench-engine")
        self._process.start()
        child.close()
        self.pid = self._process.pid
        ENGINE_PIDS.add(self.pid)
        self.cpu_s = 0.0
        self.late = 0  # batches whose texts came back after their latency was over
        self._known: set[str] = set()
        self._waiting: dict[int, _Batch] = {}
        self._next = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def send(self, batch: _Batch) -> None:
        """The batch's requests not sent yet, as one message."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new run's loop: listen on it
            self._loop = loop
            loop.add_reader(self._conn.fileno(), self._readable)
        items = []
        for _, request in batch.requests[batch.sent:]:
            problem = request.problem
            first = problem.id not in self._known
            self._known.add(problem.id)
            items.append((problem.id, problem if first else None, request.prefix, request.n, request.max_tokens,
                          request.seed, request.next_step_only, request.step_format, request.purpose))
        batch.sent = len(batch.requests)
        tag, self._next = self._next, self._next + 1
        self._waiting[tag] = batch
        self._conn.send((tag, items))

    def _readable(self) -> None:
        while self._conn.poll():
            try:
                tag, texts, self.cpu_s = self._conn.recv()
            except (EOFError, OSError):  # the engine process died: its requests fail, nothing hangs
                assert self._loop is not None
                self._loop.remove_reader(self._conn.fileno())
                for batch in self._waiting.values():
                    for done, _ in batch.requests:
                        if not done.done():
                            done.set_exception(RuntimeError("the simulated engine process died"))
                self._waiting.clear()
                return
            batch = self._waiting.pop(tag)
            batch.texts.extend(texts)
            if len(batch.texts) == len(batch.requests) and batch.ended:
                self.late += 1
                _deliver(batch)

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._conn.fileno())
        self._conn.close()
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()


#: the engine processes' pids: the CPU breakdown counts them as "engine"
ENGINE_PIDS: set[int] = set()


def _engine_main(conn: Any, policy_kwargs: dict[str, Any]) -> None:
    """The engine process: texts for each batch of requests, and this process's CPU so far."""
    policy = MixedAnswerPolicy(**policy_kwargs)
    problems: dict[str, Any] = {}
    while True:
        try:
            tag, items = conn.recv()
        except (EOFError, OSError):
            return
        texts = []
        for problem_id, problem, prefix, n, max_tokens, seed, next_step_only, step_format, purpose in items:
            if problem is not None:
                problems[problem_id] = problem
            request = GenerationRequest(problem=problems[problem_id], prefix=prefix, n=n, max_tokens=max_tokens,
                                        seed=seed, next_step_only=next_step_only, step_format=step_format,
                                        purpose=purpose)
            texts.append([(c.text, c.num_tokens, c.finish_reason) for c in policy.complete(request)])
        conn.send((tag, texts, time.process_time()))


def _deliver(batch: _Batch) -> None:
    """A batch is over and its texts are back: each request gets its completions."""
    for (done, _), texts in zip(batch.requests, batch.texts):
        if not done.done():  # a cancelled request's sequences still ran to the batch's end
            done.set_result([Completion(text, tokens, finish) for text, tokens, finish in texts])


class MeteredGPU(MixedAnswerPolicy):
    """The simulated GPU, metering how full it is and what its text generation costs.

    ``meter_dir``: inside a Ray worker, where the driver cannot see the object, every tick
    is also appended to ``meter_dir/<pid>.meter`` (``time busy_integral model_cpu_s work``;
    ``perf_counter`` is the machine's monotonic clock, so the driver's times compare),
    flushed every ``METER_FLUSH_S``: Ray kills workers without a goodbye.
    """

    def __init__(self, meter_dir: str | None = None, engine_process: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: --engine-process: the text is written in an EngineProcess, not in this one
        self._engine = EngineProcess({k: v for k, v in kwargs.items() if k not in self.operational_args}) \
            if engine_process else None
        self.busy_integral = 0.0  # sequence-seconds held (decoding, or done and waiting for the loop)
        # sequence-seconds of decoding admitted: each batch counts its latency, not how late the
        # event loop got round to ending it. Busy is measured by this; a saturated loop (inline,
        # the driver's) stretches every sleep, so the held integral overstates the GPU's work.
        self.work = 0.0
        self.first = self.last = None
        self._since = 0.0
        self.model_cpu_s = 0.0
        self.peak_queue = 0
        self.series: list[tuple[float, float]] = []  # (time, work so far): utilisation over any window
        self.held_series: list[tuple[float, float]] = []  # (time, held integral so far)
        self._queue: deque[tuple[int, asyncio.Future[Any], Any]] = deque()  # requests waiting for room
        self._batch: _Batch | None = None  # the batch admissions join in this event loop turn
        self._meter = open(Path(meter_dir) / f"{os.getpid()}.meter", "a") if meter_dir else None  # noqa: SIM115
        self._flushed = 0.0

    def _tick(self) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = self._since = now
        self.busy_integral += self._decoding * (now - self._since)
        self._since = self.last = now
        self.series.append((now, self.work))
        self.held_series.append((now, self.busy_integral))
        if self._meter is not None:
            self._meter.write(f"{now!r} {self.busy_integral!r} {self.model_cpu_s!r} {self.work!r}\n")
            if now - self._flushed >= METER_FLUSH_S:
                self._meter.flush()
                self._flushed = now

    @classmethod
    def from_meter(cls, path: Path, capacity: int) -> MeteredGPU:
        """A worker's GPU as its meter file left it (up to its last flush)."""
        gpu = cls(batch_capacity=capacity)
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) != 4:  # a line cut short by the kill
                continue
            now, integral, model_cpu, work = map(float, parts)
            gpu.series.append((now, work))
            gpu.held_series.append((now, integral))
            gpu.model_cpu_s = model_cpu
        if gpu.series:
            gpu.first, gpu.last = gpu.series[0][0], gpu.series[-1][0]
            gpu.work = gpu.series[-1][1]
            gpu.busy_integral = gpu.held_series[-1][1]
        return gpu

    async def _decode(self, sequences: int) -> None:
        """Up to ``batch_capacity`` sequences decode together for ``latency_s``; requests that do
        not fit wait their turn (first come, first served, as a serving engine's scheduler).

        Cheap on the driver's core, where this runs inline: the requests admitted within
        ``BATCH_JOIN_S`` of each other share one timer (a batch), each waits on one future of
        its own, and ending a batch admits the waiters that now fit directly (no condition
        variable waking every waiter to re-check). The meter ticks twice per batch: opened, ended."""
        await self._admitted(sequences, None)

    async def generate(self, request: Any) -> list[Any]:
        if self._engine is None:
            return await super().generate(request)
        return await self._admitted(request.n, request)  # the texts, from the engine process

    def _admitted(self, sequences: int, request: Any) -> asyncio.Future[Any]:
        need = min(sequences, self.batch_capacity)
        done = asyncio.get_running_loop().create_future()
        if self._queue or self._decoding + need > self.batch_capacity:
            self._queue.append((need, done, request))
        else:
            self._admit(need, done, request)
        return done

    def _admit(self, need: int, done: asyncio.Future[Any], request: Any = None) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        batch = self._batch
        if batch is None or now - batch.opened > BATCH_JOIN_S:  # open a batch and start its timer
            self._tick()
            batch = self._batch = _Batch(opened=now, ends=now + self.latency_s)
            loop.call_at(batch.ends, self._end, batch)
            if request is not None:  # its text is written once it closes to joiners
                loop.call_at(now + BATCH_JOIN_S, self._send, batch)
        batch.sequences += need
        batch.waiters.append(done)
        if request is not None:
            batch.requests.append((done, request))
            if batch.sent:  # joined after the batch was sent (the timer's granularity): send it now
                self._send(batch)
        self._decoding += need
        self.work += need * (batch.ends - now)  # a late joiner decodes (and counts) up to the batch's end

    def _send(self, batch: _Batch) -> None:
        if self._engine is not None and len(batch.requests) > batch.sent:
            self._engine.send(batch)

    def _end(self, batch: _Batch) -> None:
        if self._batch is batch:
            self._batch = None
        self._tick()
        self._decoding -= batch.sequences
        if batch.requests:  # the engine process writes the texts: delivered once they are back
            batch.ended = True
            self._send(batch)  # its join window outlived its latency: nothing may wait unsent
            if len(batch.texts) == len(batch.requests):
                _deliver(batch)
        else:
            for done in batch.waiters:
                if not done.done():  # a cancelled request's sequences still ran to the batch's end
                    done.set_result(None)
        queue, room = self._queue, self.batch_capacity - self._decoding
        while queue and queue[0][0] <= room:
            need, done, request = queue.popleft()
            if done.done():  # cancelled while waiting: it never decodes
                continue
            self._admit(need, done, request)
            room -= need

    @property
    def model_cpu(self) -> float:
        """The simulated model's own CPU seconds: this process's (``complete``), or the engine
        process's (all of it: it does nothing else)."""
        return self._engine.cpu_s if self._engine is not None else self.model_cpu_s

    async def close(self) -> None:
        """The engine process ends (prmtree closes a policy at the end of its run, in its loop)."""
        if self._engine is not None:
            self._engine.close()

    def complete(self, request: Any) -> list[Any]:
        start = time.thread_time()
        try:
            return super().complete(request)
        finally:
            self.model_cpu_s += time.thread_time() - start

    def utilisation(self) -> float:
        if self.first is None or self.last == self.first:
            return 0.0
        return self.work / (self.batch_capacity * (self.last - self.first))

    def held(self) -> float:
        """Sequences held ÷ capacity, including the time a finished batch waited for the event
        loop to end it (what this benchmark reported before: it overstates a lagging loop's GPU)."""
        if self.first is None or self.last == self.first:
            return 0.0
        return self.busy_integral / (self.batch_capacity * (self.last - self.first))

    def utilisation_between(self, start: float | None, end: float | None) -> float | None:
        """How busy between two times (None where the window is empty or unknown)."""
        import bisect

        if start is None or end is None or end <= start or not self.series:
            return None
        times = [t for t, _ in self.series]

        def integral(at: float) -> float:
            i = bisect.bisect_right(times, at) - 1
            return self.series[i][1] if i >= 0 else 0.0

        return (integral(end) - integral(start)) / (self.batch_capacity * (end - start))


def machine_snapshot() -> dict[int, tuple[str, float]]:
    """``ray_scaling.cpu_snapshot`` with this process's own children (the answer checks'
    process pool) as ``verifier`` rather than ``other``: ``other`` is then the rest of the
    machine (on a shared machine, other users' jobs)."""
    import psutil

    snap = cpu_snapshot()
    children: dict[int, list[int]] = {}
    for proc in psutil.process_iter(["ppid"]):  # not Process.children(): one vanishing child would fail it all
        children.setdefault(proc.info["ppid"] or 0, []).append(proc.pid)
    mine: set[int] = set()
    todo = [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in mine:
                mine.add(child)
                todo.append(child)
    return {pid: ("engine" if pid in ENGINE_PIDS else "verifier" if pid in mine and kind == "other" else kind, cpu)
            for pid, (kind, cpu) in snap.items()}


KINDS = ("driver", "host", "engine", "verifier", "workers", "ray", "other")
STICKY = frozenset({"driver", "engine", "verifier", "workers"})


def _spent(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
           drivers: frozenset[int] = frozenset()) -> dict[str, float]:
    """CPU seconds by kind between two snapshots (``ray_scaling.cpu_by_kind`` and the verifier
    pool). ``drivers``: driver processes of a local job, whose host is then this process."""
    pool = {pid: v for pid, v in after.items() if v[0] in ("verifier", "engine") and pid not in drivers}
    spent = cpu_by_kind(before, {pid: v for pid, v in after.items() if pid not in pool and pid not in drivers})
    for kind in ("verifier", "engine"):
        spent[kind] = sum(max(0.0, cpu - before.get(pid, ("", 0.0))[1])
                          for pid, (k, cpu) in pool.items() if k == kind)
    if drivers:
        spent["host"] = spent.pop("driver", 0.0)
        spent["driver"] = sum(max(0.0, cpu - before.get(pid, ("", 0.0))[1])
                              for pid, (_, cpu) in after.items() if pid in drivers)
    return {k: spent.get(k, 0.0) for k in KINDS}


class CpuMeter:
    """The machine's CPU by process kind, sampled during a run, with the rollouts done.

    Ray kills the workers at the end, so their CPU is read while they live: every
    ``SNAPSHOT_EVERY_S`` and at marked moments. The snapshots' own CPU (they run in the
    driver) is counted apart and left out of the driver's.
    """

    def __init__(self) -> None:
        # (time, rollouts done, snapshot, the snapshot's own CPU)
        self.snaps: list[tuple[float, int, dict[int, tuple[str, float]], float]] = []
        self.drivers: frozenset[int] = frozenset()  # a local job's driver processes (set after the run)
        self.snapshot(0)

    def snapshot(self, rollouts: int) -> None:
        cpu = time.process_time()
        snap = machine_snapshot()
        self.snaps.append((time.perf_counter(), rollouts, snap, time.process_time() - cpu))

    def maybe(self, rollouts: int) -> None:
        if time.perf_counter() - self.snaps[-1][0] >= SNAPSHOT_EVERY_S:
            self.snapshot(rollouts)

    def whole(self) -> dict[str, float]:
        """CPU seconds by kind from the first snapshot to the last (a process gone before the
        last counts up to the last snapshot that saw it)."""
        seen: dict[int, tuple[str, float]] = {}
        for _, _, snap, _ in self.snaps:
            for pid, (kind, cpu) in snap.items():
                # a process once seen as ours stays so (a worker being killed may show a Ray title)
                if seen.get(pid, ("",))[0] in STICKY:
                    kind = seen[pid][0]
                seen[pid] = (kind, cpu)
        spent = _spent(self.snaps[0][2], seen, self.drivers)
        mine = "host" if self.drivers else "driver"  # where the snapshots ran
        spent[mine] = max(0.0, spent[mine] - sum(c for *_, c in self.snaps[1:]))
        return spent

    def steady(self, start: float | None, end: float | None) -> dict[str, Any] | None:
        """Between the first snapshot at or after ``start`` and the last at or before ``end``:
        cores busy by kind, rollouts/s, and our processes' CPU ms per rollout by kind (None
        where there are not two snapshots half a second apart)."""
        if start is None or end is None:
            return None
        inside = [s for s in self.snaps if start - 0.05 <= s[0] <= end]
        if len(inside) < 2 or inside[-1][0] - inside[0][0] < 0.5:
            return None
        (t0, r0, s0, _), (t1, r1, s1, _) = inside[0], inside[-1]
        spent = _spent(s0, s1, self.drivers)
        mine = "host" if self.drivers else "driver"
        spent[mine] = max(0.0, spent[mine] - sum(c for *_, c in inside[1:]))
        seconds, rollouts = t1 - t0, max(1, r1 - r0)
        ours = {k: v for k, v in spent.items() if k != "other"}
        ms = {k: round(1000 * v / rollouts, 4) for k, v in ours.items()}
        return {
            "seconds": round(seconds, 2),
            "rollouts_per_s": round((r1 - r0) / seconds, 1),
            "cores": {k: round(v / seconds, 3) for k, v in spent.items()},
            "idle_cores": round(max(0.0, (os.cpu_count() or 1) - sum(spent.values()) / seconds), 3),
            "cpu_ms_per_rollout": ms,
            **ceilings(ms, max(1, len(self.drivers))),
        }


def ceilings(ms: dict[str, float], drivers: int = 1) -> dict[str, int]:
    """The rates this run's own processes could keep up on the machine's cores, idle otherwise:
    all of them shared, and the driver (one process, one event loop) on one core each; the lower holds."""
    all_cores = round(1000 * (os.cpu_count() or 1) / max(1e-9, sum(ms.values())))
    driver_core = round(1000 * drivers / max(1e-9, ms["driver"]))
    return {"ceiling_rollouts_per_s_all_cores": all_cores, "ceiling_rollouts_per_s_driver_core": driver_core,
            "ceiling_rollouts_per_s": min(all_cores, driver_core)}


def one(capacity: int, latency_s: float, problems: int, workers: int | None = None, drivers: int = 1,
        stages: bool = False, engine_process: bool = False) -> dict[str, Any]:
    """One configuration: inline (the GPU in this process; with ``drivers`` > 1, that many
    driver processes around it), or through Ray with ``workers`` workers of ``capacity``
    sequences each (config: only the executor's kind and workers). ``stages`` (inline, one
    driver): the driver's CPU by stage (``engine_throughput.StageClock``), at the cost of
    ~1 us of timing per stage call. ``engine_process`` (inline, one driver): the simulated
    model's text is written in a process of its own (:class:`EngineProcess`)."""
    data = mixed_problems(problems, seed=99, weights=MIX)
    out = Path(tempfile.mkdtemp(prefix="prmtree-util-"))
    meter_dir = Path(tempfile.mkdtemp(prefix="prmtree-meter-")) if workers or drivers > 1 else None
    gpu: MeteredGPU | None = None
    if workers:
        policy: Any = "gpu_utilisation:MeteredGPU"
        policy_args: dict[str, Any] | None = {"latency_s": latency_s, "batch_capacity": capacity,
                                              "meter_dir": str(meter_dir)}
        executor: dict[str, Any] = {"kind": "ray", "workers": workers}
    else:
        policy = gpu = MeteredGPU(latency_s=latency_s, batch_capacity=capacity,
                                  engine_process=engine_process and drivers == 1)
        policy_args, executor = None, {}
        if drivers > 1:
            executor = {"kind": "inline", "drivers": drivers}
            os.environ[MOMENTS_ENV] = str(meter_dir)
    seen_trees = [0]
    driver_box: list[Any] = []

    import prmtree.engine.driver as driver_mod

    original_start = driver_mod.Driver._start

    moments: dict[str, float] = {}
    meter = CpuMeter()

    async def counting_start(self: Any, problem: Any, pending: Any) -> Any:
        if not driver_box:
            driver_box.append(self)
        if "pilot_done" not in moments and (self.pilot is None or self.pilot.calibration is not None):
            moments["pilot_done"] = time.perf_counter()
            meter.snapshot(self.stats.rollouts)  # the steady window's CPU starts here
        pending = await original_start(self, problem, pending)
        moments["last_start"] = time.perf_counter()
        seen_trees[0] = max(seen_trees[0], len(pending) - self._waiting_for_pilot)
        return pending

    clock = StageClock() if stages and gpu is not None and drivers == 1 else None
    driver_mod.Driver._start = counting_start  # type: ignore[method-assign]
    try:
        with clock.installed() if clock is not None else nullcontext():
            wall, cpu = time.perf_counter(), time.process_time()
            s = prmtree.run(data, policy=policy, policy_args=policy_args, out=out, seed=0,
                            config={"executor": executor}, on_progress=lambda stats: meter.maybe(stats.rollouts))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        meter.snapshot(s.rollouts)
    finally:
        driver_mod.Driver._start = original_start  # type: ignore[method-assign]
        shutil.rmtree(out, ignore_errors=True)
        os.environ.pop(MOMENTS_ENV, None)
    if drivers > 1:  # the driver processes' moments: all of them steady, from the last pilot end to the first last start
        assert meter_dir is not None
        found = [_read_moments(f) for f in sorted(meter_dir.glob("*.moments"))]
        meter.drivers = frozenset(m["pid"] for m in found)
        if len(found) == drivers and all("pilot_done" in m and "last_start" in m for m in found):
            moments["pilot_done"] = max(m["pilot_done"] for m in found)
            moments["last_start"] = min(m["last_start"] for m in found)
        seen_trees[0] = sum(int(m.get("trees", 0)) for m in found)
    gpus = [gpu] if gpu is not None else [MeteredGPU.from_meter(f, capacity) for f in sorted(meter_dir.glob("*.meter"))]
    if meter_dir is not None and drivers > 1:
        shutil.rmtree(meter_dir, ignore_errors=True)
        meter_dir = None
    if meter_dir is not None:
        shutil.rmtree(meter_dir, ignore_errors=True)
    gpus = [g for g in gpus if g.first is not None]
    if not gpus:
        raise SystemExit("no GPU meter came back (did the workers import gpu_utilisation?)")
    snapshot_cpu = sum(c for *_, c in meter.snaps[1:])
    model_cpu = sum(g.model_cpu for g in gpus)
    in_engine = gpu is not None and gpu._engine is not None
    # inline, the model's text generation runs in this process (a GPU's work on a real run),
    # unless an engine process writes it
    driver_cpu = cpu - snapshot_cpu - (model_cpu if gpu is not None and not in_engine else 0.0)
    host_cpu = None
    if drivers > 1:  # this process only hosted the engine: the drivers' CPU is their processes'
        host_cpu, driver_cpu = driver_cpu, whole_drivers(meter)
    steady_from, steady_to = moments.get("pilot_done"), moments.get("last_start")
    if steady_from is None or steady_to is None or steady_to - steady_from < MIN_STEADY_S:
        steady_from = steady_to = None  # every problem started with the pilot's end: no steady state to measure
    steady = [gpu_busy for g in gpus
              if (gpu_busy := g.utilisation_between(steady_from, steady_to)) is not None]
    first = min(g.first for g in gpus)
    whole = meter.whole()
    count = workers or 1
    concurrency = driver_box[0].concurrency.as_dict() if driver_box else {}
    pool_cpu = s.stats.get("verifier", {}).get("pool_cpu_s", 0.0)
    result = {
        "executor": "ray" if workers else "inline",
        "workers": count,
        "drivers": drivers,
        # the simulated model's text written in a process of its own (EngineProcess), as vLLM's engine core
        "engine_process": in_engine,
        "late_batches": gpu._engine.late if in_engine else None,  # its texts came back after the batch's latency
        "capacity": capacity,  # per worker
        "latency_ms": round(latency_s * 1000),
        "problems": problems,
        "rollouts": s.rollouts,
        "requests": s.requests,
        "wall_s": round(wall, 3),
        "rollouts_per_s": round(s.rollouts / wall, 1),
        "ideal_rollouts_per_s": round(count * capacity / latency_s),
        # mean over the workers' GPUs, each from its first tick to its last
        "gpu_busy": round(sum(g.utilisation() for g in gpus) / len(gpus), 4),
        # from the pilot's end (floors learned) to the last problem's start: the steady state,
        # without the pilot's serial start and the tail of the last trees
        "gpu_busy_steady": round(sum(steady) / len(steady), 4) if steady else None,
        "gpu_busy_by_worker": [round(g.utilisation(), 4) for g in gpus] if workers else None,
        # sequences held ÷ capacity, loop lag included (the figure reported before this metering)
        "gpu_held": round(sum(g.held() for g in gpus) / len(gpus), 4),
        "gpu_busy_steady_by_worker": [round(b, 4) for b in steady] if workers else None,
        "steady_s": (round(moments["last_start"] - moments["pilot_done"], 2)
                     if "pilot_done" in moments and "last_start" in moments else None),
        "pilot_s": round(moments["pilot_done"] - first, 2) if "pilot_done" in moments else None,
        "max_trees_in_flight": seen_trees[0],
        "concurrency": concurrency,
        "process_cpu_s": round(cpu, 3),
        "driver_busy": round(driver_cpu / wall, 3),  # cores (with --drivers N: all of them together)
        # --drivers N: this process, the engine host, less the model's text (serving the drivers)
        "host_cpu_ms_per_rollout": None if host_cpu is None else round(1000 * host_cpu / max(1, s.rollouts), 4),
        "model_cpu_s": round(model_cpu, 3),
        "math_verify_pool_cpu_s": round(pool_cpu, 3),
        "driver_cpu_ms_per_rollout": round(1000 * driver_cpu / max(1, s.rollouts), 4),
        # the machine's CPU by process over the whole run (CPU seconds) and in the steady window
        # (cores busy, ms per rollout); "other" is the rest of the machine, other users' jobs included
        "cpu_s_by_process": {k: round(v, 2) for k, v in whole.items()},
        "steady_cpu": meter.steady(steady_from, steady_to) if steady_from is not None else None,
        # the driver's own view (engine/loop_load.py): seconds its loop was watched, and saturated
        # (busy, not idle in select, >= 85% of a 5-s window); the run's summary warns when most were
        "driver_loop": dict(s.driver),
        # --stages: the driver's CPU per rollout by stage over the whole run; "other" is the rest of
        # the driver's process (asyncio, the executor, request building, the pilot's bookkeeping)
        "driver_ms_per_rollout_by_stage": _by_stage(clock, driver_cpu, s.rollouts) if clock is not None else None,
    }
    c = (result["steady_cpu"] or {}).get("cores", {})
    where = (f"{count} worker(s) x {capacity:5d}" if workers
             else f"inline, engine process, {capacity:5d}" if in_engine else f"inline   {capacity:5d}" if drivers == 1
             else f"inline, {drivers} driver processes, {capacity:5d}")
    print(f"{where}  latency {latency_s * 1000:4.0f} ms  {s.rollouts:>8,} rollouts in {wall:6.2f} s: "
          f"{result['rollouts_per_s']:>9,.0f}/s of {result['ideal_rollouts_per_s']:>7,}  GPU busy "
          f"{result['gpu_busy']:6.1%} (steady {_pct(result['gpu_busy_steady'])}, held {result['gpu_held']:6.1%}, pilot {result['pilot_s']} s)  "
          f"trees {seen_trees[0]:5d}  driver {result['driver_busy']:5.0%} of a core, "
          f"{result['driver_cpu_ms_per_rollout']:.4f} ms/rollout; steady cores: "
          + ", ".join(f"{k} {v}" for k, v in c.items()), flush=True)
    if clock is not None:
        print("  driver ms per rollout by stage: " + ", ".join(
            f"{k} {v:.4f}" for k, v in result["driver_ms_per_rollout_by_stage"].items()), flush=True)
    return result


def _by_stage(clock: StageClock, driver_cpu_s: float, rollouts: int) -> dict[str, float]:
    """ms per rollout of each stage, and of the rest of the driver's process (the model's own
    text is not the driver's: ``driver_cpu_s`` already leaves it out)."""
    per = {k: 1000 * clock.seconds[k] / max(1, rollouts) for k in STAGES}
    per["other"] = 1000 * driver_cpu_s / max(1, rollouts) - sum(per.values())
    return {k: round(v, 4) for k, v in per.items()}


def whole_drivers(meter: CpuMeter) -> float:
    """The driver processes' CPU seconds over the run (from the meter's snapshots)."""
    return meter.whole()["driver"]


def _read_moments(path: Path) -> dict[str, float]:
    """A driver process's moments file: ``name value`` lines, the last of each name holding."""
    found: dict[str, float] = {}
    for line in path.read_text().splitlines():
        name, _, value = line.partition(" ")
        if value:
            found[name] = float(value)
    return found


def _record_driver_moments(folder: str) -> None:
    """In a driver process of a ``--drivers N`` run: write its pid, when its pilot ended, its
    most trees in flight and its last tree start to ``folder/<pid>.moments`` (the same
    moments ``one`` takes in this process for a single driver)."""
    import prmtree.engine.driver as driver_mod

    path = Path(folder) / f"{os.getpid()}.moments"
    seen: dict[str, float] = {"trees": 0}
    path.write_text(f"pid {os.getpid()}\n")
    original_start, original_run = driver_mod.Driver._start, driver_mod.Driver.run

    async def counting_start(self: Any, problem: Any, pending: Any) -> Any:
        if "pilot_done" not in seen and (self.pilot is None or self.pilot.calibration is not None):
            seen["pilot_done"] = time.perf_counter()
            with path.open("a") as f:
                f.write(f"pilot_done {seen['pilot_done']!r}\n")
        pending = await original_start(self, problem, pending)
        seen["last_start"] = time.perf_counter()
        seen["trees"] = max(seen["trees"], len(pending) - self._waiting_for_pilot)
        return pending

    async def recording_run(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await original_run(self, *args, **kwargs)
        finally:
            with path.open("a") as f:
                f.write("".join(f"{k} {v!r}\n" for k, v in seen.items() if k != "pilot_done"))

    driver_mod.Driver._start = counting_start  # type: ignore[method-assign]
    driver_mod.Driver.run = recording_run  # type: ignore[method-assign]


def _problems(total_capacity: int, latency_s: float, seconds: float, max_problems: int) -> int:
    """Enough problems to keep the GPU(s) full for about ``seconds``, never fewer than 3 waves of trees."""
    ideal = total_capacity / latency_s
    return int(min(max_problems, max(3 * total_capacity / 4, ideal * seconds / ROLLOUTS_PER_PROBLEM)))


def _pct(share: float | None) -> str:
    return f"{share:6.1%}" if share is not None else "  none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacities", type=int, nargs="+", default=[256, 1024, 4096],
                        help="sequences one GPU serves at once (with --executor ray: per worker)")
    parser.add_argument("--latencies", type=float, nargs="+", default=[0.02, 0.05, 0.2])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--max-problems", type=int, default=3000)
    parser.add_argument("--one-core", action="store_true", help="pin the driver to one core")
    parser.add_argument("--drivers", type=int, nargs="+", default=[1],
                        help="inline: driver processes around the GPU (1: the driver is this process)")
    parser.add_argument("--executor", choices=["inline", "ray"], default="inline")
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 8], help="--executor ray: worker counts")
    parser.add_argument("--inline-capacities", type=int, nargs="*", default=[],
                        help="--executor ray: inline runs of these capacities beside the Ray runs")
    parser.add_argument("--engine-process", action="store_true",
                        help="inline, one driver: the simulated model's text written in a process of its own, as "
                             "vLLM's engine core runs in its own (the driver's process then holds the driver alone)")
    parser.add_argument("--stages", action="store_true",
                        help="inline, one driver: also time the driver's stages (search, parse, verify, label, write)")
    parser.add_argument("--out", default=None,
                        help="default results/gpu_utilisation.json (inline), results/gpu_utilisation_ray.json (ray)")
    args = parser.parse_args()
    if args.one_core and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    results = []
    if args.executor == "ray":
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        # the workers build gpu_utilisation:MeteredGPU by name: they need this folder on their path
        here = str(Path(__file__).resolve().parent)
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
        import ray

        for workers in args.workers:
            for capacity in args.capacities:
                for latency in args.latencies:
                    ray.init(num_cpus=max(2, workers), include_dashboard=False, log_to_driver=False)
                    try:
                        problems = _problems(workers * capacity, latency, args.seconds, args.max_problems)
                        results.append(one(capacity, latency, problems, workers=workers))
                    finally:
                        ray.shutdown()
        for capacity in args.inline_capacities:
            for latency in args.latencies:
                results.append(one(capacity, latency, _problems(capacity, latency, args.seconds, args.max_problems)))
        settings = ("[executor] kind = ray and workers only (defaults otherwise: num_cpus_per_worker = 1, Ray "
                    f"started with max(2, workers) logical CPUs on {cores} real cores); inline runs: no [executor] "
                    "keys; omega, adaptive labels, pilot on")
    else:
        for drivers in args.drivers:
            for capacity in args.capacities:
                for latency in args.latencies:
                    problems = _problems(capacity, latency, args.seconds, args.max_problems)
                    results.append(one(capacity, latency, problems, drivers=drivers, stages=args.stages,
                                       engine_process=args.engine_process))
        settings = "defaults (no [executor] keys); omega, adaptive labels, pilot on"
        if args.drivers != [1]:
            settings += "; --drivers N > 1: [executor] kind = inline, drivers = N and nothing else"
    out = Path(args.out or RESULTS / ("gpu_utilisation_ray.json" if args.executor == "ray" else "gpu_utilisation.json"))
    out.parent.mkdir(exist_ok=True)
    payload = {"settings": settings, "results": results, "cores": cores,
               "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    out.write_text(json.dumps(payload, indent=2))
    print(f"saved {out}")


if __name__ == "__mp_main__" and os.environ.get(MOMENTS_ENV):  # a driver process of a --drivers N run
    _record_driver_moments(os.environ[MOMENTS_ENV])

if __name__ == "__main__":
    main()
