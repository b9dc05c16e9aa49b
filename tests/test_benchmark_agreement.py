"""Under noise, labels agree with ground truth at exactly the rate the benchmark reports."""

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
    "noise, strategy, budget",
    [("errors_and_lucky", "omega", 160), ("errors_and_lucky", "shepherd", 320), ("errors_only", "mcts", 160)],
)
def test_label_accuracy_matches_the_committed_benchmark(tmp_path, noise, strategy, budget):
    recorded = json.loads((BENCH / "results" / "label_quality.json").read_text())
    (expected,) = [
        r for r in recorded["results"] if (r["noise"], r["strategy"], r["budget"]) == (noise, strategy, budget)
    ]
    bench = _bench_module()
    problems = bench.benchmark_problems(recorded["problems"])
    got = bench.evaluate(strategy, budget, problems, noise, recorded["run_seed"], out=tmp_path)
    assert got["step_accuracy"] == pytest.approx(expected["step_accuracy"], abs=1e-12)
    assert got["localisation_accuracy"] == pytest.approx(expected["localisation_accuracy"], abs=1e-12)
    assert got["rollouts_per_problem"] == pytest.approx(expected["rollouts_per_problem"])
    assert got["step_accuracy"] > 0.85  # noisy, but far from chance
