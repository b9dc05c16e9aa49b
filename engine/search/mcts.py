"""Step-level Monte-Carlo tree search (the tree of ViLBench's figure 1).

Each iteration selects a leaf by UCT over node values, expands it by sampling
``branching`` single next steps (identical steps merge into one child), values every
new child by k rollouts from its prefix (a child whose step ends the solution is valued
by its own answer), and back-propagates the children's values to the root. Siblings
with different values become step-level preference pairs.

Under an adaptive labelling method (``calibrated``, ``consensus``) the root is valued
too (the first step's reference rate), a new child by the method's ``batch`` rollouts,
and each new child's path then gets more batches where they decide its steps soonest
(:meth:`Decider.next_to_sample`) until it is decided or no batch is worth its price.
Only leaves whose path is decided right, or still undecided but leaning right, are
expanded: below a wrong step every path's labels end at that step, and the deeper steps
of a path leaning right are what can decide it.

With ``[steps] max_steps`` a path never has more steps: a leaf one step short of it is
expanded by whole continuations, each merged into one final step (so that step carries
the answer), and a leaf at it is never expanded.

A next step that only states the final answer ("The answer is \\boxed{12}.", cut off by the
blank line before it) joins the leaf's own step, as a whole solution reads them: the joined
step is a new sibling of the leaf (the leaf stays, with any other children).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from prmtree.engine.deciders import Decider
from prmtree.engine.records import Problem, Rollout
from prmtree.engine.search.base import RolloutRequest, TreeSearch

if TYPE_CHECKING:
    from prmtree.engine.config import SearchConfig


class MCTSSearch(TreeSearch):
    name = "mcts"

    settings = ("branching", "c_uct", "max_iterations")

    def __init__(self, problem: Problem, config: SearchConfig, decider: Decider | None = None) -> None:
        super().__init__(problem, config, decider)
        self.branching = config.branching
        self.c_uct = config.c_uct
        self.max_iterations = config.max_iterations
        self.iterations = 0
        self.visits: dict[str, int] = {}
        self.value_sum: dict[str, float] = {}
        self.expanded: set[str] = set()
        self.exhausted: set[str] = set()  # dead branches: nothing left to expand below them
        self._expanding: str | None = None
        self._new_children: list[str] = []
        self._undecided: list[str] = []  # new children whose paths the labelling method may want more of
        self._pending = 0
        self._finished = False

    def next_requests(self) -> list[RolloutRequest]:
        if self._finished or self._pending:
            return []
        root = self.tree.root
        reference = self.decider.reference_batch(self.k)
        if reference and not self.tree.stats(root).measured and self.can_afford(reference):
            # A rule that compares a step with its parent's success rate: the question's
            # own rate is the first reference.
            self._pending = 1
            return [self.request(root, reference)]
        if self._new_children:
            return self._value_children()
        if self._undecided:
            wave = self._resolve()
            if wave:
                self._pending = len(wave)
                return wave
        while self.iterations < self.max_iterations:
            leaf = self._select()
            if leaf is None:
                break  # every branch ends in a terminal step
            if not self.can_afford(self.branching * (1 + self.first_batch)):
                break  # expand only when the new children can all be valued
            self.iterations += 1
            self._expanding = leaf
            self._pending = 1
            # one step short of max_steps: the whole rest, merged by the driver into one final step
            return [self.request(leaf, self.branching, next_step_only=not self.at_max_depth(leaf, below=1))]
        self._finished = True
        return []

    def observe(self, request: RolloutRequest, rollouts: list[Rollout]) -> None:
        self._pending -= 1
        if request.node_id == self._expanding:  # the expansion (only request in flight meanwhile)
            parent = request.node_id
            self.expanded.add(parent)
            seen = set()
            for r in rollouts:
                if not r.steps:
                    continue
                # a bare answer line joined the leaf's own step: their node is the leaf's sibling
                under = self.tree.parent(parent) if r.joins_last else parent
                child = self.tree.add_step(under, r.steps[0], terminal=r.has_answer)
                if child in seen:
                    continue
                seen.add(child)
                stats = self.tree.stats(child)
                if r.has_answer and not stats.measured:
                    self.tree.record(child, 1, int(r.correct))
                if not stats.measured:
                    self._new_children.append(child)
                else:
                    self._backpropagate(child, stats.value)
            self._expanding = None
            return
        n, correct = self.record(request.node_id, rollouts)
        if request.node_id == self.tree.root:
            return  # the reference rate only: the root is expanded, not backed up
        self._backpropagate(request.node_id, correct / n if n else 0.0)

    def done(self) -> bool:
        return self._finished and not self._pending

    # -- internals ------------------------------------------------------------------

    def _resolve(self) -> list[RolloutRequest]:
        """One more batch for each new child's path that the decider wants one for, where
        it decides the path's steps soonest; a path leaves the list once it wants none."""
        wave, wanting = self.sample_paths([self.tree.path_ids(c) for c in self._undecided], fill=True)
        self._undecided = [self._undecided[i] for i in wanting] if wave else []
        return wave

    def _value_children(self) -> list[RolloutRequest]:
        wave = []
        for child in self._new_children:
            if not self.can_afford(self.first_batch):
                break
            wave.append(self.request(child, self.first_batch))
            self._undecided.append(child)
        self._new_children = []
        if not wave:
            self._finished = True
        self._pending = len(wave)
        return wave

    def _uct(self, parent: str, child: str) -> float:
        n = self.visits.get(child, 0)
        if n == 0:
            return math.inf
        mean = self.value_sum[child] / n
        return mean + self.c_uct * math.sqrt(math.log(self.visits.get(parent, 1) + 1) / n)

    def _select(self) -> str | None:
        """Descend by UCT to a node that is neither expanded nor terminal (nor, under an
        adaptive labelling method, short of decided right)."""
        root = self.tree.root
        while True:
            node = root
            while node in self.expanded:
                children = [c for c in self.tree.children(node) if not self._exhausted(c)]
                if not children:
                    break
                node = max(children, key=lambda c: self._uct(node, c))
            if (node in self.expanded or self.tree.stats(node).terminal or self.at_max_depth(node)
                    or not self._worth_expanding(node)):
                self._mark_exhausted(node)  # a dead branch: try again from the top without it
                if node == root:
                    return None
                continue
            return node

    def _worth_expanding(self, node: str) -> bool:
        """The decider says: every leaf under the mc rule; under one that decides paths, a
        leaf whose path is decided right or leans right (:meth:`Decider.worth_deepening`)."""
        deepening = getattr(self.decider, "worth_deepening", self.decider.worth_growing)  # a custom rule may lack it
        return deepening(self.tree, node)

    def _exhausted(self, node: str) -> bool:
        return node in self.exhausted

    def _mark_exhausted(self, node: str) -> None:
        self.exhausted.add(node)

    def _backpropagate(self, node: str | None, value: float) -> None:
        while node is not None:
            self.visits[node] = self.visits.get(node, 0) + 1
            self.value_sum[node] = self.value_sum.get(node, 0.0) + value
            node = self.tree.parent(node)
