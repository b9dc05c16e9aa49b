"""``--step-logprobs``: the reward head also reads the LM's surprise at each step's tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import prmtree
from prmtree.engine.errors import ConfigError
from prmtree.engine.records import Problem
from prmtree.engine.synthetic import generate_problems
from prmtree.train import TrainOptions, train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("logprobs")
    prmtree.run(generate_problems(8, seed=11), policy="simulated", out=root / "run", seed=2)
    return root / "run"


def _opts(data: Path, out: Path, **kw) -> TrainOptions:
    base = dict(max_steps=3, batch_size=16, threads=1, save_every=2, quiet=True, max_length=256,
                tiny_layers=1, tiny_hidden=64)
    base.update(kw)
    return TrainOptions(data=str(data), out=str(out), **base)


def test_features_at_each_marker_are_that_steps_pooled_token_logprobs():
    import torch

    from prmtree.train.model import RewardModel, tiny_lm

    torch.manual_seed(0)
    marker = 3
    model = RewardModel(tiny_lm(20, 0, layers=1, hidden=64), 64, step_logprobs=True).eval()
    torch.nn.init.zeros_(model.pool.weight)  # equal attention: the learnt pooling is the mean
    ids = torch.tensor([[5, 6, 7, 8, 9, marker, 10, 11, marker, 0]])
    mask = torch.tensor([[1] * 9 + [0]])
    step_ids = torch.tensor([[-1, -1, 0, 0, 0, -1, 1, 1, -1, -1]])
    with torch.no_grad():
        states = model.body()(input_ids=ids, attention_mask=mask).last_hidden_state
        logits = model.lm.get_output_embeddings()(states)
        features = model.step_features(ids, states, logits, step_ids)
    logprobs = logits[0, :-1].log_softmax(-1).gather(-1, ids[0, 1:, None]).squeeze(-1)  # token i at index i - 1
    step0, step1 = logprobs[[1, 2, 3]], logprobs[[5, 6]]
    assert torch.allclose(features[0, 5], torch.stack([step0.mean(), step0.min()]), atol=1e-5)
    assert torch.allclose(features[0, 8], torch.stack([step1.mean(), step1.min()]), atol=1e-5)
    others = [i for i in range(10) if i not in (5, 8)]
    assert torch.count_nonzero(features[0, others]) == 0
    # the pooling attends: weights that score token 7 far above token 6 read token 7's log-probability
    with torch.no_grad():
        direction = states[0, 7] - states[0, 6]
        model.pool.weight.copy_(direction[None] * 1e4 / direction.norm() ** 2)
        picked = model.step_features(ids, states, logits, step_ids)
    assert torch.allclose(picked[0, 8, 0], logprobs[6], atol=1e-4)
    # a missing step_ids is an error, not a silent score without the features
    with pytest.raises(ValueError, match="pass step_ids"):
        model(ids, mask)


def test_the_encoder_assigns_each_steps_own_tokens_to_it():
    from prmtree.train.model import Encoder, tiny_tokenizer

    steps = ["I count 4 red shapes, so x = 4.", "Now add 6: x = 4 + 6 = 10.", "The answer is \\boxed{10}."]
    question = "How many red shapes, plus 6?"
    encoder = Encoder(None)
    tok = tiny_tokenizer([encoder.text(question, steps)])
    encoder = Encoder(tok)
    encoded = encoder.encode(question, steps)
    batch = encoder.collate([encoded])
    ids, step_ids = batch["input_ids"][0].tolist(), batch["step_ids"][0].tolist()
    for k, step in enumerate(steps):
        mine = [t for t, s in zip(ids, step_ids) if s == k]
        assert mine == tok(step, add_special_tokens=False)["input_ids"], k
    assert all(step_ids[p] == -1 for p in encoded["positions"])
    prompt = len(tok(question, add_special_tokens=False)["input_ids"])
    assert step_ids[:prompt] == [-1] * prompt


def test_a_tiny_prm_reads_step_logprobs_by_default_and_loads_as_trained(run_dir, tmp_path):
    from safetensors.torch import load_file

    from prmtree.train.model import HEAD_FILE

    train(_opts(run_dir, tmp_path / "on"))
    config = json.loads((tmp_path / "on" / "prm_config.json").read_text())
    assert config["step_logprobs"] is True and config["head"] == "mlp2-sigmoid+step-logprobs"
    head = load_file(str(tmp_path / "on" / HEAD_FILE))
    assert head["pool.weight"].shape == (1, 64) and head["0.weight"].shape == (64, 66)
    prm = prmtree.PRM.load(tmp_path / "on", device="cpu")
    assert prm.model.step_logprobs
    problem = Problem(id="p", question="Let x be 3. Then add 4.", answer="7")
    right = prm.score(problem, ["x = 3.", "Add 4: x = 3 + 4 = 7."])
    wrong = prm.score(problem, ["x = 3.", "Add 4: x = 3 + 4 = 9."])
    assert len(right) == 2 and all(0.0 <= r <= 1.0 for r in right)
    assert right[0] == pytest.approx(wrong[0], abs=1e-6)  # a causal model: step 1 is judged before step 2
    assert right[1] != pytest.approx(wrong[1], abs=1e-6)

    train(_opts(run_dir, tmp_path / "off", step_logprobs="off"))
    config = json.loads((tmp_path / "off" / "prm_config.json").read_text())
    assert config["step_logprobs"] is False and config["head"] == "mlp2-sigmoid"
    head = load_file(str(tmp_path / "off" / HEAD_FILE))
    assert "pool.weight" not in head and head["0.weight"].shape == (64, 64)
    assert not prmtree.PRM.load(tmp_path / "off", device="cpu").model.step_logprobs


def test_a_checkpoint_from_before_step_logprobs_resumes_without_them(run_dir, tmp_path):
    import torch

    train(_opts(run_dir, tmp_path / "old", max_steps=2, step_logprobs="off"))
    (state,) = (tmp_path / "old" / "checkpoints").glob("*/state.pt")
    saved = torch.load(state, map_location="cpu", weights_only=False)
    del saved["options"]["step_logprobs"]  # as an older prmtree wrote it: its head read the marker alone
    torch.save(saved, state)
    with pytest.raises(ConfigError, match=r"--resume: step_logprobs differ from the checkpoint's "
                                          r"\(step_logprobs='off'\)"):
        train(_opts(run_dir, tmp_path / "old", max_steps=3, resume=True))
    resumed = train(_opts(run_dir, tmp_path / "old", max_steps=3, resume=True, step_logprobs="off"))
    assert resumed["resumed_at"] == 2 and resumed["steps"] == 3


def test_a_bad_step_logprobs_value_is_a_one_line_error(run_dir, tmp_path):
    with pytest.raises(ConfigError, match="--step-logprobs must be one of auto, on, off, got 'yes'"):
        train(_opts(run_dir, tmp_path / "bad", step_logprobs="yes"))
