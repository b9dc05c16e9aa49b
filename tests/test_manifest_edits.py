"""A manifest and a table folder that disagree in ways no crash leaves: an entry removed
from the manifest (a hand edit, a bad merge), a shard copied in from another slice
layout. Neither may lose rows for good or leave rows every loader reads twice."""

from __future__ import annotations

import json

import prmtree
import pytest
from prmtree.engine.errors import ConfigError
from prmtree.engine.output import load_manifest, read_table, verify_run
from prmtree.engine.synthetic import generate_problems

PROBLEMS = generate_problems(40, seed=3)
CONFIG = {"seed": 7, "output": {"rows_per_shard": 60}, "labels": {"pilot_problems": 2}}  # 3 and 17 not its members


def _rows(out, table):
    return sorted(json.dumps(r, sort_keys=True, default=str) for r in read_table(out, table).to_pylist())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "o"
    prmtree.run(PROBLEMS, out=out, config=CONFIG)
    return out


def test_a_shard_entry_removed_from_the_manifest_redoes_its_flush(tmp_path, reference, capsys):
    """The shard, unlisted, used to be deleted as a crash's leftover while its problems
    stayed done: their steps rows were gone for good and verify said OK."""
    out = tmp_path / "o"
    prmtree.run(PROBLEMS, out=out, config=CONFIG)
    path = out / "manifest.json"
    manifest = json.loads(path.read_text())
    entry = next(s for s in manifest["shards"] if s["table"] == "steps" and s["rows"] > 0 and s["flush"] > 0)
    manifest["shards"].remove(entry)
    path.write_text(json.dumps(manifest))
    capsys.readouterr()
    prmtree.run(PROBLEMS, out=out, config=CONFIG)
    err = capsys.readouterr().err
    assert (f"prmtree: repaired: {entry['file']}: listed in no manifest entry, yet it holds rows of problems the "
            "manifest counts as done") in err
    assert "will be redone" in err and "damaged shard" not in err
    for table in ("steps", "nodes", "pairs"):
        assert _rows(out, table) == _rows(reference, table), table
    assert verify_run(out) == [] and load_manifest(path).stats["problems_done"] == len(PROBLEMS)


def test_a_crash_leftover_holding_no_done_problem_is_still_deleted_quietly(tmp_path, reference, capsys):
    """A shard of a flush that never committed (its problems are not done) is what a
    kill -9 leaves: deleted, nothing redone."""
    out = tmp_path / "o"
    prmtree.run(PROBLEMS[:20], out=out, config=CONFIG)
    stray = out / "steps" / "part-09999.parquet"
    other = tmp_path / "other"
    prmtree.run(PROBLEMS[20:], out=other, config=CONFIG)
    stray.write_bytes(next((other / "steps").glob("part-*.parquet")).read_bytes())
    capsys.readouterr()
    summary = prmtree.run(PROBLEMS[:20], out=out, config=CONFIG)
    assert "repaired" not in capsys.readouterr().err and summary.problems_done == 20
    assert not stray.exists()


@pytest.mark.parametrize("name", ["part-s00001of00002-00000.parquet", "part-s00000of00003-00004.parquet"])
def test_a_shard_of_another_slice_layout_is_refused(tmp_path, reference, name):
    """It matched the shard pattern of some layout, so it was kept: no run of this
    directory deletes it, and load_dataset on steps/*.parquet read its rows twice."""
    out = tmp_path / "o"
    prmtree.run(PROBLEMS, out=out, config=CONFIG)
    copy = out / "steps" / name
    copy.write_bytes((out / "steps" / "part-00000.parquet").read_bytes())
    count = int(name[13:18])
    with pytest.raises(ConfigError, match=rf"{name} is a shard of slices of {count} \(--slice i/{count} or "
                                          rf"--drivers {count}\), but this run writes an unsliced run.*run with "
                                          "that layout, move it, or use another --out"):
        prmtree.run(PROBLEMS, out=out, config=CONFIG)
    copy.unlink()
    assert prmtree.run(PROBLEMS, out=out, config=CONFIG).problems_done == len(PROBLEMS)


def test_shards_without_a_manifest_are_redone_and_said_so(tmp_path, reference, capsys):
    """A deleted manifest.json (or a crash before the first flush committed) leaves shards
    nobody lists: they are deleted and the problems done again, as before, but no longer
    without a word."""
    out = tmp_path / "o"
    prmtree.run(PROBLEMS, out=out, config=CONFIG)
    (out / "manifest.json").unlink()
    capsys.readouterr()
    prmtree.run(PROBLEMS, out=out, config=CONFIG)
    err = capsys.readouterr().err
    assert "shards of this slice but no manifest.json (e.g. " in err and "every problem is done again" in err
    for table in ("steps", "nodes", "pairs"):
        assert _rows(out, table) == _rows(reference, table), table


ROW_KEYS = ("problems_done", "problems_skipped", "nodes", "paths", "pairs", "steps_labelled", "labels_positive",
            "labels_negative", "steps_per_path", "answer_spaces")


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_a_repaired_flush_leaves_the_run_counting_its_rows_once(tmp_path, reference, damage):
    """A damaged shard's rows cannot be read, so its labels, path lengths and answer-space
    coverage stayed in the counters while the resume added them again (+6852/-947 for
    rows holding +6605/-913; 125 problems of a 120-problem run). Each flush now records
    what its rows added, and the repair takes exactly that out."""
    mixed = generate_problems(40, seed=5, answer_spaces=("yesno", "choice", "number"))
    ref = tmp_path / "ref"
    prmtree.run(mixed, out=ref, config=CONFIG)
    out = tmp_path / "o"
    prmtree.run(mixed, out=out, config=CONFIG)
    manifest = json.loads((out / "manifest.json").read_text())
    assert all("counts" in g for g in manifest["flushes"].values() if g["completed"])
    shard = next(out / s["file"] for s in manifest["shards"] if s["table"] == "steps" and s["flush"] > 0)
    if damage == "delete":
        shard.unlink()
    else:
        shard.write_bytes(shard.read_bytes()[:50])
    prmtree.run(mixed, out=out, config=CONFIG)
    expected, got = load_manifest(ref / "manifest.json").stats, load_manifest(out / "manifest.json").stats
    assert {k: got[k] for k in ROW_KEYS} == {k: expected[k] for k in ROW_KEYS}
    assert len(got["answer_spaces"]) == 3 and got["problems_done"] == len(mixed)


def test_a_repair_after_rerun_changed_still_takes_the_labels_out(tmp_path):
    """A flush a --rerun-changed touched had no recorded counts any more (an older
    prmtree's manifest still has none: this one takes the dropped problems' counts out of
    the flush's); a later repair of it fell back to forgetting rows without their labels,
    so labels and path lengths were counted twice. The readable steps shards of such a
    flush give its labels."""
    from dataclasses import replace

    problems = generate_problems(40, seed=5)
    edited = [replace(p, question=p.question + " ") if i in (3, 17) else p for i, p in enumerate(problems)]
    changed = {problems[3].id, problems[17].id}
    ref = tmp_path / "ref"
    prmtree.run(problems, out=ref, config=CONFIG)
    prmtree.run(edited, out=ref, config=CONFIG, rerun_changed=True)
    out = tmp_path / "o"
    prmtree.run(problems, out=out, config=CONFIG)
    first = json.loads((out / "manifest.json").read_text())["flushes"]
    prmtree.run(edited, out=out, config=CONFIG, rerun_changed=True)
    manifest = json.loads((out / "manifest.json").read_text())
    touched = {n for n, g in manifest["flushes"].items()
               if g["completed"] and not changed.isdisjoint(first.get(n, {}).get("completed", ()))}
    assert touched and all("counts" in manifest["flushes"][n] for n in touched)  # the rerun kept them, updated
    for number in touched:  # as an older prmtree left them: without counts
        del manifest["flushes"][number]["counts"]
        manifest["flushes"][number].pop("spaces", None)
    (out / "manifest.json").write_text(json.dumps(manifest))
    shard = next(out / s["file"] for s in manifest["shards"] if s["table"] == "nodes" and str(s["flush"]) in touched)
    shard.write_bytes(shard.read_bytes()[:50])  # its nodes shard damaged, its steps shard readable
    prmtree.run(edited, out=out, config=CONFIG)
    expected, got = load_manifest(ref / "manifest.json").stats, load_manifest(out / "manifest.json").stats
    for key in ("problems_done", "paths", "nodes", "pairs", "steps_labelled", "labels_positive", "labels_negative",
                "steps_per_path"):
        assert got[key] == expected[key], key
