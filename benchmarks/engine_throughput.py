"""Engine throughput: rollouts per second on one core, end to end.

Zero-latency simulated policy, inline executor, omega search, labelling and Parquet
writing (embedded PNGs) included: everything the driver does except the model. One
driver must feed a cluster of ~100 GPUs at ~50-100 rollouts/s each, so the target is
10,000 rollouts/s. ``--profile`` prints the hottest functions.

    python benchmarks/engine_throughput.py [--problems 2000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shutil
import tempfile
import time
from pathlib import Path

import prmtree
from prmtree.engine.synthetic import generate_problems
from prmtree.policies.simulated import SimulatedPolicy

RESULTS = Path(__file__).parent / "results"


def measure(problems: list, strategy: str) -> dict:
    out = Path(tempfile.mkdtemp(prefix="prmtree-bench-"))
    try:
        t = time.perf_counter()
        cpu = time.process_time()
        s = prmtree.run(problems, policy=SimulatedPolicy(), strategy=strategy, out=out, seed=0)
        wall = time.perf_counter() - t
        cpu = time.process_time() - cpu
        size = sum(f.stat().st_size for f in out.rglob("*.parquet"))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {
        "strategy": strategy,
        "problems": len(problems),
        "rollouts": s.rollouts,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "rollouts_per_s": round(s.rollouts / wall, 1),
        "rollouts_per_cpu_s": round(s.rollouts / cpu, 1),
        "steps_labelled": s.steps_labelled,
        "parquet_mb": round(size / 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=2000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    problems = generate_problems(args.problems, seed=99)
    results = []
    for strategy in ("omega", "shepherd", "mcts"):
        if args.profile and strategy == "omega":
            prof = cProfile.Profile()
            prof.enable()
            r = measure(problems, strategy)
            prof.disable()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        else:
            r = measure(problems, strategy)
        results.append(r)
        print(
            f"{strategy:9s} {r['rollouts']:>9,} rollouts in {r['wall_s']:6.2f} s: "
            f"{r['rollouts_per_s']:>9,.0f} rollouts/s (one core), {r['parquet_mb']} MB of Parquet"
        )
    RESULTS.mkdir(exist_ok=True)
    payload = {"target_rollouts_per_s": 10_000, "results": results,
               "target_met": all(r["rollouts_per_s"] >= 10_000 for r in results)}
    (RESULTS / "engine_throughput.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
