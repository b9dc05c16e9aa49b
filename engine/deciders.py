"""Deciders: the rule that turns a tree's counts into step decisions, behind one protocol.

Two rules, one class each:

* :class:`MCDecider` — the peers' rule (Math-Shepherd, OmegaPRM): a step is right when
  its Monte-Carlo value is above a threshold. A node is decided by its own rollouts alone,
  one batch of k each, and never asks for more.
* :class:`CalibratedDecider` — the calibrated posterior (``engine/calibration.py``): a
  path's steps are decided together from all of its counts, the answer space's chance
  floor and each step's parent rate, and nodes are sampled adaptively, in small batches,
  where they tell most about the path's first error.

Strategies and labellers ask a decider questions (how many rollouts a new node gets,
where a path needs its next batch, is this branch worth growing, what is each node's
decision) and never ask which rule it is. Pure: no I/O, deterministic.
"""

from __future__ import annotations

import functools
import heapq
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

from prmtree.engine.calibration import (
    RIGHT,
    UNDECIDED,
    WRONG,
    PathPlan,
    StepEvidence,
    chance_floor,
    change_points,
    decide,
    log_likelihoods,
    path_verdict,
    right_posteriors,
)
from prmtree.engine.records import Problem
from prmtree.engine.tree import ReasoningTree

if TYPE_CHECKING:  # the config type only: the search core's imports stay free of pydantic
    from prmtree.engine.config import LabelsConfig

#: A path's evidence, asked for again by the labeller (memoised per leaf there).
EvidenceOf = Callable[[Sequence[str]], list["StepEvidence | None"]]


class Decider(Protocol):
    """What strategies and labellers ask of a labelling rule about one problem's tree."""

    #: The provenance ``source`` of a step this rule decided from its own counts.
    source: str

    def first_batch(self, k: int) -> int:
        """Rollouts for a new node's first value estimate (``k``: the search's own)."""
        ...

    def reference_batch(self, k: int) -> int:
        """Rollouts the root needs before its children can be decided (0: none)."""
        ...

    def node(self, tree: ReasoningTree, node: str) -> StepEvidence | None:
        """A node's evidence from its own prefix (what a search knows when it is there)."""
        ...

    def along(self, tree: ReasoningTree, ids: Sequence[str], last_only: bool = False) -> list[StepEvidence | None]:
        """Evidence for each step of a path from the root (node ids, the root excluded)."""
        ...

    def decided(self, tree: ReasoningTree, ids: Sequence[str]) -> str:
        """The path as a whole: RIGHT, WRONG (decided down to a first error) or UNDECIDED."""
        ...

    def next_to_sample(self, tree: ReasoningTree, ids: Sequence[str], k: int) -> tuple[str, int] | None:
        """(node, rollouts): where the path needs its next batch for its labels; None when
        it needs none."""
        ...

    def worth_growing(self, tree: ReasoningTree, node: str) -> bool:
        """Whether a search should grow the tree below ``node``."""
        ...

    def worth_deepening(self, tree: ReasoningTree, node: str) -> bool:
        """Whether a step-by-step search (mcts) should expand ``node``: deeper steps of a
        path can decide the steps above them."""
        ...

    def locate(self, tree: ReasoningTree, ids: Sequence[str], start: int, k: int) -> FirstErrorSearch:
        """A search for the first error of the path ``ids`` (from the root; the steps before
        ``start`` are known right, the last step known wrong)."""
        ...

    def decide_nodes(self, tree: ReasoningTree, along: EvidenceOf) -> dict[str, StepEvidence | None]:
        """Every node's decision (the nodes table and preference pairs)."""
        ...


class FirstErrorSearch(Protocol):
    """Locating one path's first error, a batch at a time (OmegaPRM's inner loop)."""

    def next(self) -> tuple[str, int] | None:
        """(node, rollouts) to sample next; None once the search is over."""
        ...

    def observed(self, node: str) -> None:
        """``node``'s batch has been recorded in the tree."""
        ...

    def first_error(self) -> int | None:
        """The position (from the root) of the path's first wrong step; None if not placed."""
        ...


class Bisection:
    """OmegaPRM's binary search, for a rule that decides each step by its own rollouts:
    ``path[:lo]`` is known right, ``path[:hi]`` known wrong; the midpoint gets k rollouts
    and its own decision moves one bound (a step decided right: the error is later)."""

    def __init__(self, decider: MCDecider, tree: ReasoningTree, ids: Sequence[str], start: int, k: int) -> None:
        self.decider, self.tree, self.k = decider, tree, k
        self.start = start
        self.path = ids[start:]
        self.lo, self.hi = 0, len(self.path)

    def _midpoint(self) -> str:
        return self.path[(self.lo + self.hi) // 2 - 1]

    def next(self) -> tuple[str, int] | None:
        return None if self.hi - self.lo <= 1 else (self._midpoint(), self.k)

    def observed(self, node: str) -> None:
        if self.hi - self.lo > 1 and node == self._midpoint():
            ev = self.decider.node(self.tree, node)
            mid = (self.lo + self.hi) // 2
            if ev is not None and ev.decision == RIGHT:
                self.lo = mid
            else:
                self.hi = mid

    def first_error(self) -> int | None:
        return self.start + self.hi - 1


class PlannedSearch:
    """For a rule that decides a path as a whole: batches go where the rule's planner
    (:meth:`CalibratedDecider.next_to_sample`) says, the first error is the rule's."""

    def __init__(self, decider: Decider, tree: ReasoningTree, ids: Sequence[str], k: int) -> None:
        self.decider, self.tree, self.ids, self.k = decider, tree, ids, k

    def next(self) -> tuple[str, int] | None:
        return self.decider.next_to_sample(self.tree, self.ids, self.k)

    def observed(self, node: str) -> None:
        pass  # the planner reads the tree afresh

    def first_error(self) -> int | None:
        evidence = self.decider.along(self.tree, self.ids)  # once: the verdict and the first error
        if path_verdict(evidence) != WRONG:
            return None
        return next(j for j, ev in enumerate(evidence) if ev is not None and ev.decision == WRONG)


class MCDecider:
    """The peers' rule: right iff MC > ``threshold``, each node by its own rollouts."""

    source = "mc"
    learns_floor = False  # a threshold on each node's own value: no floor

    def __init__(self, problem: Problem | None = None, labels: LabelsConfig | None = None,
                 threshold: float = 0.0, floor: float | None = None) -> None:
        self.threshold = threshold

    def first_batch(self, k: int) -> int:
        return k

    def reference_batch(self, k: int) -> int:
        return 0  # a node is compared with the threshold, not with its parent

    def along(self, tree: ReasoningTree, ids: Sequence[str], last_only: bool = False) -> list[StepEvidence | None]:
        """Each sampled node by its own value (None where nothing was sampled)."""
        root = tree.stats(tree.root)
        parent = root.n_correct / root.n_rollouts if root.measured and root.n_rollouts else None
        out: list[StepEvidence | None] = []
        for node in ids[-1:] if last_only else ids:
            s = tree.stats(node)
            right = s.value > self.threshold
            out.append(StepEvidence(RIGHT if right else WRONG, None, s.n_rollouts, s.n_correct, parent)
                       if s.measured else None)
        return out

    def node(self, tree: ReasoningTree, node: str) -> StepEvidence | None:
        return self.along(tree, tree.path(node), last_only=True)[-1] if node != tree.root else None

    def decided(self, tree: ReasoningTree, ids: Sequence[str]) -> str:
        return path_verdict(self.along(tree, ids))

    def next_to_sample(self, tree: ReasoningTree, ids: Sequence[str], k: int) -> tuple[str, int] | None:
        """The path's first unsampled step, with k rollouts, unless a step before it is
        already decided wrong (the rule labels each step by its own value, so a path needs
        every step up to its first error sampled; its last, answered step is known)."""
        for node in ids[:-1]:
            s = tree.stats(node)
            if not s.measured:
                return node, k
            if not s.value > self.threshold:
                return None
        return None

    def worth_growing(self, tree: ReasoningTree, node: str) -> bool:
        return True  # every node is decided on its own: any branch may hold pairs

    def worth_deepening(self, tree: ReasoningTree, node: str) -> bool:
        return True

    def decide_nodes(self, tree: ReasoningTree, along: EvidenceOf) -> dict[str, StepEvidence | None]:
        return {node: self.node(tree, node) for node, _ in tree.paths()}

    def locate(self, tree: ReasoningTree, ids: Sequence[str], start: int, k: int) -> FirstErrorSearch:
        """Each step is decided by its own rollouts, so a bisection places the error."""
        return Bisection(self, tree, ids, start, k)


class CalibratedDecider:
    """The calibrated posterior over a whole path (see ``engine/calibration.py``).

    A path's steps are decided together: the change-point posterior of its first error,
    each step compared with the success rate of the step before it (the question's at
    first) and with the answer space's chance floor. Nodes are sampled in batches of
    ``labels.batch`` where the next batch tells most about the first error, up to
    ``max_rollouts_per_node``, while batches are expected to pay for themselves
    (``max_rollouts_per_step``).
    """

    source = "calibrated"
    #: The floor can be learned from the run (``engine/floors.py``): the driver pilots it.
    learns_floor = True

    def __init__(self, problem: Problem, labels: LabelsConfig, threshold: float = 0.0,
                 floor: float | None = None) -> None:
        # ``floor``: the answer space's learned floor; the chance floor until it is known
        self.floor = chance_floor(problem, labels.chance, labels.free_chance) if floor is None else floor
        self.hazard = 1.0 - labels.prior
        self.confidence = labels.confidence
        self.batch = labels.batch
        self.cap = labels.max_rollouts_per_node
        most = labels.max_rollouts_per_step
        self.min_yield = 1.0 / most if most else 0.0  # labelled steps a rollout must buy

    def first_batch(self, k: int) -> int:
        return self.batch  # more follow where they are needed

    def reference_batch(self, k: int) -> int:
        return k  # the question's own rate is the first step's reference

    def _signature(self, tree: ReasoningTree, ids: Sequence[str]) -> tuple[int, int, Signature]:
        """What a path's evidence depends on: the root's counts and each step's (rollouts,
        correct, terminal). The memoised functions below are keyed by it."""
        root = tree.stats(tree.root)
        return root.n_rollouts, root.n_correct, tree.counts(ids)

    def along(self, tree: ReasoningTree, ids: Sequence[str], last_only: bool = False) -> list[StepEvidence | None]:
        """The change-point posterior (:func:`first_error_posterior`) of every step.
        ``last_only``: the last step's evidence alone (what :meth:`node` needs)."""
        root_n, root_k, sig = self._signature(tree, ids)
        return list(_along(root_n, root_k, sig, self.floor, self.hazard, self.confidence, last_only))

    def node(self, tree: ReasoningTree, node: str) -> StepEvidence | None:
        return self.along(tree, tree.path(node), last_only=True)[-1] if node != tree.root else None

    def decided(self, tree: ReasoningTree, ids: Sequence[str]) -> str:
        root_n, root_k, sig = self._signature(tree, ids)
        return _verdict(root_n, root_k, sig, self.floor, self.hazard, self.confidence)

    def next_to_sample(self, tree: ReasoningTree, ids: Sequence[str], k: int) -> tuple[str, int] | None:
        """The step whose next batch (``batch`` rollouts, fewer below its cap) decides the
        path's labels soonest; None when there is none to take.

        A step decided right decides every step before it, and one decided wrong every
        step after it, so a path's steps are not each sampled to their own decision: the
        next batch goes where it is expected to tell most about the position of the path's
        first error, per rollout (a deep step of a right path, a step inside the stretch
        where the first error may be). None when every step is decided, when the undecided
        steps are at their cap, or — the stopping rule — when no step's batches (looking
        ahead up to its cap) are expected to label a step per ``max_rollouts_per_step``
        rollouts. A path none of whose steps has been sampled always gets its first batch.
        """
        root_n, root_k, sig = self._signature(tree, ids)
        chosen = _next_to_sample(root_n, root_k, sig, self.floor, self.hazard, self.confidence, self.batch,
                                 self.cap, self.min_yield)
        return None if chosen is None else (ids[chosen[0]], chosen[1])

    def worth_growing(self, tree: ReasoningTree, node: str) -> bool:
        """Only below a step decided right (the root included): below a wrong step every
        path's labels end at that step, below an undecided one before it."""
        return self.decided(tree, tree.path(node)) == RIGHT

    def worth_deepening(self, tree: ReasoningTree, node: str) -> bool:
        """Below a path decided right, or one still undecided whose last step is more
        likely right than wrong: its deeper steps are what can decide it (a deep step
        decided right decides every step above it). Growing only below decided paths
        left most guessable problems' trees a level or two deep, their budget unspent
        (mcts: 0.3 of yes/no problems labelled; with this, 0.9). Never below a path
        with a step decided wrong: its labels end there."""
        if node == tree.root:
            return True
        evidence = self.along(tree, tree.path(node))
        if any(ev is not None and ev.decision == WRONG for ev in evidence):
            return False
        last = evidence[-1]
        return last is not None and last.posterior is not None and last.posterior >= 0.5

    def decide_nodes(self, tree: ReasoningTree, along: EvidenceOf) -> dict[str, StepEvidence | None]:
        """Every node from the paths through it, as its steps are labelled — a step decided
        right by a later step of one path is right — taking the most confident of its
        paths' posteriors (its own prefix's when no path below it says more)."""
        nodes = {node: self.node(tree, node) for node, _ in tree.paths()}
        for leaf in tree.leaves():
            ids = tree.path(leaf)
            for node, ev in zip(ids, along(ids)):
                now = nodes.get(node)
                if ev is not None and (now is None or abs(ev.posterior - 0.5) > abs(now.posterior - 0.5)):
                    nodes[node] = ev
        return nodes

    def locate(self, tree: ReasoningTree, ids: Sequence[str], start: int, k: int) -> FirstErrorSearch:
        """A step's decision depends on the whole path: the planner places the error."""
        return PlannedSearch(self, tree, ids, k)

    def shown_wrong(self, tree: ReasoningTree, nodes: Iterable[str]) -> set[str]:
        """Those of ``nodes`` whose counts show them wrong even if every step before them
        were right: on some path through the node (its own prefix, or down to a leaf below
        it), P(the path's first error is at the node | none before it) >= ``confidence``;
        for a node with nothing below it, P(first error at it or at its parent | none
        before the parent).

        P(step j wrong) is P(first error before j) + P(first error at j). Where the steps
        before j are decided right, the first term is bounded by their evidence; where
        they are not (steps left undecided: unsampled, or counts that tell little), it is
        mostly the prior's: its hazard (a conservative prior, not a measured error rate)
        puts an error somewhere in a stretch of k such steps at 1 - prior^k, and a step
        after the stretch is decided wrong whatever the solution is, its own counts (or
        none) notwithstanding. The conditional leaves that term out: a lower bound on
        P(step j wrong) that rests on the counts at and after the step (a wrong final answer
        below it shows an error at it or after it, not where), against one step's hazard.

        A node with nothing below it (mcts: a path with a wrong step is never expanded, and
        rollouts are counts, not paths) has only its own counts, measured against its
        parent's, mostly one batch. Assuming that parent right leaves out the other
        explanation of the node's failures (the parent wrong, the node then wrong too) and
        lets a right node keep the parent's uncertain rate: at a floor of 0.2, 1 of 32 below
        a parent's 2 of 4 stays at 0.956, short of 0.96 at the node's cap. So its test takes
        the parent in: two steps' hazard, at most 0.51 (prior 0.7) without counts, and only for
        a leaf with rollouts of its own (else its prior hazard could tip an undecided parent's
        counts into a False that rests on the prior). Nodes with
        steps below keep the one-step test (the parent taken in there brought wrong labels
        back for omega and shepherd)."""
        wanted = set(nodes)
        shown: set[str] = set()
        if not wanted:
            return shown
        paths = [tree.path(node) for node in wanted]
        paths += [ids for ids in (tree.path(leaf) for leaf in tree.leaves()) if wanted.intersection(ids)]
        for ids in paths:
            root_n, root_k, sig = self._signature(tree, ids)
            _, weights = _weights(root_n, root_k, sig, self.floor, self.hazard)
            after = None
            for j, node in enumerate(ids):
                if node not in wanted or node in shown:
                    continue
                if after is None:
                    after = right_posteriors(weights)  # after[j]: P(first error after j)
                # (a leaf without rollouts of its own has only the prior to add: never so)
                start = j - 1 if j and not tree.children(node) and tree.stats(node).n_rollouts else j
                from_start = weights[start] + after[start]  # P(first error at start or after)
                if from_start > 0 and decide(after[j] / from_start, self.confidence) == WRONG:
                    shown.add(node)
        return shown


# -- the calibrated rule's path computations, memoised --------------------------------
#
# A path's evidence and its planner's choice are pure functions of its counts (the root's
# and each step's rollouts, correct and terminal flag) and the rule's settings, and the
# same counts come back again and again: the labeller and the searches ask for the same
# path between two batches, omega's selection asks for every candidate's state, and
# problems of one answer space share small count patterns (a fresh step, a first batch
# of 4). Keyed by the counts, each is computed once; the arithmetic is the one it was, so
# every decision and posterior is bit for bit the same. Sized for a long run's working set
# (count patterns recur across problems far apart): 2^16 paths each cut the driver's CPU per
# rollout by 8-13% against 2^15 / 2^14 at 2,000 problems, for ~125 MB once full
# (benchmarks/README.md, section 2).

#: (rollouts, correct, terminal) of each step of a path, from its first step.
Signature = tuple[tuple[int, int, bool], ...]


@functools.lru_cache(maxsize=1 << 16)
def _weights(root_n: int, root_k: int, sig: Signature, floor: float,
             hazard: float) -> tuple[tuple[tuple[int, int], ...], tuple[float, ...]]:
    """Each step's reference (the counts a right step keeps) and the path's change-point
    weights (:func:`change_points`) from each step's (log P(counts | right), log P(counts |
    wrong)). Tuples: the collector stops tracking a memoised tuple of floats the first time
    it sees one, where a list would be rescanned as long as the memo keeps it."""
    reference = (root_n, root_k) if root_n > 0 else (0, 0)
    references, loglik = [], []
    for n, k, terminal in sig:
        references.append(reference)
        if n <= 0:  # not sampled: no evidence
            loglik.append((0.0, 0.0))
            continue
        if terminal and k == 0:  # it states a wrong final answer: wrong, exactly
            loglik.append((-math.inf, 0.0))
            continue
        loglik.append(log_likelihoods(n, k, floor, reference))
        if not terminal:
            reference = (n, k)
    return tuple(references), tuple(change_points(loglik, hazard))


@functools.lru_cache(maxsize=1 << 16)
def _along(root_n: int, root_k: int, sig: Signature, floor: float, hazard: float, confidence: float,
           last_only: bool) -> tuple[StepEvidence, ...]:
    """:meth:`CalibratedDecider.along` for a path's counts (StepEvidence is immutable: shared)."""
    references, weights = _weights(root_n, root_k, sig, floor, hazard)
    if last_only:  # the last step's posterior alone: right_posteriors' last value
        steps = zip(sig[-1:], references[-1:], [min(weights[-1], 1.0)] if sig else [])
    else:
        steps = zip(sig, references, right_posteriors(weights))
    return tuple(
        StepEvidence(decide(post, confidence), post, n, k, ref[1] / ref[0] if ref[0] else None)
        for (n, k, _), ref, post in steps
    )


@functools.lru_cache(maxsize=1 << 14)
def _verdict(root_n: int, root_k: int, sig: Signature, floor: float, hazard: float, confidence: float) -> str:
    """:meth:`CalibratedDecider.decided` for a path's counts (omega asks it of every
    candidate's state at each selection)."""
    return path_verdict(_along(root_n, root_k, sig, floor, hazard, confidence, False))


@functools.lru_cache(maxsize=1 << 16)
def _next_to_sample(root_n: int, root_k: int, sig: Signature, floor: float, hazard: float, confidence: float,
                    batch: int, cap: int, min_yield: float) -> tuple[int, int] | None:
    """:meth:`CalibratedDecider.next_to_sample` for a path's counts: (position, rollouts)."""
    references, weights = _weights(root_n, root_k, sig, floor, hazard)
    plan = PathPlan(weights, floor, confidence)
    if plan.all_decided():
        return None
    candidates = _most_informative(plan, sig, references, batch, cap)
    fresh = not any(n > 0 and not terminal for n, _, terminal in sig)
    if fresh or min_yield <= 0:
        return next(candidates, None)
    now = plan.labelled_now()
    for c, b in candidates:  # the most informative step whose batches pay
        n, k, _ = sig[c]
        r = b
        while True:  # b, 2b, 4b, ... rollouts there, up to its cap
            more = plan.expected_labels(c, n, k, r, references[c]) - now
            if more >= min_yield * r:
                return c, b
            if n + r >= cap:
                break
            r = min(2 * r, cap - n)
    return None


def _most_informative(plan: PathPlan, sig: Signature, references: tuple[tuple[int, int], ...], batch: int,
                      cap: int) -> Iterator[tuple[int, int]]:
    """The steps worth a batch, as (position, rollouts), by information per rollout, most
    first (ties: the deeper step); a step that would tell less than 1e-9 nats per rollout
    is left out.

    Lazily: a batch at step c can tell at most H(step c wrong), the entropy of the one
    thing its outcomes depend on (:meth:`PathPlan.most_gain`; no bound where rounding left
    the step's predictive off one), so steps are looked ahead in
    the order of that bound, and a step is given out once its exact gain beats the bound
    of every step not yet looked at. The order is the one a full sort gives; a caller that
    stops at the first step (most do) looks ahead at about a third of the steps."""
    bounds = []  # (bound on information per rollout, position, rollouts)
    for c, (n, k, terminal) in enumerate(sig):
        if terminal or n >= cap:
            continue
        b = min(batch, cap - n)
        bound = plan.most_gain(c, n, k, b, references[c]) / b
        if bound > 1e-9:
            bounds.append((bound, c, b))
    bounds.sort(reverse=True)
    ready: list[tuple[float, int, int]] = []  # a heap of (-gain, -position, rollouts), looked at
    i = 0
    while i < len(bounds) or ready:
        while i < len(bounds) and (not ready or -ready[0][0] <= bounds[i][0]):
            _, c, b = bounds[i]
            i += 1
            n, k, _ = sig[c]
            gain = plan.information_gain(c, n, k, b, references[c]) / b
            if gain > 1e-9:
                heapq.heappush(ready, (-gain, -c, b))
        if ready:
            _, c, b = heapq.heappop(ready)
            yield -c, b
