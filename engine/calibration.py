"""Calibrated step decisions: is a step right, given how often continuations from it
reach the gold answer — when answers can be guessed?

The peers' rule (a step is right when any rollout from it reaches the gold answer)
calls a wrong step right whenever a continuation guesses: a yes/no question is
answered right half the time by chance, a four-option one a quarter of the time. Here a
step is decided between two explanations of its counts (k correct of n):

* **right**: continuations keep the success rate of the step before it (its nearest
  ancestor known to be right, the question itself at first). That rate is uncertain, so
  it is a Beta distribution from the ancestor's own counts, and the likelihood of k of n
  is beta-binomial;
* **wrong**: continuations only reach the answer by chance, at the answer space's floor
  (1/2 for yes/no, 1/n for n options, about 0 for free answers): binomial(n, floor).

With a prior P(right), the posterior P(right | k of n) decides: at least ``confidence``
is right, at most ``1 - confidence`` is wrong, in between is undecided. A path's steps
are decided together (:func:`first_error_posterior`: a step decided right decides the
steps before it), so the strategies sample a path where its next batch tells most about
where its first error is (:meth:`Decider.next_to_sample`), and stop when every step is
decided or no batch is expected to buy a label at an acceptable price. Pure functions:
no I/O, deterministic.
"""

from __future__ import annotations

import bisect
import functools
import math
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from prmtree.engine.records import Problem

RIGHT, WRONG, UNDECIDED = "right", "wrong", "undecided"
_YES_NO = {"yes", "no", "true", "false"}
_WORD = re.compile(r"[^a-z]")


def chance_floor(problem: Problem, chance: float | None = None, free_chance: float = 0.02) -> float:
    """The probability that a guess reaches the gold answer, for this problem's answer space.

    In order: the row's ``meta.chance``; the run's ``labels.chance``; ``1/len(meta.options)``;
    1/4 for a choice question without options; 1/2 when the gold answer is yes/no (or
    true/false); otherwise ``free_chance`` (free numbers and text: a lucky hit is rare, not
    impossible).
    """
    meta = problem.meta if isinstance(problem.meta, dict) else {}
    given = meta.get("chance")
    if isinstance(given, (int, float)) and not isinstance(given, bool) and 0 <= given < 1:
        return float(given)
    if chance is not None:
        return chance
    options = meta.get("options")
    if isinstance(options, (dict, list, tuple)) and len(options) >= 2:
        return 1.0 / len(options)
    if problem.answer_type == "choice":
        return 0.25
    if _WORD.sub("", problem.answer.strip().lower()) in _YES_NO:
        return 0.5
    return free_chance


def answer_space(problem: Problem) -> str:
    """The name of a problem's answer space: problems sharing it share a learned floor
    and are counted together in coverage reports.

    ``meta.answer_space`` when the row names one (``"colour"``, ``"yesno"``); otherwise
    from the same evidence as :func:`chance_floor`: ``"N options"``, ``"choice"``,
    ``"yes/no"``, or the answer type (``"number"``, ``"text"``, ...; ``"free"`` for auto).
    """
    meta = problem.meta if isinstance(problem.meta, dict) else {}
    named = meta.get("answer_space")
    if isinstance(named, str) and named.strip():
        return named.strip()[:60]
    options = meta.get("options")
    if isinstance(options, (dict, list, tuple)) and len(options) >= 2:
        return f"{len(options)} options"
    if problem.answer_type == "choice":
        return "choice"
    if _WORD.sub("", problem.answer.strip().lower()) in _YES_NO:
        return "yes/no"
    return problem.answer_type if problem.answer_type not in ("auto", "") else "free"


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


#: How a right step's success rate is spread: this share near the reference's rate,
#: the rest anywhere above the floor (a right step deep in a long chain keeps less).
REFERENCE_WEIGHT = 0.5
#: The reference counts are shrunk to at most this many rollouts: one lucky 8/8 must not
#: make every later 5/8 look like a drop.
REFERENCE_CAP = 16
#: A wrong step's success rate: this share near the floor (a Beta of total weight
#: ``WRONG_CONCENTRATION``: errors sometimes cancel), the rest anywhere below it (a wrong
#: value may never reach the answer at all).
FLOOR_WEIGHT = 0.5
WRONG_CONCENTRATION = 24.0
#: A right step's "anywhere" starts this share of the way from the floor to 1: a rate at
#: the floor itself is what guessing gives, so it is no evidence of a right step.
RIGHT_MARGIN = 0.1
#: Adaptive sampling's stopping rule (``labels.max_rollouts_per_step``) prices a batch
#: by the labelled steps it is expected to buy; a path's first error counts as this many:
#: it is the label a PRM learns most from, and placing it takes more rollouts than
#: confirming a right step (with 1, paths with errors would be the first left undecided).
FIRST_ERROR_WEIGHT = 3

def _log_bb(k: int, n: int, a: float, b: float) -> float:
    """log P(k of n | p ~ Beta(a, b)), without the binomial coefficient (it cancels)."""
    return _log_beta(k + a, n - k + b) - _log_beta(a, b)


def _below(x: float, k: int, n: int) -> float:
    """P(p <= x) for p ~ Beta(k + 1, n - k + 1): a binomial tail, exact for integers."""
    return sum(math.comb(n + 1, j) * x**j * (1 - x) ** (n + 1 - j) for j in range(k + 1, n + 2))


def _above(x: float, k: int, n: int) -> float:
    """P(p > x) for p ~ Beta(k + 1, n - k + 1): the other tail of :func:`_below`, summed
    directly (``1 - _below`` cancels to nothing once the tail is below rounding, at ~45
    rollouts of a node with few correct)."""
    return sum(math.comb(n + 1, j) * x**j * (1 - x) ** (n + 1 - j) for j in range(k + 1))


def _log_uniform(k: int, n: int, lo: float, hi: float) -> float:
    """log P(k of n | p ~ Uniform(lo, hi)), without the binomial coefficient."""
    mass = _above(lo, k, n) if hi >= 1.0 else _below(hi, k, n) - _below(lo, k, n)
    mass = max(mass, 1e-300)
    return _log_beta(k + 1, n - k + 1) + math.log(mass) - math.log(hi - lo)


# Memoised: a pure function of a few small integers and the floor, asked for the same
# counts again and again as trees grow (the hottest path of the driver's CPU otherwise).
@functools.lru_cache(maxsize=1 << 16)
def log_likelihoods(n: int, k: int, floor: float, reference: tuple[float, float]) -> tuple[float, float]:
    """(log P(k of n | step right), log P(k of n | step wrong)), up to a shared constant.

    ``reference`` is (rollouts, correct) of what a right step keeps (the question's
    rate, then the step before it). Right: p near the reference's rate (a Beta from its
    counts, shrunk to ``REFERENCE_CAP``) or anywhere clearly above the floor; wrong: p
    near the floor or anywhere below it.
    """
    if n == 0:
        return 0.0, 0.0
    ref_n, ref_k = reference
    if ref_n > REFERENCE_CAP:
        ref_k, ref_n = ref_k * REFERENCE_CAP / ref_n, REFERENCE_CAP
    lowest, right_uniform, log_wrong = _floor_terms(n, k, floor)
    if ref_n == 0:  # nothing to be near (a root not sampled): only "clearly above the floor"
        return right_uniform, log_wrong
    ref_k = max(ref_k, lowest * ref_n)  # so its reference rate is never below that either
    near = _log_bb(k, n, 1.0 + ref_k, 1.0 + ref_n - ref_k)
    log_right = _log_mix(near, right_uniform, REFERENCE_WEIGHT)
    return log_right, log_wrong


@functools.lru_cache(maxsize=1 << 14)
def _floor_terms(n: int, k: int, floor: float) -> tuple[float, float, float]:
    """The parts of :func:`log_likelihoods` that do not depend on the reference (the
    lowest rate a right step keeps, the right step's "anywhere above" term, and the whole
    wrong likelihood): memoised apart, since a new reference is the common miss there and
    these binomial tails are most of its cost."""
    p = min(max(floor, 1e-3), 1 - 1e-3)
    lowest = p + (1 - p) * RIGHT_MARGIN  # a right step does better than guessing
    at_floor = _log_bb(k, n, p * WRONG_CONCENTRATION, (1 - p) * WRONG_CONCENTRATION)
    log_wrong = _log_mix(at_floor, _log_uniform(k, n, 0.0, p), FLOOR_WEIGHT)
    return lowest, _log_uniform(k, n, lowest, 1.0), log_wrong


def posterior_right(n: int, k: int, floor: float, reference: tuple[float, float], prior: float = 0.5) -> float:
    """P(step right | k of n continuations correct), for one step on its own."""
    log_right, log_wrong = log_likelihoods(n, k, floor, reference)
    return _sigmoid(math.log(prior / (1 - prior)) + log_right - log_wrong)


def change_points(loglik: list[tuple[float, float]], hazard: float) -> list[float]:
    """P(the path's first wrong step is j), j = 0..m (m: no error on the path).

    The path's first wrong step is a change point: every step before it is right, it and
    every step after it wrong (a wrong prefix cannot be rescued). With a prior ``hazard``
    that a step is wrong given that the steps before it are right, the posterior of each
    change point j (or none) is proportional to hazard (1 - hazard)^j times the product of
    the right likelihoods before j and the wrong likelihoods from j on.
    """
    m = len(loglik)
    log_h, log_1h = math.log(hazard), math.log1p(-hazard)
    wrong_suffix = [0.0] * (m + 1)
    for i in range(m - 1, -1, -1):
        wrong_suffix[i] = wrong_suffix[i + 1] + loglik[i][1]
    scores, right_prefix = [], 0.0
    for j in range(m + 1):  # j = m: no error on the path
        prior = j * log_1h + (log_h if j < m else 0.0)
        scores.append(prior + right_prefix + wrong_suffix[j])
        if j < m:
            right_prefix += loglik[j][0]
    top = max(scores)
    weights = [math.exp(x - top) for x in scores]
    total = sum(weights)
    return [w / total for w in weights]


def first_error_posterior(
    loglik: list[tuple[float, float]], hazard: float
) -> list[float]:
    """P(step i right) for each step of a path, from every step's evidence at once.

    P(step i right) is the mass of the change points (:func:`change_points`) after i, so
    it never increases along a path, and a later step decided right lifts the steps
    before it.
    """
    return right_posteriors(change_points(loglik, hazard))


def right_posteriors(weights: Sequence[float]) -> list[float]:
    """P(step i right), i = 0..m-1, from the change points' weights: the mass of the
    change points after i (so never increasing along the path)."""
    m = len(weights) - 1
    out, mass_after = [0.0] * m, weights[m]
    for i in range(m - 1, -1, -1):
        out[i] = min(mass_after, 1.0)
        mass_after += weights[i]
    return out


@functools.lru_cache(maxsize=1 << 16)
def _predictive(n: int, k: int, r: int, floor: float, reference: tuple[float, float]) -> tuple[tuple[float, float], ...]:
    """(P(x of r more right | step right), P(x | step wrong)) for x = 0..r, given k of n:
    a pure function of small integers, asked again and again as a tree is planned."""
    old_r, old_w = log_likelihoods(n, k, floor, reference)
    out = []
    for x in range(r + 1):
        new_r, new_w = log_likelihoods(n + r, k + x, floor, reference)
        comb = math.comb(r, x)
        out.append((comb * math.exp(new_r - old_r), comb * math.exp(new_w - old_w)))
    return tuple(out)


@functools.lru_cache(maxsize=1 << 16)
def _predictive_error(n: int, k: int, r: int, floor: float, reference: tuple[float, float]) -> float:
    """How far :func:`_predictive`'s two distributions are from summing to one."""
    outcomes = _predictive(n, k, r, floor, reference)
    return max(abs(sum(p for p, _ in outcomes) - 1.0), abs(sum(q for _, q in outcomes) - 1.0))


class PathPlan:
    """The planner's look-ahead over one path: what ``r`` more rollouts at step c would
    do to the position of its first error.

    Step c is wrong under the change points at or before it and right under the later
    ones, so an outcome of r more rollouts there scales the first group's weights by one
    factor (a) and the second's by another (b). The path's weights are summed once here
    (mass, entropy and each step's P(right) as running sums), so each outcome costs a few
    operations and a binary search rather than a pass over the path: the look-ahead runs
    for every undecided step of every path the driver plans, the hottest loop of its CPU.
    Only step c's own likelihood is updated: its effect as the reference of the steps
    after it is left out (a planning estimate, not a decision).
    """

    def __init__(self, weights: Sequence[float], floor: float, confidence: float) -> None:
        self.m = m = len(weights) - 1
        self.floor = floor
        self.confidence = confidence
        self.right = right_posteriors(weights)  # right[i] = P(step i right) = mass after i
        self._descending = [-p for p in self.right]  # ascending, for bisect
        self.wrong_mass, self.wrong_entropy = [0.0] * m, [0.0] * m  # of change points 0..c
        mass = entropy = 0.0
        for c in range(m):
            w = weights[c]
            mass += w
            entropy -= w * math.log(w) if w > 0 else 0.0
            self.wrong_mass[c], self.wrong_entropy[c] = mass, entropy
        self.entropy = entropy - sum(w * math.log(w) for w in weights[m:] if w > 0)

    def information_gain(self, c: int, n: int, k: int, r: int, reference: tuple[float, float]) -> float:
        """Expected reduction of the entropy of the first error's position (nats) from r
        more rollouts at step c (now k of n): the next r follow the step's posterior
        predictive under right and under wrong, each outcome x with probability px."""
        wrong_mass, right_mass = self.wrong_mass[c], self.right[c]
        if wrong_mass <= 0 or right_mass <= 0:
            return 0.0  # the step is certain: nothing to learn there
        h_wrong = self.wrong_entropy[c]
        h_right = self.entropy - h_wrong
        outcome_mass = 1.0 - wrong_mass  # right_mass up to rounding: as expected_labels weighs outcomes
        expected = 0.0
        log = math.log
        for p_r, p_w in _predictive(n, k, r, self.floor, reference):
            px = outcome_mass * p_r + wrong_mass * p_w
            if px > 0:  # change points at or before c scaled by a, after c by b
                a, b = p_w / px, p_r / px
                if a > 0 and b > 0:  # (the usual case, written out: the same arithmetic)
                    expected += px * (a * (h_wrong - wrong_mass * log(a)) + b * (h_right - right_mass * log(b)))
                else:
                    after = (a * (h_wrong - wrong_mass * log(a)) if a > 0 else 0.0) + \
                        (b * (h_right - right_mass * log(b)) if b > 0 else 0.0)
                    expected += px * after
        return self.entropy - expected

    def most_gain(self, c: int, n: int, k: int, r: int, reference: tuple[float, float]) -> float:
        """An upper bound on :meth:`information_gain` (same arguments): the outcomes depend
        on the first error's position only through whether it is at or before c, so they
        can tell no more than that event's entropy (plus a margin for rounding). That holds
        for a predictive that sums to one; where rounding in the likelihoods leaves it off by
        more than 1e-12 (counts far in a tail), there is no bound: infinity."""
        if _predictive_error(n, k, r, self.floor, reference) > 1e-12:
            return math.inf
        wrong, right = self.wrong_mass[c], 1.0 - self.wrong_mass[c]
        if wrong <= 0 or right <= 0:
            return 1e-9  # certain (up to rounding): nothing worth a batch
        return -wrong * math.log(wrong) - right * math.log(right) + 1e-9

    def all_decided(self) -> bool:
        """Whether every step is decided (:func:`decide` is not UNDECIDED for any): P(step i
        right) never increases along the path, so the steps decided right are a prefix and
        the step after them decides the rest (a bisection, not a pass)."""
        confidence = self.confidence
        right = bisect.bisect_right(self._descending, -confidence)  # steps with P(right) >= confidence
        return right == self.m or self.right[right] <= 1 - confidence

    def labelled_now(self) -> int:
        """:func:`labelled_length` of the path as it stands."""
        return self._labelled(0, 1.0, 1.0)

    def expected_labels(self, c: int, n: int, k: int, r: int, reference: tuple[float, float]) -> float:
        """Expected :func:`labelled_length` of the path after r more rollouts at step c
        (outcomes as in :meth:`information_gain`)."""
        wrong_mass = self.wrong_mass[c]
        right_mass = 1.0 - wrong_mass
        expected = 0.0
        # :meth:`_labelled` written out for the outcomes (the hottest loop of the planner)
        right, m, confidence, descending = self.right, self.m, self.confidence, self._descending
        wrong_below = 1.0 - confidence
        right_c = right[c]
        for p_r, p_w in _predictive(n, k, r, self.floor, reference):
            px = right_mass * p_r + wrong_mass * p_w
            if px > 0:
                a, b = p_w / px, p_r / px
                at_c = b * right_c
                if at_c >= confidence:
                    count = bisect.bisect_right(descending, -confidence / b, c + 1, m)
                elif a > 0:
                    count = bisect.bisect_right(descending, -(right_c + (confidence - at_c) / a), 0, c)
                else:
                    count = 0
                if count != m:
                    first = b * right[count] if count >= c else at_c + a * (right[count] - right_c)
                    if first <= wrong_below:
                        count += FIRST_ERROR_WEIGHT
                expected += px * count
        return expected

    def _labelled(self, c: int, a: float, b: float) -> int:
        """:func:`labelled_length` after the change points at or before c are scaled by a
        and the later ones by b. P(step i right) never increases along the path, so the
        steps decided right are a prefix, found by bisection; the step after them is the
        first error when it is decided wrong."""
        right, m, confidence = self.right, self.m, self.confidence
        at_c = b * right[c]
        if at_c >= confidence:  # steps 0..c right; after c, P(i right) = b * right[i]
            count = bisect.bisect_right(self._descending, -confidence / b, c + 1, m)
        elif a > 0:  # before c, P(i right) = at_c + a * (right[i] - right[c])
            count = bisect.bisect_right(self._descending, -(right[c] + (confidence - at_c) / a), 0, c)
        else:
            count = 0
        if count == m:
            return m
        first = b * right[count] if count >= c else at_c + a * (right[count] - right[c])
        return count + (FIRST_ERROR_WEIGHT if first <= 1.0 - confidence else 0)


def labelled_length(posteriors: list[float], confidence: float) -> int:
    """What a path's labels are worth to the stopping rule: its steps decided right, and
    its first wrong step (``FIRST_ERROR_WEIGHT``) once no step before it is undecided (the
    steps after it are cut, as ``after_first_error = "truncate"`` does)."""
    wrong_below, right, undecided = 1.0 - confidence, 0, False
    for p in posteriors:
        if p >= confidence:
            right += 1
        elif p > wrong_below:
            undecided = True
    return right + (0 if undecided or right == len(posteriors) else FIRST_ERROR_WEIGHT)


def _sigmoid(x: float) -> float:
    if x > 50:
        return 1.0
    if x < -50:
        return 0.0
    return 1.0 / (1.0 + math.exp(-x))


def _log_mix(x: float, y: float, w: float) -> float:
    """log(w e^x + (1 - w) e^y), stably."""
    top = max(x, y)
    return top + math.log(w * math.exp(x - top) + (1 - w) * math.exp(y - top))


def path_verdict(evidence: Sequence[StepEvidence | None]) -> str:
    """A path's steps as a whole: RIGHT when every one is decided right, WRONG when they
    are decided down to a first error, UNDECIDED otherwise."""
    if any(ev is None or ev.decision == UNDECIDED for ev in evidence):
        return UNDECIDED
    return WRONG if any(ev.decision == WRONG for ev in evidence) else RIGHT


def decide(posterior: float, confidence: float) -> str:
    if posterior >= confidence:
        return RIGHT
    if posterior <= 1 - confidence:
        return WRONG
    return UNDECIDED


class StepEvidence(NamedTuple):
    """What decided one node: kept on every labelled step (provenance).

    A named tuple, not a frozen dataclass: the path memos make about one per step of every
    path they compute (a million in a run of 2,000 problems), and a named tuple is made in
    0.23 us against a frozen dataclass's 0.62 (its ``__init__`` sets each field through
    ``object.__setattr__``). Change one with ``_replace``."""

    decision: str  # RIGHT | WRONG | UNDECIDED
    posterior: float | None  # P(step right); None under a rule that has none (mc)
    n: int
    k: int
    parent_value: float | None  # success rate of the reference ancestor
    inferred: bool = False  # decided by another node's decision (``labels.one_decision_per_node``)

    def as_dict(self) -> dict[str, Any]:
        return {"decision": self.decision, "posterior": self.posterior, "n": self.n, "k": self.k,
                "parent_value": self.parent_value}
