"""examples/train_prm.py trains a step classifier from an export on the CPU, and its loss falls."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

import prmtree
from prmtree.engine.synthetic import generate_problems
from prmtree.export import ExportOptions, export

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "train_prm.py"


@pytest.fixture(scope="module")
def train_prm():
    spec = importlib.util.spec_from_file_location("train_prm_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run_and_export(tmp_path_factory):
    """A run (``run/``) and its hf export (``hf/``), side by side."""
    root = tmp_path_factory.mktemp("train-prm")
    prmtree.run(generate_problems(10, seed=21), policy="simulated", out=root / "run", seed=3)
    export(root / "run", "hf", root / "hf", ExportOptions(test_size=0.34))
    return root


def test_tiny_prm_trains_from_an_hf_export_and_its_loss_falls(train_prm, run_and_export, capsys):
    started = time.perf_counter()
    result = train_prm.main(["--data", str(run_and_export / "hf"), "--max-steps", "8", "--batch-size", "8",
                             "--max-length", "192", "--log-every", "4", "--seed", "0"])
    assert result["steps"] == 8
    assert result["train_loss_after"] < 0.9 * result["train_loss_before"]
    assert result["held_out_paths"] > 0 and result["held_out_steps"] >= result["held_out_paths"]
    for key in ("step_f1_wrong", "step_accuracy", "first_error_accuracy"):
        assert 0.0 <= result[key] <= 1.0
    printed = capsys.readouterr().out
    assert "step F1 (wrong steps)" in printed and "first-error accuracy" in printed
    assert time.perf_counter() - started < 60


def test_the_real_model_path_loads_a_saved_model_from_a_run_directory(train_prm, run_and_export, tmp_path):
    """``--model`` as used on a GPU (AutoTokenizer + AutoModelForTokenClassification, ``<step>`` added),
    here with a tiny model saved to disk, on the run's own directory."""
    rows = train_prm.load_rows(run_and_export / "run")
    tok = train_prm.tiny_tokenizer([train_prm.text_of(r) for r in rows])
    tok.add_tokens(["spare"])
    train_prm.tiny_model(len(tok), 128, tok.pad_token_id).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    result = train_prm.main(["--data", str(run_and_export / "run"), "--model", str(tmp_path / "model"), "--max-steps", "2",
                             "--batch-size", "16", "--max-length", "128", "--lr", "1e-3",
                             "--save", str(tmp_path / "out")])
    assert result["steps"] == 2
    assert (tmp_path / "out" / "config.json").exists()
