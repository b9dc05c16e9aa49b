"""Label quality when answers can be guessed: strategy x labelling method, against truth.

Workloads (synthetic problems, solutions of 8-12 steps, the simulated policy whose
ground truth is known):

* ``guessable`` (issue 20's realistic case): one third yes/no (chance 1/2), one third
  four options (1/4), one third free numbers (about 0); 8% of steps wrong, 30% of final
  answers guessed from the answer space, 2% lucky numeric answers, errors never cancel.
  A solver holding a wrong value answers consistently wrong (``wrong_answers =
  "consistent"``): a wrong step's continuations reach the gold answer only by a guess,
  at about 0.3 x chance. Measures agreement, first-error recall and whether every answer
  space gets labelled;
* ``guessable (wrong values guess)``: the same, but a wrong value leaves the solver
  guessing (continuations after a wrong step reach the gold answer at the full chance
  rate, 1/2 for yes/no): the worst case for telling right from wrong steps, reported;
* ``yes/no-heavy``: as ``guessable`` with 60% yes/no, 20% four options, 20% numbers:
  whether yes/no questions are still labelled when they dominate a data set;
* ``60% guessed``: as ``guessable`` with 60% of final answers guessed: labels when
  success rates of right and wrong steps are close;
* ``guessable+cancelling``: 30% guessed, wrong values guess, and a later slip may undo
  an earlier one (off by +1, then -1): wrong prefixes then often reach the answer (lucky
  continuations), the case no Monte-Carlo rule can see; measures first-error recall;
* ``demo``: ``prmtree demo``'s workload (free numbers, 8% step errors, 2% lucky);
* ``noiseless``: continuations never err or guess: every method must equal the truth.

For each strategy and method (``mc`` = the peers' rule, ``calibrated`` = the default,
``consensus`` = calibrated + a simulated judge of 80% accuracy, on ``guessable`` only),
at default settings (k = 8, budget 200): step agreement with the truth, first-error
recall and precision, rollouts (and judge calls) per labelled step, and for consensus
the share of paths kept. Beside them: labelled steps and rollouts per problem (adaptive
labelling stops a problem when nothing more is worth sampling, the mc rule spends its
budget), rollouts per correctly labelled step (the mc rule's labelled steps include the
ones it gets wrong), and first errors found (the labels a PRM learns most from) with
their cost. Per answer space, for every method: the share of problems with at least one
labelled step, labelled steps per problem, step agreement and first-error recall
(``by_space``), so coverage and agreement are shown side by side. :func:`targets` checks
issue 20's targets. Writes results/label_quality.json.

``--stopping-rule`` measures instead what ``[labels] max_rollouts_per_step`` trades (the
README's "What the stopping rule trades"): omega, calibrated, on ``guessable``, at the
default 25, at 10 and with no limit (``None``): labelled steps per problem of each answer
space and rollouts per labelled step. Writes results/stopping_rule.json.

    python benchmarks/label_quality.py [--problems 150] [--workloads guessable,demo] [--stopping-rule]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from prmtree.engine.calibration import answer_space
from prmtree.engine.output import read_table
from prmtree.engine.quality import score_paths
from prmtree.engine.synthetic import generate_problems
from prmtree.policies.simulated import SimulatedPolicy

import prmtree

RESULTS = Path(__file__).parent / "results"
STRATEGIES = ("omega", "shepherd", "mcts")
METHODS = ("mc", "calibrated", "consensus")
GUESSABLE = {"error_rate": 0.08, "guess_rate": 0.3, "lucky_rate": 0.02, "cancel_errors": False,
             "wrong_answers": "consistent"}
MIXED = ("yesno", "choice", "number")
WORKLOADS = {
    "guessable": {"spaces": MIXED, "policy": GUESSABLE},
    "guessable (wrong values guess)": {"spaces": MIXED, "policy": {**GUESSABLE, "wrong_answers": "guess"}},
    "yes/no-heavy": {"spaces": ("yesno", "yesno", "yesno", "choice", "number"), "policy": GUESSABLE},
    "60% guessed": {"spaces": MIXED, "policy": {**GUESSABLE, "guess_rate": 0.6}},
    "guessable+cancelling": {"spaces": MIXED,
                             "policy": {"error_rate": 0.08, "guess_rate": 0.3, "lucky_rate": 0.02}},
    "demo": {"spaces": ("number",), "policy": {"error_rate": 0.08, "lucky_rate": 0.02}},
    "noiseless": {"spaces": MIXED, "policy": {"error_rate": 0.08, "noiseless": True}},
}
CONSENSUS_WORKLOADS = ("guessable",)  # the judge runs where it did before: one workload
PROBLEMS_SEED = 1234


def benchmark_problems(workload: str, n: int = 150) -> list:
    return generate_problems(n, seed=PROBLEMS_SEED, min_steps=8, max_steps=12,
                             answer_spaces=WORKLOADS[workload]["spaces"])


def _finite(x: float) -> float | None:
    return None if isinstance(x, float) and math.isnan(x) else x


def coverage_by_space(problems: Sequence, rows: Iterable[dict],
                      first_error: Callable[[str, Sequence[str]], int | None] | None = None) -> dict[str, dict]:
    """Per answer space (``calibration.answer_space``, in order of first appearance):
    problems, problems with at least one labelled (non-null) step and their share,
    labelled steps per problem, and with ``first_error`` (truth) step agreement and
    first-error recall of that space's rows. ``rows`` are ``steps`` rows (problem_id,
    labels, and completions when scoring); a problem without rows counts as unlabelled."""
    space_of = {p.id: answer_space(p) for p in problems}
    spaces = list(dict.fromkeys(space_of.values()))
    rows_of: dict[str, list[dict]] = {s: [] for s in spaces}
    labelled_steps = dict.fromkeys(spaces, 0)
    labelled_problems: dict[str, set] = {s: set() for s in spaces}
    for row in rows:
        space = space_of[row["problem_id"]]
        rows_of[space].append(row)
        n = sum(1 for x in row["labels"] if x is not None)
        labelled_steps[space] += n
        if n:
            labelled_problems[space].add(row["problem_id"])
    out = {}
    for space in spaces:
        count = sum(1 for v in space_of.values() if v == space)
        entry = {
            "problems": count,
            "problems_labelled": len(labelled_problems[space]),
            "labelled_share": len(labelled_problems[space]) / count,
            "labelled_steps_per_problem": labelled_steps[space] / count,
        }
        if first_error is not None:
            q = score_paths(rows_of[space], first_error)
            entry["step_agreement"] = _finite(q.step_accuracy)
            entry["first_error_recall"] = _finite(q.first_error_recall)
        out[space] = entry
    return out


def format_coverage(by_space: dict[str, dict]) -> str:
    """One line: per space, problems labelled / problems (share), labelled steps per
    problem, and agreement / recall where scored."""
    def num(x: float | None) -> str:
        return "  -  " if x is None else f"{x:.3f}"
    return "  |  ".join(
        f"{space} {c['problems_labelled']}/{c['problems']} ({c['labelled_share']:.2f}) "
        f"{c['labelled_steps_per_problem']:6.1f} steps/pb"
        + (f" agree {num(c['step_agreement'])} recall {num(c['first_error_recall'])}" if "step_agreement" in c else "")
        for space, c in by_space.items()
    )


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
    truth = lambda pid, steps: oracle.first_error(by_id[pid], steps)
    q = score_paths(rows, truth)
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
        "by_space": coverage_by_space(problems, rows, truth),
        "seconds": time.perf_counter() - t,
    }


def targets(results: list[dict]) -> dict:
    """Issue 20's targets, checked on this run's numbers (calibrated, every strategy);
    a workload left out of the run (``--workloads``) is left out here."""
    by = {(r["workload"], r["strategy"], r["method"]): r for r in results}
    ran = {r["workload"] for r in results}
    out: dict = {}
    if "guessable" in ran:
        out["guessable"] = {}
        for s in STRATEGIES:
            cal, mc = by[("guessable", s, "calibrated")], by[("guessable", s, "mc")]
            out["guessable"][s] = {
                "step_agreement_ge_99": cal["step_agreement"] >= 0.99,
                "first_error_recall_ge_95": cal["first_error_recall"] >= 0.95,
                "every_space_labelled_share_ge_85": all(
                    c["labelled_share"] >= 0.85 for c in cal["by_space"].values()),
                "every_space_half_mc_labelled_steps": all(
                    c["labelled_steps_per_problem"] >= 0.5 * mc["by_space"][space]["labelled_steps_per_problem"]
                    for space, c in cal["by_space"].items()),
                "rollouts_per_labelled_step_le_mc": cal["rollouts_per_labelled_step"] <= mc["rollouts_per_labelled_step"],
            }
    if "60% guessed" in ran:
        out["60% guessed"] = {s: {
            "step_agreement_ge_97": by[("60% guessed", s, "calibrated")]["step_agreement"] >= 0.97,
            "first_error_recall_ge_90": by[("60% guessed", s, "calibrated")]["first_error_recall"] >= 0.90,
        } for s in STRATEGIES}
    if "guessable+cancelling" in ran:
        out["guessable+cancelling"] = {s: {
            "first_error_recall_ge_90": by[("guessable+cancelling", s, "calibrated")]["first_error_recall"] >= 0.90,
        } for s in STRATEGIES}
    if "noiseless" in ran:
        out["noiseless"] = {"exact": all(
            r["step_agreement"] == 1.0 for r in results if r["workload"] == "noiseless" and r["method"] != "consensus")}
    return out


def print_targets(verdict: dict) -> None:
    """Which targets are met, one line per workload and strategy."""
    for workload, per in verdict.items():
        groups = per.items() if all(isinstance(v, dict) for v in per.values()) else [("", per)]
        for strategy, checks in groups:
            met = [k for k, v in checks.items() if v]
            missed = [k for k, v in checks.items() if not v]
            print(f"target {workload}{' ' + strategy if strategy else ''}: met {', '.join(met) or '-'}"
                  + (f"; NOT met {', '.join(missed)}" if missed else ""))


def stopping_rule(n: int, seed: int = 0, strategy: str = "omega") -> list[dict]:
    """Labelled steps per problem by answer space, and rollouts per labelled step, for
    each ``max_rollouts_per_step`` (default 25, 10, None = sample until decided or capped)."""
    problems = benchmark_problems("guessable", n)
    results = []
    for limit in (25, 10, None):
        out = RESULTS / f".tmp-stopping-{limit}"
        shutil.rmtree(out, ignore_errors=True)
        r = evaluate("guessable", strategy, "calibrated", problems, seed, out=out,
                     labels={"max_rollouts_per_step": limit})
        r["max_rollouts_per_step"] = limit
        r["labelled_steps_per_problem_by_space"] = {
            s: c["labelled_steps_per_problem"] for s, c in r["by_space"].items()}
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
    parser.add_argument("--workloads", default=None,
                        help=f"comma-separated subset of: {', '.join(WORKLOADS)} (default: all)".replace("%", "%%"))  # argparse formats help with %
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
    workloads = list(WORKLOADS)
    if args.workloads:
        workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
        unknown = [w for w in workloads if w not in WORKLOADS]
        if unknown or not workloads:
            parser.error(f"--workloads: unknown {', '.join(map(repr, unknown)) or 'empty list'}; "
                         f"choose from {', '.join(WORKLOADS)}")
    results = []
    for workload in workloads:
        problems = benchmark_problems(workload, args.problems)
        print(f"== {workload}: {WORKLOADS[workload]}")
        for strategy in STRATEGIES:
            for method in METHODS:
                if workload not in CONSENSUS_WORKLOADS and method == "consensus":
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
                print(f"{'':19s} by space: {format_coverage(r['by_space'])}")
    verdict = targets(results)
    print_targets(verdict)
    RESULTS.mkdir(exist_ok=True)
    payload = {"problems": args.problems, "problems_seed": PROBLEMS_SEED, "run_seed": args.seed,
               "workloads": {k: {"spaces": list(WORKLOADS[k]["spaces"]), "policy": WORKLOADS[k]["policy"]}
                             for k in workloads},
               "results": results, "targets": verdict}
    (RESULTS / "label_quality.json").write_text(json.dumps(payload, indent=2))
    for tmp in RESULTS.glob(".tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
