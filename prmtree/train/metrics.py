"""Step-level evaluation of a PRM: step F1 on wrong steps, first-error accuracy, ProcessBench F1.

Pure functions over rewards and gold labels, so a hand-made case checks them exactly.
A step is predicted wrong when its reward is below ``threshold``; a path's predicted first
error is its first such step (-1: none).
"""

from __future__ import annotations

import bisect
from typing import Any


def first_error(labels: list[bool | None]) -> int:
    """Index of the first step labelled wrong, -1 when none is (None: not labelled, not an error)."""
    for i, label in enumerate(labels):
        if label is False:
            return i
    return -1


def predicted_first_error(rewards: list[float], threshold: float = 0.5) -> int:
    for i, reward in enumerate(rewards):
        if reward < threshold:
            return i
    return -1


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _ratio(hits: int, total: int) -> float | None:
    """hits / total, None over nothing (undefined, not 0)."""
    return hits / total if total else None


def fmt(value: float | None) -> str:
    """A metric as printed: three decimals, or n/a where it is undefined (None)."""
    return "n/a" if value is None else f"{value:.3f}"


def auroc(right: list[float], wrong: list[float]) -> float | None:
    """P(a right step's reward > a wrong step's), ties counting half: how well the rewards rank
    steps whatever the threshold (None without both kinds)."""
    if not right or not wrong:
        return None
    ordered = sorted(wrong)
    above = 0.0
    for reward in right:
        below, up_to = bisect.bisect_left(ordered, reward), bisect.bisect_right(ordered, reward)
        above += below + 0.5 * (up_to - below)
    return above / (len(right) * len(wrong))


def step_metrics(rewards: list[list[float | None]], labels: list[list[bool | None]],
                 threshold: float = 0.5) -> dict[str, Any]:
    """Metrics over paths: ``rewards[i][j]`` is the PRM's reward for step j of path i, ``labels`` the gold.

    A reward of None (a step the PRM did not read: past its length limit) is no
    prediction: the step is left out of the step metrics, and its path out of the path
    metrics (its first error may lie in what was not read); ``unread_steps`` counts them.
    A path with no labelled step (all None, or no step) is left out of the path metrics, as
    its steps are of the step metrics; ``unlabelled_paths`` counts them. Before, it counted
    as a path without an error, and an empty solution as one the PRM found right.

    * ``step_f1_wrong``: F1 for finding wrong steps (wrong = the positive class), with its
      precision and recall, and plain ``step_accuracy``; steps labelled None are left out;
    * ``first_error_accuracy``: share of paths whose predicted first error is the gold one
      (both -1 counts);
    * a metric over nothing is None (null in JSON, n/a printed), not 0: step F1 and recall
      where no step is labelled wrong (a PRM that flags nothing there is right, not 0),
      precision where no step is predicted wrong, step accuracy where no step is labelled,
      first-error accuracy where no path is scored; F1 is 0 where there are wrong steps
      and none is found;
    * ``processbench_f1``: harmonic mean of that accuracy on paths with an error
      (``acc_erroneous``) and on paths without one (``acc_correct``), as ProcessBench scores it;
      None where the paths hold only one of the two kinds: an accuracy over no path is
      undefined, not 0 (a PRM that never errs on a file of correct paths must not read 0);
    * ``step_auroc``: how well the rewards rank right steps above wrong ones, free of the
      threshold (a PRM whose rewards all sit low can rank well and still flag every step).
    """
    right_rewards: list[float] = []
    wrong_rewards: list[float] = []
    tp = fp = fn = right = steps = unread = unlabelled = 0
    hits_err = n_err = hits_ok = n_ok = 0
    for path_rewards, path_labels in zip(rewards, labels):
        for reward, label in zip(path_rewards, path_labels):
            unread += reward is None
            if label is None or reward is None:
                continue
            wrong_pred, wrong_gold = reward < threshold, not label
            tp += wrong_pred and wrong_gold
            fp += wrong_pred and not wrong_gold
            fn += (not wrong_pred) and wrong_gold
            right += wrong_pred == wrong_gold
            steps += 1
            (wrong_rewards if wrong_gold else right_rewards).append(reward)
        if all(label is None for label in path_labels):
            unlabelled += 1
            continue
        if any(r is None for r in path_rewards):
            continue
        gold = first_error(path_labels)
        hit = predicted_first_error(path_rewards, threshold) == gold
        if gold == -1:
            n_ok, hits_ok = n_ok + 1, hits_ok + hit
        else:
            n_err, hits_err = n_err + 1, hits_err + hit
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    acc_err = _ratio(hits_err, n_err)
    acc_ok = _ratio(hits_ok, n_ok)
    paths = n_err + n_ok
    return {
        # no wrong step to find: undefined; wrong steps and none found (precision undefined): 0
        "step_f1_wrong": None if recall is None else _f1(precision or 0.0, recall),
        "step_precision_wrong": precision,
        "step_recall_wrong": recall,
        "step_accuracy": _ratio(right, steps),
        "first_error_accuracy": _ratio(hits_err + hits_ok, paths),
        "acc_erroneous": acc_err,
        "acc_correct": acc_ok,
        "processbench_f1": None if acc_err is None or acc_ok is None else _f1(acc_err, acc_ok),
        "step_auroc": auroc(right_rewards, wrong_rewards),
        "paths": paths,
        "paths_with_error": n_err,
        "steps": steps,
        "unread_steps": unread,
        "unlabelled_paths": unlabelled,
        "threshold": threshold,
    }
