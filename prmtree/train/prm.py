"""A trained PRM, loaded for scoring: ``prmtree.PRM.load(DIR).score(problem, steps)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from prmtree.engine.errors import ConfigError
from prmtree.engine.records import Problem
from prmtree.train.model import Encoder, RewardModel, load_prm, resolve_device


def _check_batch_size(batch_size: Any) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"--batch-size must be a whole number >= 1, got {batch_size!r}")


class PRM:
    """Scores solutions step by step: one reward in [0, 1] per step, P(still right after it);
    None for a step the model never read (its marker past the model's length limit)."""

    def __init__(self, model: RewardModel, encoder: Encoder, config: dict[str, Any], device: str = "cpu",
                 batch_size: int = 8) -> None:
        _check_batch_size(batch_size)
        self.model = model
        self.encoder = encoder
        self.config = config
        self.device = device
        self.batch_size = batch_size

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", batch_size: int = 8) -> PRM:
        """A directory written by ``prmtree train`` (an HF model + ``prm_config.json``)."""
        _check_batch_size(batch_size)  # before loading the model
        device = resolve_device(device)
        model, encoder, config = load_prm(path, device)
        return cls(model, encoder, config, device, batch_size)

    @property
    def marker(self) -> str:
        return self.encoder.marker

    def score(self, problem: Problem | str, steps: list[str]) -> list[float | None]:
        """One reward per step, in order (None: not read, see :meth:`score_batch`). ``problem``
        may be the question alone (no images)."""
        return self.score_batch([(problem, steps)])[0]

    @torch.no_grad()
    def score_batch(self, items: list[tuple[Problem, list[str]]]) -> list[list[float | None]]:
        """Rewards for many solutions, batched; ``[]`` for a solution with no steps.

        A step whose marker fell past the model's length limit (``max_length`` in
        ``prm_config.json``) gets None: the model never read it, and a reward copied from
        an earlier step, or an invented 0.5, would pass for a judgement. ``prmtree bon``
        ranks a solution with such a step as unscored; ``prmtree score`` writes null.
        """
        items = [(_as_problem(problem), _as_steps(steps)) for problem, steps in items]
        out: list[list[float]] = [[] for _ in items]
        todo = [i for i, (_, steps) in enumerate(items) if steps]
        # similar lengths together: less padding
        encoded = {i: self.encoder.encode(items[i][0].question, list(items[i][1]), list(items[i][0].images))
                   for i in todo}
        todo.sort(key=lambda i: len(encoded[i]["ids"]))
        self.model.eval()
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            batch = self.encoder.collate([encoded[i] for i in chunk])
            extra = {k: v.to(self.device) for k, v in batch["extra"].items()}
            if "pixel_values" in extra:
                extra["pixel_values"] = extra["pixel_values"].to(next(self.model.lm.parameters()).dtype)
            logits = self.model(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device),
                                step_ids=batch["step_ids"].to(self.device), **extra)
            rewards = torch.sigmoid(logits.float()).cpu()
            for row, i in enumerate(chunk):
                got: list[float | None] = [float(rewards[row, p]) for p in encoded[i]["positions"]]
                n = len(items[i][1])
                out[i] = got[:n] + [None] * (n - len(got))  # past the length limit: never read
        return out


def _as_problem(problem: Problem | str) -> Problem:
    """A question given alone stands for a problem without images."""
    if isinstance(problem, str):
        return Problem(id="question", question=problem, answer="?")  # the answer is never read
    if not isinstance(problem, Problem):
        raise TypeError(f"PRM.score takes a Problem or the question as a str, got {type(problem).__name__}")
    return problem


def _as_steps(steps: list[str]) -> list[str]:
    """The steps as a list of str: a str would be scored one character per step."""
    if isinstance(steps, str) or not hasattr(steps, "__iter__"):
        raise TypeError(f"PRM.score takes the steps as a list of str (one per step), got {type(steps).__name__}")
    steps = list(steps)  # a generator is read once
    if not all(isinstance(s, str) for s in steps):
        raise TypeError("PRM.score takes the steps as a list of str (one per step), got other types in it")
    return steps
