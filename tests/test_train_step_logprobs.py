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
    # val_share=0: these tests count and compare the training split itself
    base = dict(max_steps=3, batch_size=16, threads=1, save_every=2, quiet=True, max_length=256, val_share=0.0,
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
    step_ids = torch.tensor([[-1, -1, 0, 0, 0, -2, 1, 1, -3, -1]])  # -(k + 2): step k's marker
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
    assert [step_ids[p] for p in encoded["positions"]] == [-2, -3, -4]
    prompt = len(tok(question, add_special_tokens=False)["input_ids"])
    assert step_ids[:prompt] == [-1] * prompt


def test_a_byte_level_bpe_step_span_holds_the_step_and_not_the_space_or_newline_around_its_marker(tmp_path):
    from tiny_models import build_tokenizer

    from prmtree.train.model import MARKER, Encoder

    tok = build_tokenizer(tmp_path)  # byte-level BPE with a chat template, as Qwen2's
    tok.add_tokens([MARKER], special_tokens=True)
    encoder = Encoder(tok)
    steps = ["There are 3 red shapes.", "Add 4: x = 3 + 4 = 7.", "The answer is 7."]
    encoded = encoder.encode("How many shapes, plus 4?", steps)
    batch = encoder.collate([encoded])
    ids, step_ids = batch["input_ids"][0].tolist(), batch["step_ids"][0].tolist()
    assert len(encoded["positions"]) == 3
    for k, step in enumerate(steps):
        mine = [t for t, s in zip(ids, step_ids) if s == k]
        assert tok.decode(mine) == step, (k, tok.convert_ids_to_tokens(mine))
    # a token of its own (the space) between a step and its marker: the features still land on the marker
    import torch

    from prmtree.train.model import RewardModel, tiny_lm

    assert any(step_ids[p - 1] == -1 for p in encoded["positions"])
    model = RewardModel(tiny_lm(len(tok), tok.pad_token_id, layers=1, hidden=64), 64, step_logprobs=True).eval()
    with torch.no_grad():
        states = model.body()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        logits = model.lm.get_output_embeddings()(states)
        features = model.step_features(batch["input_ids"], states, logits, batch["step_ids"])[0]
    at_markers = features[encoded["positions"]]
    assert (at_markers[:, 1] < 0).all()  # each marker reads its step's lowest log-probability
    others = [i for i in range(len(ids)) if i not in encoded["positions"]]
    assert torch.count_nonzero(features[others]) == 0


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
    # "auto" is "on" for --model tiny: a checkpoint made with one resumes with the other
    train(_opts(run_dir, tmp_path / "auto", max_steps=2))
    assert train(_opts(run_dir, tmp_path / "auto", max_steps=3, resume=True, step_logprobs="on"))["steps"] == 3


def test_a_bad_step_logprobs_value_is_a_one_line_error(run_dir, tmp_path):
    with pytest.raises(ConfigError, match="--step-logprobs must be one of auto, on, off, got 'yes'"):
        train(_opts(run_dir, tmp_path / "bad", step_logprobs="yes"))


# -- what the PRM trains on: the steps table or the search trees --------------------------


def test_tree_paths_carry_the_steps_after_a_wrong_one_and_follow_the_nodes(run_dir):
    from prmtree.engine.output import read_table
    from prmtree.train import load_rows
    from prmtree.train.data import tree_rows

    rows = load_rows(run_dir, with_images=False)
    assert all(False not in r.labels[:-1] for r in rows)  # the steps table: each path ends at its first wrong step
    tree = tree_rows(run_dir, rows)
    assert tree and {r.problem_id for r in tree} <= {r.problem_id for r in rows}
    after = [r for r in tree if False in r.labels[:-1]]
    assert after, "no tree path goes on past a wrong step"
    for r in after:  # a wrong prefix stays wrong
        first = r.labels.index(False)
        assert r.labels[first:] == [False] * (len(r.labels) - first)
    nodes = read_table(run_dir, "nodes").to_pylist()
    labelled = {(n["problem_id"], n["parent_id"], " ".join(str(n["step"]).split())): n for n in nodes}
    by_id = {n["node_id"]: n for n in nodes}
    for r in tree[:50]:  # each path is a chain of the tree, each step with its node's label
        parent = next(n["node_id"] for n in nodes if n["problem_id"] == r.problem_id and n["parent_id"] is None)
        for step, label in zip(r.steps, r.labels):
            node = labelled[(r.problem_id, parent, " ".join(step.split()))]
            assert node["label"] is label and by_id[node["node_id"]]["parent_id"] == parent
            parent = node["node_id"]
    one = [r for r in tree if r.problem_id == rows[0].problem_id]
    assert one and one[0].question == rows[0].question
    # only the problems given: a held-out problem's tree stays out of training
    assert {r.problem_id for r in tree_rows(run_dir, rows[:1])} == {rows[0].problem_id}


def test_training_on_the_trees_keeps_the_held_out_steps_rows(run_dir, tmp_path):
    on_steps = train(_opts(run_dir, tmp_path / "steps", paths="steps"))
    on_tree = train(_opts(run_dir, tmp_path / "tree"))  # auto: the tree, a run directory has one
    assert on_steps["paths"] == "steps" and on_tree["paths"] == "tree"
    assert on_tree["train_paths"] != on_steps["train_paths"]
    assert on_tree["held_out"]["paths"] == on_steps["held_out"]["paths"] > 0
    assert json.loads((tmp_path / "tree" / "prm_config.json").read_text())["paths"] == "tree"


def test_paths_tree_needs_a_run_directory(run_dir, tmp_path):
    from prmtree.export import ExportOptions, export

    export(run_dir, "hf", tmp_path / "hf", ExportOptions(test_size=0.3))
    with pytest.raises(ConfigError, match="--paths tree: --data .* has no nodes table .* use --paths steps"):
        train(_opts(tmp_path / "hf", tmp_path / "a", paths="tree"))
    assert train(_opts(tmp_path / "hf", tmp_path / "b"))["paths"] == "steps"  # auto: what the data has


def test_freeze_lm_trains_the_head_alone(run_dir, tmp_path):
    from safetensors.torch import load_file

    from prmtree.train.model import HEAD_FILE

    train(_opts(run_dir, tmp_path / "two", max_steps=2, freeze_lm=True))
    train(_opts(run_dir, tmp_path / "three", max_steps=3, freeze_lm=True))
    lm2, lm3 = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("two", "three"))
    assert lm2.keys() == lm3.keys() and all((lm2[k] == lm3[k]).all() for k in lm2)
    head2, head3 = (load_file(str(tmp_path / d / HEAD_FILE)) for d in ("two", "three"))
    assert any((head2[k] != head3[k]).any() for k in head2)
    train(_opts(run_dir, tmp_path / "free", max_steps=3))  # without it the LM moves
    free = load_file(str(tmp_path / "free" / "model.safetensors"))
    assert any((free[k] != lm3[k]).any() for k in free)
    with pytest.raises(ConfigError, match="--lm-weight trains the LM during the fine-tune, which --freeze-lm"):
        train(_opts(run_dir, tmp_path / "both", freeze_lm=True, lm_weight=1.0))


def test_tree_paths_fill_undecided_nodes_as_the_steps_table_does(tmp_path):
    """Under plain MC labels the search leaves unsampled nodes undecided; a path still labels
    them (right above a right step, wrong below a wrong one), and so must the tree's."""
    from prmtree.engine.config import RunConfig
    from prmtree.engine.output import read_table
    from prmtree.train import load_rows
    from prmtree.train.data import tree_rows

    config = RunConfig.model_validate({"seed": 3, "labels": {"method": "mc"}})
    prmtree.run(generate_problems(8, seed=11), policy="simulated", out=tmp_path / "mc", config=config)
    nodes = read_table(tmp_path / "mc", "nodes").to_pylist()
    assert any(n["label"] is None and n["parent_id"] for n in nodes)  # the case this test is about
    rows = load_rows(tmp_path / "mc", with_images=False)
    tree = tree_rows(tmp_path / "mc", rows)

    def prefixes(paths):
        return {(r.problem_id, tuple(" ".join(s.split()) for s in r.steps[:j + 1])): r.labels[j]
                for r in paths for j in range(len(r.steps))}

    in_tree, in_steps = prefixes(tree), prefixes(rows)
    assert {k: in_tree.get(k) for k in in_steps} == in_steps  # every labelled step of the steps table, same label
    assert len(in_tree) > len(in_steps)  # and the steps after an error besides
    text = tree_rows(tmp_path / "mc", rows, text_only=True)  # pretraining: every path to its leaf, no labels
    assert sum(len(r.steps) for r in text) >= sum(len(r.steps) for r in tree) and all(not r.labels for r in text)
