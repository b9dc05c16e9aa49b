"""prmtree train at its edges: LMs whose body is not ``.model`` (GPT-2, GPT-NeoX), Ctrl-C
after the last step, --resume with the data folder written another way, and metrics over
nothing (None, not 0). Tiny models built here, no download."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import prmtree
from prmtree.cli import main as cli_main
from prmtree.engine.errors import ConfigError
from prmtree.engine.synthetic import generate_problems
from prmtree.train import PRM, TrainOptions, step_metrics, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("edges")
    prmtree.run(generate_problems(10, seed=21), policy="simulated", out=root / "run", seed=3)
    return root / "run"


def _opts(data: Path | str, out: Path | str, **kw) -> TrainOptions:
    base = dict(max_steps=2, batch_size=16, threads=1, save_every=100, quiet=True, max_length=256)
    base.update(kw)
    return TrainOptions(data=str(data), out=str(out), **base)


# -- 1. any causal LM: the body is transformers' base_model, not always .model ---------------


def _build_lm(kind: str, directory: Path, hidden: int) -> Path:
    """A two-layer GPT-2 (body ``.transformer``, width ``n_embd``) or GPT-NeoX (body ``.gpt_neox``)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_models import build_tokenizer

    directory.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(directory)
    torch.manual_seed(0)
    if kind == "gpt2":
        lm = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=hidden, n_layer=2, n_head=2, n_positions=1024,
                                        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                        bos_token_id=tok.eos_token_id))
    else:
        lm = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=2,
                                              num_attention_heads=2, intermediate_size=2 * hidden,
                                              max_position_embeddings=1024, pad_token_id=tok.pad_token_id,
                                              eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id))
    lm.save_pretrained(directory, safe_serialization=True)
    return directory


@pytest.mark.parametrize("kind,body_name", [("gpt2", "GPT2Model"), ("neox", "GPTNeoXModel")])
def test_an_lm_whose_body_is_not_model_trains_saves_loads_and_scores(kind, body_name, run_dir, tmp_path):
    # Before: RewardModel.body() was getattr(lm, "model", lm), the whole LM for GPT-2 or
    # GPT-NeoX: its vocabulary logits reached the head ("mat1 and mat2 shapes cannot be multiplied").
    from prmtree.bon import load_scorer, sample, score
    from prmtree.train.data import load_rows
    from prmtree.train.metrics import step_metrics as metrics_fn
    from prmtree.train.model import hidden_size
    from prmtree.train.trainer import held_out_metrics, split_for_training

    hidden = 48  # not the tiny Qwen2's 128, nor the vocabulary's size
    base = _build_lm(kind, tmp_path / kind, hidden)
    out = tmp_path / "prm"
    result = train(_opts(run_dir, out, model=str(base), lr=1e-3, select="last", step_logprobs="on"))
    assert result["steps"] == 2 and result["held_out_paths"] > 0
    prm = PRM.load(out, device="cpu")
    assert type(prm.model.body()).__name__ == body_name and hidden_size(prm.model.lm) == hidden
    assert prm.model.head[0].in_features == hidden + 2  # the hidden state and two step log-prob features
    seen = []
    prm.model.head.register_forward_hook(lambda module, args, output: seen.append(args[0].shape[-1]))
    steps = ["x = 4.", "Add 3: x = 4 + 3 = 7.", "The answer is \\boxed{7}."]
    rewards = prm.score("Let x be 4. Add 3.", steps)
    assert seen == [hidden + 2] and len(rewards) == 3 and all(0.0 < r < 1.0 for r in rewards)
    # the PRM saved is the PRM trained: its held-out metrics read again from the directory
    options = _opts(run_dir, out, model=str(base), select="last")
    test_rows = split_for_training(options, load_rows(str(run_dir), with_images=True))[2]
    assert held_out_metrics(prm, test_rows, metrics_fn) == pytest.approx(result["held_out"])
    # prmtree score and best of N read it too
    solutions = tmp_path / "s.jsonl"
    solutions.write_text(json.dumps({"question": "Let x be 4. Add 3.", "steps": steps,
                                     "labels": [True, True, False]}) + "\n")
    assert cli_main(["score", "--prm", str(out), "--input", str(solutions), "--out", str(tmp_path / "o.jsonl"),
                     "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "o.jsonl").read_text())["step_rewards"] == pytest.approx(rewards)
    got = sample(generate_problems(2, seed=4), 2, policy="simulated", seed=0)
    score(got.sampled, load_scorer(str(out)))
    scored = [c.step_scores for s in got.sampled for c in s.candidates]
    assert scored and all(s and all(isinstance(r, float) for r in s) for s in scored)


@pytest.mark.parametrize("kind,fused", [("gpt2", "c_attn"), ("neox", "query_key_value")])
def test_lora_adapts_the_fused_attention_of_lms_without_q_proj(kind, fused, run_dir, tmp_path):
    # Before: --lora looked only for q_proj/v_proj-style nn.Linear layers and refused GPT-2
    # (a Conv1D c_attn) and GPT-NeoX (a fused query_key_value) with a ConfigError.
    pytest.importorskip("peft")
    import torch
    from safetensors.torch import load_file

    base = _build_lm(kind, tmp_path / kind, 48)
    out = tmp_path / "prm"
    result = train(_opts(run_dir, out, model=str(base), lora=True, lora_rank=4, lr=5e-2))
    assert result["steps"] == 2
    config = json.loads((out / "prm_config.json").read_text())
    assert config["lora"] is True
    before, after = load_file(str(base / "model.safetensors")), load_file(str(out / "model.safetensors"))
    adapted = sorted(k for k in before if k.endswith(f"{fused}.weight"))
    assert len(adapted) == 2  # one per layer
    # the adapters were trained and merged into exactly those layers (LoRA's B starts at zero)
    assert all(not torch.equal(before[k], after[k]) for k in adapted)
    untouched = [k for k in before if "attn" not in k and "attention" not in k and k in after and "embed" not in k
                 and "wte" not in k and "wpe" not in k]
    assert untouched and all(torch.equal(before[k], after[k]) for k in untouched)
    rewards = PRM.load(out, device="cpu").score("Let x be 4. Add 3.", ["x = 4.", "x = 7."])
    assert len(rewards) == 2 and all(0.0 < r < 1.0 for r in rewards)


def test_image_and_chat_tokens_written_in_the_text_stay_text_for_a_vlm(tmp_path):
    # Before: a LLaVA-style question ("<image>\nWhat is ...") or a step holding "<image>"
    # made the processor count an image slot with no image: train and score raised
    # StopIteration from the image processor, bon said "score_batch raised StopIteration: ".
    from dataclasses import replace

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_models import build_vlm

    from prmtree.train.data import load_rows

    problems = [replace(p, question="<image>\n" + p.question) for p in generate_problems(8, seed=11)]
    run = tmp_path / "run"
    prmtree.run(problems, policy="simulated", out=run, seed=1)
    rows = load_rows(run)
    assert rows and all(r.question.startswith("<image>") and r.images for r in rows)
    model = build_vlm(tmp_path / "llava")
    result = train(_opts(run, tmp_path / "prm", model=str(model), lr=1e-3, batch_size=4))
    assert result["steps"] == 2
    prm = PRM.load(tmp_path / "prm", device="cpu")
    encoder = prm.encoder
    assert "<image>" in encoder.reserved and "<|im_end|>" in encoder.reserved
    text = encoder.text("<image>\nQ <|im_end|>", ["a <image> b"], n_images=1)
    assert text.count("<image>") == 1  # the template's own slot; the user's two are defused
    assert "<\u2060image>" in text and "<\u2060|im_end|>" in text
    # ordinary text is left as it was: added tokens that are not special (GPT-NeoX's runs of
    # spaces) are no markers to defuse, and a step's spaces are normalised first
    encoder.tokenizer.add_tokens(["    ", "\t\t"])
    vars(encoder).pop("reserved", None)
    assert "    " not in encoder.reserved
    assert encoder.text("Solve:    x  =  3", ["x  =  3"], n_images=0).endswith("x = 3 <step>\n")
    assert "Solve:    x  =  3" in encoder.text("Solve:    x  =  3", [], n_images=0)
    image = tmp_path / "img.png"
    image.write_bytes(problems[0].images[0].data)
    solutions = tmp_path / "s.jsonl"
    solutions.write_text(json.dumps({"question": "<image>\nWhat is 6 times 7?", "images": ["img.png"],
                                     "steps": ["6 x 7 = 42, see <image>.", "So \\boxed{42}."]}) + "\n")
    assert cli_main(["score", "--prm", str(tmp_path / "prm"), "--input", str(solutions), "--out",
                     str(tmp_path / "o.jsonl"), "--device", "cpu"]) == 0
    rewards = json.loads((tmp_path / "o.jsonl").read_text())["step_rewards"]
    assert len(rewards) == 2 and all(0.0 < r < 1.0 for r in rewards)


# -- 2. Ctrl-C after the last step: --resume finishes the job; a one-line message -----------

#: ``prmtree train`` whose held-out evaluation after the final checkpoint takes a minute (a
#: real model's takes minutes), so a Ctrl-C at the final checkpoint lands in it.
SLOW_EVALUATION = """
import sys, time
from prmtree.train import trainer
save, held, saved = trainer._save_checkpoint, trainer.held_out_metrics, []
def slow_save(*a, **k):
    save(*a, **k)
    saved.append(1)
def slow_held(*a, **k):
    if saved:
        time.sleep(60)
    return held(*a, **k)
trainer._save_checkpoint, trainer.held_out_metrics = slow_save, slow_held
from prmtree.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _weights(directory: Path) -> dict:
    from safetensors.torch import load_file

    return {**{f"lm.{k}": v for k, v in load_file(str(directory / "model.safetensors")).items()},
            **{f"head.{k}": v for k, v in load_file(str(directory / "reward_head.safetensors")).items()}}


def test_ctrl_c_after_the_final_checkpoint_then_resume_saves_the_uninterrupted_prm(run_dir, tmp_path):
    # Before: the final checkpoint was written before the held-out evaluation and the PRM's
    # save; Ctrl-C in between printed a traceback, then --resume refused ("done to step N,
    # raise --epochs") and a plain rerun refused (the checkpoints of an earlier training).
    import torch

    out = tmp_path / "killed"
    args = ["train", "--data", str(run_dir), "--out", str(out), "--threads", "1", "--epochs", "2",
            "--save-every", "100000", "--max-length", "256", "--val-share", "0.3"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_EVALUATION, *args], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    final = re.compile(r"step-\d{7}")
    while not (out / "checkpoints").is_dir() or not any(final.fullmatch(p.name)
                                                        for p in (out / "checkpoints").iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert re.fullmatch(r"prmtree: train interrupted: the last checkpoint is .*step-\d{7}: run the same command "
                        r"with --resume to continue \(after the last step, --resume evaluates and saves the PRM\)", last)
    assert not (out / "prm_config.json").exists()  # stopped before the PRM was saved
    checkpoint = torch.load(next((out / "checkpoints").iterdir()) / "state.pt", weights_only=False)

    assert cli_main([*args, "--resume"]) == 0  # finishes the job, trains no step
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == metrics["resumed_at"] == metrics["total_steps"] == checkpoint["step"]
    whole = train(_opts(run_dir, tmp_path / "whole", max_steps=0, epochs=2, save_every=100000, val_share=0.3))
    assert whole["steps"] == checkpoint["step"] and whole["selection"] == metrics["selection"]
    assert whole["held_out"] == metrics["held_out"]
    mine, theirs = _weights(out), _weights(tmp_path / "whole")
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    # the PRM saved, a second resume has nothing left to do
    with pytest.raises(SystemExit) as refused:
        cli_main([*args, "--resume"])
    assert refused.value.code == 2


def test_ctrl_c_before_any_checkpoint_says_so_in_one_line(run_dir, tmp_path, monkeypatch, capsys):
    from prmtree.train import trainer

    def stopped(options):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train_loop", stopped)
    try:
        cli_main(["train", "--data", str(run_dir), "--out", str(tmp_path / "m")])
    except SystemExit as exc:
        assert exc.code == 130
    except KeyboardInterrupt:  # caught here: out of the test, it would stop pytest's session
        pytest.fail("Ctrl-C came out of prmtree train as a KeyboardInterrupt (a traceback)")
    else:
        pytest.fail("prmtree train returned after Ctrl-C")
    assert capsys.readouterr().err == (f"prmtree: train interrupted: no checkpoint saved in {tmp_path / 'm'} yet: "
                                       "run the same command again to start over\n")


# -- 3. --resume: the same data folder written another way is the same data ----------------


def test_resume_takes_the_data_folder_however_it_is_written(run_dir, tmp_path, monkeypatch):
    # Before: "run/" (tab completion) or a path relative to another directory differed from
    # the checkpoint's "run": --resume refused the same data.
    other = tmp_path / "other"
    prmtree.run(generate_problems(4, seed=5), policy="simulated", out=other, seed=3)
    monkeypatch.chdir(run_dir.parent)
    out = tmp_path / "m"
    train(_opts(run_dir.name, out, max_steps=1, select="last"))
    assert train(_opts(run_dir.name + "/", out, max_steps=2, select="last", resume=True))["steps"] == 2
    monkeypatch.chdir(tmp_path)
    relative = os.path.relpath(run_dir, tmp_path)
    assert train(_opts(relative, out, max_steps=3, select="last", resume=True))["steps"] == 3
    with pytest.raises(ConfigError, match=r"--resume: data differ from the checkpoint's \(data='"
                                          + re.escape(str(run_dir.resolve())) + "'\\)"):
        train(_opts(other, out, max_steps=4, select="last", resume=True))


# -- 4. metrics over nothing are None (n/a, null), not 0 -----------------------------------


def test_step_metrics_over_nothing_are_none_not_zero():
    # Before: a perfect PRM on paths with no wrong step read step F1 0.000; no labelled step
    # read step accuracy 0.0.
    perfect = step_metrics([[0.9, 0.8], [0.7]], [[True, True], [True]])
    assert perfect["step_f1_wrong"] is None and perfect["step_recall_wrong"] is None
    assert perfect["step_precision_wrong"] is None and perfect["step_accuracy"] == 1.0
    unlabelled = step_metrics([[0.9, 0.2]], [[None, None]])
    assert unlabelled["step_accuracy"] is None and unlabelled["step_f1_wrong"] is None and unlabelled["steps"] == 0
    nothing = step_metrics([], [])
    assert nothing["first_error_accuracy"] is None and nothing["step_accuracy"] is None
    # defined where there is something to measure: wrong steps none of which is found is F1 0
    missed = step_metrics([[0.9, 0.8]], [[True, False]])
    assert missed["step_f1_wrong"] == 0.0 and missed["step_recall_wrong"] == 0.0
    assert missed["step_precision_wrong"] is None  # nothing predicted wrong
    assert json.loads(json.dumps(perfect))["step_f1_wrong"] is None


def test_score_and_train_print_n_a_and_write_null_where_undefined(run_dir, tmp_path, capsys, monkeypatch):
    from prmtree.train import trainer

    out = tmp_path / "m"
    train(_opts(run_dir, out, max_steps=1, select="last"))
    pb = tmp_path / "pb.jsonl"
    pb.write_text("".join(json.dumps(r) + "\n" for r in [
        {"problem": "What is 2+3?", "steps": ["2+3 = 5.", "The answer is 5."], "label": -1},
        {"problem": "What is 4+4?", "steps": ["4+4 = 8.", "The answer is 8."], "label": -1}]))
    capsys.readouterr()
    # threshold 0: no step is predicted wrong, and none is wrong: a perfect prediction
    assert cli_main(["score", "--prm", str(out), "--input", str(pb), "--out", str(tmp_path / "s.jsonl"),
                     "--threshold", "0", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out.splitlines()[-1]
    assert printed == ("against the file's labels (2 paths): ProcessBench F1 n/a (erroneous n/a, correct 1.000), "
                       "step F1 (wrong steps) n/a, first-error accuracy 1.000")
    # train's held-out summary, metrics.json and prm_config.json: held-out paths with no wrong step
    import dataclasses

    real = trainer.held_out_metrics
    monkeypatch.setattr(trainer, "held_out_metrics", lambda prm, rows, fn: real(
        prm, [dataclasses.replace(r, labels=[True] * len(r.labels)) for r in rows], fn))
    assert cli_main(["train", "--data", str(run_dir), "--out", str(tmp_path / "n"), "--max-steps", "1",
                     "--threads", "1", "--select", "last", "--max-length", "256"]) == 0
    held = [line for line in capsys.readouterr().out.splitlines() if line.startswith("held-out")]
    assert len(held) == 1 and "step F1 (wrong steps) n/a," in held[0] and "ProcessBench F1 n/a" in held[0]
    for name in ("metrics.json", "prm_config.json"):
        saved = json.loads((tmp_path / "n" / name).read_text())["held_out"]
        assert saved["step_f1_wrong"] is None and saved["processbench_f1"] is None and saved["steps"] > 0


# -- 5. a damaged prm_config.json, and VisualProcessBench marks other than 1 / 0 / -1 ---------


def test_score_refuses_a_damaged_prm_config_in_one_line(tmp_path, capsys):
    # Before: a config cut short was a JSONDecodeError traceback, {} a KeyError one and []
    # a TypeError one, exit 1 (bon said it in one line). The config is read before the model.
    solutions = tmp_path / "in.jsonl"
    solutions.write_text(json.dumps({"question": "Let x be 3. Add 2.", "steps": ["x = 3.", "x = 5."]}) + "\n")
    config = tmp_path / "prm" / "prm_config.json"
    config.parent.mkdir()
    again = "restore it from a copy, or train the PRM again"
    for text, why in [
        ('{\n  "base_model": "tiny",\n  "format": "prm',
         r"is damaged \(not JSON: Unterminated string starting at: line 3 column 13 \(char 38\)\); " + again),
        ("{}", r"is damaged: no 'model_class' \(a string\); " + again),
        ("[]", "is damaged: a JSON object expected, got list"),
        ('{"model_class": "Qwen2ForCausalLM"}', r"is damaged: no 'marker' \(a string\)"),
        ('{"model_class": "Qwen2ForCausalLM", "marker": "<s>", "max_length": "x"}',
         "is damaged: 'max_length' must be a whole number >= 1, got 'x'"),
        (b"\xff{}", r"is damaged \(not JSON: 'utf-8' codec can't decode"),
    ]:
        config.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(ConfigError, match=f"^{re.escape(str(config))} {why}"):
            PRM.load(config.parent, device="cpu")
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            cli_main(["score", "--prm", str(config.parent), "--input", str(solutions), "--out",
                      str(tmp_path / "out.jsonl"), "--device", "cpu"])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert re.fullmatch(f"prmtree: error: {re.escape(str(config))} {why}.*\n", err) and err.count("\n") == 1, err
        assert not (tmp_path / "out.jsonl").exists()


def test_process_correctness_marks_other_than_1_0_or_minus_1_are_refused_with_their_line(tmp_path, capsys):
    # Before: any number was taken and read by its sign, 2 and 0.5 as right, -3 as wrong:
    # a mis-encoded benchmark file was scored against made-up labels, exit 0. A false read as
    # 0 (neutral), a true as 1.
    from prmtree.train import read_solutions

    vpb = tmp_path / "vpb.jsonl"
    for marks in ([1, 0.5, -1], [2, 1, 0], [1, 0, -3], [1, False, -1], [True, 0, -1], [1, float("nan"), 0]):
        rows = [{"question": "fine", "response": {"steps": ["x"], "process_correctness": [1]}},
                {"image": [], "question": "q?", "response": {"steps": ["a", "b", "c"], "process_correctness": marks}}]
        vpb.write_text("".join(json.dumps(r) + "\n" for r in rows))
        bad = next(m for m in marks if isinstance(m, bool) or m != m or m not in (1, 0, -1))
        message = (rf"vpb.jsonl:2: process_correctness marks must be 1 \(right\), 0 \(neutral\) or -1 \(wrong\), "
                   rf"got {re.escape(repr(bad))}")
        with pytest.raises(ConfigError, match=message) as info:
            read_solutions(vpb)
        assert "\n" not in str(info.value)
        with pytest.raises(SystemExit) as exit_:  # refused before any PRM is loaded
            cli_main(["score", "--prm", str(tmp_path / "no-prm"), "--input", str(vpb), "--out", str(tmp_path / "o")])
        assert exit_.value.code == 2 and re.fullmatch(f"prmtree: error: .*{message}\n", capsys.readouterr().err)
    vpb.write_text(json.dumps({"question": "q?", "response": {"steps": ["a", "b", "c", "d"],
                                                              "process_correctness": [1, 0, -1.0, None]}}) + "\n")
    assert read_solutions(vpb)[0].labels == [True, None, False, None]  # 1 / 0 / -1 (as floats too), null
