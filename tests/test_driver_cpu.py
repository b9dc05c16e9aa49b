"""The driver's CPU work (issue 21): the calibrated rule's memoised path computations give
the decisions and posteriors the plain computation gives, bit for bit; the tree's count
keys follow its stats; a verdict keeps every field of its rollout."""

import copy
import math
import pickle
import random
from dataclasses import fields, replace

import pytest

import prmtree

from prmtree.engine.answers.extract import find_answer
from prmtree.engine.calibration import (
    UNDECIDED,
    PathPlan,
    _predictive,
    change_points,
    decide,
    first_error_posterior,
    log_likelihoods,
    path_verdict,
)
from prmtree.engine.config import LabelsConfig
from prmtree.engine.deciders import CalibratedDecider
from prmtree.engine.records import Problem, Rollout
from prmtree.engine.rollout import parse_completion, with_verdict
from prmtree.engine.steps import Segmenter
from prmtree.engine.synthetic import generate_problems
from prmtree.engine.tree import ReasoningTree
from prmtree.policies.simulated import SimulatedPolicy


def _plain_evidence(decider, tree, ids):
    """References and likelihoods as the rule defines them, computed without any memo."""
    root = tree.stats(tree.root)
    reference = (root.n_rollouts, root.n_correct) if root.measured else (0, 0)
    references, loglik = [], []
    for s in map(tree.stats, ids):
        references.append(reference)
        if not s.measured:
            loglik.append((0.0, 0.0))
        elif s.terminal and s.n_correct == 0:
            loglik.append((-math.inf, 0.0))
        else:
            loglik.append(log_likelihoods.__wrapped__(s.n_rollouts, s.n_correct, decider.floor, reference))
            if not s.terminal:
                reference = (s.n_rollouts, s.n_correct)
    return references, loglik


def _plain_next(decider, tree, ids):
    """The planner's choice (``next_to_sample``) written plainly, as before the memo."""
    stats = [tree.stats(n) for n in ids]
    references, loglik = _plain_evidence(decider, tree, ids)
    plan = PathPlan(change_points(loglik, decider.hazard), decider.floor, decider.confidence)
    if all(decide(p, decider.confidence) != UNDECIDED for p in plan.right):
        return None
    candidates = []
    for c, s in enumerate(stats):
        if s.terminal or s.n_rollouts >= decider.cap:
            continue
        b = min(decider.batch, decider.cap - s.n_rollouts)
        gain = plan.information_gain(c, s.n_rollouts, s.n_correct, b, references[c]) / b
        if gain > 1e-9:
            candidates.append((gain, c, b))
    if not candidates:
        return None
    candidates.sort(key=lambda g: (-g[0], -g[1]))
    if not any(s.measured and not s.terminal for s in stats) or decider.min_yield <= 0:
        return ids[candidates[0][1]], candidates[0][2]
    now = plan._labelled(0, 1.0, 1.0)  # labelled_now
    for _, c, b in candidates:
        s, r = stats[c], b
        while True:  # expected_labels, outcome by outcome through _labelled
            wrong_mass = plan.wrong_mass[c]
            expected = 0.0
            for p_r, p_w in _predictive(s.n_rollouts, s.n_correct, r, plan.floor, references[c]):
                px = (1.0 - wrong_mass) * p_r + wrong_mass * p_w
                if px > 0:
                    expected += px * plan._labelled(c, p_w / px, p_r / px)
            if expected - now >= decider.min_yield * r:
                return ids[c], b
            if s.n_rollouts + r >= decider.cap:
                break
            r = min(2 * r, decider.cap - s.n_rollouts)
    return None


def _random_tree(rng, depth):
    tree = ReasoningTree(f"p{rng.random()}")
    tree.record(tree.root, 8, rng.randint(1, 7))
    ids = tree.add_path(tree.root, [f"step {i} {rng.random()}" for i in range(depth)], terminal=rng.random() < 0.5)
    for node in ids:
        n = rng.choice([0, 0, 4, 4, 8, 12, 32])
        if n:
            tree.record(node, n, rng.randint(0, n))
    return tree, ids


@pytest.mark.parametrize("answer", ["yes", "B", "42"])
def test_memoised_evidence_and_plans_equal_the_plain_computation(answer):
    rng = random.Random(21)
    problem = Problem(id="p", question="q", answer=answer, answer_type="choice" if answer == "B" else "auto")
    decider = CalibratedDecider(problem, LabelsConfig())
    for _ in range(150):
        tree, ids = _random_tree(rng, rng.randint(1, 12))
        for _ in range(2):  # the second time from the memo
            references, loglik = _plain_evidence(decider, tree, ids)
            posteriors = first_error_posterior(loglik, decider.hazard)
            evidence = decider.along(tree, ids)
            assert [ev.posterior for ev in evidence] == posteriors  # bit for bit
            assert [ev.parent_value for ev in evidence] == [r[1] / r[0] if r[0] else None for r in references]
            assert decider.along(tree, ids, last_only=True) == evidence[-1:]
            assert decider.node(tree, ids[-1]) == evidence[-1]
            assert decider.decided(tree, ids) == path_verdict(evidence)
            assert decider.next_to_sample(tree, ids, 8) == _plain_next(decider, tree, ids)


def test_the_trees_count_keys_follow_its_stats():
    tree = ReasoningTree("p")
    ids = tree.add_path(tree.root, ["a", "b"])
    assert tree.counts(ids) == ((0, 0, False), (0, 0, False))
    tree.record(ids[1], 4, 3)
    tree.add_path(tree.root, ["a", "b"], terminal=True)  # the same step, now with a final answer
    tree.record(ids[1], 4, 1)
    assert tree.counts(ids) == ((0, 0, False), (8, 4, True))
    assert [(s.n_rollouts, s.n_correct, s.terminal) for s in map(tree.stats, ids)] == list(tree.counts(ids))


def test_a_verdict_keeps_every_other_field_of_its_rollout():
    r = Rollout(("a", "b"), "42", False, 17, "stop", "undecodable")
    assert with_verdict(r, True) == replace(r, correct=True)
    assert with_verdict(r, False) is r
    assert {f.name for f in fields(Rollout)} == {"steps", "answer", "correct", "num_tokens", "finish_reason",
                                                 "malformed", "joins_last"}  # with_verdict copies each one by name


class _CountingSplit:
    """The built-in reader, counting its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, text, depth=0):
        self.calls += 1
        return Segmenter("blank_line").split(text, depth)


def _texts(rng, n):
    pieces = ["Step 1: x = 3.", "So y = 4", "\\boxed{7}", "The answer is \\boxed{B}.", "I think it is 12.",
              "Maybe 5 or 6.", "---", "**Answer:**", "1.", "- item", "$$x$$", "e.g.", "\n", "\n\n", " ", "\t",
              "\x1c", "\u2028", "\u00a0", "\u3000", "\r\n", "\\fbox{2}", "Therefore, \\boxed{\\frac{1}{2}}"]
    return ["".join(rng.choice(pieces) + rng.choice(["", " ", "\n", "\n\n"]) for _ in range(rng.randint(0, 9)))
            for _ in range(n)]


def test_the_built_in_reader_gives_a_step_to_every_text_with_a_non_space_character():
    """What deferring the split rests on (Segmenter.steps_any_text): a text is ``empty``
    exactly when it is whitespace, at every depth and step bound."""
    rng = random.Random(5)
    for max_steps in (None, 1, 3, 12):
        segmenter = Segmenter("blank_line", max_steps)
        assert segmenter.steps_any_text
        for text in _texts(rng, 3000):
            for depth in (0, 2, 11):
                assert bool(segmenter.split(text, depth)) == bool(text.strip()), (text, depth)
    assert not Segmenter(lambda text: text.split("\n")).steps_any_text  # a custom splitter: unknown
    assert not Segmenter("tags").steps_any_text

    class Letters(Segmenter):  # its own split may drop a step the built-in reader keeps
        def split(self, text, depth=0):
            return [s for s in super().split(text, depth) if any(c.isalnum() for c in s)]

    assert not Letters("blank_line").steps_any_text
    assert parse_completion(Problem("p", "q", "7"), "---", 3, "stop", Letters("blank_line"), None).malformed == "empty"


def test_a_deferred_parse_is_the_eager_one():
    """The built-in reader splits a whole solution when its steps are first read; every
    field, the verdict, equality, hashing, copies and pickles are those of the eager rollout
    with the same steps. Its answer is the whole text's, as :func:`prmtree.grade` reads it."""
    rng = random.Random(8)
    builtin = Segmenter("blank_line")
    problems = [Problem("p", "q", "7"), Problem("c", "Which? (A) 1 (B) 2", "B", answer_type="choice")]
    kinds = set()
    for text in _texts(rng, 4000):
        for problem in problems:
            found = find_answer(text, problem.answer, None, problem.answer_type == "choice")
            for finish in ("stop", "length"):
                a = parse_completion(problem, text, 9, finish, builtin, None)
                b = Rollout(tuple(builtin.split(text)), a.answer, a.correct, 9, finish, a.malformed)
                kinds.add("_split" in a.__dict__)
                assert a.has_steps == b.has_steps
                c = pickle.loads(pickle.dumps(a))  # before the steps are read: the text travels
                assert (a, hash(a), repr(a)) == (b, hash(b), repr(b)) == (c, hash(c), repr(c))
                assert with_verdict(a, True) == replace(b, correct=True) == with_verdict(copy.copy(a), True)
                if finish == "stop" and a.malformed != "empty":
                    assert a.answer == (None if found.refused else found.answer), text
    assert kinds == {True, False}  # deferred, and eager (empty)


def test_a_deferred_rollout_splits_once_and_only_when_its_steps_are_read():
    split = _CountingSplit()
    r = Rollout.deferred(split, "Step 1: x = 3.\n\nSo \\boxed{3}.", 0, "3", False, 9, "stop")
    right = with_verdict(r, True)
    assert (r.has_steps, right.has_steps, r.answer, right.correct, split.calls) == (True, True, "3", True, 0)
    assert r.steps == ("Step 1: x = 3.", "So \\boxed{3}.") and r.steps is r.steps
    assert split.calls == 1 and "_split" not in r.__dict__
    assert right.steps == r.steps and split.calls == 2  # the copy keeps its own text
    with pytest.raises(AttributeError, match="has no attribute 'stpes'"):
        r.stpes  # noqa: B018


def test_threads_reading_a_deferred_rollouts_steps_at_once_get_one_tuple():
    import sys
    import threading

    text = "\n\n".join(f"Step {i}: x = {i} + 1 = {i + 1}." for i in range(3000)) + " \\boxed{1}"
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(20):
            r = Rollout.deferred(Segmenter("blank_line").split, text, 0, "1", False, 9, "stop")
            start, seen, errors = threading.Barrier(4), [], []

            def read(r=r, start=start, seen=seen, errors=errors):
                start.wait()
                try:
                    seen.append(r.steps)
                except Exception as exc:  # noqa: BLE001 - the failure under test
                    errors.append(exc)

            threads = [threading.Thread(target=read) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert errors == [] and len(seen) == 4 and all(s is r.steps for s in seen)
            assert len(r.steps) == 3000
    finally:
        sys.setswitchinterval(interval)


def test_a_thread_whose_lookup_missed_while_another_split_the_steps_gets_them():
    # the interleaving CI hit once: this thread's attribute lookup missed ``steps``, then
    # another thread split them, stored them and dropped ``_split``, then this thread's
    # __getattr__ ran (before: AttributeError)
    r = Rollout.deferred(Segmenter("blank_line").split, "Step 1: a.\n\nStep 2: b.", 0, "1", False, 9, "stop")
    steps = r.steps
    assert "_split" not in r.__dict__
    assert r.__getattr__("steps") is steps


def test_omega_reads_the_steps_of_its_selected_candidates_only(tmp_path, monkeypatch):
    """A search reads the steps of the rollouts that enter its tree, not every wrong one."""
    counted = _CountingSplit()
    made = []
    original = Rollout.deferred.__func__

    def deferred(cls, split, *args):
        made.append(1)
        return original(cls, counted, *args)

    monkeypatch.setattr(Rollout, "deferred", classmethod(deferred))
    stats = prmtree.run(generate_problems(6, seed=2), policy=SimulatedPolicy(), out=tmp_path,
                        config={"search": {"k": 4, "budget": 64}})
    assert stats.rollouts > 0 and len(made) > 0.8 * stats.rollouts
    assert 0 < counted.calls < 0.25 * len(made)


def test_the_lazy_look_ahead_gives_every_step_in_the_full_sorts_order():
    """The planner looks ahead at steps in the order of an entropy bound and gives a step out
    once its gain beats every bound left (deciders._most_informative): the whole order, not
    only its first step, is the one sorting every step's exact gain gives, and the bound holds."""
    from prmtree.engine.deciders import _most_informative, _weights

    rng = random.Random(2121)
    decider = CalibratedDecider(Problem(id="p", question="q", answer="yes"), LabelsConfig())
    compared = longer = 0
    for _ in range(400):
        tree, ids = _random_tree(rng, rng.randint(1, 14))
        root = tree.stats(tree.root)
        sig = tree.counts(ids)
        references, weights = _weights(root.n_rollouts, root.n_correct, sig, decider.floor, decider.hazard)
        plan = PathPlan(weights, decider.floor, decider.confidence)
        full = []
        for c, (n, k, terminal) in enumerate(sig):
            if terminal or n >= decider.cap:
                continue
            b = min(decider.batch, decider.cap - n)
            gain = plan.information_gain(c, n, k, b, references[c])
            assert gain <= plan.most_gain(c, n, k, b, references[c])  # the bound the lazy order relies on
            if gain / b > 1e-9:
                full.append((gain / b, c, b))
        full.sort(key=lambda g: (-g[0], -g[1]))
        lazy = list(_most_informative(plan, sig, references, decider.batch, decider.cap))
        assert lazy == [(c, b) for _, c, b in full]
        compared += 1
        longer += len(full) > 2
    assert compared == 400 and longer > 100  # many paths with several steps to order


def _full_sort_choice(root_n, root_k, sig, floor, hazard, confidence, batch, cap):
    """The planner's first choice the slow way: every step's exact gain, the largest (ties:
    the deeper step), none under 1e-9 nats per rollout."""
    from prmtree.engine.deciders import _weights

    references, weights = _weights(root_n, root_k, sig, floor, hazard)
    plan = PathPlan(weights, floor, confidence)
    if plan.all_decided():
        return None
    gains = []
    for c, (n, k, terminal) in enumerate(sig):
        if terminal or n >= cap:
            continue
        b = min(batch, cap - n)
        gain = plan.information_gain(c, n, k, b, references[c]) / b
        if gain > 1e-9:
            gains.append((gain, c, b))
    return max(gains)[1:] if gains else None


def test_the_lazy_planner_chooses_what_the_full_sort_chooses_far_in_the_tails():
    """Far in a tail (0 of 45 right at step 3, 59 of 60 before it) the likelihoods are
    tiny: the entropy bound must still never cut off the step the full sort would choose
    (a reviewer's fuzzing found one where rounding left the predictive off one; with the
    tails now summed directly that case chooses nothing, as the full sort does: a later
    58 of 58 has decided it)."""
    from prmtree.engine.deciders import _next_to_sample

    F = False
    args = (8, 4, ((60, 59, F), (33, 33, F), (45, 44, F), (45, 0, F), (58, 58, F), (65, 62, F), (65, 27, F)),
            0.25, 0.9, 0.9, 4, 64)
    assert _next_to_sample.__wrapped__(*args, 0.0) == _full_sort_choice(*args) is None
    rng = random.Random(5)
    chosen = 0
    for _ in range(400):
        m = rng.randint(1, 8)
        sig = []
        for _ in range(m):
            n = rng.choice([0, 4, 8, rng.randint(1, 64)])
            rate = rng.choice([0.0, 0.05, 0.3, 0.7, 0.97, 1.0])
            sig.append((n, sum(rng.random() < rate for _ in range(n)), False))
        args = (8, rng.randint(0, 8), tuple(sig), rng.choice([0.02, 0.25, 0.5]), rng.choice([0.1, 0.3]),
                rng.choice([0.9, 0.96]), 4, 64)
        expected = _full_sort_choice(*args)
        assert _next_to_sample.__wrapped__(*args, 0.0) == expected, args
        chosen += expected is not None
    assert 100 < chosen < 400  # both answers are tested


def test_all_decided_by_bisection_is_the_step_by_step_check():
    """The planner's "every step decided" check bisects the path's posteriors (they never
    increase along it); it must agree with deciding each step, on paths whose steps are
    right, wrong, undecided or stated wrong outright, at several confidences."""
    rng = random.Random(11)
    agree = every = 0
    for _ in range(20_000):
        m = rng.randint(1, 12)
        loglik = [(rng.uniform(-30, 5), rng.uniform(-30, 5)) for _ in range(m)]
        if rng.random() < 0.2:
            loglik[rng.randrange(m)] = (-math.inf, 0.0)
        confidence = rng.choice([0.5, 0.9, 0.96, 0.99])
        plan = PathPlan(change_points(loglik, rng.choice([0.1, 0.3, 0.5])), 0.25, confidence)
        expected = all(decide(p, confidence) != UNDECIDED for p in plan.right)
        agree += plan.all_decided() == expected
        every += expected
    assert agree == 20_000
    assert 2_000 < every < 18_000  # both answers are tested


def test_a_deciders_own_node_evidence_is_used_for_every_node():
    """decide_nodes computes the calibrated rule's own-prefix evidence in one pass; a
    subclass with its own ``node`` still decides each node its way."""

    class Distrustful(CalibratedDecider):
        def node(self, tree, node):
            return None  # trusts no node's own prefix

    tree = ReasoningTree("p")
    tree.record(tree.root, 8, 4)
    a, b = tree.add_path(tree.root, ["a", "b"])
    tree.record(a, 8, 8)
    problem, labels = Problem(id="p", question="q?", answer="7"), LabelsConfig()
    nothing = lambda ids: [None] * len(ids)  # noqa: E731 - no path evidence either
    assert Distrustful(problem, labels).decide_nodes(tree, nothing) == {a: None, b: None}
    plain = CalibratedDecider(problem, labels).decide_nodes(tree, nothing)
    assert plain[a].n == 8 and plain[a].decision == "right" and plain[b].n == 0
