"""The reasoning tree of one problem: a ``networkx.DiGraph`` of step prefixes.

A node is a prefix of steps; the root is the empty prefix. Node ids hash
(problem id, parent id, normalised step), so the same step written twice from the same
prefix is one node, and ids are stable across runs and machines.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import networkx as nx
from prmtree.engine.steps import normalize_step
from prmtree.engine.value import mc_value, wilson_interval


def node_id_for(problem_id: str, parent_id: str | None, step: str) -> str:
    """Stable id of the node reached from ``parent_id`` by ``step``."""
    key = f"{problem_id}\x1f{parent_id or ''}\x1f{normalize_step(step)}"
    return hashlib.blake2b(key.encode("utf-8"), digest_size=8).hexdigest()


@dataclass(slots=True)
class NodeStats:
    """What is known of one node: its step, and the outcomes of rollouts sampled from it.
    (Slots: one object per node instead of two, for the collector to scan.)"""

    step: str
    depth: int
    n_rollouts: int = 0
    n_correct: int = 0
    terminal: bool = False  # the step carries a final answer: nothing follows it

    @property
    def value(self) -> float:
        return mc_value(self.n_correct, self.n_rollouts)

    @property
    def measured(self) -> bool:
        return self.n_rollouts > 0

    def interval(self) -> tuple[float, float]:
        """Wilson interval of the value; a terminal step's outcome is exact."""
        if self.terminal and self.measured:
            return (self.value, self.value)
        return wilson_interval(self.n_correct, self.n_rollouts)


class ReasoningTree:
    """Prefix tree of one problem's solutions with per-node rollout statistics.

    The search reads and grows the tree through its own dict indexes (stats, parent,
    children, path, counts by node id): the labelling decisions walk paths for every node
    they judge (the driver's hottest loop), and a dict lookup is several times cheaper
    than networkx's views. :attr:`graph` is the same tree as a ``networkx.DiGraph`` for
    analysis and export, built when first asked for and kept in step after: a graph kept
    during every search cost 3.5 us and four dicts per node, for the collector to scan,
    and the search never reads it.
    """

    def __init__(self, problem_id: str) -> None:
        self.problem_id = problem_id
        self.root = node_id_for(problem_id, None, "")
        self._stats: dict[str, NodeStats] = {self.root: NodeStats(step="", depth=0)}
        self._parent: dict[str, str] = {}
        self._children: dict[str, list[str]] = {}  # only nodes that have some
        self._graph: nx.DiGraph | None = None  # built on first use (:attr:`graph`)
        # each node's path from the first step (a node's path never changes): asked for
        # hundreds of thousands of times a run, a lookup instead of a walk to the root
        self._paths: dict[str, tuple[str, ...]] = {self.root: ()}
        # (rollouts, correct, terminal) of each node, kept with its stats: what the
        # calibrated rule's memoised path computations are keyed by (:meth:`counts`)
        self._counts: dict[str, tuple[int, int, bool]] = {self.root: (0, 0, False)}

    def __len__(self) -> int:
        return len(self._stats)

    @property
    def graph(self) -> nx.DiGraph:
        """The tree as a ``networkx.DiGraph``: an edge from each node to each child, node
        attribute ``stats`` (its :class:`NodeStats`), nodes and edges in insertion order."""
        if self._graph is None:
            graph = nx.DiGraph()
            graph.add_nodes_from((node, {"stats": stats}) for node, stats in self._stats.items())
            graph.add_edges_from((parent, child) for child, parent in self._parent.items())
            self._graph = graph
        return self._graph

    def stats(self, node_id: str) -> NodeStats:
        return self._stats[node_id]

    def add_step(self, parent_id: str, step: str, *, terminal: bool = False) -> str:
        """The child of ``parent_id`` for ``step``, created if new (identical steps merge)."""
        child = node_id_for(self.problem_id, parent_id, step)
        stats = self._stats.get(child)
        if stats is None:
            stats = NodeStats(step=step, depth=self._stats[parent_id].depth + 1, terminal=terminal)
            self._stats[child] = stats
            self._parent[child] = parent_id
            siblings = self._children.get(parent_id)
            if siblings is None:
                self._children[parent_id] = [child]
            else:
                siblings.append(child)
            if self._graph is not None:
                self._graph.add_node(child, stats=stats)
                self._graph.add_edge(parent_id, child)
            self._paths[child] = (*self._paths[parent_id], child)
            self._counts[child] = (0, 0, terminal)
        elif terminal and not stats.terminal:
            stats.terminal = True
            self._counts[child] = (stats.n_rollouts, stats.n_correct, True)
        return child

    def add_path(self, parent_id: str, steps: Sequence[str], *, terminal: bool = False) -> list[str]:
        """Add ``steps`` below ``parent_id``; returns the ids of the nodes along them."""
        ids = []
        node = parent_id
        last = len(steps) - 1
        for i, step in enumerate(steps):
            node = self.add_step(node, step, terminal=terminal and i == last)
            ids.append(node)
        return ids

    def record(self, node_id: str, n_rollouts: int, n_correct: int) -> None:
        """Fold rollout outcomes sampled from ``node_id`` into its statistics."""
        stats = self.stats(node_id)
        stats.n_rollouts += n_rollouts
        stats.n_correct += n_correct
        self._counts[node_id] = (stats.n_rollouts, stats.n_correct, stats.terminal)

    def counts(self, ids: Iterable[str]) -> tuple[tuple[int, int, bool], ...]:
        """(rollouts, correct, terminal) of each node of ``ids``: a path's counts, as one
        hashable key (the stats change only through :meth:`record` and :meth:`add_step`)."""
        return tuple(map(self._counts.__getitem__, ids))

    def parent(self, node_id: str) -> str | None:
        return self._parent.get(node_id)

    def children(self, node_id: str) -> list[str]:
        """``node_id``'s children, in insertion order."""
        return list(self._children.get(node_id, ()))

    def path_ids(self, node_id: str) -> list[str]:
        """Node ids from the first step down to ``node_id`` (the root excluded)."""
        return list(self._paths[node_id])

    def path(self, node_id: str) -> tuple[str, ...]:
        """:meth:`path_ids` as the tree keeps it, not copied (for the hot loops that only read it)."""
        return self._paths[node_id]

    def paths(self) -> Iterable[tuple[str, tuple[str, ...]]]:
        """(id, :meth:`path`) of every node but the root, in insertion order."""
        return itertools.islice(self._paths.items(), 1, None)  # the root is the first

    def prefix(self, node_id: str) -> tuple[str, ...]:
        """The steps that lead to ``node_id``."""
        stats = self._stats
        return tuple(stats[n].step for n in self._paths[node_id])

    def leaves(self) -> list[str]:
        """Nodes without children, in insertion order (never the root)."""
        children = self._children
        return [n for n in self._stats if n not in children and n != self.root]

    def nodes(self) -> Iterable[tuple[str, NodeStats]]:
        """(id, stats) of every node, the root first, in insertion order (the graph's)."""
        return self._stats.items()

    @property
    def total_rollouts(self) -> int:
        return sum(stats.n_rollouts for _, stats in self.nodes())
