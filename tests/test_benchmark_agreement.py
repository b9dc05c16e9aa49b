"""The label benchmark's committed numbers are what the code produces today (exactly: the
simulated policy is seeded), so the README's table cannot drift from the code."""

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _bench_module():
    spec = importlib.util.spec_from_file_location("label_quality", BENCH / "label_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "workload, strategy, method",
    [("guessable", "omega", "calibrated"), ("guessable", "shepherd", "mc"), ("demo", "mcts", "calibrated"),
     ("guessable", "omega", "consensus")],
)
def test_label_quality_matches_the_committed_benchmark(tmp_path, workload, strategy, method):
    recorded = json.loads((BENCH / "results" / "label_quality.json").read_text())
    (expected,) = [
        r for r in recorded["results"] if (r["workload"], r["strategy"], r["method"]) == (workload, strategy, method)
    ]
    bench = _bench_module()
    problems = bench.benchmark_problems(workload, recorded["problems"])
    got = bench.evaluate(workload, strategy, method, problems, recorded["run_seed"], out=tmp_path)
    for key in ("step_agreement", "first_error_recall", "first_error_precision", "rollouts_per_problem"):
        assert got[key] == pytest.approx(expected[key], abs=1e-12), key


def test_calibrated_labels_beat_the_peers_rule_where_answers_are_guessed():
    recorded = json.loads((BENCH / "results" / "label_quality.json").read_text())
    by = {(r["workload"], r["strategy"], r["method"]): r for r in recorded["results"]}
    for strategy in ("omega", "shepherd", "mcts"):
        mc, cal = by[("guessable", strategy, "mc")], by[("guessable", strategy, "calibrated")]
        assert cal["step_agreement"] > mc["step_agreement"]
        assert cal["first_error_recall"] > mc["first_error_recall"]
        assert by[("noiseless", strategy, "calibrated")]["step_agreement"] == 1.0
