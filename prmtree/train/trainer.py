"""``prmtree train``: a PRM from a run's step labels, on one device or through Ray Train.

One loop serves both: :func:`train` runs it in this process, or (``workers > 0``) inside
``ray.train.torch.TorchTrainer`` where each worker takes its share of the rows and Ray
wraps the model for data-parallel training; rank 0 writes everything. Checkpoints hold
the model, optimiser, schedule and step; the data order is a function of the seed and the
epoch, so ``resume`` continues exactly where the checkpoint left off.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import resource
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from prmtree.engine.errors import ConfigError

#: Options a resumed run must share with its checkpoint.
RESUME_KEYS = ("data", "model", "labels", "lora", "lora_rank", "marker", "batch_size", "lr", "seed", "test_share",
               "max_length", "pretrain_epochs", "pretrain_text", "lm_weight", "tiny_layers", "tiny_hidden",
               "step_logprobs", "paths", "freeze_lm", "keep_flagged", "val_share", "select")
#: What a checkpoint made before an option existed was made with, where that is not today's default.
BEFORE_OPTION = {"step_logprobs": "off", "paths": "steps", "keep_flagged": True, "val_share": 0.0, "select": "last"}

#: Share of the training steps past ``--max-length`` above which training warns. A sensible
#: limit still cuts the last steps of a long tail of paths; beyond a tenth of the labels the
#: cut is the setting, not the tail, and it falls on a path's last steps, where its wrong
#: steps lie (the ``steps`` table ends a path at its first wrong one).
CUT_WARN_SHARE = 0.1

#: ``--pretrain-text`` choices: the run's node steps where it has them (else the paths), or either.
PRETRAIN_TEXTS = ("auto", "tree", "nodes", "paths")
#: ``--step-logprobs`` choices: auto is on for ``--model tiny``, off for a pretrained model.
STEP_LOGPROBS = ("auto", "on", "off")
#: ``--paths`` choices: what the PRM trains on (see ``TrainOptions.paths``).
PATHS = ("auto", "steps", "tree")
#: ``--select`` choices: which weights training keeps (see ``TrainOptions.select``).
SELECTS = ("best", "last")


@dataclass
class TrainOptions:
    """Everything ``prmtree train`` takes; see ``prmtree train --help``."""

    data: str
    out: str
    model: str = "tiny"
    labels: str = "hard"  # hard | soft
    lora: bool = False
    lora_rank: int = 16
    epochs: float = 3.0
    max_steps: int = 0
    #: Epochs of causal-LM pretraining on the training problems' text (``pretrain_text``) before the PRM
    #: fine-tune (0: none). For ``--model tiny`` it stands in for a pretrained base: the
    #: LM loss on each step's result teaches the model what a right step says.
    pretrain_epochs: float = 0.0
    #: What pretraining reads: ``tree``, every root-to-leaf path of the training problems'
    #: search trees (a run directory's ``nodes`` table), each step in its context as the PRM
    #: reads it; ``nodes``, the trees' distinct steps, one per sequence (a tiny model learns
    #: their arithmetic alone but not in a solution's context: measured, 7% of result
    #: digits right in sampled solutions); ``paths``, the training paths' text; ``auto``
    #: (default), the tree where the data has one, else paths.
    pretrain_text: str = "auto"
    #: Weight of an auxiliary causal-LM loss on the same paths during the PRM fine-tune (0: none),
    #: so the fine-tune keeps what the model knows about the text.
    lm_weight: float = 0.0
    tiny_layers: int = 2  # --model tiny's size: Qwen2 layers and hidden width
    #: Whether the reward head also reads the step's token log-probabilities under the model
    #: (``RewardModel``): ``auto`` is on for ``--model tiny``, whose marker states alone
    #: do not learn to check a step, and off for a pretrained model, where it costs a
    #: vocabulary-wide softmax per token.
    step_logprobs: str = "auto"
    #: What the PRM trains on: ``steps``, the run's labelled paths (``steps`` table, or an
    #: export), each ending at its first wrong step; ``tree``, every root-to-leaf path of
    #: the search trees (a run directory's ``nodes`` table), the steps after a wrong one
    #: included, labelled wrong; ``auto``, the tree where the data has one.
    paths: str = "auto"
    #: Train only the reward head in the fine-tune; the LM keeps what pretraining taught it.
    freeze_lm: bool = False
    tiny_hidden: int = 128
    lr: float | None = None  # None: 3e-3 for tiny, 1e-5 for a real model (2e-4 with LoRA)
    batch_size: int = 16
    max_length: int = 1024
    test_share: float = 0.2
    seed: int = 0
    marker: str = "<step>"
    device: str = "auto"
    bf16: bool = False
    save_every: int = 50
    keep_checkpoints: int = 2
    resume: bool = False
    workers: int = 0
    gpus_per_worker: float = 0.0
    log_every: int = 10
    threads: int = 0  # torch CPU threads (0: torch's default); 1 is fastest on a busy machine
    quiet: bool = False
    allow_partial: bool = False  # train on a run directory that is not finished (what it has saved)
    #: Train on (and measure held-out metrics with) the paths a ``consensus`` run kept flagged,
    #: which every trainer export leaves out; with it off, ``--paths tree`` ends a tree path
    #: before a step the judge disputed.
    keep_flagged: bool = False
    #: Share of the training problems set aside to choose the epoch (``select``); by
    #: problem, as the held-out split. 0: none, the last weights are kept.
    val_share: float = 0.1
    #: ``best``: keep the weights of the epoch end whose validation scores best (ProcessBench
    #: F1, else step F1); ``last``: the weights training ends with, on every training
    #: problem. A small set of problems is learned by heart within a few epochs (the tiny
    #: model on ``prmtree demo``: README, "Step-level evaluation"), and the right number of
    #: epochs is not known before training.
    select: str = "best"
    extra: dict[str, Any] = field(default_factory=dict)

    def uses_step_logprobs(self) -> bool:
        return step_logprobs_on(self.step_logprobs, self.model)

    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 3e-3 if self.model == "tiny" else 2e-4 if self.lora else 1e-5

    def check(self) -> None:
        if self.labels not in ("hard", "soft"):
            raise ConfigError(f"--labels must be hard or soft, got {self.labels!r}")
        if not self.marker or self.marker.strip() != self.marker:
            raise ConfigError(f"--marker must be a non-empty token without surrounding spaces, got {self.marker!r}: "
                              "the PRM reads each step's reward at its marker")
        if self.batch_size < 1 or self.max_length < 8 or not self.epochs > 0 or self.max_steps < 0:
            raise ConfigError("--batch-size must be >= 1, --max-length >= 8, --epochs > 0, --max-steps >= 0")
        if self.lr is not None and not (0 < self.lr < math.inf):
            raise ConfigError(f"--lr must be a positive number, got {self.lr}")
        if self.lora_rank < 1 or self.log_every < 1:
            raise ConfigError(f"--lora-rank and --log-every must be >= 1, got {self.lora_rank} and {self.log_every}")
        if self.save_every < 0 or self.threads < 0:
            raise ConfigError(f"--save-every and --threads must be >= 0, got {self.save_every} and {self.threads}")
        if not all(math.isfinite(x) for x in (self.epochs, self.pretrain_epochs, self.lm_weight)):
            raise ConfigError("--epochs, --pretrain-epochs and --lm-weight must be finite")
        if self.pretrain_text not in PRETRAIN_TEXTS:
            raise ConfigError(f"--pretrain-text must be one of {', '.join(PRETRAIN_TEXTS)}, got {self.pretrain_text!r}")
        if not 0 <= self.val_share < 1 or self.select not in SELECTS:
            raise ConfigError(f"--val-share must be in [0, 1) and --select one of {', '.join(SELECTS)}, got "
                              f"{self.val_share} and {self.select!r}")
        if self.paths not in PATHS:
            raise ConfigError(f"--paths must be one of {', '.join(PATHS)}, got {self.paths!r}")
        if self.freeze_lm and self.lm_weight > 0:
            raise ConfigError("--lm-weight trains the LM during the fine-tune, which --freeze-lm keeps fixed: use one")
        if self.step_logprobs not in STEP_LOGPROBS:
            raise ConfigError(f"--step-logprobs must be one of {', '.join(STEP_LOGPROBS)}, got {self.step_logprobs!r}")
        if self.pretrain_epochs < 0 or self.lm_weight < 0:
            raise ConfigError(f"--pretrain-epochs and --lm-weight must be >= 0, got {self.pretrain_epochs} "
                              f"and {self.lm_weight}")
        if self.tiny_layers < 1 or self.tiny_hidden < 32 or self.tiny_hidden % 32:
            raise ConfigError(f"--tiny-layers must be >= 1 and --tiny-hidden a multiple of 32 (heads of 32), "
                              f"got {self.tiny_layers} and {self.tiny_hidden}")
        if not 0 <= self.test_share < 1:
            raise ConfigError(f"--test-share must be in [0, 1), got {self.test_share}")
        if self.workers < 0 or self.gpus_per_worker < 0:
            raise ConfigError("--workers and --gpus-per-worker must be >= 0")
        data, out = Path(self.data).resolve(), Path(self.out).resolve()
        if data.is_dir() and (out == data or data in out.parents):
            raise ConfigError(f"--out {self.out} is inside --data {self.data}: the model and its checkpoints "
                              "would be written into the data; train somewhere else")
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {self.out} is a file: the PRM is written as a folder; name a new one")
        if out.is_dir() and any(out.glob("manifest*.json")):
            raise ConfigError(f"--out {self.out} holds a prmtree run (its manifest): the model would be written "
                              "among its tables; train somewhere else")


def step_logprobs_on(value: str, model: str) -> bool:
    """``--step-logprobs`` resolved: ``auto`` is on for ``--model tiny``, off for a pretrained model."""
    return value == "on" or (value == "auto" and model == "tiny")


def _log(options: TrainOptions, rank: int, message: str) -> None:
    if rank == 0 and not options.quiet:
        print(message, flush=True)


def _peak_memory_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux: the process's peak RSS


def build(options: TrainOptions, train_rows: list, out: Path,
          extra_texts: list[str] | None = None) -> tuple[Any, Any, bool, str]:
    """(RewardModel, tokenizer or processor, is it a VLM, the model class name); the tiny
    tokenizer learns its words from the training rows and ``extra_texts`` (pretraining's)."""
    import torch

    from prmtree.train.model import (
        Encoder, RewardModel, add_marker, apply_lora, hidden_size, load_lm, load_tiny_tokenizer, tiny_lm, tiny_tokenizer,
    )

    torch.manual_seed(options.seed)
    if options.model == "tiny":
        if (out / "tokenizer.json").is_file() and options.resume:
            processor = load_tiny_tokenizer(out)
        else:
            encoder = Encoder(None, options.marker)
            processor = tiny_tokenizer([encoder.text(r.question, r.steps) for r in train_rows] + list(extra_texts or []),
                                       options.marker)
        lm, vision = tiny_lm(len(processor), processor.pad_token_id, options.tiny_layers, options.tiny_hidden), False
    else:
        lm, processor, vision = load_lm(options.model, options.bf16)
        add_marker(lm, processor, options.marker)
    lm.config.pad_token_id = getattr(processor, "tokenizer", processor).pad_token_id
    class_name = type(lm).__name__
    if options.lora:
        lm = apply_lora(lm, options.lora_rank)
    model = RewardModel(lm, hidden_size(lm), step_logprobs=options.uses_step_logprobs())
    if options.bf16:
        model.head.to(torch.bfloat16)
        if model.pool is not None:
            model.pool.to(torch.bfloat16)
    return model, processor, vision, class_name


def _targets(row: Any, labels: str) -> list[float]:
    return [float(x) for x in row.soft] if labels == "soft" else [1.0 if x else 0.0 for x in row.labels]


def _order(n: int, seed: int, epoch: int) -> list[int]:
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


_CHECKPOINT = re.compile(r"step-(\d+)")


def _as_path(value: Any) -> Any:
    """A path option as a resume compares it: the absolute, resolved path where it names a file
    or folder (``run/``, ``./run`` and ``/abs/run`` are one folder), else as given (a Hub id)."""
    if not isinstance(value, str) or not value:
        return value
    path = Path(value).expanduser()
    return str(path.resolve()) if path.exists() else value


def _resume_options(options: dict[str, Any]) -> dict[str, Any]:
    """``RESUME_KEYS``' values as a checkpoint keeps them and a resume compares them: ``data``
    and a ``model`` path resolved (not ``tiny``, which is no path)."""
    options = dict(options)
    options["data"] = _as_path(options.get("data"))
    if options.get("model") != "tiny":
        options["model"] = _as_path(options.get("model"))
    return options


def _finished(out: Path, step: int) -> bool:
    """Whether the training in ``out`` saved its PRM after the checkpoint at ``step``:
    ``metrics.json``, written last, says that step (an interrupt after the final checkpoint,
    during the held-out evaluation or the PRM's save, leaves none, or an earlier one's)."""
    try:
        return int(json.loads((out / "metrics.json").read_text()).get("steps", -1)) == step
    except (OSError, ValueError, TypeError, AttributeError):
        return False


def _checkpoints(out: Path) -> list[Path]:
    """The whole checkpoints in ``out``, oldest first (a ``.tmp`` one a crash left is not one)."""
    found = [(int(m.group(1)), p) for p in (out / "checkpoints").glob("step-*") if (m := _CHECKPOINT.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def _save_checkpoint(out: Path, step: int, model: Any, optimiser: Any, schedule: Any, losses: list[float],
                     options: TrainOptions, keep: int, selection: EpochSelection | None = None,
                     data: dict[str, Any] | None = None) -> None:
    """Save the training's state at ``step``; ``data``: what it reads (:func:`_data_read`), for a resume to compare."""
    import torch

    target = out / "checkpoints" / f"step-{step:07d}"
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(), "schedule": schedule.state_dict(),
                "step": step, "losses": losses,
                "options": _resume_options({k: getattr(options, k) for k in RESUME_KEYS}),
                "torch_rng": torch.get_rng_state(),
                "selection": selection.state() if selection is not None else None, "data": data}, tmp / "state.pt")
    if target.exists():  # this step saved before (a resume of a finished training): the new state replaces it
        shutil.rmtree(target)
    tmp.rename(target)  # a checkpoint is there whole or not at all
    for old in _checkpoints(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def plot_losses(losses: list[float], path: Path, title: str) -> None:
    """The loss per optimiser step and its running mean, as a PNG (matplotlib, else Pillow)."""
    window = max(1, len(losses) // 20)
    smooth = [sum(losses[max(0, i - window + 1):i + 1]) / len(losses[max(0, i - window + 1):i + 1])
              for i in range(len(losses))]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        ax.plot(range(1, len(losses) + 1), losses, color="#9ecae1", lw=1, label="loss")
        ax.plot(range(1, len(losses) + 1), smooth, color="#08519c", lw=2, label=f"mean of {window}")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("BCE loss at step markers")
        ax.set_title(title)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
    except ImportError:
        from PIL import Image, ImageDraw

        w, h, m = 600, 350, 40
        image = Image.new("RGB", (w, h), "white")
        draw = ImageDraw.Draw(image)
        top = max(losses) if losses else 1.0
        def xy(i: int, v: float) -> tuple[float, float]:
            return m + (w - 2 * m) * i / max(1, len(losses) - 1), h - m - (h - 2 * m) * v / (top or 1.0)
        draw.rectangle([m, m, w - m, h - m], outline="black")
        if len(losses) > 1:
            draw.line([xy(i, v) for i, v in enumerate(losses)], fill="#9ecae1", width=1)
            draw.line([xy(i, v) for i, v in enumerate(smooth)], fill="#08519c", width=2)
        draw.text((m, 10), f"{title}: loss per step (max {top:.3f})", fill="black")
        image.save(path)


def _schedule(optimiser: Any, planned: int) -> Any:
    """Linear warm-up over the first tenth, then a linear decay to 5% of the peak."""
    import torch

    warmup = max(1, planned // 10)
    return torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda s: min(1.0, (s + 1) / warmup) * max(0.05, 1 - max(0, s - warmup) / max(1, planned - warmup)))


def _update(optimiser: Any, schedule: Any, params: list[Any], loss: Any) -> None:
    """One optimiser step: gradients of ``loss``, clipped to norm 1, then the schedule's step."""
    import torch

    optimiser.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimiser.step()
    schedule.step()


def pretrain(model: Any, encoder: Any, encoded: list[dict[str, Any]], options: TrainOptions, device: str,
             rank: int = 0) -> list[float]:
    """Causal-LM training of the model's LM on ``encoded`` (the training problems' node steps,
    or their paths' text), before the PRM fine-tune; returns the loss per optimiser step.

    A small model built from the data knows nothing: most of a run's steps are right, so
    predicting each step's text (its result above all) teaches what a right step says, as
    a pretrained base already knows. The reward head is untouched here.
    """
    import torch

    if not encoded or options.pretrain_epochs <= 0:
        return []
    lm = model.lm
    params = [p for p in lm.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=options.learning_rate(), weight_decay=0.0)
    per_epoch = math.ceil(len(encoded) / options.batch_size)
    planned = math.ceil(options.pretrain_epochs * per_epoch)
    schedule = _schedule(optimiser, planned)
    losses: list[float] = []
    step = 0
    while step < planned:
        epoch, _ = divmod(step, per_epoch)
        order = _order(len(encoded), options.seed + 7919, epoch)
        for start in range(0, len(order), options.batch_size):
            if step >= planned:
                break
            batch = encoder.collate([encoded[i] for i in order[start:start + options.batch_size]])
            ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            labels = ids.masked_fill(mask == 0, -100)
            lm.train()
            loss = lm(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
            _update(optimiser, schedule, params, loss)
            step += 1
            losses.append(float(loss.item()))
            if step % options.log_every == 0 or step == planned:
                recent = losses[-options.log_every:]
                _log(options, rank, f"pretrain step {step}/{planned}  LM loss {sum(recent) / len(recent):.4f}")
    return losses


def pretrain_corpus(options: TrainOptions, train_rows: list) -> tuple[str, list[str] | None, list | None]:
    """What pretraining reads, as ``--pretrain-text`` asks and the data allows: ("tree", None,
    the search trees' root-to-leaf paths), ("nodes", the distinct node steps, None) or
    ("paths", None, None: the training paths themselves). ``train_rows`` are the training
    problems' ``steps`` rows."""
    from prmtree.train.data import node_texts, tree_rows

    wanted = options.pretrain_text
    if options.pretrain_epochs <= 0 or wanted == "paths":
        return "paths", None, None
    if wanted in ("auto", "tree"):
        rows = tree_rows(options.data, train_rows, text_only=True)
        if rows:
            return "tree", None, rows
    else:
        rows = node_texts(options.data, {r.problem_id for r in train_rows})
        if rows:
            return "nodes", rows, None
    if wanted != "auto":
        raise ConfigError(f"--pretrain-text {wanted}: --data {options.data} " + _no_tree(rows) + ": use --pretrain-text paths")
    return "paths", None, None


def _no_tree(found: list | None) -> str:
    """Why a run's trees gave nothing: no nodes table (None), or none for the training problems ([])."""
    if found is None:
        return ("has no nodes table (only a prmtree run's directory has one; an hf export or a Parquet file "
                "does not)")
    return "has a nodes table but no decided step under the training problems' roots"


def _check_used(options: TrainOptions, used: int, paths: int, world: int) -> None:
    """Refuse, before anything is saved, a training that would read no step: every path cut
    by ``--max-length`` before its first marker, or a worker with no path to train on (each
    takes ``used // world`` of them). It would run no optimiser step and save an untrained
    model with exit 0."""
    if used == 0:
        raise ConfigError(f"--max-length {options.max_length} cuts all {paths} training paths before their first "
                          "step marker: no step to train on; raise --max-length")
    if world > 1 and used < world:
        raise ConfigError(f"--workers {world}: {used} training paths, fewer than the workers (each trains on its "
                          f"share): use --workers {used} or fewer, or more data")


def training_paths(options: TrainOptions, train_rows: list) -> tuple[list, str]:
    """(the rows the PRM trains on, "steps" or "tree"), as ``--paths`` asks and the data allows.
    The held-out rows stay the ``steps`` table's, so held-out metrics compare across choices."""
    from prmtree.train.data import disputed_steps, tree_rows

    if options.paths == "steps" or not train_rows:
        return train_rows, "steps"
    rows = tree_rows(options.data, train_rows, disputed=set() if options.keep_flagged else disputed_steps(options.data))
    if rows:
        return rows, "tree"
    if options.paths == "tree":
        raise ConfigError(f"--paths tree: --data {options.data} {_no_tree(rows)}: use --paths steps")
    return train_rows, "steps"


def _data_read(rows: list, train_rows: list, paths: str) -> dict[str, Any]:
    """What a checkpoint records of its data: counts that name a change, a digest of its
    problems' ids (the split depends on them alone) and one of every row read (the ``steps``
    rows, and with ``--paths tree`` the trees' too)."""
    from prmtree.train.data import fingerprint

    problems = sorted({r.problem_id for r in rows})
    return {"problems": len(problems), "paths": len(rows), "steps": sum(len(r.steps) for r in rows),
            "problem_ids": hashlib.blake2b("\n".join(problems).encode(), digest_size=16).hexdigest(),
            "fingerprint": fingerprint(rows + (train_rows if paths == "tree" else []))}


def _check_same_data(options: TrainOptions, saved: dict[str, Any] | None, now: dict[str, Any]) -> None:
    """Refuse a resume on data that changed since the checkpoint: other problems are split
    anew (one trained on could be held out, and the held-out metrics then measure memory),
    and the tiny tokenizer, built from the first data, reads new words as unknown. A
    checkpoint from before the record was kept (None) has nothing to compare."""
    if saved is None or saved["fingerprint"] == now["fingerprint"]:
        return
    counts = "{problems} problems, {paths} paths, {steps} steps".format
    what = (f"the same {counts(**now)}, with other text or labels" if counts(**saved) == counts(**now)
            else f"{counts(**saved)} then, {counts(**now)} now")
    same_problems = saved["problem_ids"] == now["problem_ids"]
    why = ("it would train on with other paths or labels than it started with" if same_problems
           else "its problems would be split anew, and some it trained on held out")
    raise ConfigError(f"--resume: --data {options.data} changed since the checkpoint ({what}): {why}; "
                      "train afresh into a new --out")


def train_loop(options: TrainOptions, rank: int = 0, world: int = 1, wrap: Callable[[Any], Any] | None = None,
               device: str | None = None) -> dict[str, Any]:
    """The training loop; ``wrap`` (Ray's ``prepare_model``) makes the model data-parallel."""
    import torch

    from prmtree.train.data import load_rows
    from prmtree.train.metrics import step_metrics
    from prmtree.train.model import PRM_CONFIG, Encoder, resolve_device, save_prm
    from prmtree.train.prm import PRM

    started = time.perf_counter()
    if options.threads:
        torch.set_num_threads(options.threads)
    out = Path(options.out)
    if device is None:
        device = resolve_device(options.device)
    random.seed(options.seed)
    rows = load_rows(options.data, with_images=options.model != "tiny", allow_partial=options.allow_partial,
                     keep_flagged=options.keep_flagged, labels=options.labels)
    train_rows, val_rows, test_rows = split_for_training(options, rows)
    steps_rows = train_rows
    train_rows, paths = training_paths(options, steps_rows)
    if not train_rows:
        raise ConfigError(f"--data {options.data}: no labelled steps to train on ({len(rows)} paths)")
    data_read = _data_read(rows, train_rows, paths)
    checkpoint = None
    if options.resume:
        found = _checkpoints(out)
        if not found:
            raise ConfigError(f"--resume: no checkpoint in {out / 'checkpoints'}; run without --resume to start")
        checkpoint = torch.load(found[-1] / "state.pt", map_location="cpu", weights_only=False)
        # paths compared resolved: "run/", "./run" or the folder's absolute path are one --data
        mine = _resume_options({k: getattr(options, k) for k in RESUME_KEYS})
        # a checkpoint from before an option existed was made with that option's default; one
        # from before paths were kept resolved has them as given (resolved here, from this directory)
        theirs = _resume_options({k: checkpoint["options"].get(k, BEFORE_OPTION.get(
            k, TrainOptions.__dataclass_fields__[k].default)) for k in RESUME_KEYS})
        for opts in (mine, theirs):  # compared as resolved: "auto" and "on" build the same tiny head
            opts["step_logprobs"] = "on" if step_logprobs_on(opts["step_logprobs"], opts["model"]) else "off"
            if opts["select"] == "last":  # no validation set aside: the share makes no difference
                opts["val_share"] = 0.0
        changed = [k for k in RESUME_KEYS if theirs[k] != mine[k]]
        if changed:
            was = ", ".join(f"{k}={theirs[k]!r}" for k in changed)
            raise ConfigError(f"--resume: {', '.join(changed)} differ from the checkpoint's ({was}); "
                              "use the same options, or a new --out")
        _check_same_data(options, checkpoint.get("data"), data_read)
    corpus, texts, pretrain_rows = pretrain_corpus(options, steps_rows)
    extra_texts = texts if pretrain_rows is None else [Encoder(None, options.marker).text(r.question, r.steps)
                                                       for r in pretrain_rows]
    model, processor, vision, class_name = build(options, train_rows, out, extra_texts)
    encoder = Encoder(processor, options.marker, options.max_length, vision)
    train = [(encoder.encode(r.question, r.steps, r.images), _targets(r, options.labels)) for r in train_rows]
    dropped = sum(len(r.steps) - len(e["positions"]) for r, (e, _) in zip(train_rows, train))
    train = [(e, t[:len(e["positions"])]) for e, t in train if e["positions"]]
    _check_used(options, len(train), len(train_rows), world)
    train_steps = sum(len(r.steps) for r in train_rows)
    if rank == 0 and dropped > CUT_WARN_SHARE * train_steps:
        sys.stderr.write(f"prmtree train: warning: --max-length {options.max_length} cuts {dropped} of {train_steps} "
                         f"training steps ({math.floor(100 * dropped / train_steps)}%): no label past a path's first "
                         f"{options.max_length} tokens is trained on; raise --max-length\n")
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        processor.save_pretrained(out)  # the tiny tokenizer is built from the data: a resume reuses it
    every_path = [e for e, _ in train]  # pretraining sees them all on every worker (below)
    if pretrain_rows is not None:  # the trees' paths, in full: each step in its context, as the PRM reads it
        every_path = [encoder.encode(r.question, r.steps, r.images) for r in pretrain_rows]
    if texts is not None:  # one step per sequence, as the PRM reads it: its text, then the marker
        tok = encoder.tokenizer
        every_path = [{"ids": tok(f"{t.replace(options.marker, ' ')} {options.marker}\n", add_special_tokens=False,
                                  truncation=True, max_length=options.max_length)["input_ids"],
                       "positions": [], "extra": {}} for t in texts]
    if world > 1:
        share = len(train) // world
        train = train[rank * share:(rank + 1) * share]
    model.to(device)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])  # pretrained already, before that checkpoint
    elif options.pretrain_epochs > 0 and vision:
        raise ConfigError("--pretrain-epochs trains a text LM on the run's text; it does not apply to a "
                          f"vision-language model ({options.model}): leave it at 0")
    # the fine-tune's parameters: with --freeze-lm the head's alone (the LM still pretrains first)
    trainable = [p for n, p in model.named_parameters()
                 if p.requires_grad and not (options.freeze_lm and n.startswith("lm."))]
    params = sum(p.numel() for p in model.parameters())
    _log(options, rank, f"prmtree train: {len(train_rows)} training paths "
         f"({'the search trees' if paths == 'tree' else 'the steps table'}; {train_steps} "
         f"steps; {dropped} past --max-length), {len(test_rows)} held-out paths; {class_name} "
         f"{params:,} parameters ({sum(p.numel() for p in trainable):,} trained) on {device}, "
         f"{world} worker(s), {options.labels} labels"
         + ("; the head reads step log-probabilities" if model.step_logprobs else "")
         + (f"; pretraining on {len(every_path)} "
            f"{ {'tree': 'tree paths', 'nodes': 'node steps', 'paths': 'paths'}[corpus]}"
            if checkpoint is None and options.pretrain_epochs > 0 else ""))
    pretrain_losses: list[float] = []
    pretrain_seconds = 0.0
    if checkpoint is None and options.pretrain_epochs > 0:
        t0 = time.perf_counter()
        # Before the model is wrapped for data parallelism, which copies rank 0's weights to
        # every worker: each worker pretrains on all the paths (the same steps), so the copy
        # is a model pretrained on the whole set, not on rank 0's share.
        pretrain_losses = pretrain(model, encoder, every_path, options, device, rank)
        pretrain_seconds = time.perf_counter() - t0
    if options.freeze_lm:
        model.lm.requires_grad_(False)
    net = wrap(model) if wrap else model
    lr = options.learning_rate()
    optimiser = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    per_epoch = math.ceil(len(train) / options.batch_size)
    planned = math.ceil(options.epochs * per_epoch)  # the schedule follows --epochs; --max-steps only stops early,
    total = min(planned, options.max_steps) if options.max_steps else planned  # so a resume may extend it
    schedule = _schedule(optimiser, planned)
    step, losses = 0, []
    if checkpoint is not None:
        optimiser.load_state_dict(checkpoint["optimiser"])
        schedule.load_state_dict(checkpoint["schedule"])
        step, losses = int(checkpoint["step"]), list(checkpoint["losses"])
        # At the last step, the held-out evaluation and the PRM's save may not have happened (an
        # interrupt after the final checkpoint): the resume does them, from the checkpoint's
        # last weights and the epoch chosen before it, as the uninterrupted training would have.
        # A training that saved its PRM has nothing left to do.
        if step > total or (step == total and _finished(out, step)):
            raise ConfigError(f"--resume: the training in {out} is done to step {step} (this run would stop at "
                              f"{total}): raise --epochs or --max-steps to train further")
        torch.set_rng_state(checkpoint["torch_rng"])
        _log(options, rank, f"resumed from step {step} ({found[-1]})" if step < total else
             f"resumed at the last step, {step} ({found[-1]}): training is done; evaluating and saving the PRM")
    tokens, train_seconds, resumed_at = 0, 0.0, step
    dtype = next(model.lm.parameters()).dtype
    read_length = max(options.max_length, 4096)  # the saved PRM's limit: the held-out paths are read to it
    prm = PRM(model, Encoder(processor, options.marker, read_length, vision), {}, device)
    # chosen on rank 0, which alone saves the PRM; a resume goes on with the epochs scored before it
    selection = (EpochSelection(model, prm, val_rows, step_metrics)
                 if rank == 0 and options.select == "best" and val_rows else None)
    if selection is not None and checkpoint is not None and checkpoint.get("selection"):
        selection.load(checkpoint["selection"])
    if rank == 0 and options.select == "best" and not val_rows:
        _log(options, rank, "select: --val-share 0 sets no validation problems aside; the last weights are kept"
             if not options.val_share else
             "select: too few training problems to set validation problems aside; the last weights are kept")
    while step < total:
        epoch, offset = divmod(step, per_epoch)
        order = _order(len(train), options.seed, epoch)
        starts = list(range(0, len(order), options.batch_size))[offset:]
        for start in starts:
            if step >= total:
                break
            t0 = time.perf_counter()
            chunk = [train[i] for i in order[start:start + options.batch_size]]
            batch = encoder.collate([e for e, _ in chunk], [t for _, t in chunk])
            extra = {k: v.to(device) for k, v in batch["extra"].items()}
            if "pixel_values" in extra:
                extra["pixel_values"] = extra["pixel_values"].to(dtype)
            net.train()
            ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            step_ids = batch["step_ids"].to(device)
            if options.lm_weight > 0:
                logits, lm_logits = net(ids, mask, with_lm=True, step_ids=step_ids, **extra)
                logits = logits.float()
            else:
                logits = net(ids, mask, step_ids=step_ids, **extra).float()
            target = batch["targets"].to(device)
            at = target >= 0
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[at], target[at])
            if options.lm_weight > 0:
                labels = ids.masked_fill(mask == 0, -100)[:, 1:]
                loss = loss + options.lm_weight * torch.nn.functional.cross_entropy(
                    lm_logits[:, :-1].float().reshape(-1, lm_logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
            _update(optimiser, schedule, trainable, loss)
            step += 1
            losses.append(float(loss.item()))
            tokens += int(batch["attention_mask"].sum()) * world
            train_seconds += time.perf_counter() - t0
            if step % options.log_every == 0 or step == total:
                recent = losses[-options.log_every:]
                _log(options, rank, f"step {step}/{total}  loss {sum(recent) / len(recent):.4f}  "
                     f"{tokens / max(train_seconds, 1e-9):,.0f} tokens/s")
            if selection is not None and (step % per_epoch == 0 or step == planned):
                selection.epoch_end(step / per_epoch)  # before a checkpoint at this step, which keeps it
            if rank == 0 and options.save_every and step % options.save_every == 0 and step < total:
                _save_checkpoint(out, step, model, optimiser, schedule, losses, options, options.keep_checkpoints,
                                 selection, data_read)
    result: dict[str, Any] = {}
    if rank == 0:
        # the checkpoint holds the last weights, with the optimiser and schedule they go with (a
        # --resume trains on from there); the PRM saved below holds the chosen epoch's. A resume
        # that trained no step has that checkpoint already: it is not written again.
        if step > resumed_at or checkpoint is None:
            _save_checkpoint(out, step, model, optimiser, schedule, losses, options, options.keep_checkpoints,
                             selection, data_read)
        if selection is not None and step % per_epoch and step < planned:
            # --max-steps stopped mid-epoch: this PRM may be the last weights, but their score is
            # not kept in the checkpoint above, where a resume would weigh it against whole
            # epochs that the uninterrupted training alone chooses among
            selection.epoch_end(step / per_epoch)
        if selection is not None:
            selection.restore()
            _log(options, rank, selection.summary())
        metrics = held_out_metrics(prm, test_rows, step_metrics) if test_rows else {}
        result = {
            "steps": step, "resumed_at": resumed_at, "total_steps": total, "labels": options.labels,
            "loss_first": losses[0] if losses else None, "loss_last_10": sum(losses[-10:]) / max(1, len(losses[-10:])),
            "train_tokens": tokens, "tokens_per_s": tokens / train_seconds if train_seconds else 0.0,
            "pretrain_steps": len(pretrain_losses), "pretrain_seconds": pretrain_seconds,
            "pretrain_text": corpus if pretrain_losses else None,
            "pretrain_sequences": len(every_path) if pretrain_losses else 0,
            "pretrain_loss_first": pretrain_losses[0] if pretrain_losses else None,
            "pretrain_loss_last_10": sum(pretrain_losses[-10:]) / len(pretrain_losses[-10:]) if pretrain_losses else None,
            "peak_memory_mb": _peak_memory_mb(device), "device": device, "workers": max(1, world),
            "parameters": params, "train_paths": len(train_rows), "paths": paths, "held_out_paths": len(test_rows),
            "held_out_max_length": read_length,
            "validation_paths": len(val_rows),
            "held_out": metrics, "seconds": time.perf_counter() - started,
            "selection": selection.as_dict() if selection is not None else None,
        }
        prm_config = {
            "format": "prmtree-prm", "version": 1, "marker": options.marker, "labels": options.labels,
            "base_model": options.model, "model_class": class_name, "vision": vision, "lora": options.lora,
            "head": "mlp2-sigmoid" + ("+step-logprobs" if model.step_logprobs else ""),
            "step_logprobs": model.step_logprobs, "paths": paths, "freeze_lm": options.freeze_lm,
            "keep_flagged": options.keep_flagged,
            "pretrain_epochs": options.pretrain_epochs,
            "pretrain_text": corpus if options.pretrain_epochs > 0 else None,
            "lm_weight": options.lm_weight, "max_length": read_length, "trained_on": str(options.data),
            "held_out": metrics,
        }
        save_prm(model, processor, out, prm_config)
        plot_losses(losses, out / "loss.png", f"{options.model} PRM, {options.labels} labels")
        (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
        assert (out / PRM_CONFIG).is_file()
    return result


def held_out_metrics(prm: Any, rows: list[Any], step_metrics: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """The PRM's step metrics on ``rows`` (steps rows with their labels)."""
    from prmtree.engine.records import Problem, ProblemImage

    items = [(Problem(id=r.problem_id, question=r.question, answer="-",
                      images=tuple(ProblemImage(b) for b in r.images)), r.steps) for r in rows]
    return step_metrics(prm.score_batch(items), [list(r.labels) for r in rows])


def criterion_for(labels: list[list[bool | None]]) -> str:
    """What the validation paths can tell: ProcessBench F1 where some paths hold a wrong
    step and some do not, step F1 on wrong steps where all do, step accuracy where none
    does (F1 on wrong steps is then undefined, None), "" without a label."""
    with_error = [False in path for path in labels if any(x is not None for x in path)]
    if not with_error:
        return ""
    if any(with_error) and not all(with_error):
        return "processbench_f1"
    return "step_f1_wrong" if all(with_error) else "step_accuracy"


class EpochSelection:
    """Scores the model on the validation problems at each epoch end and keeps a copy of
    the trainable weights that scored best (``TrainOptions.select = "best"``): ProcessBench
    F1 where the validation paths hold both kinds, else step F1 on wrong steps, else step
    accuracy. A tie keeps the earlier epoch (fewer passes over the data)."""

    def __init__(self, model: Any, prm: Any, rows: list[Any], step_metrics: Callable[..., dict[str, Any]]) -> None:
        self.model, self.prm, self.rows, self.step_metrics = model, prm, rows, step_metrics
        self.history: list[tuple[float, float | None]] = []  # (epoch, score)
        self.best: tuple[float, float] | None = None
        self.weights: dict[str, Any] | None = None
        self.criterion = criterion_for([list(r.labels) for r in rows])

    def epoch_end(self, epoch: float) -> None:
        if not self.criterion:
            return
        metrics = held_out_metrics(self.prm, self.rows, self.step_metrics)
        score = metrics.get(self.criterion)
        self.history.append((round(epoch, 3), score))
        if score is None or (self.best is not None and score <= self.best[1]):
            return
        self.best = (round(epoch, 3), score)
        self.weights = {n: p.detach().to("cpu", copy=True) for n, p in self.model.named_parameters()
                        if p.requires_grad}

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps, so a resume chooses among every epoch, not only its own."""
        return {"history": list(self.history), "best": self.best, "weights": self.weights, "criterion": self.criterion}

    def load(self, state: dict[str, Any]) -> None:
        self.history = [tuple(h) for h in state["history"]]
        self.best = tuple(state["best"]) if state["best"] is not None else None
        self.weights, self.criterion = state["weights"], state["criterion"] or self.criterion

    def restore(self) -> None:
        """Put the best epoch's weights back (nothing to do when it is the last)."""
        if self.weights is None or self.best is None or self.best[0] == self.history[-1][0]:
            return
        params = dict(self.model.named_parameters())
        for name, saved in self.weights.items():
            params[name].data.copy_(saved.to(params[name].device))

    def summary(self) -> str:
        if self.best is None:
            return "select: no validation score (the validation paths have no labelled step); kept the last weights"
        scores = ", ".join(f"{e:g}: {'n/a' if s is None else f'{s:.3f}'}" for e, s in self.history)
        return (f"select: kept epoch {self.best[0]:g} of {self.history[-1][0]:g} (validation {self.criterion} "
                f"{self.best[1]:.3f} on {len(self.rows)} paths; by epoch {scores})")

    def as_dict(self) -> dict[str, Any]:
        return {"criterion": self.criterion or None, "epoch": self.best[0] if self.best else None,
                "validation_paths": len(self.rows), "by_epoch": [list(h) for h in self.history]}


def _ray_worker(config: dict[str, Any]) -> None:
    """Runs on each Ray Train worker."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    options = TrainOptions(**config["options"])
    device = str(ray.train.torch.get_device())
    result = train_loop(options, context.get_world_rank(), context.get_world_size(),
                        wrap=lambda m: ray.train.torch.prepare_model(
                            m, parallel_strategy_kwargs={"find_unused_parameters": True}),
                        device=device)
    ray.train.report({"steps": result.get("steps", 0)})


def split_for_training(options: TrainOptions, rows: list[Any]) -> tuple[list[Any], list[Any], list[Any]]:
    """(training, validation, held-out) steps rows, by problem. Validation problems are set
    aside only where they choose the epoch (``select = "best"``)."""
    from prmtree.train.data import split_rows

    train_rows, test_rows = split_rows(rows, options.test_share)
    if options.select != "best":
        return train_rows, [], test_rows
    train_rows, val_rows = split_rows(train_rows, options.val_share, salt="validation")
    return train_rows, val_rows, test_rows


def _check_workers(options: TrainOptions) -> None:
    """Refuse more Ray workers than training paths before Ray starts (a worker's refusal
    would come back as Ray's failure): counted before ``--max-length``, which each worker
    checks again."""
    from prmtree.train.data import load_rows

    rows = load_rows(options.data, with_images=False, allow_partial=options.allow_partial,
                     keep_flagged=options.keep_flagged, labels=options.labels)
    train_rows, _ = training_paths(options, split_for_training(options, rows)[0])  # as each worker splits
    if not train_rows:
        raise ConfigError(f"--data {options.data}: no labelled steps to train on ({len(rows)} paths)")
    _check_used(options, len(train_rows), len(train_rows), options.workers)


def interrupted(out: str | Path) -> str:
    """What ``prmtree train`` says when Ctrl-C stops it: how to go on from what ``out`` holds."""
    found = _checkpoints(Path(out))
    if not found:
        return f"no checkpoint saved in {out} yet: run the same command again to start over"
    return (f"the last checkpoint is {found[-1]}: run the same command with --resume to continue "
            "(after the last step, --resume evaluates and saves the PRM)")


def train(options: TrainOptions) -> dict[str, Any]:
    """Train a PRM; returns the metrics also written to ``OUT/metrics.json``."""
    options.check()
    if not options.resume and (earlier := _checkpoints(Path(options.out))):
        # a second training into one --out mixed its checkpoints with the first's (a later
        # --resume took the other training's), and failed on the first step both saved
        raise ConfigError(f"--out {options.out} holds the checkpoints of an earlier training (up to "
                          f"{earlier[-1].name}): add --resume to continue it, or use another --out")
    if not options.workers:
        return train_loop(options)
    _check_workers(options)
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    options.out = str(Path(options.out).resolve())
    options.data = str(Path(options.data).resolve()) if Path(options.data).exists() else options.data
    gpus = options.gpus_per_worker
    scaling = ScalingConfig(num_workers=options.workers, use_gpu=gpus > 0,
                            resources_per_worker={"CPU": 1, **({"GPU": gpus} if gpus else {})})
    trainer = TorchTrainer(_ray_worker, train_loop_config={"options": asdict(options)}, scaling_config=scaling,
                           run_config=RunConfig(storage_path=str(Path(options.out) / "ray"), name="prmtree-train"))
    fit = trainer.fit()
    if getattr(fit, "error", None):
        raise RuntimeError(f"Ray Train failed: {fit.error}")
    metrics_file = Path(options.out) / "metrics.json"
    if not metrics_file.is_file():
        sys.stderr.write("prmtree train: Ray Train finished without writing metrics.json\n")
        return {}
    return json.loads(metrics_file.read_text())
