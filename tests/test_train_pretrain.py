"""``prmtree train --pretrain-epochs``: the tiny LM first learns the run's own text (causal LM)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import prmtree
from prmtree.cli import main as cli_main
from prmtree.engine.errors import ConfigError
from prmtree.engine.records import Problem
from prmtree.engine.synthetic import generate_problems
from prmtree.train import TrainOptions, train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pretrain")
    prmtree.run(generate_problems(12, seed=5), policy="simulated", out=root / "run", seed=1)
    return root / "run"


def _opts(data: Path, out: Path, **kw) -> TrainOptions:
    # val_share=0: these tests count and compare the training split itself
    base = dict(max_steps=3, batch_size=16, threads=1, save_every=2, quiet=True, max_length=256, val_share=0.0)
    base.update(kw)
    return TrainOptions(data=str(data), out=str(out), **base)


def _lm_loss(prm_dir: Path, run_dir: Path) -> float:
    """The saved LM's causal-LM loss on the run's training text."""
    import torch

    from prmtree.train import PRM, load_rows

    prm = PRM.load(prm_dir, device="cpu")
    rows = load_rows(run_dir, with_images=False)[:40]
    encoded = [prm.encoder.encode(r.question, r.steps) for r in rows]
    batch = prm.encoder.collate(encoded)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with torch.no_grad():
        return float(prm.model.lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                  labels=labels).loss)


def test_pretraining_lowers_the_lm_loss_and_the_prm_still_scores(run_dir, tmp_path):
    plain = train(_opts(run_dir, tmp_path / "plain"))
    pre = train(_opts(run_dir, tmp_path / "pre", pretrain_epochs=6, tiny_layers=1, tiny_hidden=64,
                      pretrain_text="paths"))  # the text _lm_loss measures on (node steps: the next tests)
    assert plain["pretrain_steps"] == 0 and plain["pretrain_loss_first"] is None
    assert pre["pretrain_steps"] >= 6 and pre["steps"] == 3
    # the LM loss on the run's text falls during pretraining, from about ln(vocabulary)
    assert pre["pretrain_loss_last_10"] < 0.7 * pre["pretrain_loss_first"], (pre["pretrain_steps"], pre["pretrain_loss_last_10"])
    # and the saved model keeps what it learnt: far lower LM loss than the one never pretrained
    assert _lm_loss(tmp_path / "pre", run_dir) < 0.75 * _lm_loss(tmp_path / "plain", run_dir)
    config = json.loads((tmp_path / "pre" / "prm_config.json").read_text())
    assert config["pretrain_epochs"] == 6
    saved = json.loads((tmp_path / "pre" / "config.json").read_text())
    assert saved["num_hidden_layers"] == 1 and saved["hidden_size"] == 64
    rewards = prmtree.PRM.load(tmp_path / "pre", device="cpu").score(
        Problem(id="p", question="Let x be 3. Then add 4.", answer="7"), ["x = 3.", "Add 4: x = 3 + 4 = 7."])
    assert len(rewards) == 2 and all(0.0 <= r <= 1.0 for r in rewards)


def test_resume_keeps_the_pretraining_and_refuses_a_different_one(run_dir, tmp_path):
    first = train(_opts(run_dir, tmp_path / "b", max_steps=2, pretrain_epochs=1, tiny_layers=1, tiny_hidden=64))
    assert first["pretrain_steps"] > 0
    resumed = train(_opts(run_dir, tmp_path / "b", max_steps=3, pretrain_epochs=1, tiny_layers=1, tiny_hidden=64,
                          resume=True))
    assert resumed["resumed_at"] == 2 and resumed["steps"] == 3
    assert resumed["pretrain_steps"] == 0  # the checkpoint's weights were pretrained already: not again
    with pytest.raises(ConfigError, match=r"--resume: pretrain_epochs differ from the checkpoint's \(pretrain_epochs=1\)"):
        train(_opts(run_dir, tmp_path / "b", max_steps=4, pretrain_epochs=2, tiny_layers=1, tiny_hidden=64,
                    resume=True))


def test_a_checkpoint_from_before_the_pretraining_options_resumes_with_their_defaults(run_dir, tmp_path):
    import torch

    train(_opts(run_dir, tmp_path / "old", max_steps=2, tiny_layers=2, tiny_hidden=128))
    (state,) = (tmp_path / "old" / "checkpoints").glob("*/state.pt")
    saved = torch.load(state, map_location="cpu", weights_only=False)
    for key in ("pretrain_epochs", "lm_weight", "tiny_layers", "tiny_hidden"):  # as an older prmtree wrote it
        del saved["options"][key]
    torch.save(saved, state)
    resumed = train(_opts(run_dir, tmp_path / "old", max_steps=3, resume=True))
    assert resumed["resumed_at"] == 2 and resumed["steps"] == 3
    with pytest.raises(ConfigError, match=r"--resume: lm_weight differ from the checkpoint's \(lm_weight=0.0\)"):
        train(_opts(run_dir, tmp_path / "old", max_steps=4, resume=True, lm_weight=0.5))


def test_bad_pretrain_and_size_options_are_one_line_errors(run_dir, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"--pretrain-epochs and --lm-weight must be >= 0, got -1 and 0.0"):
        train(_opts(run_dir, tmp_path / "x", pretrain_epochs=-1))
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["train", "--data", str(run_dir), "--out", str(tmp_path / "y"), "--tiny-hidden", "100"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("prmtree: error: --tiny-layers must be >= 1 and --tiny-hidden a multiple of 32")
    assert not (tmp_path / "y").exists()


def test_lm_weight_adds_the_lm_loss_to_the_reward_loss(run_dir, tmp_path):
    plain = train(_opts(run_dir, tmp_path / "plain", max_steps=2, tiny_layers=1, tiny_hidden=64))
    mixed = train(_opts(run_dir, tmp_path / "mixed", max_steps=2, tiny_layers=1, tiny_hidden=64, lm_weight=1.0))
    # the same seed, model and first batch: the reward loss is the same, the LM's ~ln(vocabulary) is added
    assert plain["loss_first"] < 1.0 < 3.0 < mixed["loss_first"] < plain["loss_first"] + 8.0
    assert json.loads((tmp_path / "mixed" / "prm_config.json").read_text())["lm_weight"] == 1.0


@pytest.mark.parametrize("hidden", [96, 160])
def test_a_tiny_model_with_an_odd_number_of_heads_builds_and_runs(hidden):
    import torch

    from prmtree.train.model import tiny_lm

    lm = tiny_lm(50, 0, layers=1, hidden=hidden)  # 3 and 5 heads of 32: half as many key-value heads would not divide
    logits = lm(input_ids=torch.tensor([[1, 2, 3, 4]])).logits
    assert logits.shape == (1, 4, 50)


def _node_steps(run: Path, problems: set[str] | None = None) -> set[str]:
    from prmtree.engine.output import read_table

    nodes = read_table(run, "nodes").select(["problem_id", "step"]).to_pylist()
    return {" ".join(n["step"].split()) for n in nodes if n["step"] and (problems is None or n["problem_id"] in problems)}


def test_pretraining_reads_the_training_problems_node_steps_when_asked(run_dir, tmp_path):
    from prmtree.train import load_rows, split_rows
    from prmtree.train.data import node_texts

    train_rows, test_rows = split_rows(load_rows(run_dir, with_images=False), 0.2)
    mine, held = {r.problem_id for r in train_rows}, {r.problem_id for r in test_rows}
    texts = node_texts(run_dir, mine)
    assert texts == sorted(_node_steps(run_dir, mine))
    # every distinct step the search sampled: many more than the training paths hold, none only a held-out problem's
    assert len(texts) > len({s for r in train_rows for s in r.steps}) > 0
    assert _node_steps(run_dir, held) - _node_steps(run_dir, mine) and not (set(texts) - _node_steps(run_dir, mine))
    got = train(_opts(run_dir, tmp_path / "n", max_steps=1, pretrain_epochs=1, tiny_layers=1, tiny_hidden=64,
                      batch_size=32, pretrain_text="nodes"))
    assert got["pretrain_text"] == "nodes" and got["pretrain_sequences"] == len(texts)
    assert got["pretrain_steps"] == -(-len(texts) // 32)  # one epoch of batches of 32 node steps
    assert json.loads((tmp_path / "n" / "prm_config.json").read_text())["pretrain_text"] == "nodes"
    paths = train(_opts(run_dir, tmp_path / "p", max_steps=1, pretrain_epochs=1, tiny_layers=1, tiny_hidden=64,
                        pretrain_text="paths", paths="steps"))
    assert paths["pretrain_text"] == "paths" and paths["pretrain_sequences"] == paths["train_paths"] == len(train_rows)


def test_pretraining_reads_the_training_problems_tree_paths_by_default(run_dir, tmp_path):
    from prmtree.train import load_rows, split_rows
    from prmtree.train.data import tree_rows

    train_rows, _ = split_rows(load_rows(run_dir, with_images=False), 0.2)
    tree = tree_rows(run_dir, train_rows, text_only=True)  # every path to its leaf, decided or not
    got = train(_opts(run_dir, tmp_path / "t", max_steps=1, pretrain_epochs=1, tiny_layers=1, tiny_hidden=64,
                      batch_size=32))
    assert got["pretrain_text"] == "tree" and got["pretrain_sequences"] == len(tree)
    assert got["train_paths"] == len(tree_rows(run_dir, train_rows)) <= len(tree)
    assert got["pretrain_steps"] == -(-len(tree) // 32)
    assert {r.problem_id for r in tree} == {r.problem_id for r in train_rows}  # no held-out problem's tree


def test_data_without_a_nodes_table_pretrains_on_paths_or_says_why_not(run_dir, tmp_path, capsys):
    import pyarrow.parquet as pq

    from prmtree.engine.output import read_table
    from prmtree.train.data import node_texts

    steps = tmp_path / "steps.parquet"
    pq.write_table(read_table(run_dir, "steps"), steps)
    assert node_texts(steps, {"anything"}) is None
    got = train(_opts(steps, tmp_path / "a", max_steps=1, pretrain_epochs=1, tiny_layers=1, tiny_hidden=64))
    assert got["pretrain_text"] == "paths" and got["pretrain_sequences"] == got["train_paths"]
    capsys.readouterr()  # the training above's progress output
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["train", "--data", str(steps), "--out", str(tmp_path / "b"), "--pretrain-epochs", "1",
                  "--pretrain-text", "nodes", "--max-steps", "1", "--threads", "1"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
    assert not (tmp_path / "b").exists()
    assert "--pretrain-text nodes: --data" in err and "has no nodes table" in err and "use --pretrain-text paths" in err
    for text in ("tree", "nodes", "paths"):  # without pretraining it would be ignored without a word
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["train", "--data", str(steps), "--out", str(tmp_path / "b"), "--pretrain-text", text])
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and not (tmp_path / "b").exists(), err
        assert err == (f"prmtree: error: --pretrain-text {text} chooses what --pretrain-epochs reads, and "
                       "--pretrain-epochs is 0 (no pretraining): set --pretrain-epochs, or leave --pretrain-text out")
    with pytest.raises(ConfigError, match=r"--pretrain-text must be one of auto, tree, nodes, paths, got 'steps'"):
        train(_opts(run_dir, tmp_path / "c", pretrain_epochs=1, pretrain_text="steps"))
