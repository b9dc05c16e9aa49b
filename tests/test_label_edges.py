"""Label edges a prober found: wrong labels that rested on the change-point prior alone
(``undecided = "keep"``), and floors learned from one or two pilot problems."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from types import SimpleNamespace

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import pytest

import prmtree
from prmtree.engine.calibration import RIGHT, UNDECIDED, WRONG
from prmtree.engine.config import LabelsConfig, OutputConfig
from prmtree.engine.floors import FULL_PROBLEMS
from prmtree.engine.labelers import CalibratedLabeler, LabelContext
from prmtree.engine.output import load_manifest, read_table
from prmtree.engine.records import Problem
from prmtree.engine.stats import RunStats
from prmtree.engine.synthetic import generate_problems
from prmtree.engine.tree import ReasoningTree
from prmtree.policies.simulated import SimulatedPolicy
from prmtree.summary import label_warnings

GUESSABLE = {"error_rate": 0.08, "guess_rate": 0.3, "lucky_rate": 0.02, "cancel_errors": False,
             "wrong_answers": "consistent"}


def _label(tree: ReasoningTree, problem: Problem, undecided: str = "keep"):
    labeler = CalibratedLabeler(LabelsConfig(undecided=undecided))
    return asyncio.run(labeler.label(problem, SimpleNamespace(tree=tree), LabelContext(output=OutputConfig())))


def _yes_no_chain(counts):
    """A yes/no path of len(counts) steps, the last stating an answer; counts: (n, k) each."""
    tree = ReasoningTree("p")
    tree.record(tree.root, 8, 6)
    ids = tree.add_path(tree.root, [f"step {i}" for i in range(len(counts))], terminal=True)
    for node, (n, k) in zip(ids, counts):
        if n:
            tree.record(node, n, k)
    return tree, ids


def test_keep_writes_no_false_label_that_only_the_prior_put_there():
    """Step 1 sampled (2 of 4), steps 2-6 never, the final answer wrong: the path has an
    error, but nothing says where among steps 1-7. The prior's hazard alone pushed P(step 6
    right) to 0.04, and keep wrote False there at 0.96 (wrong 12-22% of the time). Now those
    steps stay undecided (null), in the steps and the nodes alike; the stated wrong answer
    is still False (exact)."""
    problem = Problem(id="p", question="q", answer="yes")
    tree, ids = _yes_no_chain([(0, 0), (4, 2), (0, 0), (0, 0), (0, 0), (0, 0), (0, 0), (1, 0)])
    labelling = _label(tree, problem)
    (path,) = labelling.paths
    assert path.labels[:1] == [True] or path.labels[0] is None
    assert path.labels[1:7] == [None] * 6, path.labels
    assert path.labels[7] is False and path.provenance[7].source == "calibrated"
    assert labelling.nodes[ids[6]].decision == UNDECIDED and labelling.nodes[ids[6]].posterior < 0.04
    assert labelling.nodes[ids[7]].decision == WRONG
    # drop (the default) writes the same prefix it always did: the path ends at step 1
    assert [p.labels for p in _label(tree, problem, "drop").paths] == [path.labels[:1]] * (path.labels[0] is True)


def test_a_wrong_step_the_counts_show_stays_wrong_after_undecided_steps():
    """Steps 0-3 unsampled, step 4: 0 of 8 against the question's 6 of 8 on a free answer:
    its counts show it wrong whatever the steps before it were, so it stays False under
    keep, with the unsampled steps before it null (not all wrong, not all right)."""
    problem = Problem(id="p", question="q", answer="42")
    tree, ids = _yes_no_chain([(0, 0)] * 4 + [(8, 0), (0, 0), (1, 0)])
    (path,) = _label(tree, problem).paths
    assert path.labels == [None, None, None, None, False], path.labels


def test_an_mcts_leaf_its_counts_show_wrong_stays_wrong_and_a_prior_only_leaf_does_not():
    """mcts's shape (guessable run, 4-option problem, floor 0.2): a path is never expanded
    below a wrong step, so a step decided wrong is a leaf with only its own counts, 1 of 32
    (its cap) below a parent's 2 of 4, and the one-step test (parent assumed right) put it
    at 0.956 against 0.96: keep wrote null where False was right (7 such labels, every one
    right). Its test now takes the parent in. A leaf after nine unsampled steps, 1 of 4
    (P(right) 0.02 from the prior's hazard alone), still gets no False."""
    problem = Problem(id="p", question="q", answer="B", meta={"chance": 0.2})
    tree = ReasoningTree("p")
    tree.record(tree.root, 8, 3)
    shown = tree.add_path(tree.root, ["a0", "a1", "a2", "a3"])
    for node, (n, k) in zip(shown, [(4, 2), (4, 4), (4, 2), (32, 1)]):
        tree.record(node, n, k)
    prior_only = tree.add_path(tree.root, [f"b{i}" for i in range(10)])
    tree.record(prior_only[-1], 4, 1)
    labelling = _label(tree, problem)
    by_leaf = {p.path_id: p.labels for p in labelling.paths}
    assert by_leaf[shown[-1]] == [True, True, None, False]
    assert labelling.nodes[shown[-1]].decision == WRONG
    assert by_leaf[prior_only[-1]] == [None] * 10
    leaf = labelling.nodes[prior_only[-1]]
    assert leaf.decision == UNDECIDED and leaf.posterior < 1 - LabelsConfig().confidence
    # drop writes what it did: the shown path up to its undecided step, no other row
    assert [p.labels for p in _label(tree, problem, "drop").paths] == [[True, True]]


def test_a_first_error_after_a_right_step_is_unchanged():
    problem = Problem(id="p", question="q", answer="42")
    tree, ids = _yes_no_chain([(8, 6), (8, 6), (8, 0), (0, 0), (1, 0)])
    labelling = _label(tree, problem, "drop")
    (path,) = labelling.paths
    assert path.labels == [True, True, False]
    assert [labelling.nodes[n].decision for n in ids] == [RIGHT, RIGHT, WRONG, WRONG, WRONG]


def test_keep_on_a_guessable_run_writes_no_false_label_without_rollouts_at_or_after_it(tmp_path):
    """The prober's run (45 problems, omega, keep): 123 False labels on steps with no
    rollouts at or after them, 15 of them wrong, at a stated 0.97. Now none, and every False
    label is right."""
    problems = generate_problems(45, seed=1234, min_steps=8, max_steps=12, answer_spaces=("yesno", "choice", "number"))
    prmtree.run(problems, policy=SimulatedPolicy(**GUESSABLE), out=tmp_path,
                config={"seed": 0, "search": {"strategy": "omega"}, "labels": {"undecided": "keep"}})
    oracle, by_id = SimulatedPolicy(), {p.id: p for p in problems}
    unsupported = false_labels = wrong = 0
    for r in read_table(tmp_path, "steps").to_pylist():
        first = oracle.first_error(by_id[r["problem_id"]], r["completions"])
        for j, label in enumerate(r["labels"]):
            if label is False:
                false_labels += 1
                unsupported += all(x == 0 for x in r["rollouts"][j:])
                wrong += first is None or j < first
    assert false_labels > 100 and unsupported == 0 and wrong == 0


def _choice_rare_in_the_window(window: int):
    choice = generate_problems(40, seed=1234, min_steps=8, max_steps=12, answer_spaces=("choice",))
    number = generate_problems(9, seed=99, min_steps=8, max_steps=12, answer_spaces=("number",))
    return [replace(p, id=f"num-{i}") for i, p in enumerate(number)] + choice


def test_one_pilot_problem_learns_a_floor_near_chance_not_twice_it(tmp_path):
    """The only 4-option problem in a 10-row pilot window learned 0.50 (chance 0.25) and the
    space's 40 problems got no label; one yes/no problem under shepherd learned 0.58."""
    prmtree.run(_choice_rare_in_the_window(10), policy=SimulatedPolicy(**GUESSABLE), out=tmp_path / "c",
                config={"seed": 0, "search": {"strategy": "shepherd"}, "labels": {"pilot_window": 10}})
    floor = load_manifest(tmp_path / "c" / "manifest.json").calibration["floors"]["choice"]
    assert floor["problems"] == 1 and abs(floor["floor"] - 0.25) <= 0.25 / FULL_PROBLEMS + 1e-9, floor
    rows = read_table(tmp_path / "c", "steps").to_pylist()
    labelled = {r["problem_id"] for r in rows if r["problem_id"].startswith("syn") and any(
        label is not None for label in r["labels"])}
    assert len(labelled) >= 20

    one = generate_problems(1, seed=1234, min_steps=8, max_steps=12, answer_spaces=("yesno",))
    prmtree.run(one, policy=SimulatedPolicy(**GUESSABLE), out=tmp_path / "y",
                config={"seed": 0, "search": {"strategy": "shepherd"}})
    floor = load_manifest(tmp_path / "y" / "manifest.json").calibration["floors"]["yesno"]
    assert abs(floor["floor"] - 0.5) <= 0.5 / FULL_PROBLEMS + 1e-9, floor


def test_the_coverage_warning_names_a_floor_learned_above_chance():
    spaces = {"choice": {"problems": 40, "labelled_problems": 0},
              "number": {"problems": 9, "labelled_problems": 2}}
    stats = RunStats(problems_done=49, steps_labelled=20, answer_spaces=spaces)
    floors = {"choice": {"floor": 0.502, "chance": 0.25, "problems": 1, "wrong_rollouts": 70.3, "source": "learned"},
              "number": {"floor": 0.01, "chance": 0.02, "problems": 9, "wrong_rollouts": 90.0, "source": "learned"}}
    choice, number = label_warnings(stats, 0.85, {"floors": floors})
    assert "floor learned by the pilot, 0.502 from 1 problem(s), is above its chance floor 0.250" in choice
    assert "floor" not in number.split(" - ")[1].split(";")[0]  # below chance: the rollouts are the advice
    assert label_warnings(stats, 0.85) == label_warnings(stats, 0.85, {})  # no calibration: as before


@pytest.mark.parametrize("parent", [(12, 1), (16, 2), (6, 0)])
def test_an_mcts_leaf_without_rollouts_is_never_false_on_its_parents_counts_and_the_prior(parent):
    # A review found the two-step test (a leaf with its parent) gave a leaf with no rollouts of
    # its own False below an undecided parent: the parent's counts fell short, the leaf's
    # unsampled prior hazard tipped them over.
    problem = Problem(id="p", question="q", answer="B", meta={"chance": 0.2})
    tree = ReasoningTree("p")
    tree.record(tree.root, 8, 3)
    ids = tree.add_path(tree.root, ["a0", "a1", "a2"])
    tree.record(ids[0], 8, 6)
    tree.record(ids[1], *parent)
    [labels] = [p.labels for p in _label(tree, problem).paths if p.path_id == ids[-1]]
    assert labels[:2] == [True, None] and labels[2] is not False
