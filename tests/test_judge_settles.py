"""Issue 20: under ``method = "consensus"`` the judge settles steps the counts leave
undecided (each verdict weighed by ``[labels.judge] accuracy``), recorded as its own
provenance source ``judge-settled`` and counted apart."""

from __future__ import annotations

import math
from collections import Counter

import pytest

import prmtree
from prmtree.engine.calibration import RIGHT, UNDECIDED, WRONG, decide
from prmtree.engine.config import LabelsConfig
from prmtree.engine.errors import ConfigError
from prmtree.engine.labelers import settle_seed, settled_posterior
from prmtree.engine.labels import SOURCES
from prmtree.engine.output import read_table
from prmtree.engine.synthetic import generate_problems
from prmtree.policies.simulated import SimulatedPolicy

# yes/no questions whose final answers are often guessed: the counts leave many steps undecided
YESNO = generate_problems(10, seed=5, min_steps=4, max_steps=6, answer_spaces=("yesno",))
GUESSING = {"error_rate": 0.15, "guess_rate": 0.3, "cancel_errors": False}
SEARCH = {"strategy": "omega", "k": 4, "budget": 32}


class RecordingJudge(SimulatedPolicy):
    """The simulated policy, counting the judge questions asked: (problem, prefix)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.asked: Counter = Counter()

    def complete(self, request):
        if request.purpose == "judge":
            self.asked[request.problem.id, request.prefix] += 1
        return super().complete(request)


def _run(tmp_path, name, judge_accuracy=1.0, settle_calls=3, garbage=0.0, seed=1, judge_temperature=1.0,
         policy=None, **labels):
    """A consensus run; the simulated judge draws every verdict afresh, as a sampling judge
    does (hence a judge temperature above 0 here: at 0 it is asked once per step)."""
    out = tmp_path / name
    policy = policy or SimulatedPolicy(**GUESSING, judge_accuracy=judge_accuracy, judge_garbage_rate=garbage)
    judge = {"max_settle_calls": settle_calls, "temperature": judge_temperature}
    config = {"seed": seed, "search": SEARCH, "labels": {"method": "consensus", "judge": judge, **labels}}
    summary = prmtree.run(YESNO, policy=policy, out=out, config=config)
    return summary, read_table(out, "steps").to_pylist(), read_table(out, "nodes").to_pylist()


def _truth(row) -> list[bool]:
    problem = next(p for p in YESNO if p.id == row["problem_id"])
    first = SimulatedPolicy().first_error(problem, row["completions"])
    return [first is None or j < first for j in range(len(row["completions"]))]


# -- the posterior combination -----------------------------------------------------------


def test_each_verdict_multiplies_the_odds_by_the_judges_accuracy():
    # odds 1 (posterior 0.5): one "correct" at 80% gives odds 4, i.e. 0.8
    assert settled_posterior(0.5, [True], 0.8) == pytest.approx(0.8)
    assert settled_posterior(0.5, [False], 0.8) == pytest.approx(0.2)
    # odds 3 * 4 * 4 = 48 -> 48 / 49; a contrary verdict cancels one agreeing verdict
    assert settled_posterior(0.75, [True, True], 0.8) == pytest.approx(48 / 49)
    assert settled_posterior(0.75, [True, False, True], 0.8) == pytest.approx(0.75 * 4 / (0.75 * 4 + 0.25))
    # no verdict (unparseable, failed) is no evidence
    assert settled_posterior(0.6, [None, None], 0.8) == pytest.approx(0.6)
    assert settled_posterior(0.6, [None, True], 0.9) == settled_posterior(0.6, [True], 0.9)
    # the order of verdicts does not matter, and a stronger judge moves it further
    assert settled_posterior(0.3, [False, True, True], 0.8) == pytest.approx(settled_posterior(0.3, [True, True, False], 0.8))
    assert settled_posterior(0.5, [True], 0.95) > settled_posterior(0.5, [True], 0.8)
    with pytest.raises(ValueError, match=r"accuracy must be in \(0.5, 1\)"):
        settled_posterior(0.5, [True], 0.5)


def test_a_settled_step_reaches_the_same_confidence_as_the_counts():
    """From 0.5, at 80% and confidence 0.96, two verdicts are not enough (odds 16 < 24),
    three are (odds 64): coverage is not bought by a lower bar."""
    c = LabelsConfig().confidence
    assert decide(settled_posterior(0.5, [True, True], 0.8), c) == UNDECIDED
    assert decide(settled_posterior(0.5, [True] * 3, 0.8), c) == RIGHT
    assert decide(settled_posterior(0.5, [False] * 3, 0.8), c) == WRONG
    assert math.isclose(settled_posterior(0.5, [True] * 3, 0.8), 64 / 65)


def test_settling_seeds_differ_per_attempt_and_repeat_per_run():
    seeds = [settle_seed(12345, a) for a in range(4)]
    assert len(set(seeds)) == 4 and 12345 not in seeds
    assert seeds == [settle_seed(12345, a) for a in range(4)]
    assert all(0 <= s < 2**63 for s in seeds)


def test_a_greedy_judge_is_asked_each_question_once():
    # at temperature 0 a second answer is a copy of the first: as a second verdict it would
    # take a step from 0.70 to 0.974 (settled right) on one opinion worth 0.903
    assert LabelsConfig().judge.temperature == 0 and LabelsConfig().judge.settle_calls == 1
    assert LabelsConfig(judge={"temperature": 0.7}).judge.settle_calls == 3
    assert LabelsConfig(judge={"temperature": 0.7, "max_settle_calls": 5}).judge.settle_calls == 5
    assert LabelsConfig(judge={"max_settle_calls": 0}).judge.settle_calls == 0
    assert decide(settled_posterior(0.70, [True], 0.8), 0.96) == UNDECIDED


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_settling_asks_a_greedy_judge_once_and_a_sampling_judge_again(tmp_path, temperature):
    judge = RecordingJudge(**GUESSING, judge_accuracy=1.0)
    summary, rows, _ = _run(tmp_path, "run", judge_temperature=temperature, policy=judge)
    counts = summary.labelling
    assert counts["judge_settle_calls"] > 0
    settled = [v for r in rows for src, v in zip(r["label_sources"], r["judge_verdicts"]) if src == "judge-settled"]
    if temperature == 0:
        assert max(judge.asked.values()) == 1  # no question twice, settling or checking
        assert all("," not in v for v in settled)
    else:
        assert max(judge.asked.values()) > 1
        assert any("," in v for v in settled)


def test_the_judge_settings_are_checked():
    assert LabelsConfig().judge.accuracy == 0.8 and LabelsConfig().judge.max_settle_calls == 3
    with pytest.raises(ConfigError, match="accuracy"):
        prmtree.run(YESNO[:1], policy=SimulatedPolicy(), out="/nonexistent/never",
                    config={"labels": {"method": "consensus", "judge": {"accuracy": 0.5}}})
    assert "judge-settled" in SOURCES


# -- runs ------------------------------------------------------------------------------


def test_a_perfect_judge_settles_undecided_steps_to_the_truth(tmp_path):
    off, rows_off, _ = _run(tmp_path, "off", settle_calls=0)
    on, rows_on, nodes = _run(tmp_path, "on")
    labelled_off = sum(len(r["labels"]) for r in rows_off)
    labelled_on = sum(len(r["labels"]) for r in rows_on)
    assert labelled_on > labelled_off + 10
    assert "judge_settle_calls" not in off.labelling

    settled = [(label, truth, verdicts, confidence)
               for r in rows_on
               for label, truth, src, verdicts, confidence in zip(
                   r["labels"], _truth(r), r["label_sources"], r["judge_verdicts"], r["confidences"])
               if src == "judge-settled"]
    assert len(settled) >= 10
    assert {label for label, *_ in settled} == {True, False}  # both right and wrong steps settled
    assert all(label == truth for label, truth, *_ in settled)
    # provenance: the verdicts that settled it, and a combined posterior at the run's confidence
    assert all(set(verdicts.split(",")) <= {"correct", "incorrect"} for *_, verdicts, _ in settled)
    assert all(confidence >= 0.96 for *_, confidence in settled)

    counts = on.labelling
    sources = Counter(s for r in rows_on for s in r["label_sources"])
    assert counts["steps_settled_by_judge"] == sources["judge-settled"] == len(settled)
    right = sum(label for label, *_ in settled)
    assert (counts["steps_settled_right"], counts["steps_settled_wrong"]) == (right, len(settled) - right)
    # the nodes table says what the steps table says: a settled node is decided, with the
    # combined posterior; each node is settled once for every path through it
    node = {(n["problem_id"], n["node_id"]): n for n in nodes}
    settled_nodes = {}
    for r in rows_on:
        ids, at = [], r["path_id"]
        while node[(r["problem_id"], at)]["parent_id"] is not None:
            ids.append(at)
            at = node[(r["problem_id"], at)]["parent_id"]
        ids.reverse()
        for j, (label, src, verdicts) in enumerate(zip(r["labels"], r["label_sources"], r["judge_verdicts"])):
            if src == "judge-settled":
                n = node[(r["problem_id"], ids[j])]
                assert n["decision"] == ("right" if label else "wrong") and n["label"] is label
                assert n["posterior"] == pytest.approx(r["confidences"][j] if label else 1 - r["confidences"][j])
                settled_nodes[(r["problem_id"], ids[j])] = verdicts
    assert len(settled_nodes) < len(settled)  # shared prefixes: settled once, labelled on several paths
    asked = sum(len(v.split(",")) for v in settled_nodes.values())
    assert asked <= counts["judge_settle_calls"] <= counts["judge_calls"]


def test_no_step_is_settled_by_a_judge_that_returns_garbage(tmp_path):
    s, rows, _ = _run(tmp_path, "garbage", garbage=1.0)
    _, rows_off, _ = _run(tmp_path, "off", settle_calls=0, garbage=1.0)
    counts = s.labelling
    assert counts["judge_settle_calls"] > 0
    assert counts["judge_unparseable"] == counts["judge_calls"]
    assert counts.get("steps_settled_by_judge", 0) == 0
    assert not any(src == "judge-settled" for r in rows for src in r["label_sources"])
    key = lambda r: (r["problem_id"], r["path_id"])  # noqa: E731 - rows come in the order problems finished
    assert [r["labels"] for r in sorted(rows, key=key)] == [r["labels"] for r in sorted(rows_off, key=key)]


def test_an_80_percent_judge_settles_at_the_runs_confidence_and_rows_repeat(tmp_path):
    a, rows_a, _ = _run(tmp_path, "a", judge_accuracy=0.8, seed=3)
    b, rows_b, _ = _run(tmp_path, "b", judge_accuracy=0.8, seed=3)
    def key(r):
        return r["problem_id"], r["path_id"]

    assert sorted(rows_a, key=key) == sorted(rows_b, key=key) and a.labelling == b.labelling  # problems finish in any order
    sources = Counter(s for r in rows_a for s in r["label_sources"])
    assert a.labelling["steps_settled_by_judge"] == sources["judge-settled"] > 0
    # a settled step's posterior is the prior moved by its verdicts: never short of confidence
    for r in rows_a:
        for src, verdicts, confidence in zip(r["label_sources"], r["judge_verdicts"], r["confidences"]):
            if src == "judge-settled":
                assert confidence >= 0.96 and 1 <= len(verdicts.split(",")) <= 3


def test_a_settled_wrong_step_is_the_first_error_and_ends_a_truncated_path(tmp_path):
    _, rows, _ = _run(tmp_path, "wrong")
    wrong = [r for r in rows if any(src == "judge-settled" and not label
                                    for src, label in zip(r["label_sources"], r["labels"]))]
    assert wrong
    for r in wrong:
        first = r["labels"].index(False)
        assert r["label_sources"][first] == "judge-settled"
        assert len(r["labels"]) == first + 1  # after_first_error = "truncate"


def test_the_run_summary_shows_the_settled_steps(tmp_path, capsys):
    from prmtree.summary import print_summary

    s, _, _ = _run(tmp_path, "summary")
    print_summary(s, None)
    shown = capsys.readouterr().out
    counts = s.labelling
    line = next(line for line in shown.splitlines() if "settled by the judge" in line)
    assert (f"{counts['steps_settled_right']:,} / {counts['steps_settled_wrong']:,} "
            f"({counts['judge_settle_calls']:,})") in line
    off, _, _ = _run(tmp_path, "off", settle_calls=0)
    print_summary(off, None)
    assert "settled by the judge" not in capsys.readouterr().out
