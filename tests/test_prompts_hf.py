"""Shared prompting, and the Hugging Face backend against real tiny models."""

import asyncio

import pytest

import prmtree
from prmtree.engine.driver import request_seed
from prmtree.engine.output import read_table
from prmtree.engine.steps import Segmenter
from prmtree.engine.synthetic import generate_problems
from prmtree.engine.records import GenerationRequest
from prmtree.policies.hf_policy import HFPolicy
from prmtree.policies.prompts import PromptStyle, continuation_for_parsing, messages, render

PROBLEM = generate_problems(1, seed=4)[0]


def test_prefix_is_an_open_assistant_turn(tiny_text_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_text_model)
    for fmt, tail in [("blank_line", "count 3\n\nadd 4\n\n"), ("step_marker", "Step 1: count 3\nStep 2: add 4\nStep 3:"),
                      ("tags", "<step>count 3</step><step>add 4</step><step>")]:
        req = GenerationRequest(PROBLEM, ("count 3", "add 4"), n=2, step_format=fmt)
        text = render(tok, req, PromptStyle(), multimodal=False)
        assert text.endswith("<|im_start|>assistant\n" + tail)  # no end-of-turn after the prefix
        assert text.count("<|im_end|>") == 2  # system and user turns closed, assistant open
    fresh = render(tok, GenerationRequest(PROBLEM, (), n=1), PromptStyle(), multimodal=False)
    assert fresh.endswith("<|im_start|>assistant\n")
    assert "\\boxed{answer}" in fresh and "blank line" in fresh


def test_messages_carry_images_as_placeholders_or_data_urls():
    req = GenerationRequest(PROBLEM, ("a",), n=1)
    placeholder = messages(req, PromptStyle())
    assert placeholder[1]["content"][0] == {"type": "image"}
    assert placeholder[-1] == {"role": "assistant", "content": "a\n\n"}
    urls = messages(req, PromptStyle(system_prompt=""), image_parts="data_url")
    assert urls[0]["role"] == "user"  # empty system prompt: no system turn
    assert urls[0]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,iVBOR")


def test_stop_strings_and_continuations_parse_back():
    for fmt in ("blank_line", "step_marker", "tags"):
        req = GenerationRequest(PROBLEM, ("a", "b"), n=1, step_format=fmt)
        model_text = {"blank_line": "c\n\nd \\boxed{1}", "step_marker": " c\nStep 4: d \\boxed{1}",
                      "tags": "c</step><step>d \\boxed{1}</step>"}[fmt]
        steps = Segmenter(fmt).split(continuation_for_parsing(model_text, req))
        assert steps == ["c", "d \\boxed{1}"], fmt
        assert req.step_format.stop_strings
    with pytest.raises(ValueError, match="step format must be one of"):
        GenerationRequest(PROBLEM, (), n=1, step_format="lines")


@pytest.fixture(scope="module")
def hf_text(tiny_text_model):
    return HFPolicy(str(tiny_text_model))


def gen(policy, **kw):
    return asyncio.run(policy.generate(GenerationRequest(PROBLEM, **kw)))


def test_hf_n_samples_seeded(hf_text):
    a = gen(hf_text, prefix=("x = 3.",), n=3, max_tokens=12, seed=1)
    b = gen(hf_text, prefix=("x = 3.",), n=3, max_tokens=12, seed=1)
    c = gen(hf_text, prefix=("x = 3.",), n=3, max_tokens=12, seed=2)
    assert len(a) == 3
    assert [x.text for x in a] == [x.text for x in b]
    assert [x.text for x in a] != [x.text for x in c]
    assert all(x.num_tokens <= 12 for x in a)
    assert any(x.finish_reason == "length" for x in a)


def test_hf_next_step_only_stops_at_the_delimiter(hf_text):
    out = gen(hf_text, prefix=(), n=4, max_tokens=40, seed=3, next_step_only=True)
    assert all("\n\n" not in c.text for c in out)


def test_hf_prompt_is_the_shared_prompt(hf_text, tiny_text_model):
    from transformers import AutoTokenizer

    req = GenerationRequest(PROBLEM, ("a",), n=1)
    assert hf_text.prompt(req) == render(AutoTokenizer.from_pretrained(tiny_text_model), req, PromptStyle(),
                                         multimodal=False)


def test_hf_multimodal_run_writes_rollouts_that_came_from_the_model(tmp_path, tiny_vlm):
    problems = generate_problems(2, seed=9)
    config = {"seed": 4, "search": {"strategy": "mcts", "k": 2, "branching": 2, "budget": 6, "max_tokens": 12},
              "labels": {"method": "mc"}}  # one batch per node: the request count is exact
    s = prmtree.run(problems, policy="hf", policy_args={"model": str(tiny_vlm)}, out=tmp_path, config=config)
    assert s.problems_done == 2 and s.rollouts == 12
    nodes = read_table(tmp_path, "nodes").to_pylist()
    assert {n["problem_id"] for n in nodes} == {p.id for p in problems}
    # Regenerate the first expansion with the same seed: the tree's children are its steps.
    policy = HFPolicy(str(tiny_vlm))
    for p in problems:
        root = next(n for n in nodes if n["problem_id"] == p.id and n["depth"] == 0)
        children = sorted(n["step"] for n in nodes if n["parent_id"] == root["node_id"])
        request = GenerationRequest(p, (), n=2, max_tokens=12, temperature=0.7,
                                    seed=request_seed(4, p.id, root["node_id"], 0), next_step_only=True)
        again = asyncio.run(policy.generate(request))
        expected = sorted({Segmenter().first_step(c.text)[0] for c in again if Segmenter().first_step(c.text)})
        assert children == expected
    assert s.stats["tokens"] > 0
