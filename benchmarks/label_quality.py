"""Label quality when answers can be guessed: strategy x labelling method, against truth.

Workloads (synthetic problems, solutions of 8-12 steps, the simulated policy whose
ground truth is known):

* ``guessable``: one third yes/no (chance 1/2), one third four options (1/4), one
  third free numbers (about 0); 8% of steps wrong, 30% of final answers guessed from the
  answer space, 2% lucky numeric answers. A wrong value leaves the solver guessing;
* ``guessable+cancelling``: the same, but a later slip may undo an earlier one (off by
  +1, then -1): wrong prefixes then often reach the answer (lucky continuations), the
  case no Monte-Carlo rule can see — reported to show the limit;
* ``demo``: ``prmtree demo``'s workload (free numbers, 8% step errors, 2% lucky);
* ``noiseless``: continuations never err or guess: every method must equal the truth.

For each strategy and method (``mc`` = the peers' rule, ``calibrated`` = the default,
``consensus`` = calibrated + a simulated judge of 80% accuracy), at default settings
(k = 8, budget 200): step agreement with the truth, first-error recall and precision,
rollouts (and judge calls) per labelled step, and for consensus the share of paths kept.
Beside them: labelled steps and rollouts per problem (adaptive labelling stops a problem
when nothing more is worth sampling, the mc rule spends its budget), rollouts per
correctly labelled step (the mc rule's labelled steps include the ones it gets wrong),
and first errors found (the labels a PRM learns most from) with their cost.
Writes results/label_quality.json.

``--stopping-rule`` measures instead what ``[labels] max_rollouts_per_step`` trades (the
README's "What the stopping rule trades"): omega, calibrated, on ``guessable``, at the
default 25, at 10 and with no limit (``None``): labelled steps per problem of each answer
space and rollouts per labelled step. Writes results/stopping_rule.json.

    python benchmarks/label_quality.py [--problems 150] [--stopping-rule]
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
STRATEGIES = ("omega", "shepherd", "mcts")
METHODS = ("mc", "calibrated", "consensus")
WORKLOADS = {
    "guessable": {"spaces": ("yesno", "choice", "number"),
                  "policy": {"error_rate": 0.08, "guess_rate": 0.3, "lucky_rate": 0.02, "cancel_errors": False}},
    "guessable+cancelling": {"spaces": ("yesno", "choice", "number"),
                             "policy": {"error_rate": 0.08, "guess_rate": 0.3, "lucky_rate": 0.02}},
    "demo": {"spaces": ("number",), "policy": {"error_rate": 0.08, "lucky_rate": 0.02}},
    "noiseless": {"spaces": ("yesno", "choice", "number"), "policy": {"error_rate": 0.08, "noiseless": True}},
}
PROBLEMS_SEED = 1234


def benchmark_problems(workload: str, n: int = 150) -> list:
    return generate_problems(n, seed=PROBLEMS_SEED, min_steps=8, max_steps=12,
                             answer_spaces=WORKLOADS[workload]["spaces"])


def evaluate(workload: str, strategy: str, method: str, problems: list, seed: int = 0,
             out: Path | None = None, budget: int = 200, labels: dict | None = None,
             search: dict | None = None) -> dict:
    """Run one configuration and score its labels against the simulated ground truth."""
    if out is None:
        out = RESULTS / f".tmp-{workload}-{strategy}-{method}"
        shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    policy = SimulatedPolicy(**WORKLOADS[workload]["policy"], judge_accuracy=0.8)
    summary = prmtree.run(
        problems, policy=policy, out=out,
        config={"seed": seed, "search": {"strategy": strategy, "budget": budget, **(search or {})}, "labels": {"method": method, **(labels or {})}},
    )
    oracle = SimulatedPolicy()
    by_id = {p.id: p for p in problems}
    rows = read_table(out, "steps").select(["problem_id", "completions", "labels"]).to_pylist()
    q = score_paths(rows, lambda pid, steps: oracle.first_error(by_id[pid], steps))
    judged = summary.labelling.get("paths_judged", 0)
    return {
        "workload": workload,
        "strategy": strategy,
        "method": method,
        "budget": budget,
        "step_agreement": q.step_accuracy,
        "first_error_recall": q.first_error_recall,
        "first_error_precision": q.first_error_precision,
        "localisation_accuracy": q.localisation_accuracy,
        "labelled_steps": q.steps,
        "paths": q.paths,
        "rollouts_per_problem": summary.rollouts / len(problems),
        "rollouts_per_labelled_step": summary.rollouts / max(q.steps, 1),
        "labelled_steps_per_problem": q.steps / len(problems),
        "rollouts_per_correct_step": summary.rollouts / max(q.steps_correct, 1),
        "first_errors_found": q.negatives_located,
        "rollouts_per_first_error_found": summary.rollouts / max(q.negatives_located, 1),
        "judge_calls_per_labelled_step": summary.labelling.get("judge_calls", 0) / max(q.steps, 1),
        "consensus_kept_share": (judged - summary.labelling.get("paths_dropped_by_judge", 0)) / judged if judged else None,
        "seconds": time.perf_counter() - t,
    }


def targets(results: list[dict]) -> dict:
    """The issue's targets, checked on this run's numbers."""
    g = {(r["strategy"], r["method"]): r for r in results if r["workload"] == "guessable"}
    out = {}
    for s in STRATEGIES:
        cal, mc = g[(s, "calibrated")], g[(s, "mc")]
        out[s] = {
            "step_agreement_ge_97": cal["step_agreement"] >= 0.97,
            "first_error_recall_ge_90": cal["first_error_recall"] >= 0.90,
            "rollouts_per_labelled_step_le_mc": cal["rollouts_per_labelled_step"] <= mc["rollouts_per_labelled_step"],
            "rollouts_per_correct_step_le_mc": cal["rollouts_per_correct_step"] <= mc["rollouts_per_correct_step"],
            "consensus_precision_ge_98": g[(s, "consensus")]["first_error_precision"] >= 0.98,
        }
    noiseless = [r for r in results if r["workload"] == "noiseless"]
    out["noiseless_exact"] = all(r["step_agreement"] == 1.0 for r in noiseless if r["method"] != "consensus")
    return out


def stopping_rule(n: int, seed: int = 0, strategy: str = "omega") -> list[dict]:
    """Labelled steps per problem by answer space, and rollouts per labelled step, for
    each ``max_rollouts_per_step`` (default 25, 10, None = sample until decided or capped)."""
    problems = benchmark_problems("guessable", n)
    space = {p.id: p.meta["answer_space"] for p in problems}
    results = []
    for limit in (25, 10, None):
        out = RESULTS / f".tmp-stopping-{limit}"
        shutil.rmtree(out, ignore_errors=True)
        r = evaluate("guessable", strategy, "calibrated", problems, seed, out=out,
                     labels={"max_rollouts_per_step": limit})
        rows = read_table(out, "steps").select(["problem_id", "labels"]).to_pylist()
        per_space = {s: 0 for s in WORKLOADS["guessable"]["spaces"]}
        for row in rows:
            per_space[space[row["problem_id"]]] += sum(1 for x in row["labels"] if x is not None)
        counts = {s: sum(1 for v in space.values() if v == s) for s in per_space}
        r["max_rollouts_per_step"] = limit
        r["labelled_steps_per_problem_by_space"] = {s: n / counts[s] for s, n in per_space.items()}
        results.append(r)
        shutil.rmtree(out, ignore_errors=True)
    base = results[0]["rollouts_per_labelled_step"]
    for r in results:
        r["cost_vs_default"] = r["rollouts_per_labelled_step"] / base
        by = r["labelled_steps_per_problem_by_space"]
        print(f"max_rollouts_per_step={r['max_rollouts_per_step']!s:5s} labelled steps/problem "
              + " / ".join(f"{k} {v:.1f}" for k, v in by.items())
              + f"  rollouts/labelled step {r['rollouts_per_labelled_step']:.2f} ({r['cost_vs_default']:.2f}x default)"
              + f"  rollouts/problem {r['rollouts_per_problem']:.0f}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stopping-rule", action="store_true",
                        help="measure max_rollouts_per_step = 25 / 10 / None instead (results/stopping_rule.json)")
    args = parser.parse_args()
    if args.stopping_rule:
        RESULTS.mkdir(exist_ok=True)
        results = stopping_rule(args.problems, args.seed)
        (RESULTS / "stopping_rule.json").write_text(json.dumps(
            {"problems": args.problems, "problems_seed": PROBLEMS_SEED, "run_seed": args.seed, "results": results},
            indent=2))
        return
    results = []
    for workload in WORKLOADS:
        problems = benchmark_problems(workload, args.problems)
        print(f"== {workload}: {WORKLOADS[workload]}")
        for strategy in STRATEGIES:
            for method in METHODS:
                if workload != "guessable" and method == "consensus":
                    continue
                r = evaluate(workload, strategy, method, problems, args.seed)
                results.append(r)
                kept = f"  kept {r['consensus_kept_share']:.2f}" if r["consensus_kept_share"] is not None else ""
                print(
                    f"{strategy:8s} {method:10s} steps agree {r['step_agreement']:.3f}  "
                    f"first-error recall {r['first_error_recall']:.3f} precision {r['first_error_precision']:.3f}  "
                    f"rollouts/labelled step {r['rollouts_per_labelled_step']:5.2f} "
                    f"(/correct {r['rollouts_per_correct_step']:5.2f}, {r['rollouts_per_problem']:5.1f}/problem)  "
                    f"first errors {r['first_errors_found']:4d}  "
                    f"judge calls/step {r['judge_calls_per_labelled_step']:.2f}{kept}"
                )
    verdict = targets(results)
    print(json.dumps(verdict, indent=2))
    RESULTS.mkdir(exist_ok=True)
    payload = {"problems": args.problems, "problems_seed": PROBLEMS_SEED, "run_seed": args.seed,
               "workloads": {k: {"spaces": list(v["spaces"]), "policy": v["policy"]} for k, v in WORKLOADS.items()},
               "results": results, "targets": verdict}
    (RESULTS / "label_quality.json").write_text(json.dumps(payload, indent=2))
    for tmp in RESULTS.glob(".tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
