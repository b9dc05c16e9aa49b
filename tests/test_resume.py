"""Crash safety for real: kill -9 the driver at chosen points of a run, resume, compare rows."""

import os
import re
import signal
import subprocess

import pytest
from conftest import PRMTREE, completed, rows, starts_processes, wait_for

import prmtree

from prmtree.engine.output import Slice, load_manifest, read_table
from prmtree.engine.output.atomic import sha256_file
from prmtree.engine.resume import discard_unlisted
from prmtree.engine.synthetic import generate_problems, write_jsonl

@pytest.fixture(scope="module")
def big_input(tmp_path_factory):
    return write_jsonl(generate_problems(200, seed=21), tmp_path_factory.mktemp("big"))




def run_args(input_path, out, *extra, latency=0.02):
    return [
        *PRMTREE, "run", "--input", str(input_path), "--out", str(out), "--no-progress", "--seed", "5",
        "--config", str(out.parent / "crash.toml"), "--policy-arg", f"latency_s={latency}", *extra,
    ]


CRASH_TOML = (
    # Small shards and frequent flushes: many shard boundaries to die between.
    "[search]\nbudget = 60\n[executor]\ntrees_in_flight = 8\n[output]\nrows_per_shard = 40\nflush_interval_s = 0.2\n"
)


@pytest.fixture
def crash_config(tmp_path):
    (tmp_path / "crash.toml").write_text(CRASH_TOML)
    return tmp_path


@pytest.fixture(scope="module")
@starts_processes()
def pristine_reference(tmp_path_factory, big_input):
    """One uninterrupted run, made once; tests that change it get a copy."""
    base = tmp_path_factory.mktemp("reference")
    (base / "crash.toml").write_text(CRASH_TOML)
    out = base / "reference"
    r = subprocess.run(run_args(big_input, out), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture
def reference(crash_config, pristine_reference):
    import shutil

    out = crash_config / "reference"
    shutil.copytree(pristine_reference, out)
    return out


#: Where each kill -9 lands, in problems the manifest lists as done (they add up over the
#: restarts): at start-up before anything is written, then mid-run after later flushes.
KILL_AFTER = (0, 20, 70, 140)


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_gives_the_uninterrupted_rows(crash_config, big_input, reference):
    out = crash_config / "crashed"
    for done in KILL_AFTER:
        proc = subprocess.Popen(run_args(big_input, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for(lambda: completed(out) >= done or proc.poll() is not None, timeout=120)
            assert proc.poll() is None, f"the run ended before {done} problems were done: {proc.stderr.read()}"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL  # killed mid-run, not finished
        if done:
            # whatever the moment of the kill, the manifest and the shards it lists agree
            completed_ids = load_manifest(out / "manifest.json").completed
            assert done <= len(completed_ids) < 200
            assert len(completed_ids) == len(set(completed_ids))
            assert set(completed_ids) == set(read_table(out, "nodes").column("problem_id").to_pylist())
    r = subprocess.run(run_args(big_input, out), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for table in ("steps", "nodes", "pairs", "errors"):
        assert rows(out, table) == rows(reference, table), table
    manifest = load_manifest(out / "manifest.json")
    assert sorted(manifest.completed) == sorted(load_manifest(reference / "manifest.json").completed)
    assert len(manifest.completed) == len(set(manifest.completed)) == 200
    assert manifest.status == "finished"
    # nothing on disk that the manifest does not list
    listed = {s["file"] for s in manifest.shards}
    on_disk = {f"{p.parent.name}/{p.name}" for p in out.glob("*/*") if p.parent.name != "images"}
    assert on_disk == listed


@pytest.mark.slow
def test_crash_between_shard_rename_and_manifest_update(crash_config, big_input, reference):
    out = crash_config / "fault"
    env = {**os.environ, "PRMTREE_FAULT": "after_shard_rename"}
    r = subprocess.run(run_args(big_input, out), capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 137
    orphans = list((out / "steps").glob("part-*.parquet"))
    assert orphans and not (out / "manifest.json").exists()  # shards renamed, manifest never written
    r = subprocess.run(run_args(big_input, out), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for table in ("steps", "nodes", "pairs"):
        assert rows(out, table) == rows(reference, table)


def test_manifest_lists_every_shard_with_its_checksum(reference):
    manifest = load_manifest(reference / "manifest.json")
    assert manifest.layout_version == 1 and manifest.status == "finished"
    assert len(manifest.shards) > 4
    for shard in manifest.shards:
        path = reference / shard["file"]
        assert sha256_file(path) == shard["sha256"]
        assert path.stat().st_size == shard["bytes"]
    assert manifest.stats["problems_done"] == 200
    assert manifest.versions["pyarrow"]


def test_a_finished_run_resumes_to_nothing_and_keeps_its_rows(crash_config, big_input, reference):
    before = rows(reference)
    r = subprocess.run(run_args(big_input, reference), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert rows(reference) == before
    stats = load_manifest(reference / "manifest.json").stats
    assert stats["problems_done"] == 200  # counters carried over, nothing added


def test_changed_config_is_refused_and_force_starts_over(crash_config, big_input, reference):
    r = subprocess.run(run_args(big_input, reference, "--strategy", "shepherd"), capture_output=True, text=True)
    assert r.returncode == 2
    assert "different config (search.strategy: 'omega' -> 'shepherd')" in r.stderr
    assert "--force" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(run_args(big_input, reference, "--strategy", "shepherd", "--force"),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    strategies = set(read_table(reference, "steps").column("strategy").to_pylist())
    assert strategies == {"shepherd"}
    assert load_manifest(reference / "manifest.json").config["search"]["strategy"] == "shepherd"


def test_operational_settings_may_change_on_resume(tmp_path, big_input):
    import prmtree

    problems = generate_problems(10, seed=3)
    prmtree.run(problems[:5], policy="simulated", out=tmp_path, config={"executor": {"trees_in_flight": 2}})
    s = prmtree.run(problems, policy="simulated", out=tmp_path, config={"executor": {"trees_in_flight": 9}})
    assert s.problems_done == 10  # 5 carried over + 5 new
    assert len(load_manifest(tmp_path / "manifest.json").completed) == 10


def test_a_run_hashed_by_an_older_rule_resumes_when_no_setting_differs(tmp_path):
    """An older prmtree hashed a policy argument given at its default; that run resumes (no
    row-defining setting differs), while a real change is still refused, named."""
    import json

    problems = generate_problems(4, seed=3)
    prmtree.run(problems[:2], policy="simulated", out=tmp_path, policy_args={"error_rate": 0.08})
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["config"]["policy"]["error_rate"] == 0.08
    m["config_hash"] = "0123456789abcdef"  # what the older rule wrote
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    assert prmtree.run(problems, policy="simulated", out=tmp_path).problems_done == 4
    with pytest.raises(prmtree.ConfigError, match=r"policy.error_rate: \(default\) -> 0.3"):
        prmtree.run(problems, policy="simulated", out=tmp_path, policy_args={"error_rate": 0.3})


def test_other_layout_version_is_refused(tmp_path):
    import json

    import prmtree

    prmtree.run(generate_problems(2), policy="simulated", out=tmp_path)
    m = json.loads((tmp_path / "manifest.json").read_text())
    m["layout_version"] = 99
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(prmtree.ConfigError, match="layout version 99"):
        prmtree.run(generate_problems(2), policy="simulated", out=tmp_path)


@pytest.mark.slow
def test_two_slices_into_one_directory_equal_one_unsharded_run(tmp_path, big_input):
    one = tmp_path / "one"
    both = tmp_path / "both"
    (tmp_path / "crash.toml").write_text("[search]\nbudget = 40\n")
    for out, shards in [(one, [None]), (both, ["0/2", "1/2"])]:
        for shard in shards:
            extra = ["--slice", shard] if shard else []
            r = subprocess.run(run_args(big_input, out, *extra), capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, r.stderr
    for table in ("steps", "nodes", "pairs", "errors"):
        assert rows(one, table) == rows(both, table)
    assert sorted(p.name for p in both.glob("manifest*.json")) == [
        "manifest-00000-of-00002.json", "manifest-00001-of-00002.json"]
    parts = {p.name for p in (both / "steps").glob("*.parquet")}
    assert any(n.startswith("part-s00000of00002-") for n in parts)
    assert any(n.startswith("part-s00001of00002-") for n in parts)
    m0 = load_manifest(both / "manifest-00000-of-00002.json")
    m1 = load_manifest(both / "manifest-00001-of-00002.json")
    assert not set(m0.completed) & set(m1.completed)
    assert 60 < len(m0.completed) < 140


@pytest.mark.slow
def test_bad_shard_argument(crash_config, big_input):
    r = subprocess.run(run_args(big_input, crash_config / "o", "--slice", "2/2"), capture_output=True, text=True)
    assert r.returncode == 2 and "0 <= i < N" in r.stderr


def test_discard_unlisted_only_touches_its_own_slice(tmp_path):
    (tmp_path / "steps").mkdir()
    for name in ["part-00000.parquet", "part-s00001of00002-00000.parquet", ".part-00001.parquet.tmp", "notes.txt"]:
        (tmp_path / "steps" / name).write_text("x")
    removed = discard_unlisted(tmp_path, None, Slice())
    assert sorted(removed) == ["steps/.part-00001.parquet.tmp", "steps/part-00000.parquet"]
    assert sorted(p.name for p in (tmp_path / "steps").iterdir()) == ["notes.txt", "part-s00001of00002-00000.parquet"]


def test_a_policy_instance_with_other_settings_is_a_changed_config(tmp_path):
    import prmtree
    from prmtree.policies.simulated import SimulatedPolicy

    problems = generate_problems(3, seed=2)
    prmtree.run(problems, policy=SimulatedPolicy(error_rate=0.1), out=tmp_path)
    manifest = load_manifest(tmp_path / "manifest.json")
    assert manifest.config["policy"]["name"] == "prmtree.policies.simulated:SimulatedPolicy"
    assert manifest.config["policy"]["error_rate"] == 0.1
    with pytest.raises(prmtree.ConfigError, match=r"policy.error_rate: 0.1 -> 0.2"):
        prmtree.run(problems, policy=SimulatedPolicy(error_rate=0.2), out=tmp_path)


def test_slices_of_one_directory_must_share_a_config(tmp_path):
    problems = generate_problems(9, seed=2)
    out = tmp_path / "o"
    prmtree.run(problems, policy="simulated", out=out, slice="0/3")
    # another slice with another seed would mix two runs' rows under one config in inspect/export
    for force in (False, True):
        with pytest.raises(prmtree.ConfigError, match=r"holds manifest-00000-of-00003.json, written with a "
                                                      r"different config \(seed: .*every slice of one --out"):
            prmtree.run(problems, policy="simulated", out=out, slice="1/3", config={"seed": 99}, force=force)
    prmtree.run(problems, policy="simulated", out=out, slice="1/3")
    assert sorted(p.name for p in out.glob("manifest*.json")) == [
        "manifest-00000-of-00003.json", "manifest-00001-of-00003.json"]


def test_verify_help_says_exit_0_covers_slices_unfinished_or_not_run(capsys):
    from prmtree.cli import main

    with pytest.raises(SystemExit) as shown:
        main(["verify", "--help"])
    assert shown.value.code == 0
    said = " ".join(capsys.readouterr().out.split())
    assert ("exit 1 if one is damaged or stray, else 0, also when slices are unfinished or have not run "
            "(listed as MISSING)") in said


def test_a_slice_that_never_ran_is_reported_by_verify_inspect_and_export(tmp_path, capsys):
    from prmtree.cli import main

    out = tmp_path / "o"
    prmtree.run(generate_problems(9, seed=2), policy="simulated", out=out, slice="0/3")
    prmtree.run(generate_problems(9, seed=2), policy="simulated", out=out, slice="2/3")
    capsys.readouterr()
    assert main(["verify", str(out)]) == 0  # what ran is intact
    said = capsys.readouterr().out
    assert "manifest-00001-of-00003.json: MISSING: slice 1/3 has not run here; run its command with --slice 1/3" in said
    assert main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "incomplete: 1/3 slices not run" in shown
    assert re.search(r"slices\s+│\s+2 of 3 run", shown), shown  # not "slices 2" beside "1/3 not run"
    export = ["export", str(out), "--format", "jsonl", "--to", str(tmp_path / "x.jsonl")]
    with pytest.raises(SystemExit) as refused:  # not the whole input: refused unless --allow-partial
        main(export)
    assert refused.value.code == 2
    said = capsys.readouterr().err
    assert "in 2 of 3 slices (slices 1/3 have not run)" in said and "--allow-partial" in said
    assert not (tmp_path / "x.jsonl").exists()
    assert main([*export, "--allow-partial"]) == 0
    assert "warning:" in (said := capsys.readouterr().err) and "slices 1/3 have not run" in said


@pytest.mark.slow
def test_shard_is_the_older_name_of_slice(tmp_path, problems_file):
    """``--slice``/``slice=`` name an input slice ("shard" is a Parquet file of a table);
    the older ``--shard``/``shard=`` still work, the API one with a DeprecationWarning."""
    problems = generate_problems(6, seed=4)
    with pytest.warns(DeprecationWarning, match=r"shard=\.\.\.\) is now slice="):
        prmtree.run(problems, policy="simulated", out=tmp_path / "api", shard="1/2")
    assert load_manifest(tmp_path / "api" / "manifest-00001-of-00002.json").status == "finished"
    cli = [*PRMTREE, "run", "--input", str(problems_file), "--no-progress"]
    for flag in ("--slice", "--shard"):
        out = tmp_path / flag.strip("-")
        assert subprocess.run([*cli, "--out", str(out), flag, "0/2"], capture_output=True).returncode == 0
        assert [p.name for p in out.glob("manifest*.json")] == ["manifest-00000-of-00002.json"]


def test_a_slice_started_beside_a_sibling_with_another_config_is_refused(tmp_path):
    # Before: a slice writes its manifest only once its pilot has learned, so a sibling
    # started meanwhile (a job array starts them together) was checked against nothing:
    # two configs in one --out, verify and export none the wiser.
    from prmtree.engine.config import RunConfig
    from prmtree.engine.errors import ConfigError
    from prmtree.engine.resume import open_run

    ours = RunConfig.model_validate({"search": {"k": 8}})
    other = RunConfig.model_validate({"search": {"k": 4}, "seed": 9})
    first = open_run(tmp_path, ours, {}, Slice.parse("0/2"))  # writing, no manifest yet
    try:
        assert not list(tmp_path.glob("manifest*.json"))
        with pytest.raises(ConfigError, match=r"is being written now by another slice's run \(manifest-00000-of-00002"
                                              r"\.json: "
                                              r"pid \d+ .*\) with a different config: every slice of one --out must"):
            open_run(tmp_path, other, {}, Slice.parse("1/2"))
        second = open_run(tmp_path, RunConfig.model_validate({"search": {"k": 8}, "executor": {"trees_in_flight": 3}}),
                          {}, Slice.parse("1/2"))  # the same rows (operational settings may differ)
        second.close()
    finally:
        first.close()
    open_run(tmp_path, other, {}, Slice.parse("1/2")).close()  # nobody writing, nothing written: nothing to compare
