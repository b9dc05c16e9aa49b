"""From a finished tree to labelled solution paths, node rows and preference pairs.

Every leaf of the tree is one solution path. A step's label comes from its own MC
value when it was sampled, and is otherwise inferred along the path, the way OmegaPRM
and Math-Shepherd reason:

* a prefix that can reach the gold answer is reachable from every shorter prefix, so
  a positive step makes all earlier unsampled steps positive;
* a prefix that cannot reach it cannot be rescued, so a negative step makes all later
  unsampled steps negative.

Steps still undecided (only ever a tail) are dropped. For an inferred step, ``values``
holds the value of the sampled step that decided it (a bound, not an estimate); the
``nodes`` table has the raw counts.
"""

from __future__ import annotations

from dataclasses import dataclass

from prmtree.engine.tree import ReasoningTree
from prmtree.engine.value import hard_label


@dataclass
class LabelledPath:
    path_id: str  # the leaf's node id
    steps: list[str]
    labels: list[bool]
    values: list[float]
    final_correct: bool | None  # the leaf's own answer, when it ends the solution
    ci_widths: list[float]  # width of the interval of the value that decided each label


@dataclass
class PreferencePair:
    parent_id: str
    prefix: list[str]
    chosen: str
    rejected: str
    chosen_value: float
    rejected_value: float


def label_path(
    tree: ReasoningTree,
    leaf: str,
    threshold: float = 0.0,
    after_first_error: str = "truncate",
    max_ci_width: float | None = None,
) -> LabelledPath | None:
    """Labels along the path to ``leaf``; None when not even its first step is decided.

    With ``max_ci_width``, the path ends before the first step whose deciding value has
    a wider Wilson interval: only confidently labelled steps are kept.
    """
    ids = tree.path_ids(leaf)
    stats = [tree.stats(n) for n in ids]
    m = len(ids)
    labels: list[bool | None] = [None] * m
    values: list[float] = [0.0] * m
    widths: list[float] = [1.0] * m
    for j, s in enumerate(stats):
        if s.measured:
            values[j] = s.value
            labels[j] = hard_label(s.value, threshold)
            lo, hi = s.interval()
            widths[j] = hi - lo
    # positive backwards
    deciding: tuple[float, float] | None = None
    for j in range(m - 1, -1, -1):
        if labels[j] is True and stats[j].measured:
            deciding = (values[j], widths[j])
        elif labels[j] is None and deciding is not None:
            labels[j] = True
            values[j], widths[j] = deciding
    # negative forwards
    negative_width: float | None = None
    for j in range(m):
        if labels[j] is False:
            if negative_width is None:
                negative_width = widths[j]
        elif labels[j] is None and negative_width is not None:
            labels[j] = False
            values[j], widths[j] = 0.0, negative_width
    # keep the decided head
    end = 0
    while end < m and labels[end] is not None:
        end += 1
    if max_ci_width is not None:
        confident = 0
        while confident < end and widths[confident] <= max_ci_width:
            confident += 1
        end = confident
    if end == 0:
        return None
    if after_first_error == "truncate" and False in labels[:end]:
        end = labels.index(False) + 1
    elif after_first_error == "label-false" and False in labels[:end]:
        first = labels.index(False)
        for j in range(first, end):
            labels[j] = False
    leaf_stats = stats[-1]
    final = None
    if leaf_stats.terminal and leaf_stats.measured:
        final = leaf_stats.n_correct > 0
    return LabelledPath(
        path_id=leaf,
        steps=[s.step for s in stats[:end]],
        labels=[bool(x) for x in labels[:end]],
        values=values[:end],
        final_correct=final,
        ci_widths=widths[:end],
    )


def label_paths(
    tree: ReasoningTree,
    threshold: float = 0.0,
    after_first_error: str = "truncate",
    max_ci_width: float | None = None,
) -> list[LabelledPath]:
    """One labelled path per leaf, duplicates (same kept steps) removed."""
    out = []
    seen: set[tuple[str, ...]] = set()
    for leaf in tree.leaves():
        path = label_path(tree, leaf, threshold, after_first_error, max_ci_width)
        if path is None:
            continue
        key = tuple(path.steps)
        if key in seen:
            continue
        seen.add(key)
        out.append(path)
    return out


def preference_pairs(tree: ReasoningTree, threshold: float = 0.0) -> list[PreferencePair]:
    """Sibling steps (same prefix) whose hard labels differ: chosen positive, rejected negative."""
    pairs = []
    for parent, _ in tree.nodes():
        children = [c for c in tree.children(parent) if tree.stats(c).measured]
        good = [c for c in children if hard_label(tree.stats(c).value, threshold)]
        bad = [c for c in children if not hard_label(tree.stats(c).value, threshold)]
        if not good or not bad:
            continue
        prefix = list(tree.prefix(parent))
        for g in good:
            for b in bad:
                pairs.append(
                    PreferencePair(
                        parent, prefix, tree.stats(g).step, tree.stats(b).step, tree.stats(g).value, tree.stats(b).value
                    )
                )
    return pairs
