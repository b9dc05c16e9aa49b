"""Label quality against known ground truth (simulated policies and synthetic data).

A step's true label is "no error so far": step j of a path is correct iff the path's
first wrong step comes after j. The scores:

* step accuracy: the share of labelled steps whose hard label equals the truth;
* first-error localisation: the share of paths whose first negative label sits exactly
  at the true first error (or, for paths labelled all positive, that contain no error);
* first-error precision: of the paths labelled with an error, the share whose first
  negative is exactly the true first error (it does not depend on how many all-positive
  paths a strategy writes, so it compares strategies fairly);
* first-error recall: of the paths whose labelled steps contain a true error, the share
  whose first negative is exactly the true first error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

FirstError = Callable[[str, Sequence[str]], "int | None"]


@dataclass
class LabelQuality:
    steps: int = 0
    steps_correct: int = 0
    paths: int = 0
    paths_located: int = 0
    paths_with_negative: int = 0
    negatives_located: int = 0
    paths_with_true_error: int = 0  # paths whose true first error is among their labelled steps

    @property
    def step_accuracy(self) -> float:
        return self.steps_correct / self.steps if self.steps else float("nan")

    @property
    def localisation_accuracy(self) -> float:
        return self.paths_located / self.paths if self.paths else float("nan")

    @property
    def first_error_precision(self) -> float:
        """Of the paths labelled with an error, the share whose first negative is the true first error."""
        return self.negatives_located / self.paths_with_negative if self.paths_with_negative else float("nan")

    @property
    def first_error_recall(self) -> float:
        """Of the paths whose labelled steps contain a true error, the share whose first
        negative label is exactly the true first error."""
        return self.negatives_located / self.paths_with_true_error if self.paths_with_true_error else float("nan")

    @property
    def first_errors_found(self) -> int:
        """Paths whose first negative label is exactly the true first error."""
        return self.negatives_located

    def as_dict(self) -> dict[str, float | int]:
        return {
            "steps": self.steps,
            "step_accuracy": round(self.step_accuracy, 4),
            "paths": self.paths,
            "localisation_accuracy": round(self.localisation_accuracy, 4),
            "first_errors_found": self.negatives_located,
            "first_error_precision": round(self.first_error_precision, 4),
            "first_error_recall": round(self.first_error_recall, 4),
            "paths_with_negative": self.paths_with_negative,
        }


def score_paths(rows: Iterable[dict], first_error: FirstError) -> LabelQuality:
    """Score ``steps`` rows (dicts with problem_id, completions, labels) against truth."""
    q = LabelQuality()
    for row in rows:
        steps, labels = row["completions"], row["labels"]
        truth_first = first_error(row["problem_id"], steps)
        q.paths += 1
        for j, label in enumerate(labels):
            if label is None:  # undecided, kept unlabelled: not a label to score
                continue
            truth = truth_first is None or j < truth_first
            q.steps += 1
            q.steps_correct += int(bool(label) == truth)
        predicted_first = labels.index(False) if False in labels else None
        if truth_first is not None and truth_first < len(labels):
            q.paths_with_true_error += 1
        if predicted_first is not None:
            q.paths_with_negative += 1
            if predicted_first == truth_first:
                q.negatives_located += 1
        located = predicted_first == truth_first or (
            predicted_first is None and (truth_first is None or truth_first >= len(labels))
        )
        q.paths_located += int(located)
    return q
