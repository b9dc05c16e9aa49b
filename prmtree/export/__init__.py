"""``prmtree export``: a run's labelled steps in the formats that PRM trainers read.

TRL removed its PRM trainer and the stepwise-supervision dataset type in September 2026
(huggingface/trl#7133), so the ``steps/`` table is no longer "what TRL reads". Each format
is one class in one module of this package, checked against the reading code of the
trainer it names (see each module): ``openrlhf``, ``visualprm``, ``qwen-prm``,
``math-shepherd``, ``hf`` (with its dataset card, ``card``), ``stepwise`` (alias ``trl``),
``prm800k``, ``pairs`` and ``jsonl``. A format registers itself in
:data:`prmtree.engine.registry.EXPORT_FORMATS`; adding one is a subclass of
:class:`ExportFormat` with ``@EXPORT_FORMATS.register(name)``.

Exports never write inside the run's directory, refuse an existing target unless
``overwrite=True``, and fail with :class:`ExportError` and one line saying why. They refuse
a run that is not whole (still running, stopped before its end, slices not run) unless
``allow_partial=True``. An export that would hold no record (the run labelled no step, or
the format's own rule leaves none: no decided path, every path flagged, no pair) writes
nothing and fails with :class:`NothingToExport` saying why, unless ``allow_empty=True``
(then it writes the empty files and warns). One export writes a target at a time: it
holds an ``flock`` on ``.<target name>.export.lock`` beside the target while it writes, and
a second export of the same target fails at once naming the holder (the lock file stays,
as a run's do).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from prmtree.engine.lock import FileLock, LockHeld, describe_holder, is_locked
from prmtree.engine.output import (
    Damage,
    Manifest,
    load_manifests,
    manifest_layout,
    missing_slices,
    stray_manifests,
    verify_run,
)
from prmtree.engine.output.layout import manifest_slice
from prmtree.engine.registry import EXPORT_FORMATS
from prmtree.export import (
    hf,
    jsonl,
    math_shepherd,
    openrlhf,
    pairs,
    prm800k,
    qwen_prm,
    stepwise,
    visualprm,
)
from prmtree.export.base import PLACEHOLDER, ExportError, ExportFormat, ExportOptions, NothingToExport

#: The built-in formats in the order ``prmtree export --help`` lists them; formats registered
#: elsewhere (a test, an entry point) follow in the registry's order.
BUILT_IN = (
    openrlhf.OpenRLHF, visualprm.VisualPRM, qwen_prm.QwenPRM, math_shepherd.MathShepherd, hf.HF,
    stepwise.Stepwise, prm800k.PRM800K, pairs.Pairs, jsonl.Jsonl,
)

__all__ = ["PLACEHOLDER", "ExportError", "ExportFormat", "ExportOptions", "NothingToExport", "export", "format_list",
           "formats"]


def formats() -> list[type[ExportFormat]]:
    """Every known format class: the built-ins, then the others registered."""
    found = list(BUILT_IN)
    for name in EXPORT_FORMATS.names():
        cls = EXPORT_FORMATS.find(name)
        if cls is not None and cls not in found:
            found.append(cls)
    return found


def format_list() -> list[tuple[str, str]]:
    """``(name, description)`` of every format and alias, in ``--help`` order."""
    return [item for cls in formats() for item in [(cls.name, cls.description), *cls.aliases.items()]]


def export(out: str | Path, fmt: str, target: str | Path, options: ExportOptions | None = None) -> int:
    """Write the run in ``out`` as ``fmt`` to ``target``; returns the number of records written
    (never 0 unless ``options.allow_empty``: an export of no record raises :class:`NothingToExport`)."""
    options = options or ExportOptions()
    known = formats()
    form = next((cls() for cls in known if fmt == cls.name or fmt in cls.aliases), None)
    if form is None:
        raise ExportError(f"format must be one of {', '.join(name for name, _ in format_list())}, got {fmt!r}")
    form.check_target_name(target)  # before Path() drops a trailing slash
    out, target = Path(out), Path(target)
    if options.soft and not form.soft_labels:
        soft = " and ".join(sorted(cls.name for cls in known if cls.soft_labels))
        carrying = [cls.name for cls in known if cls.values_column]
        where = (f" (the {' and '.join(carrying)} exports always carry the MC values in `values`)"
                 if form.values_column else "")
        raise ExportError(f"soft labels go to {soft} only, not {form.name}{where}")
    for option in options.given():
        if option not in form.options:
            readers = " and ".join(cls.name for cls in known if option in cls.options)
            raise ExportError(f"{option} applies to {readers} only, not {form.name}")
    _check_run(out)
    _check_outside(out, target)
    partial = incomplete(out)
    if partial is not None and not options.allow_partial:
        raise ExportError(f"{partial}; pass --allow-partial (allow_partial=True) to export what is saved")
    if partial is not None:
        warnings.warn(f"{partial}: exporting what is saved", stacklevel=2)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(export_lock_path(target))
    try:
        lock.acquire()
    except LockHeld as exc:
        raise ExportError(f"another export is writing {str(target)!r} now ({exc}); wait for it to end, "
                          "or export somewhere else") from None
    try:
        form.check_target(target, options.overwrite)
        return form.write(out, target, options)
    finally:
        lock.release()


def export_lock_path(target: Path) -> Path:
    """The lock an export of ``target`` holds while it writes: beside the target, so a
    directory target (``hf``) can be replaced by a rename."""
    return target.parent / f".{target.name}.export.lock"


def _check_run(out: Path) -> None:
    """A run directory (or a folder of hand-written shards with no manifest at all)."""
    if not out.is_dir():
        raise ExportError(f"{str(out)!r} holds no prmtree manifest")
    if manifest_layout(out):
        return
    stray = stray_manifests(out)
    if stray:
        raise ExportError(f"{str(out)!r} holds no prmtree run: {', '.join(stray)} is no slice's manifest "
                          "(a run writes manifest.json or manifest-IIIII-of-NNNNN.json)")
    if not (out / "steps").is_dir():
        raise ExportError(f"{str(out)!r} holds no prmtree manifest")


def unfinished_slices(out: Path, found: dict[str, Manifest]) -> tuple[list[str], list[str]]:
    """The unfinished slices among ``found`` (manifest name -> manifest): those a process is
    writing now (described: "pid ... is writing it"), and the manifest names of those no
    process writes (stopped or crashed: their command resumes them)."""
    writing, stopped = [], []
    for name, manifest in found.items():
        if manifest.status == "finished":
            continue
        slice_ = manifest_slice(name)
        lock = out / slice_.lock_name if slice_ is not None else None
        if lock is not None and is_locked(lock):
            writing.append(f"{_holder(lock)} is writing it")
        else:
            stopped.append(name)
    return writing, stopped


def incomplete(out: str | Path) -> str | None:
    """Why the run in ``out`` is not whole, in one sentence, or None if it is (or has no manifest).

    A slice whose manifest says "running" is in progress while a process holds its lock;
    without one it was stopped or crashed: incomplete either way, and its own command
    resumes it. A slice of a sliced run with no manifest has not run.
    """
    out = Path(out)
    found = dict(zip(manifest_layout(out), load_manifests(out)))
    if not found:
        return None
    done = len({pid for m in found.values() for pid in m.completed})
    writing, stopped = unfinished_slices(out, found)
    missing = missing_slices(out)
    if not (writing or stopped or missing):
        return None
    count = f"{done} problem{'s' * (done != 1)} done so far"
    if missing:
        total = len(found) + len(missing)
        count += f", in {len(found)} of {total} slices (slices {', '.join(f'{s.index}/{s.count}' for s in missing)} have not run)"
    parts = []
    if writing:
        parts.append(f"the run is still in progress ({'; '.join(writing)}): wait for it to finish")
    if stopped:
        parts.append(f"{', '.join(stopped)} {'says' if len(stopped) == 1 else 'say'} the run is still running but no "
                     "process is writing it (stopped or crashed): run its command again to finish it")
    if missing and not (writing or stopped):
        parts.append("run the missing slices' commands to finish it")
    return f"{str(out)!r} is not a finished run: {count}; {'; '.join(parts)}"


def damaged(out: str | Path) -> str | None:
    """Why the run in ``out`` would be read wrong (a shard that does not match its manifest,
    an image file gone), in one sentence, or None if it reads whole. Unlisted shards, stray
    manifests and shards listed twice do not change what ``read_table`` reads: ``prmtree
    verify`` reports them, readers go on."""
    damage = [d for d in verify_run(Path(out)) if not d.readers_unaffected]
    if not damage:
        return None
    more = f" and {len(damage) - 1} more" if len(damage) > 1 else ""
    return "; ".join([f"{str(out)!r} is damaged ({damage[0]}{more}); `prmtree verify {out}` lists it",
                      *_what_a_rerun_does(damage)])


def _what_a_rerun_does(damage: list[Damage]) -> list[str]:
    """What re-running the run's command does about ``damage``, so the hint is one the run
    keeps: it refuses a slice whose manifest cannot be read (it cannot tell which shards
    are that slice's), and it redoes the problems of a bad shard (or of a torn log's flushes)."""
    unreadable = [d.manifest for d in damage if d.file is None and d.problem.startswith("unreadable")]
    advice = []
    if unreadable:
        advice.append(f"re-running the run's command refuses the directory while {', '.join(unreadable)} cannot "
                      f"be read: remove {'it (its slice starts' if len(unreadable) == 1 else 'them (their slices start'} over) "
                      "or use another --out")
    if any(d.file is not None for d in damage):
        advice.append("re-running the run's command redoes the problems of a bad shard")
    return advice


def _holder(lock: Path) -> str:
    """Who holds a run's lock, as the lock file records it."""
    try:
        holder = json.loads(lock.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        holder = {}
    return describe_holder(holder if isinstance(holder, dict) else {})


def _check_outside(out: Path, target: Path) -> None:
    """An export never writes inside the run, nor over a folder that holds it."""
    run, dest = out.resolve(), target.resolve()
    if dest == run or run in dest.parents:
        raise ExportError(f"{str(target)!r} is inside the run directory {str(out)!r}; export somewhere else")
    if dest in run.parents:
        raise ExportError(f"{str(target)!r} contains the run directory {str(out)!r}; export somewhere else")
