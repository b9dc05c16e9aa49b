"""Session 21's run edges, each caused for real: the hint for a run whose manifest cannot be
read (1), a stop once every problem started while the final flush cannot write (2), the
demo's synthetic input left in the temporary folder (3), and the drivers of a job killed
with -9 (4)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from prmtree.engine.output import load_manifest, read_table
from prmtree.engine.synthetic import generate_problems, write_jsonl

import prmtree
from prmtree.cli import main

TINY = {"search": {"budget": 16}}


def _one_line(capsys, *argv: str) -> str:
    """The one error line (exit 2) of ``prmtree argv``."""
    with pytest.raises(SystemExit) as refused:
        main(list(argv))
    assert refused.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("prmtree: error: "), err
    return err[0]


# -- 1: an unreadable manifest: the hint is what a re-run does -------------------------------


def test_an_unreadable_manifest_is_told_to_be_removed_not_that_a_rerun_redoes_it(tmp_path, capsys):
    data = write_jsonl(generate_problems(4, seed=3), tmp_path / "data")
    out = tmp_path / "o"
    prmtree.run(data, policy="simulated", out=out, seed=1, config=TINY)
    manifest = out / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:500])  # truncated
    capsys.readouterr()

    for argv in (("inspect", str(out)), ("export", str(out), "--format", "jsonl", "--to", str(tmp_path / "x.jsonl"))):
        hint = _one_line(capsys, *argv)
        assert "is damaged (manifest.json: unreadable (" in hint, hint
        assert hint.endswith("re-running the run's command refuses the directory while manifest.json cannot be "
                             "read: remove it (its slice starts over) or use another --out"), hint
        assert "redoes" not in hint, hint
    # ... which is what the re-run does
    rerun = _one_line(capsys, "run", "--input", str(data), "--out", str(out), "--policy", "simulated", "--no-progress")
    assert "manifest.json is unreadable" in rerun and "use another --out, or remove it" in rerun, rerun


# -- 2: a stop once every problem started, the final flush failing -----------------------------


def test_a_stop_after_every_problem_started_claims_no_complete_run_its_final_flush_did_not_save(
        unwritable_steps, tmp_path, capsys):
    out = unwritable_steps
    data = write_jsonl(generate_problems(8, seed=4), tmp_path / "data")
    config = tmp_path / "c.toml"  # no flush before the final one; trees end apart, so a stop falls between
    config.write_text("[search]\nk = 4\nbudget = 16\n[labels]\npilot_problems = 2\n[executor]\nretry_backoff_s = 0.0\n"
                      "[output]\nflush_interval_s = 1000\nflush_give_up_s = 60\n[policy]\nlatency_s = 0.02\n")
    sent = []

    def stop_near_the_end(finished, stats) -> None:  # after the pilot's 2 and one more: the rest started
        if stats.problems_done >= 3 and not sent:
            sent.append(True)
            signal.raise_signal(signal.SIGTERM)

    with pytest.raises(OSError, match="Operation not permitted"):
        prmtree.run(data, out=out, config=str(config), seed=2, on_problem=stop_near_the_end)
    lines = capsys.readouterr().err.splitlines()
    said = [line for line in lines if "every problem had started before the SIGTERM" in line]
    assert said == ["prmtree: every problem had started before the SIGTERM and all of them finished: the run is "
                    "complete once the final flush has saved their rows"], lines
    assert not any(line.rstrip().endswith("the run is complete") for line in lines), lines
    assert not (out / "manifest.json").exists()  # not saved: nothing claims it was


# -- 3: the demo's synthetic input -----------------------------------------------------------


def test_the_demo_removes_its_synthetic_input_when_it_ends_and_when_it_fails(tmp_path, monkeypatch, capsys):
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # where mkdtemp makes the demo's input
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--problems", "3", "--no-progress"]) == 0
    assert read_table(out, "steps").num_rows > 0  # its rows embed their images: nothing points into the input
    assert load_manifest(out / "manifest.json").status == "finished"
    assert list(temp.iterdir()) == []

    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    _one_line(capsys, "demo", "--out", str(blocked), "--problems", "3", "--no-progress")  # the run fails
    assert list(temp.iterdir()) == []


# -- 4: the drivers of a job killed with -9 ----------------------------------------------------

ORPHAN = "the job that started it is gone; exiting ("


def test_a_driver_whose_job_died_before_it_started_says_so_in_one_line(tmp_path):
    script = textwrap.dedent("""
        import multiprocessing
        from prmtree.engine.config import RunConfig
        from prmtree.engine.output import Slice
        from prmtree.local_drivers import drive
        from prmtree.runner import DriverJob

        read, write = multiprocessing.Pipe(duplex=False)
        take, give = multiprocessing.Pipe(duplex=False)
        read.close()  # the job is gone
        drive(take, DriverJob(problems=None, config=RunConfig(), policy=None, slice=Slice(1, 2)), write)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.splitlines() == [
        f"prmtree: the driver of slice 1/2: {ORPHAN}before it started: nothing was done)"], r.stderr


@pytest.mark.slow
def test_the_drivers_of_a_job_killed_with_9_say_so_in_one_line_each(tmp_path, request):
    """The README's orphaned drivers "save what they finished and exit": one line each, not
    a broken pipe's traceback nor asyncio's "Task exception was never retrieved"."""
    import shutil

    import psutil

    data = write_jsonl(generate_problems(16, seed=31), tmp_path / "data")
    config = tmp_path / "c.toml"  # flushed often: the test sees the drivers' first finished problem at once
    config.write_text("[labels]\nlearn_floor = false\n[executor]\ntrees_in_flight = 4\n"
                      "[output]\nflush_interval_s = 0.1\n")  # no pilot to wait for either
    out = tmp_path / "o"
    temp = Path(tempfile.mkdtemp(prefix="pt-", dir="/tmp"))  # short: a socket's path has 108 bytes
    request.addfinalizer(lambda: shutil.rmtree(temp, ignore_errors=True))
    args = [sys.executable, "-m", "prmtree", "run", "--input", str(data), "--out", str(out), "--config", str(config),
            "--policy", "simulated", "--policy-arg", "latency_s=0.05", "--no-progress",
            "--executor", "inline", "--drivers", "2"]
    job = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "TMPDIR": str(temp)})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and job.poll() is None:
            manifests = [load_manifest(p) for p in out.glob("manifest-*-of-*.json")]
            if len(manifests) == 2 and sum(len(m.completed) for m in manifests) >= 1:
                break
            time.sleep(0.05)
        assert job.poll() is None, job.stderr.read()[-2000:]
        drivers = [p for p in psutil.Process(job.pid).children() if "spawn_main" in " ".join(p.cmdline())]
        assert len(drivers) == 2
        job.send_signal(signal.SIGKILL)
        job.wait(30)
        gone, alive = psutil.wait_procs(drivers, timeout=60)
        assert not alive, "driver processes outlived their job by a minute"
        stderr = job.stderr.read()  # the drivers wrote to the job's stderr; all of them have exited
    finally:
        if job.poll() is None:
            job.kill()
        job.stderr.close()
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and "never retrieved" not in stderr, stderr
    assert sorted(line.split(":")[1] for line in lines) == [" the driver of slice 0/2", " the driver of slice 1/2"]
    assert all(ORPHAN in line for line in lines), lines
