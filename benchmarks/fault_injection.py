"""Fault injection: does a job that meets failures end with exactly a clean run's dataset?

1,000 synthetic problems, the simulated policy behind a wrapper that fails 10% of calls
transiently (a retryable ``GenerationError``), a full outage in the middle (every call
fails until the run stops), three SIGTERMs and one concurrent second launch into the same
``--out``. The same command is re-run until it exits 0. Then: the dataset equals a clean
run's rows exactly (every table, images included), no problem failed for good, and
``prmtree verify`` passes.

    python benchmarks/fault_injection.py [--problems 1000] [--workdir DIR]

Prints and saves ``results/fault_injection.json``. About a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from prmtree.engine.errors import GenerationError
from prmtree.policies.simulated import SimulatedPolicy

HERE = Path(__file__).resolve().parent
# Small trees (k = 4, budget 24) so a full pass takes ~12 s at 0.05 s per request; frequent
# flushes so progress shows in the manifest; short retry backoff.
CONFIG = """\
[search]
k = 4
budget = 24
[executor]
trees_in_flight = 32
retry_backoff_s = 0.05
[output]
flush_interval_s = 0.5
rows_per_shard = 2000
"""
TABLES = ("steps", "nodes", "pairs", "errors")


class FlakyPolicy(SimulatedPolicy):
    """The simulated policy, failing ``fail_rate`` of calls transiently, and every call
    while ``outage_file`` exists. Counts go to ``log`` (one JSON line per process).

    Failures change how a run goes, never its text, so these arguments are operational;
    and ``name`` is the simulated policy's, so the rows equal a clean run's."""

    name = "simulated"
    operational_args = SimulatedPolicy.operational_args | {"fail_rate", "outage_file", "log"}

    def __init__(self, fail_rate: float = 0.1, outage_file: str = "", log: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fail_rate, self.outage_file, self.log = fail_rate, outage_file, log
        self._rng = random.Random()
        self._counts = {"calls": 0, "transient": 0, "outage": 0}

    async def generate(self, request):  # type: ignore[no-untyped-def]
        self._counts["calls"] += 1
        if self.outage_file and os.path.exists(self.outage_file):
            self._counts["outage"] += 1
            raise GenerationError("backend down: connection refused")
        if self._rng.random() < self.fail_rate:
            self._counts["transient"] += 1
            raise GenerationError("503 Service Unavailable (injected)")
        return await super().generate(request)

    async def close(self) -> None:
        if self.log:
            with open(self.log, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(self._counts) + "\n")


def row_digests(out: Path, table: str) -> list[str]:
    """A table's rows (images included) as sorted digests: equal iff the same rows."""
    from prmtree.engine.output import read_table

    return sorted(hashlib.sha256(repr(r).encode()).hexdigest() for r in read_table(out, table).to_pylist())


def completed(out: Path) -> int:
    try:
        return len(json.loads((out / "manifest.json").read_text())["completed"])
    except (OSError, ValueError, KeyError):
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=1000)
    parser.add_argument("--workdir", help="default: a temporary directory")
    args = parser.parse_args()
    from prmtree.engine.lock import is_locked
    from prmtree.engine.synthetic import generate_problems, write_jsonl

    work = Path(args.workdir or tempfile.mkdtemp(prefix="prmtree-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    data = write_jsonl(generate_problems(args.problems, seed=0), work / "data")
    (work / "run.toml").write_text(CONFIG)
    out, clean, outage, log = work / "out", work / "clean", work / "OUTAGE", work / "policy_counts.jsonl"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    base = [sys.executable, "-m", "prmtree", "run", "--input", str(data), "--config", str(work / "run.toml"),
            "--seed", "3", "--no-progress"]
    command = [*base, "--out", str(out), "--policy", "fault_injection:FlakyPolicy", "--policy-arg", "latency_s=0.05",
               "--policy-arg", "fail_rate=0.1", "--policy-arg", f"outage_file={outage}", "--policy-arg", f"log={log}"]

    t0 = time.perf_counter()
    r = subprocess.run([*base, "--out", str(clean), "--policy", "simulated"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    clean_s = time.perf_counter() - t0

    # One fault per launch until they are used up: (completed problems to wait for, the fault).
    faults = [(0.15, "sigterm"), (0.35, "sigterm"), (0.55, "outage"), (0.75, "sigterm")]
    launches: list[dict[str, Any]] = []
    second_launch: dict[str, Any] = {}
    t0 = time.perf_counter()
    while True:
        assert len(launches) < 20, launches
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        launch: dict[str, Any] = {"fault": None}
        if not second_launch:  # a double submit: the same command again, while the first runs
            while proc.poll() is None and not is_locked(out / ".manifest.json.lock"):
                time.sleep(0.05)
            t = time.perf_counter()
            r2 = subprocess.run(command, capture_output=True, text=True, env=env)
            second_launch = {"exit": r2.returncode, "seconds": round(time.perf_counter() - t, 2),
                             "stderr": r2.stderr.strip(), "first_still_running": proc.poll() is None}
        if faults:
            threshold, fault = faults[0]
            while proc.poll() is None and completed(out) < threshold * args.problems:
                time.sleep(0.05)
            if proc.poll() is None:
                faults.pop(0)
                launch.update(fault=fault, at_completed=completed(out))
                fault_at = time.perf_counter()
                if fault == "sigterm":
                    proc.send_signal(signal.SIGTERM)
                else:
                    outage.touch()
        stdout, stderr = proc.communicate()
        if outage.exists():
            outage.unlink()  # the backend is back
        if launch["fault"]:
            launch["stop_s"] = round(time.perf_counter() - fault_at, 2)
        launch.update(exit=proc.returncode, seconds=round(time.perf_counter() - start, 1), completed=completed(out),
                      failed=len(json.loads((out / "manifest.json").read_text())["failed"]),
                      last_line=stderr.strip().splitlines()[-1] if stderr.strip() else "")
        launches.append(launch)
        print(json.dumps(launch), flush=True)
        if proc.returncode == 0:
            break
    faulty_s = time.perf_counter() - t0

    verify = subprocess.run([sys.executable, "-m", "prmtree", "verify", str(out)], capture_output=True, text=True)
    manifest = json.loads((out / "manifest.json").read_text())
    equal = {t: row_digests(out, t) == row_digests(clean, t) for t in TABLES}
    counts = [json.loads(line) for line in log.read_text().splitlines()]
    result = {
        "problems": args.problems,
        "config": CONFIG,
        "clean_run_s": round(clean_s, 1),
        "faulty_job_s": round(faulty_s, 1),
        "launches": launches,
        "exit_codes": [x["exit"] for x in launches],
        "second_concurrent_launch": second_launch,
        "policy_calls": sum(c["calls"] for c in counts),
        "transient_failures_injected": sum(c["transient"] for c in counts),
        "outage_failures": sum(c["outage"] for c in counts),
        "retries": manifest["stats"]["retries"],
        "rows": {t: len(row_digests(out, t)) for t in TABLES},
        "rows_equal_clean_run": equal,
        "completed": len(manifest["completed"]),
        "failed_for_good": len(manifest["failed"]),
        "verify_exit": verify.returncode,
        "verify_output": verify.stdout.strip(),
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "fault_injection.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("launches", "config")}, indent=1))
    assert all(equal.values()), equal
    assert result["completed"] == args.problems and result["failed_for_good"] == 0
    assert verify.returncode == 0, verify.stdout
    assert second_launch["exit"] == 2 and second_launch["first_still_running"], second_launch
    assert [x["fault"] for x in launches if x["fault"]] == ["sigterm", "sigterm", "outage", "sigterm"], launches
    print(f"ok: {len(launches)} launches, {faulty_s:.0f} s; the dataset equals the clean run's")


if __name__ == "__main__":
    main()
