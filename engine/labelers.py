"""The labelling stage: from a searched tree to labelled paths, between search and rows.

A labeller sees the problem and its finished search, and may ask models for a second
opinion through ``ctx.submit`` (the run's executor, so a judge runs on the same Ray
workers, or the judge's own policy). Built in:

* ``mc``: the peers' rule (a step is right when some rollout from it reached the answer);
* ``calibrated`` (default): decisions from a posterior that knows the answer space's
  chance floor (``engine/calibration.py``); undecided steps are dropped or kept;
* ``consensus``: calibrated, then a judge is asked about the candidate first error and
  the step before it; paths where MC and the judge disagree are dropped or flagged.

Custom labellers: ``@register_labeler("name")`` on a class following :class:`Labeler`:
``__init__(labels: LabelsConfig)``, ``decider(problem, ctx)`` (the rule the search
samples by: subclass :class:`StepLabeler` to reuse one) and ``async label(problem,
search, ctx) -> Labelling``.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

from prmtree.engine.calibration import StepEvidence, answer_space
from prmtree.engine.deciders import CalibratedDecider, Decider, MCDecider
from prmtree.engine.errors import ConfigError, FatalExecutorError
from prmtree.engine.labels import LabelledPath, Labelling, label_paths, one_decision_per_node, preference_pairs
from prmtree.engine.records import Completion, GenerationRequest, Problem
from prmtree.engine.registry import LABELERS
from prmtree.engine.search.base import TreeSearch

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

        def along(ids: list[str]) -> list[StepEvidence | None]:
            if ids[-1] not in evidence:
                evidence[ids[-1]] = decider.along(search.tree, ids)
            return evidence[ids[-1]]

        # One decision per node, used by every path's labels and by the nodes table alike:
        # a path's own evidence may leave a step undecided that another path decides.
        nodes = one_decision_per_node(search.tree, decider.decide_nodes(search.tree, along))
        out = ctx.output
        paths = label_paths(
            search.tree, lambda ids: [nodes.get(n) for n in ids], decided_by=decider.source,
            after_first_error=out.after_first_error, max_ci_width=out.max_ci_width,
            keep_undecided=self.labels.undecided == "keep",
            floor=getattr(decider, "floor", None),
        )
        return Labelling(paths, preference_pairs(search.tree, nodes), nodes)


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


@register_labeler("consensus")
class ConsensusLabeler(StepLabeler):
    """Calibrated labels kept only where a judge agrees on the first error.

    For a path whose first wrong step is j, the judge is asked about step j (it should
    say incorrect) and step j-1 (correct); for a path labelled right throughout, about
    its last step (correct). Agreement keeps the path with source ``judge-agreed``; a
    disagreement drops it, or keeps it flagged (``labels.on_disagreement``). A judge call
    that fails costs the path its agreement (a disagreement, counted in
    ``judge_failures``). An answer without a parseable verdict is no verdict: that step
    stays decided by the counts (its judge column says ``unparseable``, counted in
    ``judge_unparseable``); a path none of whose answers parsed is kept as the counts
    labelled it (``paths_without_verdict``), not dropped as a disagreement.
    """

    decider_class = CalibratedDecider

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
        judged = []  # steps with a verdict, or whose judge failed (no agreement)
        for (j, want), (verdict, shown) in zip(expected.items(), verdicts):
            provenance[j] = replace(provenance[j], judge=shown)
            if shown == "unparseable":  # no verdict: the counts decide this step
                continue
            judged.append(j)
            agree = agree and verdict is want
        if not judged:
            ctx.counters["paths_without_verdict"] += 1
            return replace(path, provenance=provenance)
        source = "judge-agreed" if agree else "judge-disagreed"
        for j in judged:
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
            shown = ctx.examples.setdefault("judge unparseable", [])
            if len(shown) < 1:
                shown.append(repr(text[:200] if isinstance(text, str) else text))
            return None, "unparseable"
        return verdict, "correct" if verdict else "incorrect"
