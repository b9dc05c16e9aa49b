"""Run in a subprocess by test_vllm_policy.py: vLLM spawns engine processes, so it gets a
``__main__`` of its own. Prints one JSON line of observations for the test to check.

Engines start eager (``enforce_eager``: no torch.compile): 32 s to start here against 55 s,
and nothing checked here depends on compiled kernels."""

import asyncio
import json
import sys

from prmtree.engine.synthetic import generate_problems
from prmtree.engine.records import GenerationRequest
from prmtree.policies.vllm_policy import VLLMPolicy

EAGER = {"enforce_eager": True}


async def direct(model: str) -> dict:
    policy = VLLMPolicy(model, dtype="float32", gpu_memory_utilization=0.2, max_model_len=1024, engine_kwargs=EAGER)
    problem = generate_problems(1, seed=2)[0]
    req = lambda **kw: GenerationRequest(problem, **{"prefix": ("x = 3.", "x = 7."), "n": 4, "max_tokens": 16, **kw})
    a = await policy.generate(req(seed=1))
    b = await policy.generate(req(seed=1))
    c = await policy.generate(req(seed=2))
    step = await policy.generate(req(seed=5, n=6, max_tokens=64, next_step_only=True))
    long = await policy.generate(req(seed=6, n=2, max_tokens=3))
    # many prefixes in flight at once, k = 8 each
    many = await asyncio.gather(*(policy.generate(req(seed=10 + i, n=8, prefix=("x",) * i)) for i in range(6)))
    policy.close()
    return {
        "n": len(a),
        "same_seed_same": [x.text for x in a] == [x.text for x in b],
        "other_seed_differs": [x.text for x in a] != [x.text for x in c],
        "tokens": [x.num_tokens for x in a],
        "cached_second": b[0].cached_tokens,
        "prompt_tokens": b[0].prompt_tokens,
        "cached_other_completions": [x.cached_tokens for x in b[1:]],
        "step_texts": [x.text for x in step],
        "length_reasons": [x.finish_reason for x in long],
        "many_counts": [len(m) for m in many],
        "prompt": policy.engine_inputs(req(seed=1))[0]["prompt"],
    }


if __name__ == "__main__":
    model, out = sys.argv[1], sys.argv[2]
    result = asyncio.run(direct(model))
    import prmtree

    summary = prmtree.run(
        generate_problems(3, seed=6),
        policy="vllm",
        policy_args={"model": model, "dtype": "float32", "gpu_memory_utilization": 0.2, "max_model_len": 1024,
                     "engine_kwargs": EAGER},
        out=out,
        config={"seed": 1, "search": {"strategy": "mcts", "k": 4, "branching": 2, "budget": 30, "max_tokens": 16}},
    )
    result["run"] = {"problems_done": summary.problems_done, "rollouts": summary.rollouts,
                     "cached_tokens": summary.stats["cached_tokens"], "prompt_tokens": summary.stats["prompt_tokens"]}
    print("RESULT " + json.dumps(result))
