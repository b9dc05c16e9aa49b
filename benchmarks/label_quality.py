"""Label quality per rollout: which strategy buys correct step labels most cheaply?

For each strategy and several rollout budgets, on the same synthetic problems (solutions
of 8-12 steps) and the same noisy simulated policy, measure rollouts per problem,
step-label accuracy and first-error localisation accuracy against ground truth,
labelled steps per 1,000 rollouts, and rollouts per correctly located first error.
Writes results/label_quality.json and results/label_quality.png.

    python benchmarks/label_quality.py [--problems 150]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import prmtree
from prmtree.engine.output import read_table
from prmtree.engine.quality import score_paths
from prmtree.engine.synthetic import generate_problems
from prmtree.policies.simulated import SimulatedPolicy

RESULTS = Path(__file__).parent / "results"
BUDGETS = {"omega": [40, 80, 160, 320], "shepherd": [80, 160, 320, 640], "mcts": [80, 160, 320, 640]}
#: Two noise settings: step errors only (a wrong step can still be cancelled by a later
#: one), and step errors plus 2% of wrong solutions writing the gold answer anyway.
NOISE = {
    "errors_only": {"error_rate": 0.08, "lucky_rate": 0.0},
    "errors_and_lucky": {"error_rate": 0.08, "lucky_rate": 0.02},
}
PROBLEMS_SEED = 1234


def benchmark_problems(n: int = 150) -> list:
    return generate_problems(n, seed=PROBLEMS_SEED, min_steps=8, max_steps=12)


def evaluate(strategy: str, budget: int, problems: list, noise: str, seed: int = 0, out: Path | None = None) -> dict:
    """Run one configuration and score its labels against the simulated ground truth."""
    if out is None:
        out = RESULTS / f".tmp-{noise}-{strategy}-{budget}"
        shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    summary = prmtree.run(
        problems,
        policy=SimulatedPolicy(**NOISE[noise]),
        strategy=strategy,
        out=out,
        config={"seed": seed, "search": {"strategy": strategy, "budget": budget}},
    )
    oracle = SimulatedPolicy()
    by_id = {p.id: p for p in problems}
    rows = read_table(out, "steps").select(["problem_id", "completions", "labels"]).to_pylist()
    q = score_paths(rows, lambda pid, steps: oracle.first_error(by_id[pid], steps))
    return {
        "noise": noise,
        "strategy": strategy,
        "budget": budget,
        "rollouts_per_problem": summary.rollouts / len(problems),
        "step_accuracy": q.step_accuracy,
        "localisation_accuracy": q.localisation_accuracy,
        "first_errors_found": q.first_errors_found,
        "first_error_precision": q.first_error_precision,
        "rollouts_per_found_first_error": summary.rollouts / max(q.first_errors_found, 1),
        "labelled_steps_per_1k_rollouts": 1000 * q.steps / max(summary.rollouts, 1),
        "paths": q.paths,
        "seconds": time.perf_counter() - t,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    problems = benchmark_problems(args.problems)
    results, verdicts = [], {}
    for noise in NOISE:
        print(f"== noise: {noise} {NOISE[noise]}")
        for strategy, budgets in BUDGETS.items():
            for budget in budgets:
                r = evaluate(strategy, budget, problems, noise, args.seed)
                results.append(r)
                print(
                    f"{strategy:9s} budget {budget:4d}: {r['rollouts_per_problem']:7.1f} rollouts/problem  "
                    f"step acc {r['step_accuracy']:.3f}  first-error acc {r['localisation_accuracy']:.3f}  "
                    f"first-error precision {r['first_error_precision']:.3f}  "
                    f"{r['rollouts_per_found_first_error']:6.1f} rollouts per found first error  "
                    f"{r['labelled_steps_per_1k_rollouts']:6.1f} steps/1k rollouts"
                )
        verdicts[noise] = verdict([r for r in results if r["noise"] == noise])
        print(json.dumps(verdicts[noise], indent=2))
    RESULTS.mkdir(exist_ok=True)
    payload = {"problems": args.problems, "problems_seed": PROBLEMS_SEED, "run_seed": args.seed,
               "noise": NOISE, "results": results, "verdicts": verdicts}
    (RESULTS / "label_quality.json").write_text(json.dumps(payload, indent=2))
    plot(results, RESULTS / "label_quality.png")
    for tmp in RESULTS.glob(".tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)


def verdict(results: list[dict]) -> dict:
    """The issue's target: omega's cheapest cost per located first error against shepherd's,
    at equal or better accuracy of the first errors it locates."""
    best = {s: min((r for r in results if r["strategy"] == s), key=lambda r: r["rollouts_per_found_first_error"])
            for s in ("omega", "shepherd")}
    ratio = best["omega"]["rollouts_per_found_first_error"] / best["shepherd"]["rollouts_per_found_first_error"]
    return {
        "omega_budget": best["omega"]["budget"],
        "shepherd_budget": best["shepherd"]["budget"],
        "omega_over_shepherd_rollouts_per_found_first_error": round(ratio, 3),
        "omega_first_error_precision": round(best["omega"]["first_error_precision"], 4),
        "shepherd_first_error_precision": round(best["shepherd"]["first_error_precision"], 4),
        "omega_step_accuracy": round(best["omega"]["step_accuracy"], 4),
        "shepherd_step_accuracy": round(best["shepherd"]["step_accuracy"], 4),
        "cost_target_met": ratio <= 0.5,
        "accuracy_target_met": best["omega"]["first_error_precision"] >= best["shepherd"]["first_error_precision"],
    }


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for noise, style in zip(NOISE, ("-", "--")):
        for strategy, colour in zip(BUDGETS, ("C0", "C1", "C2")):
            rs = [r for r in results if r["strategy"] == strategy and r["noise"] == noise]
            x = [r["rollouts_per_problem"] for r in rs]
            label = f"{strategy} ({noise})"
            axes[0].plot(x, [r["step_accuracy"] for r in rs], style, color=colour, marker="o", label=label)
            axes[1].plot(x, [r["localisation_accuracy"] for r in rs], style, color=colour, marker="o", label=label)
            axes[2].plot(x, [r["first_error_precision"] for r in rs], style, color=colour, marker="o", label=label)
    axes[0].set_title("step-label accuracy")
    axes[1].set_title("first-error localisation accuracy")
    axes[2].set_title("first-error precision (paths with an error)")
    for ax in axes:
        ax.set_xlabel("rollouts per problem")
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
