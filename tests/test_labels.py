from prmtree.engine.labels import label_path, label_paths, preference_pairs
from prmtree.engine.tree import ReasoningTree


def _tree(measure):
    """A 5-step path; ``measure`` maps step index -> (n, correct)."""
    tree = ReasoningTree("p")
    ids = tree.add_path(tree.root, [f"s{i}" for i in range(5)])
    for j, (n, c) in measure.items():
        tree.record(ids[j], n, c)
    return tree, ids


def test_measured_steps_keep_their_values_and_inference_fills_between():
    tree, ids = _tree({1: (8, 4), 3: (8, 0)})
    path = label_path(tree, ids[-1])
    # step 0 inferred positive from step 1; step 2 undecided? no: positive only backwards from 1,
    # negative forwards from 3 -> step 2 undecided, so the path stops after step 1.
    assert path.steps == ["s0", "s1"]
    assert path.labels == [True, True]
    assert path.values == [0.5, 0.5]


def test_truncate_after_first_error_is_default():
    tree, ids = _tree({2: (8, 2), 3: (8, 0)})
    path = label_path(tree, ids[-1])
    assert path.labels == [True, True, True, False]
    assert path.values == [0.25, 0.25, 0.25, 0.0]


def test_label_false_keeps_the_tail():
    tree, ids = _tree({2: (8, 2), 3: (8, 0)})
    path = label_path(tree, ids[-1], after_first_error="label-false")
    assert path.labels == [True, True, True, False, False]


def test_threshold_changes_hard_labels():
    tree, ids = _tree({0: (8, 6), 1: (8, 2), 4: (8, 0)})
    assert label_path(tree, ids[-1], threshold=0.0).labels[:2] == [True, True]
    assert label_path(tree, ids[-1], threshold=0.5).labels[:2] == [True, False]


def test_terminal_leaf_gives_final_correct():
    tree = ReasoningTree("p")
    ids = tree.add_path(tree.root, ["a", "b \\boxed{1}"], terminal=True)
    tree.record(ids[-1], 1, 1)
    path = label_path(tree, ids[-1])
    assert path.final_correct is True
    assert path.labels == [True, True]


def test_a_path_cut_at_an_undecided_step_has_no_final_answer():
    """The leaf answered right, but the labels stop at step 1 (step 2 left undecided by its
    posterior): the row's steps do not reach that answer, so ``final_correct`` is None (an
    export would otherwise call the cut row a finished solution). A path that stops at an
    error, or runs to its end, keeps its leaf's answer."""
    from prmtree.engine.calibration import RIGHT, UNDECIDED, WRONG, StepEvidence

    tree = ReasoningTree("p")
    ids = tree.add_path(tree.root, ["a", "b", "c", "d \\boxed{1}"], terminal=True)
    for node in ids:
        tree.record(node, 4, 2)
    tree.record(ids[-1], 1, 1)

    def evidence(*decisions):
        return [StepEvidence(d, 0.5, 4, 2, 0.5) for d in decisions]

    inferred = label_path(tree, ids[-1], evidence(RIGHT, RIGHT, UNDECIDED, RIGHT))
    assert inferred.labels == [True] * 4 and inferred.final_correct is True  # step 2 inferred right from step 3
    stopped = label_path(tree, ids[-1], evidence(RIGHT, UNDECIDED, UNDECIDED, UNDECIDED))
    assert stopped.labels == [True] and stopped.final_correct is None
    kept = label_path(tree, ids[-1], evidence(RIGHT, UNDECIDED, UNDECIDED, UNDECIDED), keep_undecided=True)
    assert kept.labels == [True, None, None, None] and kept.final_correct is True  # the export cuts and nulls it
    wrong = label_path(tree, ids[-1], evidence(RIGHT, WRONG, UNDECIDED, UNDECIDED))
    assert wrong.labels == [True, False] and wrong.final_correct is True
    assert label_path(tree, ids[-1], evidence(RIGHT, RIGHT, RIGHT, RIGHT)).final_correct is True
    # label-false keeps the steps after an error, so a max_ci_width cut there stops short too (a review)
    wide = ReasoningTree("w")
    ids = wide.add_path(wide.root, ["a", "b", "c", "d \\boxed{1}"], terminal=True)
    for node, (n, k) in zip(ids, [(64, 60), (64, 2), (2, 1), (1, 1)]):
        wide.record(node, n, k)
    full = label_path(wide, ids[-1], evidence(RIGHT, WRONG, WRONG, WRONG), after_first_error="label-false")
    assert full.labels == [True, False, False, False] and full.final_correct is True
    cut = label_path(wide, ids[-1], evidence(RIGHT, WRONG, WRONG, WRONG), after_first_error="label-false",
                     max_ci_width=0.3)
    assert cut.labels == [True, False] and cut.final_correct is None


def test_undecided_first_step_gives_no_row():
    tree, ids = _tree({})
    assert label_path(tree, ids[-1]) is None
    assert label_paths(tree) == []


def test_preference_pairs_from_siblings_with_different_labels():
    tree = ReasoningTree("p")
    good = tree.add_step(tree.root, "good")
    bad = tree.add_step(tree.root, "bad")
    also_good = tree.add_step(tree.root, "fine")
    tree.record(good, 8, 5)
    tree.record(bad, 8, 0)
    tree.record(also_good, 8, 1)
    pairs = preference_pairs(tree)
    assert {(p.chosen, p.rejected) for p in pairs} == {("good", "bad"), ("fine", "bad")}
    assert all(p.prefix == [] for p in pairs)
    assert {p.chosen_value for p in pairs} == {5 / 8, 1 / 8}
