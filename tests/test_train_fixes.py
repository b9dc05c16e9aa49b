"""prmtree train's silent failures, each caused for real: a VLM fed no image from an
``--image-mode path`` run, a ``--marker`` the chat template also writes, ``--max-steps``
then ``--resume`` choosing among other epochs than an uninterrupted training, unlabelled
paths counted in ProcessBench F1, ``--max-length`` ignored for rows with an image, and a
VLM's step token spans off by a token. Tiny models built here, no download."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import prmtree
from prmtree.cli import main as cli_main
from prmtree.engine.errors import ConfigError
from prmtree.engine.output import read_table
from prmtree.engine.synthetic import generate_problems
from prmtree.train import PRM, TrainOptions, load_rows, step_metrics, train
from prmtree.train.model import Encoder

TINY_RUN = {"search": {"budget": 16}}


def _opts(data: Path | str, out: Path | str, **kw) -> TrainOptions:
    base = dict(max_steps=1, batch_size=8, threads=1, save_every=100, quiet=True, max_length=256)
    base.update(kw)
    return TrainOptions(data=str(data), out=str(out), **base)


@pytest.fixture(scope="module")
def llava(tmp_path_factory) -> Path:
    from tiny_models import build_vlm

    return build_vlm(tmp_path_factory.mktemp("llava") / "llava")


def _llava_encoder(llava: Path, max_length: int = 4096) -> Encoder:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(llava))
    processor.tokenizer.add_tokens(["<step>"], special_tokens=True)  # as add_marker does
    return Encoder(processor, "<step>", max_length, vision=True)


# -- 1. an --image-mode path run: the images are read from the run's images/ -------------


def test_a_vlm_trained_on_a_path_mode_run_sees_its_images_in_training_validation_and_score(
        llava, tmp_path, monkeypatch, capsys):
    # Before: load_rows kept only image cells holding bytes; a path-mode run stores
    # {bytes: None, path: images/<hash>.png}, so the VLM trained, chose its epoch and was
    # scored on the text alone, without a word.
    problems = generate_problems(6, seed=6)
    run = tmp_path / "run"
    prmtree.run(problems, policy="simulated", out=run, seed=1,
                config={**TINY_RUN, "output": {"image_mode": "path"}})
    assert read_table(run, "steps").column("images").to_pylist()[0][0]["bytes"] is None
    by_id = {p.id: p.images[0].data for p in problems}
    rows = load_rows(run)
    assert rows and all(r.images == [by_id[r.problem_id]] for r in rows)

    import prmtree.train.model as model_module

    fed = {"with": 0, "without": 0}
    encode = model_module.Encoder.encode

    def spy(self, question, steps, images=None):
        fed["with" if images else "without"] += 1
        return encode(self, question, steps, images)

    monkeypatch.setattr(model_module.Encoder, "encode", spy)
    result = train(_opts(run, tmp_path / "prm", model=str(llava), paths="steps", val_share=0.2, test_share=0.2))
    assert result["validation_paths"] and result["held_out_paths"]
    assert fed == {"with": len(rows), "without": 0}  # training, validation and held-out rows

    image = run / read_table(run, "steps").column("images").to_pylist()[0][0]["path"]
    solutions = tmp_path / "solutions.jsonl"
    row = {"question": rows[0].question, "images": [str(image)], "steps": rows[0].steps, "labels": rows[0].labels}
    unlabelled = {**row, "labels": [None] * len(rows[0].steps)}
    solutions.write_text(json.dumps(row) + "\n" + json.dumps(unlabelled) + "\n")
    capsys.readouterr()
    fed.update({"with": 0, "without": 0})
    assert cli_main(["score", "--prm", str(tmp_path / "prm"), "--input", str(solutions),
                     "--out", str(tmp_path / "scored.jsonl"), "--device", "cpu"]) == 0
    assert fed == {"with": 2, "without": 0}
    assert "against the file's labels (1 paths; 1 with no labelled step left out)" in capsys.readouterr().out

    # a steps Parquet file whose image paths name files that are not there is refused, in one line
    shard = tmp_path / "elsewhere" / "steps.parquet"
    shard.parent.mkdir()
    shutil.copy(sorted((run / "steps").glob("*.parquet"))[0], shard)
    with pytest.raises(ConfigError, match=r"image 'images/[0-9a-f]+\.png' of problem .* cannot be read"):
        load_rows(shard)
    assert load_rows(shard, with_images=False)  # a text model does not read them
    shutil.copytree(run / "images", shard.parent / "images")
    assert all(r.images == [by_id[r.problem_id]] for r in load_rows(shard))


# -- 2. a --marker that the chat template also writes -------------------------------------


@pytest.mark.parametrize("marker", ["<|im_end|>", "assistant", "user"])
def test_a_marker_the_chat_template_also_writes_marks_the_steps_alone(marker, tmp_path):
    # Before: every marker token was a step position, the template's own included, so the
    # label of step k went to the marker before it (the prompt's for step 0).
    from tiny_models import build_tokenizer

    tok = build_tokenizer(tmp_path)
    tok.add_tokens([marker], special_tokens=True)
    encoder = Encoder(tok, marker, 1024)
    steps = ["2 + 3 = 5.", "The answer is 5."]
    assert marker in encoder.prompt("What is 2 + 3?", 0)
    e = encoder.encode("What is 2 + 3?", steps)
    assert len(e["positions"]) == 2
    for (start, end), position, step in zip(e["spans"], e["positions"], steps):
        assert tok.decode(e["ids"][start:end]).strip() == step
        assert end <= position and tok.decode(e["ids"][end:position]).strip() == ""


def test_a_prm_with_a_template_marker_scores_each_step_at_its_own_marker(tmp_path):
    # Before: score read step 0's reward at the template's <|im_end|>, before any step:
    # the same reward whatever step 0 said.
    from tiny_models import build_text_model

    run = tmp_path / "run"
    prmtree.run(generate_problems(6, seed=21), policy="simulated", out=run, seed=3, config=TINY_RUN)
    model = build_text_model(tmp_path / "qwen")
    train(_opts(run, tmp_path / "prm", model=str(model), marker="<|im_end|>", paths="steps", select="last"))
    prm = PRM.load(tmp_path / "prm", device="cpu")
    first = prm.score("What is 2 + 3?", ["2 + 3 = 5.", "The answer is 5."])
    other = prm.score("What is 2 + 3?", ["Step 1: count. 9 + 9 = 18 one", "The answer is 5."])
    assert len(first) == len(other) == 2 and first[0] != other[0]


# -- 3. --max-steps, then --resume: the epochs an uninterrupted training chooses among ----


def test_max_steps_mid_epoch_then_resume_keeps_the_uninterrupted_weights(tmp_path):
    # Before: the --max-steps run scored its mid-epoch end and kept that score in its
    # checkpoint, so the resume could choose it over every whole epoch (demo: epoch 2.2,
    # held-out ProcessBench F1 0.526 where the uninterrupted training kept epoch 1, 0.603).
    import torch
    from safetensors.torch import load_file

    run = tmp_path / "run"
    prmtree.run(generate_problems(16, seed=21), policy="simulated", out=run, seed=3, config=TINY_RUN)
    options = dict(max_steps=0, epochs=2, batch_size=2, save_every=2, paths="steps", val_share=0.25)
    full = train(_opts(run, tmp_path / "full", **options))
    per_epoch = full["total_steps"] // 2
    assert per_epoch >= 3 and full["selection"]["by_epoch"]
    early = train(_opts(run, tmp_path / "split", **{**options, "max_steps": per_epoch + 1}))
    assert early["selection"]["by_epoch"][-1][0] == round((per_epoch + 1) / per_epoch, 3)  # its own PRM may keep it
    resumed = train(_opts(run, tmp_path / "split", **{**options, "resume": True}))
    assert resumed["selection"] == full["selection"]
    assert resumed["held_out"] == full["held_out"]
    for name in ("reward_head.safetensors", "model.safetensors"):
        a, b = load_file(str(tmp_path / "full" / name)), load_file(str(tmp_path / "split" / name))
        assert all(torch.equal(a[k], b[k]) for k in a)


# -- 4. ProcessBench F1 leaves out paths with no labelled step -----------------------------


def test_paths_with_no_labelled_step_are_left_out_of_the_path_metrics():
    # Before: [null, null] counted as an error-free path, and an empty solution as one the
    # PRM found right (a free hit): acc_correct 0.5 and ProcessBench F1 0.0 here.
    m = step_metrics([[0.9, 0.8], [0.9, 0.2], []], [[None, None], [True, False], []])
    assert m["paths"] == 1 and m["unlabelled_paths"] == 2
    assert m["acc_erroneous"] == 1.0 and m["acc_correct"] is None and m["processbench_f1"] is None
    assert m["first_error_accuracy"] == 1.0 and m["steps"] == 2
    m = step_metrics([[0.9], [0.2]], [[True], [None]])
    assert m["paths"] == 1 and m["acc_correct"] == 1.0 and m["unlabelled_paths"] == 1


# -- 5 and 6. a VLM's rows: --max-length, and each step's tokens ---------------------------


def _image() -> bytes:
    return generate_problems(1, seed=6)[0].images[0].data


def test_max_length_cuts_the_text_steps_of_a_row_with_an_image_never_its_image_tokens(llava):
    # Before: a row with an image was never cut: every step kept its label at any --max-length.
    import torch

    question, steps = "What is the final value of x?", [f"Add {i}: x = {i} + {i} = {2 * i}." for i in range(6)]
    whole = _llava_encoder(llava).encode(question, steps, [_image()])
    assert len(whole["positions"]) == 6
    image_id = whole["ids"].index(3)  # <image>, repeated once per patch
    image_end = len(whole["ids"]) - whole["ids"][::-1].index(3)
    assert image_end - image_id > 1
    limit = (whole["positions"][2] + whole["positions"][3]) // 2  # steps 3 to 5 lie past it
    cut = _llava_encoder(llava, limit).encode(question, steps, [_image()])
    assert cut["ids"] == whole["ids"][:limit] and cut["positions"] == whole["positions"][:3]
    assert torch.equal(cut["extra"]["pixel_values"], whole["extra"]["pixel_values"])
    short = _llava_encoder(llava, 8).encode(question, steps, [_image()])  # shorter than the image tokens
    assert short["ids"] == whole["ids"][:image_end] and short["positions"] == []


def test_a_vlm_step_span_holds_its_step_tokens_exactly(llava):
    # Before: a processor gives no offsets, so step 0 lost its first token and each later
    # step took the newline before it (the step-logprob head read the wrong tokens).
    encoder = _llava_encoder(llava)
    steps = ["There are 3 red shapes in the image, so x = 3.", "Add 4: x = 3 + 4 = 7.", "The answer is \\boxed{7}."]
    e = encoder.encode("What is the final value of x?", steps, [_image()])
    assert len(e["spans"]) == 3
    for (start, end), step in zip(e["spans"], steps):
        assert encoder.tokenizer.decode(e["ids"][start:end]) == step
