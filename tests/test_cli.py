"""End to end through the real command line, in subprocesses."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import cli

from prmtree.engine.output import load_manifest, read_table
from prmtree.engine.tables import TABLES

pytestmark = pytest.mark.slow  # every test here runs the CLI in a subprocess


def check_steps_table(out):
    table = read_table(out, "steps")
    assert table.schema.names == TABLES["steps"].schema.names
    assert table.num_rows > 0
    for row in table.to_pylist():
        n = len(row["completions"])
        assert n == len(row["labels"]) == len(row["values"]) == len(row["confidences"]) == len(row["rollouts"]) > 0
        assert row["label_method"] == "calibrated"
        for label, source, confidence in zip(row["labels"], row["label_sources"], row["confidences"]):
            assert source in ("calibrated", "inferred")
            if source == "calibrated":  # decided by its own rollouts, at the configured confidence
                assert confidence >= 0.95
        assert all(0 <= v <= 1 for v in row["values"])
        if False in row["labels"]:  # truncated after the first error
            assert row["labels"].index(False) == n - 1
        assert row["images"][0]["bytes"].startswith(b"\x89PNG")
        assert row["prompt"].startswith("The image shows")
    return table


def test_demo_runs_under_a_minute_and_writes_a_dataset(tmp_path):
    t = time.perf_counter()
    r = cli("demo", "--out", tmp_path / "out", "--no-progress")
    elapsed = time.perf_counter() - t
    assert r.returncode == 0, r.stderr
    assert elapsed < 60
    for needle in ("problems done", "rollouts/s", "step-label accuracy vs ground truth", "60"):
        assert needle in r.stdout
    table = check_steps_table(tmp_path / "out")
    assert set(table.column("strategy").to_pylist()) == {"omega"}
    assert set(table.column("policy").to_pylist()) == {"simulated"}
    manifest = load_manifest(tmp_path / "out" / "manifest.json")
    assert manifest.stats["problems_done"] == 60
    assert len(manifest.completed) == 60
    assert manifest.config["search"]["strategy"] == "omega"
    listed = {s["file"]: s["rows"] for s in manifest.shards}
    for file, rows in listed.items():
        assert pq.read_metadata(tmp_path / "out" / file).num_rows == rows
    nodes = read_table(tmp_path / "out", "nodes").to_pylist()
    for n in nodes:
        if n["n_rollouts"]:
            assert n["value"] == n["n_correct"] / n["n_rollouts"]
            assert n["ci_low"] <= n["value"] <= n["ci_high"]
        else:  # not sampled: no value; a calibrated decision comes from the rest of its path
            assert n["value"] is None and (n["decision"] is None or n["posterior"] is not None)
        if n["decision"] in ("right", "wrong"):
            assert n["label"] == (n["decision"] == "right")
            assert (n["posterior"] >= 0.95) if n["label"] else (n["posterior"] <= 0.05)
        else:  # undecided, unsampled, or the question itself
            assert n["label"] is None


@pytest.mark.parametrize("strategy", ["shepherd", "mcts"])
def test_run_on_generated_data_with_a_config_file(tmp_path, problems_file, strategy):
    config = tmp_path / "run.toml"
    config.write_text(
        'seed = 3\n[search]\nk = 4\nbudget = 120\n[policy]\nname = "simulated"\nerror_rate = 0.1\n'
        '[output]\nrows_per_shard = 25\n'
    )
    r = cli("run", "--input", problems_file, "--out", tmp_path / "out", "--strategy", strategy,
            "--config", config, "--no-progress")
    assert r.returncode == 0, r.stderr
    table = check_steps_table(tmp_path / "out")
    assert set(table.column("strategy").to_pylist()) == {strategy}
    manifest = load_manifest(tmp_path / "out" / "manifest.json")
    assert manifest.config["seed"] == 3 and manifest.config["search"]["k"] == 4
    assert manifest.config["policy"]["error_rate"] == 0.1
    assert 0 < manifest.stats["rollouts"] <= 120 * 24


def test_run_with_bad_rows_reports_them_and_finishes(tmp_path, problems_file):
    mixed = tmp_path / "mixed.jsonl"
    good = problems_file.read_text().splitlines()[:5]
    (tmp_path / "images").symlink_to(problems_file.parent / "images")
    bad = [
        json.dumps({"id": "no-answer", "question": "q", "image": good and "images/syn-000000.png"}),
        json.dumps({"id": "no-image", "question": "q", "image": "images/missing.png", "answer": 1}),
        "this is not json",
    ]
    mixed.write_text("\n".join(good[:3] + bad + good[3:]) + "\n")
    r = cli("run", "--input", mixed, "--out", tmp_path / "out", "--no-progress")
    assert r.returncode == 0, r.stderr
    errors = {e["problem_id"]: e["reason"] for e in read_table(tmp_path / "out", "errors").to_pylist()}
    assert errors == {
        "no-answer": "missing answer: the row has no 'answer' field (its fields: 'id', 'question', 'image'); "
                     "if the data set names it otherwise, set [input] answer_field",
        "no-image": "image images/missing.png not found",
        "mixed.jsonl:6": "line 6 is not valid JSON (Expecting value)",
    }
    manifest = load_manifest(tmp_path / "out" / "manifest.json")
    assert len(manifest.completed) == 5
    assert set(manifest.rejected) == set(errors) and manifest.failed == {}


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--input", "{data}", "--out", "{tmp}/o", "--strategy", "beam"], "invalid choice: 'beam'"),
        (["run", "--input", "{tmp}/nope.jsonl", "--out", "{tmp}/o"], "input file"),
        (["run", "--input", "{data}", "--out", "{tmp}/o", "--config", "{tmp}/bad.toml"], "search.k: Input should be greater than or equal to 1 (got 0)"),
        (["run", "--input", "{data}", "--out", "{tmp}/o", "--config", "{tmp}/extra.toml"], "unknown config field 'search.kk'"),
        (["run", "--input", "{data}", "--out", "{tmp}/o", "--config", "{tmp}/broken.toml"], "is not valid TOML"),
        (["run", "--input", "{data}", "--out", "{tmp}/o", "--policy", "nope"], "unknown policy 'nope'"),
        (["run", "--input", "{data}", "--out", "{tmp}/o", "--policy", "os:nothing"], "has no attribute 'nothing'"),
        (["run", "--input", "{data}", "--out", "{tmp}/o", "--policy-arg", "error_rate=7"], "error_rate must be in [0, 1], got 7"),
        (["run", "--input", "{data}", "--out", "{tmp}/o", "--policy-arg", "colour=red"], "policy 'simulated' does not take arguments ['colour']"),
        (["run", "--input", "{data}", "--out", "{tmp}/o", "--policy-arg", "noiseless=no"], "noiseless must be true or false, got 'no'"),
        (["run", "--input", "{data}", "--out", "{tmp}/o", "--executor", "inline", "--drivers", "2", "--slice", "0/2"], "--drivers and --slice both slice the input: use one of them"),
        (["run", "--input", "{data}", "--out", "{tmp}/o", "--config", "{tmp}/drivers.toml", "--slice", "1/2"], "--drivers and --slice both slice the input: use one of them"),
        (["run", "--input", "{data}", "--out", "{tmp}/o", "--config", "{tmp}/utf16.toml"], "utf16.toml' is not UTF-8 text"),
        (["run", "--input", "{data}", "--out", "{tmp}/o", "--config", "{tmp}"], "is a directory: name the TOML file in it"),
        (["run", "--input", "{data}", "--out", "{tmp}/o", "--executor", "ray", "--workers", "0"], "executor.workers"),
        (["run", "--input", "{data}", "--out", "{tmp}/o", "--config", "{tmp}/flag.toml"],  # was read as 1 token
         "search.max_tokens: Value error, must be a number, not true"),
        (["run", "--input", "{data}", "--out", "{tmp}/o", "--policy-arg", "name=simulated"], "may not be called 'name'"),
        (["run", "--input", "{data}", "--out", "{tmp}/o", "--policy", "openai"],
         "policy 'openai' needs the argument 'base_url': give it with --policy-arg base_url=..."),
        (["demo", "--problems", "0"], "--problems must be at least 1"),
        (["synth", "--out", "{tmp}/s", "--problems", "0"], "--problems must be at least 1, got 0"),
        (["synth", "--out", "{tmp}/s", "--min-steps", "1"], "need 2 <= min_steps <= max_steps (a solution starts"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_and_config_give_one_line_and_exit_2(tmp_path, problems_file, args, message):
    (tmp_path / "bad.toml").write_text("[search]\nk = 0\n")
    (tmp_path / "extra.toml").write_text("[search]\nkk = 3\n")
    (tmp_path / "broken.toml").write_text("[search\n")
    (tmp_path / "drivers.toml").write_text("[executor]\nkind = \"inline\"\ndrivers = 2\n")  # driver processes
    (tmp_path / "utf16.toml").write_text("[search]\nk = 4\n", encoding="utf-16")  # an editor's choice
    (tmp_path / "flag.toml").write_text("[search]\nmax_tokens = true\n")
    argv = [a.format(tmp=tmp_path, data=problems_file) for a in args]
    r = cli(*argv)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_synth_writes_jsonl_and_pngs(tmp_path):
    r = cli("synth", "--out", tmp_path, "--problems", "5", "--min-steps", "8", "--max-steps", "8")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in (tmp_path / "problems.jsonl").read_text().splitlines()]
    assert len(rows) == 5
    for row in rows:
        assert (tmp_path / row["image"]).read_bytes().startswith(b"\x89PNG")
        assert row["meta"]["n_steps"] == 8


def test_policy_args_read_json_and_pythons_spellings_of_true_false_and_none():
    # before: noiseless=False stayed the string "False", which the policy took as true
    from prmtree.cli import _parse_policy_args

    assert _parse_policy_args(["a=False", "b=True", "c=None", "d=false", "e=0.5", "f=red", "g=[1, 2]"]) == {
        "a": False, "b": True, "c": None, "d": False, "e": 0.5, "f": "red", "g": [1, 2]}


@pytest.mark.slow
def test_the_prmtree_script_finds_a_policy_module_in_the_folder_it_runs_in(tmp_path):
    # Before: `prmtree run --policy my_policy:MyVLM` beside my_policy.py failed with "cannot
    # import policy module 'my_policy'" (exit 2), while `python -m prmtree` found it: the
    # console script's path starts at its bin folder, not the working directory.
    script = Path(sys.executable).with_name("prmtree")
    if not script.is_file():
        pytest.skip("no prmtree console script beside this Python")
    (tmp_path / "my_policy.py").write_text(
        "from prmtree.policies.simulated import SimulatedPolicy\n\n\n"
        "class MyVLM(SimulatedPolicy):\n    name = 'my-vlm'\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    assert subprocess.run([str(script), "synth", "--out", "data", "--problems", "3"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120).returncode == 0
    r = subprocess.run([str(script), "run", "--input", "data/problems.jsonl", "--policy", "my_policy:MyVLM",
                        "--out", "out", "--no-progress"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    policies = set(read_table(tmp_path / "out", "steps").column("policy").to_pylist())
    assert policies == {"my-vlm"}
