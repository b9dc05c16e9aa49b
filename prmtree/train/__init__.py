"""Train and evaluate a process reward model on prmtree's step labels (``pip install prmtree[train]``).

``train(TrainOptions(...))`` (the ``prmtree train`` command), ``PRM.load(DIR).score(problem,
steps)`` (and ``prmtree score``), ``step_metrics`` for step F1 / first-error accuracy /
ProcessBench F1, and ``read_solutions`` for ProcessBench-shaped JSONL. Importing this
package imports torch and transformers.
"""

from __future__ import annotations

from prmtree.train.data import StepRow, load_rows, split_rows
from prmtree.train.metrics import first_error, step_metrics
from prmtree.train.prm import PRM
from prmtree.train.processbench import Solution, read_solutions
from prmtree.train.trainer import TrainOptions, train

__all__ = ["PRM", "Solution", "StepRow", "TrainOptions", "first_error", "load_rows", "read_solutions",
           "split_rows", "step_metrics", "train"]
