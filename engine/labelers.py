"""The labelling stage: from a searched tree to labelled paths, between search and rows.

A labeller sees the problem and its finished search, and may ask models for a second
opinion through ``ctx.submit`` (the run's executor, so a judge runs on the same Ray
workers, or the judge's own policy). Built in:

* ``mc``: the peers' rule (a step is right when some rollout from it reached the answer);
* ``calibrated`` (default): decisions from a posterior that knows the answer space's
  chance floor (``engine/calibration.py``); undecided steps are dropped or kept;
* ``consensus``: calibrated, then a judge is asked about the candidate first error and
  the step before it; paths where MC and the judge disagree are dropped or flagged.

Custom labellers: ``@register_labeler("name")`` on a class whose ``__init__`` takes the
``LabelsConfig`` and whose ``async def label(problem, search, ctx)`` returns a
:class:`~prmtree.engine.labels.Labelling`.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from prmtree.engine.calibration import Decider, StepEvidence
from prmtree.engine.labels import Labelling, LabelledPath, label_paths, preference_pairs
from prmtree.engine.problem import Problem
from prmtree.engine.search.base import TreeSearch
from prmtree.rollout_workers.base import FatalExecutorError

Submit = Callable[[Any], Awaitable[list[Any]]]


@dataclass
class LabelContext:
    """What a labeller may use besides the tree: the run's settings and a way to ask models."""

    output: Any  # OutputConfig: threshold, after_first_error, max_ci_width
    submit: Submit | None = None  # GenerationRequest -> completions (with the driver's retries)
    request: Callable[..., Any] | None = None  # builds a judge GenerationRequest for (problem, steps)
    counters: Counter = field(default_factory=Counter)  # judge calls, tokens, unparseable, ...


class Labeler(Protocol):
    async def label(self, problem: Problem, search: TreeSearch, ctx: LabelContext) -> Labelling: ...


_LABELERS: dict[str, type] = {}


def register_labeler(name: str) -> Callable[[type], type]:
    """Class decorator: make a labelling method available as ``[labels] method = name``."""

    def decorate(cls: type) -> type:
        _LABELERS[name] = cls
        return cls

    return decorate


def available_labelers() -> list[str]:
    return list(_LABELERS)


def make_labeler(labels: Any) -> Labeler:
    return _LABELERS[labels.method](labels)


def _decide_nodes(
    search: TreeSearch, decider: Decider, along: Callable[[list[str]], list[StepEvidence | None]]
) -> dict[str, StepEvidence | None]:
    """Every node's decision (the nodes table, preference pairs): under ``mc`` from its own
    value; otherwise from the paths through it, as its steps are labelled — a step
    decided right by a later step of one path is right — taking the most confident of its
    paths' posteriors (its own prefix's when no path below it says more)."""
    tree = search.tree
    nodes = {node: decider.node(tree, node) for node, _ in tree.nodes() if node != tree.root}
    if decider.mc:
        return nodes
    for leaf in tree.leaves():
        ids = tree.path_ids(leaf)
        for node, ev in zip(ids, along(ids)):
            now = nodes.get(node)
            if ev is not None and (now is None or abs(ev.posterior - 0.5) > abs(now.posterior - 0.5)):
                nodes[node] = ev
    return nodes


@register_labeler("mc")
class MCLabeler:
    """The peers' rule, kept for comparison: right iff MC > ``output.label_threshold``."""

    method = "mc"

    def __init__(self, labels: Any) -> None:
        self.labels = labels

    def decider(self, problem: Problem, ctx: LabelContext) -> Decider:
        return Decider(problem, self.labels, ctx.output.label_threshold)

    async def label(self, problem: Problem, search: TreeSearch, ctx: LabelContext) -> Labelling:
        decider = self.decider(problem, ctx)
        evidence: dict[str, list[StepEvidence | None]] = {}  # leaf -> its path's evidence

        def along(ids: list[str]) -> list[StepEvidence | None]:
            if ids[-1] not in evidence:
                evidence[ids[-1]] = decider.along(search.tree, ids)
            return evidence[ids[-1]]

        nodes = _decide_nodes(search, decider, along)
        out = ctx.output
        paths = label_paths(
            search.tree, along, method=self.method,
            after_first_error=out.after_first_error, max_ci_width=out.max_ci_width,
            keep_undecided=self.labels.undecided == "keep",
        )
        return Labelling(paths, preference_pairs(search.tree, nodes), nodes)


@register_labeler("calibrated")
class CalibratedLabeler(MCLabeler):
    """Decisions from the calibrated posterior (the chance floor, the parent's rate)."""

    method = "calibrated"


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


@register_labeler("consensus")
class ConsensusLabeler(CalibratedLabeler):
    """Calibrated labels kept only where a judge agrees on the first error.

    For a path whose first wrong step is j, the judge is asked about step j (it should
    say incorrect) and step j-1 (correct); for a path labelled right throughout, about
    its last step (correct). Agreement keeps the path with source ``judge-agreed``; a
    disagreement drops it, or keeps it flagged (``labels.on_disagreement``). A judge that
    fails or answers without a parseable verdict counts as no verdict: the path is
    treated as a disagreement, and the failure is counted.
    """

    method = "calibrated"

    async def label(self, problem: Problem, search: TreeSearch, ctx: LabelContext) -> Labelling:
        labelling = await super().label(problem, search, ctx)
        kept = []
        checked = await asyncio.gather(*(self._check(problem, p, ctx) for p in labelling.paths))
        for path in checked:
            if path.flagged and self.labels.on_disagreement == "drop":
                ctx.counters["paths_dropped_by_judge"] += 1
                continue
            kept.append(path)
        ctx.counters["paths_judged"] += len(checked)
        return Labelling(kept, labelling.pairs, labelling.nodes)

    async def _check(self, problem: Problem, path: LabelledPath, ctx: LabelContext) -> LabelledPath:
        first = path.first_error
        expected = {first: False} if first is not None else {len(path.steps) - 1: True}
        if first:
            expected[first - 1] = True
        verdicts = await asyncio.gather(*(self._ask(problem, path.steps[: j + 1], ctx) for j in expected))
        provenance = list(path.provenance)
        agree = True
        for (j, want), (verdict, shown) in zip(expected.items(), verdicts):
            provenance[j] = replace(provenance[j], judge=shown)
            agree = agree and verdict is want
        source = "judge-agreed" if agree else "judge-disagreed"
        for j in expected:
            provenance[j] = replace(provenance[j], source=source)
        ctx.counters["judge_agreed" if agree else "judge_disagreed"] += 1
        return replace(path, provenance=provenance, flagged=not agree)

    async def _ask(self, problem: Problem, steps: list[str], ctx: LabelContext) -> tuple[bool | None, str]:
        if ctx.submit is None or ctx.request is None:
            raise RuntimeError("the consensus labeller needs a judge: run it through prmtree.run")
        ctx.counters["judge_calls"] += 1
        try:
            completions = await ctx.submit(ctx.request(problem, tuple(steps)))
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
            return None, "unparseable"
        return verdict, "correct" if verdict else "incorrect"
