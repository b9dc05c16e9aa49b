"""Every count a run reports (its summary, the manifest's ``stats``, ``inspect``) equals what
the Parquet rows on disk hold, after each path that redoes problems or resumes a run:
``--rerun-changed``, the image repair, a lost or damaged shard, a shard entry lost from
the manifest, a repair of a flush a rerun touched, a kill -9, a SIGTERM, a torn manifest
log, bad input rows retried, slices.

The per-answer-space counts were the ones that went wrong: a problem dropped and redone
by ``--rerun-changed`` or the image repair kept its first run's counts in its answer
space and added them again when redone (33 problems in the spaces of a 30-problem run),
and a later repair of a flush the rerun touched took out neither its spaces nor, for a
lost steps shard, its labels. Real runs (the simulated policy), real files: the truth is
read back from the shards with pyarrow."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import prmtree
from prmtree.engine.calibration import answer_space
from prmtree.engine.output import load_manifest
from prmtree.engine.output.manifest import load_manifests
from prmtree.engine.stats import SPACE_COUNTERS, RunStats
from prmtree.engine.synthetic import generate_problems, write_jsonl
from prmtree.inspect import collect

SPACES = ("yesno", "choice", "number")
PROBLEMS = generate_problems(30, seed=5, answer_spaces=SPACES)
#: Shards small enough that the run makes a dozen flushes, most of several problems
#: (a pilot of two per space: the three problems edited are not its members, so a rerun redoes
#: only them; a changed member would have every problem redone)
CONFIG = {"seed": 7, "output": {"rows_per_shard": 60}, "labels": {"pilot_problems": 2}}
#: Every problem in the one flush at the end: a flush of every space
ONE_FLUSH = {"seed": 7}
#: The counters a problem's rows add (``ROW_COUNTERS``) and the bad rows'.
KEYS = ("problems_done", "problems_skipped", "input_errors", "nodes", "paths", "pairs", "steps_labelled",
        "labels_positive", "labels_negative", "steps_per_path", "answer_spaces")


def edited(problems):
    """Three labelled problems changed: a skipped yes/no one (syn-000012), a multiple-choice
    one (syn-000010), and a number one whose answer space itself changes (syn-000017)."""
    out = []
    for p in problems:
        if p.id in ("syn-000012", "syn-000010"):
            p = replace(p, question=p.question + " ")
        elif p.id == "syn-000017":
            p = replace(p, meta={**p.meta, "answer_space": "colour"})
        out.append(p)
    return out


# -- the truth on disk, and what the run reports ------------------------------------------------


def on_disk(out: Path, problems) -> dict:
    """The counters as the shards the manifests list say them (each problem in the answer
    space its input row has now); every shard on disk must be listed once the run finished."""
    manifests = load_manifests(out)
    listed = {s["file"] for m in manifests for s in m.shards}
    if all(m.status == "finished" for m in manifests):
        assert {f"{p.parent.name}/{p.name}" for p in out.glob("*/*.parquet")} == listed

    def read(table, columns):
        return [row for file in sorted(listed) if file.startswith(f"{table}/")
                for row in pq.read_table(out / file, columns=columns).to_pylist()]

    steps, nodes = read("steps", ["problem_id", "labels"]), read("nodes", ["problem_id"])
    pairs, errors = read("pairs", ["problem_id"]), read("errors", ["problem_id"])
    done = [pid for m in manifests for pid in m.completed]
    skipped = {pid for m in manifests for pid in m.skipped}
    assert len(done) == len(set(done))
    # every problem done has its root in nodes (a skipped one too), and nothing else has rows
    assert {r["problem_id"] for r in nodes} == set(done)
    assert {r["problem_id"] for r in steps + pairs} <= set(done)
    space_of = {p.id: answer_space(p) for p in problems}
    spaces: dict[str, dict[str, int]] = {}
    for pid in set(done):
        counts = spaces.setdefault(space_of[pid], dict.fromkeys(SPACE_COUNTERS, 0))
        counts["problems"] += 1
        counts["skipped"] += pid in skipped
    labelled = set()
    for row in steps:
        labels = row["labels"] or []
        decided = labels[: labels.index(None)] if None in labels else labels  # what the spaces count
        counts = spaces[space_of[row["problem_id"]]]
        counts["paths"] += 1
        counts["steps_labelled"] += len(decided)
        counts["positive"] += decided.count(True)
        counts["negative"] += decided.count(False)
        if decided:
            labelled.add(row["problem_id"])
    for pid in labelled:
        spaces[space_of[pid]]["labelled_problems"] += 1
    labels = [row["labels"] or [] for row in steps]
    return {
        "problems_done": len(done),
        "problems_skipped": len(skipped),
        "input_errors": len(errors),
        "nodes": len(nodes),
        "paths": len(steps),
        "pairs": len(pairs),
        "steps_labelled": sum(r.count(True) + r.count(False) for r in labels),
        "labels_positive": sum(r.count(True) for r in labels),
        "labels_negative": sum(r.count(False) for r in labels),
        "steps_per_path": dict(Counter(len(r) for r in labels)),
        "answer_spaces": spaces,
    }


def reported(stats: dict) -> dict:
    """The same counters as a run reports them (entries counting nothing left out)."""
    out = {k: stats[k] for k in KEYS}
    out["steps_per_path"] = {int(k): v for k, v in stats["steps_per_path"].items() if v}
    out["answer_spaces"] = {space: {k: counts.get(k, 0) for k in SPACE_COUNTERS}
                            for space, counts in stats["answer_spaces"].items() if any(counts.values())}
    return out


def assert_counts_match_disk(out: Path, problems, summary=None) -> None:
    """The summary (this slice's), the manifests' stats and ``inspect`` against the disk."""
    truth = on_disk(out, problems)
    manifests = sum((RunStats.from_dict(m.stats) for m in load_manifests(out)), RunStats()).to_dict()
    assert reported(manifests) == truth
    report = collect(out)
    assert {c.space: {k: getattr(c, k) for k in SPACE_COUNTERS} for c in report.spaces if c.problems} == \
        truth["answer_spaces"]
    assert report.paths == truth["paths"]
    if summary is not None:
        assert reported(summary.stats) == truth


def run(problems, out, config=CONFIG, **kwargs):
    return prmtree.run(problems, policy="simulated", out=out, config=config, **kwargs)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One untouched run of many flushes; tests that change it get a copy."""
    out = tmp_path_factory.mktemp("finished") / "o"
    assert_counts_match_disk(out, PROBLEMS, run(PROBLEMS, out))
    return out


def copy_of(finished: Path, tmp_path: Path) -> Path:
    out = tmp_path / "o"
    shutil.copytree(finished, out)
    return out


def manifest_of(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


# -- --rerun-changed ----------------------------------------------------------------------------


@pytest.mark.parametrize("config", [CONFIG, ONE_FLUSH], ids=["many-flushes", "one-flush"])
def test_rerun_changed_counts_each_redone_problem_once_in_its_answer_space(tmp_path, config):
    out = tmp_path / "o"
    run(PROBLEMS, out, config)
    flushes = manifest_of(out)["flushes"]
    changed = edited(PROBLEMS)
    touched = [g for g in flushes.values() if {"syn-000010", "syn-000012", "syn-000017"} & set(g["completed"])]
    assert any(len(g["counts"]["answer_spaces"]) > 1 for g in touched)  # a flush of several spaces loses some
    summary = run(changed, out, config, rerun_changed=True)
    assert summary.rollouts_this_session > 0
    assert_counts_match_disk(out, changed, summary)
    spaces = summary.stats["answer_spaces"]
    assert spaces["colour"]["problems"] == 1 and spaces["number"]["problems"] == 9
    assert spaces["yesno"]["problems"] == spaces["choice"]["problems"] == 10
    # the flushes the rerun touched still count their rows: a resume with nothing to do keeps it all
    again = run(changed, out, config)
    assert again.rollouts_this_session == 0
    assert_counts_match_disk(out, changed, again)
    # changed back: the space only syn-000017 had is gone again, not left counting 0 problems
    back = run(PROBLEMS, out, config, rerun_changed=True)
    assert_counts_match_disk(out, PROBLEMS, back)
    assert "colour" not in back.stats["answer_spaces"] and "colour" not in manifest_of(out)["stats"]["answer_spaces"]


@pytest.mark.parametrize("damage", ["delete-steps", "truncate-nodes"])
def test_a_repair_of_a_flush_a_rerun_touched_counts_its_problems_once(tmp_path, finished, damage):
    out = copy_of(finished, tmp_path)
    first = manifest_of(out)["flushes"]
    changed = edited(PROBLEMS)
    run(changed, out, rerun_changed=True)
    manifest = manifest_of(out)
    touched = {n for n, g in manifest["flushes"].items() if g["completed"] and
               {"syn-000010", "syn-000012", "syn-000017"} & set(first.get(n, {}).get("completed", ()))}
    table, cut = damage.split("-")[1], damage.startswith("truncate")
    shard = next(out / s["file"] for s in manifest["shards"] if s["table"] == table and str(s["flush"]) in touched)
    damage_shard(shard, cut)
    summary = run(changed, out)
    assert summary.rollouts_this_session > 0
    assert_counts_match_disk(out, changed, summary)


def damage_shard(shard, truncate: bool) -> None:
    """Cut ``shard`` short (unreadable), or delete it."""
    if truncate:
        shard.write_bytes(shard.read_bytes()[:50])
    else:
        shard.unlink()


# -- the image repair ---------------------------------------------------------------------------


def test_the_image_repair_counts_each_redone_problem_once_in_its_answer_space(tmp_path):
    config = {"seed": 7, "output": {"rows_per_shard": 60, "image_mode": "path"}}
    out = tmp_path / "o"
    run(PROBLEMS, out, config)
    for image in sorted((out / "images").glob("*.png"))[:4]:
        image.unlink()
    summary = run(PROBLEMS, out, config)
    assert summary.rollouts_this_session > 0
    assert_counts_match_disk(out, PROBLEMS, summary)


# -- repairs of shards and of the manifest ------------------------------------------------------


@pytest.mark.parametrize("damage", ["delete-steps", "truncate-nodes", "truncate-pairs"])
def test_a_damaged_shard_is_redone_and_counted_once(tmp_path, finished, damage):
    out = copy_of(finished, tmp_path)
    table = damage.split("-")[1]
    shard = next(out / s["file"] for s in manifest_of(out)["shards"] if s["table"] == table and s["flush"] > 0)
    damage_shard(shard, damage.startswith("truncate"))
    summary = run(PROBLEMS, out)
    assert summary.rollouts_this_session > 0
    assert_counts_match_disk(out, PROBLEMS, summary)


def test_a_shard_entry_lost_from_the_manifest_is_redone_and_counted_once(tmp_path, finished):
    out = copy_of(finished, tmp_path)
    manifest = manifest_of(out)
    manifest["shards"].remove(next(s for s in manifest["shards"] if s["table"] == "steps" and s["flush"] > 0))
    (out / "manifest.json").write_text(json.dumps(manifest))
    summary = run(PROBLEMS, out)
    assert summary.rollouts_this_session > 0
    assert_counts_match_disk(out, PROBLEMS, summary)


def test_a_resume_with_more_problems_counts_each_once(tmp_path):
    out = tmp_path / "o"
    assert_counts_match_disk(out, PROBLEMS[:12], run(PROBLEMS[:12], out))
    assert_counts_match_disk(out, PROBLEMS, run(PROBLEMS, out))


# -- stopped runs, resumed ----------------------------------------------------------------------

#: A run of PROBLEMS that sends itself a signal once ``argv[2]`` problems are finished: every
#: problem is flushed as it finishes, at most two are searched at once once a small pilot
#: (two problems per answer space) has learned, and each request waits a little (the loop
#: sees the signal while trees remain).
STOPPED = """
import os, signal, sys
import prmtree
from prmtree.engine.synthetic import generate_problems

problems = generate_problems(30, seed=5, answer_spaces=("yesno", "choice", "number"))
finished = []

def on_problem(problem, stats):
    finished.append(problem)
    if len(finished) == int(sys.argv[2]):
        os.kill(os.getpid(), getattr(signal, sys.argv[3]))

prmtree.run(problems, policy="simulated", policy_args={"latency_s": 0.01}, out=sys.argv[1], config=CONFIG,
            on_problem=on_problem)
"""
FLUSH_EACH = {"seed": 7, "output": {"rows_per_shard": 60, "flush_interval_s": 0.001},
              "executor": {"trees_in_flight": 2}, "labels": {"pilot_problems": 2}}


def stopped_run(tmp_path: Path, out: Path, after: int, how: str) -> subprocess.CompletedProcess:
    script = tmp_path / "stopped.py"
    script.write_text(STOPPED.replace("CONFIG", repr(FLUSH_EACH)))
    return subprocess.run([sys.executable, str(script), str(out), str(after), how], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "RAY_AUTH_MODE": "disabled"})


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_run_stopped_midway_and_resumed_counts_each_problem_once(tmp_path, how):
    out = tmp_path / "o"
    r = stopped_run(tmp_path, out, 13, how)
    # SIGTERM: no new problems, those in flight finished and saved, and prmtree.run returns
    assert r.returncode == (-signal.SIGKILL if how == "SIGKILL" else 0), r.stderr
    assert 0 < len(load_manifest(out / "manifest.json").completed) < len(PROBLEMS)
    assert_counts_match_disk(out, PROBLEMS)  # what the stopped run's manifest says, against its listed shards
    summary = run(PROBLEMS, out, FLUSH_EACH)
    assert summary.rollouts_this_session > 0
    assert_counts_match_disk(out, PROBLEMS, summary)


@pytest.mark.slow
def test_a_torn_manifest_log_is_redone_and_counted_once(tmp_path):
    out = tmp_path / "o"
    assert stopped_run(tmp_path, out, 15, "SIGKILL").returncode == -signal.SIGKILL
    pointer = json.loads((out / "manifest.json").read_text())["log"]
    log = out / pointer["file"]
    data = log.read_bytes()[: pointer["bytes"]]
    records = data.split(b"\n")[:-1]
    assert len(records) > 4
    at = sum(len(r) + 1 for r in records[:-3]) + 10  # three records from the end, torn inside
    log.write_bytes(data[:at] + b"#" * 7 + data[at + 7:])
    summary = run(PROBLEMS, out, FLUSH_EACH)
    assert summary.rollouts_this_session > 0
    assert_counts_match_disk(out, PROBLEMS, summary)


# -- bad input rows retried ---------------------------------------------------------------------


def test_bad_rows_retried_and_fixed_are_counted_once(tmp_path):
    problems = PROBLEMS[:12]
    data = write_jsonl(problems, tmp_path / "data")
    good = [json.loads(line) for line in data.read_text().splitlines()]
    bad = [dict(r) for r in good]
    bad[2]["image"] = "images/missing.png"
    bad[5]["answer"] = ""
    del bad[7]["question"]

    def write(rows):
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    out = tmp_path / "o"
    write(bad)
    summary = run(data, out)
    assert summary.input_errors == 3
    assert_counts_match_disk(out, problems, summary)
    assert_counts_match_disk(out, problems, run(data, out, retry_errors=True))
    write(good[:7] + bad[7:])
    assert_counts_match_disk(out, problems, run(data, out))
    write(good)
    summary = run(data, out)
    assert summary.input_errors == 0 and summary.problems_done == 12
    assert_counts_match_disk(out, problems, summary)


# -- slices -------------------------------------------------------------------------------------


def test_slices_rerun_changed_count_each_problem_once(tmp_path):
    out = tmp_path / "o"
    for index in (0, 1):
        run(PROBLEMS, out, slice=f"{index}/2")
    assert_counts_match_disk(out, PROBLEMS)
    changed = edited(PROBLEMS)
    for index in (0, 1):
        run(changed, out, slice=f"{index}/2", rerun_changed=True)
    assert_counts_match_disk(out, changed)
