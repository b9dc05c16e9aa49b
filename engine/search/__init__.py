"""Search strategies: pure state machines over one problem's reasoning tree."""

from __future__ import annotations

from prmtree.engine.config import SearchConfig
from prmtree.engine.problem import Problem
from prmtree.engine.search.base import RolloutRequest, SearchStats, SearchStrategy, TreeSearch
from prmtree.engine.search.mcts import MCTSSearch
from prmtree.engine.search.omega import OmegaSearch
from prmtree.engine.search.shepherd import ShepherdSearch

STRATEGIES = ("omega", "shepherd", "mcts")


def make_search(problem: Problem, config: SearchConfig) -> TreeSearch:
    """A fresh search over ``problem`` for the strategy ``config`` names."""
    if config.strategy == "omega":
        return OmegaSearch(
            problem,
            k=config.k,
            budget=config.budget,
            alpha=config.alpha,
            beta=config.beta,
            length_scale=config.length_scale,
            c_puct=config.c_puct,
            search_limit=config.search_limit,
        )
    if config.strategy == "shepherd":
        return ShepherdSearch(problem, k=config.k, n_solutions=config.n_solutions, budget=config.budget)
    if config.strategy == "mcts":
        return MCTSSearch(
            problem,
            k=config.k,
            branching=config.branching,
            budget=config.budget,
            c_uct=config.c_uct,
            max_iterations=config.max_iterations,
        )
    raise ValueError(f"unknown strategy {config.strategy!r}; known: {', '.join(STRATEGIES)}")


__all__ = [
    "STRATEGIES",
    "MCTSSearch",
    "OmegaSearch",
    "RolloutRequest",
    "SearchStats",
    "SearchStrategy",
    "ShepherdSearch",
    "TreeSearch",
    "make_search",
]
