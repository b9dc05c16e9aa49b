"""The table printed at the end of ``prmtree demo`` and ``prmtree run``."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


#: A share of problems skipped for one reason above which the summary warns (a policy
#: whose answers never match the gold's form skips nearly every problem as "root all
#: wrong"; a normal run skips well under a third).
SKIP_WARN_SHARE = 0.5
#: A share of judge answers without a verdict (unparseable or failed) above which it warns.
JUDGE_WARN_SHARE = 0.25


def label_warnings(stats: Any) -> list[str]:
    """Why a run's labelled output may be empty or far from normal, one line each with
    examples (extracted answers beside the gold, a judge's raw answer): a run that labels
    nothing must say so, not end with a quiet table."""
    warnings = []
    done = stats.problems_done
    examples = getattr(stats, "examples", {}) or {}
    if done and stats.steps_labelled == 0:
        warnings.append(f"nothing was labelled: 0 labelled steps over {done} problems done (the output's steps "
                        "table holds no label); the reasons below say why")
    for reason, count in sorted(stats.skip_reasons.items(), key=lambda kv: -kv[1]):
        if done and count / done >= SKIP_WARN_SHARE:
            hint = (" - the policy's answers may never match the gold's form (check the answer format and "
                    "`[input]` answer fields)" if reason == "root all wrong" else "")
            shown = "; ".join(examples.get(reason, [])[:3])
            warnings.append(f"{count} of {done} problems skipped ({reason}){hint}"
                            + (f"; e.g. {shown}" if shown else ""))
    judge = stats.labelling
    calls = judge.get("judge_calls", 0)
    no_verdict = judge.get("judge_unparseable", 0) + judge.get("judge_failures", 0)
    if calls and no_verdict / calls >= JUDGE_WARN_SHARE:
        shown = (examples.get("judge unparseable") or [""])[0]
        warnings.append(
            f"{no_verdict} of {calls} judge answers gave no verdict ({judge.get('judge_unparseable', 0)} unparseable, "
            f"{judge.get('judge_failures', 0)} failed): the judge should answer 'Verdict: correct' or "
            "'Verdict: incorrect'" + (f"; e.g. {shown}" if shown else ""))
    return warnings


def print_summary(summary: Any, quality: Any | None) -> None:
    table = Table(title=f"prmtree: {summary.out}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("problems done", str(summary.problems_done))
    table.add_row("problems skipped (root all right/wrong)", str(summary.problems_skipped))
    table.add_row("problems failed / bad input rows", f"{summary.problems_failed} / {summary.input_errors}")
    for reason, count in sorted(summary.failure_reasons.items(), key=lambda kv: -kv[1])[:5]:
        table.add_row(f"  failed: {reason}", str(count))
        example = summary.failure_examples.get(reason)
        if example:
            table.add_row(f"    e.g. {example[:160]}", "")
    table.add_row("rollouts", f"{summary.rollouts:,}")
    table.add_row("steps labelled + / -", f"{summary.labels_positive:,} / {summary.labels_negative:,}")
    if (judged := getattr(summary, "labelling", {}) or {}).get("judge_settle_calls"):
        table.add_row("  settled by the judge + / - (judge calls)", f"{judged.get('steps_settled_right', 0):,} / "
                      f"{judged.get('steps_settled_wrong', 0):,} ({judged['judge_settle_calls']:,})")
    if quality is not None:
        table.add_row("step-label accuracy vs ground truth", f"{quality.step_accuracy:.1%}")
        table.add_row("first-error localisation accuracy", f"{quality.localisation_accuracy:.1%}")
    table.add_row("rollouts/s", f"{summary.rollouts_per_s:,.0f}")
    table.add_row("elapsed", f"{summary.elapsed_s:.1f} s")
    console = Console()
    console.print(table)
    for warning in label_warnings(summary):
        console.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
    if summary.rollouts_this_session == 0 and summary.problems_done and not summary.problems_failed:
        console.print(
            f"nothing left to do: every problem was already finished in {summary.out} "
            "(the run resumed; use another --out, or --force with a changed config, to start over)"
        )
