"""Several first-error searches per tree (``[search] paths_in_flight``) on an input smaller than the engine.

A simulated GPU of 1,024 sequences at 50 ms a call, 40 problems (about 4 sequences per
tree in flight: the engine is never full), omega with default labels (the pilot
included), ``paths_in_flight`` 1 / 2 / 4 / 8. Wall time, rollouts/s and what the labels
cost: labelled steps for about the same rollouts. Results: ``results/paths_in_flight.json``.

    python benchmarks/paths_in_flight.py [--problems 40] [--values 1 2 4 8]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import prmtree
from prmtree.engine.synthetic import generate_problems
from prmtree.policies.simulated import SimulatedPolicy

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=40)
    parser.add_argument("--values", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--out", default=str(RESULTS / "paths_in_flight.json"))
    args = parser.parse_args()
    problems = generate_problems(args.problems, seed=5)
    results = []
    for value in args.values:
        out = Path(tempfile.mkdtemp(prefix="prmtree-pif-"))
        start = time.perf_counter()
        s = prmtree.run(problems, policy=SimulatedPolicy(latency_s=0.05, batch_capacity=1024), out=out, seed=0,
                        config={"search": {"paths_in_flight": value}})
        wall = time.perf_counter() - start
        shutil.rmtree(out, ignore_errors=True)
        r = {"paths_in_flight": value, "wall_s": round(wall, 2), "rollouts": s.rollouts, "requests": s.requests,
             "steps_labelled": s.steps_labelled, "rollouts_per_s": round(s.rollouts / wall, 1),
             "rollouts_per_labelled_step": round(s.rollouts / max(1, s.steps_labelled), 3)}
        results.append(r)
        print(f"paths_in_flight {value}: {wall:5.1f} s, {s.rollouts:,} rollouts ({r['rollouts_per_s']:,.0f}/s), "
              f"{s.steps_labelled:,} labelled steps ({r['rollouts_per_labelled_step']} rollouts each)", flush=True)
    Path(args.out).write_text(json.dumps({"problems": args.problems, "capacity": 1024, "latency_ms": 50,
                                          "results": results}, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
