"""The contract every search strategy follows, and the request record it emits.

A strategy instance owns one problem's tree. It is a pure state machine:

* ``next_requests()`` returns the next wave of :class:`RolloutRequest` (possibly empty
  only when ``done()``);
* ``observe(request, rollouts)`` folds one request's parsed rollouts in; the driver
  calls it for every request of a wave, in issue order, once the wave is complete;
* ``done()`` says the tree is finished.

No awaits, no I/O, no randomness beyond the seed: the same rollouts give the same
tree, however an executor interleaved them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prmtree.engine.deciders import Decider, MCDecider
from prmtree.engine.records import Problem, Rollout
from prmtree.engine.tree import ReasoningTree

if TYPE_CHECKING:  # the config type only: the search core's imports stay free of pydantic
    from prmtree.engine.config import SearchConfig


@dataclass(frozen=True)
class RolloutRequest:
    """``n`` rollouts from ``node_id`` (whose steps are ``prefix``)."""

    node_id: str
    prefix: tuple[str, ...]
    n: int
    next_step_only: bool = False
    batch: int = 0  # how many earlier requests this node has had: part of the seed


@dataclass
class SearchStats:
    """Counters a strategy keeps about its own work (they go to the manifest)."""

    rollouts: int = 0
    requests: int = 0
    skipped: str | None = None  # why the tree was not searched (e.g. "root all correct")
    budget_short: bool = False  # a path's labels wanted a batch its budget (and pool draw) could not pay
    root_answers: list[str | None] = field(default_factory=list)  # the root's first few extracted answers


class TreeSearch(ABC):
    """The strategy contract (see the module docstring) and its shared bookkeeping: the
    tree, the budget, and per-node batch counters.

    A strategy subclasses this, sets ``name`` and ``settings`` (the SearchConfig fields
    of its own that it reads), takes the SearchConfig whole, and implements
    ``next_requests``, ``observe`` and ``done``; registering it in
    ``engine/search/__init__.py`` makes it a ``--strategy`` choice.
    """

    name = "base"
    settings: tuple[str, ...] = ()
    #: ``[steps] max_steps``: no path grows past it. The driver merges a continuation after
    #: d steps into at most ``max_steps - d`` steps; a strategy that grows a path step by
    #: step (mcts) stops growing it there (:meth:`at_max_depth`).
    max_steps: int | None = None

    def __init__(self, problem: Problem, config: SearchConfig, decider: Decider | None = None) -> None:
        self.problem = problem
        self.config = config
        # Decides nodes for the run's labelling method; the default is the peers' mc rule.
        self.decider: Decider = decider or MCDecider()
        self.tree = ReasoningTree(problem.id)
        self.k = config.k
        self.budget = config.budget
        # Rollouts this problem may draw from the run's pool past its budget, for the labels
        # of paths already started (never to grow the tree): set by the driver.
        self.allowance = 0
        self.stats = SearchStats()
        self._batches: dict[str, int] = {}

    def request(self, node_id: str, n: int, *, next_step_only: bool = False) -> RolloutRequest:
        """A request for ``n`` rollouts at ``node_id``, counted against the budget."""
        batch = self._batches.get(node_id, 0)
        self._batches[node_id] = batch + 1
        self.stats.rollouts += n
        self.stats.requests += 1
        return RolloutRequest(node_id, self.tree.prefix(node_id), n, next_step_only, batch)

    @abstractmethod
    def next_requests(self) -> list[RolloutRequest]:
        """The next wave of requests; empty only when ``done()``."""

    @abstractmethod
    def observe(self, request: RolloutRequest, rollouts: list[Rollout]) -> None:
        """Fold one request's parsed rollouts in (called in issue order)."""

    @abstractmethod
    def done(self) -> bool:
        """The tree is finished."""

    @property
    def first_batch(self) -> int:
        """Rollouts for a node's first value estimate: k under the mc rule (the papers'),
        the labelling method's batch under an adaptive one (more follow where needed)."""
        return self.decider.first_batch(self.k)

    def sample_paths(self, paths: list[list[str]], *, fill: bool = False) -> tuple[list[RolloutRequest], list[int]]:
        """One wave of the decider's sampling: for each path (node ids from the root) that
        needs more rollouts for its labels, one batch where the decider wants it
        (:meth:`Decider.next_to_sample`); a node several paths ask for is sampled once.

        At a batch the budget cannot pay for, the wave ends there, or with ``fill`` that
        path waits and later paths' (smaller) batches may still fit. Returns the wave and
        the positions of the paths that wanted a batch (whether or not they got one).
        """
        wave: list[RolloutRequest] = []
        asked: set[str] = set()
        wanting: list[int] = []
        for i, ids in enumerate(paths):
            nxt = self.decider.next_to_sample(self.tree, ids, self.k)
            if nxt is None:
                continue
            wanting.append(i)
            if nxt[0] in asked:
                continue
            if not self.can_afford(nxt[1], labelling=True):
                if fill:
                    continue
                break
            asked.add(nxt[0])
            wave.append(self.request(*nxt))
        return wave, wanting

    def at_max_depth(self, node_id: str, below: int = 0) -> bool:
        """Whether ``node_id`` is ``below`` steps or fewer above ``max_steps``' depth."""
        return self.max_steps is not None and self.tree.stats(node_id).depth + below >= self.max_steps

    def can_afford(self, n: int, *, labelling: bool = False) -> bool:
        """Whether ``n`` more rollouts fit the budget; ``labelling``: they serve the labels
        of a path already started, which may also draw on the pool (:attr:`allowance`)."""
        if self.stats.rollouts + n <= self.budget:
            return True
        if not labelling:
            return False
        if self.stats.rollouts + n <= self.budget + self.allowance:
            return True
        self.stats.budget_short = True
        return False

    @property
    def drawn(self) -> int:
        """Rollouts this problem took from the pool (past its own budget)."""
        return max(0, self.stats.rollouts - self.budget)

    def record(self, node_id: str, rollouts: list[Rollout]) -> tuple[int, int]:
        """Add rollout outcomes to ``node_id``'s statistics; returns (n, correct)."""
        n = len(rollouts)
        correct = sum(1 for r in rollouts if r.correct)
        self.tree.record(node_id, n, correct)
        if node_id == self.tree.root and not self.stats.root_answers:  # what a skip's example shows
            self.stats.root_answers = [r.answer for r in rollouts[:3]]
        return n, correct

    def add_rollout_path(self, node_id: str, rollout: Rollout) -> list[str]:
        """Put a whole rollout into the tree below ``node_id``.

        The last node is terminal: its outcome is known exactly, so it counts as one
        sampled rollout with the rollout's verdict.
        """
        ids = self.tree.add_path(node_id, rollout.steps, terminal=rollout.has_answer)
        if ids and rollout.has_answer:
            leaf = self.tree.stats(ids[-1])
            if leaf.n_rollouts == 0:
                self.tree.record(ids[-1], 1, int(rollout.correct))
        return ids
