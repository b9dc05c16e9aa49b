"""Step-level Monte-Carlo tree search (the tree of ViLBench's figure 1).

Each iteration selects a leaf by UCT over node values, expands it by sampling
``branching`` single next steps (identical steps merge into one child), values every
new child by k rollouts from its prefix (more small batches while the labelling method
cannot decide it; a child whose step ends the solution is valued by its own answer),
and back-propagates the children's values to the root. Siblings
with different values become step-level preference pairs.
"""

from __future__ import annotations

import math

from prmtree.engine.calibration import Decider
from prmtree.engine.config import SearchConfig
from prmtree.engine.problem import Problem
from prmtree.engine.rollout import Rollout
from prmtree.engine.search.base import RolloutRequest, TreeSearch


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
        self._expanding: str | None = None
        self._new_children: list[str] = []
        self._undecided: list[str] = []  # valued children the labelling method wants more of
        self._pending = 0
        self._finished = False

    def next_requests(self) -> list[RolloutRequest]:
        if self._finished or self._pending:
            return []
        root = self.tree.root
        if not self.decider.mc and not self.tree.stats(root).measured and self.can_afford(self.k):
            # Adaptive labelling compares a step with its parent's success rate: the
            # question's own rate is the first reference.
            self._pending = 1
            return [self.request(root, self.k)]
        if self._new_children:
            return self._value_children()
        if self._undecided:
            wave = [r for r in (self.resample(c) for c in self._undecided) if r is not None]
            self._undecided = []
            if wave:
                self._pending = len(wave)
                return wave
        while self.iterations < self.max_iterations:
            leaf = self._select()
            if leaf is None:
                break  # every branch ends in a terminal step
            if not self.can_afford(self.branching * (1 + self.k)):
                break  # expand only when the new children can all be valued
            self.iterations += 1
            self._expanding = leaf
            self._pending = 1
            return [self.request(leaf, self.branching, next_step_only=True)]
        self._finished = True
        return []

    def observe(self, request: RolloutRequest, rollouts: list[Rollout]) -> None:
        self._pending -= 1
        if request.next_step_only:
            parent = request.node_id
            self.expanded.add(parent)
            seen = set()
            for r in rollouts:
                if not r.steps:
                    continue
                child = self.tree.add_step(parent, r.steps[0], terminal=r.has_answer)
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
        if self.decider.wants_more(self.tree, request.node_id):
            self._undecided.append(request.node_id)

    def done(self) -> bool:
        return self._finished and not self._pending

    # -- internals ------------------------------------------------------------------

    def _value_children(self) -> list[RolloutRequest]:
        wave = []
        for child in self._new_children:
            if not self.can_afford(self.k):
                break
            wave.append(self.request(child, self.k))
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
        """Descend by UCT to a node that is neither expanded nor terminal."""
        node = self.tree.root
        while node in self.expanded:
            children = [c for c in self.tree.children(node) if not self._exhausted(c)]
            if not children:
                self._mark_exhausted(node)
                if node == self.tree.root:
                    return None
                node = self.tree.root  # try again from the top without the dead branch
                continue
            node = max(children, key=lambda c: self._uct(node, c))
        if self.tree.stats(node).terminal:
            self._mark_exhausted(node)
            return self._select() if node != self.tree.root else None
        return node

    def _exhausted(self, node: str) -> bool:
        return self.tree.graph.nodes[node].get("exhausted", False)

    def _mark_exhausted(self, node: str) -> None:
        self.tree.graph.nodes[node]["exhausted"] = True

    def _backpropagate(self, node: str | None, value: float) -> None:
        while node is not None:
            self.visits[node] = self.visits.get(node, 0) + 1
            self.value_sum[node] = self.value_sum.get(node, 0.0) + value
            node = self.tree.parent(node)
