"""Manifest flush time at 10K / 100K / 1M completed problems (issue 21).

Synthetic: a ``DatasetWriter`` whose manifest already lists N completed problems (ids,
fingerprints, one flush group and four shard entries per 1,000 problems, as a run with
flushes of 1,000 problems would), then flushes of 1,000 new problems without rows (so the
time is the manifest's, not Parquet's).

* before: the whole manifest rewritten at every flush, exactly as every flush did before
  issue 21 (new lists built, ``asdict``, indented JSON, atomic replace);
* final: the whole manifest as the final ``finished`` flush now writes it, once per run;
* after: a log record of the flush's additions appended and fsynced, then the small
  manifest replaced (a running run's flush).

Also: load time of each form, and the bytes each flush writes. Prints a table and saves
``benchmarks/results/manifest_flush.json``.

    python benchmarks/manifest_flush.py [--sizes 10000 100000 1000000] [--flushes 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from dataclasses import asdict, replace

from prmtree.engine.output import DatasetWriter, Manifest, load_manifest
from prmtree.engine.output.atomic import write_text_atomic
from prmtree.engine.output.manifest import log_name
from prmtree.engine.stats import RunStats

PER_FLUSH = 1_000
TABLES = ("steps", "nodes", "pairs", "errors")


def _ids(first: int, n: int) -> list[str]:
    return [f"vqa-{i:09d}" for i in range(first, first + n)]


def _manifest(n: int) -> Manifest:
    """A manifest listing ``n`` completed problems, as flushes of 1,000 would leave it."""
    m = Manifest(config={"search": {"k": 8, "budget": 64}}, config_hash="0" * 16, versions={"prmtree": "bench"})
    for flush, first in enumerate(range(0, n, PER_FLUSH)):
        ids = _ids(first, min(PER_FLUSH, n - first))
        m.completed.extend(ids)
        m.fingerprints.update((pid, f"{hash(pid) & (2**64 - 1):016x}") for pid in ids)
        m.flushes[str(flush)] = {"completed": ids, "rejected": []}
        for table in TABLES:
            m.shards.append({"table": table, "file": f"{table}/part-{flush:05d}.parquet", "rows": 4000,
                             "bytes": 1 << 20, "sha256": "f" * 64, "flush": flush})
    return m


def _pend(writer: DatasetWriter, first: int) -> None:
    for pid in _ids(first, PER_FLUSH):
        writer.pending_completed.append(pid)
        writer.pending_fingerprints[pid] = f"{hash(pid) & (2**64 - 1):016x}"


def _old_flush(writer: DatasetWriter, stats: RunStats) -> None:
    """A shard-less flush as the writer did it before issue 21: the next manifest built
    beside the current one, then written whole (``asdict`` and indented JSON)."""
    m = writer.manifest
    flushes = dict(m.flushes)
    flushes[str(writer.next_flush)] = {"completed": list(writer.pending_completed), "rejected": []}
    done = set(writer.pending_completed)
    new = replace(m, shards=[*m.shards], completed=[*m.completed, *writer.pending_completed],
                  skipped=dict(m.skipped), rejected=dict(m.rejected),
                  failed={k: v for k, v in m.failed.items() if k not in done},
                  fingerprints={**m.fingerprints, **writer.pending_fingerprints}, flushes=flushes,
                  stats=stats.to_dict())
    data = asdict(new)
    del data["log"]
    write_text_atomic(writer.out_dir / "manifest.json", json.dumps(data, indent=1, sort_keys=True))
    vars(m).update(vars(new))
    writer.next_flush += 1
    writer.pending_completed, writer.pending_fingerprints = [], {}


def _size(out: Path) -> int:
    return sum(p.stat().st_size for p in (out / "manifest.json", out / log_name("manifest.json")) if p.exists())


def measure(n: int, flushes: int, root: Path) -> dict:
    stats = RunStats(problems_done=n)
    result: dict = {"completed": n}
    for mode in ("before", "final", "after"):
        out = root / f"{mode}-{n}"
        writer = DatasetWriter(out, _manifest(n))
        status = "finished" if mode == "final" else "running"
        if mode == "after":  # the log's base: written once, by the first flush of a run (or resume)
            _pend(writer, n)
            t = time.perf_counter()
            writer.flush(stats, status)
            result["after_first_flush_s"] = time.perf_counter() - t
        times, written = [], []
        for i in range(flushes):
            first = len(writer.manifest.completed)
            _pend(writer, first)
            size = _size(out)
            t = time.perf_counter()
            _old_flush(writer, stats) if mode == "before" else writer.flush(stats, status)
            times.append(time.perf_counter() - t)
            # bytes this flush wrote: the whole file (before) or the log's growth plus the small manifest
            if mode != "after":
                written.append((out / "manifest.json").stat().st_size)
            else:
                written.append(_size(out) - size + (out / "manifest.json").stat().st_size)
        t = time.perf_counter()
        loaded = load_manifest(out / "manifest.json")
        load_s = time.perf_counter() - t
        assert len(loaded.completed) == len(writer.manifest.completed)
        result[mode] = {"flush_ms_median": 1000 * statistics.median(times), "flush_ms_max": 1000 * max(times),
                        "bytes_per_flush": int(statistics.median(written)), "load_s": load_s,
                        "manifest_json_bytes": (out / "manifest.json").stat().st_size}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--flushes", type=int, default=5, help="timed flushes per size and form")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        results = [measure(n, args.flushes, Path(tmp)) for n in args.sizes]
    print(f"{'completed':>10} | {'before: flush ms':>16} {'bytes':>11} {'load s':>7} | "
          f"{'after: flush ms':>15} {'bytes':>7} {'load s':>7} {'first flush s':>13} | {'final flush ms':>14}")
    for r in results:
        b, a, f = r["before"], r["after"], r["final"]
        print(f"{r['completed']:>10,} | {b['flush_ms_median']:>16.1f} {b['bytes_per_flush']:>11,} {b['load_s']:>7.2f} | "
              f"{a['flush_ms_median']:>15.1f} {a['bytes_per_flush']:>7,} {a['load_s']:>7.2f} "
              f"{r['after_first_flush_s']:>13.2f} | {f['flush_ms_median']:>14.1f}")
    path = Path(__file__).parent / "results" / "manifest_flush.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"benchmark": "manifest_flush", "per_flush": PER_FLUSH, "flushes": args.flushes,
                                "python": platform.python_version(), "machine": platform.machine(),
                                "results": results}, indent=1) + "\n")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
