"""Issue 18, items 15, 16 and 18: edges where a run reported what it did not do.

15: one-line errors instead of tracebacks; 16: a run that labels nothing says so and does
not exit 0; 18: one decision per node, the same in the steps and the nodes tables.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
from prmtree.engine.output import read_table
from prmtree.engine.records import Completion
from prmtree.engine.synthetic import generate_problems, write_jsonl
from prmtree.policies.simulated import SimulatedPolicy

import prmtree
from prmtree.summary import label_warnings

# -- item 18: one decision per node ------------------------------------------------------


def _step_node_disagreements(out: Path) -> tuple[list[tuple], int]:
    """(problem, node, label in a steps row, node decision) where a path's label and its
    node's decision differ: a step null or labelled otherwise in a path while the node is
    decided, or labelled in a path while the node is undecided. Also the steps checked."""
    nodes = {(r["problem_id"], r["node_id"]): r for r in read_table(out, "nodes").to_pylist()}
    bad, checked = [], 0
    for row in read_table(out, "steps").to_pylist():
        ids, node = [], row["path_id"]
        while node is not None:
            ids.append(node)
            node = nodes[(row["problem_id"], node)]["parent_id"]
        ids = ids[::-1][1:]  # from the first step (the root is no step)
        for node_id, label in zip(ids, row["labels"]):
            checked += 1
            n = nodes[(row["problem_id"], node_id)]
            if n["decision"] in ("right", "wrong") and label != n["label"] or n["decision"] == "undecided" and label is not None:
                bad.append((row["problem_id"], node_id, label, n["decision"]))
    return bad, checked


@pytest.mark.parametrize("strategy,seeds", [("omega", (1, 2)), ("shepherd", (1,)), ("mcts", (0,))])
def test_the_steps_and_nodes_tables_give_a_node_one_decision(tmp_path, strategy, seeds):
    # Before: a step kept null (undecided = "keep") in one path's row while its node was
    # decided right from another path's evidence (omega seeds 1 and 2, shepherd seed 1).
    for method in ("calibrated", "mc"):
        for seed in seeds:
            out = tmp_path / f"{method}-{seed}"
            prmtree.run(write_jsonl(generate_problems(20, seed=seed), tmp_path / f"in-{method}-{seed}"),
                        policy="simulated", strategy=strategy, out=out, seed=seed,
                        config_overrides={"labels": {"method": method, "undecided": "keep"},
                                          "search": {"budget": 120}})
            bad, checked = _step_node_disagreements(out)
            assert checked > 300
            assert bad == [], f"{strategy} {method} seed {seed}: {bad[:5]}"


def test_one_decision_per_node_wrong_wins_below_and_right_lifts_above():
    from prmtree.engine.calibration import RIGHT, UNDECIDED, WRONG, StepEvidence
    from prmtree.engine.labels import label_paths, one_decision_per_node
    from prmtree.engine.tree import ReasoningTree

    tree = ReasoningTree("p")
    a = tree.add_step(tree.root, "a")
    b = tree.add_step(a, "b")  # decided wrong by one path
    c = tree.add_step(b, "c")  # decided right by another: under a wrong step it is wrong
    d = tree.add_step(a, "d")  # undecided, with a right child: right
    e = tree.add_step(d, "e")
    for node in (a, b, c, d, e):
        tree.record(node, 4, 2)

    def ev(decision):
        return StepEvidence(decision, 0.5, 4, 2, None)

    nodes = one_decision_per_node(tree, {a: ev(UNDECIDED), b: ev(WRONG), c: ev(RIGHT), d: ev(UNDECIDED),
                                         e: ev(RIGHT)})
    assert {n: (nodes[n].decision, nodes[n].inferred) for n in (a, b, c, d, e)} == {
        a: (RIGHT, True), b: (WRONG, False), c: (WRONG, True), d: (RIGHT, True), e: (RIGHT, False)}
    paths = {p.path_id: p for p in label_paths(tree, lambda ids: [nodes[n] for n in ids],
                                               after_first_error="label-false")}
    assert paths[c].labels == [True, False, False]
    assert paths[c].provenance[2].source == "inferred"
    assert paths[e].labels == [True, True, True]
    assert [p.source for p in paths[e].provenance] == ["inferred", "inferred", "mc"]


# -- item 16: a run that labels nothing says so ------------------------------------------

def _roman(n: int) -> str:
    """14 -> "XIV": a form of the right value that no grader reads as a number (number words
    are read since issue 19: "fourteen" is 14)."""
    if n < 0:
        return f"minus {_roman(-n)}"
    if n == 0:
        return "nulla"
    out = ""
    for value, letters in ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
                           (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")):
        while n >= value:
            out, n = out + letters, n - value
    return out


class RomanPolicy(SimulatedPolicy):
    """Solves like the simulated policy but boxes numbers as Roman numerals: "XIV" for 14."""

    def complete(self, request):
        return [Completion(re.sub(r"\\boxed\{(-?\d+)\}", lambda m: f"\\boxed{{{_roman(int(m[1]))}}}", c.text),
                           c.num_tokens, c.finish_reason) for c in super().complete(request)]


class WordsPolicy(SimulatedPolicy):
    """Boxes numbers in words ("\\boxed{fourteen}" for 14): graded as the number since issue 19."""

    def complete(self, request):
        words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
        return [Completion(re.sub(r"\\boxed\{(\d)\}", lambda m: f"\\boxed{{{words[int(m[1])]}}}", c.text),
                           c.num_tokens, c.finish_reason) for c in super().complete(request)]


class ChattyJudge(SimulatedPolicy):
    """A judge that never answers in the verdict format."""

    def _judge(self, request, rng):
        return Completion("The step follows from the one before it, so it looks fine to me.", 14)


@pytest.fixture
def edge_policies(monkeypatch):
    module = types.ModuleType("edge_policies")
    module.RomanPolicy, module.WordsPolicy, module.ChattyJudge = RomanPolicy, WordsPolicy, ChattyJudge
    monkeypatch.setitem(sys.modules, "edge_policies", module)


def test_an_unparseable_judge_is_no_verdict_and_the_counts_keep_their_labels(tmp_path, edge_policies):
    # Before: every path dropped as a "disagreement" (0 labelled steps), exit 0, silent.
    problems = write_jsonl(generate_problems(10, seed=4), tmp_path / "in")
    config = {"labels": {"method": "consensus", "judge": {"name": "edge_policies:ChattyJudge"}},
              "search": {"budget": 120}}
    s = prmtree.run(problems, policy="simulated", out=tmp_path / "consensus", seed=4, config=config)
    prmtree.run(problems, policy="simulated", out=tmp_path / "calibrated", seed=4,
                config={"labels": {"method": "calibrated"}, "search": {"budget": 120}})
    judged = {r["path_id"]: r for r in read_table(tmp_path / "consensus", "steps").to_pylist()}
    counted = {r["path_id"]: r["labels"] for r in read_table(tmp_path / "calibrated", "steps").to_pylist()}
    assert judged and {p: r["labels"] for p, r in judged.items()} == counted  # the counts decide
    assert not any(r["flagged"] for r in judged.values())
    assert s.steps_labelled > 0 and s.labelling["paths_dropped_by_judge"] == 0
    assert s.labelling["judge_unparseable"] == s.labelling["judge_calls"] > 0  # counted apart
    assert s.labelling["paths_without_verdict"] == s.labelling["paths_judged"] == len(judged)
    assert "judge_disagreed" not in s.labelling
    warning = [w for w in label_warnings(s) if "judge answers" in w]
    assert warning and warning[0].startswith(f"{s.labelling['judge_calls']} of {s.labelling['judge_calls']} "
                                             "judge answers gave no verdict")
    assert "'The step follows from the one before it, so it looks fine to me.'" in warning[0]


def test_a_run_that_labels_nothing_warns_with_examples_and_exits_4(tmp_path, edge_policies, capsys):
    # Before: every problem "skipped (root all wrong)", 0 labels, exit 0 and a quiet summary.
    from prmtree.cli import EXIT_NO_DATA, main

    data = write_jsonl(generate_problems(8, seed=5), tmp_path / "in")
    code = main(["run", "--input", str(data), "--out", str(tmp_path / "o"), "--no-progress",
                 "--policy", "edge_policies:RomanPolicy", "--strategy", "omega"])
    out, err = capsys.readouterr()
    assert code == EXIT_NO_DATA == 4
    assert "nothing was labelled: 8 problems done, 0 labelled steps" in err
    text = " ".join(out.split())  # the console wraps long lines
    assert "warning: nothing was labelled: 0 labelled steps over 8 problems done" in text
    assert "warning: 8 of 8 problems skipped (root all wrong) - the policy's answers may never match" in text
    shown = re.findall(r"syn-\d+: gold '(-?\d+)'; extracted ('[^']*'|None)", text)
    assert len(shown) == 3  # three skipped problems, their gold beside what was extracted
    assert any(got == f"'{_roman(int(gold))}'" for gold, got in shown)  # the right value, as Roman numerals
    assert read_table(tmp_path / "o", "steps").num_rows == 0


@pytest.mark.parametrize("content", ["", "[]", '{"data": []}'], ids=["empty", "empty-list", "empty-data"])
def test_an_input_with_no_row_says_so_and_exits_4(tmp_path, capsys, content):
    # Before: an all-zero summary and exit 0, as if the run had made its data.
    from prmtree.cli import EXIT_NO_DATA, main

    data = tmp_path / ("in.jsonl" if content == "" else "in.json")
    data.write_text(content)
    for attempt in ("fresh", "resumed"):
        code = main(["run", "--input", str(data), "--out", str(tmp_path / "o"), "--no-progress"])
        err = capsys.readouterr().err
        assert code == EXIT_NO_DATA, (attempt, err)
        assert "prmtree: the input holds no problem (no row was read): nothing to label; check --input" in err


def test_a_slice_that_owns_no_row_is_no_failure_and_several_drivers_name_the_real_cause(tmp_path, capsys):
    # A first cut of the test above made any empty slice exit 4, and two drivers over
    # all-bad rows said "no row was read" (an empty slice's words) instead of the bad input.
    import json

    from prmtree.cli import EXIT_NO_DATA, main
    from prmtree.engine.output import Slice

    data = write_jsonl(generate_problems(3, seed=1), tmp_path / "in")
    ids = [json.loads(line)["id"] for line in data.read_text().splitlines()]
    idle = next(i for i in range(6) if not any(Slice(i, 6).owns(pid) for pid in ids))
    assert main(["run", "--input", str(data), "--out", str(tmp_path / "o"), "--slice", f"{idle}/6",
                 "--no-progress"]) == 0
    capsys.readouterr()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "bad0", "question": "q?", "answer": "1", "image": "missing0.png"}) + "\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    for data, said in ((bad, "no input row was usable: 1 row is bad input (e.g. 'bad0': "),
                       (empty, "the input holds no problem (no row was read)")):
        code = main(["run", "--input", str(data), "--out", str(tmp_path / data.stem), "--executor", "inline",
                     "--drivers", "2", "--no-progress"])
        assert code == EXIT_NO_DATA and said in capsys.readouterr().err, data


def test_inspect_html_never_writes_into_the_run_and_names_a_directory_target(tmp_path, capsys):
    # Before: --html over a shard of the run overwrote it (verify: DAMAGED); a directory gave a traceback.
    from prmtree.cli import main
    from prmtree.engine.output import verify_run

    out = tmp_path / "run"
    prmtree.run(generate_problems(3, seed=1), policy="simulated", out=out, seed=0)
    shard = sorted((out / "steps").glob("*.parquet"))[0]
    before = shard.read_bytes()
    (tmp_path / "reports").mkdir()
    for target, said in ((shard, "is inside (or holds) the run directory"), (out, "is inside (or holds) the run directory"),
                         (tmp_path / "reports", "is a directory: name the report's file")):
        with pytest.raises(SystemExit) as exit_:
            main(["inspect", str(out), "--html", str(target)])
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and said in err[0], err
    assert shard.read_bytes() == before and not [d for d in verify_run(out) if not d.readers_unaffected]
    assert main(["inspect", str(out), "--html", str(tmp_path / "report.html")]) == 0
    assert "<html" in (tmp_path / "report.html").read_text().lower()


def test_answers_boxed_as_number_words_are_graded_as_their_numbers(tmp_path, edge_policies, capsys):
    from prmtree.cli import main

    data = write_jsonl(generate_problems(8, seed=5), tmp_path / "in")
    code = main(["run", "--input", str(data), "--out", str(tmp_path / "o"), "--no-progress",
                 "--policy", "edge_policies:WordsPolicy", "--strategy", "omega"])
    assert code == 0, capsys.readouterr().err
    assert read_table(tmp_path / "o", "steps").num_rows > 0
    digit_golds = {p.id for p in generate_problems(8, seed=5) if p.answer.isdigit() and len(p.answer) == 1}
    roots = {n["problem_id"]: n for n in read_table(tmp_path / "o", "nodes").to_pylist() if n["depth"] == 0}
    assert digit_golds and all(roots[p]["n_correct"] > 0 for p in digit_golds)  # "\\boxed{four}" reached 4


def test_a_normal_run_has_no_label_warnings_and_exits_0(tmp_path, capsys):
    from prmtree.cli import main

    data = write_jsonl(generate_problems(8, seed=5), tmp_path / "in")
    assert main(["run", "--input", str(data), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    assert "warning:" not in capsys.readouterr().out


# -- item 15: one-line errors, not tracebacks --------------------------------------------


def _one_line_error(capsys, argv: list[str]) -> str:
    from prmtree.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("prmtree: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_synth_into_a_file_is_one_line(tmp_path, capsys):
    target = tmp_path / "taken.txt"
    target.write_text("keep me")
    err = _one_line_error(capsys, ["synth", "--out", str(target), "--problems", "3"])
    assert f"--out {str(target)!r} is a file" in err and "name a directory" in err
    assert target.read_text() == "keep me"


def test_a_smaller_demo_into_a_bigger_demos_folder_is_refused_in_one_line(tmp_path, capsys):
    from prmtree.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--problems", "20", "--no-progress", "--latency", "0"]) == 0
    capsys.readouterr()
    err = _one_line_error(capsys, ["demo", "--out", str(out), "--problems", "5", "--no-progress"])
    assert "holds a demo made with 20 problems" in err and "use another --out" in err
    # a bigger demo into it resumes (its first 20 problems are done) and works
    assert main(["demo", "--out", str(out), "--problems", "25", "--no-progress", "--latency", "0"]) == 0


class OwnTimeoutPolicy(SimulatedPolicy):
    """A backend whose client raises its own TimeoutError at once (not the driver's bound)."""

    async def generate(self, request):
        raise TimeoutError("the backend's gateway answered 504 after 30 s")


def test_a_policys_own_timeout_error_is_reported_as_its_error(tmp_path):
    problems = generate_problems(2, seed=1)
    s = prmtree.run(problems, policy=OwnTimeoutPolicy(), out=tmp_path / "o",
                    config={"executor": {"max_attempts": 1, "request_timeout_s": 600}})
    assert s.problems_failed == 2
    example = next(iter(s.failure_examples.values()))
    assert "TimeoutError: the backend's gateway answered 504 after 30 s" in example
    assert "timed out after 600 s" not in example


def test_a_policy_arg_at_its_default_resumes_as_the_default(tmp_path, capsys):
    from prmtree.cli import main

    data = write_jsonl(generate_problems(4, seed=1), tmp_path / "in")
    base = ["run", "--input", str(data), "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(base) == 0
    assert main([*base, "--policy-arg", "error_rate=0.08"]) == 0  # the simulated policy's default
    said = capsys.readouterr().out
    assert "nothing left to do" in said
    assert re.search(r"rollouts/s\s+│\s+none run now", said), said  # not a rate of 0 beside earlier totals
    err = _one_line_error(capsys, [*base, "--policy-arg", "error_rate=0.2"])
    assert "policy.error_rate: (default) -> 0.2" in err


@pytest.mark.parametrize("value", ["inf", "nan", "-1.0"])
def test_a_tolerance_that_is_not_a_finite_number_is_refused(tmp_path, capsys, value):
    config = tmp_path / "run.toml"
    config.write_text(f"[verify]\nrel_tol = {value}\n")
    data = write_jsonl(generate_problems(2, seed=1), tmp_path / "in")
    err = _one_line_error(capsys, ["run", "--input", str(data), "--out", str(tmp_path / "o"), "--no-progress",
                                   "--config", str(config)])
    assert "verify.rel_tol" in err
    assert not (tmp_path / "o" / "manifest.json").exists()


# -- undecided = "keep": exports, training rows and coverage read what a trainer reads --------


@pytest.fixture(scope="module")
def kept_and_dropped(tmp_path_factory):
    """One search, written twice: ``undecided = "keep"`` and the default ``drop``. Guessable
    answers (yes/no, choice), so many steps stay undecided and many paths share them."""
    root = tmp_path_factory.mktemp("keep")
    data = write_jsonl(generate_problems(30, seed=1, answer_spaces=("number", "yesno", "choice")), root / "in")
    outs = {}
    for mode in ("keep", "drop"):
        outs[mode] = root / mode
        prmtree.run(data, policy="simulated", policy_args={"guess_rate": 0.5, "wrong_answers": "guess"},
                    out=outs[mode], seed=0, config_overrides={"labels": {"undecided": mode}})
    assert read_table(outs["keep"], "nodes").equals(read_table(outs["drop"], "nodes"))  # the same search
    return outs


@pytest.mark.parametrize("fmt", ["openrlhf", "jsonl", "math-shepherd", "qwen-prm", "prm800k", "visualprm", "stepwise",
                                 "hf"])
def test_paths_cut_at_an_undecided_step_are_exported_once(kept_and_dropped, tmp_path, fmt):
    # Before: every path through one undecided step was cut to the same record, which was
    # written once per path (79 records, 24 distinct; one of them 18 times).
    import json

    import pyarrow.parquet as pq

    from prmtree.export import export

    def records(out):
        target = tmp_path / out.name / ("x.parquet" if fmt == "stepwise" else "x" if fmt == "hf" else "x.jsonl")
        export(out, fmt, target)
        if fmt in ("stepwise", "hf"):
            files = [target] if fmt == "stepwise" else sorted((target / "data").glob("train-*.parquet"))
            rows = [r for f in files for r in pq.read_table(f).to_pylist()]
            return [json.dumps([r["prompt"], r["completions"], r["labels"]], default=str) for r in rows]
        records = [json.loads(line) for line in target.read_text().splitlines()]
        # both know a path stopped at an undecided step: prm800k's "give_up", a null final_correct
        # (before, a dropped row kept its leaf's answer and was exported as a finished "solution")
        return [json.dumps({k: v for k, v in r.items() if k != "path_id"}, sort_keys=True) for r in records]

    kept, dropped = records(kept_and_dropped["keep"]), records(kept_and_dropped["drop"])
    assert len(kept) == len(set(kept)) > 10
    assert sorted(kept) == sorted(dropped)


def test_training_rows_and_coverage_count_only_what_a_trainer_reads(kept_and_dropped):
    from prmtree.inspect import collect
    from prmtree.train.data import load_rows

    kept, dropped = (load_rows(kept_and_dropped[m], with_images=False) for m in ("keep", "drop"))
    assert len({(r.problem_id, *r.steps) for r in kept}) == len(kept)
    assert sorted((r.problem_id, r.steps, r.labels) for r in kept) == sorted(
        (r.problem_id, r.steps, r.labels) for r in dropped)
    spaces = {m: {s.space: (s.problems, s.labelled_problems) for s in collect(kept_and_dropped[m]).spaces}
              for m in ("keep", "drop")}
    assert spaces["keep"] == spaces["drop"]
    assert spaces["keep"]["yesno"][1] < 5  # most yes/no problems label nothing a trainer can read (10 before)


def test_paths_cut_alike_keep_an_unflagged_one_and_stepwise_rows_keep_their_problems():
    # Review: the first of the paths cut alike was kept, so a flagged one (a disagreement on
    # steps the cut removed) hid an unflagged twin from a user filtering flags out; and
    # stepwise rows (no problem_id) of two problems with the same steps merged in training.
    import pyarrow as pa

    from prmtree.export.rows import cut_table, unique_rows
    from prmtree.train.data import rows_from_table

    table = pa.table({
        "problem_id": ["p", "p", "p", "q"],
        "completions": [["a", "b", "c"], ["a", "b", "d"], ["a", "x"], ["a", "b"]],
        "labels": [[True, True, None], [True, True, None], [True, False], [True, True]],
        "flagged": [True, False, False, True],
    })
    cut = cut_table(table)
    assert cut.to_pydict() == {"problem_id": ["p", "p", "q"], "completions": [["a", "b"], ["a", "x"], ["a", "b"]],
                               "labels": [[True, True], [True, False], [True, True]], "flagged": [False, False, True]}
    seen: set[int] = set()
    kept = unique_rows(table.to_pylist(), seen)
    assert [(r["problem_id"], r["completions"][-1], r["flagged"]) for r in kept] == [("p", "d", False), ("p", "x", False),
                                                                                      ("q", "b", True)]
    assert unique_rows(table.to_pylist(), seen) == []  # already exported

    stepwise = pa.table({"prompt": ["What is 2+3?", "What is 10-5?"], "completions": [["It is 5."], ["It is 5."]],
                         "labels": [[True], [True]]})
    assert [r.question for r in rows_from_table(stepwise, with_images=False)] == ["What is 2+3?", "What is 10-5?"]
