"""Simulated-GPU utilisation at default settings: does the driver keep the engine full?

A simulated GPU (``SimulatedPolicy``'s latency model: up to ``batch_capacity`` sequences
decode together in ``latency_s``, the rest wait for room) serves the realistic answer mix
(``engine_throughput.MixedAnswerPolicy``), omega, default labels, **no executor settings**:
the driver sizes its concurrency from the policy's declared capacity. For each capacity ×
latency it reports how busy the GPU was (sequences decoding ÷ capacity, integrated over
the run), rollouts/s, the most trees in flight, and the CPU: the driver process's, the
simulated model's own text generation (which runs in the driver here but is a GPU's
work on a real run) and the driver's CPU per rollout without it.

    python benchmarks/gpu_utilisation.py [--capacities 256 1024 4096] [--latencies 0.02 0.05 0.2]
                                         [--seconds 4] [--one-core]

``--seconds``: each configuration gets about this many seconds of the GPU's ideal rate
(capacity / latency rollouts/s) in problems, so each is short. Results:
``results/gpu_utilisation.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import prmtree

sys.path.insert(0, str(Path(__file__).parent))
from engine_throughput import MixedAnswerPolicy, mixed_problems  # noqa: E402
from verify_mix import MIX  # noqa: E402

RESULTS = Path(__file__).parent / "results"
ROLLOUTS_PER_PROBLEM = 120  # about what omega with default labels spends on this mix (for sizing a config)


class MeteredGPU(MixedAnswerPolicy):
    """The simulated GPU, metering how full it is and what its text generation costs."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.busy_integral = 0.0  # sequence-seconds decoding
        self.first = self.last = None
        self._since = 0.0
        self.model_cpu_s = 0.0
        self.peak_queue = 0
        self.series: list[tuple[float, float]] = []  # (time, busy integral so far): utilisation over any window

    def _tick(self) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = self._since = now
        self.busy_integral += self._decoding * (now - self._since)
        self._since = self.last = now
        self.series.append((now, self.busy_integral))

    async def _decode(self, sequences: int) -> None:
        if self._room is None:
            import asyncio

            self._room = asyncio.Condition()
        need = min(sequences, self.batch_capacity)
        async with self._room:
            await self._room.wait_for(lambda: self._decoding + need <= self.batch_capacity)
            self._tick()
            self._decoding += need
        try:
            import asyncio

            await asyncio.sleep(self.latency_s)
        finally:
            async with self._room:
                self._tick()
                self._decoding -= need
                self._room.notify_all()

    def complete(self, request: Any) -> list[Any]:
        start = time.thread_time()
        try:
            return super().complete(request)
        finally:
            self.model_cpu_s += time.thread_time() - start

    def utilisation(self) -> float:
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


def one(capacity: int, latency_s: float, problems: int, executor: dict[str, Any] | None = None) -> dict[str, Any]:
    gpu = MeteredGPU(latency_s=latency_s, batch_capacity=capacity)
    data = mixed_problems(problems, seed=99, weights=MIX)
    out = Path(tempfile.mkdtemp(prefix="prmtree-util-"))
    seen_trees = [0]
    driver_box: list[Any] = []

    def on_problem(_finished: Any, _stats: Any) -> None:
        pass

    import prmtree.engine.driver as driver_mod

    original_start = driver_mod.Driver._start

    moments: dict[str, float] = {}

    async def counting_start(self: Any, problem: Any, pending: Any) -> Any:
        if not driver_box:
            driver_box.append(self)
        if "pilot_done" not in moments and (self.pilot is None or self.pilot.calibration is not None):
            moments["pilot_done"] = time.perf_counter()
        pending = await original_start(self, problem, pending)
        moments["last_start"] = time.perf_counter()
        seen_trees[0] = max(seen_trees[0], len(pending) - self._waiting_for_pilot)
        return pending

    driver_mod.Driver._start = counting_start  # type: ignore[method-assign]
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        s = prmtree.run(data, policy=gpu, out=out, seed=0, config={"executor": executor or {}})
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        driver_mod.Driver._start = original_start  # type: ignore[method-assign]
        shutil.rmtree(out, ignore_errors=True)
    driver_cpu = cpu - gpu.model_cpu_s
    concurrency = driver_box[0].concurrency.as_dict() if driver_box else {}
    pool_cpu = s.stats.get("verifier", {}).get("pool_cpu_s", 0.0)
    result = {
        "capacity": capacity,
        "latency_ms": round(latency_s * 1000),
        "problems": problems,
        "rollouts": s.rollouts,
        "requests": s.requests,
        "wall_s": round(wall, 3),
        "rollouts_per_s": round(s.rollouts / wall, 1),
        "ideal_rollouts_per_s": round(capacity / latency_s),
        "gpu_busy": round(gpu.utilisation(), 4),
        # from the pilot's end (floors learned) to the last problem's start: the steady state,
        # without the pilot's serial start and the tail of the last trees
        "gpu_busy_steady": (round(b, 4) if (b := gpu.utilisation_between(moments.get("pilot_done"),
                                                                       moments.get("last_start"))) is not None else None),
        "pilot_s": round(moments["pilot_done"] - gpu.first, 2) if "pilot_done" in moments and gpu.first else None,
        "max_trees_in_flight": seen_trees[0],
        "concurrency": concurrency,
        "process_cpu_s": round(cpu, 3),
        "driver_busy": round(cpu / wall, 3),
        "model_cpu_s": round(gpu.model_cpu_s, 3),
        "math_verify_pool_cpu_s": round(pool_cpu, 3),
        "driver_cpu_ms_per_rollout": round(1000 * driver_cpu / max(1, s.rollouts), 4),
    }
    print(f"capacity {capacity:5d}  latency {latency_s * 1000:4.0f} ms  {s.rollouts:>8,} rollouts in {wall:6.2f} s: "
          f"{result['rollouts_per_s']:>9,.0f}/s of {result['ideal_rollouts_per_s']:>7,}  GPU busy "
          f"{result['gpu_busy']:6.1%} (steady {result['gpu_busy_steady'] or 0:6.1%}, pilot {result['pilot_s']} s)  trees {seen_trees[0]:5d}  driver process {result['driver_busy']:5.0%} of a core "
          f"(model text {gpu.model_cpu_s:5.2f} s), driver {result['driver_cpu_ms_per_rollout']:.4f} ms/rollout",
          flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacities", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--latencies", type=float, nargs="+", default=[0.02, 0.05, 0.2])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--max-problems", type=int, default=3000)
    parser.add_argument("--one-core", action="store_true", help="pin the driver to one core")
    parser.add_argument("--out", default=str(RESULTS / "gpu_utilisation.json"))
    args = parser.parse_args()
    if args.one_core and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    results = []
    for capacity in args.capacities:
        for latency in args.latencies:
            ideal = capacity / latency
            # enough problems to keep the GPU full for a while, never fewer than 3 waves of trees
            problems = int(min(args.max_problems, max(3 * capacity / 4, ideal * args.seconds / ROLLOUTS_PER_PROBLEM)))
            results.append(one(capacity, latency, problems))
    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    payload = {"settings": "defaults (no [executor] keys); omega, adaptive labels, pilot on", "results": results,
               "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()}
    out.write_text(json.dumps(payload, indent=2))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
