"""Sizing against a backend that declares no capacity (an OpenAI-compatible server): the
driver probes it (``engine.driver.Concurrency``). Each simulated server runs twice on the
same problems: probed, and with its capacity declared (the reference a user would tune
by hand). Reported: wall time, tokens/s (against the server's most, where it has one),
sequences in flight, where the limit settled, its halvings, request latency, and whether
the rows equal the declared run's (they must: rows never depend on concurrency).

Servers (in-process policies; latency per request, no 429s):
- ``tokens``: no limit, 2 ms per token of the request's longest completion (next steps
  beside whole rollouts make latency spread 6x with no load at all);
- ``jitter``: no limit, 100 ms × lognormal(σ = 0.5) per request, token counts not given;
- ``knee``: a batched engine past its knee: 4 ms per token × max(1, sequences in flight ÷ 64),
  so it makes at most 16,000 tokens/s, and more in flight only adds latency.

    python benchmarks/probed_sizing.py [--problems 120] [--out benchmarks/results/probed_sizing.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

import prmtree
from prmtree.engine.records import Completion
from prmtree.engine.synthetic import generate_problems
from prmtree.policies.simulated import SimulatedPolicy

KNEE, PER_TOKEN_S = 64, 0.004


class Server(SimulatedPolicy):
    """The simulated policy's completions, answered after a server's latency; counts
    sequences in flight (time-weighted) and tokens."""

    name = "simulated"

    def __init__(self, kind: str, declared: int | None) -> None:
        super().__init__()
        self.kind, self.declared = kind, declared
        self.rng = random.Random(0)
        self.now = self.tokens = 0
        self.latencies: list[float] = []
        self._area = 0.0
        self._since = time.perf_counter()

    @property
    def capacity(self) -> int | None:
        return self.declared

    def _tick(self, change: int) -> None:
        now = time.perf_counter()
        self._area += self.now * (now - self._since)
        self._since, self.now = now, self.now + change

    def latency(self, completions: list[Completion]) -> float:
        longest = max(c.num_tokens for c in completions)
        if self.kind == "tokens":
            return 0.002 * longest
        if self.kind == "jitter":
            return 0.1 * self.rng.lognormvariate(0, 0.5)
        return PER_TOKEN_S * longest * max(1.0, self.now / KNEE)

    async def generate(self, request: Any) -> list[Completion]:
        out = self.complete(request)
        self._tick(request.n)
        try:
            wait = self.latency(out)
            await asyncio.sleep(wait)
        finally:
            self._tick(-request.n)
        self.latencies.append(wait)
        self.tokens += sum(c.num_tokens for c in out)
        if self.kind == "jitter":  # a server that counts no tokens per choice
            out = [Completion(c.text, 0, c.finish_reason) for c in out]
        return out


def rows(out: Path) -> list[tuple]:
    """The steps table's paths, labels and values, in a stable order."""
    columns = ["problem_id", "path_id", "completions", "labels", "values"]
    found = [row for f in sorted(out.glob("steps/*.parquet")) for row in pq.read_table(f, columns=columns).to_pylist()]
    return sorted((r["problem_id"], r["path_id"], r["completions"], r["labels"], r["values"]) for r in found)


def one(kind: str, declared: int | None, problems: int, budget: int) -> tuple[dict[str, Any], list[tuple]]:
    server = Server(kind, declared)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        s = prmtree.run(generate_problems(problems, seed=2), policy=server, out=Path(tmp) / "o", seed=1,
                        config={"labels": {"learn_floor": False}, "search": {"budget": budget}})
        wall = time.perf_counter() - start
        found = rows(Path(tmp) / "o")
    server._tick(0)
    lat = sorted(server.latencies)
    sizing = s.stats["driver"]["sizing"]
    result = {
        "server": kind, "declared": declared, "wall_s": round(wall, 2), "problems_done": s.problems_done,
        "tokens_per_s": round(server.tokens / wall), "sequences_in_flight": round(server._area / wall, 1),
        "limit": sizing["limit"], "peak": sizing["peak"], "halvings": sizing["decreases"],
        "latency_p50_s": round(lat[len(lat) // 2], 3), "latency_p90_s": round(lat[9 * len(lat) // 10], 3),
    }
    if kind == "knee":
        result["server_most_tokens_per_s"] = round(KNEE / PER_TOKEN_S)
    return result, found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=120)
    ap.add_argument("--out", default="benchmarks/results/probed_sizing.json")
    args = ap.parse_args()
    results = []
    for kind, declared, budget in (("tokens", 256, 40), ("jitter", 256, 40), ("knee", KNEE, 200)):
        reference, ref_rows = one(kind, declared, args.problems, budget)
        probed, probed_rows = one(kind, None, args.problems, budget)
        probed["rows_equal_declared"] = probed_rows == ref_rows
        probed["wall_vs_declared"] = round(probed["wall_s"] / reference["wall_s"], 2)
        for r in (reference, probed):
            how = f"declared {r['declared']}" if r["declared"] else "probed"
            print(f"{kind:6s} {how:12s} wall {r['wall_s']:6.1f} s  {r['tokens_per_s']:7,} tokens/s  "
                  f"in flight {r['sequences_in_flight']:6.1f}  limit {r['limit']:5,} (peak {r['peak']:,}, "
                  f"{r['halvings']} halvings)  latency p50 {r['latency_p50_s']:.3f} s")
        print(f"{kind:6s} probed / declared wall {probed['wall_vs_declared']}x, rows equal: "
              f"{probed['rows_equal_declared']}")
        results += [reference, probed]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
