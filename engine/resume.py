"""Opening an output directory: a fresh run, a resume, or a refusal.

Resuming is a plain re-run: shards the manifest does not list are discarded, problems
it records as finished (completed, or rejected as bad input) are skipped, everything
else is redone, including problems the policy failed on last time. Listed shards are
verified first (size, sha256, row count); a damaged one's flush is dropped and its
problems redone. An ``image_mode = "path"`` run's rows whose image files are missing or
altered are dropped too, and their problems redone, which writes the files again.
A run whose row-defining config differs is refused unless ``force``, which starts the
slice over; a different output layout version is always refused, and so is a second
writer of the same slice (``engine/lock.py``) and a slice layout other than the one the
directory holds (``--slice 0/2`` beside ``--slice 1/3`` or an unsliced run would
duplicate rows in the union).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from prmtree.engine.config import InputConfig, RunConfig, config_changes
from prmtree.engine.errors import ConfigError
from prmtree.engine.lock import (
    DIRECTORY_LOCK,
    FileLock,
    LockHeld,
    describe_holder,
    live_slice_counts,
    live_slice_holders,
)
from prmtree.engine.output.atomic import temporary_target
from prmtree.engine.output.layout import SHARD_NAME, Slice, manifest_layout, shard_slice_count
from prmtree.engine.output.manifest import (
    LAYOUT_VERSION,
    Manifest,
    load_manifest,
    log_name,
    write_manifest,
    write_manifest_head,
)
from prmtree.engine.output.faults import fault_point
from prmtree.engine.output.verification import IMAGE_COPY, BrokenImage, broken_images, verify_shard
from prmtree.engine.output.writer import DatasetWriter
from prmtree.engine.pilot import cleanest, lost_more, pilot_members
from prmtree.engine.problem import iter_problems, same_fingerprint, scan_input
from prmtree.engine.records import Problem, problem_fingerprint
from prmtree.engine.stats import subtract_counts
from prmtree.engine.tables import TABLES


@dataclass
class OpenedRun:
    writer: DatasetWriter
    done: set[str] = field(default_factory=set)  # problem ids already finished
    previous_stats: dict[str, Any] = field(default_factory=dict)
    lock: FileLock | None = None  # held until :meth:`close`: no second writer of this slice
    repaired: list[str] = field(default_factory=list)  # damaged shards found, and what is redone
    known_ids: dict[str, str] = field(default_factory=dict)  # where -> id of input rows given without one
    adopted: str | None = None  # the sibling slice's manifest whose calibration this slice took
    finished: bool = False  # the earlier run had ended (every row of its input was started)

    def close(self) -> None:
        """Let the next run of this slice in (the kernel also does when the process dies)."""
        if self.lock is not None:
            self.lock.release()


def open_run(
    out_dir: str | Path,
    config: RunConfig,
    versions: dict[str, str],
    slice: Slice = Slice(),
    force: bool = False,
    before_removing: Callable[[], None] | None = None,
) -> OpenedRun:
    """Claim slice ``slice`` of ``out_dir`` for this run and say what is left to do.

    Raises :class:`ConfigError` (one line) when another run writes the slice, the
    directory holds another slice layout, the manifest is unreadable, or the config
    changed (without ``force``). ``before_removing`` is called after every refusal, just
    before ``force`` removes the old slice (the caller builds its policy there: one that
    cannot be built then removes nothing). The returned run holds the slice's lock:
    ``close()`` it.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = _claim(out, slice, config.config_hash())
    except OSError as exc:
        raise ConfigError(f"cannot write to --out {str(out)!r}: {exc.strerror or exc}") from None
    try:
        return _open_claimed(out, config, versions, slice, force, lock, before_removing)
    except BaseException:
        lock.release()
        raise


def _claim(out: Path, slice: Slice, config_hash: str) -> FileLock:
    """Take the slice's lock, after checking the directory's layout, under a brief
    directory-wide lock so two runs of different layouts cannot both pass the check. The
    lock records the run's config hash, and a slice whose sibling is being written now with
    another config is refused: slices started together write no manifest for the other to
    check until their pilots end."""
    with FileLock(out / DIRECTORY_LOCK):
        lock = FileLock(out / slice.lock_name)
        try:
            lock.acquire(note={"config_hash": config_hash})
        except LockHeld as held:
            raise ConfigError(
                f"{out} ({slice.described}) is being written by another prmtree run: {held}; "
                "wait for it to finish, stop it, or use another --out"
            ) from None
        try:
            _check_layout(out, slice)
            _check_live_siblings(out, slice, config_hash)
        except BaseException:
            lock.release()
            raise
        return lock


def _check_live_siblings(out: Path, slice: Slice, config_hash: str) -> None:
    """Refuse a config another slice of ``out`` is being written with now (different rows)."""
    if slice.count == 1:
        return
    for name, holder in live_slice_holders(out).items():
        theirs = holder.get("config_hash")
        if name != slice.manifest_name and isinstance(theirs, str) and theirs != config_hash:
            raise ConfigError(
                f"{out} is being written now by another slice's run ({name}: {describe_holder(holder)}) with a "
                "different config: every slice of one --out must use the same config: use that one, or another --out"
            )


def _check_layout(out: Path, slice: Slice) -> None:
    """One slice layout per directory: the manifests on disk and the runs writing now."""
    found: dict[int, str] = {}
    for name, count in manifest_layout(out).items():
        found.setdefault(count, name)
    for count, name in live_slice_counts(out).items():
        found.setdefault(count, f"a run writing {name} now")
    others = sorted((c, name) for c, name in found.items() if c != slice.count)
    if others:
        count, name = others[0]
        held = "an unsliced run" if count == 1 else f"slices of {count} (--slice i/{count})"
        use = "no --slice" if count == 1 else f"--slice i/{count}"
        raise ConfigError(
            f"{out} holds {held} ({name}); this run is {slice.described}: one output directory "
            f"takes one slice layout, so use {use} or another --out"
        )


def _open_claimed(
    out: Path, config: RunConfig, versions: dict[str, str], slice: Slice, force: bool, lock: FileLock,
    before_removing: Callable[[], None] | None = None,
) -> OpenedRun:
    manifest_path = out / slice.manifest_name
    previous: Manifest | None = None
    repaired: list[str] = []
    replaced: dict[str, Any] = {}  # the calibration --force dropped for a sibling's (_floors_apart)
    # refusals first: a refused run (--force included) must not have deleted anything
    _refuse_foreign_files(out, slice)
    _check_sibling_slices(out, config, slice)
    if manifest_path.exists():
        try:
            previous = load_manifest(manifest_path)
        except ValueError as exc:
            raise ConfigError(
                f"{manifest_path} is unreadable ({exc}); use another --out, or remove it to start this slice over"
            ) from None
        if previous.layout_version != LAYOUT_VERSION:
            raise ConfigError(
                f"{out} holds output layout version {previous.layout_version}; this prmtree writes "
                f"version {LAYOUT_VERSION}: use another --out"
            )
        if not _same_rows(previous, config):
            if not force:
                raise ConfigError(
                    f"{out} was written with a different config ({_changes(previous, config)}); "
                    "pass --force to start over, or use another --out"
                )
            if before_removing is not None:
                before_removing()
            _remove_slice(out, previous, slice)
            previous = None
        elif force and (apart := _floors_apart(out, slice, previous.calibration)):
            if before_removing is not None:
                before_removing()
            _remove_slice(out, previous, slice)
            replaced, previous = previous.calibration, None
            repaired.append(apart)
    if previous is not None:
        repaired = _repair_log(out, previous, slice) + _repair(out, previous, slice)
    removed = discard_unlisted(out, previous, slice)
    if previous is None and (shards := [f for f in removed if temporary_target(Path(f).name) is None]):
        repaired.append(
            f"{len(shards)} shards of this slice but no {slice.manifest_name} (e.g. {shards[0]}): a crash before "
            "the first flush committed, or a deleted manifest; they were deleted and every problem is done again"
        )
    manifest = Manifest(
        config=config.model_dump(mode="json"),
        config_hash=config.config_hash(),
        versions=versions,
        slice={"index": slice.index, "count": slice.count},
    )
    if previous is not None:
        manifest.shards = previous.shards
        manifest.completed = previous.completed
        manifest.skipped = previous.skipped
        manifest.rejected = previous.rejected
        manifest.failed = previous.failed
        manifest.flushes = previous.flushes
        manifest.fingerprints = previous.fingerprints
        manifest.stats = previous.stats
        manifest.calibration = previous.calibration  # what its pilot learned: the rows done so far used it
        manifest.log = previous.log  # the flushes append to the same log
    adopted = None
    if not manifest.calibration and slice.count > 1:
        adopted, manifest.calibration = _sibling_calibration(out, slice, replaced)
    writer = DatasetWriter(out, manifest, slice=slice, config=config.output)
    if previous is not None:
        repaired += _repair_images(writer, slice)
    done = set(manifest.completed) | set(manifest.rejected)
    return OpenedRun(writer, done, dict(manifest.stats), lock, repaired, adopted=adopted,
                     finished=previous is not None and previous.status == "finished")


def reconcile_input(
    opened: OpenedRun,
    problems: Any,
    fmt: InputConfig,
    slice: Slice = Slice(),
    *,
    rerun_changed: bool = False,
    retry_errors: bool = False,
    before_removing: Callable[[], None] | None = None,
) -> list[str]:
    """Compare the input with what the manifest recorded, before any work: a labelled
    problem whose input changed is refused (ConfigError naming it) or, with
    ``rerun_changed``, its rows dropped and redone; a bad row that changed (or every bad
    row, with ``retry_errors``) is retried; a failed problem no longer in the input is
    forgotten (nothing left to retry), a labelled one keeps its rows. Problems recorded
    without a fingerprint (older manifests) count as unchanged. ``before_removing`` is
    called before labelled rows are dropped (as :func:`open_run`'s). Returns lines for the user.
    """
    writer = opened.writer
    m = writer.manifest
    recorded = {k: m.fingerprints.get(k, "") for k in (*m.completed, *m.rejected, *m.failed)}
    # the pilot's problems not labelled here (a run stopped after the pilot learned, before they
    # finished): their input taught the floors all the same, and the calibration recorded it
    calibration = m.calibration or {}
    unlabelled_members = {k: v for k, v in calibration.get("fingerprints", {}).items() if k not in recorded}
    recorded.update(unlabelled_members)
    if not recorded:
        return []
    done = opened.done
    scan = scan_input(problems, fmt, recorded, slice.owns, lambda pid: pid in done or not slice.owns(pid))
    completed = set(m.completed)
    changed = [k for k in scan.changed if k in completed]
    changed_members = [k for k in scan.changed if k in unlabelled_members]
    if changed and not rerun_changed:
        others = f" (and {len(changed) - 1} other{'s' if len(changed) > 2 else ''})" if len(changed) > 1 else ""
        raise ConfigError(
            f"problem {changed[0]!r}{others} changed in the input since {writer.out_dir} labelled it, so its rows no "
            "longer match it: pass --rerun-changed to drop the rows of changed problems and redo them, or use "
            "another --out"
        )
    if changed_members and not rerun_changed:
        raise ConfigError(
            f"problem {changed_members[0]!r}, one of the pilot's problems, changed in the input since {writer.out_dir} "
            "learned the floors from it (before it was labelled), and every problem here is labelled with those "
            "floors: pass --rerun-changed to learn them again and redo every labelled problem, or use another --out"
        )
    # A changed pilot member: the floors (and pool) every labelled problem here was labelled
    # with were learned partly from its old input, so redoing it alone cannot give the rows a
    # fresh run of this input gives. The pilot learns again and every labelled problem is redone.
    members = set(calibration.get("members", ()))
    relearn = [k for k in changed if k in members] + changed_members
    notes = []
    # rows new to a finished run (a stopped one's unrecorded rows may be ones it never started),
    # and bad rows retried, that a fresh run's pilot would take: only those are looked for
    retried = {k for k in scan.changed if k in m.rejected} | (set(m.rejected) if retry_errors else set())
    candidates = (scan.added if opened.finished else set()) | retried
    learn = rerun_changed and slice.count == 1  # (a sliced run cannot learn again slice by slice)
    why = (f"problem {relearn[0]!r} changed in the input and was one of the pilot's problems" if relearn else
           _new_members(calibration, problems, fmt, m.config, None if learn else candidates, set(changed))
           if (candidates or learn) and not scan.unreadable else None)
    if why and not relearn:  # rows a fresh run's pilot would take, not in this one's
        if learn:
            relearn = [why]
        else:  # growing a run's input is a way to work: said, not refused
            notes.append(f"{why}: this --out's floors were learned without them (a new "
                         "answer space is labelled at its chance floor); " + (
                             "pass --rerun-changed to learn them again and redo every labelled problem"
                             if slice.count == 1 else "a sliced run cannot learn them again: use another --out"))
    if relearn and slice.count > 1:
        # the other slices were labelled with the same floors, and their runs cannot see this
        # slice's input change: relearning here alone would mix two calibrations in one --out
        raise ConfigError(
            f"problem {relearn[0]!r} changed in the input since {writer.out_dir} labelled it, and it was one of "
            "the pilot's problems: every slice was labelled with the floors learned from its old input, which a "
            "sliced run cannot learn again slice by slice: use another --out"
        )
    stale: list[str] = []  # labelled with the floors the pilot learns again, and not redone here
    if relearn:
        m.calibration = {}
        writer.calibration = {}  # or a flush before the new pilot learns writes the old one back
        # every labelled problem's rows go: one --out holds one calibration. A problem gone from
        # the input, or whose images cannot be read now, cannot be redone: its rows go all the same
        stale = sorted(completed & (set(scan.unseen) | set(scan.unreadable)))
        changed = sorted(completed)
    removed = sorted(set(scan.unseen) - set(unlabelled_members))  # a member gone unlabelled left no rows
    gone_errors = set(removed) & m.rejected.keys()  # their errors rows describe rows no longer given
    drop = set(changed) | retried | gone_errors
    gone = [k for k in removed if k in completed or k in m.failed]
    if gone:
        failed = [k for k in gone if k in m.failed and k not in completed]
        for key in failed:
            del m.failed[key]
        kept = len(gone) - len(failed)
        notes.append(
            f"{len(gone)} problem{'s' if len(gone) > 1 else ''} recorded in {writer.out_dir} "
            f"{'are' if len(gone) > 1 else 'is'} no longer in the input (e.g. {gone[0]!r}): "
            + "; ".join(filter(None, [
                (f"{kept} labelled {'lose their' if kept > 1 else 'loses its'} rows (labelled with the floors the "
                 "pilot learns again, and nothing to redo them from)" if relearn else
                 f"{kept} labelled keep their rows (use another --out to leave them out)") if kept else "",
                f"{len(failed)} failed are no longer retried" if failed else "",
            ]))
        )
    unreadable = [k for k in scan.unreadable if k in completed]
    if unreadable:
        its = "their" if len(unreadable) > 1 else "its"
        kept = (f"{its} rows are dropped (labelled with the floors the pilot learns again): put the images back to "
                "have them redone" if relearn else "the rows are kept; put the images back to have them compared")
        notes.append(f"{len(unreadable)} labelled problem{'s' if len(unreadable) > 1 else ''} in {writer.out_dir} "
                     f"cannot have {'their' if len(unreadable) > 1 else 'its'} images read now (e.g. {unreadable[0]!r}: "
                     f"{scan.unreadable[unreadable[0]]}): {kept}")
    if relearn:
        redone = len(changed) - len(stale)
        notes.append(f"{why}: every "
                     f"problem here was labelled with the floors learned from the old input, so the pilot learns "
                     "them again and " + (f"all {redone} labelled problems in the input are redone" if redone > 1 else
                                          "the labelled problem in the input is redone" if redone else
                                          "no labelled problem is left in the input to redo") + " (their old rows are "
                     "dropped)")
    elif changed:
        notes.append(f"redoing {len(changed)} problem{'s' if len(changed) > 1 else ''} whose input changed "
                     f"(e.g. {changed[0]!r}); their old rows are dropped")
    retried_present = sorted(retried - gone_errors)
    if retried_present:
        why = "--retry-errors" if retry_errors else "their input changed"
        notes.append(f"retrying {len(retried_present)} bad input row{'s' if len(retried_present) > 1 else ''} "
                     f"({why}; e.g. {retried_present[0]!r})")
    if (drop or relearn) and before_removing is not None:
        before_removing()
    if drop or gone or relearn:
        with _rewrites_discarded_on_failure(writer):
            if drop:
                _drop(writer, drop)
            write_manifest(writer.out_dir, m, slice.manifest_name)
        discard_unlisted(writer.out_dir, m, slice)
        opened.done = set(m.completed) | set(m.rejected)
        opened.previous_stats = dict(m.stats)
    opened.known_ids = scan.known_ids
    return notes


def _new_members(calibration: dict[str, Any], problems: Any, fmt: InputConfig, config: dict[str, Any],
                 among: set[str] | None, edited: set[str]) -> str | None:
    """Why a fresh run's pilot would take problems (of ``among``: rows added, bad rows fixed;
    None, for ``--rerun-changed``: any, rows moved or a member's place taken too) that the
    calibration was learned without (in its window: a new answer space, a space short of
    ``pilot_problems``), or None. A row ``edited`` is redone on its own, as before. Reads the
    window's problems (their images too: a bad row is no member) once, so it is asked only
    where there are such rows or with ``--rerun-changed``; not while some recorded images
    cannot be read."""
    recorded = set(calibration.get("members", ()))
    if not recorded:
        return None
    labels = RunConfig.model_validate(config).labels  # the run's (another config was refused)
    now = pilot_members(iter_problems(problems, fmt), labels.pilot_problems, labels.pilot_window)
    new = [k for k in now if k not in recorded and k not in edited and (among is None or k in among)]
    if not new:
        return None
    more = f" and {len(new) - 1} more" if len(new) > 1 else ""
    return f"problem {new[0]!r}{more} would be among the pilot's problems of a fresh run of this input"


def _check_sibling_slices(out: Path, config: RunConfig, slice: Slice) -> None:
    """The slices of one directory are one run: refuse a config that differs from another
    slice's (``--force`` included: it starts this slice over, not the others), or
    ``inspect`` and ``export`` would present rows of two runs as one."""
    if slice.count == 1:
        return
    for name, count in manifest_layout(out).items():
        if count != slice.count or name == slice.manifest_name:
            continue
        try:
            other = load_manifest(out / name)
        except ValueError:
            continue  # that slice's own run reports it
        if not _same_rows(other, config):
            raise ConfigError(
                f"{out} holds {name}, written with a different config ({_changes(other, config)}); "
                "every slice of one --out must use the same config: use that one, or another --out"
            )


def _sibling_calibrations(out: Path, slice: Slice) -> dict[str, dict[str, Any]]:
    """What the other slices of ``out`` whose pilots have learned learned, by manifest."""
    found = {}
    for name, count in sorted(manifest_layout(out).items()):
        if count != slice.count or name == slice.manifest_name:
            continue
        try:
            calibration = load_manifest(out / name).calibration
        except (OSError, ValueError):  # unreadable (its own run says so), or gone: a sibling starting over
            continue
        if calibration.get("floors") is not None and all(key in calibration for key in ("pool", "members")):
            found[name] = calibration
    return found


def _sibling_calibration(out: Path, slice: Slice, replaced: dict[str, Any] | None = None,
                         ) -> tuple[str | None, dict[str, Any]]:
    """(its manifest, what it learned) of another slice of ``out`` whose pilot has learned,
    or (None, {}). A slice that has not learned yet takes it rather than piloting again: on
    the same input it would learn the same, so one --out is labelled with one set of floors;
    :func:`check_adopted` refuses an input whose pilot problems differ from those it was
    learned from. Only a sibling that lost no pilot member another sibling (or ``replaced``,
    this slice's own calibration that --force dropped) learned from is taken: with several
    lost, this slice pilots again. A calibration without its members' fingerprints (an older
    prmtree's) cannot be checked, and is not taken."""
    siblings = _sibling_calibrations(out, slice)
    checkable = {name: c for name, c in siblings.items() if c.get("fingerprints")}
    name = cleanest(checkable, [c for c in siblings.values() if not c.get("fingerprints")] + ([replaced] if replaced else []))
    return (name, dict(checkable[name])) if name is not None else (None, {})


def _floors_apart(out: Path, slice: Slice, calibration: dict[str, Any]) -> str | None:
    """Why --force starts this slice over though its config is unchanged, or None: its pilot
    lost a member a sibling's learned from (a transient failure in one driver), so its rows
    hold other floors than theirs, and one --out must hold one set of floors. It then takes
    the floors of a sibling that lost none (:func:`_sibling_calibration`), or pilots again."""
    siblings = _sibling_calibrations(out, slice)
    if not calibration or not any(lost_more(calibration, other) for other in siblings.values()):
        return None
    lost = ", ".join(repr(pid) for pid in sorted(calibration.get("lost") or {})) or "members its siblings learned from"
    source, _ = _sibling_calibration(out, slice, calibration)
    then = f"it takes the floors of {source}" if source is not None else "it pilots again"
    return (f"--force: {slice.manifest_name}'s floors were learned without {lost}, unlike a sibling slice's, so "
            f"this slice was started over: {then}")


def check_adopted(opened: OpenedRun, problems: Any, fmt: InputConfig) -> None:
    """A slice that took a sibling's calibration: refuse (ConfigError) an input whose pilot
    problems are not those it was learned from (edited, gone or now a bad row), since this
    slice's rows would then match no run of its own input, and the slices of one --out must
    share one set of floors. Reads the input until every member is seen (rows given without
    an id are decoded to find theirs). Runs before anything is written."""
    calibration = opened.writer.manifest.calibration
    wanted: dict[str, str] = dict(calibration.get("fingerprints", {}))
    if opened.adopted is None or not wanted:
        return
    seen: dict[str, str] = {}
    for item in iter_problems(problems, fmt, skip=lambda pid: pid not in wanted):
        key = item.id if isinstance(item, Problem) else item.problem_id
        if key in wanted:
            seen[key] = problem_fingerprint(item) if isinstance(item, Problem) else "error: bad row"
            if len(seen) == len(wanted):
                break
    # text and image contents, not stamps: a moved folder or another node's mount is the same input
    changed = [pid for pid in calibration.get("members", wanted)
               if pid not in seen or not same_fingerprint(wanted.get(pid, ""), seen[pid])]
    if changed:
        how = "is gone from the input" if changed[0] not in seen else "changed in the input"
        raise ConfigError(
            f"problem {changed[0]!r}, one of the pilot's problems, {how} since {opened.adopted} learned the floors "
            "from it, and every slice of one --out is labelled with those floors: run this slice on the input that "
            "slice ran on, or use another --out"
        )


def _same_rows(written: Manifest, config: RunConfig) -> bool:
    """Whether ``config`` writes the rows ``written`` holds: the same hash, or a hash that
    differs only because an older prmtree hashed a setting that no longer changes rows
    (a policy argument given at its default): then no row-defining setting differs."""
    return written.config_hash == config.config_hash() or not config_changes(written.config, config)


def _changes(written: Manifest, config: RunConfig) -> str:
    """The first few row-defining settings ``config`` changes from ``written``'s, in words."""
    changes = config_changes(written.config, config)
    said = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
    if any(c.startswith("policy.") for c in changes[:3]):
        said += (" - the policy's arguments are part of the config (--policy-arg values, [policy] keys, and a "
                 "policy object's public attributes: name an attribute that does not change the rows with a "
                 "leading underscore)")
    return said


def _refuse_foreign_files(out: Path, slice: Slice) -> None:
    """Refuse a table folder holding a file prmtree did not write, or a shard of another
    slice layout (a copy from another run's directory): ``load_dataset("parquet",
    data_files="out/steps/*.parquet")`` would read it as part of the run, and no run of
    this directory ever deletes it (a run of its layout is refused here)."""
    ours = slice.layout_pattern()
    for table in TABLES:
        directory = out / table
        if not directory.is_dir():
            continue
        for path in sorted(directory.iterdir()):
            if not path.name.endswith(".parquet"):
                continue
            if not SHARD_NAME.fullmatch(path.name):
                raise ConfigError(
                    f"{path} is not a prmtree shard, and loaders reading {table}/*.parquet would take it for "
                    "one: move it, or use another --out"
                )
            if not ours.fullmatch(path.name):
                count = shard_slice_count(path.name)
                theirs = f"slices of {count} (--slice i/{count} or --drivers {count})" if count > 1 else "an unsliced run"
                ours_said = "an unsliced run" if slice.count == 1 else f"slices of {slice.count}"
                raise ConfigError(
                    f"{path} is a shard of {theirs}, but this run writes {ours_said}, and loaders reading "
                    f"{table}/*.parquet would take it for part of this run: run with that layout, move it, or "
                    "use another --out"
                )


def _repair(out: Path, manifest: Manifest, slice: Slice) -> list[str]:
    """Verify the listed shards; drop every flush with a damaged one (all its shards and
    its problems, so they are redone once, not duplicated in the other tables).

    The repaired manifest is written at once; the dropped files, now unlisted, are then
    deleted by ``discard_unlisted``. Returns a line per damaged shard for the user.
    """
    damaged = {s["file"]: why for s in manifest.shards if (why := verify_shard(out, s)) is not None}
    lost, holding = _unlisted_rows_of_done(out, manifest, slice)
    if not damaged and not lost:
        return []
    bad = {s.get("flush") for s in manifest.shards if s["file"] in damaged}
    found = {int(number) for number, group in manifest.flushes.items() if not lost.isdisjoint(group.get("completed", ()))}
    bad |= found if found or not lost else {None}  # lost rows of no recorded flush: redo the whole slice
    damaged |= dict.fromkeys(holding, "listed in no manifest entry, yet it holds rows of problems the manifest "
                                      "counts as done")
    if None in bad:  # a shard written before flushes were recorded: its problems are unknown
        bad = {s.get("flush") for s in manifest.shards} | {int(k) for k in manifest.flushes}
    dropped_shards = [s for s in manifest.shards if s.get("flush") in bad]
    completed: set[str] = set()
    rejected: set[str] = set()
    groups = []
    bad = sorted(bad, key=lambda n: -1 if n is None else n)  # groups[i] is flush bad[i]'s
    for number in bad:
        group = manifest.flushes.pop(str(number), {})
        groups.append(group)
        completed.update(group.get("completed", ()))
        rejected.update(group.get("rejected", ()))
    unknown = None in {s.get("flush") for s in dropped_shards}
    if unknown:  # unknown groups: redo the whole slice
        completed, rejected = set(manifest.completed), set(manifest.rejected)
    skipped = completed & manifest.skipped.keys()
    manifest.shards = [s for s in manifest.shards if s.get("flush") not in bad]
    manifest.completed = [p for p in manifest.completed if p not in completed]
    manifest.skipped = {p: r for p, r in manifest.skipped.items() if p not in completed}
    manifest.rejected = {p: r for p, r in manifest.rejected.items() if p not in rejected}
    if unknown:
        _forget(manifest.stats, len(completed), len(skipped), len(rejected), dropped_shards)
    else:
        # a flush that recorded what its rows added (labels, lengths, answer spaces) has it
        # taken out exactly, though a damaged shard's own rows cannot be read (a
        # --rerun-changed or image repair that dropped some of its problems took theirs out
        # of it); one without (an older manifest's) by its readable rows
        counted = {number for number, group in zip(bad, groups) if "counts" in group or not group.get("completed")}
        for group in groups:
            subtract_counts(manifest.stats, group.get("counts", {}))
        rest = [g for number, g in zip(bad, groups) if number not in counted]
        rest_done = {p for g in rest for p in g.get("completed", ())}
        rest_shards = [s for s in dropped_shards if s.get("flush") not in counted]
        _forget(manifest.stats, len(rest_done), len(rest_done & skipped), len(rejected), rest_shards,
                _readable_labels(out, [s for s in rest_shards if s["table"] == "steps" and s["file"] not in damaged]))
    write_manifest(out, manifest, slice.manifest_name)
    return [f"{file}: {why}" for file, why in sorted(damaged.items())] + [
        f"dropped {len(dropped_shards)} shards written with it; {len(completed) + len(rejected)} problems "
        "will be redone"
    ]


def _column(out: Path, file: str, name: str) -> list[Any]:
    """One column of a shard, or nothing where the file cannot be read."""
    try:
        return pq.read_table(out / file, columns=[name]).column(0).to_pylist()
    except Exception:  # noqa: BLE001 - pyarrow raises several types for a broken file
        return []


def _readable_labels(out: Path, shards: list[dict[str, Any]]) -> list[list[bool | None]]:
    """The ``labels`` of every row of these steps shards that can still be read."""
    return [labels for shard in shards for labels in _column(out, shard["file"], "labels")]


def _unlisted_shards(out: Path, manifest: Manifest, slice: Slice) -> list[str]:
    """This slice's shard files on disk that the manifest does not list (``table/name``)."""
    listed, pattern = {s["file"] for s in manifest.shards}, slice.shard_pattern()
    return [f"{table}/{path.name}" for table in TABLES if (out / table).is_dir()
            for path in sorted((out / table).iterdir())
            if pattern.fullmatch(path.name) and f"{table}/{path.name}" not in listed]


def _unlisted_rows_of_done(out: Path, manifest: Manifest, slice: Slice) -> tuple[set[str], list[str]]:
    """Done problems whose rows of a table are in an unlisted shard and in no listed one, and
    the unlisted shards holding them: a manifest that lost a shard's entry (hand-edited, a
    bad merge). The shard would be deleted as a crash's leftover and the rows lost for good,
    the problems still counted as done. A crash's leftover holds no done problem (its flush
    never committed), and a shard a repair rewrote holds only problems whose rows a listed
    shard now has: neither counts. An unreadable leftover is a crash's (a shard is renamed
    into place whole)."""
    lost: set[str] = set()
    holding: list[str] = []
    done = set(manifest.completed)
    listed_ids: dict[str, set[str]] = {}
    for file in _unlisted_shards(out, manifest, slice):
        ids = set(_column(out, file, "problem_id")) & done
        if not ids:
            continue
        table = file.split("/", 1)[0]
        if table not in listed_ids:  # a damaged listed shard reads as empty: its flush is redone anyway
            listed_ids[table] = {pid for shard in manifest.shards if shard["table"] == table
                                 for pid in _column(out, shard["file"], "problem_id")}
        if missing := ids - listed_ids[table]:
            lost |= missing
            holding.append(file)
    return lost, holding


def _repair_images(writer: DatasetWriter, slice: Slice) -> list[str]:
    """Redo the problems whose rows point to an image file that is missing or altered
    (``image_mode = "path"``): their shards verify, yet the rows are wrong, and nothing
    else would ever write the file again (a problem writes its images when it is done).

    Only those problems are redone, as ``reconcile_input`` redoes changed ones: the shards
    holding their rows are written again without them, the manifest is written, and the old
    shards, now unlisted, deleted. Altered files are deleted first (a redone problem keeps
    a file already there), so a kill -9 at any point leaves a directory the next run
    repairs the same way: files missing, or a manifest that no longer counts the problems.
    Returns lines for the user.
    """
    out, m = writer.out_dir, writer.manifest
    if m.config.get("output", {}).get("image_mode") != "path":
        return []
    seen: dict[str, BrokenImage | None] = {}  # each image file looked at once
    found = {file: broken for file in dict.fromkeys(s["file"] for s in m.shards)
             if (broken := broken_images(out, {"file": file}, seen))}
    if not found:
        return []
    for altered in {b.file for group in found.values() for b in group if b.file is not None}:
        altered.unlink(missing_ok=True)
    fault_point("image_repair_files_removed")
    owners = {b.problem_id for group in found.values() for b in group}
    with _rewrites_discarded_on_failure(writer):
        _drop(writer, owners)
        fault_point("image_repair_shards_written")
        write_manifest(out, m, slice.manifest_name)
    fault_point("image_repair_manifest_written")
    discard_unlisted(out, m, slice)
    notes = []
    for file, broken in found.items():
        for why in dict.fromkeys(b.problem for b in broken):
            paths = sorted({b.path for b in broken if b.problem == why})
            notes.append(f"{file}: {len(paths)} image files its rows point to {why} (e.g. {paths[0]!r})")
    example = sorted(owners)[0]
    return notes + [f"dropped the rows of the {len(owners)} problems pointing to them (e.g. {example!r}); they will "
                    "be redone, and their image files written again"]


def _repair_log(out: Path, manifest: Manifest, slice: Slice) -> list[str]:
    """Cut the manifest's log back to its last whole, committed record: bytes a crash left
    after it (a record torn mid-write, or never committed) are dropped. A log found torn
    *inside* what the manifest counts lost its last records: the manifest is written
    again to count only the whole ones, and the lost flushes' problems, their shards now
    unlisted, are redone. Returns a line for the user if records were lost."""
    if not manifest.log:
        return []
    path = out / manifest.log["file"]
    if path.stat().st_size > manifest.log["bytes"]:
        os.truncate(path, manifest.log["bytes"])
    torn = manifest.log.pop("torn", 0)
    if not torn:
        return []
    write_manifest_head(out, manifest, slice.manifest_name, manifest.log)
    return [f"{manifest.log['file']}: its last {torn} bytes could not be read as its records (one torn, missing "
            "or altered there, and every one after it); the problems of the flushes they recorded will be redone"]


@contextlib.contextmanager
def _rewrites_discarded_on_failure(writer: DatasetWriter) -> Iterator[None]:
    """Shards written again inside (``_drop``) are removed if the block fails before the
    manifest listing them is written (a full disk): the manifest on disk still lists the
    old ones, and the directory stays what it describes, as after a failed flush."""
    listed = {shard["file"] for shard in writer.manifest.shards}
    try:
        yield
    except BaseException:
        writer.discard_shards([shard for shard in writer.manifest.shards if shard["file"] not in listed])
        raise


def _drop(writer: DatasetWriter, keys: set[str]) -> None:
    """Drop ``keys``' rows and records (``DatasetWriter.drop_problems``) and take them out of
    the manifest's counters, so the run redoes them and counts them once."""
    m = writer.manifest
    rejected = len(keys & m.rejected.keys())
    dropped = writer.drop_problems(keys)
    # what their rows added (labels, lengths, each problem's answer space: its flush recorded
    # it), taken out exactly; only an older manifest's problems stay in their space's counts
    subtract_counts(m.stats, dropped.counts)
    _forget(m.stats, 0, 0, rejected, [])


def _forget(stats: dict[str, Any], done: int, skipped: int, rejected: int, shards: list[dict[str, Any]],
            labels: list[list[bool | None]] = ()) -> None:
    """Take the dropped problems and rows out of the carried-over counters, so the totals
    after they are redone count them once (work counters such as rollouts keep the work).
    ``labels``: the dropped paths' labels, where they could be read (a damaged shard's
    cannot); the per-answer-space counts are not taken out (a row does not say its space):
    what a flush without recorded counts (an older manifest's) is left with."""
    rows = {t: sum(s["rows"] for s in shards if s["table"] == t) for t in TABLES}
    pos = sum(row.count(True) for row in labels)
    neg = sum(row.count(False) for row in labels)
    for key, minus in (("problems_done", done), ("problems_skipped", skipped), ("input_errors", rejected),
                       ("nodes", rows["nodes"]), ("pairs", rows["pairs"]), ("paths", rows["steps"]),
                       ("steps_labelled", pos + neg), ("labels_positive", pos), ("labels_negative", neg)):
        if isinstance(stats.get(key), int):
            stats[key] = max(0, stats[key] - minus)
    lengths = stats.get("steps_per_path")
    if isinstance(lengths, dict):
        for row in labels:
            key = next((k for k in (len(row), str(len(row))) if k in lengths), None)
            if key is not None:
                lengths[key] = max(0, lengths[key] - 1)


def discard_unlisted(out_dir: Path, manifest: Manifest | None, slice: Slice) -> list[str]:
    """Delete this slice's shards (and temporary files) that the manifest does not list."""
    listed = {s["file"] for s in manifest.shards} if manifest else set()
    pattern = slice.shard_pattern()
    removed = []
    for table in TABLES:
        directory = out_dir / table
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            rel = f"{table}/{path.name}"
            is_ours = bool(pattern.fullmatch(path.name))
            target = temporary_target(path.name)
            is_tmp = target is not None and bool(pattern.fullmatch(target))
            if (is_ours and rel not in listed) or is_tmp:
                path.unlink()
                removed.append(rel)
    return removed


def _remove_slice(out: Path, manifest: Manifest, slice: Slice) -> None:
    """``--force``: forget this slice's earlier output entirely."""
    discard_unlisted(out, None, slice)  # every shard of the slice, listed or not
    (out / slice.manifest_name).unlink(missing_ok=True)
    (out / log_name(slice.manifest_name)).unlink(missing_ok=True)
    images = out / "images"
    if slice.count == 1 and manifest.config.get("output", {}).get("image_mode") == "path" and images.is_dir():
        for path in images.iterdir():  # only the copies prmtree wrote (named by content hash)
            if IMAGE_COPY.fullmatch(path.name):
                path.unlink()
    for table in TABLES:
        (out / table).mkdir(exist_ok=True)
