"""Issue 21: a manifest that costs O(new work) to flush. While a run goes, the growing
per-problem state is in an append-only, fsynced log and ``manifest.json`` stays small; a
torn log record is ignored on read and cut off on resume; older whole manifests still load
and resume. Real files, real kill -9."""

import json
import signal
import subprocess

import pytest
from conftest import PRMTREE, rows, wait_for

import prmtree
from prmtree.engine.config import RunConfig
from prmtree.engine.output import DatasetWriter, Manifest, Slice, load_manifest, verify_run
from prmtree.engine.output.manifest import log_name
from prmtree.engine.resume import open_run
from prmtree.engine.synthetic import generate_problems, write_jsonl
from prmtree.engine.tables import ProblemRows

TABLES = ("steps", "nodes", "pairs", "errors")
TINY = {"search": {"budget": 16}}
NO_PILOT = {**TINY, "labels": {"learn_floor": False}}
# frequent flushes and slow requests: a run of 40 problems flushes many times, and a kill
# lands between flushes
SLOW_TOML = "[search]\nbudget = 16\n[executor]\ntrees_in_flight = 2\n[output]\nflush_interval_s = 0.1\n"


def _writer(out, manifest=None):
    out.mkdir(parents=True, exist_ok=True)
    return DatasetWriter(out, manifest or Manifest(config={}, config_hash="h", versions={}))


def _add(writer, first, n):
    """``n`` finished problems without rows (what a flush's manifest work is about)."""
    for i in range(first, first + n):
        writer.pending_completed.append(f"problem-{i:07d}")
        writer.pending_fingerprints[f"problem-{i:07d}"] = f"{i:016x}"


def test_a_flush_writes_what_it_adds_not_what_the_run_holds(tmp_path):
    writer = _writer(tmp_path / "o")
    log = tmp_path / "o" / "manifest.log.jsonl"
    _add(writer, 0, 100)
    writer.flush(None)  # the first: the log's base (empty) and 100 ids
    written = []
    for first in (100, 200, 20_000, 60_000):
        if first >= 20_000:  # a big run: many ids already flushed
            _add(writer, len(writer.manifest.completed), first - len(writer.manifest.completed))
            writer.flush(None)
        before = log.stat().st_size
        _add(writer, first, 100)
        writer.flush(None)
        written.append((log.stat().st_size - before, (tmp_path / "o" / "manifest.json").stat().st_size))
    appended = [a for a, _ in written]
    heads = [h for _, h in written]
    # the same 100 new ids cost the same bytes with 300 or 60K done
    assert max(appended) - min(appended) <= 16, appended
    assert appended[0] < 100 * 80 and max(heads) < 4096 and max(heads) - min(heads) <= 16, written
    raw = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert "completed" not in raw and "shards" not in raw and raw["log"]["file"] == "manifest.log.jsonl"
    m = load_manifest(tmp_path / "o" / "manifest.json")
    assert len(m.completed) == 60_100 == len(set(m.completed)) and m.completed == writer.manifest.completed
    assert m.fingerprints["problem-0060099"] == f"{60_099:016x}" and m.flushes == writer.manifest.flushes


def test_the_final_flush_writes_the_whole_manifest_and_the_log_goes(tmp_path):
    out = tmp_path / "o"
    prmtree.run(generate_problems(4, seed=3), policy="simulated", out=out, seed=1, config=TINY)
    raw = json.loads((out / "manifest.json").read_text())
    assert raw["status"] == "finished" and len(raw["completed"]) == 4 and "log" not in raw
    assert not (out / "manifest.log.jsonl").exists() and verify_run(out) == []


def test_a_torn_last_record_is_ignored_on_read_and_cut_off_on_resume(tmp_path):
    out = tmp_path / "o"
    writer = _writer(out)
    for first in (0, 10, 20):
        _add(writer, first, 10)
        writer.flush(None)
    log = out / "manifest.log.jsonl"
    whole = log.read_bytes()
    # a crash while appending the 4th record: bytes past what the manifest counts
    _add(writer, 30, 10)
    with open(log, "ab") as handle:
        handle.write(b'{"completed":["problem-0000030","probl')
    m = load_manifest(out / "manifest.json")
    assert len(m.completed) == 30 and "torn" not in m.log and verify_run(out) == []
    # a log cut inside the last record the manifest counts (a disk that lost it): that
    # record is ignored, the run reads as its first two flushes and says so
    lines = whole.splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:2]) + lines[2][: len(lines[2]) // 2])
    m = load_manifest(out / "manifest.json")
    assert m.completed == [f"problem-{i:07d}" for i in range(20)] and m.status == "running"
    assert m.log["torn"] == len(lines[2]) and sorted(m.flushes) == ["0", "1"]
    [damage] = verify_run(out)
    assert damage.file == "manifest.log.jsonl" and "cannot be read as its records (one torn, missing or altered there" in damage.problem
    # without its first record the log says nothing: refused, not read as a run with no rows
    log.write_bytes(lines[0][:10])
    with pytest.raises(ValueError, match="holds no whole record"):
        load_manifest(out / "manifest.json")
    log.unlink()
    with pytest.raises(ValueError, match="its log manifest.log.jsonl is missing"):
        load_manifest(out / "manifest.json")


def test_a_resume_cuts_a_torn_log_back_and_redoes_the_lost_flush(tmp_path):
    out = tmp_path / "o"
    config = RunConfig.model_validate(TINY)
    writer = _writer(out, Manifest(config=config.model_dump(mode="json"), config_hash=config.config_hash(), versions={}))
    for first in (0, 10, 20):
        _add(writer, first, 10)
        writer.flush(None)
    log = out / "manifest.log.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    # an uncommitted tail (a crash mid-append): the resume cuts it off, all 30 stay done
    with open(log, "ab") as handle:
        handle.write(b'{"completed":["problem-00000')
    opened = open_run(out, config, {})
    opened.close()
    assert log.read_bytes() == b"".join(lines) and opened.done == {f"problem-{i:07d}" for i in range(30)}
    # the last counted record torn: the resume cuts the log to the whole records, counts
    # only those (verify is clean again) and the lost flush's problems are left to redo
    log.write_bytes(b"".join(lines[:2]) + lines[2][:7])
    opened = open_run(out, config, {})
    try:
        assert opened.done == {f"problem-{i:07d}" for i in range(20)}
        assert any("could not be read as its records (one torn, missing" in note and "will be redone" in note for note in opened.repaired)
        assert log.read_bytes() == b"".join(lines[:2]) and verify_run(out) == []
        _add(opened.writer, 20, 10)  # redone
        opened.writer.flush(None)
    finally:
        opened.close()
    m = load_manifest(out / "manifest.json")
    assert m.completed == [f"problem-{i:07d}" for i in range(30)] and m.log["records"] == 3 and "torn" not in m.log


@pytest.mark.slow
def test_kill_9_then_a_torn_log_then_resume_equals_an_uninterrupted_run(tmp_path):
    data = write_jsonl(generate_problems(40, seed=23), tmp_path / "data")
    toml = tmp_path / "slow.toml"
    toml.write_text(SLOW_TOML)
    reference = tmp_path / "ref"
    prmtree.run(data, out=reference, config=str(toml), seed=5)
    out = tmp_path / "o"
    proc = subprocess.Popen([*PRMTREE, "run", "--input", str(data), "--out", str(out), "--config", str(toml),
                             "--seed", "5", "--no-progress", "--policy-arg", "latency_s=0.05"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: len(load_manifest_or_none(out)) >= 3)  # three flushes with problems in
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    raw = json.loads((out / "manifest.json").read_text())
    assert "completed" not in raw and raw["status"] == "running"
    log = out / raw["log"]["file"]
    counted = log.read_bytes()[: raw["log"]["bytes"]]
    last = counted.splitlines(keepends=True)[-1]
    lost = json.loads(last)["completed"]
    before = load_manifest(out / "manifest.json")
    # the last record the manifest counts, cut mid-record
    with open(log, "r+b") as handle:
        handle.truncate(len(counted) - len(last) // 2)
    torn = load_manifest(out / "manifest.json")
    assert torn.completed == before.completed[: len(before.completed) - len(lost)]
    assert any(d.file == raw["log"]["file"] and "cannot be read as its records" in d.problem for d in verify_run(out))
    summary = prmtree.run(data, out=out, config=str(toml), seed=5)
    assert summary.problems_done == 40
    for table in TABLES:
        assert rows(out, table) == rows(reference, table), table
    m = load_manifest(out / "manifest.json")
    assert m.status == "finished" and sorted(m.completed) == sorted(load_manifest(reference / "manifest.json").completed)
    assert len(m.completed) == len(set(m.completed)) == 40 and verify_run(out) == []
    assert not log.exists()  # finished: the whole manifest again


def load_manifest_or_none(out):
    """The flushes with problems a running run's manifest counts so far."""
    try:
        return [k for k, g in load_manifest(out / "manifest.json").flushes.items() if g["completed"]]
    except (OSError, ValueError):
        return []


def test_an_older_whole_manifest_loads_and_a_resume_continues_it(tmp_path):
    problems = generate_problems(8, seed=5)
    # no pilot: a run of 5 then of 8 learns no other floors than one run of 8
    reference = tmp_path / "ref"
    prmtree.run(problems, policy="simulated", out=reference, seed=1, config=NO_PILOT)
    out = tmp_path / "o"
    prmtree.run(problems[:5], policy="simulated", out=out, seed=1, config=NO_PILOT)
    # what an older prmtree left after a crash: the whole manifest, still "running", no log
    raw = json.loads((out / "manifest.json").read_text())
    raw["status"] = "running"
    assert "log" not in raw and len(raw["completed"]) == 5
    (out / "manifest.json").write_text(json.dumps(raw, indent=1))
    old = load_manifest(out / "manifest.json")
    assert old.status == "running" and len(old.completed) == 5 and old.log == {}
    # a resume's first flush starts the log with the older manifest's state as its base
    m = old
    opened = open_run(out, RunConfig.model_validate(m.config), m.versions)
    try:
        opened.writer.add_problem("extra", ProblemRows(), None)
        opened.writer.flush(None)
    finally:
        opened.close()
    small = json.loads((out / "manifest.json").read_text())
    assert small["log"]["records"] == 1 and "completed" not in small
    assert load_manifest(out / "manifest.json").completed == [*old.completed, "extra"]
    assert load_manifest(out / "manifest.json").shards == old.shards
    # and a real resume continues it to the rows of an uninterrupted run
    (out / "manifest.json").write_text(json.dumps(raw, indent=1))
    (out / log_name("manifest.json")).unlink()
    assert prmtree.run(problems, policy="simulated", out=out, seed=1, config=NO_PILOT).problems_done == 8
    for table in TABLES:
        assert rows(out, table) == rows(reference, table), table
    assert verify_run(out) == []


def test_a_sliced_run_keeps_one_log_per_slice(tmp_path):
    out = tmp_path / "o"
    for index in (0, 1):
        writer = DatasetWriter(out, Manifest(config={}, config_hash="h", versions={},
                                             slice={"index": index, "count": 2}),
                               slice=Slice(index, 2))
        _add(writer, index * 100, 5)
        writer.flush(None)
    names = sorted(p.name for p in out.iterdir() if p.is_file())
    assert names == ["manifest-00000-of-00002.json", "manifest-00000-of-00002.log.jsonl",
                     "manifest-00001-of-00002.json", "manifest-00001-of-00002.log.jsonl"]
    assert load_manifest(out / "manifest-00001-of-00002.json").completed == [f"problem-{i:07d}" for i in range(100, 105)]
    assert verify_run(out) == []
