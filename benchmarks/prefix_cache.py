"""Prefix caching: k = 8 rollouts from each of many prefixes, caching on and off.

A search tree asks for rollouts from ever longer prefixes of the same problem; with
vLLM's prefix caching the shared part of the prompt is computed once. This script
builds a tiny Qwen2 (no downloads), then for each setting starts an in-process vLLM
engine and sends, tree by tree and wave by wave as the driver does, k = 8 rollouts
from each prefix of several solution paths. Reports rollouts/s and the share of prompt
tokens served from the cache. Runs on vLLM's CPU build here, on CUDA where vLLM is.

    python benchmarks/prefix_cache.py [--trees 16] [--depth 12]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


async def measure(model: str, caching: bool, trees: int, depth: int, k: int, device: str) -> dict:
    from prmtree.engine.synthetic import generate_problems
    from prmtree.engine.records import GenerationRequest
    from prmtree.policies.vllm_policy import VLLMPolicy

    policy = VLLMPolicy(
        model, dtype="float32" if device == "cpu" else "auto", gpu_memory_utilization=0.2 if device == "cpu" else 0.5,
        max_model_len=2048, enable_prefix_caching=caching,
    )
    problems = generate_problems(trees, seed=0, min_steps=12, max_steps=12)
    step = "Now add the number of blue shapes to x, which gives x = 12 + 5 = 17, as the chart shows."
    await policy.generate(GenerationRequest(problems[0], (), n=1, max_tokens=1, seed=0))  # warm up
    prompt_tokens = cached = rollouts = 0
    t = time.perf_counter()

    async def tree(problem):
        nonlocal prompt_tokens, cached, rollouts
        for d in range(depth):  # one wave per depth: the driver's binary/linear search
            prefix = tuple(f"{step} (step {i + 1})" for i in range(d))
            out = await policy.generate(GenerationRequest(problem, prefix, n=k, max_tokens=16, seed=d))
            prompt_tokens += out[0].prompt_tokens
            cached += out[0].cached_tokens
            rollouts += len(out)

    await asyncio.gather(*(tree(p) for p in problems))
    seconds = time.perf_counter() - t
    policy.close()
    return {"prefix_caching": caching, "trees": trees, "depth": depth, "k": k, "rollouts": rollouts,
            "seconds": round(seconds, 3), "rollouts_per_s": round(rollouts / seconds, 1),
            "prompt_tokens": prompt_tokens, "cached_prompt_tokens": cached,
            "cached_share": round(cached / prompt_tokens, 4) if prompt_tokens else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=int, default=16)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--model", help="a model directory (default: build a tiny Qwen2)")
    args = parser.parse_args()
    from vllm.platforms import current_platform

    device = "cpu" if current_platform.is_cpu() else "cuda"
    model = args.model
    if model is None:
        from tiny_models import build_text_model

        model = str(build_text_model(Path(tempfile.mkdtemp(prefix="prmtree-tiny-"))))
    runs = [asyncio.run(measure(model, caching, args.trees, args.depth, args.k, device)) for caching in (False, True)]
    for r in runs:
        print(f"prefix caching {'on ' if r['prefix_caching'] else 'off'}: {r['rollouts']} rollouts in "
              f"{r['seconds']:.2f} s = {r['rollouts_per_s']:.0f} rollouts/s; "
              f"{r['cached_share']:.1%} of {r['prompt_tokens']} prompt tokens from cache")
    ratio = runs[1]["rollouts_per_s"] / runs[0]["rollouts_per_s"]
    print(f"throughput with caching / without: {ratio:.2f}x ({device})")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"prefix_cache_{device}.json").write_text(
        json.dumps({"device": device, "runs": runs, "speedup": round(ratio, 3)}, indent=2))


if __name__ == "__main__":
    main()
