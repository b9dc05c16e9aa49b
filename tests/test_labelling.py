"""The labelling stage: calibrated decisions on known counts, chance floors, adaptive
rollouts, judge consensus (including a judge that returns garbage or hangs), provenance."""

import json
import math

import pytest

import prmtree
from prmtree.engine.calibration import (
    RIGHT,
    UNDECIDED,
    WRONG,
    PathPlan,
    change_points,
    chance_floor,
    first_error_posterior,
    labelled_length,
    log_likelihoods,
    posterior_right,
)
from prmtree.engine.errors import ConfigError
from prmtree.engine.config import LabelsConfig
from prmtree.engine.deciders import CalibratedDecider, MCDecider
from prmtree.engine.labelers import parse_verdict, register_labeler
from prmtree.engine.labels import Labelling, LabelledPath, StepProvenance
from prmtree.engine.output import load_manifest, read_table
from prmtree.engine.records import Problem
from prmtree.engine.quality import score_paths
from prmtree.engine.synthetic import generate_problems
from prmtree.engine.tree import ReasoningTree
from prmtree.policies.simulated import SimulatedPolicy

GUESSABLE = generate_problems(30, seed=77, min_steps=8, max_steps=12, answer_spaces=("yesno", "choice", "number"))
GUESSING = {"error_rate": 0.08, "guess_rate": 0.3, "lucky_rate": 0.02, "cancel_errors": False}


def P(answer, answer_type="auto", **meta):
    return Problem(id="p", question="q", answer=answer, answer_type=answer_type, meta=meta)


# -- the decision rule on known counts ------------------------------------------------


@pytest.mark.parametrize(
    "problem, expected",
    [
        (P("yes"), 0.5), (P("No."), 0.5), (P("True"), 0.5),
        (P("B", "choice", options={"A": "1", "B": "2", "C": "3", "D": "4"}), 0.25),
        (P("B", "choice", options=["x", "y", "z"]), 1 / 3),
        (P("C", "choice"), 0.25),  # a choice question without its options: four, as usual
        (P("42"), 0.02), (P("teal"), 0.02), (P("\\frac{1}{2}"), 0.02),
        (P("yes", chance=0.1), 0.1),  # a row's own floor wins
    ],
)
def test_chance_floor_of_the_answer_space(problem, expected):
    assert chance_floor(problem) == pytest.approx(expected)


def test_a_run_wide_chance_overrides_inference_but_not_the_row():
    assert chance_floor(P("42"), chance=0.3) == 0.3
    assert chance_floor(P("42", chance=0.05), chance=0.3) == 0.05


@pytest.mark.parametrize(
    "n, k, floor, reference, decision",
    [
        (8, 8, 0.5, (16, 14), RIGHT),  # keeps the parent's rate on a yes/no question
        (8, 0, 0.5, (8, 6), WRONG),  # below chance: wrong
        (8, 3, 0.02, (8, 4), RIGHT),  # a free answer reached 3 times: no guess does that
        (8, 1, 0.02, (8, 4), UNDECIDED),  # one hit on a free answer: evidence, not proof
        (32, 24, 0.25, (16, 12), RIGHT),
    ],
)
def test_single_step_decisions_on_known_counts(n, k, floor, reference, decision):
    from prmtree.engine.calibration import decide

    assert decide(posterior_right(n, k, floor, reference, prior=0.7), 0.95) == decision


def test_the_peers_rule_and_the_calibrated_rule_disagree_exactly_where_guessing_explains_the_hits():
    # 4 of 8 on a yes/no question after a parent at 15/16: MC > 0 says right; the calibrated
    # posterior says "looks like guessing" (at best undecided, never right)
    assert posterior_right(8, 4, 0.5, (16, 15), prior=0.7) < 0.5
    # the same counts on a free-answer question are strong evidence of a right step
    assert posterior_right(8, 4, 0.02, (16, 15), prior=0.7) > 0.99


def test_first_error_posterior_is_monotone_and_sums_the_change_points():
    right, wrong = (0.0, -4.0), (-4.0, 0.0)
    post = first_error_posterior([right, right, wrong, wrong], hazard=0.3)
    assert post == sorted(post, reverse=True)  # P(step right) never increases along a path
    assert post[1] > 0.95 and post[2] < 0.05
    # a later step decided right lifts an ambiguous earlier one
    ambiguous = (0.0, 0.0)
    alone = first_error_posterior([ambiguous], hazard=0.3)[0]
    lifted = first_error_posterior([ambiguous, right, right], hazard=0.3)[0]
    assert alone == pytest.approx(0.7) and lifted > 0.95
    # a wrong final answer is exactly wrong, whatever came before
    assert first_error_posterior([right, (-math.inf, 0.0)], hazard=0.3)[-1] == 0.0


def _brute_force_look_ahead(weights, c, n, k, r, floor, reference, confidence):
    """The planner's look-ahead the long way: every outcome's rescaled change points,
    normalised, turned into each step's P(right), labelled and entropied from scratch."""

    def entropy(ws):
        return -sum(w * math.log(w) for w in ws if w > 0)

    def outcomes():  # (P(x of r more right | step right), P(x | step wrong)), x = 0..r, given k of n
        old_r, old_w = log_likelihoods(n, k, floor, reference)
        for x in range(r + 1):
            new_r, new_w = log_likelihoods(n + r, k + x, floor, reference)
            yield math.comb(r, x) * math.exp(new_r - old_r), math.comb(r, x) * math.exp(new_w - old_w)

    wrong_mass = sum(weights[: c + 1])
    gain, labels = entropy(weights), 0.0
    for p_r, p_w in outcomes():
        px = (1 - wrong_mass) * p_r + wrong_mass * p_w
        if px <= 0:
            continue
        after = [w * (p_w if j <= c else p_r) / px for j, w in enumerate(weights)]
        posteriors = [sum(after[i + 1:]) for i in range(len(weights) - 1)]
        gain -= px * entropy(after)
        labels += px * labelled_length(posteriors, confidence)
    return gain, labels


def test_the_planners_look_ahead_equals_the_long_way():
    import random

    rng = random.Random(5)
    checked = 0
    for _ in range(300):
        m = rng.randint(1, 9)
        floor, reference = rng.choice([0.5, 0.25, 0.02]), (16, rng.randint(4, 16))
        counts = [(n, rng.randint(0, n)) for n in (rng.choice([0, 4, 8, 16]) for _ in range(m))]
        weights = change_points([log_likelihoods(n, k, floor, reference) for n, k in counts], 0.2)
        plan = PathPlan(weights, floor, 0.96)
        assert plan.labelled_now() == labelled_length(first_error_posterior(
            [log_likelihoods(n, k, floor, reference) for n, k in counts], 0.2), 0.96)
        for c, (n, k) in enumerate(counts):
            r = rng.choice([4, 8, 12])
            gain, labels = _brute_force_look_ahead(weights, c, n, k, r, floor, reference, 0.96)
            assert plan.information_gain(c, n, k, r, reference) == pytest.approx(gain, abs=1e-9)
            assert plan.expected_labels(c, n, k, r, reference) == pytest.approx(labels, abs=1e-9)
            checked += 1
    assert checked > 1000


def test_likelihoods_are_neutral_without_rollouts():
    assert log_likelihoods(0, 0, 0.5, (8, 4)) == (0.0, 0.0)


def _chain(steps_and_counts, root=(8, 6), terminal_last=False):
    tree = ReasoningTree("p")
    tree.record(tree.root, *root)
    ids = tree.add_path(tree.root, [s for s, _ in steps_and_counts], terminal=terminal_last)
    for node, (_, counts) in zip(ids, steps_and_counts):
        if counts:
            tree.record(node, *counts)
    return tree, ids


def test_decider_mc_keeps_the_peers_rule_and_never_resamples():
    tree, ids = _chain([("a", (8, 1)), ("b", (8, 0))])
    mc = MCDecider(P("yes"), LabelsConfig(method="mc"))
    assert [e.decision for e in mc.along(tree, ids)] == [RIGHT, WRONG]
    assert [e.posterior for e in mc.along(tree, ids)] == [None, None]  # the rule has no posterior
    assert mc.next_to_sample(tree, ids, 8) is None  # both steps sampled once: nothing more
    fresh, fresh_ids = _chain([("a", (8, 1)), ("b", None), ("c", (1, 0))])
    assert mc.next_to_sample(fresh, fresh_ids, 8) == (fresh_ids[1], 8)  # the first unsampled step, k
    assert mc.first_batch(8) == 8 and mc.reference_batch(8) == 0


def test_decider_calibrated_on_a_yes_no_chain():
    tree, ids = _chain([("a", (8, 8)), ("b", (8, 1)), ("c", None)])
    ev = CalibratedDecider(P("yes"), LabelsConfig()).along(tree, ids)
    assert ev[0].decision == RIGHT and ev[1].decision == WRONG and ev[2].decision == WRONG
    assert ev[2].n == 0  # unsampled, decided by the path: wrong after a wrong step
    assert ev[1].parent_value == 1.0


def test_an_undecided_node_asks_for_more_until_its_cap():
    tree, ids = _chain([("a", (8, 4))])
    decider = CalibratedDecider(P("yes"), LabelsConfig(max_rollouts_per_node=12, max_rollouts_per_step=None))
    assert decider.node(tree, ids[0]).decision == UNDECIDED
    assert decider.next_to_sample(tree, ids, 8) == (ids[0], 4)  # one batch
    tree.record(ids[0], 4, 2)
    assert decider.next_to_sample(tree, ids, 8) is None  # 12 rollouts: the cap


# -- end to end -----------------------------------------------------------------------


def _quality(out, problems):
    oracle = SimulatedPolicy()
    by_id = {p.id: p for p in problems}
    rows = read_table(out, "steps").select(["problem_id", "completions", "labels"]).to_pylist()
    return score_paths(rows, lambda pid, steps: oracle.first_error(by_id[pid], steps))


@pytest.mark.parametrize("strategy", ["omega", "shepherd", "mcts"])
def test_calibrated_labels_beat_the_peers_rule_when_answers_are_guessed(tmp_path, strategy):
    got = {}
    for method in ("mc", "calibrated"):
        out = tmp_path / method
        prmtree.run(GUESSABLE, policy=SimulatedPolicy(**GUESSING), out=out,
                    config={"search": {"strategy": strategy}, "labels": {"method": method}})
        got[method] = _quality(out, GUESSABLE)
    assert got["calibrated"].step_accuracy >= 0.96
    assert got["calibrated"].step_accuracy > got["mc"].step_accuracy + 0.03


@pytest.mark.parametrize("strategy", ["omega", "shepherd", "mcts"])
def test_noiseless_labels_equal_the_truth_on_every_answer_space(tmp_path, strategy):
    prmtree.run(GUESSABLE, policy=SimulatedPolicy(noiseless=True), out=tmp_path, config={"search": {"strategy": strategy}})
    q = _quality(tmp_path, GUESSABLE)
    assert q.steps > 100 and q.step_accuracy == 1.0


def test_adaptive_rollouts_sample_undecided_nodes_in_small_batches(tmp_path):
    prmtree.run(GUESSABLE[:12], policy=SimulatedPolicy(**GUESSING), out=tmp_path / "cal",
                config={"labels": {"batch": 4, "max_rollouts_per_node": 24}})
    counts = [n["n_rollouts"] for n in read_table(tmp_path / "cal", "nodes").to_pylist() if not n["terminal"]]
    assert any(c > 8 for c in counts)  # some nodes needed more than one batch of k
    assert all(c <= 24 or c % 8 == 0 for c in counts)  # capped (a node revisited by a new search may exceed it)
    assert all(c == 0 or c == 8 or (c - 8) % 4 == 0 or c % 8 == 0 for c in counts)
    prmtree.run(GUESSABLE[:12], policy=SimulatedPolicy(**GUESSING), out=tmp_path / "mc", config={"labels": {"method": "mc"}})
    mc_counts = [n["n_rollouts"] for n in read_table(tmp_path / "mc", "nodes").to_pylist() if not n["terminal"]]
    assert all(c % 8 == 0 for c in mc_counts)  # the peers' rule: one batch of k per visit


def test_provenance_travels_with_every_labelled_step(tmp_path):
    prmtree.run(GUESSABLE[:10], policy=SimulatedPolicy(**GUESSING), out=tmp_path, config={"search": {"strategy": "shepherd"}})
    rows = read_table(tmp_path, "steps").to_pylist()
    assert rows
    for row in rows:
        n = len(row["labels"])
        for col in ("label_sources", "confidences", "rollouts", "parent_values", "ci_low", "ci_high", "judge_verdicts", "floors"):
            assert len(row[col]) == n, col
        assert row["label_method"] == "calibrated" and row["flagged"] is False
        for label, source, conf, rollouts, lo, hi in zip(row["labels"], row["label_sources"], row["confidences"],
                                                        row["rollouts"], row["ci_low"], row["ci_high"]):
            assert source in ("calibrated", "inferred")
            assert conf >= 0.95  # every kept label was decided at the configured confidence
            assert (rollouts > 0) == (source == "calibrated")
            assert 0 <= lo <= hi <= 1
    nodes = read_table(tmp_path, "nodes").to_pylist()
    assert {n["decision"] for n in nodes} == {"right", "wrong", "undecided", None}  # None: the roots


def test_undecided_steps_are_dropped_or_kept_as_configured(tmp_path):
    config = {"labels": {"confidence": 0.999, "max_rollouts_per_node": 8}}
    prmtree.run(GUESSABLE[:12], policy=SimulatedPolicy(**GUESSING), out=tmp_path / "drop", config=config)
    keep = {"labels": {**config["labels"], "undecided": "keep"}}
    prmtree.run(GUESSABLE[:12], policy=SimulatedPolicy(**GUESSING), out=tmp_path / "keep", config=keep)
    sources = lambda out: [s for r in read_table(out, "steps").to_pylist() for s in r["label_sources"]]
    assert "undecided" not in sources(tmp_path / "drop")
    assert "undecided" in sources(tmp_path / "keep")
    assert len(sources(tmp_path / "keep")) > len(sources(tmp_path / "drop"))
    # kept undecided steps carry a null label (not a guess from the posterior), no confidence,
    # are not counted as labelled, and trainer exports stop before them
    kept = read_table(tmp_path / "keep", "steps").to_pylist()
    pairs = [(label, src, conf) for r in kept for label, src, conf in zip(r["labels"], r["label_sources"], r["confidences"])]
    assert {(label, conf) for label, src, conf in pairs if src == "undecided"} == {(None, None)}
    assert all(label is not None for label, src, _ in pairs if src != "undecided")
    manifest = load_manifest(tmp_path / "keep" / "manifest.json")
    assert manifest.stats["steps_labelled"] == sum(label is not None for label, _, _ in pairs)
    from prmtree.export import export

    export(tmp_path / "keep", "openrlhf", tmp_path / "k.jsonl")
    exported = [json.loads(line) for line in (tmp_path / "k.jsonl").open()]
    assert exported and all(set(r["label"]) <= {"+", "-"} for r in exported)
    first_null = {r["path_id"]: r["labels"].index(None) for r in kept if None in r["labels"]}
    for r in exported:
        if r["path_id"] in first_null:
            assert len(r["label"]) == first_null[r["path_id"]]


def test_an_unknown_method_is_refused_naming_the_known_ones():
    with pytest.raises(ConfigError, match="unknown labelling method 'vote'; known: mc, calibrated, consensus"):
        prmtree.run(GUESSABLE[:1], config={"labels": {"method": "vote"}})


def test_an_unknown_judge_key_is_refused_even_with_no_judge_named():
    """With ``name`` set, the other keys are the judge policy's arguments (its constructor
    refuses the rest); with none set, nothing would read them: refused like any other."""
    with pytest.raises(ConfigError) as refused:
        prmtree.run(GUESSABLE[:1], config={"labels": {"method": "consensus", "judge": {"max_token": 64}}})
    assert str(refused.value) == ("unknown config field 'labels.judge.max_token' (a judge's own arguments need the "
                                  "judge's policy named: [labels.judge] name = ...)")
    named = LabelsConfig(judge={"name": "simulated", "judge_accuracy": 0.9}).judge
    assert named.kwargs == {"judge_accuracy": 0.9}


def test_no_stopping_rule_is_inf_in_toml_the_same_config_as_none(tmp_path):
    from prmtree.engine.config import load_config

    toml = tmp_path / "labels.toml"
    toml.write_text("[labels]\nmax_rollouts_per_step = inf\n")
    from_toml = load_config(toml)
    assert from_toml.labels.max_rollouts_per_step is None
    none = LabelsConfig(max_rollouts_per_step=None)
    assert from_toml.labels == none
    assert from_toml.config_hash() == from_toml.model_copy(update={"labels": none}).config_hash()


def test_a_custom_labeller_registers_like_a_policy(tmp_path):
    @register_labeler("everything-right-test")
    class EverythingRight:
        def __init__(self, labels):
            self.labels = labels

        def decider(self, problem, ctx):  # the rule the search samples by: the peers'
            return MCDecider(problem, self.labels)

        async def label(self, problem, search, ctx):
            tree = search.tree
            paths = []
            for leaf in tree.leaves():
                steps = list(tree.prefix(leaf))
                prov = [StepProvenance(1.0, 1.0, 1.0, None, 0, None, "custom") for _ in steps]
                paths.append(LabelledPath(leaf, steps, [True] * len(steps), prov, None))
            return Labelling(paths, [], {})

    prmtree.run(GUESSABLE[:3], policy=SimulatedPolicy(), out=tmp_path,
                config={"search": {"strategy": "shepherd"}, "labels": {"method": "everything-right-test"}})
    rows = read_table(tmp_path, "steps").to_pylist()
    assert rows and all(all(r["labels"]) and set(r["label_sources"]) == {"custom"} for r in rows)


def test_a_labeller_missing_part_of_the_contract_is_refused_in_one_line(tmp_path):
    @register_labeler("no-decider-test")
    class NoDecider:
        def __init__(self, labels):
            self.labels = labels

        async def label(self, problem, search, ctx):
            return Labelling([], [], {})

    with pytest.raises(ConfigError, match=r"'no-decider-test' must define 'def decider\(self, problem, ctx\)'"):
        prmtree.run(GUESSABLE[:1], policy=SimulatedPolicy(), out=tmp_path,
                    config={"labels": {"method": "no-decider-test"}})


# -- judge consensus --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, verdict",
    [
        ("The value is right.\nVerdict: correct", True),
        ("Verdict: incorrect", False),
        ("verdict = **Incorrect**", False),
        ("Verdict: correct ... on reflection, Verdict: incorrect", False),  # the last one wins
        ("\\boxed{correct}", True),
        ("it is correct or maybe incorrect", None),  # no marker: no verdict
        ("", None),
        ("Verdict: maybe", None),
    ],
)
def test_verdicts_are_parsed_strictly(text, verdict):
    assert parse_verdict(text) is verdict


def test_consensus_with_an_80_percent_judge_keeps_precise_first_errors(tmp_path):
    problems = generate_problems(45, seed=3, min_steps=8, max_steps=12, answer_spaces=("yesno", "choice", "number"))
    out = tmp_path / "consensus"
    s = prmtree.run(problems, policy=SimulatedPolicy(**GUESSING, judge_accuracy=0.8), out=out,
                    config={"labels": {"method": "consensus"}})
    q = _quality(out, problems)
    assert q.paths_with_negative >= 10 and q.first_error_precision >= 0.95
    counts = s.labelling
    assert counts["judge_calls"] > 0 and counts["judge_tokens"] > 0
    assert counts["judge_agreed"] + counts["judge_disagreed"] == counts["paths_judged"]
    assert 0 < counts["paths_dropped_by_judge"] < counts["paths_judged"]
    rows = read_table(out, "steps").to_pylist()
    # a path is checked where the counts decided a step the check asks about; the steps
    # the judge settled itself are not asked again
    assert all("judge-agreed" in r["label_sources"] or "judge-settled" in r["label_sources"] for r in rows)
    assert {v for r in rows for shown in r["judge_verdicts"] if shown for v in shown.split(",")} <= {"correct", "incorrect"}


def test_a_judge_that_returns_garbage_counts_as_no_verdict(tmp_path):
    policy = SimulatedPolicy(**GUESSING, judge_garbage_rate=1.0)
    s = prmtree.run(GUESSABLE[:8], policy=policy, out=tmp_path / "drop", config={"labels": {"method": "consensus"}})
    assert s.labelling["judge_unparseable"] == s.labelling["judge_calls"] > 0
    # No verdict is no disagreement: every path is kept as the counts labelled it, unflagged.
    rows = read_table(tmp_path / "drop", "steps").to_pylist()
    assert rows and s.labelling["paths_dropped_by_judge"] == 0
    assert s.labelling["paths_without_verdict"] == s.labelling["paths_judged"] == len(rows)
    assert not any(r["flagged"] for r in rows)
    assert all("unparseable" in r["judge_verdicts"] for r in rows)
    assert not any(src.startswith("judge") for r in rows for src in r["label_sources"])


class SometimesHangingJudge(SimulatedPolicy):
    """A judge of its own (not the run's policy) that hangs on every third question."""

    async def generate(self, request):
        import asyncio

        if request.seed % 3 == 0:
            await asyncio.sleep(3600)
        return await super().generate(request)


class DeadJudge:
    async def generate(self, request):
        import asyncio

        await asyncio.sleep(3600)


@pytest.fixture
def judges(monkeypatch):
    import sys
    import types

    module = types.ModuleType("judges_test")
    module.SometimesHangingJudge, module.DeadJudge = SometimesHangingJudge, DeadJudge
    monkeypatch.setitem(sys.modules, "judges_test", module)


def test_a_judge_that_times_out_costs_agreement_not_the_run(tmp_path, judges):
    # The breaker counts failures in completion order: the hung third of ~150 judge calls
    # all time out together once the searches are done, so its window is set wider here
    # (the dead judge below trips it).
    config = {"labels": {"method": "consensus", "judge": {"name": "judges_test:SometimesHangingJudge"}},
              "executor": {"request_timeout_s": 0.2, "max_attempts": 1, "breaker_window": 500}}
    s = prmtree.run(GUESSABLE[:10], policy=SimulatedPolicy(**GUESSING), out=tmp_path, config=config)
    assert s.problems_done == 10 and s.problems_failed == 0
    assert 0 < s.labelling["judge_failures"] < s.labelling["judge_calls"]
    rows = read_table(tmp_path, "steps").to_pylist()
    assert rows and all("failed" not in r["judge_verdicts"] for r in rows)  # a failed check is no agreement


def test_a_dead_judge_stops_the_run_instead_of_dropping_every_label(tmp_path, judges):
    from prmtree.engine.errors import FatalExecutorError

    config = {"labels": {"method": "consensus", "judge": {"name": "judges_test:DeadJudge"}},
              "executor": {"request_timeout_s": 0.05, "max_attempts": 1, "breaker_window": 5}}
    with pytest.raises(FatalExecutorError, match="circuit breaker"):
        prmtree.run(GUESSABLE[:10], policy=SimulatedPolicy(**GUESSING), out=tmp_path, config=config)


def test_inspect_shows_how_labels_were_made_and_the_judges_record(tmp_path, capsys):
    from prmtree.cli import main

    config = {"labels": {"method": "consensus", "on_disagreement": "flag"}}
    prmtree.run(GUESSABLE[:8], policy=SimulatedPolicy(**GUESSING), out=tmp_path / "o", config=config)
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "o"), "--html", str(tmp_path / "r.html")]) == 0
    shown = capsys.readouterr().out
    assert "labels: how they were made" in shown and "consensus" in shown
    assert "MC and judge agree" in shown and "label confidence" in shown
    page = (tmp_path / "r.html").read_text()
    assert "judge: " in page and "confidence 0." in page and "rollouts" in page
    assert "P(right)" in page  # node tooltips carry the posterior
