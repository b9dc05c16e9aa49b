"""Issue 20, "Coverage reported everywhere": per answer space, how many problems have a
labelled step - counted by the driver, kept in the manifest over resumes and slices,
shown by ``inspect`` and the dataset card, and warned about by the run's summary.

Every expected number is read from the run's own steps table (not hard-coded), so the
tests hold whatever the labelling decides.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
from prmtree.engine.calibration import answer_space
from prmtree.engine.output import load_manifests, read_table
from prmtree.engine.stats import SPACE_COUNTERS, RunStats
from prmtree.engine.synthetic import generate_problems, write_jsonl

import prmtree
from prmtree.summary import label_warnings

SPACES = ("yesno", "choice", "number")
PROBLEMS = generate_problems(18, seed=3, answer_spaces=SPACES)
CONFIG = "seed = 3\n[search]\nstrategy = \"omega\"\nk = 4\nbudget = 48\n"


def on_disk(out: Path) -> dict[str, dict[str, int]]:
    """Each answer space's counters as the run's steps table and manifests say them."""
    space_of = {p.id: answer_space(p) for p in PROBLEMS}
    manifests = load_manifests(out)
    done = {pid for m in manifests for pid in m.completed}
    skipped = {pid for m in manifests for pid in m.skipped}
    counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SPACE_COUNTERS, 0))
    for pid in done:
        counts[space_of[pid]]["problems"] += 1
        counts[space_of[pid]]["skipped"] += pid in skipped
    labelled: set[str] = set()
    for row in read_table(out, "steps").select(["problem_id", "labels"]).to_pylist():
        c = counts[space_of[row["problem_id"]]]
        pos, neg = row["labels"].count(True), row["labels"].count(False)
        c["paths"] += 1
        c["steps_labelled"] += pos + neg
        c["positive"] += pos
        c["negative"] += neg
        if pos + neg:
            labelled.add(row["problem_id"])
    for pid in labelled:
        counts[space_of[pid]]["labelled_problems"] += 1
    return dict(counts)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("coverage")
    (base / "run.toml").write_text(CONFIG)
    return write_jsonl(PROBLEMS, base / "in"), base / "run.toml"


@pytest.fixture(scope="module")
def finished(inputs, tmp_path_factory) -> tuple[Path, prmtree.RunSummary]:
    data, config = inputs
    out = tmp_path_factory.mktemp("coverage") / "run"
    return out, prmtree.run(data, policy="simulated", out=out, config=config)


def test_the_counters_equal_the_steps_table_per_answer_space(finished):
    out, summary = finished
    truth = on_disk(out)
    assert set(truth) == set(SPACES) and all(truth[s]["problems"] == 6 for s in SPACES)
    assert any(c["steps_labelled"] for c in truth.values())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stats"]["answer_spaces"] == truth  # persisted like the other counters
    assert summary.answer_spaces == truth
    assert sum(c["problems"] for c in truth.values()) == summary.problems_done == 18
    assert sum(c["skipped"] for c in truth.values()) == summary.problems_skipped
    assert sum(c["steps_labelled"] for c in truth.values()) == summary.steps_labelled
    assert sum(c["paths"] for c in truth.values()) == summary.paths


def _threshold(truth: dict[str, dict[str, int]]) -> tuple[float, set[str]]:
    """A min_coverage that some spaces fall below (all of them when their shares are equal)."""
    shares = {s: c["labelled_problems"] / c["problems"] for s, c in truth.items()}
    distinct = sorted(set(shares.values()))
    assert distinct[0] < 1, f"every problem of every space labelled: {truth}"
    t = round((distinct[0] + distinct[1]) / 2, 3) if len(distinct) > 1 else 1.0
    return t, {s for s, share in shares.items() if share < t}


def _warning(space: str, c: dict[str, int], t: float) -> str:
    n, got = c["problems"], c["labelled_problems"]
    return (f"warning: answer space '{space}': {got} of {n} problems ({got / n:.0%}) have a labelled step "
            f"(below [labels] min_coverage = {t:g})")


def test_the_summary_names_each_under_covered_space_with_its_numbers(finished, inputs, tmp_path, capsys):
    from prmtree.cli import main

    out = tmp_path / "run"
    shutil.copytree(finished[0], out)
    truth = on_disk(out)
    t, under = _threshold(truth)
    data, _ = inputs
    # min_coverage changes no rows: the finished run resumes to nothing under a new value
    for value, named in [(t, under), (0, set())]:
        (tmp_path / "cov.toml").write_text(CONFIG + f"[labels]\nmin_coverage = {value}\n")
        code = main(["run", "--input", str(data), "--out", str(out), "--config", str(tmp_path / "cov.toml"),
                     "--no-progress"])
        text = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
        assert code == 0
        assert "nothing left to do" in text
        for space, c in truth.items():
            assert (_warning(space, c, value) in text) == (space in named), (space, value, text)
        assert ("raise [labels] max_rollouts_per_step" in text) == bool(named)
        assert text.count("warning: answer space") == len(named)


def test_a_space_of_few_problems_and_min_coverage_0_do_not_warn():
    spaces = {"tiny": {"problems": 4, "labelled_problems": 0},
              "yesno": {"problems": 42, "labelled_problems": 13, "skipped": 3, "steps_labelled": 20}}
    stats = RunStats(problems_done=46, steps_labelled=20, answer_spaces=spaces)
    warnings = label_warnings(stats)  # the default, 0.85
    assert warnings == [(
        "answer space 'yesno': 13 of 42 problems (31%) have a labelled step (below [labels] min_coverage = 0.85); "
        "3 of them skipped (not searched) - give its undecided steps more rollouts: raise [labels] "
        "max_rollouts_per_step (inf: sample until decided) and max_rollouts_per_node, or [search] budget; "
        "`prmtree inspect` shows every space")]
    assert label_warnings(stats, 0.0) == []
    assert label_warnings(stats, 0.3) == []  # 31% is not below 0.3
    with pytest.raises(prmtree.ConfigError, match="min_coverage"):
        prmtree.run(PROBLEMS[:1], policy="simulated", config={"labels": {"min_coverage": 1.5}})


def _row_pattern(cells: list[str], sep: str) -> re.Pattern[str]:
    return re.compile(r"\s*" + re.escape(sep).join(r"\s*" + re.escape(c) + r"\s*" for c in cells) + r"\s*")


def test_inspect_and_the_dataset_card_show_the_table_per_space(finished, tmp_path, capsys, monkeypatch):
    from prmtree.export import export
    from prmtree.inspect import print_report, write_html

    out = finished[0]
    truth = on_disk(out)
    monkeypatch.setenv("COLUMNS", "200")
    print_report(out)
    text = capsys.readouterr().out
    assert "coverage per answer space" in text
    write_html(out, tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    export(out, "hf", tmp_path / "hf")
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "### Coverage per answer space" in card
    for space, c in truth.items():
        n, got, steps = c["problems"], c["labelled_problems"], c["steps_labelled"]
        positive = f"{c['positive'] / steps:.0%}" if steps else "-"
        cells = [space, str(n), str(c["skipped"]), f"{got} ({got / n:.0%})", f"{steps / n:.1f}", positive]
        assert _row_pattern(cells, "│").search(text), (cells, text)
        assert "<tr>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>" in page
        positive = f"{100 * c['positive'] / steps:.1f}%" if steps else "-"
        assert (f"| `{space}` | {n} | {c['skipped']} | {got} ({100 * got / n:.1f}%) | {steps / n:.1f} | {positive} |"
                in card)


def test_the_counters_add_across_slices_and_a_resume(inputs, tmp_path):
    data, config = inputs
    # two slices into one directory: what a --drivers job, inspect and export add up
    both = tmp_path / "both"
    parts = [prmtree.run(data, policy="simulated", out=both, config=config, slice=s).run_stats
             for s in ("0/2", "1/2")]
    truth = on_disk(both)
    assert all(0 < sum(c["problems"] for c in p.answer_spaces.values()) < 18 for p in parts)
    assert sum(parts, RunStats()).answer_spaces == truth
    merged = sum((RunStats.from_dict(m.stats) for m in load_manifests(both)), RunStats())
    assert merged.answer_spaces == truth and merged.problems_done == 18
    # a resumed run's totals hold the earlier run's problems
    again = tmp_path / "again"
    first = prmtree.run(PROBLEMS[:8], policy="simulated", out=again, config=config)
    assert sum(c["problems"] for c in first.answer_spaces.values()) == 8
    resumed = prmtree.run(data, policy="simulated", out=again, config=config)
    assert resumed.rollouts_this_session > 0 and resumed.problems_done == 18
    truth = on_disk(again)
    assert resumed.answer_spaces == truth
    assert json.loads((again / "manifest.json").read_text())["stats"]["answer_spaces"] == truth


def test_adding_two_drivers_stats_adds_each_space_counter():
    a = RunStats(answer_spaces={"yesno": {"problems": 3, "labelled_problems": 1, "positive": 2}})
    b = RunStats(answer_spaces={"yesno": {"problems": 2, "labelled_problems": 2, "positive": 5},
                                "number": {"problems": 4, "labelled_problems": 4}})
    total = a + b
    assert total.answer_spaces == {"yesno": {"problems": 5, "labelled_problems": 3, "positive": 7},
                                   "number": {"problems": 4, "labelled_problems": 4}}
    assert a.answer_spaces["yesno"]["problems"] == 3  # the parts are left as they were
    resumed = RunStats.resumed(total.to_dict())
    resumed.count_space("yesno", [[True, None], [None]], skipped=False)
    assert resumed.answer_spaces["yesno"]["problems"] == 6 and resumed.answer_spaces["yesno"]["positive"] == 8
    assert resumed.answer_spaces["yesno"]["paths"] == 2  # a counter an older manifest lacked starts at 0
    assert total.answer_spaces["yesno"]["problems"] == 5  # resuming copies the manifest's counts


def test_a_run_that_labels_nothing_gives_every_reason_not_an_empty_promise(tmp_path):
    # Before: "the reasons below say why" and nothing below: one problem skipped (under the
    # share that warns) and eleven searched whose every step [output] max_ci_width left out.
    import prmtree
    from prmtree.engine.synthetic import generate_problems

    problems = generate_problems(12, seed=2, answer_spaces=("number", "yesno", "choice"))
    s = prmtree.run(problems, out=tmp_path / "o", policy="simulated",
                    config={"output": {"max_ci_width": 0.3}, "search": {"budget": 60}, "seed": 1})
    assert s.run_stats.steps_labelled == 0 and dict(s.run_stats.skip_reasons) == {"root all correct": 1}
    warnings = label_warnings(s.run_stats)
    assert warnings[0].endswith("the reasons below say why")
    assert warnings[1].startswith("1 of 12 problems skipped (root all correct)")
    assert warnings[2].startswith("11 of 12 problems were searched and no path of theirs kept a labelled first step")
    assert "[output] max_ci_width" in warnings[2]
