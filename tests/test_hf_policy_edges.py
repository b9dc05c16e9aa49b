"""The hf policy at its edges: stop strings only inside the generated text, sampling that a
checkpoint's generation_config.json cannot change, a model folder without a chat template.

The stop tests use a "bigram" Qwen2 built here: its layers are zeroed, so the next token
depends only on the current one, and the text it writes is known in advance."""

import asyncio
import json
import math
import shutil

import pytest

from prmtree.engine.errors import PolicyConfigError
from prmtree.engine.records import GenerationRequest
from prmtree.engine.synthetic import generate_problems
from prmtree.policies.hf_policy import HFPolicy

PROBLEM = generate_problems(1, seed=4)[0]


def build_bigram(directory, chain: dict[str, dict[str, float]]):
    """A Qwen2 whose next token depends only on the current one: ``chain`` maps a token to
    the probabilities of its successors (every other token is followed by "x")."""
    import torch
    from tiny_models import build_tokenizer
    from transformers import Qwen2Config, Qwen2ForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(directory)
    vocab = len(tok)
    hidden = 2 * math.ceil(vocab / 2)  # one-hot embeddings
    config = Qwen2Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=2048, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, tie_word_embeddings=False,
    )
    model = Qwen2ForCausalLM(config)
    ids = tok.convert_tokens_to_ids
    logits = torch.full((vocab, vocab), -30.0)  # [next, current]
    logits[ids("x"), :] = 0.0
    for current, successors in chain.items():
        logits[:, ids(current)] = -30.0
        for successor, p in successors.items():
            logits[ids(successor), ids(current)] = math.log(p)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.zero_()
        model.model.embed_tokens.weight[:, :vocab].copy_(torch.eye(vocab))
        model.model.norm.weight.fill_(1.0)
        model.lm_head.weight.zero_()
        model.lm_head.weight[:, :vocab].copy_(logits / math.sqrt(hidden))  # the norm scales one-hots by sqrt(hidden)
    model.save_pretrained(directory, safe_serialization=True)
    (directory / "generation_config.json").unlink(missing_ok=True)
    return directory


#: Tokens that write "x = 7.\n" (any token not in a chain is followed by "x").
STEP = {"x": {"Ġ=": 1.0}, "Ġ=": {"Ġ7": 1.0}, "Ġ7": {".": 1.0}, ".": {"Ċ": 1.0}}


def gen(policy, **kw):
    return asyncio.run(policy.generate(GenerationRequest(PROBLEM, **kw)))


def test_step_marker_stop_does_not_match_across_the_prompt(tmp_path):
    # The root prompt ends "assistant\n"; the model writes "Step 1: x = 7.\nStep 1: ...". The
    # stop "\nStep " must not match the prompt's newline and the first "Step ".
    chain = {**STEP, "Ċ": {"Step": 1.0}, "Step": {"Ġ1": 1.0}, "Ġ1": {":": 1.0}, ":": {"Ġx": 1.0},
             "Ġx": {"Ġ=": 1.0}}
    policy = HFPolicy(str(build_bigram(tmp_path / "m", chain)))
    assert policy.prompt(GenerationRequest(PROBLEM, (), n=1, step_format="step_marker")).endswith("\n")
    whole = gen(policy, prefix=(), n=1, max_tokens=20, temperature=0.0, step_format="step_marker")
    assert whole[0].text.startswith("Step 1: x = 7.\nStep 1: x = 7.")
    step = gen(policy, prefix=(), n=1, max_tokens=40, temperature=0.0, step_format="step_marker",
               next_step_only=True)
    assert [(c.text, c.finish_reason) for c in step] == [("Step 1: x = 7.", "stop")]
    assert step[0].num_tokens == 10  # stopped at the first "\nStep " it wrote, not run to max_tokens


def test_blank_line_stop_needs_two_generated_newlines(tmp_path):
    # The prefix prompt ends "x = 3.\n\n"; a first generated "\n" is not a blank line yet.
    policy = HFPolicy(str(build_bigram(tmp_path / "m", {**STEP, "Ċ": {"Ċ": 0.5, "x": 0.5}})))
    assert policy.prompt(GenerationRequest(PROBLEM, ("x = 3.",), n=1)).endswith("x = 3.\n\n")
    out = gen(policy, prefix=("x = 3.",), n=24, max_tokens=40, seed=5, next_step_only=True)
    texts = [c.text for c in out]
    assert "\n" not in texts  # was: stopped at once, the step "\n"
    assert "\nx = 7." in texts and "x = 7." in texts
    assert all("\n\n" not in t for t in texts)


@pytest.fixture(scope="module")
def with_checkpoint_sampling(tiny_text_model, tmp_path_factory):
    """The tiny model with the sampling defaults Qwen2-VL checkpoints ship (and more)."""
    folder = tmp_path_factory.mktemp("gc") / "model"
    shutil.copytree(tiny_text_model, folder)
    (folder / "generation_config.json").write_text(json.dumps({
        "do_sample": True, "top_k": 1, "top_p": 0.001, "temperature": 0.1, "repetition_penalty": 1.5,
        "no_repeat_ngram_size": 1, "typical_p": 0.2, "min_p": 0.5,
    }))
    return folder


def test_checkpoint_sampling_defaults_do_not_apply(tiny_text_model, with_checkpoint_sampling):
    plain, shipped = HFPolicy(str(tiny_text_model)), HFPolicy(str(with_checkpoint_sampling))
    for temperature, n in ((0.7, 8), (0.0, 1)):
        kw = dict(prefix=(), n=n, max_tokens=10, seed=1, temperature=temperature)
        assert [c.text for c in gen(shipped, **kw)] == [c.text for c in gen(plain, **kw)], temperature
    samples = gen(shipped, prefix=(), n=8, max_tokens=10, seed=1, temperature=0.7)
    assert len({c.text for c in samples}) > 1  # was: top_k=1, eight copies of one text


def test_checkpoint_eos_ids_still_end_a_completion(tmp_path):
    # generation_config.json's eos ids are kept: "<|endoftext|>" ends the text like "<|im_end|>".
    chain = {**STEP, ".": {"<|endoftext|>": 1.0}}
    folder = build_bigram(tmp_path / "m", chain)
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0], "top_k": 1}))
    out = gen(HFPolicy(str(folder)), prefix=(), n=1, max_tokens=30, temperature=0.0)
    assert [(c.text, c.num_tokens, c.finish_reason) for c in out] == [("x = 7.", 4, "stop")]


def test_model_folder_without_chat_template_is_refused_at_build(tiny_text_model, tmp_path):
    folder = tmp_path / "no-template"
    shutil.copytree(tiny_text_model, folder)
    (folder / "chat_template.jinja").unlink()
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(PolicyConfigError, match=f"model folder {folder} has no chat template"):
        HFPolicy(str(folder))


def test_pad_id_zero_is_an_id(tiny_text_model, tmp_path):
    # A tokenizer whose pad token has id 0 (Llama's "<unk>" is one): generate pads with it,
    # not with the eos id. Completions cannot show which id padded their tails; the model's
    # generation config, which generate reads, can.
    folder = tmp_path / "pad0"
    shutil.copytree(tiny_text_model, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "pad_token": "<|endoftext|>"}))
    policy = HFPolicy(str(folder))
    assert policy.tokenizer.pad_token_id == 0
    assert policy.model.generation_config.pad_token_id == 0
    out = gen(policy, prefix=(), n=3, max_tokens=6, seed=2, next_step_only=True)
    assert len(out) == 3 and all(c.num_tokens <= 6 for c in out)


def test_a_vlm_folder_whose_template_is_its_tokenizers_only_is_built(tiny_vlm, tmp_path):
    # the review: the processor had no template, its tokenizer one: refused as "no chat template"
    folder = tmp_path / "tokenizer-template"
    shutil.copytree(tiny_vlm, folder)
    template = None
    for name in ("chat_template.jinja", "chat_template.json"):
        if (folder / name).exists():
            text = (folder / name).read_text()
            template = json.loads(text)["chat_template"] if name.endswith(".json") else text
            (folder / name).unlink()
    for name in ("processor_config.json", "preprocessor_config.json"):
        if (folder / name).exists():
            config = json.loads((folder / name).read_text())
            template = config.pop("chat_template", None) or template
            (folder / name).write_text(json.dumps(config))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert template or config.get("chat_template")
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": config.get("chat_template") or template}))
    policy = HFPolicy(str(folder))
    assert policy.processor.chat_template == policy.tokenizer.chat_template
    assert gen(policy, prefix=(), n=1, max_tokens=4, seed=1)
