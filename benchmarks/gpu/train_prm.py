"""GPU runbook for ``prmtree train``: bf16, a model built from a config, Ray Train with one worker.

Issue 22's GPU check. A GPU machine with no network cannot download a base model, so the
model is built here from a Qwen2 config (random weights, a byte-level BPE tokenizer built
on the spot) and saved in bf16; training then goes through exactly what a user runs:
``prmtree.train.train`` with ``workers=1`` (a ``ray.train.torch.TorchTrainer`` around the
HF model, one GPU per worker), or in this process with ``--workers 0``.

It reports training throughput (tokens/s), peak GPU memory, the loss before and after,
and the held-out step metrics, and writes them to ``results/gpu_train_prm.json``.

Needs ``pip install 'prmtree[train]'`` and Ray (for ``--workers 1``). The data is a run
made on the spot from synthetic problems (``--problems``), or ``--data RUN_DIR``.

    python benchmarks/gpu/train_prm.py                      # 0.5B-shaped Qwen2, bf16, Ray Train, 1 GPU
    python benchmarks/gpu/train_prm.py --size small --device cpu --workers 0 --max-steps 4   # a CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"

#: Qwen2 shapes (the vocabulary is the tokenizer's): "0.5b" is Qwen2.5-0.5B's body.
SIZES = {
    "small": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2),
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2),
}


def build_model(directory: Path, size: str, bf16: bool) -> Path:
    """A Qwen2 causal LM of ``size`` with random weights and a BPE tokenizer, saved as an HF model."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    sys.path.insert(0, str(REPO / "tests"))
    from tiny_models import build_tokenizer

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(directory)
    config = Qwen2Config(
        vocab_size=len(tokenizer), max_position_embeddings=4096, tie_word_embeddings=True,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tokenizer.pad_token_id,
        **SIZES[size],
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    if bf16:
        model = model.to(torch.bfloat16)
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def make_data(directory: Path, problems: int, seed: int) -> Path:
    """A run over synthetic problems, as ``prmtree demo`` searches them."""
    import prmtree
    from prmtree.engine.synthetic import generate_problems

    shutil.rmtree(directory, ignore_errors=True)
    prmtree.run(generate_problems(problems, seed=seed), policy="simulated", strategy="omega", out=directory, seed=seed)
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="0.5b")
    parser.add_argument("--data", help="a prmtree run or hf export (default: one made here)")
    parser.add_argument("--problems", type=int, default=200, help="synthetic problems for the run made here")
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers (0: train in this process)")
    parser.add_argument("--device", default="auto", help="auto | cuda | cpu")
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--no-bf16", action="store_true", help="train in float32")
    parser.add_argument("--work", default="/tmp/prmtree-gpu-train")
    parser.add_argument("--out", default=str(RESULTS / "gpu_train_prm.json"))
    args = parser.parse_args(argv)

    import torch

    from prmtree.train.trainer import TrainOptions, train

    cuda = torch.cuda.is_available() and args.device in ("auto", "cuda")
    if args.device == "cuda" and not cuda:
        sys.exit("train_prm: --device cuda, but torch sees no GPU")
    bf16 = not args.no_bf16
    work = Path(args.work)
    start = time.perf_counter()
    data = Path(args.data) if args.data else make_data(work / "run", args.problems, 0)
    data_s = time.perf_counter() - start
    model_dir = build_model(work / f"qwen2-{args.size}", args.size, bf16)
    options = TrainOptions(
        data=str(data), out=str(work / "prm"), model=str(model_dir), bf16=bf16, max_steps=args.max_steps,
        batch_size=args.batch_size, lr=1e-4, workers=args.workers, gpus_per_worker=1.0 if cuda and args.workers else 0.0,
        device="cuda" if cuda else "cpu", save_every=0, log_every=20,
    )
    shutil.rmtree(options.out, ignore_errors=True)
    metrics = train(options)
    report = {
        "size": args.size, "bf16": bf16, "workers": args.workers, "ray_train": args.workers > 0,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
        "data": str(data), "data_s": round(data_s, 1), "batch_size": args.batch_size,
        **{k: metrics.get(k) for k in ("parameters", "steps", "tokens_per_s", "peak_memory_mb", "loss_first",
                                       "loss_last_10", "train_paths", "held_out_paths", "held_out", "seconds")},
    }
    if args.workers > 0 and cuda:
        report["peak_memory_note"] = "measured in the Ray Train worker (rank 0), torch.cuda.max_memory_allocated"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
