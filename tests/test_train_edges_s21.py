"""prmtree train and export at four edges: --resume on data that changed since the
checkpoint, a run before its first flush, labels cut by length, and visualprm's
``--system-prompt ''``. Tiny models built here, no download."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import prmtree
from prmtree.cli import main as cli_main
from prmtree.engine.errors import ConfigError
from prmtree.engine.synthetic import generate_problems
from prmtree.export import ExportOptions, export
from prmtree.train import TrainOptions, train


@pytest.fixture(scope="module")
def stepwise(tmp_path_factory) -> Path:
    """A finished run's ``stepwise`` export: a Parquet file a test can rewrite row by row."""
    root = tmp_path_factory.mktemp("s21")
    prmtree.run(generate_problems(10, seed=21), policy="simulated", out=root / "run", seed=3)
    export(root / "run", "stepwise", root / "stepwise.parquet")
    return root / "stepwise.parquet"


def _opts(data: Path | str, out: Path | str, **kw) -> TrainOptions:
    base = dict(max_steps=2, batch_size=16, threads=1, save_every=1, quiet=True, max_length=256)
    base.update(kw)
    return TrainOptions(data=str(data), out=str(out), **base)


def _refused(capsys, *argv: str) -> str:
    """The one line a refused command says (exit 2)."""
    with pytest.raises(SystemExit) as refused:
        cli_main(list(argv))
    assert refused.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("prmtree: error: "), err
    return err[0]


# -- 1. --resume on data that changed since the checkpoint -----------------------------------


def test_resume_on_a_run_that_grew_is_refused_naming_the_change(tmp_path, capsys):
    # Before: the resume went on (exit 0), split the 20 problems anew by hash and held out
    # problems the first session trained on; the reused tiny tokenizer read new words as [UNK]
    run = tmp_path / "run"
    prmtree.run(generate_problems(10, seed=21), policy="simulated", out=run, seed=3)
    args = ["train", "--data", str(run), "--out", str(tmp_path / "prm"), "--threads", "1", "--max-steps", "2",
            "--save-every", "1", "--max-length", "256", "--batch-size", "4"]
    assert cli_main(args) == 0
    prmtree.run(generate_problems(20, seed=21), policy="simulated", out=run, seed=3)  # the run grows
    # (one problem of each ten has no labelled step: 9, then 19 problems with a path to train on)
    capsys.readouterr()
    line = _refused(capsys, *args[:-6], "--max-steps", "4", *args[-4:], "--resume")
    assert re.search(r"--resume: --data \S+ changed since the checkpoint \(9 problems, \d+ paths, \d+ steps then, "
                     r"19 problems, \d+ paths, \d+ steps now\): its problems would be split anew, and some it "
                     r"trained on held out; "
                     r"train afresh into a new --out$", line), line


def test_resume_on_the_same_problems_with_other_labels_is_refused(stepwise, tmp_path):
    data, out = tmp_path / "data.parquet", tmp_path / "prm"
    table = pq.read_table(stepwise)
    pq.write_table(table, data)
    train(_opts(data, out))
    assert train(_opts(data, out, max_steps=3, resume=True))["resumed_at"] == 2  # unchanged data resumes
    rows = table.to_pylist()
    rows[0]["labels"] = [not x for x in rows[0]["labels"]]
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), data)  # the same file, one path's labels flipped
    with pytest.raises(ConfigError, match=r"changed since the checkpoint \(the same 9 problems, \d+ paths, \d+ steps, "
                                          r"with other text or labels\): it would train on with other paths or "
                                          r"labels than it started with; train afresh into a new --out"):
        train(_opts(data, out, max_steps=4, resume=True))


# -- 2. a run before its first flush ---------------------------------------------------------


@pytest.mark.parametrize("partial", [[], ["--allow-partial"]])
def test_train_on_a_run_before_its_first_flush_says_what_export_says(partial, tmp_path, capsys):
    # Before: "--data X is neither a prmtree run's directory (no manifest.json), an hf export
    # ... nor a Parquet file", while export said a run is writing it
    from prmtree.engine.lock import FileLock

    out = tmp_path / "o"
    (out / "steps").mkdir(parents=True)
    lock = FileLock(out / ".manifest.json.lock")
    lock.acquire()
    try:
        said = _refused(capsys, "export", str(out), "--format", "openrlhf", "--to", str(tmp_path / "x.jsonl"))
        line = _refused(capsys, "train", "--data", str(out), "--out", str(tmp_path / "prm"), "--threads", "1",
                        *partial)
    finally:
        lock.release()
    assert "holds no manifest yet: a run is writing it (pid " in line and "first flush; try again once it has" in line
    assert line == said
    assert not (tmp_path / "prm").exists()


# -- 3. labels cut by --max-length -----------------------------------------------------------


def test_a_max_length_that_cuts_most_labels_warns(stepwise, tmp_path, capsys):
    # Before: "N past --max-length" inside the header line only, exit 0, no warning
    assert cli_main(["train", "--data", str(stepwise), "--out", str(tmp_path / "short"), "--threads", "1",
                     "--max-steps", "1", "--max-length", "80"]) == 0
    err = capsys.readouterr().err
    warned = re.search(r"prmtree train: warning: --max-length 80 cuts (\d+) of (\d+) training steps \(\d+%\): "
                       r".*raise --max-length", err)
    assert warned and int(warned.group(1)) > 0.1 * int(warned.group(2)), err
    assert cli_main(["train", "--data", str(stepwise), "--out", str(tmp_path / "long"), "--threads", "1",
                     "--max-steps", "1", "--max-length", "1024"]) == 0
    assert "warning" not in capsys.readouterr().err  # no step cut: nothing to say


def test_the_held_out_line_says_the_paths_and_steps_the_length_limit_left_unread(stepwise, tmp_path, capsys):
    # Before: "held-out (4 paths, ...)" where 6 held-out paths exist; the unread steps only in metrics.json
    table = pq.read_table(stepwise)
    rows = table.to_pylist()
    for r in rows[::2]:
        r["completions"][-1] += " " + " ".join(["x = 4 + 4 = 8 ."] * 600)  # past the PRM's 4096 tokens
    long = tmp_path / "long.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), long)
    assert cli_main(["train", "--data", str(long), "--out", str(tmp_path / "prm"), "--threads", "1",
                     "--max-steps", "1", "--select", "last"]) == 0
    said = capsys.readouterr().out
    metrics = json.loads((tmp_path / "prm" / "metrics.json").read_text())
    held = metrics["held_out"]
    assert 0 < held["paths"] < metrics["held_out_paths"] and held["unread_steps"] > 0
    assert (f"held-out ({held['paths']} of {metrics['held_out_paths']} paths, {held['steps']} steps; "
            f"{held['unread_steps']} steps past the PRM's 4096-token limit unread): ") in said, said


# -- 4. visualprm with --system-prompt '' ----------------------------------------------------


def _first_turns(path: Path) -> list[dict]:
    return [json.loads(line)["conversations"][0] for line in path.read_text().splitlines()]


def test_visualprm_without_a_system_prompt_writes_an_empty_system_turn(tmp_path, embedded_run):
    # Before: no system turn, and InternVL's preprocess_internvl2_5 then took its template's
    # default system message: the model trained WITH a system prompt, InternVL's own
    assert export(embedded_run, "visualprm", tmp_path / "none.jsonl", ExportOptions(system_prompt="")) > 0
    assert all(t == {"from": "system", "value": ""} for t in _first_turns(tmp_path / "none.jsonl"))
    export(embedded_run, "visualprm", tmp_path / "mine.jsonl", ExportOptions(system_prompt="Judge each step."))
    assert {t["value"] for t in _first_turns(tmp_path / "mine.jsonl")} == {"Judge each step."}
    for line in (tmp_path / "none.jsonl").read_text().splitlines():  # then human / gpt turns, as before
        turns = json.loads(line)["conversations"][1:]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
