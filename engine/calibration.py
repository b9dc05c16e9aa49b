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
is right, at most ``1 - confidence`` is wrong, in between is undecided (the strategies
then sample the node again, up to a cap). Pure functions: no I/O, deterministic.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Any

from prmtree.engine.problem import Problem

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


def _log_bb(k: int, n: int, a: float, b: float) -> float:
    """log P(k of n | p ~ Beta(a, b)), without the binomial coefficient (it cancels)."""
    return _log_beta(k + a, n - k + b) - _log_beta(a, b)


def _below(x: float, k: int, n: int) -> float:
    """P(p <= x) for p ~ Beta(k + 1, n - k + 1): a binomial tail, exact for integers."""
    return sum(math.comb(n + 1, j) * x**j * (1 - x) ** (n + 1 - j) for j in range(k + 1, n + 2))


def _log_uniform(k: int, n: int, lo: float, hi: float) -> float:
    """log P(k of n | p ~ Uniform(lo, hi)), without the binomial coefficient."""
    mass = max(_below(hi, k, n) - _below(lo, k, n), 1e-300)
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
    p = min(max(floor, 1e-3), 1 - 1e-3)
    lowest = p + (1 - p) * RIGHT_MARGIN  # a right step does better than guessing
    ref_k = max(ref_k, lowest * ref_n)  # so its reference rate is never below that either
    near = _log_bb(k, n, 1.0 + ref_k, 1.0 + ref_n - ref_k)
    log_right = _log_mix(near, _log_uniform(k, n, lowest, 1.0), REFERENCE_WEIGHT)
    at_floor = _log_bb(k, n, p * WRONG_CONCENTRATION, (1 - p) * WRONG_CONCENTRATION)
    log_wrong = _log_mix(at_floor, _log_uniform(k, n, 0.0, p), FLOOR_WEIGHT)
    return log_right, log_wrong


def posterior_right(n: int, k: int, floor: float, reference: tuple[float, float], prior: float = 0.5) -> float:
    """P(step right | k of n continuations correct), for one step on its own."""
    log_right, log_wrong = log_likelihoods(n, k, floor, reference)
    return _sigmoid(math.log(prior / (1 - prior)) + log_right - log_wrong)


def first_error_posterior(
    loglik: list[tuple[float, float]], hazard: float
) -> list[float]:
    """P(step i right) for each step of a path, from every step's evidence at once.

    The path's first wrong step is a change point: every step before it is right, it and
    every step after it wrong (a wrong prefix cannot be rescued). With a prior ``hazard``
    that a step is wrong given that the steps before it are right, the posterior of each
    change point j (or none) is proportional to hazard (1 - hazard)^j times the product of
    the right likelihoods before j and the wrong likelihoods from j on. P(step i right) is
    the mass of change points after i, so it never increases along a path, and a later
    step decided right lifts the steps before it.
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
    out, mass_after = [0.0] * m, weights[m]
    for i in range(m - 1, -1, -1):  # P(step i right) = P(change point > i)
        out[i] = mass_after / total
        mass_after += weights[i]
    return out


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


def decide(posterior: float, confidence: float) -> str:
    if posterior >= confidence:
        return RIGHT
    if posterior <= 1 - confidence:
        return WRONG
    return UNDECIDED


@dataclass(frozen=True)
class StepEvidence:
    """What decided one node: kept on every labelled step (provenance)."""

    decision: str  # RIGHT | WRONG | UNDECIDED
    posterior: float  # P(step right)
    n: int
    k: int
    parent_value: float | None  # success rate of the reference ancestor

    def as_dict(self) -> dict[str, Any]:
        return {"decision": self.decision, "posterior": self.posterior, "n": self.n, "k": self.k,
                "parent_value": self.parent_value}


class Decider:
    """Decides the nodes of one problem's tree, by the run's labelling method.

    Strategies ask it whether a node needs more rollouts (adaptive sampling) and which
    way a binary search moves; the labeller asks it for every step of a path. ``mc``
    reproduces the peers' rule (right iff MC > threshold) and never asks for more.
    """

    def __init__(self, problem: Problem, labels: Any, threshold: float = 0.0) -> None:
        self.mc = labels.method == "mc"
        self.threshold = threshold
        self.floor = chance_floor(problem, labels.chance, labels.free_chance)
        self.hazard = 1.0 - labels.prior
        self.confidence = labels.confidence
        self.batch = labels.batch
        self.cap = labels.max_rollouts_per_node

    def along(self, tree: Any, ids: list[str], last_only: bool = False) -> list[StepEvidence | None]:
        """Evidence for each step of a path from the root, from all of the path's counts.

        Under ``mc``: each sampled node by its own value (None where nothing was sampled).
        Otherwise: the change-point posterior (:func:`first_error_posterior`); a step is
        compared with the success rate of the step before it (the question's at first).
        ``last_only``: the last step's evidence alone (what :meth:`node` needs, cheaper).
        """
        stats = [tree.stats(n) for n in ids]
        root = tree.stats(tree.root)
        reference = (root.n_rollouts, root.n_correct) if root.measured else (0, 0)
        references, loglik = [], []
        for s in stats:
            references.append(reference)
            if self.mc or not s.measured:
                loglik.append((0.0, 0.0))
                continue
            if s.terminal and s.n_correct == 0:  # it states a wrong final answer: wrong, exactly
                loglik.append((-math.inf, 0.0))
                continue
            loglik.append(log_likelihoods(s.n_rollouts, s.n_correct, self.floor, reference))
            if not s.terminal:
                reference = (s.n_rollouts, s.n_correct)
        if last_only:
            stats, references = stats[-1:], references[-1:]
        if self.mc:
            return [self._mc(s, ref) if s.measured else None for s, ref in zip(stats, references)]
        posteriors = first_error_posterior(loglik, self.hazard)
        if last_only:
            posteriors = posteriors[-1:]
        return [
            StepEvidence(decide(post, self.confidence), post, s.n_rollouts, s.n_correct,
                         ref[1] / ref[0] if ref[0] else None)
            for s, ref, post in zip(stats, references, posteriors)
        ]

    def node(self, tree: Any, node: str) -> StepEvidence | None:
        """A node's evidence from its own prefix (what a search knows when it is there)."""
        return self.along(tree, tree.path_ids(node), last_only=True)[-1] if node != tree.root else None

    def wants_more(self, tree: Any, node: str) -> bool:
        """An undecided node below its rollout cap: sample it again (when affordable)."""
        if self.mc or node == tree.root or tree.stats(node).terminal:
            return False
        ev = self.node(tree, node)
        return ev is not None and ev.decision == UNDECIDED and ev.n < self.cap

    def fallback_right(self, ev: StepEvidence) -> bool:
        """What an undecided node counts as where a search must move on (its cap reached)."""
        return ev.posterior >= 0.5

    def _mc(self, s: Any, reference: tuple[int, int]) -> StepEvidence:
        right = s.value > self.threshold
        parent = reference[1] / reference[0] if reference[0] else None
        return StepEvidence(RIGHT if right else WRONG, 1.0 if right else 0.0, s.n_rollouts, s.n_correct, parent)
