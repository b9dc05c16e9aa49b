"""The table printed at the end of ``prmtree demo`` and ``prmtree run``."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from prmtree.engine.config import LabelsConfig
from prmtree.engine.output import load_manifests, manifest_layout
from prmtree.engine.output.verification import floor_sets, floors_apart
from prmtree.engine.stats import coverage

#: A share of problems skipped for one reason above which the summary warns (a policy
#: whose answers never match the gold's form skips nearly every problem as "root all
#: wrong"; a normal run skips well under a third).
SKIP_WARN_SHARE = 0.5
#: A share of rollouts cut at ``[search] max_tokens`` above which it warns: each is graded
#: wrong, so the values of the steps before it are lower than the policy's own.
TRUNCATED_WARN_SHARE = 0.1
#: A share of judge answers without a verdict (unparseable or failed) above which it warns.
JUDGE_WARN_SHARE = 0.25
#: Problems an answer space needs before its coverage is judged (a tiny run is not noisy).
COVERAGE_MIN_PROBLEMS = 5
#: Seconds of saturated driver loop (``engine.loop_load``) a run needs (per driver) before the
#: summary says the driver set the pace, and the share of the watched time they must be.
PACE_WARN_S = 10.0
PACE_WARN_SHARE = 0.5
#: ``[labels] min_coverage``'s default: defaults live in the config type.
DEFAULT_MIN_COVERAGE: float = LabelsConfig.model_fields["min_coverage"].default


def coverage_warnings(stats: Any, min_coverage: float = DEFAULT_MIN_COVERAGE,
                      floors: dict[str, Any] | None = None) -> list[str]:
    """One line per answer space (of at least ``COVERAGE_MIN_PROBLEMS`` problems) whose share
    of problems with a labelled step is below ``min_coverage``: a run can label free answers
    fully and leave its yes/no questions unlabelled, which the overall counts hide.
    ``floors``: the run's ``calibration.floors``; a space whose learned floor is above its
    chance floor is told so first (there right and wrong steps look alike, whatever the
    rollouts)."""
    warnings = []
    for space in coverage(getattr(stats, "answer_spaces", None) or {}):
        if space.problems < COVERAGE_MIN_PROBLEMS or space.share >= min_coverage:
            continue
        skipped = f"; {space.skipped} of them skipped (not searched)" if space.skipped else ""
        learned = (floors or {}).get(space.space) or {}
        high = learned.get("source") == "learned" and learned.get("floor", 0.0) > learned.get("chance", 1.0)
        floor = (f"its floor learned by the pilot, {learned['floor']:.3f} from {learned.get('problems', 0)} "
                 f"problem(s), is above its chance floor {learned['chance']:.3f}, where right and wrong steps look "
                 "alike: put more of its problems among the first [labels] pilot_window rows, or learn_floor = "
                 "false; or " if high else "")
        warnings.append(
            f"answer space {space.space!r}: {space.labelled_problems} of {space.problems} problems "
            f"({space.share:.0%}) have a labelled step (below [labels] min_coverage = {min_coverage:g}){skipped} - "
            f"{floor}give its undecided steps more rollouts: raise [labels] max_rollouts_per_step (inf: sample until "
            "decided) and max_rollouts_per_node, or [search] budget; `prmtree inspect` shows every space")
    return warnings


def label_warnings(stats: Any, min_coverage: float = DEFAULT_MIN_COVERAGE,
                   calibration: dict[str, Any] | None = None) -> list[str]:
    """Why a run's labelled output may be empty or far from normal, one line each with
    examples (extracted answers beside the gold, a judge's raw answer): a run that labels
    nothing must say so, not end with a quiet table. ``min_coverage`` is ``[labels]
    min_coverage`` (0: no coverage warnings); ``calibration``: the run's (its floors name a
    cause of low coverage)."""
    warnings = []
    done = stats.problems_done
    examples = getattr(stats, "examples", {}) or {}
    checks = getattr(stats, "verifier", {}) or {}
    if checks.get("custom_errors"):
        warnings.append(f"check_answer failed on {checks['custom_errors']:,} answers, graded wrong: "
                        f"{checks.get('custom_error')}; fix it, then rerun with --force (its verdicts made the labels)")
    if checks.get("check_errors"):
        warnings.append(f"prmtree's answer checks raised on {checks['check_errors']:,} answers, graded wrong (a bug "
                        f"in prmtree: please report this line): {checks.get('check_error')}; their labels may be "
                        "wrong: once it is fixed, rerun with --force")
    if done and stats.steps_labelled == 0:
        warnings.append(f"nothing was labelled: 0 labelled steps over {done} problems done (the output's steps "
                        "table holds no label); the reasons below say why")
    nothing = bool(done and stats.steps_labelled == 0)
    for reason, count in sorted(stats.skip_reasons.items(), key=lambda kv: -kv[1]):
        if done and (count / done >= SKIP_WARN_SHARE or nothing):  # nothing labelled: every reason counts
            hint = (" - the policy's answers may never match the gold's form (check the answer format and "
                    "`[input]` answer fields)" if reason == "root all wrong" else "")
            shown = "; ".join(examples.get(reason, [])[:3])
            warnings.append(f"{count} of {done} problems skipped ({reason}){hint}"
                            + (f"; e.g. {shown}" if shown else ""))
    searched = done - sum(stats.skip_reasons.values())
    if nothing and searched > 0:  # the reasons above cover the skipped ones only
        warnings.append(f"{searched} of {done} problems were searched and no path of theirs kept a labelled "
                        "first step: its label stayed undecided (more rollouts: [labels] max_rollouts_per_step, "
                        "max_rollouts_per_node, [search] budget), or [output] max_ci_width left out every step "
                        "whose interval was wider")
    cut, rollouts = getattr(stats, "truncated_by_length", 0), stats.rollouts
    if rollouts and cut / rollouts >= TRUNCATED_WARN_SHARE:
        warnings.append(f"{cut:,} of {rollouts:,} rollouts ({cut / rollouts:.0%}) were cut at [search] max_tokens "
                        "before they ended and graded wrong (a reasoning model may use all of it thinking): the values "
                        "of the steps before them are lower than the policy's; raise max_tokens")
    judge = stats.labelling
    calls = judge.get("judge_calls", 0)
    no_verdict = judge.get("judge_unparseable", 0) + judge.get("judge_failures", 0)
    if calls and no_verdict / calls >= JUDGE_WARN_SHARE:
        shown = (examples.get("judge unparseable") or [""])[0]
        warnings.append(
            f"{no_verdict} of {calls} judge answers gave no verdict ({judge.get('judge_unparseable', 0)} unparseable, "
            f"{judge.get('judge_failures', 0)} failed): the judge should answer 'Verdict: correct' or "
            "'Verdict: incorrect'" + (f"; e.g. {shown}" if shown else ""))
    if stats.steps_labelled:  # nothing labelled at all is said above, once
        warnings += coverage_warnings(stats, min_coverage, (calibration or {}).get("floors"))
    return warnings


def pace_warnings(stats: Any) -> list[str]:
    """One line when the driver's event loop was saturated for much of the run: there the
    driver's process, not the engine, set the pace, and more trees in flight cannot help
    (an engine faster than one driver's core can feed; ``engine.loop_load``). With several
    drivers their seconds add up (``loops`` counts them)."""
    load = getattr(stats, "driver", None) or {}
    saturated, watched = load.get("loop_saturated_s", 0.0), load.get("loop_watched_s", 0.0)
    loops = int(load.get("loops", 1) or 1)
    if saturated < PACE_WARN_S * loops or saturated < PACE_WARN_SHARE * watched:
        return []
    pace = ("there the driver's process (its search, and any policy code on its loop), not the engine, set the pace, "
            "and more trees in flight cannot help")
    if loops > 1:
        return [f"the {loops} drivers' event loops were saturated for {saturated:,.0f} of {watched:,.0f} s watched "
                f"(added over the drivers): {pace}. More drivers would (--drivers above {loops}; README, Sizing)"]
    return [f"the driver's event loop was saturated for {saturated:,.0f} of {watched:,.0f} s watched: {pace}. To feed "
            "a faster engine, split the problems over several drivers: driver processes around this engine where "
            "the machine has cores to spare (--executor inline --drivers N), or Ray workers (--executor ray "
            "--drivers N; README, Sizing)"]


def run_min_coverage(summary: Any) -> float:
    """The run's ``[labels] min_coverage``, as its manifest recorded the config (the
    default for a run without an output directory)."""
    out = getattr(summary, "out", None)
    if out is None:
        return DEFAULT_MIN_COVERAGE
    try:
        found = load_manifests(out)
    except (OSError, ValueError):
        return DEFAULT_MIN_COVERAGE
    labels = (found[0].config.get("labels") or {}) if found else {}
    value = labels.get("min_coverage", DEFAULT_MIN_COVERAGE)
    return float(value) if isinstance(value, (int, float)) else DEFAULT_MIN_COVERAGE


def calibration_lines(calibration: dict[str, Any], labelling: dict[str, Any]) -> list[tuple[str, str]]:
    """What the pilot learned (``engine/pilot.py``) and what the pool gave, as (what,
    value) rows: the run summary and ``inspect`` show the same."""
    lines = []
    floors = calibration.get("floors") or {}
    if floors:
        lines.append(("floors learned (chance)", ", ".join(
            f"{space} {f['floor']:.3f} ({f['chance']:.2f})" for space, f in sorted(floors.items()))))
    pool = calibration.get("pool") or {}
    if pool:
        lines.append(("pool: rollouts drawn / problems (allowance each)",
                      f"{labelling.get('pool_drawn', 0):,} / {labelling.get('pool_problems', 0):,} "
                      f"({pool.get('per_problem', 0):,})"))
    return lines


def run_calibration(summary: Any) -> dict[str, Any]:
    """The run's ``calibration`` as its manifest recorded it (empty without one)."""
    out = getattr(summary, "out", None)
    try:
        found = load_manifests(out) if out is not None else []
    except (OSError, ValueError):
        return {}
    return found[0].calibration if found else {}


def floor_warnings(summary: Any) -> list[str]:
    """One line when the slices of the run's ``--out`` hold different floors (a pilot member
    lost by some drivers' pilots only): its rows are then not those of one driver, and
    nothing else says so (``prmtree verify`` fails on it too). Read from every slice's
    manifest, so the merged summary of a ``--drivers N`` job and each ``--slice`` run see it."""
    out = getattr(summary, "out", None)
    if out is None:
        return []
    try:
        named = dict(zip(manifest_layout(out), load_manifests(out)))
    except (OSError, ValueError):
        return []
    return [floors_apart(named)] if len(floor_sets(named)) > 1 else []


def run_warnings(summary: Any, calibration: dict[str, Any] | None = None) -> list[str]:
    """Every warning the run's summary prints under its table, one line each
    (``calibration``: the run's, read from its manifest when not given)."""
    if calibration is None:
        calibration = run_calibration(summary)
    return (floor_warnings(summary) + label_warnings(summary, run_min_coverage(summary), calibration)
            + pace_warnings(summary))


def sizing_text(sizing: dict[str, Any]) -> str:
    """Where the driver's concurrency settled (``engine.driver.Concurrency``): the limit, its
    peak, and the halvings, so a limit cut down by a slow or refusing backend shows."""
    text = f"{sizing['limit']:,} ({sizing['peak']:,})"
    if sizing.get("capacity"):
        text += f", backend capacity {sizing['capacity']:,}"
    if cuts := sizing.get("decreases"):
        text += f", halved {cuts:,}x ({sizing.get('latency_decreases', 0):,} for latency)"
    return text


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
    if again := (getattr(summary, "labelling", {}) or {}).get("pilot_searched_again"):
        table.add_row("pilot members searched again (a failed first search)", f"{again:,}")
    calibration = run_calibration(summary)
    for what, value in calibration_lines(calibration, getattr(summary, "labelling", {}) or {}):
        table.add_row(what, value)
    if quality is not None:
        table.add_row("step-label accuracy vs ground truth", f"{quality.step_accuracy:.1%}")
        table.add_row("first-error localisation accuracy", f"{quality.localisation_accuracy:.1%}")
    # this session's rate: a resume with nothing left ran nothing (not "0" beside earlier totals)
    table.add_row("rollouts/s", f"{summary.rollouts_per_s:,.0f}" if summary.rollouts_this_session else "none run now")
    table.add_row("elapsed", f"{summary.elapsed_s:.1f} s")
    if sizing := (getattr(summary, "driver", None) or {}).get("sizing"):
        table.add_row("sequences in flight: limit (peak)", sizing_text(sizing))
    console = Console(markup=False)  # failure reasons hold brackets ("for [/v1/chat]"): text, not markup
    console.print(table)
    for warning in run_warnings(summary, calibration):
        console.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
    if summary.rollouts_this_session == 0 and summary.problems_done and not summary.problems_failed:
        console.print(
            f"nothing left to do: every problem was already finished in {summary.out} "
            "(the run resumed; use another --out, or --force with a changed config, to start over)"
        )
