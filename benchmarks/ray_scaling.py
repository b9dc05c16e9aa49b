"""Ray scaling: throughput with 1, 2, 4, 8 rollout workers, against the peers' loop.

Each worker hosts the simulated policy with a GPU serving engine's latency model: 256
sequences decode at once, a completion takes 100 ms while the worker is under capacity,
and requests beyond capacity queue. The workers wait rather than compute, so this
measures the driver, the routing and Ray, not the model.

* prmtree: one driver, many trees in flight, the Ray executor with N workers;
* the peers' pattern: one process per GPU, one question at a time, each search step
  waiting for its k rollouts (the same latency model, inline);
* where the CPU goes: the driver's CPU per request and per rollout, and the machine's CPU
  per rollout split by process (driver, rollout workers, Ray's own daemons, the rest), so
  a run that cannot scale on this machine shows whether the driver or the machine is full;
* how many GPUs one driver core feeds at ``--gpu-rollouts-per-s`` rollouts/s per GPU;
* ``--drivers 1 2``: each worker count with 1 and with 2 drivers sharing the pool
  (``prmtree/multi_driver.py``), the job's trees in flight shared out between them. The
  driver CPU is then the job's process plus its driver actors; ``steady_rollouts_per_s``
  leaves out the start (the pool and the drivers' processes) and the tail.

    python benchmarks/ray_scaling.py [--workers 1 2 4 8] [--drivers 1 2] [--out results/ray_scaling.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
LATENCY = {"latency_s": 0.1, "batch_capacity": 256}


def _process_kind(name: str, cmdline: list[str]) -> str:
    """Which part of the run a process is: the Ray actor titles and daemon names."""
    title = " ".join(cmdline[:1]) or name
    if "RolloutWorker" in title:
        return "workers"
    if "SliceDriver" in title:  # a driver actor of a --drivers job
        return "driver"
    if any(d in name or d in title for d in ("raylet", "gcs_server", "ray::", "dashboard", "log_monitor",
                                              "runtime_env", "monitor.py", "default_worker")):
        return "ray"
    return "other"


def cpu_snapshot() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of every process now, with its kind."""
    import psutil

    out = {}
    for p in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        try:
            t = p.info["cpu_times"]
            out[p.pid] = (_process_kind(p.info["name"] or "", p.info["cmdline"] or []), t.user + t.system)
        except (psutil.Error, TypeError):
            continue
    return out


def cpu_by_kind(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds spent between two snapshots, by process kind (this process is a driver, or
    the job of several)."""
    me = os.getpid()
    spent: dict[str, float] = {"driver": 0.0, "workers": 0.0, "ray": 0.0, "other": 0.0}
    for pid, (kind, cpu) in after.items():
        delta = cpu - before.get(pid, (kind, 0.0))[1]
        spent["driver" if pid == me else kind] += max(0.0, delta)
    return spent


def one_run(workers: int | None, problems: list, trees_in_flight: int, drivers: int = 1) -> dict[str, Any]:
    import prmtree

    executor: dict[str, Any] = {"trees_in_flight": trees_in_flight}
    if workers:
        executor.update(kind="ray", workers=workers, num_cpus_per_worker=0, queue_limit=64, drivers=drivers,
                        num_cpus_per_driver=0)
    samples: list[tuple[float, int]] = []
    before = cpu_snapshot()
    seen = dict(before)  # the last CPU time of every process, kept after the job kills its actors

    def sample(stats: Any) -> None:
        now = time.perf_counter()
        if not samples or now - samples[-1][0] >= 0.5:
            seen.update(cpu_snapshot())
        samples.append((now, stats.rollouts))

    t = time.perf_counter()
    s = prmtree.run(problems, policy="simulated", policy_args=LATENCY, config={"executor": executor},
                    on_progress=sample)
    wall = time.perf_counter() - t
    seen.update(cpu_snapshot())
    spent = cpu_by_kind(before, seen)
    cpu = spent["driver"]
    machine = sum(spent.values())
    return {"workers": workers or 1, "drivers": drivers, "executor": "ray" if workers else "inline",
            "problems": len(problems), "trees_in_flight": trees_in_flight, "rollouts": s.rollouts,
            "requests": s.stats["requests"], "wall_s": round(wall, 2), "rollouts_per_s": round(s.rollouts / wall, 1),
            "steady_rollouts_per_s": _steady_rate(samples, s.rollouts),
            "driver_cpu_ms_per_rollout": round(1000 * cpu / s.rollouts, 4),
            "driver_cpu_ms_per_request": round(1000 * cpu / s.stats["requests"], 3),
            "driver_busy": round(cpu / wall, 3),
            "machine_cpu_ms_per_rollout": {k: round(1000 * v / s.rollouts, 4) for k, v in spent.items()},
            "machine_busy_cores": round(machine / wall, 2),
            "batches": s.stats["executor"].get("batches")}


def _steady_rate(samples: list[tuple[float, int]], total: int) -> float | None:
    """Rollouts/s between 10% and 90% of the run's rollouts: no start-up, no tail."""
    inside = [(t, r) for t, r in samples if 0.1 * total <= r <= 0.9 * total]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    return round((inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0]), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--drivers", type=int, nargs="+", default=[1],
                        help="driver counts to run each worker count with (e.g. 1 2)")
    parser.add_argument("--problems-per-worker", type=int, default=160)
    parser.add_argument("--gpu-rollouts-per-s", type=float, default=20.0,
                        help="a real GPU's rate, for the capacity figure (a 7B VLM: about 20)")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "ray_scaling.json"))
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from prmtree.engine.synthetic import generate_problems

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    pool = generate_problems(args.problems_per_worker * max(args.workers), seed=5)
    runs = []
    for w in args.workers:
        for d in args.drivers:
            # 64 trees per worker: each omega tree has one request of k=8 in flight, so
            # 32 trees fill a worker's 256 sequences; twice that keeps it full between waves.
            r = one_run(w, pool[: args.problems_per_worker * w], trees_in_flight=64 * w, drivers=d)
            runs.append(r)
            m = r["machine_cpu_ms_per_rollout"]
            print(f"{w} worker(s), {d} driver(s): {r['rollouts_per_s']:>8,.0f} rollouts/s "
                  f"(steady {r['steady_rollouts_per_s'] or 0:,.0f}; {r['rollouts']:,} rollouts in {r['wall_s']} s); "
                  f"driver {r['driver_cpu_ms_per_request']} ms CPU per request, busy {r['driver_busy']:.0%}; machine "
                  f"{r['machine_busy_cores']} of {os.cpu_count()} cores busy, ms CPU per rollout: driver {m['driver']}, "
                  f"workers {m['workers']}, ray {m['ray']}, other {m['other']}")
    ray.shutdown()
    by_drivers = runs
    runs = [r for r in by_drivers if r["drivers"] == min(args.drivers)]  # the scaling figures: one driver count
    peers = None
    if not args.no_peers:
        peers = one_run(None, pool[:6], trees_in_flight=1)  # one question at a time, one GPU
        print(f"peers' loop (one question at a time, one GPU): {peers['rollouts_per_s']:,.0f} rollouts/s")
    one = next(r for r in runs if r["workers"] == min(args.workers))
    base = one["rollouts_per_s"] / one["workers"]
    scaling = {str(r["workers"]): round(r["rollouts_per_s"] / (base * r["workers"]), 3) for r in runs}
    per_worker_capacity = LATENCY["batch_capacity"] / LATENCY["latency_s"] / 8  # requests/s of one full worker
    cpu_per_request_s = max(r["driver_cpu_ms_per_request"] for r in runs) / 1000
    cpu_per_rollout_s = max(r["driver_cpu_ms_per_rollout"] for r in runs) / 1000
    biggest = max(runs, key=lambda r: r["workers"])
    summary = {
        "scaling_efficiency": scaling,
        "workers_one_driver_core_can_saturate": round(1 / cpu_per_request_s / per_worker_capacity, 1),
        "driver_rollouts_per_core_s": round(1 / cpu_per_rollout_s),
        "gpus_per_driver_core": round(1 / cpu_per_rollout_s / args.gpu_rollouts_per_s),
        "gpu_rollouts_per_s": args.gpu_rollouts_per_s,
        "machine_cores": os.cpu_count(),
        "largest_run_machine_busy_cores": biggest["machine_busy_cores"],
        "largest_run_ceiling_rollouts_per_s": round(
            1000 * (os.cpu_count() or 1) / sum(biggest["machine_cpu_ms_per_rollout"].values())),
    }
    if len(args.drivers) > 1:
        summary["drivers_speedup"] = {  # steady rollouts/s against the fewest drivers, per worker count
            str(w): {str(r["drivers"]): round((r["steady_rollouts_per_s"] or r["rollouts_per_s"])
                                              / (base_r["steady_rollouts_per_s"] or base_r["rollouts_per_s"]), 3)
                     for r in by_drivers if r["workers"] == w}
            for w in args.workers
            for base_r in [next(r for r in by_drivers if r["workers"] == w and r["drivers"] == min(args.drivers))]
        }
    if peers is not None:
        summary["one_worker_over_peers"] = round(one["rollouts_per_s"] / peers["rollouts_per_s"], 1)
    print(json.dumps(summary, indent=2))
    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"latency_model": LATENCY, "runs": by_drivers, "peers": peers, "summary": summary},
                              indent=2))


if __name__ == "__main__":
    main()
