"""Why an export holds no record, in one clause: what ``prmtree export`` says when it refuses one.

An export is empty when the run labelled no step (every problem skipped, every path
dropped, no input row usable: the same cases in which ``prmtree run`` exits 4), or when the
run has rows but the format's own rule leaves none: no path with a decided first step (every
export cuts a path at its first undecided label), every such path flagged (the trainer
formats leave flagged paths out), or no preference pair (``pairs``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.compute as pc

from prmtree.engine.output import load_manifests, read_table
from prmtree.export.rows import decided_length


def why_empty(out: Path, fmt: str, table: str = "steps", skips_flagged: bool = False) -> str:
    """Why the ``fmt`` export of the run in ``out`` holds no record (``table``: where its
    records come from; ``skips_flagged``: it leaves flagged paths out)."""
    steps = read_table(out, "steps")
    if steps.num_rows == 0:
        return run_labelled_nothing(out)
    paths = f"{steps.num_rows} path{'s' * (steps.num_rows != 1)}"
    if table == "pairs":
        return (f"the run made no preference pair (a pair is two sibling steps after one prefix, one decided right "
                f"and one wrong; its steps table holds {paths}, which the other formats export)")
    labels = steps.column("labels").to_pylist() if "labels" in steps.column_names else []
    decided = [decided_length(x) > 0 for x in labels]
    if not any(decided):
        return (f"none of the run's {paths} has a decided first step (every export cuts a path at its first "
                "undecided label)")
    if skips_flagged and "flagged" in steps.column_names:
        flagged = pc.fill_null(steps.column("flagged"), False).to_pylist()
        kept = sum(1 for d, f in zip(decided, flagged) if d and f)
        if kept == sum(decided):
            return (f"all {kept} of the run's paths with a decided step are flagged (MC and the judge disagreed), "
                    f"which --format {fmt} leaves out: --keep-flagged (keep_flagged=True) keeps them")
    return f"no path of the run's {paths} makes a {fmt} record"


def run_labelled_nothing(out: Path) -> str:
    """Why the run in ``out`` has no steps row, from its manifests (a folder of
    hand-written shards has none: then only that its steps table is empty)."""
    manifests = load_manifests(out)
    if not manifests:
        return "its steps table holds no row"
    skipped = {pid: reason for m in manifests for pid, reason in m.skipped.items()}
    done = len({pid for m in manifests for pid in m.completed} | set(skipped))
    failed = len({pid for m in manifests for pid in m.failed})
    rejected = len({key for m in manifests for key in m.rejected})
    parts = []
    if done == 0:
        parts.append("no problem is done" if rejected or failed else "no problem is done yet")
    if skipped:
        counts = Counter(skipped.values()).most_common()
        reasons = counts[0][0] if len(counts) == 1 else ", ".join(f"{count} {reason}" for reason, count in counts)
        parts.append(f"{len(skipped)} of {done} problem{'s' * (done != 1)} skipped: {reasons}")
    searched = done - len(skipped)
    if searched:
        parts.append(f"{searched} of {done} problem{'s' * (done != 1)} searched, and no path kept a decided step")
    if failed:
        parts.append(f"{failed} problem{'s' * (failed != 1)} failed (the run's command retries them)")
    if rejected:
        parts.append(f"{rejected} input row{'s' * (rejected != 1)} rejected as bad input (in errors/)")
    return f"the run labelled no step ({'; '.join(parts)})"
