"""Fault injection: does a job that meets failures end with exactly a clean run's dataset,
and does every exit code on the way tell the truth?

Each scenario drives the real CLI (``python -m prmtree run ...``) in subprocesses, causes
its fault for real, then re-runs the same command until it exits 0 (a bounded number of
times). It passes when the rows then equal a clean run's in every table and every exit
code on the way was truthful: after each launch the manifest is audited against the clean
run's rows, problem by problem (a problem marked done must have exactly its clean rows; no
row may be read for a problem not marked done); an exit 0 must mean every problem done
with exactly the clean rows; an exit 3 must leave failed problems to retry; no launch may
end in a traceback. Scenarios (``--only NAME`` runs one; repeatable):

* ``faults`` — 1,000 problems, 10% of calls failing transiently, a full outage, three
  SIGTERMs and a concurrent second launch into the same ``--out``.
* ``disk_full`` — a real tmpfs (``mount -t tmpfs -o size=4m``) filled by a filler file
  to leave a little space, SIGTERM (its flush hits the full disk), the filler deleted a
  second later, then re-runs. Needs root.
* ``close_raises`` / ``close_hangs`` — the policy's ``close()`` raises, or blocks in a
  synchronous sleep: finished problems must be saved first, the close bounded in time
  (``--hang-limit``) and reported.
* ``generate_cancelled`` / ``generate_systemexit`` / ``generate_baseexception`` —
  ``generate`` raises ``asyncio.CancelledError`` / ``SystemExit(0)`` / a bare
  ``BaseException`` for one problem in ten: each is that request's failure.
* ``input_edited`` — a row's answer changed between runs: the rerun must refuse it in one
  line naming the row; the rerun with ``--rerun-changed`` redoes it and must equal a clean
  run on the edited input.
* ``stray_manifest`` — ``cp manifest.json manifest-backup.json`` in ``--out``: ``prmtree
  verify`` must flag it, readers must not count a row twice; after removing it, verify
  passes.

A fault is armed for the first launch only (the faulty policies of ``fault_policies.py``
fault while a file exists; the benchmark deletes it), as an operator fixes a backend.

    python benchmarks/fault_injection.py [--only SCENARIO] [--problems 1000]
        [--small-problems 60] [--disk-problems 200] [--workdir DIR]

Prints a table, saves ``results/fault_injection.json``, exits 1 if any scenario failed.
About three minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
# disk_full: no periodic or size-triggered flush, so the SIGTERM flush writes everything.
DISK_CONFIG = CONFIG.replace("flush_interval_s = 0.5", "flush_interval_s = 1000").replace(
    "rows_per_shard = 2000", "rows_per_shard = 1000000")
TABLES = ("steps", "nodes", "pairs", "errors")
MAX_TRIES = 6  # launches of the same command before a scenario gives up
TRACEBACK = "Traceback (most recent call last)"


# -- reading a run back ------------------------------------------------------------------

def _digest(row: dict[str, Any]) -> str:
    return hashlib.sha256(repr(row).encode()).hexdigest()


def rows_by_problem(out: Path) -> dict[str, dict[str, list[str]]]:
    """Each table's rows (images included) as digests, grouped by problem id and sorted."""
    from prmtree.engine.output import read_table

    found: dict[str, dict[str, list[str]]] = {}
    for table in TABLES:
        grouped: dict[str, list[str]] = defaultdict(list)
        for row in read_table(out, table).to_pylist():
            grouped[row["problem_id"]].append(_digest(row))
        found[table] = {pid: sorted(d) for pid, d in grouped.items()}
    return found


def row_digests(out: Path, table: str) -> list[str]:
    """A table's rows (images included) as sorted digests: equal iff the same rows."""
    from prmtree.engine.output import read_table

    return sorted(_digest(r) for r in read_table(out, table).to_pylist())


def manifest(out: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def completed(out: Path) -> int:
    m = manifest(out)
    return len(m.get("completed", [])) if m else 0


class Clean:
    """A clean run's rows: the reference every scenario's output is compared with."""

    def __init__(self, out: Path, ids: list[str]) -> None:
        self.out, self.ids = out, set(ids)
        self.by_problem = rows_by_problem(out)
        self.digests = {t: sorted(d for ds in self.by_problem[t].values() for d in ds) for t in TABLES}


def audit(out: Path, clean: Clean) -> dict[str, Any]:
    """What ``out`` holds against what its manifest says: problems marked done whose rows
    are missing or differ from the clean run's (``lost``), and rows read for problems the
    manifest does not mark done (``unlisted``: a resume would write them again)."""
    m = manifest(out)
    if m is None:
        return {"manifest": False, "done": 0, "failed": 0, "lost": 0, "unlisted": 0, "complete": False}
    done = set(m.get("completed", [])) | set(m.get("rejected", {}))
    try:
        found = rows_by_problem(out)
    except Exception as exc:  # noqa: BLE001 - a reader failing is a finding, reported
        return {"manifest": True, "status": m.get("status"), "done": len(done), "failed": len(m.get("failed", {})),
                "read_error": f"{type(exc).__name__}: {exc}", "lost": 0, "unlisted": 0, "complete": False}
    missing = len(clean.ids - done - set(m.get("failed", {})))  # neither done nor failed: vanished
    lost = sorted(pid for pid in done
                  if any(found[t].get(pid, []) != clean.by_problem[t].get(pid, []) for t in TABLES))
    unlisted = sorted({pid for t in TABLES for pid in found[t]} - done)
    equal = {t: sorted(d for ds in found[t].values() for d in ds) == clean.digests[t] for t in TABLES}
    # the directory's state (what is done, which rows): a launch that leaves it as it was
    # (a refused command) is not answerable for rows lost before it
    state = hashlib.sha256(repr((sorted(done), sorted(m.get("failed", {})), m.get("status"),
                                 [sorted(found[t].items()) for t in TABLES])).encode()).hexdigest()
    return {
        "manifest": True, "status": m.get("status"), "done": len(done), "failed": len(m.get("failed", {})),
        "missing": missing, "lost": len(lost), "lost_examples": lost[:3], "lost_ids": lost,
        "unlisted": len(unlisted), "unlisted_examples": unlisted[:3],
        "rows_equal_clean": equal, "state": state,
        "complete": done == clean.ids and not lost and not unlisted and all(equal.values())
        and m.get("status") == "finished",
    }


def untruthful(launch: dict[str, Any], before: dict[str, Any] | None) -> list[str]:
    """Why a launch's exit code (and message) claimed something its output does not hold.
    Rows lost before it (``before``: the previous launch's audit) count against it only
    when it exits 0; a launch that left the directory as it was (a refused command) is
    not answerable for them."""
    code, a, reasons = launch["exit"], launch["audit"], []
    tag = f"launch {launch['n']} (exit {code})"
    if launch.get("traceback"):
        reasons.append(f"{tag}: a traceback, not a one-line message")
    if a.get("read_error"):
        reasons.append(f"{tag}: its output cannot be read back: {a['read_error']}")
    changed = before is None or a.get("state") != before.get("state")
    new_loss = changed and set(a.get("lost_ids", ())) - set((before or {}).get("lost_ids", ()))
    if a["lost"] and (new_loss or code == 0):
        reasons.append(f"{tag}: {a['lost']} problems marked done have missing or different rows "
                       f"(e.g. {', '.join(a['lost_examples'])})")
    if a["unlisted"]:
        reasons.append(f"{tag}: rows are read for {a['unlisted']} problems not marked done "
                       f"(e.g. {', '.join(a['unlisted_examples'])})")
    if code == 0 and not a["complete"] and not a["lost"]:
        missing = "no manifest" if not a["manifest"] else \
            f"{a['done']} problems done, {a['failed']} failed, {a.get('missing')} neither, status {a.get('status')!r}"
        reasons.append(f"{tag}: exit 0 while the dataset is incomplete ({missing})")
    if code == 3 and a["failed"] == 0:
        reasons.append(f"{tag}: exit 3 says problems failed, the manifest lists none")
    return reasons


# -- launching ---------------------------------------------------------------------------

def _is_box(line: str) -> bool:
    return "\u2500" <= line.strip()[:1] <= "\u257f"


def _said(text: str) -> list[str]:
    """What a launch said, less the summary table (its box lines and the title above it)."""
    lines = [line for line in text.splitlines() if line.strip()]
    return [line.strip() for i, line in enumerate(lines)
            if not _is_box(line) and not (i + 1 < len(lines) and lines[i + 1].lstrip().startswith("\u250c"))]


def _message(stderr: str, stdout: str) -> str:
    """A launch's one-line message: the last line it printed besides its summary table (the
    last line of a traceback; stdout for verify and export), or that it printed only that."""
    said = _said(stderr) or _said(stdout)
    if TRACEBACK in stderr:
        return "traceback: " + (said[-1] if said else "")
    return said[-1] if said else "(its summary only)"


class Bench:
    """Shared state: the work directory, the environment, datasets and clean runs."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.env = {**os.environ,
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
                    "COLUMNS": "400"}  # one message, one line
        (work / "run.toml").write_text(CONFIG)
        (work / "disk.toml").write_text(DISK_CONFIG)
        self._data: dict[int, Path] = {}
        self._clean: dict[Path, Clean] = {}

    def prmtree(self, *argv: Any) -> list[str]:
        return [sys.executable, "-m", "prmtree", *map(str, argv)]

    def run_command(self, data: Path, out: Path, policy: str, *policy_args: str, config: str = "run.toml",
                    extra: tuple[str, ...] = ()) -> list[str]:
        args = [a for pa in policy_args for a in ("--policy-arg", pa)]
        return self.prmtree("run", "--input", data, "--config", self.work / config, "--seed", 3, "--no-progress",
                            "--out", out, "--policy", policy, *args, *extra)

    def dataset(self, n: int) -> Path:
        """``n`` synthetic problems (seed 0) as JSONL with PNG images."""
        if n not in self._data:
            from prmtree.engine.synthetic import generate_problems, write_jsonl

            self._data[n] = write_jsonl(generate_problems(n, seed=0), self.work / f"data-{n}")
        return self._data[n]

    def clean(self, data: Path) -> Clean:
        """An uninterrupted run of the plain simulated policy on ``data``."""
        if data not in self._clean:
            out = self.work / f"clean-{data.parent.name}-{data.stem}"
            r = subprocess.run(self.run_command(data, out, "simulated"), capture_output=True, text=True, env=self.env,
                               check=False)
            if r.returncode != 0:
                raise RuntimeError(f"the clean run on {data} exited {r.returncode}: {r.stderr.strip()[-500:]}")
            ids = [json.loads(line)["id"] for line in data.read_text().splitlines() if line.strip()]
            self._clean[data] = Clean(out, ids)
        return self._clean[data]

    def launch(self, cmd: list[str], n: int, clean: Clean | None, out: Path | None,
               inject: Callable[[subprocess.Popen[str]], dict[str, Any]] | None = None,
               deadline_s: float = 300.0) -> dict[str, Any]:
        """Run ``cmd`` once (``inject`` causes the fault while it runs); past ``deadline_s``
        it gets three SIGTERMs a second apart, then SIGKILL. Audited against ``clean``."""
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env,
                                start_new_session=True)
        record: dict[str, Any] = {"n": n, "fault": None}
        if inject is not None:
            record.update(inject(proc))
        ended_by = "itself"
        try:
            stdout, stderr = proc.communicate(timeout=max(0.1, deadline_s - (time.perf_counter() - start)))
        except subprocess.TimeoutExpired:
            ended_by = None
            for i in range(3):
                proc.send_signal(signal.SIGTERM)
                try:
                    stdout, stderr = proc.communicate(timeout=1)
                    ended_by = f"harness SIGTERM #{i + 1} after {deadline_s:g} s"
                    break
                except subprocess.TimeoutExpired:
                    pass
            if ended_by is None:
                os.killpg(proc.pid, signal.SIGKILL)
                stdout, stderr = proc.communicate()
                ended_by = f"harness SIGKILL (after {deadline_s:g} s and three SIGTERMs)"
        record.update(
            exit=proc.returncode, seconds=round(time.perf_counter() - start, 1), ended_by=ended_by,
            traceback=TRACEBACK in stderr,
            message=_message(stderr, stdout),
            messages=_said(stderr)[-4:],
            stdout=stdout, stderr=stderr,
        )
        if clean is not None and out is not None:
            record["audit"] = audit(out, clean)
        return record

    def until_zero(self, cmd: list[str], launches: list[dict[str, Any]], clean: Clean, out: Path,
                   **kwargs: Any) -> bool:
        """Re-run ``cmd`` until it exits 0 (at most ``MAX_TRIES`` launches in all)."""
        while len(launches) < MAX_TRIES:
            launches.append(self.launch(cmd, len(launches) + 1, clean, out, **kwargs))
            if launches[-1]["exit"] == 0:
                return True
        return False


def finish(name: str, problems: int, launches: list[dict[str, Any]], reasons: list[str],
           out: Path | None, clean: Clean | None, started: float, bench: Bench, **extra: Any) -> dict[str, Any]:
    """A scenario's result: truthfulness of every launch, then the final rows and verify."""
    before = None
    for launch in launches:
        if "audit" in launch:
            reasons.extend(untruthful(launch, before))
            before = launch["audit"]
    result: dict[str, Any] = {"scenario": name, "problems": problems}
    if out is not None and clean is not None:
        if not launches or launches[-1]["exit"] != 0:
            reasons.append(f"never exited 0 in {len(launches)} launches of the same command")
        try:
            equal = {t: row_digests(out, t) == clean.digests[t] for t in TABLES}
        except Exception as exc:  # noqa: BLE001
            equal = {t: False for t in TABLES}
            reasons.append(f"the final output cannot be read: {type(exc).__name__}: {exc}")
        if not all(equal.values()):
            reasons.append(f"final rows differ from the clean run's in {[t for t, ok in equal.items() if not ok]}")
        verify = subprocess.run(bench.prmtree("verify", out), capture_output=True, text=True, env=bench.env,
                                check=False)
        if verify.returncode != 0:
            reasons.append(f"prmtree verify exits {verify.returncode}: {verify.stdout.strip()[:200]}")
        result.update(rows_equal_clean=equal, verify_exit=verify.returncode)
    result.update(
        status="PASS" if not reasons else "FAIL",
        reasons=list(dict.fromkeys(reasons)),
        exit_codes=[x["exit"] for x in launches],
        messages=[x["message"] for x in launches],
        seconds=round(time.perf_counter() - started, 1),
        launches=[{k: ({a: b for a, b in v.items() if a not in ("lost_ids", "state")} if k == "audit" else v)
                   for k, v in x.items() if k not in ("stdout", "stderr")} for x in launches],
        **extra,
    )
    return result


# -- scenarios ---------------------------------------------------------------------------

def scenario_faults(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """Transient failures, an outage, three SIGTERMs and a concurrent second launch."""
    from prmtree.engine.lock import is_locked

    started = time.perf_counter()
    work = bench.work / "faults"
    work.mkdir()
    data = bench.dataset(args.problems)
    t0 = time.perf_counter()
    clean = bench.clean(data)
    clean_s = time.perf_counter() - t0
    out, outage, log = work / "out", work / "OUTAGE", work / "policy_counts.jsonl"
    command = bench.run_command(data, out, "fault_policies:FlakyPolicy", "latency_s=0.05", "fail_rate=0.1",
                                f"outage_file={outage}", f"log={log}")
    # One fault per launch until they are used up: (completed problems to wait for, the fault).
    faults = [(0.15, "sigterm"), (0.35, "sigterm"), (0.55, "outage"), (0.75, "sigterm")]
    second: dict[str, Any] = {}

    def inject(proc: subprocess.Popen[str]) -> dict[str, Any]:
        info: dict[str, Any] = {}
        if not second:  # a double submit: the same command again, while the first runs
            while proc.poll() is None and not is_locked(out / ".manifest.json.lock"):
                time.sleep(0.05)
            r2 = bench.launch(command, 0, None, None)
            second.update(exit=r2["exit"], seconds=r2["seconds"], message=r2["message"],
                          traceback=r2["traceback"], first_still_running=proc.poll() is None)
        if faults:
            threshold, fault = faults[0]
            while proc.poll() is None and completed(out) < threshold * args.problems:
                time.sleep(0.05)
            if proc.poll() is None:
                faults.pop(0)
                info.update(fault=fault, at_completed=completed(out))
                if fault == "sigterm":
                    proc.send_signal(signal.SIGTERM)
                else:
                    outage.touch()
        return info

    launches: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    while len(launches) < 20:
        launches.append(bench.launch(command, len(launches) + 1, clean, out, inject=inject))
        if outage.exists():
            outage.unlink()  # the backend is back
        if launches[-1]["exit"] == 0:
            break
    faulty_s = time.perf_counter() - t0
    reasons = []
    if not (second.get("exit") == 2 and second.get("first_still_running")):
        reasons.append(f"the concurrent second launch was not refused with exit 2: {second}")
    if [x["fault"] for x in launches if x["fault"]] != ["sigterm", "sigterm", "outage", "sigterm"]:
        reasons.append("not every fault was injected (a launch ended before its fault)")
    counts = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    m = manifest(out) or {}
    # launch lines as before: the faults scenario kept its own loop (up to 20 launches)
    return finish("faults", args.problems, launches, reasons, out, clean, started, bench,
                  second_concurrent_launch=second, clean_run_s=round(clean_s, 1), faulty_job_s=round(faulty_s, 1),
                  policy_calls=sum(c["calls"] for c in counts),
                  transient_failures_injected=sum(c["transient"] for c in counts),
                  outage_failures=sum(c["outage"] for c in counts),
                  retries=m.get("stats", {}).get("retries"))


def scenario_disk_full(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """A SIGTERM whose flush meets a full disk (a real tmpfs); the filler deleted 1 s later."""
    started = time.perf_counter()
    data = bench.dataset(args.disk_problems)
    clean = bench.clean(data)
    mnt = bench.work / "tmpfs"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.disk_mb}m", "tmpfs", str(mnt)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        return {"scenario": "disk_full", "problems": args.disk_problems, "status": "SKIP", "exit_codes": [],
                "messages": [], "reasons": [f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}"],
                "seconds": round(time.perf_counter() - started, 1)}
    try:
        out, filler, mark, armed = mnt / "out", mnt / "filler", bench.work / "disk.mark", bench.work / "disk.armed"
        # What the SIGTERM flush writes, estimated from the clean run: the problems done by
        # then (about half seen, minus the trees in flight) of each table's bytes. Leave room
        # for the first table's shard but not the rest, so the flush fails part-way.
        sizes = {t: sum(f.stat().st_size for f in (clean.out / t).glob("*.parquet")) for t in TABLES}
        half = args.disk_problems // 2
        share = max(half - 32, 1) / args.disk_problems
        leave = int(sizes["steps"] * share * 1.3) + 16 * 1024
        command = bench.run_command(data, out, "fault_policies:FaultPolicy", "latency_s=0.1", f"mark_file={mark}",
                                    f"mark_after_problems={half}", config="disk.toml")
        fill: dict[str, Any] = {}

        def inject(proc: subprocess.Popen[str]) -> dict[str, Any]:
            while proc.poll() is None and not mark.exists():
                time.sleep(0.02)
            if proc.poll() is not None:
                return {"fault": "none (the run ended before the cue)"}
            st = os.statvfs(mnt)
            free = st.f_bavail * st.f_frsize
            with open(filler, "wb") as handle:
                os.posix_fallocate(handle.fileno(), 0, max(free - leave, 0))
            st = os.statvfs(mnt)
            fill.update(free_before_kb=free // 1024, left_kb=st.f_bavail * st.f_frsize // 1024)
            proc.send_signal(signal.SIGTERM)
            # the SIGTERM flush starts at once; the trees in flight take a few seconds more
            t = time.perf_counter()
            while time.perf_counter() - t < 1.0 and not shards():
                time.sleep(0.01)
            time.sleep(0.2)
            fill["files_when_filler_deleted"] = shards()
            filler.unlink()
            fill["filler_deleted_after_s"] = round(time.perf_counter() - t, 2)
            return {"fault": f"disk filled to {fill['left_kb']} KB free, SIGTERM, filler deleted "
                             f"{fill['filler_deleted_after_s']} s later"}

        def shards() -> list[str]:
            return sorted(str(f.relative_to(out)) for t in TABLES for f in (out / t).glob("*") if f.is_file())

        armed.touch()
        launches = [bench.launch(command, 1, clean, out, inject=inject)]
        reasons = []
        first = launches[0]
        if first["exit"] == 0:
            reasons.append("launch 1 exited 0 after a SIGTERM")
        if first["fault"] and first["fault"].startswith("disk filled") and first["audit"]["lost"] == 0 \
                and "space" not in first["stderr"].lower():
            # the flush may have failed without a trace on disk: it must at least say so
            reasons.append("launch 1: the SIGTERM flush met a full disk and no message says so")
        bench.until_zero(command, launches, clean, out)
        return finish("disk_full", args.disk_problems, launches, reasons, out, clean, started, bench,
                      tmpfs_mb=args.disk_mb, disk=fill)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def _armed_scenario(name: str, policy_args: list[str], checks: Callable[[dict[str, Any], Clean], list[str]],
                    deadline_s: float | None = 300.0) -> Callable[[Bench, argparse.Namespace], dict[str, Any]]:
    """A scenario whose fault is armed for the first launch only, then re-runs until exit 0
    (``deadline_s`` None: the first launch gets ``--hang-limit``)."""

    def scenario(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
        started = time.perf_counter()
        data = bench.dataset(args.small_problems)
        clean = bench.clean(data)
        work = bench.work / name
        work.mkdir()
        out, armed = work / "out", work / "ARMED"
        command = bench.run_command(data, out, "fault_policies:FaultPolicy", "latency_s=0.02", f"armed_file={armed}",
                                    *policy_args)
        armed.touch()
        limit = args.hang_limit if deadline_s is None else deadline_s
        launches = [bench.launch(command, 1, clean, out, deadline_s=limit)]
        armed.unlink()
        reasons = checks(launches[0], clean)
        bench.until_zero(command, launches, clean, out)
        return finish(name, args.small_problems, launches, reasons, out, clean, started, bench)

    return scenario


def _close_checks(hangs: bool) -> Callable[[dict[str, Any], Clean], list[str]]:
    from fault_policies import CLOSE_ERROR

    def checks(first: dict[str, Any], clean: Clean) -> list[str]:
        reasons = []
        if first["ended_by"] != "itself":
            reasons.append(f"launch 1: close() was not bounded in time: ended by {first['ended_by']}")
        if first["audit"]["done"] != len(clean.ids):
            reasons.append(f"launch 1: {len(clean.ids)} problems finished before close(), "
                           f"{first['audit']['done']} saved (manifest: {first['audit']['manifest']})")
        if not hangs and CLOSE_ERROR not in first["stderr"]:
            reasons.append("launch 1: the close error is not reported")
        if hangs and "close" not in first["stderr"].lower() and first["ended_by"] == "itself":
            reasons.append("launch 1: the timed-out close is not reported")
        return reasons

    return checks


def _generate_checks(first: dict[str, Any], clean: Clean) -> list[str]:
    # Truthfulness (no exit 0 with a problem missing, no traceback) is checked for every
    # launch; a policy's exception must leave its problem failed (exit 3) or retried.
    if first["exit"] not in (0, 3):
        return [(f"launch 1: exit {first['exit']} for a policy's exception on some requests "
                 f"(a request failure: exit 3 or 0): {first['message']}")]
    return []


scenario_close_raises = _armed_scenario("close_raises", ["close_fault=raise"], _close_checks(False))
scenario_close_hangs = _armed_scenario("close_hangs", ["close_fault=hang"], _close_checks(True), deadline_s=None)
scenario_generate_cancelled = _armed_scenario("generate_cancelled", ["generate_fault=cancelled"], _generate_checks)
scenario_generate_systemexit = _armed_scenario("generate_systemexit", ["generate_fault=systemexit"],
                                               _generate_checks)
scenario_generate_baseexception = _armed_scenario("generate_baseexception", ["generate_fault=baseexception"],
                                                  _generate_checks)


def scenario_input_edited(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """A row's answer edited between runs: refused naming the row, redone with --rerun-changed."""
    started = time.perf_counter()
    original = bench.dataset(args.small_problems)
    clean = bench.clean(original)
    rows = [json.loads(line) for line in original.read_text().splitlines() if line.strip()]
    edited_row = next(r for r in rows if r.get("meta", {}).get("answer_space", "number") == "number")
    edited_rows = [dict(r, answer=str(int(r["answer"]) + 1)) if r is edited_row else r for r in rows]
    edited_text = "".join(json.dumps(r) + "\n" for r in edited_rows)
    # beside the original, so image paths resolve; the clean reference on its own file
    data, reference = original.parent / "edit-input.jsonl", original.parent / "edit-reference.jsonl"
    shutil.copyfile(original, data)
    reference.write_text(edited_text)
    clean_edited = bench.clean(reference)
    out = bench.work / "input_edited" / "out"
    command = bench.run_command(data, out, "simulated")
    reasons = []
    launches = [bench.launch(command, 1, clean, out)]
    data.write_text(edited_text)
    # the same command, the input edited: from here on the edited input's clean rows are the truth
    launches.append(bench.launch(command, 2, clean_edited, out))
    refused = launches[-1]
    refused["fault"] = f"answer of {edited_row['id']} edited"
    if refused["exit"] == 0:
        reasons.append(f"launch 2: exit 0 on an edited input, keeping the old rows of {edited_row['id']} "
                       f"({refused['message']!r})")
    elif edited_row["id"] not in refused["message"]:
        reasons.append(f"launch 2: exit {refused['exit']} does not name the edited row "
                       f"{edited_row['id']}: {refused['message']!r}")
    if clean_edited.digests == clean.digests:
        reasons.append("the edit changes no row: the scenario proves nothing")
    n0 = len(launches)
    bench.until_zero([*command, "--rerun-changed"], launches, clean_edited, out)
    for launch in launches[n0:]:
        launch["fault"] = "--rerun-changed"
    return finish("input_edited", args.small_problems, launches, reasons, out, clean_edited, started, bench,
                  edited_row=edited_row["id"])


def scenario_stray_manifest(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """``cp manifest.json manifest-backup.json``: verify flags it; no row is counted twice."""
    started = time.perf_counter()
    data = bench.dataset(args.small_problems)
    clean = bench.clean(data)
    work = bench.work / "stray_manifest"
    out = work / "out"
    launches: list[dict[str, Any]] = []
    reasons = []
    bench.until_zero(bench.run_command(data, out, "simulated"), launches, clean, out)
    stray = out / "manifest-backup.json"
    shutil.copyfile(out / "manifest.json", stray)
    verify = bench.launch(bench.prmtree("verify", out), len(launches) + 1, None, None)
    verify["fault"] = "verify with manifest-backup.json present"
    launches.append(verify)
    if verify["exit"] == 0 or "manifest-backup.json" not in verify["stdout"] + verify["stderr"]:
        reasons.append(f"verify exit {verify['exit']} does not flag manifest-backup.json: {verify['message']!r}")
    try:
        doubled = {t: row_digests(out, t) == clean.digests[t] for t in TABLES}
        if not all(doubled.values()):
            reasons.append(f"with the stray manifest, read_table differs from the clean rows in "
                           f"{[t for t, ok in doubled.items() if not ok]}")
    except Exception as exc:  # noqa: BLE001
        reasons.append(f"with the stray manifest, read_table raises {type(exc).__name__}: {exc}")
    exported = bench.launch(bench.prmtree("export", out, "--format", "jsonl", "--to", work / "export-stray.jsonl"),
                            len(launches) + 1, None, None)
    exported["fault"] = "export with manifest-backup.json present"
    launches.append(exported)
    if exported["traceback"]:
        reasons.append(f"export with the stray manifest: a traceback ({exported['message']})")
    stray.unlink()
    after = bench.launch(bench.prmtree("verify", out), len(launches) + 1, None, None)
    after["fault"] = "verify after removing it"
    launches.append(after)
    if after["exit"] != 0:
        reasons.append(f"verify after removing the stray manifest exits {after['exit']}: {after['message']!r}")
    reference = subprocess.run(bench.prmtree("export", out, "--format", "jsonl", "--to", work / "export.jsonl"),
                               capture_output=True, text=True, env=bench.env, check=False)
    if exported["exit"] == 0 and exported["stdout"].strip() != reference.stdout.strip().replace(
            "export.jsonl", "export-stray.jsonl"):
        reasons.append(f"export counts rows twice with the stray manifest: {exported['stdout'].strip()!r} against "
                       f"{reference.stdout.strip()!r} without it")
    return finish("stray_manifest", args.small_problems, launches, reasons, out, clean, started, bench)


SCENARIOS: dict[str, Callable[[Bench, argparse.Namespace], dict[str, Any]]] = {
    "faults": scenario_faults,
    "disk_full": scenario_disk_full,
    "close_raises": scenario_close_raises,
    "close_hangs": scenario_close_hangs,
    "generate_cancelled": scenario_generate_cancelled,
    "generate_systemexit": scenario_generate_systemexit,
    "generate_baseexception": scenario_generate_baseexception,
    "input_edited": scenario_input_edited,
    "stray_manifest": scenario_stray_manifest,
}


def table(results: list[dict[str, Any]]) -> str:
    """The results as the Markdown table of ``benchmarks/README.md``."""
    lines = [("| scenario | problems | exit codes, in order | last message of each launch | rows equal clean | "
              "verdict |"), "|---|---:|---|---|---|---|"]
    for r in results:
        equal = r.get("rows_equal_clean")
        eq = "—" if equal is None else ("all tables" if all(equal.values()) else
                                        "not " + ", ".join(t for t, ok in equal.items() if not ok))
        msgs = "; ".join(f"`{m[:90]}`" for m in r["messages"] if m) or "—"
        verdict = r["status"] + (": " + "; ".join(r["reasons"]) if r["reasons"] else "")
        lines.append(f"| {r['scenario']} | {r['problems']:,} | {', '.join(map(str, r['exit_codes'])) or '—'} | "
                     f"{msgs} | {eq} | {verdict} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), metavar="SCENARIO",
                        help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}")
    parser.add_argument("--problems", type=int, default=1000, help="problems of the faults scenario")
    parser.add_argument("--small-problems", type=int, default=60,
                        help="problems of the close, generate, input_edited and stray_manifest scenarios")
    parser.add_argument("--disk-problems", type=int, default=200, help="problems of the disk_full scenario")
    parser.add_argument("--disk-mb", type=int, default=4, help="the tmpfs size of the disk_full scenario")
    parser.add_argument("--hang-limit", type=float, default=30.0,
                        help="seconds a run whose close() hangs may take before the harness signals it")
    parser.add_argument("--workdir", help="default: a temporary directory")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))  # fault_policies, for the checks' constants

    work = Path(args.workdir or tempfile.mkdtemp(prefix="prmtree-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(work)
    results = []
    for name in args.only or SCENARIOS:
        t0 = time.perf_counter()
        try:
            result = SCENARIOS[name](bench, args)
        except Exception as exc:  # noqa: BLE001 - the harness failing is reported as such
            result = {"scenario": name, "problems": 0, "status": "ERROR", "exit_codes": [], "messages": [],
                      "reasons": [f"the harness failed: {type(exc).__name__}: {exc}"],
                      "seconds": round(time.perf_counter() - t0, 1)}
        results.append(result)
        print(f"{name}: {result['status']} in {result['seconds']} s; exits {result['exit_codes']}"
              + "".join(f"\n  - {r}" for r in result["reasons"]), flush=True)
    (HERE / "results").mkdir(exist_ok=True)
    saved = HERE / "results" / "fault_injection.json"
    saved.write_text(json.dumps({"scenarios": results, "config": CONFIG, "disk_config": DISK_CONFIG,
                                 "workdir": str(work)}, indent=1) + "\n")
    print("\n" + table(results))
    print(f"\nsaved {saved}")
    failed = [r["scenario"] for r in results if r["status"] != "PASS"]
    if failed:
        print(f"NOT OK: {', '.join(failed)}")
        raise SystemExit(1)
    print(f"ok: {len(results)} scenarios")


if __name__ == "__main__":
    main()
