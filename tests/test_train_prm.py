"""examples/train_prm.py (the prmtree.train API in a few lines) trains on an hf export and scores a solution."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

import prmtree
from prmtree.engine.synthetic import generate_problems
from prmtree.export import ExportOptions, export

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "train_prm.py"


def test_the_example_trains_from_an_hf_export_and_scores(tmp_path, capsys):
    prmtree.run(generate_problems(10, seed=21), policy="simulated", out=tmp_path / "run", seed=3)
    export(tmp_path / "run", "hf", tmp_path / "hf", ExportOptions(test_size=0.34))
    spec = importlib.util.spec_from_file_location("train_prm_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--data", str(tmp_path / "hf"), "--out", str(tmp_path / "prm"), "--max-steps", "2"])
    assert result["steps"] == 2 and result["held_out_paths"] > 0
    assert json.loads((tmp_path / "prm" / "prm_config.json").read_text())["base_model"] == "tiny"
    printed = capsys.readouterr().out
    assert "step F1 (wrong steps)" in printed and "Multiply by 2: x = 7 * 2 = 15." in printed
