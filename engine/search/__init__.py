"""Search strategies: pure state machines over one problem's reasoning tree.

The built-in ones are named in ``engine/registry.py`` (``STRATEGIES``, by dotted path);
a strategy lists its own SearchConfig fields in ``settings``. The CLI's ``--strategy``
choices, config validation and the resume hash all read that registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prmtree.engine.deciders import Decider
from prmtree.engine.records import Problem
from prmtree.engine.registry import STRATEGIES
from prmtree.engine.search.base import RolloutRequest, SearchStats, TreeSearch
from prmtree.engine.search.mcts import MCTSSearch
from prmtree.engine.search.omega import OmegaSearch
from prmtree.engine.search.shepherd import ShepherdSearch

if TYPE_CHECKING:
    from prmtree.engine.config import SearchConfig


def make_search(
    problem: Problem, config: SearchConfig, decider: Decider | None = None, max_steps: int | None = None
) -> TreeSearch:
    """A fresh search over ``problem`` for the strategy ``config`` names; ``decider``
    (the run's labelling method) decides nodes and asks for adaptive rollouts;
    ``max_steps`` (``[steps] max_steps``) bounds the steps of every path the tree grows."""
    strategy: type[TreeSearch] = STRATEGIES.get(config.strategy)
    search = strategy(problem, config, decider)
    search.max_steps = max_steps  # set after construction: a plugin's __init__ keeps its signature
    return search


__all__ = [
    "MCTSSearch",
    "OmegaSearch",
    "RolloutRequest",
    "SearchStats",
    "ShepherdSearch",
    "TreeSearch",
    "make_search",
]
