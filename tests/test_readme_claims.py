"""The README's factual statements, each checked against the product (issue 18, item 17).

Each test names the README sentence it holds true. Cheap and in-process where possible;
a test that starts Ray is marked slow.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
import tomllib
from prmtree.engine.config import RunConfig
from prmtree.engine.errors import GenerationError
from prmtree.engine.output import load_manifest, read_table
from prmtree.engine.registry import EXECUTORS, LABELERS, POLICIES, STRATEGIES
from prmtree.engine.synthetic import generate_problems
from prmtree.engine.tables import TABLES
from prmtree.policies.simulated import SimulatedPolicy

import prmtree
from prmtree.export import ExportOptions, export, format_list
from prmtree.export.rows import decided

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def section(title: str) -> str:
    """The README's text from the heading ``title`` to the next heading of its level."""
    start = README.index(title)
    level = title.split(" ")[0]
    rest = README[start + len(title):]
    end = re.search(rf"^{level} ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- runs the claims are checked on -----------------------------------------------------------


@pytest.fixture(scope="module")
def disputed_run(tmp_path_factory) -> Path:
    """A consensus run that keeps disagreements flagged and undecided steps as nulls:
    flagged paths, paths with a null label mid-way and paths whose first label is null."""
    out = tmp_path_factory.mktemp("disputed") / "run"
    problems = generate_problems(12, seed=4, min_steps=8, answer_spaces=("yesno", "choice", "number"))
    config = {"labels": {"method": "consensus", "on_disagreement": "flag", "undecided": "keep"},
              "search": {"budget": 100}}
    prmtree.run(problems, policy=SimulatedPolicy(guess_rate=0.3, judge_accuracy=0.6), out=out, config=config)
    rows = read_table(out, "steps").to_pylist()
    assert any(r["flagged"] for r in rows) and any(not r["flagged"] for r in rows)
    assert any(r["labels"][0] is None for r in rows)
    assert any(None in r["labels"][1:] and r["labels"][0] is not None for r in rows)
    return out


@pytest.fixture(scope="module")
def mc_and_calibrated_runs(tmp_path_factory) -> dict[str, Path]:
    problems = generate_problems(6, seed=2, answer_spaces=("yesno", "choice", "number"))
    runs = {}
    for method in ("mc", "calibrated"):
        out = tmp_path_factory.mktemp(method) / "run"
        prmtree.run(problems, policy=SimulatedPolicy(guess_rate=0.3), out=out,
                    config={"labels": {"method": method}, "search": {"budget": 64}})
        runs[method] = out
    return runs


# -- exports: one rule for undecided labels and for flagged paths --------------------------------


def test_every_export_cuts_paths_at_their_first_undecided_label(tmp_path, disputed_run):
    """README: "Every format cuts a path at its first undecided (null) label, every per-step
    column with it, and leaves out a path with no decided step; paths the cut makes the
    same are one record"."""
    rows = read_table(disputed_run, "steps").to_pylist()
    expected, seen = {}, {}
    for r in rows:
        steps, labels, _ = decided(r)
        key = (r["problem_id"], *steps)
        # paths the cut makes the same: the first, or an unflagged one in a flagged one's stead
        if steps and (key not in seen or (expected[seen[key]][2] and not r["flagged"])):
            expected.pop(seen.get(key), None)
            seen[key] = r["path_id"]
            expected[r["path_id"]] = (steps, labels, r["flagged"], len(steps) < len(r["labels"]))
    assert len(expected) < len(rows)  # some paths have nothing decided: left out

    export(disputed_run, "hf", tmp_path / "hf")
    hf = datasets.load_dataset(str(tmp_path / "hf"), split="train")
    export(disputed_run, "jsonl", tmp_path / "plain.jsonl")
    plain = jsonl(tmp_path / "plain.jsonl")
    for name, records in (("hf", list(hf)), ("jsonl", plain)):
        assert {r["path_id"] for r in records} == set(expected), name
        for r in records:
            steps, labels, _, cut = expected[r["path_id"]]
            assert (r["completions"], r["labels"]) == (steps, labels), name
            assert None not in r["labels"]
            n = len(steps)
            for column in ("values", "label_sources", "confidences", "rollouts", "parent_values",
                           "ci_low", "ci_high", "judge_verdicts"):
                assert len(r[column]) == n, (name, column)
            if cut:
                assert r["final_correct"] is None  # the kept steps do not reach the answer

    export(disputed_run, "stepwise", tmp_path / "s.parquet", ExportOptions(keep_flagged=True))
    stepwise = pq.read_table(tmp_path / "s.parquet").to_pylist()
    assert sorted(r["labels"] for r in stepwise) == sorted(labels for _, labels, _, _ in expected.values())

    export(disputed_run, "openrlhf", tmp_path / "o.jsonl", ExportOptions(keep_flagged=True))
    assert sorted(len(r["label"]) for r in jsonl(tmp_path / "o.jsonl")) == sorted(
        len(labels) for _, labels, _, _ in expected.values())


def test_stepwise_leaves_out_flagged_paths_unless_asked(tmp_path, disputed_run):
    """README: "Every format but `hf` and `jsonl` leaves out the paths a `consensus` run kept
    flagged (MC and judge disagreed) unless `--keep-flagged`"."""
    def unique(rows):  # paths the cut makes the same are one record
        return {(r["problem_id"], *decided(r)[0]): r for r in reversed(rows)}

    every = [r for r in read_table(disputed_run, "steps").to_pylist() if decided(r)[0]]
    rows = list(unique(every).values())
    unflagged = sorted(decided(r)[1] for r in unique([r for r in every if not r["flagged"]]).values())
    assert export(disputed_run, "stepwise", tmp_path / "s.parquet") == len(unflagged)
    table = pq.read_table(tmp_path / "s.parquet")
    assert table.column_names == ["prompt", "images", "completions", "labels"]  # no flagged column: left out
    assert sorted(table.column("labels").to_pylist()) == unflagged
    assert export(disputed_run, "stepwise", tmp_path / "all.parquet", ExportOptions(keep_flagged=True)) == len(rows)
    assert export(disputed_run, "jsonl", tmp_path / "p.jsonl") == len(rows)
    assert sum(bool(r["flagged"]) for r in jsonl(tmp_path / "p.jsonl")) == len(rows) - len(unflagged)


def test_no_preference_pair_rests_on_a_step_the_judge_disputed(tmp_path, disputed_run):
    """README: a pair whose chosen or rejected step the judge disputed is left out of the
    pairs table (it has no flag column), under ``on_disagreement = "flag"`` too."""
    disputed = set()
    for r in read_table(disputed_run, "steps").to_pylist():
        for j, source in enumerate(r["label_sources"]):
            if source == "judge-disagreed":
                disputed.add((r["problem_id"], tuple(r["completions"][:j]), r["completions"][j]))
    assert disputed
    pairs = read_table(disputed_run, "pairs").to_pylist()
    assert pairs
    for p in pairs:
        for step in (p["chosen"], p["rejected"]):
            assert (p["problem_id"], tuple(p["prefix"]), step) not in disputed
    assert load_manifest(disputed_run / "manifest.json").stats["labelling"]["pairs_dropped_by_judge"] > 0


def test_the_readme_confidence_filter_runs_on_mc_and_calibrated_exports(tmp_path, mc_and_calibrated_runs):
    """The README's ``ds.filter(...)`` line, run as written on the hf export of an mc run
    (every confidence null) and of a calibrated one."""
    block = re.search(r"```python\n(import datasets\n.*?)```", README, re.DOTALL).group(1)
    line = next(x for x in block.splitlines() if x.startswith("ds.filter("))
    kept = {}
    for method, out in mc_and_calibrated_runs.items():
        export(out, "hf", tmp_path / method)
        ds = datasets.load_dataset(str(tmp_path / method), split="train")
        confidences = [c for r in ds["confidences"] for c in r]
        assert (all(c is None for c in confidences) if method == "mc" else all(c is not None for c in confidences))
        kept[method] = eval(line, {"ds": ds})  # the README's own line
        want = [r for r in ds if all(c is None or c >= 0.99 for c in r["confidences"])]
        assert kept[method].num_rows == len(want) > 0
    assert kept["mc"].num_rows == datasets.load_dataset(str(tmp_path / "mc"), split="train").num_rows


# -- inspect, summary, progress ------------------------------------------------------------------


class FailsSome:
    """Breaks the completion contract on two problems and raises a non-retryable error on a third."""

    def __init__(self) -> None:
        self.inner = SimulatedPolicy()

    async def generate(self, request):
        if request.problem.id in ("syn-000001", "syn-000003"):
            return []  # wrong count: a contract failure
        if request.problem.id == "syn-000004":
            raise GenerationError("model refused the image", retryable=False)
        return await self.inner.generate(request)


def test_inspect_names_each_failure_kind_with_an_example(tmp_path, capsys, monkeypatch):
    """README: inspect prints "failed problems by kind (count, one problem id and its message)"."""
    out = tmp_path / "run"
    summary = prmtree.run(generate_problems(6, seed=1), policy=FailsSome(), out=out,
                          config={"search": {"budget": 32}, "executor": {"max_attempts": 1}})
    assert summary.problems_failed == 3
    from prmtree.inspect import collect, print_report

    failures = collect(out).failures
    assert failures["contract"][:2] == (2, "syn-000001")
    assert "returned 0 completions for n=" in failures["contract"][2]
    assert failures["GenerationError"][:2] == (1, "syn-000004")
    assert "model refused the image" in failures["GenerationError"][2]
    monkeypatch.setenv("COLUMNS", "250")
    capsys.readouterr()
    print_report(out)
    printed = capsys.readouterr().out
    assert "failed problems" in printed and "syn-000004: policy: GenerationError: model refused the image" in printed
    html_report = tmp_path / "r.html"
    from prmtree.inspect import write_html

    write_html(out, html_report)
    assert "model refused the image" in html_report.read_text()


def test_a_rerun_that_retried_a_failing_problem_does_not_say_nothing_left(tmp_path, capsys):
    """A rerun whose one problem still fails has retried it: not "nothing left to do"."""
    from prmtree.summary import print_summary

    out = tmp_path / "run"
    problems = generate_problems(5, seed=1)
    config = {"search": {"budget": 32}, "executor": {"max_attempts": 1}}
    prmtree.run(problems, policy=FailsSome(), out=out, config=config)
    again = prmtree.run(problems, policy=FailsSome(), out=out, config=config)
    assert again.problems_failed == 3 and again.rollouts_this_session == 0
    capsys.readouterr()
    print_summary(again, None)
    assert "nothing left to do" not in capsys.readouterr().out
    assert load_manifest(out / "manifest.json").failed.keys() == {"syn-000001", "syn-000003", "syn-000004"}
    done = prmtree.run(problems[:1], policy="simulated", out=tmp_path / "ok", config=config)
    rerun = prmtree.run(problems[:1], policy="simulated", out=tmp_path / "ok", config=config)
    assert done.problems_done == rerun.problems_done == 1
    print_summary(rerun, None)
    assert "nothing left to do" in capsys.readouterr().out


# -- max_steps and final_correct ---------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["omega", "shepherd", "mcts"])
@pytest.mark.parametrize("method", ["mc", "calibrated"])
def test_max_steps_bounds_every_path_of_every_strategy(tmp_path, strategy, method):
    """README: "`[steps] max_steps` bounds every path in every strategy: no path has more steps"."""
    out = tmp_path / "run"
    prmtree.run(generate_problems(6, seed=3, min_steps=8, max_steps=12), policy="simulated", out=out,
                config={"search": {"strategy": strategy, "budget": 64}, "steps": {"max_steps": 3},
                        "labels": {"method": method}})
    steps = read_table(out, "steps").to_pylist()
    nodes = read_table(out, "nodes").to_pylist()
    assert steps and max(len(r["completions"]) for r in steps) <= 3
    assert max(n["depth"] for n in nodes) <= 3
    deepest = [n for n in nodes if n["depth"] == 3]
    if strategy == "mcts" and deepest:  # expanded by whole continuations: the last step carries the answer
        assert all(n["terminal"] for n in deepest)


def test_mcts_final_correct_is_null_only_where_the_path_ends_before_its_answer(tmp_path):
    """README: `final_correct` is "null when the path ends before its answer"."""
    out = tmp_path / "run"
    prmtree.run(generate_problems(8, seed=3), policy="simulated", out=out, config={"search": {"strategy": "mcts"}})
    terminal = {n["node_id"]: n["terminal"] for n in read_table(out, "nodes").to_pylist()}
    steps = read_table(out, "steps").to_pylist()
    assert any(r["final_correct"] is None for r in steps) and any(r["final_correct"] is not None for r in steps)
    for r in steps:
        assert (r["final_correct"] is None) == (not terminal[r["path_id"]])


# -- the CLI and the output directory ---------------------------------------------------------


def test_run_help_names_every_input_kind_and_policy_form():
    from prmtree.cli import build_parser

    run = build_parser()._subparsers._group_actions[0].choices["run"]
    helps = {a.dest: a.help for a in run._actions}
    for kind in ("JSONL", "JSON", "Parquet", "save_to_disk"):
        assert kind in helps["input"]
    assert "module:Class" in helps["policy"] and "module:function" in helps["policy"]
    for flag in ("--config", "--seed", "--policy-arg", "--slice", "--shard", "--force", "--image-mode",
                 "--chat-format", "--drivers", "--executor", "--address", "--workers"):
        assert flag in run._option_string_actions, flag
    assert f"--policy-arg {'KEY=VALUE'}" in run.format_usage() or "KEY=VALUE" in run.format_help()


def test_the_output_section_names_every_file_a_run_writes(tmp_path):
    """README "## Output format": every entry a run leaves in --out is listed there, and an
    empty ``errors/`` is said to be normal."""
    out = tmp_path / "run"
    prmtree.run(generate_problems(3, seed=1), policy="simulated", out=out)
    listing = re.search(r"```\nout/\n(.*?)```", README, re.DOTALL).group(1)
    names = {line.split()[0] for line in listing.splitlines() if line.strip() and not line.startswith(" " * 10)}
    for entry in out.iterdir():
        shown = entry.name + "/" if entry.is_dir() else entry.name
        assert any(shown == n or n.startswith(shown) or re.fullmatch(n.replace(".", r"\.").replace("*", ".*"), shown)
                   for n in names), shown
    assert not any((out / "errors").iterdir())
    assert "stays empty when no row was bad" in listing
    assert ".prmtree.lock" in listing


def test_the_table_columns_are_the_schemas():
    """README "## Output format": the columns table lists each table's schema, in order."""
    text = section("## Output format")
    for table in ("steps", "nodes", "pairs", "errors"):
        row = re.search(rf"^\| {table} \| (.*) \|$", text, re.MULTILINE).group(1)
        listed = [c for c in re.findall(r"`([a-z_]+)`", row) if c in TABLES[table].schema.names]
        named = re.findall(r"`([a-z_]+)`(?: / `[a-z_]+`)*", row)
        assert set(TABLES[table].schema.names) <= set(re.findall(r"`([a-z_]+)`", row)), table
        assert listed == [c for c in TABLES[table].schema.names if c in listed] and named, table


# -- configuration, registries and documented defaults -------------------------------------------


def test_the_readme_config_block_shows_the_defaults():
    """Every value in the README's TOML block is the default (but the policy's own argument)."""
    block = tomllib.loads(re.search(r"```toml\n(.*?)```", README, re.DOTALL).group(1))
    defaults = RunConfig().model_dump()

    def walk(given, default, where):
        for key, value in given.items():
            if where == "policy" and key != "name":
                continue
            if isinstance(value, dict):
                walk(value, default[key], f"{where}.{key}" if where else key)
            else:
                assert default[key] == value, f"{where}.{key}: README {value!r}, default {default[key]!r}"

    walk({k: v for k, v in block.items() if k != "seed"}, defaults, "")


def test_omega_paper_defaults_and_the_label_settings_are_the_config_defaults():
    """README: "Paper defaults: k=8, α=0.5, β=0.9, L=500, c_puct=0.125, search limit 100;
    budget 200" and the labels' defaults named in "How labels are decided"."""
    s = RunConfig().search
    assert (s.k, s.alpha, s.beta, s.length_scale, s.c_puct, s.search_limit, s.budget) == (8, 0.5, 0.9, 500, 0.125, 100, 200)
    lab = RunConfig().labels
    assert (lab.method, lab.confidence, lab.batch, lab.max_rollouts_per_node, lab.max_rollouts_per_step,
            lab.undecided) == ("calibrated", 0.96, 4, 32, 25, "drop")
    assert RunConfig.model_validate({"labels": {"max_rollouts_per_step": None}}).labels.max_rollouts_per_step is None
    inf = RunConfig.model_validate(tomllib.loads("[labels]\nmax_rollouts_per_step = inf\n"))
    assert inf.labels.max_rollouts_per_step in (None, float("inf"))


def test_the_named_strategies_methods_executors_and_formats_exist():
    assert set(STRATEGIES.names()) >= {"omega", "shepherd", "mcts"}
    assert set(LABELERS.names()) >= {"mc", "calibrated", "consensus"}
    assert set(EXECUTORS.names()) >= {"inline", "ray"}
    assert set(POLICIES.names()) >= {"vllm", "openai", "hf", "simulated"}
    formats = {name for name, _ in format_list()}
    train = section("## Train a PRM on the output")
    for name in re.findall(r"--format ([a-z0-9-]+)", train):
        assert name in formats, name


def test_every_policy_argument_the_readme_lists_is_accepted():
    """README's policy table: each argument is a keyword of that policy's class."""
    import inspect

    table = section("## Policies: vLLM, a server, transformers, or your own")
    for name in ("vllm", "openai", "hf", "simulated"):
        row = re.search(rf"^\| `{name}` \| (.*) \|$", table, re.MULTILINE).group(1)
        listed = re.findall(r"`([a-z_]+)`", row.split(";")[0])
        params = inspect.signature(POLICIES.get(name).__init__).parameters
        for arg in listed:
            if arg in ("chat", "completions", "OPENAI_API_KEY", "auto"):
                continue  # values, not arguments
            assert arg in params, f"{name}: {arg}"


def test_the_extras_the_readme_names_exist():
    """README: each backend is introduced with the extra it needs (`prmtree[openai]` etc.)."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    policies = section("## Policies: vLLM, a server, transformers, or your own")
    for extra in ("openai", "vllm", "hf"):
        assert f"pip install 'prmtree[{extra}]'" in policies and extra in extras
    assert any(dep.startswith("httpx") for dep in extras["openai"])
    openai_source = (REPO / "policies" / "openai_policy.py").read_text()
    assert "import httpx" in openai_source


def test_the_stopping_rule_numbers_are_the_benchmarks():
    """README "What the stopping rule trades": the figures of benchmarks/results/stopping_rule.json."""
    results = json.loads((REPO / "benchmarks" / "results" / "stopping_rule.json").read_text())["results"]
    by = {r["max_rollouts_per_step"]: r for r in results}
    text = " ".join(section("## How labels are decided").split())
    default, unbounded, ten = by[25], by[None], by[10]
    d, u, t = (r["labelled_steps_per_problem_by_space"] for r in (default, unbounded, ten))
    assert f"omega: {d['yesno']:.0f} labelled steps per yes/no problem, {d['choice']:.0f} per four-option one, " \
           f"{d['number']:.0f} per free-number one" in text
    assert f"({u['yesno']:.0f} / {u['choice']:.0f} / {u['number']:.0f}) at {unbounded['cost_vs_default']:.2f}×" in text
    assert f"({unbounded['rollouts_per_labelled_step']:.2f} against {default['rollouts_per_labelled_step']:.2f})" in text
    assert f"({ten['cost_vs_default']:.2f}×) but labels almost no guessable problem " \
           f"({t['yesno']:.1f} / {t['choice']:.1f} / {t['number']:.0f})" in text


def test_drivers_auto_takes_one_per_32_workers():
    """README: "`--drivers auto` takes one per 32 workers"."""
    from prmtree.rollout_workers.ray.sizing import WORKERS_PER_DRIVER

    assert WORKERS_PER_DRIVER == 32 and "one per 32 workers" in README


def test_paths_keep_their_columns_aligned_and_truncate_after_the_first_error(mc_and_calibrated_runs):
    """README: "`len(completions) == len(labels) == len(values)` always" and with the default
    ``after_first_error = "truncate"`` "`labels` is some `True`s and at most one `False`"."""
    for out in mc_and_calibrated_runs.values():
        for r in read_table(out, "steps").to_pylist():
            assert len(r["completions"]) == len(r["labels"]) == len(r["values"]) == len(r["confidences"])
            assert False not in r["labels"][:-1]


# -- several drivers from Python (the ray_session fixture marks it slow) --------------------------


def test_run_with_drivers_alone_works_and_its_last_progress_is_complete(ray_session, tmp_path):
    """README: "from Python it is the same call, `prmtree.run(..., drivers=8)`" (several
    drivers imply the Ray executor, a local Ray) and the last `on_progress` is the whole run's."""
    problems = generate_problems(10, seed=6)
    reports = []
    summary = prmtree.run(problems, policy="simulated", out=tmp_path / "run", drivers=2,
                          config={"search": {"budget": 32},  # no executor kind: drivers=2 implies ray
                                  "executor": {"workers": 1, "num_cpus_per_worker": 0, "num_cpus_per_driver": 0}},
                          on_progress=lambda stats: reports.append(stats.problems_done + stats.problems_skipped))
    assert summary.problems_done + summary.problems_skipped == 10
    assert reports and reports[-1] == 10
    assert sorted(p.name for p in (tmp_path / "run").glob("manifest-*.json")) == [
        "manifest-00000-of-00002.json", "manifest-00001-of-00002.json"]


# -- smaller claims ------------------------------------------------------------------------------


def test_answers_come_from_boxed_then_answer_then_the_last_line():
    """README: "Answers (`engine/answers/extract.py`) from `\\boxed{}`, `Answer:`, or the last line"."""
    from prmtree.engine.answers import extract_answer

    assert extract_answer("x = 3\nAnswer: 4\nso \\boxed{5}") == "5"
    assert extract_answer("x = 3\nAnswer: 4") == "4"
    assert extract_answer("x = 3\nit is 7") == "it is 7"


def test_the_answer_types_the_readme_lists_are_the_accepted_ones():
    from prmtree.engine.records import ANSWER_TYPES

    listed = re.search(r"`answer_type` \(`([a-z|]+)`\)", README).group(1).split("|")
    assert sorted(listed) == sorted(ANSWER_TYPES)


def test_label_false_keeps_the_steps_after_the_first_error(tmp_path):
    """README: `"label-false"` (keep the rest, labelled `False`)."""
    problems = generate_problems(6, seed=3, min_steps=8)
    for mode in ("truncate", "label-false"):
        prmtree.run(problems, policy="simulated", out=tmp_path / mode, config={"output": {"after_first_error": mode},
                                                                               "labels": {"method": "mc"}})
    cut = {r["path_id"]: r["labels"] for r in read_table(tmp_path / "truncate", "steps").to_pylist()}
    kept = {r["path_id"]: r["labels"] for r in read_table(tmp_path / "label-false", "steps").to_pylist()}
    longer = [p for p in kept if p in cut and len(kept[p]) > len(cut[p])]
    assert longer
    for p in longer:
        first = kept[p].index(False)
        assert kept[p][: first + 1] == cut[p] and set(kept[p][first:]) == {False}


def test_a_slice_writes_its_own_manifest_and_shard_names(tmp_path):
    """README: `--slice i/N` "writes `part-sIIIIIofNNNNN-*.parquet` and its own
    `manifest-IIIII-of-NNNNN.json` into the same directory"."""
    problems = generate_problems(6, seed=1)
    prmtree.run(problems, policy="simulated", out=tmp_path, slice="1/2", config={"search": {"budget": 32}})
    assert [p.name for p in tmp_path.glob("manifest*.json")] == ["manifest-00001-of-00002.json"]
    shards = [p.name for p in tmp_path.glob("*/*.parquet")]
    assert shards and all(re.fullmatch(r"part-s00001of00002-.*\.parquet", name) for name in shards), shards
