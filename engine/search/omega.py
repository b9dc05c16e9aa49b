"""OmegaPRM (Luo et al., 2024): binary search for the first error, chosen by Q + U.

k rollouts at the root estimate its value. Every wrong rollout from a node whose value
is strictly between 0 and 1 enters a pool of candidates (prefix node s, rollout r).
Each round takes the candidate with the highest

    Q(s, r) = alpha ** (1 - MC(s)) * beta ** (len(r) / L)
    U(s)    = c_puct * sqrt(sum of all visit counts) / (1 + N(s))

and binary-searches r for its first wrong step: the midpoint prefix gets k rollouts;
MC > 0 (the ``mc`` labelling method, the paper's rule) means the error is to the
right, MC = 0 to the left. Every checked prefix becomes a node with its MC, and its own
wrong rollouts join the pool if its value is strictly between 0 and 1. Search stops at
the search limit, the rollout budget, or an empty pool. Roots that are all correct or
all wrong carry no step signal and are recorded as skipped.

Where the first error is, the labelling rule's decider says (:meth:`Decider.locate`).
Under the mc rule that is the paper's bisection above. Under an adaptive labelling
method (``calibrated``, ``consensus``) a step is decided from the counts of its whole
path, and the binary search becomes a search over that path's posterior: each batch (of the method's ``batch`` rollouts) goes to the step of
s + r where it tells most about the first error (:meth:`Decider.next_to_sample`: in
effect a bisection that prefers deep steps, since a step decided right decides every
step before it), earlier rollouts at a node are reused, and the search ends when the
path is decided or no batch is worth its price. Only candidates whose state s is
decided right are searched: below a wrong state the first error is already known, below
an undecided one it cannot be placed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prmtree.engine.deciders import Decider, FirstErrorSearch
from prmtree.engine.records import Problem, Rollout
from prmtree.engine.search.base import RolloutRequest, TreeSearch

if TYPE_CHECKING:
    from prmtree.engine.config import SearchConfig


@dataclass
class _Candidate:
    state: str  # node id of the prefix the rollout was sampled from
    rollout: Rollout
    order: int  # insertion order: deterministic tie-breaks


@dataclass
class _InHand:
    """The candidate being searched: its rollout's path and the decider's search over it."""

    leaf: str  # the rollout's last node (its wrong answer)
    search: FirstErrorSearch


@dataclass(frozen=True)
class FoundError:
    """A located first error: ``steps`` from the root, the first wrong one at ``index``."""

    steps: tuple[str, ...]
    index: int


class OmegaSearch(TreeSearch):
    name = "omega"

    settings = ("alpha", "beta", "length_scale", "c_puct", "search_limit", "paths_in_flight")

    def __init__(self, problem: Problem, config: SearchConfig, decider: Decider | None = None) -> None:
        super().__init__(problem, config, decider)
        self.alpha = config.alpha
        self.beta = config.beta
        self.length_scale = config.length_scale
        self.c_puct = config.c_puct
        self.search_limit = config.search_limit
        self.paths_in_flight = config.paths_in_flight
        self.pool: list[_Candidate] = []
        self.visits: dict[str, int] = {}
        self.searches = 0
        self.found: list[FoundError] = []
        self._order = 0
        self._started = False
        self._hand: list[_InHand] = []  # the searches under way, in the order they started
        self._pending: list[RolloutRequest] = []  # the wave sent, answered in issue order
        self._finished = False

    # -- the state machine ----------------------------------------------------------

    def next_requests(self) -> list[RolloutRequest]:
        """The next wave: the root's batch first, then one batch from each search in hand
        (up to ``paths_in_flight`` of them; one with the paper's loop). The wave is a
        function of the tree alone, so rows never depend on when its answers arrive."""
        if self._finished or self._pending:
            return []
        if not self._started:
            self._started = True
            if not self.can_afford(self.k):
                self._finished = True
                self.stats.skipped = "budget below k"
                return []
            self._pending = [self.request(self.tree.root, self.k)]
            return list(self._pending)
        wave: list[RolloutRequest] = []
        asked: set[str] = set()
        i = 0
        while True:
            while len(self._hand) < self.paths_in_flight and self._select():
                pass
            if i >= len(self._hand):
                break
            current = self._hand[i]
            nxt = current.search.next()
            if nxt is None:
                self._conclude(current)  # its slot goes to the next candidate, searched in this wave
                continue
            if nxt[0] in asked:  # another search in hand samples that node now: this one waits a wave
                i += 1
                continue
            if not self.can_afford(nxt[1], labelling=True):
                if wave:
                    break  # send what fits; the next wave finds the budget spent
                return self._out_of_budget()
            wave.append(self.request(*nxt))
            asked.add(nxt[0])
            i += 1
        if not wave and not self._hand:
            self._finished = True
        self._pending = wave
        return list(wave)

    def observe(self, request: RolloutRequest, rollouts: list[Rollout]) -> None:
        assert self._pending and self._pending[0] is request, "observe() must answer the wave's requests in order"
        self._pending.pop(0)
        n, correct = self.record(request.node_id, rollouts)
        node = request.node_id
        value = correct / n if n else 0.0
        if node == self.tree.root:
            if correct == n:
                self.stats.skipped = "root all correct"
            elif correct == 0:
                self.stats.skipped = "root all wrong"
            if correct in (0, n):
                self._finished = True  # no step signal: recorded in the nodes table only
                return
        if 0 < value < 1:
            self.add_candidates(node, rollouts)
        for current in self._hand:
            current.search.observed(node)

    def done(self) -> bool:
        return self._finished and not self._pending

    def _out_of_budget(self) -> list[RolloutRequest]:
        self._finished = True  # an unfinished search leaves no label: drop it
        self._hand = []
        return []

    def _searchable(self, state: str) -> bool:
        """Whether candidates from ``state`` are searched: the decider says (the mc rule
        searches every one; a path-deciding rule those below a state decided right)."""
        return self.decider.worth_growing(self.tree, state)

    # -- internals ------------------------------------------------------------------

    def add_candidates(self, state: str, rollouts: list[Rollout]) -> None:
        """Every wrong, answered rollout from ``state`` becomes a candidate for a first-error search."""
        for r in rollouts:
            if not r.correct and r.has_answer and r.has_steps:
                self.pool.append(_Candidate(state, r, self._order))
                self._order += 1

    def score(self, cand: _Candidate, total_visits: int) -> float:
        """OmegaPRM's selection score Q + U: Q = alpha^(1-MC) * beta^(len/L) favours a likely
        near-miss from a good state, U = c_puct * sqrt(N) / (1 + n) favours unvisited states."""
        mc = self.tree.stats(cand.state).value
        length = cand.rollout.num_tokens or sum(len(s) for s in cand.rollout.steps) / 4
        q = self.alpha ** (1 - mc) * self.beta ** (length / self.length_scale)
        u = self.c_puct * math.sqrt(total_visits) / (1 + self.visits.get(cand.state, 0))
        return q + u

    def _select(self) -> bool:
        """Start a binary search on the best candidate; False when none is left."""
        if not self.pool or self.searches >= self.search_limit:
            return False
        total = sum(self.visits.values())
        searchable: dict[str, bool] = {}
        for c in self.pool:
            if c.state not in searchable:
                searchable[c.state] = self._searchable(c.state)
        pool = [c for c in self.pool if searchable[c.state]]
        if not pool:
            return False
        best = max(pool, key=lambda c: (self.score(c, total), -c.order))
        self.pool.remove(best)
        self.visits[best.state] = self.visits.get(best.state, 0) + 1
        self.searches += 1
        path = self.add_rollout_path(best.state, best.rollout)
        ids = self.tree.path_ids(path[-1])
        self._hand.append(_InHand(path[-1], self.decider.locate(self.tree, ids, len(ids) - len(path), self.k)))
        return True

    def _conclude(self, current: _InHand) -> None:
        """The search in hand is over: record where it placed the first error, if anywhere."""
        first = current.search.first_error()
        if first is not None:
            self.found.append(FoundError(self.tree.prefix(current.leaf), first))
        self._hand.remove(current)
