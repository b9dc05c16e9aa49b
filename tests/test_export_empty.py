"""An export with no record: refused with the reason and exit 4 (as ``prmtree run`` exits
when it labelled nothing), or with ``--allow-empty`` written as files that read back.

The zero-label run is real: the simulated policy with ``error_rate=0.0`` gets every
rollout right, so every problem is skipped ("root all correct") and the steps table
holds no row. Before the fix every format wrote "wrote 0 rows" with exit 0, and the
Parquet formats wrote one row group of 0 rows that ``datasets`` fails on
(``ArrowInvalid: BatchSize must be greater than 0``).
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import cli

import prmtree
from prmtree.cli import main
from prmtree.engine.output import read_table
from prmtree.engine.synthetic import generate_problems, write_jsonl
from prmtree.export import ExportError, ExportOptions, export, format_list, formats

#: Every name ``--format`` takes (aliases too) -> the format's own name, which messages use.
NAMES = {name: cls.name for cls in formats() for name in (cls.name, *cls.aliases)}
PARQUET = {"hf", "stepwise"}  # the rest write JSONL
STEPWISE_COLUMNS = ["prompt", "images", "completions", "labels"]
SKIPPED = "the run labelled no step (4 of 4 problems skipped: root all correct)"


def test_every_format_is_covered():
    assert [name for name, _ in format_list()] == list(NAMES)
    assert set(NAMES.values()) >= PARQUET


def _zero_label_problems(directory: Path) -> Path:
    return write_jsonl(generate_problems(4, seed=0), directory)


@pytest.fixture(scope="module")
def zero_label_run(tmp_path_factory) -> Path:
    """A run of 4 synthetic problems with a policy that never errs: every problem skipped, no steps row."""
    base = tmp_path_factory.mktemp("zero-label")
    out = base / "run"
    summary = prmtree.run(_zero_label_problems(base / "data"), policy="simulated", policy_args={"error_rate": 0.0},
                          out=out, seed=0)
    assert summary.problems_done == 4 and summary.steps_labelled == 0
    assert read_table(out, "steps").num_rows == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished" and set(manifest["skipped"].values()) == {"root all correct"}
    return out


@pytest.mark.slow
def test_the_commands_exit_4_alike_when_nothing_was_labelled(tmp_path):
    """``prmtree run`` exits 4 when it labelled nothing; ``prmtree export`` of that run too,
    writing nothing, and with --allow-empty it writes the empty export, exit 0."""
    out = tmp_path / "run"
    ran = cli("run", "--input", _zero_label_problems(tmp_path / "data"), "--policy", "simulated",
              "--policy-arg", "error_rate=0.0", "--out", out, "--no-progress", "--seed", "0")
    assert ran.returncode == 4 and "nothing was labelled" in ran.stderr, ran.stderr
    exported = cli("export", out, "--format", "stepwise", "--to", tmp_path / "s.parquet")
    assert exported.returncode == 4 and exported.stdout == ""
    assert exported.stderr.startswith(f"prmtree: nothing to export as stepwise (0 records; nothing written): {SKIPPED}")
    assert not (tmp_path / "s.parquet").exists()
    exported = cli("export", out, "--format", "stepwise", "--to", tmp_path / "s.parquet", "--allow-empty")
    assert exported.returncode == 0 and exported.stdout == f"wrote 0 rows to {tmp_path / 's.parquet'}\n"
    assert pq.read_table(tmp_path / "s.parquet").num_rows == 0


@pytest.fixture(scope="module")
def pairless_run(tmp_path_factory) -> Path:
    """A real run with labelled paths (and images) but no preference pair."""
    out = tmp_path_factory.mktemp("pairless") / "run"
    prmtree.run(generate_problems(1, seed=3), policy="simulated", policy_args={"error_rate": 0.2}, out=out, seed=3)
    assert read_table(out, "steps").num_rows > 0 and read_table(out, "pairs").num_rows == 0
    return out


def _hand_run(tmp_path: Path, source: Path, **columns) -> Path:
    """A folder of steps shards (no manifest, as ``export`` accepts): ``source``'s steps rows
    with ``columns`` set to the value given (a function of the row)."""
    rows = read_table(source, "steps")
    out = tmp_path / "hand-run"
    (out / "steps").mkdir(parents=True)
    for name, value in columns.items():
        i = rows.schema.get_field_index(name)
        rows = rows.set_column(i, rows.schema.field(i), pa.array([value(r) for r in rows.to_pylist()],
                                                                 rows.schema.field(i).type))
    pq.write_table(rows, out / "steps" / "part-00000.parquet")
    return out


def _export(capsys, run: Path, fmt: str, target: Path, *flags: str) -> tuple[int, str, str]:
    code = main(["export", str(run), "--format", fmt, "--to", str(target), *flags])
    said = capsys.readouterr()
    return code, said.out, said.err


def _written(directory: Path) -> list[str]:
    """What an export left in ``directory``, its lock file aside (it stays, as a run's does)."""
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith(".export.lock"))


# -- refused: nothing written, exit 4, one line saying why ---------------------------------------


@pytest.mark.parametrize("fmt", list(NAMES))
def test_a_run_that_labelled_nothing_is_refused_in_every_format(tmp_path, capsys, zero_label_run, fmt):
    code, out, err = _export(capsys, zero_label_run, fmt, tmp_path / "x.out")
    assert code == 4
    assert out == ""
    assert err == (f"prmtree: nothing to export as {NAMES[fmt]} (0 records; nothing written): {SKIPPED}; "
                   "pass --allow-empty (allow_empty=True) to write an empty export\n")
    assert _written(tmp_path) == []  # no file, no hf folder, no visualprm meta, no images/


@pytest.mark.parametrize("fmt", ["jsonl", "stepwise", "hf"])
def test_a_refusal_leaves_an_earlier_export_in_place(tmp_path, capsys, zero_label_run, fmt):
    target = tmp_path / "x"
    earlier = target / "README.md" if fmt == "hf" else target
    earlier.parent.mkdir(parents=True, exist_ok=True)
    earlier.write_text("an earlier export\n")
    assert _export(capsys, zero_label_run, fmt, target, "--overwrite")[0] == 4
    assert earlier.read_text() == "an earlier export\n"
    assert _written(tmp_path) == ["x"] and (fmt != "hf" or _written(target) == ["README.md"])


def test_the_api_raises_a_nothing_to_export_error(tmp_path, zero_label_run):
    with pytest.raises(ExportError) as refused:
        export(zero_label_run, "hf", tmp_path / "hf")
    assert type(refused.value).__name__ == "NothingToExport"
    assert SKIPPED in str(refused.value) and not (tmp_path / "hf").exists()
    with pytest.warns(UserWarning, match="the hf export holds no record: the run labelled no step"):
        assert export(zero_label_run, "hf", tmp_path / "hf", ExportOptions(allow_empty=True)) == 0


# -- --allow-empty: written, and it reads back as 0 rows with its columns ---------------------------


@pytest.mark.parametrize("fmt", list(NAMES))
def test_allow_empty_writes_an_export_that_reads_back_empty(tmp_path, capsys, zero_label_run, fmt):
    name = "x" if fmt == "hf" else ("x.parquet" if NAMES[fmt] in PARQUET else "x.jsonl")
    target = tmp_path / name
    code, out, err = _export(capsys, zero_label_run, fmt, target, "--allow-empty")
    assert code == 0
    assert out == f"wrote 0 rows to {target}\n"
    assert err == f"prmtree: warning: the {NAMES[fmt]} export holds no record: {SKIPPED}\n"
    if NAMES[fmt] == "hf":
        assert _written(target / "data") == ["train-00000-of-00001.parquet"]  # no empty pairs split
        files = [target / "data" / "train-00000-of-00001.parquet"]
        columns = read_table(zero_label_run, "steps").schema.names  # every column of the steps table
    elif NAMES[fmt] == "stepwise":
        files, columns = [target], STEPWISE_COLUMNS
    else:
        assert target.read_bytes() == b""
        assert not (tmp_path / "images").exists()
        if fmt == "visualprm":
            assert json.loads((tmp_path / "x_meta.json").read_text())["x"]["length"] == 0
        return
    for file in files:
        parquet = pq.ParquetFile(file)
        assert parquet.metadata.num_rows == 0
        assert parquet.metadata.num_row_groups == 0  # one row group of 0 rows is what datasets fails on
        table = pq.read_table(file)
        assert table.num_rows == 0 and table.column_names == columns
        # datasets reads it: streamed (the loader that failed with "BatchSize must be greater
        # than 0"), and as a Dataset with the features the file carries (images decode as images)
        streamed = datasets.load_dataset("parquet", data_files=str(file), split="train", streaming=True)
        assert list(streamed) == [] and list(streamed.features) == columns
        assert "Image(" in repr(streamed.features["images"])
        loaded = datasets.Dataset(table)
        assert loaded.num_rows == 0 and loaded.column_names == columns
        assert "Image(" in repr(loaded.features["images"])
    if NAMES[fmt] == "hf":
        folder = datasets.load_dataset(str(target), split="train", streaming=True)
        assert list(folder) == [] and list(folder.features) == columns


# -- rows exist, but the format's own rule leaves none ------------------------------------------------


def test_pairs_of_a_run_with_no_pair_is_refused_before_writing_images(tmp_path, capsys, pairless_run):
    code, out, err = _export(capsys, pairless_run, "pairs", tmp_path / "p.jsonl")
    paths = read_table(pairless_run, "steps").num_rows
    assert code == 4 and out == ""
    assert err.startswith("prmtree: nothing to export as pairs (0 records; nothing written): the run made no "
                          f"preference pair (a pair is two sibling steps after one prefix, one decided right and one "
                          f"wrong; its steps table holds {paths} paths, which the other formats export)")
    assert _written(tmp_path) == []  # the images of the run's problems are not written either
    code, out, _ = _export(capsys, pairless_run, "openrlhf", tmp_path / "o.jsonl")
    assert code == 0 and out == f"wrote {paths} rows to {tmp_path / 'o.jsonl'}\n"


def _refusal(run: Path, fmt: str, target: Path, **options) -> str:
    """The message of the API's refusal (a folder of shards has no manifest: the CLI wants one)."""
    with pytest.raises(ExportError) as refused:
        export(run, fmt, target, ExportOptions(**options))
    assert type(refused.value).__name__ == "NothingToExport"
    return str(refused.value)


def test_every_path_flagged_is_refused_by_the_formats_that_leave_flags_out(tmp_path, pairless_run):
    run = _hand_run(tmp_path, pairless_run, flagged=lambda r: True)
    paths = read_table(run, "steps").num_rows
    for fmt in ("stepwise", "openrlhf", "visualprm", "qwen-prm", "math-shepherd", "prm800k"):
        assert (f"all {paths} of the run's paths with a decided step are flagged (MC and the judge disagreed), "
                f"which --format {fmt} leaves out: --keep-flagged (keep_flagged=True) keeps them"
                ) in _refusal(run, fmt, tmp_path / "x" / fmt), fmt
        assert export(run, fmt, tmp_path / "kept" / fmt, ExportOptions(keep_flagged=True)) == paths
    assert _written(tmp_path / "x") == []  # the refusals wrote nothing (no images either)
    for fmt in ("hf", "jsonl"):  # these carry the flagged column
        assert export(run, fmt, tmp_path / "x" / fmt) == paths


def test_no_decided_first_step_is_refused_in_every_format(tmp_path, pairless_run):
    run = _hand_run(tmp_path, pairless_run, labels=lambda r: [None] * len(r["labels"]))
    paths = read_table(run, "steps").num_rows
    for fmt in NAMES:
        if fmt == "pairs":
            continue  # from the pairs table, which this run has none of
        assert (f"none of the run's {paths} paths has a decided first step (every export cuts a path at its first "
                "undecided label)") in _refusal(run, fmt, tmp_path / "x" / fmt), fmt
    assert _written(tmp_path / "x") == []
