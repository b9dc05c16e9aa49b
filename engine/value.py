"""Monte-Carlo step values: the share of rollouts from a prefix that reach the gold answer.

A node's hard label is ``value > threshold`` (threshold 0 as in OmegaPRM and
VisualPRM: one correct completion proves the prefix can still succeed); its soft label
is the value itself; the Wilson interval says how far to trust it.
"""

from __future__ import annotations

import functools
import math


def mc_value(n_correct: int, n_rollouts: int) -> float:
    """Share of correct rollouts; NaN when nothing was sampled."""
    if n_rollouts < 0 or n_correct < 0 or n_correct > n_rollouts:
        raise ValueError(f"need 0 <= n_correct <= n_rollouts, got {n_correct}/{n_rollouts}")
    return n_correct / n_rollouts if n_rollouts else math.nan


@functools.lru_cache(maxsize=1 << 12)  # a few small counts, asked for every labelled step
def wilson_interval(n_correct: int, n_rollouts: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ((0, 1) with no data).

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0/k and
    k/k, which are the most common MC outcomes.
    """
    if n_rollouts == 0:
        return (0.0, 1.0)
    if n_correct < 0 or n_correct > n_rollouts:
        raise ValueError(f"need 0 <= n_correct <= n_rollouts, got {n_correct}/{n_rollouts}")
    p = n_correct / n_rollouts
    z2 = z * z
    denom = 1.0 + z2 / n_rollouts
    centre = (p + z2 / (2 * n_rollouts)) / denom
    half = z * math.sqrt(p * (1 - p) / n_rollouts + z2 / (4 * n_rollouts * n_rollouts)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def hard_label(value: float, threshold: float = 0.0) -> bool:
    """Positive when the prefix reaches the gold answer more often than ``threshold``."""
    return value > threshold
