"""Issue 18, items 15, 16 and 18: edges where a run reported what it did not do.

15: one-line errors instead of tracebacks; 16: a run that labels nothing says so and does
not exit 0; 18: one decision per node, the same in the steps and the nodes tables.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import prmtree
from prmtree.engine.output import read_table
from prmtree.engine.synthetic import generate_problems, write_jsonl


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
            if n["decision"] in ("right", "wrong") and label != n["label"]:
                bad.append((row["problem_id"], node_id, label, n["decision"]))
            elif n["decision"] == "undecided" and label is not None:
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
