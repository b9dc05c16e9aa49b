"""The labelling stage: from a searched tree to labelled paths, between search and rows.

A labeller sees the problem and its finished search, and may ask models for a second
opinion through ``ctx.submit`` (the run's executor, so a judge runs on the same Ray
workers, or the judge's own policy). Built in:

* ``mc``: the peers' rule (a step is right when some rollout from it reached the answer);
* ``calibrated`` (default): decisions from a posterior that knows the answer space's
  chance floor (``engine/calibration.py``); undecided steps are dropped or kept;
* ``consensus``: calibrated; a judge settles steps the counts left undecided (each
  verdict weighed by its known accuracy), then is asked about the candidate first error
  and the step before it; paths where MC and the judge disagree are dropped or flagged.

Custom labellers: ``@register_labeler("name")`` on a class following :class:`Labeler`:
``__init__(labels: LabelsConfig)``, ``decider(problem, ctx)`` (the rule the search
samples by: subclass :class:`StepLabeler` to reuse one) and ``async label(problem,
search, ctx) -> Labelling``.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import math
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

from prmtree.engine.calibration import RIGHT, UNDECIDED, WRONG, StepEvidence, answer_space, decide
from prmtree.engine.deciders import CalibratedDecider, Decider, MCDecider
from prmtree.engine.errors import ConfigError, FatalExecutorError
from prmtree.engine.labels import (
    LabelledPath,
    Labelling,
    PreferencePair,
    label_path,
    label_paths,
    one_decision_per_node,
    preference_pairs,
)
from prmtree.engine.records import Completion, GenerationRequest, Problem
from prmtree.engine.registry import LABELERS
from prmtree.engine.search.base import TreeSearch
from prmtree.engine.tree import ReasoningTree

if TYPE_CHECKING:
    from prmtree.engine.config import LabelsConfig, OutputConfig

#: Asks a model through the run's executor (with the driver's retries).
Submit = Callable[[GenerationRequest], Awaitable[list[Completion]]]
#: Builds the judge's request for (problem, the steps up to the one judged).
JudgeRequest = Callable[[Problem, tuple[str, ...]], GenerationRequest]


@dataclass
class LabelContext:
    """What a labeller may use besides the tree: the run's settings and a way to ask models."""

    output: OutputConfig  # label_threshold, after_first_error, max_ci_width
    submit: Submit | None = None  # None outside a run (no judge to ask)
    request: JudgeRequest | None = None
    counters: Counter[str] = field(default_factory=Counter)  # judge calls, tokens, unparseable, ...
    examples: dict[str, list[str]] = field(default_factory=dict)  # kind -> a few texts the summary shows
    floors: dict[str, float] = field(default_factory=dict)  # answer space -> learned floor (engine/floors.py)


class Labeler(Protocol):
    """The labelling stage's contract (``[labels] method = name``)."""

    def decider(self, problem: Problem, ctx: LabelContext) -> Decider:
        """The rule the search decides and samples nodes by, for this problem."""
        ...

    async def label(self, problem: Problem, search: TreeSearch, ctx: LabelContext) -> Labelling:
        """The problem's labelled paths, preference pairs and node decisions."""
        ...


def register_labeler(name: str) -> Callable[[type], type]:
    """Class decorator: make a labelling method available as ``[labels] method = name``."""
    return LABELERS.register(name)


def available_labelers() -> list[str]:
    return LABELERS.names()


def make_labeler(labels: LabelsConfig) -> Labeler:
    """The labeller ``labels.method`` names, checked with :func:`check_labeler`."""
    labeler: Labeler = check_labeler(labels.method)(labels)
    return labeler


def check_labeler(method: str) -> type:
    """The labeller class ``method`` names, checked against :class:`Labeler`: one line
    naming what is missing, before a run starts, not at its first finished problem."""
    cls = LABELERS.get(method)
    for member, is_async in (("decider", False), ("label", True)):
        fn = getattr(cls, member, None)
        if not callable(fn) or inspect.iscoroutinefunction(fn) != is_async:
            shown = f"async def {member}(self, problem, search, ctx)" if is_async else f"def {member}(self, problem, ctx)"
            raise ConfigError(f"labelling method {method!r} must define '{shown}' "
                              "(subclass prmtree.engine.labelers.StepLabeler to reuse a rule)")
    return cls


class StepLabeler:
    """Labels every path of the tree by its decider's evidence (one class per rule)."""

    decider_class: type[MCDecider] | type[CalibratedDecider] = CalibratedDecider

    def __init__(self, labels: LabelsConfig) -> None:
        self.labels = labels

    def decider(self, problem: Problem, ctx: LabelContext) -> Decider:
        """The rule for this problem, at its answer space's learned floor once known."""
        floor = ctx.floors.get(answer_space(problem)) if self.decider_class.learns_floor else None
        return self.decider_class(problem, self.labels, ctx.output.label_threshold, floor)

    async def label(self, problem: Problem, search: TreeSearch, ctx: LabelContext) -> Labelling:
        decider = self.decider(problem, ctx)
        evidence: dict[str, list[StepEvidence | None]] = {}  # leaf -> its path's evidence

        def along(ids: Sequence[str]) -> list[StepEvidence | None]:
            if ids[-1] not in evidence:
                evidence[ids[-1]] = decider.along(search.tree, ids)
            return evidence[ids[-1]]

        # One decision per node, used by every path's labels and by the nodes table alike:
        # a path's own evidence may leave a step undecided that another path decides.
        nodes = evidenced_decisions(search.tree, decider, decider.decide_nodes(search.tree, along))
        paths = self.paths(search.tree, nodes, ctx.output, decider.source, getattr(decider, "floor", None))
        return Labelling(paths, preference_pairs(search.tree, nodes), nodes)

    def paths(self, tree: ReasoningTree, nodes: dict[str, StepEvidence | None], out: OutputConfig,
              decided_by: str, floor: float | None = None) -> list[LabelledPath]:
        """Every path of ``tree`` labelled from its nodes' decisions, under the run's output
        settings; ``floor``: the answer space's floor the decisions assumed (provenance)."""
        return label_paths(
            tree, lambda ids: [nodes.get(n) for n in ids], decided_by=decided_by,
            after_first_error=out.after_first_error, max_ci_width=out.max_ci_width,
            keep_undecided=self.labels.undecided == "keep",
            floor=floor,
        )


def evidenced_decisions(tree: ReasoningTree, decider: Decider,
                        decided: dict[str, StepEvidence | None]) -> dict[str, StepEvidence | None]:
    """:func:`one_decision_per_node` of the decider's node decisions, less the wrong
    decisions that rest on its prior rather than on counts.

    A node decided wrong below a parent left undecided (no wrong step above it) is where
    a path's labels would first say False after null ones (``undecided = "keep"``, the
    nodes table, preference pairs). Unless the decider shows it wrong from the counts at
    and after it (a node with nothing below it: with its parent's;
    :meth:`CalibratedDecider.shown_wrong`), it is undecided instead (its
    posterior kept), and the nodes below it are decided by their own evidence; a node
    below a right step keeps its decision (the first error after a right prefix). A rule
    without ``shown_wrong`` (mc decides each node by its own counts) is left as it is."""
    nodes = one_decision_per_node(tree, decided)
    shown_wrong = getattr(decider, "shown_wrong", None)
    if shown_wrong is None:
        return nodes
    decided = dict(decided)
    cleared: set[str] = set()  # shown wrong: not asked again
    while True:
        suspects = []
        for node, ev in nodes.items():
            parent = tree.parent(node) if ev is not None and ev.decision == WRONG and node not in cleared else None
            if parent is not None and parent != tree.root:
                above = nodes.get(parent)
                if above is None or above.decision == UNDECIDED:
                    suspects.append(node)
        shown = shown_wrong(tree, suspects) if suspects else set()
        cleared |= shown
        unshown = [node for node in suspects if node not in shown]
        if not unshown:
            return nodes
        for node in unshown:
            decided[node] = nodes[node]._replace(decision=UNDECIDED)  # type: ignore[union-attr]
        nodes = one_decision_per_node(tree, decided)


@register_labeler("mc")
class MCLabeler(StepLabeler):
    """The peers' rule, kept for comparison: right iff MC > ``output.label_threshold``."""

    decider_class = MCDecider


@register_labeler("calibrated")
class CalibratedLabeler(StepLabeler):
    """Decisions from the calibrated posterior (the chance floor, the parent's rate)."""

    decider_class = CalibratedDecider


# -- judge consensus ---------------------------------------------------------------

_VERDICT = re.compile(r"verdict\s*[:：=]?\s*\**\s*(correct|incorrect|right|wrong)\b", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\{\s*(correct|incorrect|right|wrong)\s*\}", re.IGNORECASE)


def parse_verdict(text: str) -> bool | None:
    """A judge's verdict: True (step correct), False (incorrect), None (unparseable).

    The format asked for is ``Verdict: correct`` / ``Verdict: incorrect``; a boxed word
    is accepted too. The last verdict wins (models restate). Anything else, including a
    text naming both words without the marker, is no verdict.
    """
    if not isinstance(text, str):
        return None
    found = _VERDICT.findall(text) or _BOXED.findall(text)
    if not found:
        return None
    return found[-1].lower() in ("correct", "right")


#: How many steps' worth of settling one path may cost: ``settle_calls`` times this
#: (a step settled right lets the path go on to its next undecided step).
SETTLE_STEPS_PER_PATH = 2


def settled_posterior(posterior: float, verdicts: list[bool | None], accuracy: float) -> float:
    """P(step right) after the judge's ``verdicts``, from the counts' ``posterior``.

    Each verdict is evidence of known ``accuracy`` a, independent of the counts and of
    the other verdicts given the truth: "correct" multiplies the odds of the step being
    right by a / (1 - a), "incorrect" by (1 - a) / a; no verdict (unparseable, failed)
    changes nothing.
    """
    if not 0.5 < accuracy < 1:
        raise ValueError(f"a judge's accuracy must be in (0.5, 1), got {accuracy}")
    if posterior <= 0.0 or posterior >= 1.0:
        return posterior  # certain: no verdict moves it
    weight = math.log(accuracy / (1.0 - accuracy))
    log_odds = math.log(posterior / (1.0 - posterior))
    log_odds += weight * sum(1 if v else -1 for v in verdicts if v is not None)
    return 1.0 / (1.0 + math.exp(-log_odds))


def settle_seed(seed: int, attempt: int) -> int:
    """The seed of a judge's ``attempt``-th settling question about one step: derived from
    the step's own judge seed (run seed, problem, step), so reruns ask alike and every
    attempt is a fresh sample, none equal to the agreement check's question."""
    key = f"{seed}\x1fsettle\x1f{attempt}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


@dataclass
class _Settled:
    """What the judge made of one step the counts left undecided."""

    evidence: StepEvidence  # its decision and the combined posterior
    shown: list[str]  # each verdict as asked: correct | incorrect | unparseable | failed


def _undisputed(tree: ReasoningTree, pairs: list[PreferencePair], disputed: set[str]) -> list[PreferencePair]:
    """``pairs`` less those whose chosen or rejected step is a node in ``disputed``: the pairs
    table has no flag column, so a preference the judge disputed is left out under either
    ``on_disagreement`` (a DPO trainer would otherwise learn it as certain)."""
    if not disputed:
        return pairs
    kept = []
    for pair in pairs:
        steps = {tree.stats(c).step for c in tree.children(pair.parent_id) if c in disputed}
        if pair.chosen not in steps and pair.rejected not in steps:
            kept.append(pair)
    return kept


@register_labeler("consensus")
class ConsensusLabeler(StepLabeler):
    """Calibrated labels, the judge settling what the counts cannot, kept only where the
    judge agrees with the counts on the first error.

    Settling first: a path whose labels stop at a step the counts left undecided (no
    wrong step before it) has the judge asked about that step, up to
    ``judge.max_settle_calls`` times (once for a greedy judge: ``JudgeConfig.settle_calls``),
    each verdict weighed by ``judge.accuracy``
    (:func:`settled_posterior`, from the step's calibrated posteriors: the lowest of its
    paths' to settle it right, the highest to settle it wrong), until the posterior
    reaches ``labels.confidence`` (right: the path goes on to its next undecided step, up
    to ``SETTLE_STEPS_PER_PATH`` steps' worth of calls per path) or ``1 - confidence``
    (wrong: the path's first error). A settled step is decided once for every path
    through it (the nodes table says so too), with source ``judge-settled``, the combined
    posterior, and its verdicts in the judge column (``correct,correct``).

    Then the agreement check: for a path whose first wrong step is j, the judge is asked
    about step j (it should say incorrect) and step j-1 (correct); for a path labelled
    right throughout, about its last step (correct). Steps the judge settled are not asked
    again (the judge would be checking itself): the check covers what the counts decided,
    and a path with no such step among those is kept unchecked. Agreement keeps the path
    with source ``judge-agreed``; a disagreement drops it, or keeps it flagged
    (``labels.on_disagreement``). A judge call that fails costs the path its agreement (a
    disagreement, counted in ``judge_failures``). An answer without a parseable verdict
    is no verdict: that step stays decided by the counts (its judge column says
    ``unparseable``, counted in ``judge_unparseable``); a path none of whose answers
    parsed is kept as the counts labelled it (``paths_without_verdict``), not dropped as a
    disagreement.
    """

    decider_class = CalibratedDecider

    async def label(self, problem: Problem, search: TreeSearch, ctx: LabelContext) -> Labelling:
        labelling = await super().label(problem, search, ctx)
        settled: dict[str, _Settled] = {}
        if self.labels.judge.settle_calls:
            labelling, settled = await self._settle(problem, search.tree, labelling, ctx)
        kept = []
        checked = await asyncio.gather(*(self._check(problem, p, ctx) for p in labelling.paths))
        disputed = set()  # the nodes whose step the judge disputed: no preference pair rests on one
        for path, _ in checked:
            if path.flagged:
                ids = search.tree.path_ids(path.path_id)
                disputed.update(n for n, step in zip(ids, path.provenance) if step.source == "judge-disagreed")
        pairs = _undisputed(search.tree, labelling.pairs, disputed)
        ctx.counters["pairs_dropped_by_judge"] += len(labelling.pairs) - len(pairs)
        for path, was_checked in checked:
            ctx.counters["paths_judged"] += was_checked
            if path.flagged and self.labels.on_disagreement == "drop":
                ctx.counters["paths_dropped_by_judge"] += 1
                continue
            kept.append(path)
        if settled:
            for path in kept:  # counted as written: one per step row the judge settled
                for label, step in zip(path.labels, path.provenance):
                    if step.source == "judge-settled":
                        ctx.counters["steps_settled_by_judge"] += 1
                        ctx.counters["steps_settled_right" if label else "steps_settled_wrong"] += 1
        return Labelling(kept, pairs, labelling.nodes)

    # -- settling ------------------------------------------------------------------

    async def _settle(self, problem: Problem, tree: ReasoningTree, labelling: Labelling,
                      ctx: LabelContext) -> tuple[Labelling, dict[str, _Settled]]:
        """The labelling with the steps the judge settled decided (in rounds: a step settled
        right may leave a path stopping at its next undecided step)."""
        judge = self.labels.judge
        nodes = dict(labelling.nodes)
        settled: dict[str, _Settled] = {}
        asked: set[str] = set()
        leaves = tree.leaves()
        span = self._posterior_span(problem, tree, ctx)
        calls_left = dict.fromkeys(leaves, judge.settle_calls * SETTLE_STEPS_PER_PATH)
        while True:
            wanted: dict[str, list[str]] = {}  # undecided node -> the paths that stop there
            for leaf in leaves:
                node = self._stops_at(tree, leaf, nodes) if calls_left[leaf] > 0 else None
                if node is not None and node not in asked:
                    wanted.setdefault(node, []).append(leaf)
            if not wanted:
                break
            asked.update(wanted)
            results = await asyncio.gather(*(
                self._settle_step(problem, tree, node, nodes[node],  # type: ignore[arg-type]
                                  span.get(node, (nodes[node].posterior,) * 2),  # type: ignore[union-attr]
                                  min(judge.settle_calls, max(calls_left[leaf] for leaf in waiting)), ctx)
                for node, waiting in wanted.items()
            ))
            for (node, waiting), result in zip(wanted.items(), results):
                for leaf in waiting:
                    calls_left[leaf] -= len(result.shown)
                if result.evidence.decision != UNDECIDED:
                    nodes[node] = result.evidence
                    settled[node] = result
            nodes = one_decision_per_node(tree, nodes)
        if not settled:
            return labelling, settled
        paths = []
        floor = getattr(self.decider(problem, ctx), "floor", None)
        for path in self.paths(tree, nodes, ctx.output, self.decider_class.source, floor):
            ids = tree.path_ids(path.path_id)
            provenance = [
                replace(step, source="judge-settled", judge=",".join(settled[node].shown))
                if node in settled else step
                for node, step in zip(ids, path.provenance)
            ]
            paths.append(replace(path, provenance=provenance))
        return Labelling(paths, preference_pairs(tree, nodes), nodes), settled

    def _stops_at(self, tree: ReasoningTree, leaf: str, nodes: dict[str, StepEvidence | None]) -> str | None:
        """The node where the path to ``leaf`` stops for want of a decision, when that is
        one the judge can settle (undecided, with a posterior, no wrong step before it)."""
        ids = tree.path_ids(leaf)
        path = label_path(tree, leaf, [nodes.get(n) for n in ids])  # labels alone: no cuts but undecided
        if path is None:
            end = 0
        elif False in path.labels:
            return None
        else:
            end = len(path.labels)
        if end >= len(ids):
            return None
        ev = nodes.get(ids[end])
        if ev is None or ev.posterior is None or ev.decision != UNDECIDED:
            return None
        return ids[end]

    def _posterior_span(self, problem: Problem, tree: ReasoningTree, ctx: LabelContext) -> dict[str, tuple[float, float]]:
        """Each node's lowest and highest posterior over its own prefix and every path
        through it. The nodes table keeps the most confident of them; a step is settled
        only where the verdicts decide it from all of them (the most confident of several
        noisy posteriors is biased away from 1/2, and would settle steps too easily)."""
        decider = self.decider(problem, ctx)
        span: dict[str, tuple[float, float]] = {}
        for node, _ in tree.nodes():
            ev = decider.node(tree, node) if node != tree.root else None
            if ev is not None and ev.posterior is not None:
                span[node] = (ev.posterior, ev.posterior)
        for leaf in tree.leaves():
            ids = tree.path_ids(leaf)
            for node, ev in zip(ids, decider.along(tree, ids)):
                if ev is not None and ev.posterior is not None:
                    lo, hi = span.get(node, (ev.posterior, ev.posterior))
                    span[node] = (min(lo, ev.posterior), max(hi, ev.posterior))
        return span

    async def _settle_step(self, problem: Problem, tree: ReasoningTree, node: str, evidence: StepEvidence,
                           span: tuple[float, float], calls: int, ctx: LabelContext) -> _Settled:
        """Ask the judge about ``node`` until the verdicts decide it from every posterior in
        ``span`` (right from the lowest, wrong from the highest) or ``calls`` are spent.
        The decided step keeps that bound as its posterior."""
        judge, confidence = self.labels.judge, self.labels.confidence
        steps = list(tree.prefix(node))
        verdicts: list[bool | None] = []
        shown: list[str] = []
        posterior, decision = evidence.posterior, UNDECIDED
        for attempt in range(calls):
            ctx.counters["judge_settle_calls"] += 1
            verdict, said = await self._ask(problem, steps, ctx, attempt=attempt)
            verdicts.append(verdict)
            shown.append(said)
            low, high = (settled_posterior(p, verdicts, judge.accuracy) for p in span)
            if decide(low, confidence) == RIGHT:
                posterior, decision = low, RIGHT
                break
            if decide(high, confidence) == WRONG:
                posterior, decision = high, WRONG
                break
        return _Settled(evidence._replace(decision=decision, posterior=posterior, inferred=False), shown)

    # -- the agreement check ---------------------------------------------------------

    async def _check(self, problem: Problem, path: LabelledPath, ctx: LabelContext) -> tuple[LabelledPath, bool]:
        """The path after the judge's check of its count-decided first error, and whether
        there was a step to check."""
        by_counts = [j for j, step in enumerate(path.provenance) if step.source != "judge-settled"]
        first = path.first_error
        if first is not None:
            expected = {first: False}
            if first:
                expected[first - 1] = True
            expected = {j: want for j, want in expected.items() if j in by_counts}
        else:
            expected = {by_counts[-1]: True} if by_counts else {}
        if not expected:
            return path, False
        verdicts = await asyncio.gather(*(self._ask(problem, path.steps[: j + 1], ctx) for j in expected))
        provenance = list(path.provenance)
        agree = True
        judged = []  # steps with a verdict, or whose judge failed (no agreement)
        for (j, want), (verdict, shown) in zip(expected.items(), verdicts):
            provenance[j] = replace(provenance[j], judge=shown)
            if shown == "unparseable":  # no verdict: the counts decide this step
                continue
            judged.append(j)
            agree = agree and verdict is want
        if not judged:
            ctx.counters["paths_without_verdict"] += 1
            return replace(path, provenance=provenance), True
        source = "judge-agreed" if agree else "judge-disagreed"
        for j in judged:
            provenance[j] = replace(provenance[j], source=source)
        ctx.counters["judge_agreed" if agree else "judge_disagreed"] += 1
        return replace(path, provenance=provenance, flagged=not agree), True

    async def _ask(self, problem: Problem, steps: list[str], ctx: LabelContext,
                   attempt: int | None = None) -> tuple[bool | None, str]:
        """One judge verdict about the last of ``steps``; ``attempt``: a settling question's
        index (its own seed), None for the agreement check's."""
        if ctx.submit is None or ctx.request is None:
            raise RuntimeError("the consensus labeller needs a judge: run it through prmtree.run")
        ctx.counters["judge_calls"] += 1
        request = ctx.request(problem, tuple(steps))
        if attempt is not None:
            request = replace(request, seed=settle_seed(request.seed, attempt))
        try:
            completions = await ctx.submit(request)
        except FatalExecutorError:
            raise
        except Exception:  # the judge's failure costs this path its agreement, not the run
            ctx.counters["judge_failures"] += 1
            return None, "failed"
        text = completions[0].text if completions else ""
        ctx.counters["judge_tokens"] += sum(c.num_tokens for c in completions)
        verdict = parse_verdict(text if isinstance(text, str) else "")
        if verdict is None:
            ctx.counters["judge_unparseable"] += 1
            shown = ctx.examples.setdefault("judge unparseable", [])
            if len(shown) < 1:
                shown.append(repr(text[:200] if isinstance(text, str) else text))
            return None, "unparseable"
        return verdict, "correct" if verdict else "incorrect"
