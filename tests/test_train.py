"""prmtree train / PRM.load().score() / prmtree score: tiny models built here, no download."""

from __future__ import annotations

import functools
import json
import math
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
from prmtree.engine.records import Problem, ProblemImage
from prmtree.engine.synthetic import generate_problems
from prmtree.export import ExportOptions, export
from prmtree.train import PRM, TrainOptions, load_rows, read_solutions, split_rows, step_metrics, train
from prmtree.train.data import soft_target


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    prmtree.run(generate_problems(20, seed=21), policy="simulated", out=root / "run", seed=3)
    return root / "run"


def _opts(data: Path, out: Path, **kw) -> TrainOptions:
    base = dict(max_steps=4, batch_size=16, threads=1, save_every=2, quiet=True, max_length=256)
    base.update(kw)
    return TrainOptions(data=str(data), out=str(out), **base)


@pytest.fixture(scope="module")
def tiny_prm(run_dir, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("prm") / "tiny"
    return out, train(_opts(run_dir, out, max_steps=6, save_every=3))


def test_tiny_prm_directory_holds_an_hf_model_config_and_loss_curve(tiny_prm):
    out, result = tiny_prm
    config = json.loads((out / "prm_config.json").read_text())
    assert config["marker"] == "<step>" and config["labels"] == "hard" and config["base_model"] == "tiny"
    assert config["model_class"] == "Qwen2ForCausalLM"
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert (out / "reward_head.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["steps"] == 6 and result["tokens_per_s"] > 0 and result["peak_memory_mb"] > 0
    assert result["train_paths"] > 0 and result["held_out_paths"] > 0
    held = result["held_out"]
    assert held["paths"] == result["held_out_paths"] and 0 <= held["processbench_f1"] <= 1
    assert json.loads((out / "metrics.json").read_text())["steps"] == 6


def test_loaded_prm_scores_each_step_in_unit_interval(tiny_prm, run_dir):
    out, _ = tiny_prm
    prm = prmtree.PRM.load(out, device="cpu")
    assert isinstance(prm, PRM)
    problem = Problem(id="p", question="Let x be 3. Then add 4.", answer="7")
    steps = ["x = 3.", "Add 4: x = 3 + 4 = 7.", "The answer is \\boxed{7}."]
    rewards = prm.score(problem, steps)
    assert len(rewards) == 3 and all(isinstance(r, float) and 0.0 <= r <= 1.0 for r in rewards)
    batch = prm.score_batch([(problem, steps), (problem, []), (problem, steps[:1])])
    assert [len(b) for b in batch] == [3, 0, 1]
    assert batch[0] == pytest.approx(rewards, abs=1e-5)
    assert batch[2][0] == pytest.approx(rewards[0], abs=1e-5)  # causal: a step's reward ignores later steps
    # the question alone stands for a problem without images; steps as one str are refused
    # (before: an AttributeError, and a str was scored one character per step)
    assert prm.score(problem.question, steps) == pytest.approx(rewards, abs=1e-6)
    with pytest.raises(TypeError, match="the steps as a list of str"):
        prm.score(problem, "x = 3. Add 4.")
    assert prm.score(problem, (s for s in steps)) == pytest.approx(rewards, abs=1e-6)  # a generator, read once


def test_resume_continues_from_the_checkpoint_exactly(run_dir, tmp_path):
    straight = train(_opts(run_dir, tmp_path / "a", max_steps=6, save_every=0))
    first = train(_opts(run_dir, tmp_path / "b", max_steps=4))
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["step-0000002", "step-0000004"]
    resumed = train(_opts(run_dir, tmp_path / "b", max_steps=6, resume=True))
    assert first["steps"] == 4 and resumed["resumed_at"] == 4 and resumed["steps"] == 6
    assert resumed["loss_last_10"] == pytest.approx(straight["loss_last_10"], rel=1e-4)
    with pytest.raises(ConfigError, match=r"--resume: lr differ from the checkpoint's \(lr=None\)"):
        train(_opts(run_dir, tmp_path / "b", max_steps=8, resume=True, lr=0.1))
    with pytest.raises(ConfigError, match="--resume: no checkpoint in"):
        train(_opts(run_dir, tmp_path / "c", resume=True))


def test_soft_labels_use_posteriors_else_mc_values(run_dir, tmp_path):
    assert soft_target(True, 0.5, 0.9) == pytest.approx(0.9)
    assert soft_target(False, 0.5, 0.9) == pytest.approx(0.1)
    assert soft_target(True, 0.25, None) == 0.25 and soft_target(False, None, None) == 0.0
    rows = load_rows(run_dir)
    assert any(0 < s < 1 for r in rows for s in r.soft) and all(len(r.soft) == len(r.labels) for r in rows)
    result = train(_opts(run_dir, tmp_path / "soft", labels="soft", max_steps=2))
    assert result["labels"] == "soft" and math.isfinite(result["loss_first"])
    assert json.loads((tmp_path / "soft" / "prm_config.json").read_text())["labels"] == "soft"


def test_soft_labels_on_a_stepwise_export_are_refused_in_one_line(run_dir, tmp_path, capsys):
    # Before: a stepwise export has labels and no values, so every soft target fell back to
    # the hard label and --labels soft trained on hard labels without a word.
    stepwise = tmp_path / "steps.parquet"
    export(run_dir, "stepwise", stepwise)
    args = ["train", "--data", str(stepwise), "--out", str(tmp_path / "soft"), "--labels", "soft",
            "--max-steps", "1", "--threads", "1", "--max-length", "256"]
    with pytest.raises(SystemExit) as exit_:
        cli_main(args)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"prmtree: error: --labels soft: --data {stepwise} holds hard labels only (no values or confidences "
        "column; a stepwise export keeps none): train on the run's directory or an hf export, or use --labels hard\n")
    assert not (tmp_path / "soft").exists()
    assert load_rows(stepwise, labels="hard")  # hard labels from the same file are fine
    assert load_rows(run_dir, labels="soft")  # and soft ones from the run it came from

def test_hf_export_test_split_is_the_held_out_set_and_split_is_by_problem(run_dir, tmp_path):
    export(run_dir, "hf", tmp_path / "hf", ExportOptions(test_size=0.3))
    rows = load_rows(tmp_path / "hf")
    train_rows, test_rows = split_rows(rows, 0.2)
    assert test_rows and all(r.split == "test" for r in test_rows)
    assert not {r.problem_id for r in train_rows} & {r.problem_id for r in test_rows}
    own_train, own_test = split_rows(load_rows(run_dir), 0.25)
    assert own_test and not {r.problem_id for r in own_train} & {r.problem_id for r in own_test}
    assert len({r.problem_id for r in own_test}) == math.ceil(0.25 * 20)


def test_step_metrics_on_a_hand_made_case():
    rewards = [[0.9, 0.2, 0.1],  # gold first error 1, predicted 1: hit
               [0.9, 0.8],       # gold no error, predicted none: hit
               [0.3, 0.9],       # gold no error, predicted 0: miss (a false alarm)
               [0.9, 0.9, 0.4]]  # gold first error 1, predicted 2: miss
    labels = [[True, False, False], [True, True], [True, True], [True, False, None]]
    m = step_metrics(rewards, labels)
    # wrong steps predicted: (0,1) tp, (0,2) tp, (2,0) fp; missed: (3,1) fn; (3,2) unlabelled
    assert m["step_precision_wrong"] == pytest.approx(2 / 3) and m["step_recall_wrong"] == pytest.approx(2 / 3)
    assert m["step_f1_wrong"] == pytest.approx(2 / 3) and m["steps"] == 9
    assert m["step_accuracy"] == pytest.approx(7 / 9)
    assert m["first_error_accuracy"] == 0.5 and m["acc_erroneous"] == 0.5 and m["acc_correct"] == 0.5
    assert m["processbench_f1"] == pytest.approx(0.5) and m["paths_with_error"] == 2
    # right steps 0.9 x4, 0.8, 0.3 against wrong 0.2, 0.1, 0.9: each 0.9 beats two and ties one (2.5),
    # 0.8 and 0.3 beat two: 14 of 18 pairs
    assert m["step_auroc"] == pytest.approx(14 / 18)
    assert step_metrics([[0.9, 0.8]], [[True, True]])["step_auroc"] is None  # no wrong step to rank against


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_processbench_and_visualprocessbench_files_are_read(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "images" / "a.png")
    pb = _write_jsonl(tmp_path / "pb.jsonl", [
        {"id": "gsm8k-0", "generator": "x", "problem": "1+1?", "steps": ["1+1=3", "so 3"], "label": 0,
         "final_answer_correct": False},
        {"id": "gsm8k-1", "problem": "2+2?", "steps": ["2+2=4", "so 4"], "label": -1, "final_answer_correct": True},
        {"id": "gsm8k-2", "problem": "3+3?", "steps": ["3+3=6", "times 2 is 13", "so 13"], "label": 1},
    ])
    got = read_solutions(pb)
    assert [s.labels for s in got] == [[False, None], [True, True], [True, False, None]]
    assert got[0].problem.id == "gsm8k-0" and got[0].problem.question == "1+1?" and got[0].steps == ["1+1=3", "so 3"]
    vpb = _write_jsonl(tmp_path / "vpb.jsonl", [
        {"image": ["images/a.png"], "question": "How many red?", "answer": "1",
         "response": {"steps": ["one red square", "two", "answer 2"], "process_correctness": [1, 0, -1]},
         "policy_model": "m", "data_source": "s"},
        {"image": ["images/a.png"], "question": "Colour?", "answer": "red",
         "response": json.dumps({"steps": ["it is red"], "process_correctness": [1]})},
    ])
    got = read_solutions(vpb)
    assert got[0].labels == [True, None, False] and got[1].labels == [True]
    assert got[0].problem.answer == "1" and len(got[0].problem.images) == 1
    assert got[0].problem.images[0].to_pil().size == (8, 8)
    plain = _write_jsonl(tmp_path / "plain.jsonl", [{"question": "q", "steps": ["a", "b"]}])
    assert read_solutions(plain)[0].labels is None
    numbers = _write_jsonl(tmp_path / "numbers.jsonl", [{"question": "q", "steps": ["a", "b", "c"], "labels": [1, 0, None]}])
    assert read_solutions(numbers)[0].labels == [True, False, None]  # 1 / 0 as bools (a review: they were refused)
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "steps": ["a"]}, {"question": "q"}])
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: no 'steps' list of strings"):
        read_solutions(bad)
    for label in (2, "1", 1.0, True, -2):  # before: ignored without a word, the row scored as unlabelled
        odd = _write_jsonl(tmp_path / "odd.jsonl", [{"problem": "q", "steps": ["a", "b"], "label": label}])
        with pytest.raises(ConfigError, match=rf"odd.jsonl:1: 'label' must be -1 \(no wrong step\) or a step index "
                                              rf"below 2 \(ProcessBench's first error\), got {re.escape(repr(label))}"):
            read_solutions(odd)
    # before: marks short of the steps were padded as neutral, extra ones dropped, a string mark
    # was a TypeError traceback: misaligned marks now stop with the line
    for response, message in [({"steps": ["a", "b", "c"], "process_correctness": [1, -1]}, "3 steps but 2 marks in process_correctness"),
                              ({"steps": ["a"], "process_correctness": [1, -1]}, "1 step but 2 marks in process_correctness"),
                              ({"steps": ["a"], "process_correctness": ["1"]}, "process_correctness marks must be 1 "
                                                                                 r"\(right\), 0 \(neutral\) or -1 \(wrong\), got '1'")]:
        odd = _write_jsonl(tmp_path / "odd.jsonl", [{"question": "q", "response": response}])
        with pytest.raises(ConfigError, match=rf"odd.jsonl:1: {message}"):
            read_solutions(odd)
    odd = _write_jsonl(tmp_path / "odd.jsonl", [{"question": "q", "steps": ["a", "b"], "labels": [True]}])
    with pytest.raises(ConfigError, match=r"odd.jsonl:1: 2 steps but 1 mark in labels \(one per step expected\)"):
        read_solutions(odd)
    missing = _write_jsonl(tmp_path / "missing.jsonl", [{"question": "q", "steps": ["a"], "image": ["nope.png"]}])
    with pytest.raises(ConfigError, match=r"missing.jsonl:1: cannot read image .*nope.png"):
        read_solutions(missing)


def test_solution_files_with_odd_marks_images_text_or_ids_are_refused_in_one_line_or_read_as_meant(tmp_path):
    # Before: a plain row's labels were read with bool(), so -1 was a right step; a scalar
    # process_correctness or labels was ignored (the row scored as unlabelled); an image
    # given as {"path": ...} was read as a file named "path", [3] was a TypeError traceback;
    # a lone surrogate was a UnicodeEncodeError traceback; and "id": 0 became a hash.
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.png")
    refused = [
        ({"question": "q", "steps": ["a", "b"], "labels": [True, -1]},
         r"labels marks must be true, false or null \(1 / 0 as numbers; 1 / 0 / -1 marks go in "
         r"response.process_correctness\), got -1"),
        ({"question": "q", "steps": ["a"], "labels": [2]}, "labels marks must be true, false or null .*got 2"),
        ({"question": "q", "steps": ["a"], "labels": [1.0]}, "labels marks must be true, false or null, got 1.0"),
        ({"question": "q", "steps": ["a"], "labels": True},
         r"labels must be a list of marks, one per step \(true, false or null\), got True"),
        ({"question": "q", "response": {"steps": ["a"], "process_correctness": 1}},
         r"process_correctness must be a list of marks, one per step \(1 \(right\), 0 \(neutral\) or -1 "
         r"\(wrong\)\), got 1"),
        ({"question": "q", "steps": ["a"], "images": [3]}, r"an image must be a path \(a string\) or \{\"path\": ...\}, got 3"),
        ({"question": "q", "steps": ["a"], "image": {"bytes": None}}, "an image must be a path"),
        ({"question": "q", "steps": ["a"], "images": 3}, "'images' must be a list of paths, got 3"),
    ]
    for row, message in refused:
        odd = _write_jsonl(tmp_path / "odd.jsonl", [{"question": "fine", "steps": ["x"]}, row])
        with pytest.raises(ConfigError, match=rf"odd.jsonl:2: {message}") as info:
            read_solutions(odd)
        assert "\n" not in str(info.value)
    for line in ('{"question": "q\\udcff", "steps": ["a"]}', '{"question": "q", "steps": ["a", "b\\udcff"]}'):
        (tmp_path / "sur.jsonl").write_text(line + "\n")
        with pytest.raises(ConfigError, match=r"sur.jsonl:1: the text holds a lone surrogate \('\\udcff' at character 1\)"):
            read_solutions(tmp_path / "sur.jsonl")
    ok = _write_jsonl(tmp_path / "ok.jsonl", [
        {"id": 0, "question": "q", "steps": ["a", "b"], "labels": [True, None], "image": {"path": "a.png"}, "answer": 0},
        {"id": "", "problem_id": 7, "question": "q", "steps": ["a"], "images": [{"path": "a.png", "bytes": None}]},
    ])
    first, second = read_solutions(ok)
    assert first.problem.id == "0" and first.problem.answer == "0" and first.labels == [True, None]
    assert len(first.problem.images) == 1 and first.problem.images[0].to_pil().size == (8, 8)
    assert second.problem.id == "7" and len(second.problem.images) == 1


def test_score_command_writes_rewards_and_reports_processbench_f1(tiny_prm, tmp_path, capsys):
    out, _ = tiny_prm
    pb = _write_jsonl(tmp_path / "pb.jsonl", [
        {"id": "a", "problem": "Let x be 2. Add 3.", "steps": ["x = 2.", "x = 2 + 3 = 9."], "label": 1},
        {"id": "b", "problem": "Let x be 1. Add 1.", "steps": ["x = 1.", "x = 1 + 1 = 2."], "label": -1},
    ])
    assert cli_main(["score", "--prm", str(out), "--input", str(pb), "--out", str(tmp_path / "s.jsonl"),
                     "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b"] and all(len(r["step_rewards"]) == 2 for r in rows)
    printed = capsys.readouterr().out
    assert "scored 2 solutions (4 steps)" in printed and "ProcessBench F1" in printed
    # a lone surrogate in a column the PRM never reads is written back escaped (before: a traceback)
    (tmp_path / "sur.jsonl").write_text('{"question": "q", "steps": ["a"], "generator": "m\\udcff"}\n')
    assert cli_main(["score", "--prm", str(out), "--input", str(tmp_path / "sur.jsonl"), "--out",
                     str(tmp_path / "s2.jsonl"), "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "s2.jsonl").read_text())["generator"] == "m\udcff"


#: ``prmtree score`` that leaves a file once the real scoring has started, so that the test
#: sends Ctrl-C while the PRM is at work (not while Python is still importing torch).
SCORE_SAYS_WHEN_IT_SCORES = """
import sys
from pathlib import Path
from prmtree.train import prm
real = prm.PRM.score_batch
def score_batch(self, items):
    Path(sys.argv[1]).touch()
    return real(self, items)
prm.PRM.score_batch = score_batch
from prmtree.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_score_interrupted_by_ctrl_c_says_so_in_one_line_and_exits_130(tiny_prm, tmp_path):
    # Before: Ctrl-C while scoring printed a KeyboardInterrupt traceback; train, run and bon
    # print one line and exit 130.
    out, _ = tiny_prm
    steps = ["x = 2.", "Add 3: x = 2 + 3 = 5.", "Multiply by 4: x = 5 * 4 = 20.", "The answer is \\boxed{20}."]
    pb = _write_jsonl(tmp_path / "pb.jsonl", [  # about 10 s of scoring on one CPU thread
        {"id": str(i), "problem": f"Let x be 2. Add 3. Multiply by 4. ({i})", "steps": steps, "label": -1}
        for i in range(5000)])
    scoring, scored = tmp_path / "scoring", tmp_path / "s.jsonl"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SCORE_SAYS_WHEN_IT_SCORES, str(scoring), "score", "--prm",
                             str(out), "--input", str(pb), "--out", str(scored), "--device", "cpu"],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not scoring.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert "Traceback" not in stderr, stderr
    assert proc.returncode == 130, (proc.returncode, stderr)
    said = [line for line in stderr.split("\n") if line.startswith("prmtree")]  # not transformers' loading bar
    assert said == [f"prmtree: score interrupted before writing {scored}: run the same command again"], stderr
    assert stderr.rstrip("\n").split("\n")[-1] == said[0]
    assert "scored" not in stdout and not scored.exists()

def test_train_command_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == f"prmtree: error: --data {tmp_path / 'nothing'}: no such file or directory"
    with pytest.raises(SystemExit) as exit_:
        cli_main(["score", "--prm", str(tmp_path), "--input", str(tmp_path / "x.jsonl"), "--out", str(tmp_path / "y")])
    assert exit_.value.code == 2 and "x.jsonl" in capsys.readouterr().err


def test_a_saved_hf_causal_lm_trains_with_lora(run_dir, tmp_path):
    pytest.importorskip("peft")
    from tiny_models import build_text_model

    model = build_text_model(tmp_path / "qwen")
    result = train(_opts(run_dir, tmp_path / "out", model=str(model), lora=True, lora_rank=4, max_steps=2,
                         batch_size=8, lr=1e-3))
    assert result["steps"] == 2
    config = json.loads((tmp_path / "out" / "prm_config.json").read_text())
    assert config["lora"] is True and config["base_model"] == str(model)
    prm = PRM.load(tmp_path / "out", device="cpu")
    assert prm.encoder.tokenizer.chat_template  # the question went through the model's chat template
    assert len(prm.score(Problem(id="p", question="What is 2+2?", answer="4"), ["2+2=4", "so 4"])) == 2


def test_a_tiny_llava_trains_on_the_images_and_scores_with_one(run_dir, tmp_path):
    from tiny_models import build_vlm

    model = build_vlm(tmp_path / "llava")
    rows = load_rows(run_dir)
    assert rows[0].images  # the run's rows carry their images
    result = train(_opts(run_dir, tmp_path / "out", model=str(model), max_steps=2, batch_size=4, lr=1e-3))
    assert result["steps"] == 2
    config = json.loads((tmp_path / "out" / "prm_config.json").read_text())
    assert config["vision"] is True and config["model_class"] == "LlavaForConditionalGeneration"
    prm = PRM.load(tmp_path / "out", device="cpu")
    row = next(r for r in rows if len(r.steps) >= 2)
    problem = Problem(id="p", question=row.question, answer="1", images=(ProblemImage(row.images[0]),))
    rewards = prm.score(problem, row.steps[:2])
    assert len(rewards) == 2 and all(0 <= r <= 1 for r in rewards)


@pytest.mark.slow
@pytest.mark.ray
def test_ray_train_with_one_cpu_worker(ray_session, run_dir, tmp_path):  # the session's Ray, not one of its own
    result = train(_opts(run_dir, tmp_path / "ray", workers=1, max_steps=2))
    assert result["steps"] == 2 and result["workers"] == 1
    assert (tmp_path / "ray" / "prm_config.json").is_file()
    assert len(PRM.load(tmp_path / "ray", device="cpu").score(
        Problem(id="p", question="q", answer="1"), ["a", "b"])) == 2


def test_train_refuses_what_export_refuses_and_writing_into_its_data(run_dir, tmp_path, capsys):
    # Before: a damaged run and an unfinished one trained silently, a non-Parquet file gave
    # a traceback, and --out inside --data wrote the model into the run.
    import shutil

    def refused(*args):
        with pytest.raises(SystemExit) as exit_:
            cli_main(["train", *args, "--max-steps", "1"])
        assert exit_.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        return lines[0]

    damaged = tmp_path / "damaged"
    shutil.copytree(run_dir, damaged)
    shard = sorted((damaged / "steps").glob("*.parquet"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(data)
    said = refused("--data", str(damaged), "--out", str(tmp_path / "m1"))
    assert f"{str(damaged)!r} is damaged (steps/{shard.name}: content changed" in said
    assert not (tmp_path / "m1").exists()

    stopped = tmp_path / "stopped"
    shutil.copytree(run_dir, stopped)
    manifest = json.loads((stopped / "manifest.json").read_text())
    manifest["status"] = "running"  # what a run killed mid-way leaves
    (stopped / "manifest.json").write_text(json.dumps(manifest))
    said = refused("--data", str(stopped), "--out", str(tmp_path / "m2"))
    assert "is not a finished run" in said and said.endswith("pass --allow-partial to train on what is saved")
    assert cli_main(["train", "--data", str(stopped), "--out", str(tmp_path / "m2"), "--allow-partial",
                     "--max-steps", "1", "--threads", "1"]) == 0
    assert "training on what is saved" in capsys.readouterr().err

    not_parquet = tmp_path / "export.jsonl"
    export(run_dir, "openrlhf", not_parquet)
    said = refused("--data", str(not_parquet), "--out", str(tmp_path / "m3"))
    assert said.startswith(f"prmtree: error: --data {not_parquet} is not a Parquet file (")

    said = refused("--data", str(run_dir), "--out", str(run_dir / "model"))
    assert said == (f"prmtree: error: --out {run_dir / 'model'} is inside --data {run_dir}: the model and its "
                    "checkpoints would be written into the data; train somewhere else")
    assert not (run_dir / "model").exists()


def test_train_leaves_out_flagged_paths_as_trainer_exports_do_unless_asked(tmp_path):
    # Before: train read every steps row, so the paths a consensus run flagged (MC and the
    # judge disagreed), which every trainer export leaves out, were trained on and counted
    # in the held-out metrics; and the tree's paths carried the disputed labels.
    from prmtree.engine.output import read_table
    from prmtree.policies.simulated import SimulatedPolicy
    from prmtree.train.data import disputed_steps, tree_rows

    problems = generate_problems(12, seed=4, min_steps=8, answer_spaces=("yesno", "choice", "number"))
    out = tmp_path / "run"
    prmtree.run(problems, policy=SimulatedPolicy(guess_rate=0.3, judge_accuracy=0.6), out=out,
                config={"labels": {"method": "consensus", "on_disagreement": "flag"}})
    steps = read_table(out, "steps").to_pylist()
    flagged = {r["path_id"] for r in steps if r["flagged"]}
    assert 0 < len(flagged) < len(steps)
    clean, every = load_rows(out, with_images=False), load_rows(out, with_images=False, keep_flagged=True)
    assert len(clean) == export(out, "openrlhf", tmp_path / "o.jsonl") < len(every)
    assert len(every) == export(out, "openrlhf", tmp_path / "a.jsonl", ExportOptions(keep_flagged=True))
    unflagged = {(r["problem_id"], tuple(str(s).strip() for s in r["completions"])) for r in steps if not r["flagged"]}
    assert all((r.problem_id, tuple(r.steps)) in unflagged for r in clean)  # (no undecided step in this run)
    disputed = disputed_steps(out)
    assert disputed
    for row in tree_rows(out, clean, disputed=disputed):
        assert not any((row.problem_id, tuple(row.steps[:i + 1])) in disputed for i in range(len(row.steps)))
    assert any(any((r.problem_id, tuple(r.steps[:i + 1])) in disputed for i in range(len(r.steps)))
               for r in tree_rows(out, every))
    kw = dict(max_steps=1, paths="steps", test_share=0.3)
    left, kept = train(_opts(out, tmp_path / "m1", **kw)), train(_opts(out, tmp_path / "m2", keep_flagged=True, **kw))
    assert left["train_paths"] + left["validation_paths"] + left["held_out_paths"] == len(clean)
    assert kept["train_paths"] + kept["validation_paths"] + kept["held_out_paths"] == len(every)
    assert json.loads((tmp_path / "m1" / "prm_config.json").read_text())["keep_flagged"] is False
    assert cli_main(["train", "--data", str(out), "--out", str(tmp_path / "m3"), "--keep-flagged", "--max-steps", "1",
                     "--threads", "1", "--paths", "steps", "--test-share", "0.3", "--max-length", "256",
                     "--json"]) == 0
    m3 = json.loads((tmp_path / "m3" / "metrics.json").read_text())
    assert m3["train_paths"] + m3["validation_paths"] + m3["held_out_paths"] == len(every)


def test_training_that_would_read_no_step_is_refused_before_anything_is_saved(run_dir, tmp_path, capsys):
    # Before: each exited 0 and saved an untrained model (no optimiser step ran, or a Ray
    # worker had no path): --max-length cutting every path before its first marker, an
    # empty --marker, more --workers than training paths.
    import pyarrow.parquet as pq

    def refused(*args):
        with pytest.raises(SystemExit) as exit_:
            cli_main(["train", "--threads", "1", "--max-steps", "1", *args])
        assert exit_.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        return lines[0]

    said = refused("--data", str(run_dir), "--out", str(tmp_path / "m1"), "--max-length", "8", "--paths", "steps")
    assert re.fullmatch(r"prmtree: error: --max-length 8 cuts all \d+ training paths before their first step marker: "
                        r"no step to train on; raise --max-length", said), said
    assert not (tmp_path / "m1").exists()
    said = refused("--data", str(run_dir), "--out", str(tmp_path / "m2"), "--marker", "")
    assert said == ("prmtree: error: --marker must be a non-empty token without surrounding spaces, got '': "
                    "the PRM reads each step's reward at its marker")
    assert not (tmp_path / "m2").exists()
    export(run_dir, "stepwise", tmp_path / "all.parquet")
    pq.write_table(pq.read_table(tmp_path / "all.parquet").slice(0, 1), tmp_path / "one.parquet")
    said = refused("--data", str(tmp_path / "one.parquet"), "--out", str(tmp_path / "m3"), "--workers", "2")
    assert said == ("prmtree: error: --workers 2: 1 training paths, fewer than the workers (each trains on its share): "
                    "use --workers 1 or fewer, or more data")
    assert not (tmp_path / "m3").exists()


def test_processbench_f1_is_n_a_when_the_paths_hold_one_kind_only(tiny_prm, tmp_path, capsys):
    # Before: with no erroneous path (or no correct one) the missing accuracy was 0, so the
    # F1 printed 0.000 however good the PRM: an accuracy over no path is undefined.
    only_right = step_metrics([[0.9, 0.8], [0.7]], [[True, True], [True]])
    assert only_right["acc_correct"] == 1.0 and only_right["acc_erroneous"] is None
    assert only_right["processbench_f1"] is None and only_right["first_error_accuracy"] == 1.0
    only_wrong = step_metrics([[0.9, 0.2]], [[True, False]])
    assert only_wrong["acc_erroneous"] == 1.0 and only_wrong["acc_correct"] is None
    assert only_wrong["processbench_f1"] is None
    assert json.loads(json.dumps(only_right))["processbench_f1"] is None
    out, _ = tiny_prm
    pb = _write_jsonl(tmp_path / "pb.jsonl", [
        {"id": "b", "problem": "Let x be 1. Add 1.", "steps": ["x = 1.", "x = 1 + 1 = 2."], "label": -1}])
    assert cli_main(["score", "--prm", str(out), "--input", str(pb), "--out", str(tmp_path / "s.jsonl"),
                     "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"ProcessBench F1 n/a \(erroneous n/a, correct (0|1)\.000\)", printed), printed


def refused_in_one_line(capsys, *args) -> str:
    """``prmtree *args`` in this process: exit 2 and one line on stderr, which is returned."""
    with pytest.raises(SystemExit) as exit_:
        cli_main([*map(str, args)])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_nonsensical_numbers_missing_devices_and_a_word_marker(tiny_prm, run_dir, tmp_path, capsys):
    # Before: each was a traceback (score --batch-size 0, --device cuda without CUDA, train
    # --lr -1 or --log-every 0), or taken (score --threshold 2: every step wrong).
    import torch

    out, _ = tiny_prm
    pb = _write_jsonl(tmp_path / "pb.jsonl", [{"problem": "Let x be 1.", "steps": ["x = 1."], "label": -1}])

    refused = functools.partial(refused_in_one_line, capsys)

    score = ["score", "--prm", out, "--input", pb, "--out", tmp_path / "s.jsonl"]
    assert refused(*score, "--batch-size", "0") == "prmtree: error: --batch-size must be a whole number >= 1, got 0"
    assert refused(*score, "--threshold", "2") == ("prmtree: error: --threshold must be in [0, 1] (rewards are "
                                                   "probabilities), got 2.0")
    assert refused(*score, "--device", "cuda:x") == ("prmtree: error: --device 'cuda:x' is not a device torch knows: "
                                                     "use cpu, cuda, cuda:N, mps or auto")
    training = ["train", "--data", run_dir, "--out", tmp_path / "m", "--max-steps", "1", "--threads", "1"]
    if not torch.cuda.is_available():
        for args in (score, training):
            assert refused(*args, "--device", "cuda").startswith(
                "prmtree: error: --device cuda: CUDA is not available on this machine (torch ")
    assert refused(*training, "--lr", "-1") == "prmtree: error: --lr must be a positive number, got -1.0"
    assert refused(*training, "--lr", "nan") == "prmtree: error: --lr must be a positive number, got nan"
    assert refused(*training, "--log-every", "0") == "prmtree: error: --lora-rank and --log-every must be >= 1, got 16 and 0"
    assert refused(*training, "--epochs", "0").startswith("prmtree: error: --batch-size must be >= 1")
    assert not (tmp_path / "m").exists()
    # a marker that is also a word of the text (before: the tiny tokenizer gave it two ids,
    # the largest past the embeddings: an IndexError at the first batch)
    result = train(_opts(run_dir, tmp_path / "word", marker="step", max_steps=1))
    assert result["steps"] == 1
    prm = PRM.load(tmp_path / "word", device="cpu")
    assert prm.encoder.marker_id == prm.encoder.tokenizer.get_vocab()["step"]
    assert max(prm.encoder.tokenizer.get_vocab().values()) < prm.model.lm.get_input_embeddings().weight.shape[0]
    assert len(prm.score("Let x be 1, step by step.", ["x = 1, one step.", "so 1"])) == 2


def test_outs_and_inputs_at_their_edges(tiny_prm, run_dir, tmp_path, capsys):
    # Before: train --out into a run's directory wrote the model among its tables (exit 0);
    # --out a file said "File exists"; score --out in a missing folder failed after the model
    # loaded, naming no option; a folder as --out the same; a BOM made score's input "not JSON";
    # train --json printed its progress lines on stdout before the JSON.
    out, _ = tiny_prm

    refused = functools.partial(refused_in_one_line, capsys)

    training = ["train", "--data", run_dir, "--max-steps", "1", "--threads", "1"]
    other_run = tmp_path / "other"
    prmtree.run(generate_problems(2, seed=1), policy="simulated", out=other_run, seed=1)
    listed = sorted(p.name for p in other_run.iterdir())
    assert refused(*training, "--out", other_run) == (f"prmtree: error: --out {other_run} holds a prmtree run (its "
                                                      "manifest): the model would be written among its tables; "
                                                      "train somewhere else")
    assert sorted(p.name for p in other_run.iterdir()) == listed
    (tmp_path / "afile").write_text("x")
    assert refused(*training, "--out", tmp_path / "afile") == (f"prmtree: error: --out {tmp_path / 'afile'} is a "
                                                               "file: the PRM is written as a folder; name a new one")
    pb = tmp_path / "pb.jsonl"
    pb.write_text("\ufeff" + json.dumps({"problem": "Let x be 1.", "steps": ["x = 1."], "label": -1}) + "\n",
                  encoding="utf-8")
    assert refused("score", "--prm", out, "--input", pb, "--out", tmp_path) == (
        f"prmtree: error: --out {tmp_path} is a folder: name the JSONL file to write")
    deep = tmp_path / "new" / "deeper" / "s.jsonl"
    assert cli_main(["score", "--prm", str(out), "--input", str(pb), "--out", str(deep), "--device", "cpu"]) == 0
    assert len(json.loads(deep.read_text())["step_rewards"]) == 1  # the BOM read as no character
    capsys.readouterr()
    assert cli_main([*map(str, training), "--out", str(tmp_path / "j"), "--json"]) == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out)["steps"] == 1  # the JSON alone
    assert "saved to" in printed.err


def test_steps_past_the_length_limit_get_no_invented_reward(tiny_prm, tmp_path, capsys):
    # Before: a step whose marker fell past max_length got the last reward read, or an
    # invented 0.5 when the first marker was already past it; and PRM.score(q, None) was a
    # bare "'NoneType' object is not iterable".
    out, _ = tiny_prm
    prm = PRM.load(out, device="cpu")
    long = "word " * 20000
    assert prm.score("Let x be 1.", [long]) == [None]
    first, second = prm.score("Let x be 1.", ["x = 1.", long])
    assert isinstance(first, float) and second is None
    with pytest.raises(TypeError, match=r"PRM.score takes the steps as a list of str \(one per step\), got NoneType"):
        prm.score("Let x be 1.", None)
    m = step_metrics([[0.9, None], [0.2]], [[True, False], [False]])
    assert m["unread_steps"] == 1 and m["steps"] == 2 and m["paths"] == 1 and m["acc_erroneous"] == 1.0
    pb = _write_jsonl(tmp_path / "pb.jsonl", [{"problem": "Let x be 1.", "steps": ["x = 1.", long], "label": 1}])
    assert cli_main(["score", "--prm", str(out), "--input", str(pb), "--out", str(tmp_path / "s.jsonl"),
                     "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "s.jsonl").read_text())["step_rewards"][1] is None
    assert "1 steps lie past the PRM's length limit (4096 tokens): never read, their step_rewards are null" \
        in capsys.readouterr().err


def test_training_keeps_the_epoch_that_scores_best_on_the_validation_problems(run_dir, tmp_path, capsys):
    # The tiny model on demo data learns its few problems by heart within a few epochs (README,
    # "Step-level evaluation"): the last weights are rarely the ones to keep on a small set.
    from prmtree.train.trainer import held_out_metrics

    result = train(_opts(run_dir, tmp_path / "best", max_steps=0, epochs=5, val_share=0.3))
    selection = result["selection"]
    history = selection["by_epoch"]
    assert [e for e, _ in history] == [1, 2, 3, 4, 5] and selection["criterion"] in ("processbench_f1", "step_f1_wrong")
    best = max(s for _, s in history)
    assert selection["epoch"] == next(e for e, s in history if s == best)  # the first of equals: fewer epochs
    train_rows, _ = split_rows(load_rows(run_dir, with_images=False), 0.2)
    _, validation = split_rows(train_rows, 0.3, salt="validation")
    assert len(validation) == result["validation_paths"] > 0
    saved = PRM.load(tmp_path / "best", device="cpu")  # the kept epoch's weights, as saved
    assert held_out_metrics(saved, validation, step_metrics)[selection["criterion"]] == pytest.approx(best)
    # --select last trains on every training problem (no validation is set aside to choose by)
    last = train(_opts(run_dir, tmp_path / "last", max_steps=0, epochs=5, val_share=0.3, select="last"))
    assert last["selection"] is None and last["validation_paths"] == 0
    assert last["train_paths"] > result["train_paths"] and last["held_out_paths"] == result["held_out_paths"]
    capsys.readouterr()
    none = train(_opts(run_dir, tmp_path / "none", max_steps=2, val_share=0.0, quiet=False))
    assert none["selection"] is None and none["validation_paths"] == 0
    # it says why: the user asked for no validation set (it blamed the data's size)
    assert "select: --val-share 0 sets no validation problems aside; the last weights are kept" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"--val-share must be in \[0, 1\) and --select one of best, last"):
        train(_opts(run_dir, tmp_path / "bad", val_share=1.0))


def test_a_second_training_into_one_out_is_refused_and_a_finished_one_resumes(run_dir, tmp_path):
    # Before: the second training's checkpoints mixed with the first's (a --resume then took
    # the other training's), and it failed with "Directory not empty" on the first step both
    # saved; a .tmp checkpoint a crash left made every later save fail on int('0000050.tmp').
    out = tmp_path / "m"
    train(_opts(run_dir, out, max_steps=4))
    with pytest.raises(ConfigError, match=rf"--out {re.escape(str(out))} holds the checkpoints of an earlier training "
                                          r"\(up to step-0000004\): add --resume to continue it, or use another --out"):
        train(_opts(run_dir, out, max_steps=4))
    (out / "checkpoints" / "step-0000002.tmp").mkdir()  # a crash mid-save
    saved = (out / "model.safetensors").read_bytes() if (out / "model.safetensors").exists() else None
    # nothing left to train: refused (saving again put the last weights over the chosen epoch's)
    with pytest.raises(ConfigError, match=r"--resume: the training in .* is done to step 4 \(this run would stop at "
                                          r"4\): raise --epochs or --max-steps to train further"):
        train(_opts(run_dir, out, max_steps=4, resume=True))
    assert saved is None or (out / "model.safetensors").read_bytes() == saved
    again = train(_opts(run_dir, out, max_steps=6, resume=True))  # the .tmp one is no checkpoint
    assert again["steps"] == 6 and again["resumed_at"] == 4
    assert [p.name for p in sorted((out / "checkpoints").iterdir())][-1] == "step-0000006"


def test_a_resume_chooses_among_every_epoch_scored_before_it_too(run_dir, tmp_path):
    # before: an interrupted training forgot the epochs scored before the stop and kept a
    # later, worse one; --select could change across a resume (the training set with it)
    whole = train(_opts(run_dir, tmp_path / "whole", max_steps=0, epochs=4, val_share=0.3))
    per_epoch = whole["total_steps"] // 4
    part = train(_opts(run_dir, tmp_path / "part", max_steps=per_epoch + 1, epochs=4, val_share=0.3, save_every=1))
    assert [e for e, _ in part["selection"]["by_epoch"]][0] == 1
    rest = train(_opts(run_dir, tmp_path / "part", max_steps=0, epochs=4, val_share=0.3, save_every=1, resume=True))
    assert rest["selection"]["by_epoch"][0] == whole["selection"]["by_epoch"][0]  # epoch 1 scored before the stop
    assert rest["selection"]["epoch"] == whole["selection"]["epoch"]
    assert rest["held_out"] == pytest.approx(whole["held_out"])  # the same PRM as the run never stopped
    with pytest.raises(ConfigError, match=r"--resume: val_share, select differ from the checkpoint's "
                                          r"\(val_share=0.3, select='best'\)"):
        train(_opts(run_dir, tmp_path / "part", max_steps=0, epochs=5, val_share=0.3, select="last", resume=True))


def test_the_epoch_is_chosen_by_what_the_validation_paths_can_tell():
    # before: with no wrong step among them, F1 on wrong steps (0 whatever the model said) was
    # the criterion, every epoch tied at 0 and the first was kept
    from prmtree.train.trainer import criterion_for

    assert criterion_for([[True, False], [True, True]]) == "processbench_f1"
    assert criterion_for([[True, False], [False]]) == "step_f1_wrong"
    assert criterion_for([[True, True], [True, None]]) == "step_accuracy"
    assert criterion_for([[None], []]) == ""


def test_the_checkpoint_keeps_the_last_weights_and_the_prm_the_chosen_ones(run_dir, tmp_path, monkeypatch):
    # before: the chosen epoch's weights were put back before the last checkpoint, which then
    # paired them with the last step's optimiser and schedule (a --resume lost the epochs after)
    import torch

    from prmtree.train import trainer

    real, calls = trainer.held_out_metrics, []

    def falling(prm, rows, step_metrics):  # every epoch scores less than the one before: epoch 1 is kept
        metrics = real(prm, rows, step_metrics)
        calls.append(1)
        return {**metrics, **{k: 1.0 - 0.1 * len(calls) for k in ("processbench_f1", "step_f1_wrong", "step_accuracy")}}

    monkeypatch.setattr(trainer, "held_out_metrics", falling)
    result = train(_opts(run_dir, tmp_path / "m", max_steps=0, epochs=3, val_share=0.3, test_share=0.0))
    assert result["selection"]["epoch"] == 1 and len(result["selection"]["by_epoch"]) == 3
    last = torch.load(sorted((tmp_path / "m" / "checkpoints").iterdir())[-1] / "state.pt", weights_only=False)
    assert last["step"] == result["steps"]
    saved = PRM.load(tmp_path / "m", device="cpu").model.state_dict()
    trained = [k for k, v in last["model"].items() if k in saved and v.dtype.is_floating_point]
    assert trained and any(not torch.equal(last["model"][k], saved[k]) for k in trained)
