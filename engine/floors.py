"""Learning an answer space's floor: how often continuations reach the gold answer after
a wrong step, estimated from a run's own trees.

The calibrated rule (``engine/calibration.py``) tells a wrong step from a right one by
its continuations' success rate: a right step keeps its parent's rate, a wrong one falls
to the *floor*. The chance floor (1/2 for yes/no) assumes a solver that took a wrong step
guesses. A real model is mostly consistently wrong after an error and reaches the gold
answer only when it happens to guess, a guess rate times chance: far below 1/2. Assumed
at 1/2, a wrong yes/no step (15%) and a right one (60%) look alike and stay undecided;
at the learned rate they are easy to tell apart.

:func:`learn_floor` is expectation-maximisation over the change-point model, shared by
an answer space's problems: the E step decides every node with the current floor (the
posterior P(node wrong)), the M step sets the floor to the success rate of the rollouts
that followed wrong steps, weighted by that posterior, under a Beta prior centred on the
chance floor (the conservative answer when the evidence is thin), and, learned from fewer
than ``FULL_PROBLEMS`` problems, only that share of the way from chance (one problem's
rollouts are one problem's evidence). Pure: no I/O, deterministic for its input order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from prmtree.engine.deciders import CalibratedDecider
from prmtree.engine.records import Problem
from prmtree.engine.tree import ReasoningTree

#: The prior's weight, in rollouts: this many rollouts after wrong steps at the chance
#: floor. Thin evidence stays near chance (the conservative floor); a few dozen
#: wrong-step rollouts move it.
PRIOR_ROLLOUTS = 8.0
#: A learned floor stays inside this range: a rate of exactly 0 would make one lucky
#: continuation impossible evidence, and above it a wrong step is not told from a right one.
LOWEST, HIGHEST = 0.01, 0.6
ITERATIONS, TOLERANCE = 50, 1e-4
#: Pilot problems a floor needs to move from chance in full. Rollouts are not independent
#: evidence of a space's floor: the rollouts of one tree share its problem, and the E step's
#: weights on a few trees come mostly from the change-point prior, so EM on one tree takes
#: right steps' continuations for wrong ones and runs away from chance (one 4-option
#: problem learned 0.50 against a chance of 0.25 and a true 0.075; one yes/no problem 0.58).
#: From fewer problems, the floor EM learned is moved from chance by only ``problems /
#: FULL_PROBLEMS`` of the way (a credibility weight), so thin evidence, in problems, stays
#: near chance; from this many on (half the default pilot), it is what EM learned.
FULL_PROBLEMS = 8


@dataclass(frozen=True)
class LearnedFloor:
    """One answer space's floor, as recorded in the manifest (``calibration.floors``)."""

    floor: float  # what the calibrated rule uses for this space's problems
    chance: float  # the prior: the answer space's chance floor
    problems: int  # pilot problems it was learned from
    wrong_rollouts: float  # rollouts after wrong steps, weighted by P(wrong): its evidence
    source: str  # "learned", or "prior" when there was no evidence to learn from

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LearnedFloor:
        return cls(float(data["floor"]), float(data["chance"]), int(data["problems"]),
                   float(data["wrong_rollouts"]), str(data["source"]))


#: A decider for one problem at a given floor (the labeller's, with the floor overridden).
DeciderAt = Callable[[Problem, float], CalibratedDecider]


def wrong_evidence(trees: Sequence[tuple[Problem, ReasoningTree]], decider_at: DeciderAt,
                   floor: float) -> tuple[float, float]:
    """The E step: (rollouts, correct rollouts) after wrong steps, each node's counts
    weighted by its posterior P(wrong) under ``floor``. Terminal nodes are left out: a
    stated answer is exact, not a continuation. Undecided nodes count at their posterior
    too: leaving them out would keep only the wrong steps whose counts were lowest."""
    n_sum = k_sum = 0.0
    for problem, tree in trees:
        decider = decider_at(problem, floor)
        memo: dict[str, list] = {}

        def along(ids: list[str]) -> list:
            if ids[-1] not in memo:
                memo[ids[-1]] = decider.along(tree, ids)
            return memo[ids[-1]]

        for node, ev in decider.decide_nodes(tree, along).items():
            s = tree.stats(node)
            if ev is None or ev.posterior is None or s.terminal or not s.measured:
                continue
            weight = 1.0 - ev.posterior
            n_sum += weight * s.n_rollouts
            k_sum += weight * s.n_correct
    return n_sum, k_sum


def learn_floor(trees: Sequence[tuple[Problem, ReasoningTree]], chance: float, decider_at: DeciderAt) -> LearnedFloor:
    """The floor of one answer space from its pilot problems' trees (EM, see the module
    docstring), starting from and shrunk toward ``chance``: by the Beta prior in rollouts,
    and from fewer than ``FULL_PROBLEMS`` trees by their share of it (``FULL_PROBLEMS``)."""
    prior = min(max(chance, LOWEST), HIGHEST)
    credibility = min(1.0, len(trees) / FULL_PROBLEMS)
    floor, evidence = prior, 0.0
    for _ in range(ITERATIONS):
        n_sum, k_sum = wrong_evidence(trees, decider_at, floor)
        evidence = n_sum
        new = (PRIOR_ROLLOUTS * prior + k_sum) / (PRIOR_ROLLOUTS + n_sum)
        new = min(max(new, LOWEST), HIGHEST)
        if abs(new - floor) < TOLERANCE:
            floor = new
            break
        floor = new
    if credibility < 1.0:  # (left as it was from FULL_PROBLEMS on: the same floors, bit for bit)
        floor = prior + credibility * (floor - prior)
    source = "learned" if evidence > 0 else "prior"
    return LearnedFloor(round(floor, 6), chance, len(trees), round(evidence, 3), source)
