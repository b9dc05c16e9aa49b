"""The final flush tried again, as a flush in the run is: a disk that could not be written at
the very end of a run used to fail it at once, and the next run redid every problem still
buffered. The fault is real: the ``steps/`` folder made immutable (``chattr +i``, which stops
root too, where a chmod would not), cleared from a timer thread while the run waits; a
fault never cleared is given up after ``flush_give_up_s`` with the error a single try gave,
and the resume does the rest; a stop signal ends the wait at once."""

import logging
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import PRMTREE, cli, rows, wait_for

import prmtree
from prmtree import cli as cli_module
from prmtree.engine.output import load_manifest, verify_run
from prmtree.engine.output import writer as writer_module
from prmtree.engine.synthetic import generate_problems, write_jsonl

TABLES = ("steps", "nodes", "pairs", "errors")
# Small and quick (a pilot of 2); no flush before the final one (flush_interval_s = 1000).
TOML = ("[search]\nk = 4\nbudget = 16\n[labels]\npilot_problems = 2\n[executor]\nretry_backoff_s = 0.0\n"
        "[output]\nflush_interval_s = 1000\n")
FAILED = "prmtree: the final flush failed ("
SUCCEEDED = "prmtree: the final flush succeeded: every row held in memory is on disk"


@pytest.fixture
def out(unwritable_steps):
    """An output folder whose ``steps/`` cannot be written (conftest's ``unwritable_steps``)."""
    return unwritable_steps


def writable(out: Path) -> None:
    subprocess.run(["chattr", "-i", str(out / "steps")], check=True)


@pytest.fixture
def data(tmp_path):
    problems = generate_problems(8, seed=4)
    return write_jsonl(problems, tmp_path / "data"), [p.id for p in problems]


@pytest.fixture
def config(tmp_path):
    def write(extra: str = "") -> Path:
        path = tmp_path / "c.toml"
        path.write_text(TOML + extra)
        return path

    return write


def problems_on_disk(out: Path) -> set[str]:
    """The problems with rows on disk (any table: a skipped one has nodes, no steps), read
    back from the Parquet shards."""
    return {pid for t in TABLES for f in sorted((out / t).glob("*.parquet"))
            for pid in pq.read_table(f, columns=["problem_id"]).column("problem_id").to_pylist()}


def whole(out: Path, reference: Path, ids: list[str]) -> None:
    """Finished, every problem done once, rows equal to a clean run's."""
    manifest = load_manifest(out / "manifest.json")
    assert sorted(manifest.completed) == sorted(ids) and manifest.status == "finished"
    assert verify_run(out) == []
    assert problems_on_disk(out) == set(ids)
    for table in TABLES:
        assert rows(out, table) == rows(reference, table), table


def messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "prmtree"]


def test_a_failed_final_flush_is_tried_again_and_saves_every_problem_once_the_disk_is_back(
        out, data, config, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(writer_module, "FLUSH_RETRY_S", 0.1)
    path, ids = data
    toml = config("flush_give_up_s = 60\n")  # bounds the test if the fault were never cleared
    reference = tmp_path / "ref"
    prmtree.run(path, out=reference, config=str(toml), seed=2)

    timers: list[threading.Timer] = []

    class ClearsTheFault(logging.Handler):
        """On the first failure of the final flush: the folder writable again 0.35 s later,
        from another thread, while the run waits to try again."""

        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith(FAILED) and not timers:
                timers.append(threading.Timer(0.35, writable, (out,)))
                timers[0].start()

    clears = ClearsTheFault()
    logging.getLogger("prmtree").addHandler(clears)
    try:
        with caplog.at_level("WARNING", logger="prmtree"):
            summary = prmtree.run(path, out=out, config=str(toml), seed=2)
    finally:
        logging.getLogger("prmtree").removeHandler(clears)
    timers[0].join()
    said = messages(caplog)
    failed = [m for m in said if m.startswith(FAILED)]
    assert len(failed) >= 2, said  # tried again while the folder was still immutable
    assert str(out / "steps") in failed[0], failed[0]  # what failed, and where
    assert failed[0].endswith("; its rows wait in memory and it is tried again in 0.1 s "
                              "(the run fails if it still fails after 60 s)"), failed[0]
    assert said[-1] == SUCCEEDED
    assert summary.problems_done == len(ids)
    whole(out, reference, ids)


def test_a_final_flush_that_keeps_failing_gives_up_with_the_old_error_and_the_resume_does_the_rest(
        out, data, config, tmp_path, monkeypatch, caplog, capsys):
    monkeypatch.setattr(writer_module, "FLUSH_RETRY_S", 0.1)
    path, ids = data
    toml = config("flush_give_up_s = 0.45\n")
    reference = tmp_path / "ref"
    prmtree.run(path, out=reference, config=str(toml), seed=2)
    capsys.readouterr()

    command = ["run", "--input", str(path), "--out", str(out), "--config", str(toml), "--seed", "2",
               "--no-progress"]
    with caplog.at_level("WARNING", logger="prmtree"), pytest.raises(SystemExit) as exit_:
        cli_module.main(command)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err  # the exit and the one line of a single try
    assert len(err.strip().splitlines()) == 1 and err.startswith("prmtree: error: cannot write (")
    assert str(out / "steps") in err and "Operation not permitted" in err
    waits = [float(re.search(r"tried again in ([\d.]+) s", m).group(1)) for m in messages(caplog)
             if m.startswith(FAILED)]
    assert len(waits) >= 3 and sum(waits) <= 0.45 + 1e-3, waits  # every 0.1 s, never past the give-up time
    assert SUCCEEDED not in messages(caplog)
    assert not (out / "manifest.json").exists() and problems_on_disk(out) == set()  # nothing half-listed

    writable(out)
    caplog.clear()
    assert cli_module.main(command) == 0  # the same command: every problem redone, once
    whole(out, reference, ids)


@pytest.mark.slow
def test_a_stop_signal_ends_the_final_flushs_wait_at_once(out, data, config):
    """With the defaults (tried again in 10 s, given up after 300 s) a SIGTERM during the wait
    ends it within seconds: one last try, then the error and exit 2; the resume does the rest."""
    path, ids = data
    toml = config()
    command = ["run", "--input", str(path), "--out", str(out), "--config", str(toml), "--seed", "2",
               "--no-progress"]
    proc = subprocess.Popen([*PRMTREE, *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any(line.startswith(FAILED) for line in lines), timeout=60)
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        took = time.monotonic() - stopped
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    stderr = "".join(lines)
    assert took < 5, (took, stderr)  # not the 10 s wait, nor the 300 s give-up
    assert proc.returncode == 2 and "Traceback" not in stderr, stderr
    assert "tried again in 10 s (the run fails if it still fails after 300 s)" in stderr
    assert "prmtree: SIGTERM: the final flush is not waited for: one last try now" in stderr
    assert stderr.strip().splitlines()[-1].startswith("prmtree: error: cannot write ("), stderr
    assert not (out / "manifest.json").exists()

    writable(out)
    resumed = cli(*command)
    assert resumed.returncode == 0, resumed.stderr
    manifest = load_manifest(out / "manifest.json")
    assert sorted(manifest.completed) == sorted(ids) and manifest.status == "finished"
    assert problems_on_disk(out) == set(ids) and verify_run(out) == []


def test_a_stop_after_every_problem_started_does_not_wait_out_the_final_flush(out, data, config, capsys):
    """A SIGTERM once every problem had started lets them finish (the run is complete), and
    then the final flush, failing, was waited out for the whole flush_give_up_s (60 s here;
    300 by default, past a pod's grace period): whoever sent it waits for no full disk."""
    path, ids = data
    toml = config("flush_give_up_s = 60\n[policy]\nlatency_s = 0.02\n")  # trees end apart: a stop between
    sent: list[float] = []

    def stop_near_the_end(finished, stats) -> None:  # after the pilot's 2 and one more, 5 in flight
        if stats.problems_done >= 3 and not sent:
            sent.append(time.monotonic())
            signal.raise_signal(signal.SIGTERM)

    with pytest.raises(OSError, match="Operation not permitted"):
        prmtree.run(path, out=out, config=str(toml), seed=2, on_problem=stop_near_the_end)
    took = time.monotonic() - sent[0]
    err = capsys.readouterr().err
    assert "finishing the 5 in flight" in err and "and all of them finished: the run is complete" in err, err
    assert took < 5, (took, err)  # one try, not the 10 s waits up to 60 s
    assert not (out / "manifest.json").exists()
