"""Output overhead: writer speed with embedded images, and memory over a long run.

1. The writer alone: ``steps`` rows with an embedded PNG each, through DatasetWriter
   (buffering, zstd Parquet, fsync, rename, manifest): rows/s and MB/s of Parquet.
2. Peak memory of a 100,000-problem simulated run (streamed synthetic input, zero
   latency, a small budget so it finishes in minutes), against a 10,000-problem run:
   memory must stay flat, holding in-flight state only, not the dataset.

    python benchmarks/output_overhead.py [--big 100000]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

MEMORY_RUN = """
import json, resource, sys, threading, time
import prmtree
from prmtree.engine.synthetic import iter_synthetic
samples = []
def sample():
    while True:
        with open('/proc/self/statm') as f:
            samples.append(int(f.read().split()[1]) * 4096)
        time.sleep(0.5)
threading.Thread(target=sample, daemon=True).start()
n, out = int(sys.argv[1]), sys.argv[2]
t = time.perf_counter()
s = prmtree.run(iter_synthetic(n, seed=1), policy="simulated", out=out,
                config={"search": {"k": 4, "budget": 16}, "output": {"rows_per_shard": 20000}})
print(json.dumps({"problems": n, "rollouts": s.rollouts, "seconds": time.perf_counter() - t,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_mb_at_quarters": [samples[int(len(samples) * q)] / 2**20 for q in (0.25, 0.5, 0.75)]
                  if samples else []}))
"""


def writer_speed(rows: int = 20_000) -> dict:
    from prmtree.engine.config import OutputConfig, RunConfig
    from prmtree.engine.output import DatasetWriter, Manifest
    from prmtree.engine.synthetic import generate_problems
    from prmtree.engine.tables import ProblemRows

    problems = generate_problems(rows // 10, seed=3)  # ten paths per problem, as in a real run
    out = Path(tempfile.mkdtemp(prefix="prmtree-writer-"))
    try:
        cfg = RunConfig()
        manifest = Manifest(config=cfg.model_dump(mode="json"), config_hash=cfg.config_hash(), versions={})
        writer = DatasetWriter(out, manifest, config=OutputConfig(rows_per_shard=5_000))
        steps = [f"Step text number {i} with some reasoning, x = {i} + 3 = {i + 3}." for i in range(8)]
        t = time.perf_counter()
        t = time.perf_counter()
        for i in range(rows):
            p = problems[i // 10]
            row = {
                "problem_id": f"{p.id}-{i}", "path_id": f"{i:016x}", "prompt": p.question,
                "images": [{"bytes": p.images[0].data, "path": p.images[0].path}],
                "completions": steps, "labels": [True] * 7 + [False], "values": [0.5] * 7 + [0.0],
                "answer": p.answer, "final_correct": False, "strategy": "omega", "policy": "simulated",
            }
            writer.add_problem(row["problem_id"], ProblemRows(steps=[row]), None)
        writer.close(None)
        seconds = time.perf_counter() - t
        size = sum(f.stat().st_size for f in out.rglob("*.parquet"))
        image_bytes = sum(len(problems[i // 10].images[0].data) for i in range(rows))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds),
            "parquet_mb_per_s": round(size / 1e6 / seconds, 2), "parquet_mb": round(size / 1e6, 2),
            "embedded_image_mb": round(image_bytes / 1e6, 2),
            "embedded_image_mb_per_s": round(image_bytes / 1e6 / seconds, 2)}


def memory_run(n: int) -> dict:
    out = tempfile.mkdtemp(prefix="prmtree-mem-")
    try:
        r = subprocess.run([sys.executable, "-c", MEMORY_RUN, str(n), out], capture_output=True, text=True, check=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--big", type=int, default=100_000)
    args = parser.parse_args()
    w = writer_speed()
    print(f"writer: {w['rows_per_s']:,} rows/s, {w['parquet_mb_per_s']} MB/s of Parquet written, "
          f"{w['embedded_image_mb_per_s']} MB/s of embedded images ({w['rows']:,} rows, {w['parquet_mb']} MB)")
    runs = []
    for n in (args.small, args.big):
        r = memory_run(n)
        runs.append(r)
        print(f"{n:>7,} problems: {r['rollouts']:,} rollouts in {r['seconds']:.0f} s, peak RSS {r['peak_rss_mb']:.0f} MB, "
              f"RSS at 1/4, 1/2, 3/4: {', '.join(f'{x:.0f}' for x in r['rss_mb_at_quarters'])} MB")
    ratio = runs[1]["peak_rss_mb"] / runs[0]["peak_rss_mb"]
    print(f"peak memory, {args.big:,} vs {args.small:,} problems: {ratio:.2f}x")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "output_overhead.json").write_text(json.dumps(
        {"writer": w, "memory": runs, "peak_rss_ratio_big_over_small": round(ratio, 3),
         "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}, indent=2))


if __name__ == "__main__":
    main()
