"""Search strategies: pure state machines over one problem's reasoning tree.

To add a strategy: subclass :class:`TreeSearch` in a module here, list its own
SearchConfig fields in ``settings`` (add them to ``SearchConfig`` with their defaults),
and register the class in ``STRATEGIES``. The CLI's ``--strategy`` choices, config
validation and the resume hash all read this registry.
"""

from __future__ import annotations

from prmtree.engine.calibration import Decider
from prmtree.engine.config import SearchConfig
from prmtree.engine.problem import Problem
from prmtree.engine.search.base import RolloutRequest, SearchStats, TreeSearch
from prmtree.engine.search.mcts import MCTSSearch
from prmtree.engine.search.omega import OmegaSearch
from prmtree.engine.search.shepherd import ShepherdSearch

STRATEGIES: dict[str, type[TreeSearch]] = {
    "omega": OmegaSearch,
    "shepherd": ShepherdSearch,
    "mcts": MCTSSearch,
}


def make_search(problem: Problem, config: SearchConfig, decider: Decider | None = None) -> TreeSearch:
    """A fresh search over ``problem`` for the strategy ``config`` names; ``decider``
    (the run's labelling method) decides nodes and asks for adaptive rollouts."""
    return STRATEGIES[config.strategy](problem, config, decider)


__all__ = [
    "STRATEGIES",
    "MCTSSearch",
    "OmegaSearch",
    "RolloutRequest",
    "SearchStats",
    "ShepherdSearch",
    "TreeSearch",
    "make_search",
]
