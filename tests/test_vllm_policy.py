"""The vLLM backend against a real (tiny) model on vLLM's CPU build.

The engine runs in a subprocess (vLLM spawns); the multimodal request path is checked
by building the exact engine inputs (vLLM's multimodal model code needs torchvision,
which the CPU build cannot load), and runs for real on a GPU machine.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import starts_processes
from PIL import Image

from prmtree.engine.output import read_table
from prmtree.engine.synthetic import generate_problems
from prmtree.engine.records import GenerationRequest
from prmtree.policies.prompts import PromptStyle, render

pytestmark = pytest.mark.vllm
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
@starts_processes("vllm")
def scenario(tmp_path_factory, tiny_text_model):
    out = tmp_path_factory.mktemp("vllm-run")
    r = subprocess.run([sys.executable, str(HERE / "vllm_scenario.py"), str(tiny_text_model), str(out)],
                       capture_output=True, text=True, timeout=600, cwd=HERE)
    lines = [line for line in r.stdout.splitlines() if line.startswith("RESULT ")]
    assert r.returncode == 0 and lines, r.stderr[-3000:]
    return json.loads(lines[0][len("RESULT "):]), out


def test_n_completions_per_call_seeded(scenario):
    result, _ = scenario
    assert result["n"] == 4
    assert result["same_seed_same"] and result["other_seed_differs"]
    assert all(0 < t <= 16 for t in result["tokens"])


def test_prefix_cache_hits_are_reported(scenario):
    result, _ = scenario
    assert result["prompt_tokens"] > 0
    assert 0 < result["cached_second"] <= result["prompt_tokens"]
    assert result["cached_other_completions"] == [0, 0, 0]  # the prompt is counted once per request


def test_next_step_only_and_length(scenario):
    result, _ = scenario
    assert all("\n\n" not in t for t in result["step_texts"])
    assert result["length_reasons"] == ["length", "length"]
    assert result["many_counts"] == [8] * 6


def test_same_prompt_as_every_backend(scenario, tiny_text_model):
    from transformers import AutoTokenizer

    result, _ = scenario
    problem = generate_problems(1, seed=2)[0]
    req = GenerationRequest(problem, ("x = 3.", "x = 7."), n=4)
    assert result["prompt"] == render(AutoTokenizer.from_pretrained(tiny_text_model), req, PromptStyle(),
                                      multimodal=False)


def test_prmtree_run_with_vllm_writes_shards(scenario):
    result, out = scenario
    run = result["run"]
    assert run["problems_done"] == 3 and run["rollouts"] > 0
    assert run["cached_tokens"] > 0  # a tree's requests share prefixes
    nodes = read_table(out, "nodes")
    assert nodes.num_rows > 3


def test_multimodal_engine_inputs(tiny_vlm):
    from prmtree.policies.vllm_policy import VLLMPolicy, image_uuid

    policy = VLLMPolicy(str(tiny_vlm), gpu_memory_utilization=0.2)
    assert policy.multimodal and policy.engine_args["limit_mm_per_prompt"] == {"image": 4}
    assert policy.engine_args["enable_prefix_caching"] is True
    problem = generate_problems(1, seed=3)[0]
    prompt, params = policy.engine_inputs(GenerationRequest(problem, ("a",), n=8, seed=11, max_tokens=99,
                                                            next_step_only=True))
    assert prompt["prompt"].count("<image>") == 1
    assert prompt["prompt"].endswith("<|im_start|>assistant\na\n\n")
    (image,) = prompt["multi_modal_data"]["image"]
    assert isinstance(image, Image.Image) and image.size == (160, 160)
    assert prompt["multi_modal_uuids"] == {"image": [image_uuid(problem.images[0].data)]}
    other, _ = policy.engine_inputs(GenerationRequest(problem, ("a", "b"), n=8, seed=12))
    assert other["multi_modal_uuids"] == prompt["multi_modal_uuids"]  # one encoding per image, reused
    assert (params.n, params.seed, params.max_tokens, params.stop) == (8, 11, 99, ["\n\n"])
