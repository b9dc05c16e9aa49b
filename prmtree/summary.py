"""The table printed at the end of ``prmtree demo`` and ``prmtree run``."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


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
    if quality is not None:
        table.add_row("step-label accuracy vs ground truth", f"{quality.step_accuracy:.1%}")
        table.add_row("first-error localisation accuracy", f"{quality.localisation_accuracy:.1%}")
    table.add_row("rollouts/s", f"{summary.rollouts_per_s:,.0f}")
    table.add_row("elapsed", f"{summary.elapsed_s:.1f} s")
    console = Console()
    console.print(table)
    if summary.rollouts_this_session == 0 and summary.problems_done and not summary.problems_failed:
        console.print(
            f"nothing left to do: every problem was already finished in {summary.out} "
            "(the run resumed; use another --out, or --force with a changed config, to start over)"
        )
