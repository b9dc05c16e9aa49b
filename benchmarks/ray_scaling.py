"""Ray scaling: throughput with 1, 2, 4, 8 rollout workers, against the peers' loop.

Each worker hosts the simulated policy with a GPU serving engine's latency model: 256
sequences decode at once, a completion takes 100 ms while the worker is under capacity,
and requests beyond capacity queue. The workers wait rather than compute, so this
measures the driver, the routing and Ray, not the CPU.

* prmtree: one driver, many trees in flight, the Ray executor with N workers;
* the peers' pattern: one process per GPU, one question at a time, each search step
  waiting for its k rollouts (the same latency model, inline);
* the driver's CPU time per rollout through Ray, and how many saturated workers one
  driver core can feed.

    python benchmarks/ray_scaling.py [--workers 1 2 4 8]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
LATENCY = {"latency_s": 0.1, "batch_capacity": 256}


def one_run(workers: int | None, problems: list, trees_in_flight: int) -> dict:
    import prmtree

    executor = {"trees_in_flight": trees_in_flight}
    if workers:
        executor.update(kind="ray", workers=workers, num_cpus_per_worker=0, queue_limit=64)
    t, cpu = time.perf_counter(), time.process_time()
    s = prmtree.run(problems, policy="simulated", policy_args=LATENCY, config={"executor": executor})
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    return {"workers": workers or 1, "executor": "ray" if workers else "inline", "problems": len(problems),
            "trees_in_flight": trees_in_flight, "rollouts": s.rollouts, "requests": s.stats["requests"],
            "wall_s": round(wall, 2), "rollouts_per_s": round(s.rollouts / wall, 1),
            "driver_cpu_ms_per_rollout": round(1000 * cpu / s.rollouts, 4),
            "driver_cpu_ms_per_request": round(1000 * cpu / s.stats["requests"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--problems-per-worker", type=int, default=160)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from prmtree.engine.synthetic import generate_problems

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    pool = generate_problems(args.problems_per_worker * max(args.workers), seed=5)
    runs = []
    for w in args.workers:
        # 64 trees per worker: each omega tree has one request of k=8 in flight, so
        # 32 trees fill a worker's 256 sequences; twice that keeps it full between waves.
        r = one_run(w, pool[: args.problems_per_worker * w], trees_in_flight=64 * w)
        runs.append(r)
        print(f"{w} worker(s): {r['rollouts_per_s']:>8,.0f} rollouts/s  ({r['rollouts']:,} rollouts in {r['wall_s']} s; "
              f"driver {r['driver_cpu_ms_per_request']} ms CPU per request)")
    ray.shutdown()
    peers = one_run(None, pool[:6], trees_in_flight=1)  # one question at a time, one GPU
    print(f"peers' loop (one question at a time, one GPU): {peers['rollouts_per_s']:,.0f} rollouts/s")
    one = next(r for r in runs if r["workers"] == 1)
    scaling = {str(r["workers"]): round(r["rollouts_per_s"] / (one["rollouts_per_s"] * r["workers"]), 3) for r in runs}
    per_worker_capacity = LATENCY["batch_capacity"] / LATENCY["latency_s"] / 8  # requests/s of one full worker
    cpu_per_request_s = max(r["driver_cpu_ms_per_request"] for r in runs) / 1000
    summary = {
        "scaling_efficiency": scaling,
        "one_worker_over_peers": round(one["rollouts_per_s"] / peers["rollouts_per_s"], 1),
        "workers_one_driver_core_can_saturate": round(1 / cpu_per_request_s / per_worker_capacity, 1),
    }
    print(json.dumps(summary, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ray_scaling.json").write_text(json.dumps(
        {"latency_model": LATENCY, "runs": runs, "peers": peers, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
