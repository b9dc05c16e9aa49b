"""The calibrated rule's likelihoods: exact past the default rollout cap (a node sampled
48+ times, ``max_rollouts_per_node`` being the user's to raise, used to have its "right,
anywhere above the floor" term computed as 1 - (1 - tiny), which cancels), and more
successes never count against a step, whatever its reference."""

from __future__ import annotations

import math

import mpmath
import pytest
from prmtree.engine import calibration as C


def _exact(k: int, n: int, lo: float, hi: float) -> float:
    """log of the mean of p^k (1-p)^(n-k) over Uniform(lo, hi), to 50 digits (the
    incomplete beta function: quadrature is not exact for a peak this sharp)."""
    with mpmath.workdps(50):
        area = mpmath.betainc(k + 1, n - k + 1, lo, hi)
        return float(mpmath.log(area) - mpmath.log(hi - lo))


@pytest.mark.parametrize("n,k", [(8, 3), (32, 0), (48, 0), (64, 0), (64, 4), (100, 0), (100, 30)])
@pytest.mark.parametrize("floor", [0.5, 0.25, 0.02])
def test_the_uniform_terms_match_the_integral(n, k, floor):
    lowest = floor + (1 - floor) * C.RIGHT_MARGIN
    assert C._log_uniform(k, n, lowest, 1.0) == pytest.approx(_exact(k, n, lowest, 1.0), rel=1e-9, abs=1e-9)
    assert C._log_uniform(k, n, 0.0, floor) == pytest.approx(_exact(k, n, 0.0, floor), rel=1e-9, abs=1e-9)


def test_the_planners_predictive_sums_to_one_at_many_rollouts():
    """What the look-ahead expects of 8 more rollouts is a distribution (it drifted 1e-11
    off at 56 rollouts before)."""
    for n in (40, 56, 80):
        for k in (0, 2, n // 2):
            assert C._predictive_error(n, k, 8, 0.5, (16, 10)) < 1e-12, (n, k)


def test_many_failures_are_evidence_against_a_right_step():
    """More rollouts of a yes/no node, all failing, make it more likely wrong, never less
    (the cancelled term made n = 100 look 44 nats likelier right than n = 64)."""
    wrong_odds = [C.log_likelihoods(n, 0, 0.5, (16, 10)) for n in (32, 48, 64, 100)]
    margins = [right - wrong for right, wrong in wrong_odds]
    assert all(a > b for a, b in zip(margins, margins[1:])), margins
    assert all(math.isfinite(m) for m in margins)


@pytest.mark.parametrize("floor", [0.5, 0.25, 0.02])
@pytest.mark.parametrize("reference", [(0, 0), (8, 4), (16, 2)])
def test_more_successes_never_make_a_step_less_likely_right(floor, reference):
    """With no reference (a root not sampled: a custom strategy, or an mcts budget that
    paid for an expansion first) the "near the reference" term was Uniform(0, 1), weight
    at p = 0: 0 of 12 on a yes/no question read as right (0.54), 4 of 12 as less so (0.45)."""
    for n in (4, 8, 12, 32):
        posteriors = [C.posterior_right(n, k, floor, reference, 0.7) for k in range(n + 1)]
        assert all(b >= a - 1e-12 for a, b in zip(posteriors, posteriors[1:])), (n, posteriors)
