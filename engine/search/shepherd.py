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

from typing import TYPE_CHECKING

from prmtree.engine.deciders import Decider
from prmtree.engine.records import Problem, Rollout
from prmtree.engine.search.base import RolloutRequest, TreeSearch

if TYPE_CHECKING:
    from prmtree.engine.config import SearchConfig


class ShepherdSearch(TreeSearch):
    name = "shepherd"

    settings = ("n_solutions",)

    def __init__(self, problem: Problem, config: SearchConfig, decider: Decider | None = None) -> None:
        super().__init__(problem, config, decider)
        self.n_solutions = config.n_solutions
        self._paths: list[list[str]] = []  # node ids of each solution
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
        wave, _ = self.sample_paths(self._paths)
        if not wave:
            self._finished = True
        self._pending = len(wave)
        return wave

    def observe(self, request: RolloutRequest, rollouts: list[Rollout]) -> None:
        self._pending -= 1
        self.record(request.node_id, rollouts)
        if request.node_id == self.tree.root:
            for r in rollouts:
                if r.has_steps and r.has_answer:
                    path = self.add_rollout_path(self.tree.root, r)
                    self._paths.append(path)
            if not self._paths:
                self._finished = True
                self.stats.skipped = "no solution with an answer"

    def done(self) -> bool:
        return self._finished and not self._pending
