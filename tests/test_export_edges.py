"""Exports at their edges: an openrlhf placeholder found in the exporter's own ``Step k: ``
text, the hf held-out split of a run whose pairs are mostly of problems with no steps row,
and a file format's target written as a directory (``NEW/``)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_with_pairs

from prmtree.engine.output import read_table
from prmtree.export import ExportError, ExportOptions, export

# -- openrlhf: a placeholder the "Step k: " numbering holds -----------------------------------


def test_a_placeholder_found_in_the_step_numbering_or_holding_a_space_is_refused(tmp_path, embedded_run):
    # Before: "Step", "1:" or "ep" were taken, and each "Step k: " before a step held one
    # more placeholder than the labels: 16 placeholders for 8 labels, every record misaligned.
    # "12" broke paths of 12 steps or more; "n Step" a question ending in "n".
    for placeholder in ("Step", "1:", "ep", "St", "12", "00", "p 1", "tep 3:", "n Step", "a b", "ки\tки"):
        with pytest.raises(ExportError, match=r"placeholder must hold no whitespace and no part of the \"Step k: \" "
                                              rf"numbering put before each step, got {re.escape(repr(placeholder))}: "
                                              "its copies there would be read as placeholders") as info:
            ExportOptions(placeholder=placeholder)
        assert "\n" not in str(info.value)
    for placeholder in ("p:", "S1", "<step>", "кк"):  # near the numbering, never in it: exported aligned
        target = tmp_path / f"{len(list(tmp_path.iterdir()))}.jsonl"
        n = export(embedded_run, "openrlhf", target, ExportOptions(placeholder=placeholder))
        rows = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
        assert len(rows) == n > 0
        assert all(r["input"].count(placeholder) == len(r["label"]) > 0 for r in rows), placeholder


# -- hf: --test-size holds out that share of every config's problems -------------------------


def _share(n: int, test_size: float) -> int:
    """The README's share of n problems: ceil(test_size * n), at least one, one left to train on."""
    return min(n - 1, max(1, math.ceil(test_size * n)))


@pytest.fixture(scope="module")
def mostly_pairs_run(tmp_path_factory) -> Path:
    """A real run of 20 problems whose steps rows are then removed for all but three of the
    problems with pairs (as ``max_ci_width`` or an undecided first label leaves a run): most
    pairs are of problems with no steps row."""
    return run_with_pairs(tmp_path_factory.mktemp("mostly-pairs"), lambda with_pairs: lambda pid: pid in with_pairs[:3])


def _problems(target: Path, split: str) -> set[str]:
    files = sorted((target / "data").glob(f"{split}-*.parquet"))
    return {pid for f in files for pid in pq.read_table(f).column("problem_id").to_pylist()}


def test_hf_test_size_holds_out_that_share_of_the_pairs_problems_too(tmp_path, mostly_pairs_run):
    # Before: the share was counted over the 3 steps problems only (1 held out, whatever the
    # test size), and the pairs-only problems went by that one problem's hash: the same
    # pairs split for 0.1, 0.5 and 0.8.
    with_steps = set(read_table(mostly_pairs_run, "steps").column("problem_id").to_pylist())
    with_pairs = set(read_table(mostly_pairs_run, "pairs").column("problem_id").to_pylist())
    assert len(with_steps) == 3 and len(with_pairs - with_steps) >= 7
    for test_size in (0.1, 0.5, 0.8):
        target = tmp_path / f"hf-{test_size}"
        export(mostly_pairs_run, "hf", target, ExportOptions(test_size=test_size))
        steps_train, steps_test = _problems(target, "train"), _problems(target, "test")
        pairs_train, pairs_test = _problems(target, "pairs-train"), _problems(target, "pairs-test")
        assert steps_train | steps_test == with_steps and pairs_train | pairs_test == with_pairs
        assert not (steps_train | pairs_train) & (steps_test | pairs_test)  # one split for every config
        assert len(steps_test) == _share(len(with_steps), test_size), test_size
        assert len(pairs_test) == _share(len(with_pairs), test_size), test_size
        again = tmp_path / f"again-{test_size}"  # the same split on every export
        export(mostly_pairs_run, "hf", again, ExportOptions(test_size=test_size))
        assert _problems(again, "pairs-test") == pairs_test and _problems(again, "test") == steps_test


# -- a file format's target written as a directory -------------------------------------------


@pytest.mark.parametrize("fmt", ["stepwise", "jsonl", "openrlhf"])
def test_a_file_format_refuses_a_target_written_as_a_directory(tmp_path, embedded_run, fmt):
    # Before: --to NEW/ lost its slash to Path() and a file named NEW was written.
    for given in (f"{tmp_path / 'new'}/", f"{tmp_path / 'deeper' / 'new'}/.", f"{tmp_path / 'new'}//"):
        with pytest.raises(ExportError, match=rf"^{re.escape(repr(given))} names a directory; --format {fmt} "
                                              r"writes a file \(give a file name\)$"):
            export(embedded_run, fmt, given)
    assert list(tmp_path.iterdir()) == []  # nothing written, no folder made
    assert export(embedded_run, fmt, str(tmp_path / "new")) > 0 and (tmp_path / "new").is_file()
    assert export(embedded_run, "hf", f"{tmp_path / 'hf'}/") > 0 and (tmp_path / "hf" / "README.md").is_file()


def test_the_export_command_refuses_a_target_written_as_a_directory_too(tmp_path, embedded_run, capsys):
    # the command line gave export() a Path, which had already dropped the slash
    from prmtree.cli import main

    with pytest.raises(SystemExit) as refused:
        main(["export", str(embedded_run), "--format", "stepwise", "--to", f"{tmp_path / 'new'}/"])
    assert refused.value.code == 2
    assert capsys.readouterr().err.strip().endswith("names a directory; --format stepwise writes a file (give a "
                                                    "file name)")
    assert list(tmp_path.iterdir()) == []
