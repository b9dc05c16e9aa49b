"""The HF backend on CUDA, on a machine that has only torch and transformers.

Stages prmtree's policy modules into a temporary package (the GPU machine has no
pyarrow, pydantic or networkx, which the policies do not need), builds the tiny LLaVA,
and checks: completions on CUDA, n per call, seed reproducibility, next-step stops,
and the request latency. Prints one JSON line.

    python benchmarks/gpu/hf_cuda_check.py
"""

import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
stage = Path(tempfile.mkdtemp(prefix="prmtree-stage-"))
shutil.copytree(REPO / "prmtree", stage / "prmtree")
shutil.copytree(REPO / "engine", stage / "prmtree" / "engine")
shutil.copytree(REPO / "policies", stage / "prmtree" / "policies")
sys.path[:0] = [str(stage), str(REPO / "tests")]

import torch  # noqa: E402

from prmtree.engine.synthetic import generate_problems  # noqa: E402
from prmtree.engine.records import GenerationRequest
from prmtree.policies.hf_policy import HFPolicy  # noqa: E402
from tiny_models import build_vlm  # noqa: E402


async def main() -> dict:
    model = build_vlm(stage / "tiny-vlm")
    policy = HFPolicy(str(model), device="cuda", dtype="float32")
    assert next(policy.model.parameters()).is_cuda
    problem = generate_problems(1, seed=3)[0]
    req = lambda **kw: GenerationRequest(problem, **{"prefix": ("x = 3.",), "n": 8, "max_tokens": 32, **kw})
    a = await policy.generate(req(seed=1))
    b = await policy.generate(req(seed=1))
    c = await policy.generate(req(seed=2))
    steps = await policy.generate(req(seed=3, next_step_only=True, max_tokens=64))
    t = time.perf_counter()
    for i in range(10):
        await policy.generate(req(seed=10 + i))
    per_request = (time.perf_counter() - t) / 10
    return {
        "device": torch.cuda.get_device_name(0),
        "n": len(a),
        "same_seed_same": [x.text for x in a] == [x.text for x in b],
        "other_seed_differs": [x.text for x in a] != [x.text for x in c],
        "next_step_clean": all("\n\n" not in x.text for x in steps),
        "seconds_per_request_k8_32_tokens": round(per_request, 4),
    }


if __name__ == "__main__":
    print("RESULT " + json.dumps(asyncio.run(main())))
