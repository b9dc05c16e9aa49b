import math

import pytest

from prmtree.engine.tree import ReasoningTree, node_id_for
from prmtree.engine.value import hard_label, mc_value, wilson_interval


def test_mc_value():
    assert mc_value(3, 8) == 0.375
    assert math.isnan(mc_value(0, 0))
    with pytest.raises(ValueError, match="9/8"):
        mc_value(9, 8)


@pytest.mark.parametrize(
    "c, n, lo, hi",
    [
        (0, 8, 0.0, 0.3244),  # textbook Wilson values (z = 1.96)
        (8, 8, 0.6756, 1.0),
        (4, 8, 0.2152, 0.7848),
        (1, 10, 0.0179, 0.4042),
    ],
)
def test_wilson_interval_known_values(c, n, lo, hi):
    got = wilson_interval(c, n)
    assert got[0] == pytest.approx(lo, abs=1e-4)
    assert got[1] == pytest.approx(hi, abs=1e-4)


def test_wilson_narrows_with_more_samples_and_contains_estimate():
    a = wilson_interval(4, 8)
    b = wilson_interval(40, 80)
    assert b[1] - b[0] < a[1] - a[0]
    assert a[0] < 0.5 < a[1]
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_hard_label_threshold():
    assert hard_label(0.125) and not hard_label(0.0)
    assert not hard_label(0.25, threshold=0.5) and hard_label(0.75, threshold=0.5)


def test_node_ids_are_stable_and_merge_identical_steps():
    tree = ReasoningTree("p1")
    a = tree.add_path(tree.root, ["step one", "step two"])
    b = tree.add_path(tree.root, ["step  one", "step three"])  # whitespace differs only
    assert a[0] == b[0]
    assert a[1] != b[1]
    assert len(tree) == 4
    assert a[0] == node_id_for("p1", tree.root, "step one")
    assert node_id_for("p2", tree.root, "step one") != a[0]
    # same step under a different parent is a different node
    assert node_id_for("p1", a[0], "step two") != node_id_for("p1", b[1], "step two")


def test_paths_prefix_stats_and_leaves():
    tree = ReasoningTree("p")
    ids = tree.add_path(tree.root, ["s1", "s2", "s3"], terminal=True)
    tree.add_path(ids[0], ["t2"])
    assert tree.prefix(ids[2]) == ("s1", "s2", "s3")
    assert tree.path_ids(ids[1]) == ids[:2]
    assert tree.stats(ids[2]).terminal and not tree.stats(ids[1]).terminal
    assert tree.stats(ids[2]).depth == 3
    assert set(tree.leaves()) == {ids[2], node_id_for("p", ids[0], "t2")}
    tree.record(ids[1], 8, 3)
    tree.record(ids[1], 8, 1)
    s = tree.stats(ids[1])
    assert (s.n_rollouts, s.n_correct, s.value) == (16, 4, 0.25)
    assert tree.total_rollouts == 16
    assert tree.parent(ids[0]) == tree.root and tree.parent(tree.root) is None


def test_the_trees_indexes_agree_with_its_graph():
    """leaves(), nodes() and path_ids() read the tree's own indexes (not networkx's views,
    a microsecond a node): the same nodes, in the graph's order, and each node's path."""
    import random

    import networkx as nx

    rng = random.Random(5)
    tree, fresh = ReasoningTree("p"), ReasoningTree("p")
    for i in range(60):
        if i == 30:
            assert tree.graph.number_of_nodes() == len(tree)  # built halfway: kept in step from here on
        parent = rng.choice([tree.root, *[n for n, _ in tree.nodes() if n != tree.root]])
        steps, terminal = [f"s{rng.randint(0, 6)}" for _ in range(rng.randint(1, 3))], rng.random() < 0.3
        assert tree.add_path(parent, steps, terminal=terminal) == fresh.add_path(parent, steps, terminal=terminal)
    graph = tree.graph
    assert nx.utils.graphs_equal(graph, fresh.graph)  # kept in step = built at the end
    assert list(graph.edges) == list(fresh.graph.edges)
    assert all(tree.children(n) == list(graph.successors(n)) for n in graph.nodes)
    assert [n for n, _ in tree.nodes()] == list(graph.nodes)
    assert [s for _, s in tree.nodes()] == [d["stats"] for _, d in graph.nodes(data=True)]
    assert tree.leaves() == [n for n in graph.nodes if graph.out_degree(n) == 0 and n != tree.root]
    assert len(tree.leaves()) > 5
    for node in graph.nodes:
        assert tree.path_ids(node) == nx.shortest_path(graph, tree.root, node)[1:]
