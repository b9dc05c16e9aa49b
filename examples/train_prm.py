"""Train a process reward model (PRM) on prmtree's output, end to end, with plain transformers + torch.

    prmtree demo --out out/demo
    prmtree export out/demo --format hf --to prm-data       # optional: a run's directory works too
    python examples/train_prm.py --data prm-data

The PRM reads the question and the steps, each step followed by a ``<step>`` token, and
a token-classification head predicts at every ``<step>`` whether the solution is still
right after that step (label 1) or not (label 0): the Qwen2.5-Math-PRM / OpenRLHF
recipe (a label at a marker after each step, read through a causal model, so each
prediction sees only the steps so far). Rows are split by problem into train and
held-out sets (the ``hf`` export's ``test`` split when it has one); the script prints
the training loss before and after, then on the held-out steps:

* step-level F1 for finding wrong steps (wrong = the positive class), and accuracy;
* first-error accuracy: the share of held-out paths where the first step predicted
  wrong is the first step labelled wrong (or both say "no wrong step").

By default it builds everything itself, with no download: a word-level tokenizer
trained on the training rows and a 2-layer Qwen2 of about 240K parameters, which trains
in seconds on a CPU. It is text-only: it does not see the image. (For a PRM that sees
the image, export ``--format visualprm`` and fine-tune InternVL, see the README.)

For a real model on a GPU, change these arguments::

    python examples/train_prm.py --data prm-data --model Qwen/Qwen2.5-Math-1.5B-Instruct \\
        --device cuda --bf16 --lr 1e-5 --max-length 2048 --batch-size 8 --epochs 1 --save prm-out

``--model`` (a local path or Hub id; its tokenizer gets ``<step>`` as a new special token
and the embeddings are resized), ``--device cuda``, ``--bf16``, a learning rate of about
1e-5 to 2e-6 instead of 3e-3, ``--max-length`` to the context you need (steps cut off by it
lose their labels, as in OpenRLHF), a smaller ``--batch-size`` for memory, and
``--save`` to keep the model. Everything else stays as it is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

STEP = "<step>"
PAD, UNK = "[PAD]", "[UNK]"


# -- data ------------------------------------------------------------------------------


def _question(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    parts = []
    for message in prompt or []:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        else:
            parts.extend(p.get("text") or "" for p in content or [] if p.get("type") == "text")
    return "\n".join(p for p in parts if p)


def _rows(table: pa.Table, split: str) -> list[dict[str, Any]]:
    keep = [c for c in ("problem_id", "prompt", "completions", "labels") if c in table.column_names]
    rows = []
    for r in table.select(keep).to_pylist():
        steps, labels = [], []
        for step, label in zip(r["completions"] or [], r["labels"] or []):
            if label is None:  # undecided: the path's labels stop here
                break
            steps.append(str(step).strip())
            labels.append(int(bool(label)))
        if steps:
            question = _question(r["prompt"])
            rows.append({"problem_id": r.get("problem_id") or question, "question": question,
                         "steps": steps, "labels": labels, "split": split})
    return rows


def load_rows(path: Path) -> list[dict[str, Any]]:
    """Steps rows from a run's directory, an ``hf`` export, or a ``stepwise`` Parquet file."""
    if path.is_file():
        return _rows(pq.read_table(path), "")
    if any(path.glob("manifest*.json")):
        from prmtree.engine.output import read_table

        return _rows(read_table(path, "steps"), "")
    rows = []
    for split in ("train", "test"):
        files = sorted((path / "data").glob(f"{split}-*.parquet"))
        if files:
            rows += _rows(pa.concat_tables([pq.read_table(f) for f in files]), split if split == "test" else "")
    if not rows and not (path / "data").is_dir():
        sys.exit(f"train_prm: {path} is neither a prmtree run, an hf export nor a Parquet file")
    return rows


def _hashed(problem_id: str) -> bytes:
    return hashlib.blake2b(problem_id.encode(), digest_size=8).digest()


def split_rows(rows: list[dict[str, Any]], test_share: float) -> tuple[list[dict], list[dict]]:
    """Held-out rows: the export's test split, else a share of the problems chosen by a hash of their ids."""
    if any(r["split"] == "test" for r in rows):
        return [r for r in rows if r["split"] != "test"], [r for r in rows if r["split"] == "test"]
    problems = sorted({r["problem_id"] for r in rows}, key=_hashed)
    n_test = min(len(problems) - 1, max(1, math.ceil(test_share * len(problems))))
    held = set(problems[:n_test])
    return [r for r in rows if r["problem_id"] not in held], [r for r in rows if r["problem_id"] in held]


def text_of(row: dict[str, Any]) -> str:
    return row["question"] + "\n" + "".join(f"{step} {STEP}\n" for step in row["steps"])


# -- model -----------------------------------------------------------------------------


def tiny_tokenizer(texts: list[str]):
    """A word-level tokenizer trained on the training texts, ``<step>`` a special token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=[PAD, UNK, STEP]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, unk_token=UNK)


def tiny_model(vocab_size: int, max_length: int, pad_id: int):
    """A 2-layer causal Qwen2 with a token-classification head, about 240K parameters."""
    from transformers import Qwen2Config, Qwen2ForTokenClassification

    config = Qwen2Config(
        vocab_size=vocab_size, hidden_size=96, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=max_length, num_labels=2, pad_token_id=pad_id,
        tie_word_embeddings=False,
    )
    return Qwen2ForTokenClassification(config)


def real_model(name: str, bf16: bool):
    import transformers
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name)
    tok.add_tokens([STEP], special_tokens=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    new = tuple(int(x) for x in transformers.__version__.split(".")[:2] if x.isdigit()) >= (4, 56)
    dtype = {("dtype" if new else "torch_dtype"): torch.bfloat16} if bf16 else {}  # renamed in 4.56
    model = AutoModelForTokenClassification.from_pretrained(name, num_labels=2, **dtype)
    model.resize_token_embeddings(len(tok))
    model.config.pad_token_id = tok.pad_token_id
    return tok, model


def encode(rows: list[dict[str, Any]], tok, max_length: int) -> list[dict[str, Any]]:
    """Token ids and per-token labels: the step's label at its ``<step>`` token, -100 elsewhere."""
    step_id = tok.convert_tokens_to_ids(STEP)
    encoded = []
    for row in rows:
        ids = tok(text_of(row), add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
        positions = [i for i, t in enumerate(ids) if t == step_id]
        labels = [-100] * len(ids)
        for pos, label in zip(positions, row["labels"]):
            labels[pos] = label
        encoded.append({"ids": ids, "labels": labels, "steps": len(positions), "row": row})
    return encoded


def batches(items: list[dict[str, Any]], size: int, pad_id: int, device: str):
    for start in range(0, len(items), size):
        chunk = items[start : start + size]
        width = max(len(x["ids"]) for x in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, x in enumerate(chunk):
            n = len(x["ids"])
            ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(x["ids"]), torch.tensor(x["labels"]), 1
        yield chunk, ids.to(device), mask.to(device), labels.to(device)


@torch.no_grad()
def mean_loss(model, items, batch_size: int, pad_id: int, device: str) -> float:
    model.eval()
    total, count = 0.0, 0
    for _, ids, mask, labels in batches(items, batch_size, pad_id, device):
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum").item()
        count += int((labels != -100).sum())
    return total / max(count, 1)


@torch.no_grad()
def evaluate(model, items, batch_size: int, pad_id: int, device: str) -> dict[str, Any]:
    model.eval()
    tp = fp = fn = correct = steps = first_hits = paths = 0
    for chunk, ids, mask, labels in batches(items, batch_size, pad_id, device):
        right = model(input_ids=ids, attention_mask=mask).logits.float().softmax(-1)[..., 1]
        for i in range(len(chunk)):
            at = (labels[i] != -100).nonzero().flatten()
            if not len(at):
                continue
            pred = (right[i, at] >= 0.5).long().tolist()
            gold = labels[i, at].tolist()
            for p, g in zip(pred, gold):
                tp += p == 0 and g == 0
                fp += p == 0 and g == 1
                fn += p == 1 and g == 0
                correct += p == g
                steps += 1
            first_pred = pred.index(0) if 0 in pred else None
            first_gold = gold.index(0) if 0 in gold else None
            first_hits += first_pred == first_gold
            paths += 1
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"step_f1_wrong": f1, "step_precision_wrong": precision, "step_recall_wrong": recall,
            "step_accuracy": correct / max(steps, 1), "first_error_accuracy": first_hits / max(paths, 1),
            "held_out_steps": steps, "held_out_paths": paths}


# -- main ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="On a GPU with a real model change --model, --device cuda, --bf16, --lr (1e-5), --max-length, "
        "--batch-size and --save (see the module docstring).",
    )
    p.add_argument("--data", required=True, help="a `prmtree export --format hf` folder, a run's folder, or a .parquet")
    p.add_argument("--model", help="path or Hub id of a real model (default: build a tiny one, no download)")
    p.add_argument("--epochs", type=float, default=3.0, help="passes over the training rows (default 3)")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many optimiser steps (0: no limit)")
    p.add_argument("--lr", type=float, default=3e-3, help="learning rate (default 3e-3, for the tiny model)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=512, help="tokens per row; steps past it lose their labels")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or auto (default)")
    p.add_argument("--bf16", action="store_true", help="load a real model in bfloat16")
    p.add_argument("--test-share", type=float, default=0.2, help="held-out share of problems (if no test split)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--save", help="directory to save the trained model and tokenizer")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()

    rows = load_rows(Path(args.data))
    train_rows, test_rows = split_rows(rows, args.test_share)
    if not train_rows or not test_rows:
        sys.exit(f"train_prm: need rows of at least two problems, got {len(rows)} rows")
    if args.model:
        tok, model = real_model(args.model, args.bf16)
    else:
        tok = tiny_tokenizer([text_of(r) for r in train_rows])
        model = tiny_model(len(tok), args.max_length, tok.pad_token_id)
    model.to(device)
    pad_id = tok.pad_token_id
    train, test = encode(train_rows, tok, args.max_length), encode(test_rows, tok, args.max_length)
    cut = sum(len(x["row"]["steps"]) - x["steps"] for x in train + test)
    params = sum(p.numel() for p in model.parameters())
    print(f"{len(train)} training rows ({sum(x['steps'] for x in train)} steps), {len(test)} held-out rows "
          f"({sum(x['steps'] for x in test)} steps); {cut} steps past --max-length; "
          f"model {params:,} parameters on {device}")

    before = mean_loss(model, train, args.batch_size, pad_id, device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    per_epoch = math.ceil(len(train) / args.batch_size)
    total = math.ceil(args.epochs * per_epoch)
    if args.max_steps:
        total = min(total, args.max_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: min(1.0, (s + 1) / max(1, total // 10)))
    order, step = list(train), 0
    losses = []
    while step < total:
        random.shuffle(order)
        for _, ids, mask, labels in batches(order, args.batch_size, pad_id, device):
            if step >= total:
                break
            model.train()
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            schedule.step()
            step += 1
            losses.append(loss.item())
            if step % args.log_every == 0 or step == total:
                print(f"step {step}/{total}  loss {sum(losses[-args.log_every:]) / len(losses[-args.log_every:]):.4f}")
    after = mean_loss(model, train, args.batch_size, pad_id, device)
    metrics = evaluate(model, test, args.batch_size, pad_id, device)
    result = {"train_loss_before": before, "train_loss_after": after, "steps": step, **metrics,
              "seconds": time.perf_counter() - started}
    print(f"training loss {before:.4f} -> {after:.4f} in {step} steps")
    print(f"held-out: step F1 (wrong steps) {metrics['step_f1_wrong']:.3f}, step accuracy "
          f"{metrics['step_accuracy']:.3f}, first-error accuracy {metrics['first_error_accuracy']:.3f} "
          f"over {metrics['held_out_paths']} paths / {metrics['held_out_steps']} steps")
    if args.save:
        model.save_pretrained(args.save)
        tok.save_pretrained(args.save)
        print(f"saved to {args.save}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
