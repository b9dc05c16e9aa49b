"""From a decided tree to labelled solution paths and preference pairs.

Every leaf of the tree is one solution path. A step's label comes from its own node's
decision (``calibration.Decider``) when it was sampled, and is otherwise inferred along
the path, the way OmegaPRM and Math-Shepherd reason:

* a prefix that can reach the gold answer is reachable from every shorter prefix, so a
  step decided right makes every earlier step right;
* a prefix that cannot reach it cannot be rescued, so a step decided wrong makes every
  later step wrong.

Steps left undecided are dropped with the rest of the path (``labels.undecided =
"drop"``) or kept, labelled by their posterior (``"keep"``). Every labelled step keeps
its provenance: MC value, interval, posterior, rollouts, the parent's success rate, and
what decided it, so users can re-filter without re-running.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from prmtree.engine.calibration import RIGHT, UNDECIDED, WRONG, StepEvidence
from prmtree.engine.tree import ReasoningTree

#: What decided a step's label.
SOURCES = ("mc", "calibrated", "inferred", "undecided", "judge-agreed", "judge-disagreed", "judge-settled")


@dataclass(slots=True)  # one per labelled step: made by the hundred thousand
class StepProvenance:
    value: float  # MC value of the node that decided the label (a bound, for inferred steps)
    ci_low: float
    ci_high: float
    posterior: float | None  # P(step right) of the deciding node (None: the mc rule)
    rollouts: int  # rollouts sampled at this step's own node
    parent_value: float | None  # success rate the decision compared against
    source: str  # one of SOURCES
    judge: str | None = None  # "correct" | "incorrect" | "unparseable" | "failed" where asked; a
    # settled step's verdicts in order, comma-separated ("incorrect,correct,correct")
    floor: float | None = None  # the answer space's floor the posterior assumed (None: the mc rule)


@dataclass
class LabelledPath:
    path_id: str  # the leaf's node id
    steps: list[str]
    labels: list[bool]
    provenance: list[StepProvenance]
    final_correct: bool | None  # the leaf's own answer, when it ends the solution and the
    # labels reach it or stop at an error (None: they stop short at a step left undecided)
    flagged: bool = False  # consensus kept it although MC and the judge disagreed

    @property
    def values(self) -> list[float]:
        return [p.value for p in self.provenance]

    @property
    def first_error(self) -> int | None:
        return self.labels.index(False) if False in self.labels else None


@dataclass
class PreferencePair:
    parent_id: str
    prefix: list[str]
    chosen: str
    rejected: str
    chosen_value: float
    rejected_value: float


@dataclass
class Labelling:
    """What a labeller hands to the writer for one problem."""

    paths: list[LabelledPath]
    pairs: list[PreferencePair]
    nodes: dict[str, StepEvidence] = field(default_factory=dict)  # node id -> its decision


def mc_evidence(tree: ReasoningTree, ids: list[str], threshold: float = 0.0) -> list[StepEvidence | None]:
    """The peers' rule as evidence: right iff MC > threshold (what ``method = "mc"`` decides)."""
    out: list[StepEvidence | None] = []
    for node in ids:
        s = tree.stats(node)
        right = s.measured and s.value > threshold
        out.append(StepEvidence(RIGHT if right else WRONG, None, s.n_rollouts, s.n_correct, None)
                   if s.measured else None)
    return out


def one_decision_per_node(
    tree: ReasoningTree, nodes: dict[str, StepEvidence | None]
) -> dict[str, StepEvidence | None]:
    """The tree's node decisions made consistent, so every path labels a node alike and
    the nodes table says what the steps table says.

    A decider may decide a node from several paths' evidence (the most confident one);
    a path's labels then follow two rules: below a wrong step every step is wrong, above
    a right step every step is right. Applied over the whole tree (not path by path), a
    node gets one decision: wrong under a wrong ancestor (wrong wins a conflict, as it
    does along one path), else right over a right descendant, else its own. A decision
    changed here is marked ``inferred``. Nodes without evidence stay without.
    """
    out = dict(nodes)
    order: list[str] = []  # parents before children
    stack = list(reversed(tree.children(tree.root)))
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(reversed(tree.children(node)))
    under_wrong: set[str] = set()
    for node in order:  # wrong forwards
        ev = out.get(node)
        parent = tree.parent(node)
        if parent in under_wrong:
            under_wrong.add(node)
            if ev is not None and ev.decision != WRONG:
                out[node] = ev._replace(decision=WRONG, inferred=True)
        elif ev is not None and ev.decision == WRONG:
            under_wrong.add(node)
    over_right: set[str] = set()
    for node in reversed(order):  # right backwards
        ev = out.get(node)
        if node in over_right and ev is not None and ev.decision == UNDECIDED:
            out[node] = ev = ev._replace(decision=RIGHT, inferred=True)
        if (ev is not None and ev.decision == RIGHT) or node in over_right:
            parent = tree.parent(node)
            if parent is not None and parent != tree.root and parent not in under_wrong:
                over_right.add(parent)
    return out


def label_path(
    tree: ReasoningTree,
    leaf: str,
    evidence: list[StepEvidence | None] | None = None,
    *,
    threshold: float = 0.0,
    decided_by: str = "mc",
    after_first_error: str = "truncate",
    max_ci_width: float | None = None,
    keep_undecided: bool = False,
    floor: float | None = None,
) -> LabelledPath | None:
    """Labels along the path to ``leaf`` from its nodes' ``evidence``; None when not even
    the first step is decided. ``decided_by``: the provenance source of a step decided by
    its own counts (the decider's ``source``); ``floor``: the answer space's floor its
    posteriors assumed (kept in each step's provenance).

    With ``max_ci_width``, the path ends before the first step whose deciding value has a
    wider Wilson interval: only confidently labelled steps are kept.
    """
    ids = tree.path_ids(leaf)
    if evidence is None:
        evidence = mc_evidence(tree, ids, threshold)
    stats = [tree.stats(n) for n in ids]
    m = len(ids)
    labels: list[bool | None] = [None] * m
    source: list[str] = [""] * m
    decider_of = list(range(m))  # index of the node whose evidence decided each step
    for j, ev in enumerate(evidence):
        if ev is not None and ev.decision in (RIGHT, WRONG):
            labels[j] = ev.decision == RIGHT
            # decided by the path's other steps, or by other nodes' decisions
            source[j] = decided_by if ev.n and not ev.inferred else "inferred"
    first_wrong = labels.index(False) if False in labels else m
    nearest_right: int | None = None
    for j in range(first_wrong - 1, -1, -1):  # right backwards
        if labels[j] is True:
            nearest_right = j
        elif nearest_right is not None:
            labels[j], source[j], decider_of[j] = True, "inferred", nearest_right
    for j in range(first_wrong + 1, m):  # wrong forwards
        if labels[j] is not False:
            labels[j], source[j], decider_of[j] = False, "inferred", first_wrong
    undecided: set[int] = set()  # kept with a null label (``undecided = "keep"``)
    if keep_undecided:
        for j in range(first_wrong):
            if labels[j] is None and evidence[j] is not None:
                undecided.add(j)
                source[j] = "undecided"
    end = 0
    while end < m and (labels[end] is not None or end in undecided):
        end += 1
    if after_first_error == "truncate":  # the steps after the first error are cut below: not worth their provenance
        end = min(end, first_wrong + 1)
    for j in range(end):  # an unsampled step's value: the bound its nearest sampled neighbour gives
        if not stats[decider_of[j]].measured:
            later = [i for i in range(j + 1, end) if stats[i].measured and labels[i]] if labels[j] else []
            decider_of[j] = later[0] if later else decider_of[j]
    provenance = []
    for j in range(end):
        d = decider_of[j]
        lo, hi = stats[d].interval()
        ev = evidence[d]
        unsampled = not stats[d].measured
        inferred_wrong = source[j] == "inferred" and not labels[j]
        provenance.append(
            StepProvenance(
                value=0.0 if inferred_wrong else (ev.posterior if unsampled and ev is not None else stats[d].value),
                ci_low=lo,
                ci_high=hi,
                posterior=evidence[j].posterior if evidence[j] is not None else None,
                rollouts=stats[j].n_rollouts,
                parent_value=evidence[j].parent_value if evidence[j] is not None else None,
                source=source[j],
                floor=floor,
            )
        )
    if max_ci_width is not None:
        confident = 0
        while confident < end and provenance[confident].ci_high - provenance[confident].ci_low <= max_ci_width:
            confident += 1
        end = confident
    if end == 0:
        return None
    kept: list[bool | None] = [None if j in undecided else bool(labels[j]) for j in range(end)]
    if False in kept:
        first = kept.index(False)
        if after_first_error == "truncate":
            end = first + 1
            kept = kept[:end]
        else:
            kept = kept[:first] + [False] * (end - first)
    leaf_stats = stats[-1]
    final = leaf_stats.n_correct > 0 if leaf_stats.terminal and leaf_stats.measured else None
    if end < m and not (after_first_error == "truncate" and False in kept):
        final = None  # the labels stop short of the answer (a step left undecided, or max_ci_width), not at an error
    return LabelledPath(leaf, [s.step for s in stats[:end]], kept, provenance[:end], final)


def label_paths(
    tree: ReasoningTree,
    evidence_for: Callable[[list[str]], list[StepEvidence | None]] | None = None,
    **options: object,
) -> list[LabelledPath]:
    """One labelled path per leaf, duplicates (same kept steps) removed. ``evidence_for``
    decides a path's steps from all its counts; without it, nodes are decided by the mc rule."""
    out = []
    seen: set[tuple[str, ...]] = set()
    for leaf in tree.leaves():
        ids = tree.path_ids(leaf)
        evidence = None if evidence_for is None else evidence_for(ids)
        path = label_path(tree, leaf, evidence, **options)  # type: ignore[arg-type]
        if path is None:
            continue
        key = tuple(path.steps)
        if key in seen:
            continue
        seen.add(key)
        out.append(path)
    return out


def preference_pairs(
    tree: ReasoningTree, evidence_of: dict[str, StepEvidence | None] | None = None
) -> list[PreferencePair]:
    """Sibling steps (same prefix), both sampled, decided differently: chosen right,
    rejected wrong, each with its MC value."""
    if evidence_of is None:
        nodes = [n for n, _ in tree.nodes() if n != tree.root]
        evidence_of = dict(zip(nodes, mc_evidence(tree, nodes)))
    pairs = []
    for parent, _ in tree.nodes():
        children = tree.children(parent)
        decided = [(c, evidence_of.get(c)) for c in children if tree.stats(c).measured]
        good = [c for c, ev in decided if ev is not None and ev.decision == RIGHT]
        bad = [c for c, ev in decided if ev is not None and ev.decision == WRONG]
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
