"""Math-Shepherd / VisualPRM: k completions at every step prefix, stop at the first zero.

``n_solutions`` solutions are sampled from the root. Then, wave by wave, every
solution still being checked gets k completions from its next step prefix; the first
prefix decided wrong (the paper's rule under the ``mc`` method: MC = 0) ends that
solution (later steps are labelled wrong). Prefixes shared by several solutions are one
node and are sampled once.

Under an adaptive labelling method (``calibrated``, ``consensus``) a solution's steps
are decided together from all of its counts (a step decided right decides every step
before it), so its prefixes are not walked one by one to their own decisions: each wave
gives every solution one batch (the method's ``batch`` rollouts) at the prefix where it
tells most about the solution's first error (:meth:`Decider.next_to_sample`), until the
solution is decided or no batch is worth its price.
"""

from __future__ import annotations

from prmtree.engine.calibration import Decider
from prmtree.engine.config import SearchConfig
from prmtree.engine.problem import Problem
from prmtree.engine.rollout import Rollout
from prmtree.engine.search.base import RolloutRequest, TreeSearch


class ShepherdSearch(TreeSearch):
    name = "shepherd"

    settings = ("n_solutions",)

    def __init__(self, problem: Problem, config: SearchConfig, decider: Decider | None = None) -> None:
        super().__init__(problem, config, decider)
        self.n_solutions = config.n_solutions
        self._paths: list[list[str]] = []  # node ids of each solution
        self._cursor: list[int] = []  # next position to check in each solution
        self._waiting: dict[str, list[int]] = {}  # node -> solutions waiting on it
        self._started = False
        self._finished = False
        self._pending = 0

    def next_requests(self) -> list[RolloutRequest]:
        if self._finished or self._pending:
            return []
        if not self._started:
            self._started = True
            if not self.can_afford(self.n_solutions):
                self._finished = True
                self.stats.skipped = "budget below n_solutions"
                return []
            self._pending = 1
            return [self.request(self.tree.root, self.n_solutions)]
        if not self.decider.mc:
            return self._next_adaptive()
        wave: list[RolloutRequest] = []
        self._waiting = {}
        for i, path in enumerate(self._paths):
            # Skip over positions already decided (shared prefixes, or the terminal leaf).
            while self._cursor[i] < len(path) - 1:
                node = path[self._cursor[i]]
                if not self.tree.stats(node).measured:
                    break
                if not self.decided_right(node):
                    self._cursor[i] = len(path)  # decided: wrong from here on
                    break
                self._cursor[i] += 1
            if self._cursor[i] >= len(path) - 1:
                continue
            node = path[self._cursor[i]]
            if node in self._waiting:
                self._waiting[node].append(i)
                continue
            if not self.can_afford(self.k):
                self._finished = True
                break
            self._waiting[node] = [i]
            wave.append(self.request(node, self.k))
        if not wave:
            self._finished = True
        self._pending = len(wave)
        return wave

    def _next_adaptive(self) -> list[RolloutRequest]:
        """Adaptive labelling: one batch per undecided solution, where it decides the
        solution's labels soonest (a prefix several solutions ask for is sampled once)."""
        wave: list[RolloutRequest] = []
        asked: set[str] = set()
        for path in self._paths:
            nxt = self.decider.next_to_sample(self.tree, path)
            if nxt is None or nxt[0] in asked:
                continue
            if not self.can_afford(nxt[1]):
                break
            asked.add(nxt[0])
            wave.append(self.request(*nxt))
        if not wave:
            self._finished = True
        self._pending = len(wave)
        return wave

    def observe(self, request: RolloutRequest, rollouts: list[Rollout]) -> None:
        self._pending -= 1
        self.record(request.node_id, rollouts)
        if request.node_id == self.tree.root:
            for r in rollouts:
                if r.steps and r.has_answer:
                    path = self.add_rollout_path(self.tree.root, r)
                    self._paths.append(path)
                    self._cursor.append(0)
            if not self._paths:
                self._finished = True
                self.stats.skipped = "no solution with an answer"

    def done(self) -> bool:
        return self._finished and not self._pending
