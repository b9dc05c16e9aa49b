"""Issue 20's label workloads: the simulated solver's ``wrong_answers`` (a solver that
took a wrong step is consistently wrong, or guesses), and the label benchmark's coverage
per answer space and targets, on hand-made rows."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

import prmtree
from prmtree.engine.errors import PolicyConfigError
from prmtree.engine.records import GenerationRequest
from prmtree.engine.steps import Segmenter
from prmtree.engine.synthetic import generate_problems
from prmtree.policies.simulated import SimulatedPolicy

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
GUESSABLE = {"error_rate": 0.08, "guess_rate": 0.3, "lucky_rate": 0.02, "cancel_errors": False}
_BOXED = re.compile(r"\\boxed\{([^}]*)\}")


def _bench():
    spec = importlib.util.spec_from_file_location("label_quality_bench", BENCH / "label_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _prefixes(problems, wrong: bool) -> list[tuple[str, ...]]:
    """A one-step prefix per problem: its first step wrong (error_rate 1) or right (0)."""
    writer = SimulatedPolicy(error_rate=1.0 if wrong else 0.0, lucky_rate=0.0)
    out = []
    for p in problems:
        (c,) = writer.complete(GenerationRequest(p, (), 1, seed=7, next_step_only=True))
        prefix = tuple(Segmenter().split(c.text))
        assert writer.first_error(p, prefix) == (0 if wrong else None)
        out.append(prefix)
    return out


def _continuations(policy, problems, prefixes, n=150) -> list[str]:
    answers = []
    for i, (p, prefix) in enumerate(zip(problems, prefixes)):
        for c in policy.complete(GenerationRequest(p, prefix, n, seed=100 + i)):
            answers.append(_BOXED.findall(c.text)[-1])
    return answers


def _success(problems, answers, n=150) -> float:
    gold = [p.answer for p in problems for _ in range(n)]
    return sum(a == g for a, g in zip(answers, gold)) / len(answers)


@pytest.fixture(scope="module")
def yesno():
    return generate_problems(20, seed=5, min_steps=6, max_steps=10, answer_spaces=("yesno",))


@pytest.fixture(scope="module")
def choice():
    return generate_problems(20, seed=6, min_steps=6, max_steps=10, answer_spaces=("choice",))


def test_consistent_solver_reaches_gold_after_a_wrong_step_at_guess_rate_times_chance(yesno):
    wrong = _prefixes(yesno, wrong=True)
    consistent = SimulatedPolicy(**GUESSABLE, wrong_answers="consistent")
    guessing = SimulatedPolicy(**GUESSABLE)  # the default: "guess"
    assert guessing.wrong_answers == "guess"
    # 3000 continuations each: 0.3 x 1/2 = 0.15 against 1/2 (standard error < 0.01)
    assert _success(yesno, _continuations(consistent, yesno, wrong)) == pytest.approx(0.15, abs=0.03)
    assert _success(yesno, _continuations(guessing, yesno, wrong)) == pytest.approx(0.5, abs=0.04)
    # a right step still mostly reaches the answer: 92%^steps right, plus guesses
    right = _prefixes(yesno, wrong=False)
    assert _success(yesno, _continuations(consistent, yesno, right)) > 0.5


def test_consistent_choice_answers_are_wrong_letters_that_vary_with_the_value(choice):
    wrong = _prefixes(choice, wrong=True)
    no_guess = SimulatedPolicy(error_rate=0.08, lucky_rate=0.0, cancel_errors=False, guess_rate=0.0,
                               wrong_answers="consistent")
    answers = _continuations(no_guess, choice, wrong, n=20)
    assert _success(choice, answers, n=20) == 0.0  # never the gold letter without a guess
    assert len(set(answers)) >= 3  # not always the same letter
    # one wrong value, one answer: the same prefix and value answer the same way every time
    p, prefix = choice[0], wrong[0]
    same = {_BOXED.findall(c.text)[-1]
            for c in SimulatedPolicy(error_rate=0.0, lucky_rate=0.0, wrong_answers="consistent").complete(
                GenerationRequest(p, prefix, 30, seed=3))}
    assert len(same) == 1 and same != {p.answer}
    # with 30% guessed: about 0.3 x 1/4
    guessed = SimulatedPolicy(**GUESSABLE, wrong_answers="consistent")
    assert _success(choice, _continuations(guessed, choice, wrong)) == pytest.approx(0.075, abs=0.025)


def test_bad_wrong_answers_is_a_one_line_error(tmp_path):
    with pytest.raises(ValueError, match=r"^wrong_answers must be one of 'guess', 'consistent', got 'always'$"):
        SimulatedPolicy(wrong_answers="always")
    problems = generate_problems(3, seed=1, min_steps=4, max_steps=5, answer_spaces=("yesno",))
    config = {"policy": {"name": "simulated", "wrong_answers": "always"}, "search": {"k": 4, "budget": 16}}
    with pytest.raises(PolicyConfigError) as info:
        prmtree.run(problems, out=tmp_path / "bad", config=config)
    message = str(info.value)
    assert "\n" not in message
    assert "wrong_answers must be one of 'guess', 'consistent', got 'always'" in message


def test_wrong_answers_is_reachable_from_a_config_file(tmp_path):
    problems = generate_problems(4, seed=1, min_steps=4, max_steps=5, answer_spaces=("yesno",))
    toml = tmp_path / "run.toml"
    toml.write_text('[policy]\nname = "simulated"\nwrong_answers = "consistent"\n'
                    '[search]\nk = 4\nbudget = 16\n')
    prmtree.run(problems, out=tmp_path / "out", config=toml)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["config"]["policy"]["wrong_answers"] == "consistent"


def test_coverage_by_space_on_hand_made_rows():
    bench = _bench()
    # problem i has answer space ("yesno", "choice", "number")[i % 3]
    problems = generate_problems(6, seed=2, min_steps=4, max_steps=5, answer_spaces=("yesno", "choice", "number"))
    ids = [p.id for p in problems]
    rows = [
        {"problem_id": ids[0], "completions": ["ok", "ok"], "labels": [True, None]},
        {"problem_id": ids[0], "completions": ["ok", "bad"], "labels": [None, None]},
        # ids[3] (yes/no) has no rows at all: a problem, unlabelled
        {"problem_id": ids[1], "completions": ["bad"], "labels": [None]},
        {"problem_id": ids[4], "completions": ["ok", "bad", "x"], "labels": [True, False, None]},
        {"problem_id": ids[2], "completions": ["ok", "ok"], "labels": [True, True]},
        {"problem_id": ids[5], "completions": ["ok"], "labels": [False]},
    ]

    def truth(pid, steps):
        return steps.index("bad") if "bad" in steps else None

    got = bench.coverage_by_space(problems, rows, truth)
    assert list(got) == ["yesno", "choice", "number"]
    # score_paths' recall counts a path whose true error has no label as missed: the second
    # yes/no path (0 of 1), the unlabelled choice path beside the located one (1 of 2)
    assert got["yesno"] == {"problems": 2, "problems_labelled": 1, "labelled_share": 0.5,
                            "labelled_steps_per_problem": 0.5, "step_agreement": 1.0, "first_error_recall": 0.0}
    assert got["choice"] == {"problems": 2, "problems_labelled": 1, "labelled_share": 0.5,
                             "labelled_steps_per_problem": 1.0, "step_agreement": 1.0, "first_error_recall": 0.5}
    assert got["number"]["problems_labelled"] == 2 and got["number"]["labelled_share"] == 1.0
    assert got["number"]["labelled_steps_per_problem"] == 1.5
    assert got["number"]["step_agreement"] == pytest.approx(2 / 3)  # the lone False is wrong
    assert got["number"]["first_error_recall"] is None  # no true error: no recall (not NaN, for JSON)
    # without truth: coverage only
    assert bench.coverage_by_space(problems, rows)["number"] == {
        "problems": 2, "problems_labelled": 2, "labelled_share": 1.0, "labelled_steps_per_problem": 1.5}


def _result(workload, strategy, method, by_space, agreement=0.995, recall=0.96, cost=1.0):
    return {"workload": workload, "strategy": strategy, "method": method, "step_agreement": agreement,
            "first_error_recall": recall, "rollouts_per_labelled_step": cost, "by_space": by_space}


def test_targets_need_every_answer_space_labelled():
    bench = _bench()

    def space(share, steps):
        return {"labelled_share": share, "labelled_steps_per_problem": steps}

    mc = {"yesno": space(1.0, 10.0), "number": space(1.0, 20.0)}
    results = []
    for s in bench.STRATEGIES:
        results.append(_result("guessable", s, "mc", mc, agreement=0.8, recall=0.5, cost=2.0))
        yesno = space(0.2, 1.0) if s == "omega" else space(0.9, 4.0)  # omega leaves yes/no out; others half-cover
        results.append(_result("guessable", s, "calibrated", {"yesno": yesno, "number": space(1.0, 15.0)}))
    verdict = bench.targets(results)
    assert set(verdict) == {"guessable"}  # workloads not run are not judged
    assert verdict["guessable"]["omega"] == {
        "step_agreement_ge_99": True, "first_error_recall_ge_95": True,
        "every_space_labelled_share_ge_85": False, "every_space_half_mc_labelled_steps": False,
        "rollouts_per_labelled_step_le_mc": True}
    assert verdict["guessable"]["shepherd"]["every_space_labelled_share_ge_85"] is True
    assert verdict["guessable"]["shepherd"]["every_space_half_mc_labelled_steps"] is False  # 4 < 10 / 2


def test_unknown_workload_is_refused(monkeypatch, capsys):
    bench = _bench()
    monkeypatch.setattr("sys.argv", ["label_quality.py", "--workloads", "guessable,nope"])
    with pytest.raises(SystemExit) as info:
        bench.main()
    assert info.value.code == 2
    assert "--workloads: unknown 'nope'; choose from guessable, guessable (wrong values guess)" in capsys.readouterr().err
