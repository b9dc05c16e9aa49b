"""Writing a slice's rows: whole problems buffered, flushed as shards, then the manifest.

Durability rules, which make resuming a plain re-run:

* a problem's rows (all tables) are buffered together and flushed together;
* a shard is written under a temporary name, fsynced, then renamed;
* the manifest is updated *after* the shards it lists, and lists the problems whose
  rows those shards hold; a shard the manifest does not list is discarded on resume,
  and its problems are redone. While the run goes, a flush appends one fsynced record
  to the manifest's log and then replaces the small manifest that counts it (so a
  flush costs what it adds, not what the run holds: ``manifest.py``); the final flush
  writes the whole manifest, once;
* every shard is listed with its size, row count and sha256, and with the flush that
  wrote it; ``flushes`` lists each flush's problems. A problem's rows (all tables) are in
  one flush, so when a shard is missing or altered, verification finds it and a resume
  drops that flush's shards and redoes its problems: no row lost, none twice.

So after a ``kill -9`` at any moment, a resume gives the rows of an uninterrupted run:
none lost, none twice.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from prmtree.engine.config import OutputConfig
from prmtree.engine.errors import describe_os_error
from prmtree.engine.output.atomic import (
    publish,
    removed_on_failure,
    sha256_file,
    temporary_path,
)
from prmtree.engine.output.faults import fault_point
from prmtree.engine.output.layout import Slice
from prmtree.engine.output.manifest import (
    GROWING,
    Manifest,
    append_log,
    apply_record,
    write_manifest,
    write_manifest_head,
)
from prmtree.engine.stats import RunStats, subtract_counts
from prmtree.engine.tables import TABLES, ProblemRows, error_row, table_schema

log = logging.getLogger("prmtree")
#: Seconds between tries of a flush that failed, at most: never past the give-up time left
#: (``OutputConfig.flush_give_up_s``, how long flushes may keep failing).
FLUSH_RETRY_S = 10.0
#: Errors a failed flush raises at once: trying the same write again later cannot mend them
#: (a full disk, a quota, a folder made read-only or a network file system's hiccup may be).
UNMENDED_BY_WAITING = frozenset({errno.EFBIG, errno.ENAMETOOLONG, errno.EISDIR, errno.ENOTDIR, errno.EINVAL})


def _row_bytes(row: dict[str, Any]) -> int:
    """A cheap size estimate of a row, for rotating shards by bytes: text by its length,
    anything else 8 (a list item by item, a dict in a list by its text values)."""
    size = 0
    for value in row.values():
        if isinstance(value, (str, bytes)):
            size += len(value)
        elif isinstance(value, list):
            for item in value:
                kind = type(item)  # exact types first: this runs for every item of every row written
                if kind is float or kind is bool or kind is int or item is None:
                    size += 8
                elif kind is str or kind is bytes:
                    size += len(item)
                elif isinstance(item, dict):
                    size += sum(len(v) for v in item.values() if isinstance(v, (str, bytes)))
                elif isinstance(item, (str, bytes)):
                    size += len(item)
                else:
                    size += 8
        else:
            size += 8
    return size


#: The answer space of a dropped problem no flush record names (a manifest from before
#: flushes recorded their spaces): no space ``calibration.answer_space`` gives is empty.
UNKNOWN_SPACE = ""


@dataclass
class DroppedRows:
    """What :meth:`DatasetWriter.drop_problems` took out: rows per table, and what the
    dropped problems' rows had added to the run's counters (``RunStats.row_counts``; the
    answer spaces of those whose flush recorded them: all but an older manifest's)."""

    rows: dict[str, int]
    counts: dict[str, Any] = field(default_factory=dict)


def flush_spaces(group: dict[str, Any]) -> dict[str, str]:
    """Problem id -> answer space, as a flush group (``Manifest.flushes``) records them: its
    ``spaces`` lists the problems of each space when the flush held several; a flush of one
    space names it in its ``counts``. A problem missing: no record says (an older manifest)."""
    if group.get("spaces"):
        return {pid: space for space, ids in group["spaces"].items() for pid in ids}
    counts = group.get("counts") or {}
    spaces = counts.get("answer_spaces") or {}
    completed = group.get("completed", ())
    if len(spaces) == 1 and counts.get("problems_done") == len(completed):
        return dict.fromkeys(completed, next(iter(spaces)))
    return {}


class DatasetWriter:
    """Buffers whole problems and flushes them as shards plus an updated manifest.

    A flush happens when any table's buffer passes ``rows_per_shard`` or
    ``bytes_per_shard``, when ``flush_interval_s`` has passed since the last one (so
    an abrupt stop loses at most the problems finished since), and at the end.

    Every call that may flush takes the run's ``stats``: a flush records them in the
    manifest as they are at that moment (None keeps the manifest's earlier stats).
    """

    def __init__(
        self,
        out_dir: str | Path,
        manifest: Manifest,
        *,
        slice: Slice = Slice(),
        config: OutputConfig | None = None,
    ) -> None:
        config = config or OutputConfig()
        self.out_dir = Path(out_dir)
        self.manifest = manifest
        self.slice = slice
        self.rows_per_shard = config.rows_per_shard
        self.bytes_per_shard = config.bytes_per_shard
        self.flush_interval_s = config.flush_interval_s
        self.flush_give_up_s = config.flush_give_up_s
        self.schemas = {t: table_schema(t, config.chat_format) for t in TABLES}
        for table in TABLES:
            (self.out_dir / table).mkdir(parents=True, exist_ok=True)
        self.buffers: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}
        self.row_sizes: dict[str, list[int]] = {t: [] for t in TABLES}  # estimated bytes, one per buffered row
        self.buffer_bytes: dict[str, int] = {t: 0 for t in TABLES}  # their running sum
        self.pending_counts = RunStats()  # what the pending problems' rows add to the run's counters
        self.pending_spaces: dict[str, list[str]] = {}  # answer space -> the pending problems of it
        self.pending_completed: list[str] = []
        self.pending_skipped: dict[str, str] = {}
        self.pending_rejected: dict[str, str] = {}
        self.pending_failed: dict[str, str] = {}
        self.pending_fingerprints: dict[str, str] = {}
        self.calibration: dict[str, Any] = dict(manifest.calibration)  # what the pilot learned
        pattern = slice.shard_pattern()
        self.next_seq: dict[str, int] = {t: 0 for t in TABLES}
        for shard in manifest.shards:
            m = pattern.fullmatch(Path(shard["file"]).name)
            if m:
                table = shard["table"]
                self.next_seq[table] = max(self.next_seq[table], int(m.group(1)) + 1)
        flushes = [int(k) for k in manifest.flushes] + [s.get("flush", -1) for s in manifest.shards]
        self.next_flush = max(flushes, default=-1) + 1
        self.last_flush = time.monotonic()
        self.flushing = False  # True while a flush writes (a watchdog tells it from a hang)
        self.failing_since: float | None = None  # when the flushes in the run began to fail
        self.retry_at = 0.0  # no flush in the run before this (monotonic): one failed

    # -- adding -----------------------------------------------------------------------

    def add_problem(
        self, problem_id: str, rows: ProblemRows, stats: RunStats | None, *, skipped: str | None = None,
        fingerprint: str | None = None, space: str | None = None,
    ) -> None:
        """Buffer all rows of one finished problem; it counts as done once flushed.
        ``fingerprint``: what the rows were made from, recorded with them (resume compares it).
        ``space``: its answer space; the flush records what its rows add to the run's
        counters, so a repair that drops the flush takes out exactly that."""
        if space is not None:
            self.pending_counts.count_problem(space, [r["labels"] for r in rows.get("steps", [])],
                                              len(rows.get("nodes", [])), len(rows.get("pairs", [])), bool(skipped))
            self.pending_spaces.setdefault(space, []).append(problem_id)
        for table, table_rows in rows.by_table().items():
            if table_rows:
                self.buffers[table].extend(table_rows)
                sizes = [_row_bytes(r) for r in table_rows]
                self.row_sizes[table].extend(sizes)
                self.buffer_bytes[table] += sum(sizes)
        self.pending_completed.append(problem_id)
        self.pending_failed.pop(problem_id, None)
        self._note_fingerprint(problem_id, fingerprint)
        if skipped:
            self.pending_skipped[problem_id] = skipped
        self._maybe_flush(stats)

    def add_rejected(
        self, problem_id: str, stage: str, reason: str, stats: RunStats | None, *, fingerprint: str | None = None
    ) -> None:
        """A bad input row: an ``errors/`` row, retried only when the row changes (its
        ``fingerprint``) or with ``--retry-errors``."""
        row = error_row(problem_id, stage, reason)  # text made writable: a lone surrogate written out
        problem_id = row["problem_id"]
        self.buffers["errors"].append(row)
        self.row_sizes["errors"].append(len(row["reason"]) + len(problem_id))
        self.pending_rejected[problem_id] = row["reason"]
        self._note_fingerprint(problem_id, fingerprint)
        self._maybe_flush(stats)

    def add_failed(
        self, problem_id: str, reason: str, stats: RunStats | None, *, fingerprint: str | None = None
    ) -> None:
        """A problem the policy failed on: recorded in the manifest, retried by the next run."""
        self.pending_failed[problem_id] = reason
        self._note_fingerprint(problem_id, fingerprint)
        self._maybe_flush(stats)

    def note_calibration(self, calibration: dict[str, Any]) -> None:
        """What the run's pilot learned: written with the next flush, before any row
        labelled with it (those rows are added after this)."""
        self.calibration = calibration

    def _note_fingerprint(self, problem_id: str, fingerprint: str | None) -> None:
        if fingerprint:
            self.pending_fingerprints[problem_id] = fingerprint

    def _maybe_flush(self, stats: RunStats | None) -> None:
        """Flush when a buffer is full or the interval passed. One that fails in the run (a
        full disk, a folder made read-only) keeps its rows in the buffers, as every failed
        flush does, and is tried again ``FLUSH_RETRY_S`` later while the trees go on; after
        ``flush_give_up_s`` of failures its error stops the run (exit 2, everything before
        on disk) rather than holding rows in memory without end."""
        now = time.monotonic()
        if now < self.retry_at or not (self._over_limits() or now - self.last_flush >= self.flush_interval_s):
            return
        try:
            self.flush(stats)
        except OSError as exc:
            wait = self._retry_wait(now, exc)
            if wait is None:
                raise
            self.retry_at = now + wait
            log.warning("prmtree: a flush failed (%s); its rows wait in memory and it is tried again in %.3g s "
                        "(the run stops if flushes still fail after %g s)", describe_os_error(exc), wait,
                        self.flush_give_up_s)
        else:
            if self.failing_since is not None:
                log.warning("prmtree: the flush succeeded again: every row held meanwhile is on disk")
            self.failing_since = None

    def _retry_wait(self, now: float, exc: OSError) -> float | None:
        """After a flush failed at ``now`` with ``exc``: the seconds until it is tried again,
        or None (the caller raises) once flushes have failed for ``flush_give_up_s``, or at
        once for an error no wait can mend (a file-size limit: the same shard fails again).
        The give-up clock starts at the first failure since the last flush that succeeded,
        in the run or final."""
        if exc.errno in UNMENDED_BY_WAITING:
            return None
        if self.failing_since is None:
            self.failing_since = now
        left = self.failing_since + self.flush_give_up_s - now
        return min(FLUSH_RETRY_S, left) if left > 0 else None

    def _over_limits(self) -> bool:
        return any(
            len(self.buffers[t]) >= self.rows_per_shard or self.buffer_bytes[t] >= self.bytes_per_shard
            for t in TABLES
        )

    # -- flushing ---------------------------------------------------------------------

    def flush(self, stats: RunStats | None, status: str = "running") -> None:
        """Write buffered rows as complete shards, then the manifest that lists them.

        All or nothing: the buffers are cleared and the problems count as done only once
        every table's shards *and* the manifest are on disk. A flush that fails (a full
        disk, a folder that cannot be written) removes the shards it wrote, keeps every
        buffer and pending problem for the next flush to retry, and raises its ``OSError``.

        While the run goes (``status`` "running"), the manifest is updated by a log record of
        this flush's additions and a small manifest that commits it: O(new work). The final
        flush (``status`` "finished") writes the whole manifest once, and the log goes.
        """
        written: list[dict[str, Any]] = []
        next_seq = dict(self.next_seq)
        self.flushing = True
        m = self.manifest
        try:
            for table in TABLES:
                rows, sizes = self.buffers[table], self.row_sizes[table]
                while rows:
                    n = self._chunk_length(sizes)
                    written.append({**self._write_shard(table, rows[:n]), "flush": self.next_flush})
                    rows, sizes = rows[n:], sizes[n:]
            fault_point("after_shard_rename")
            stats_dict = stats.to_dict() if stats is not None else m.stats
            record = self._record(written, stats_dict)
            if status == "finished":
                new = self._next_manifest(written, stats_dict, status)
                write_manifest(self.out_dir, new, self.slice.manifest_name)
            else:
                log = append_log(self.out_dir, m, self.slice.manifest_name,
                                 record if m.log else {"base": {k: getattr(m, k) for k in GROWING}, **record})
                fault_point("after_log_append")
                write_manifest_head(self.out_dir, m, self.slice.manifest_name, log,
                                    status=status, stats=stats_dict, calibration=self.calibration)
        except BaseException:
            self.discard_shards(written)
            self.next_seq = next_seq  # the retry writes the same names again
            raise
        finally:
            self.flushing = False
        if status == "finished":
            vars(m).update(vars(new))  # the same object: whoever holds it sees the flush
        else:  # the same object, updated in place by what the record says: O(this flush)
            apply_record(vars(m), record)
            m.status, m.stats, m.calibration, m.log, m.updated_at = status, stats_dict, self.calibration, log, time.time()
        if record["flush"] is not None:
            self.next_flush += 1
        for table in TABLES:
            self.buffers[table] = []
            self.row_sizes[table] = []
            self.buffer_bytes[table] = 0
        self.pending_completed, self.pending_skipped = [], {}
        self.pending_rejected, self.pending_failed = {}, {}
        self.pending_fingerprints = {}
        self.pending_counts = RunStats()
        self.pending_spaces = {}
        self.last_flush = time.monotonic()

    def _record(self, written: list[dict[str, Any]], stats: dict[str, Any]) -> dict[str, Any]:
        """This flush's additions, as a log record (what :func:`apply_record` reads). It
        carries the stats too, so a log cut short still reads with matching counts."""
        grouped = bool(written or self.pending_completed or self.pending_rejected)
        return {
            "flush": self.next_flush if grouped else None,
            "shards": written,
            "completed": list(self.pending_completed),
            "skipped": dict(self.pending_skipped),
            "rejected": dict(self.pending_rejected),
            "failed": dict(self.pending_failed),
            "fingerprints": dict(self.pending_fingerprints),
            "stats": stats,
            "counts": self.pending_counts.row_counts() if self.pending_counts.problems_done else {},
            # which problem is of which space (one space: its counts name it), so a drop of
            # some of them takes each out of its own space's counts
            "spaces": {k: list(v) for k, v in self.pending_spaces.items()} if len(self.pending_spaces) > 1 else {},
        }

    def _next_manifest(self, written: list[dict[str, Any]], stats: dict[str, Any], status: str) -> Manifest:
        """The whole manifest after this flush, built beside the current one (which stays as
        it is until the new one is on disk: a failed flush changes nothing)."""
        m = self.manifest
        new = replace(
            m,
            shards=list(m.shards),
            completed=list(m.completed),
            skipped=dict(m.skipped),
            rejected=dict(m.rejected),
            failed=dict(m.failed),
            fingerprints=dict(m.fingerprints),
            flushes=dict(m.flushes),
            calibration=self.calibration,
            status=status,
            stats=stats,
            log={},
        )
        apply_record(vars(new), self._record(written, stats))
        return new

    def discard_shards(self, written: list[dict[str, Any]]) -> None:
        """Remove shards the manifest on disk does not list, written by a flush or a repair
        that then failed, so the directory stays what it describes (best effort: a resume
        deletes any shard the manifest does not list)."""
        for shard in written:
            try:
                (self.out_dir / shard["file"]).unlink()
            except OSError:
                pass

    def _chunk_length(self, sizes: list[int]) -> int:
        """How many of the buffered rows make the next shard (by rows and by bytes)."""
        total = 0
        for i, size in enumerate(sizes):
            total += size
            if i + 1 >= self.rows_per_shard or total >= self.bytes_per_shard:
                return i + 1
        return len(sizes)

    def _write_shard(self, table: str, rows: list[dict[str, Any]] | pa.Table) -> dict[str, Any]:
        seq = self.next_seq[table]
        self.next_seq[table] = seq + 1
        name = self.slice.shard_name(seq)
        final = self.out_dir / table / name
        tmp = temporary_path(final)
        arrow = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows, schema=self.schemas[table])
        with removed_on_failure(tmp):
            pq.write_table(arrow, tmp, compression="zstd")
            publish(tmp, final)
        return {
            "table": table,
            "file": f"{table}/{name}",
            "rows": len(rows),
            "bytes": final.stat().st_size,
            "sha256": sha256_file(final),
        }

    def drop_problems(self, keys: set[str]) -> DroppedRows:
        """Forget ``keys`` (problem ids, bad rows' keys) so the run redoes them: each shard
        holding a row of one is written again without it (a new name, the same flush), and
        the manifest in memory stops listing them. The caller writes the manifest; the old
        files, then unlisted, are deleted as any unlisted shard is. Returns the rows dropped
        per table and what the dropped problems had added to the counters, each in its
        answer space (for the caller to take out of the run's).

        Each flush group touched keeps its ``counts`` true to the rows it still holds: the
        dropped problems' own counts, each in the space the group records for it, are
        taken out of them (a later repair of the flush takes out exactly the rest). A
        group that cannot say a dropped problem's space (an older manifest) loses its
        counts instead: a repair then falls back to reading its rows."""
        m = self.manifest
        dropped = DroppedRows({t: 0 for t in TABLES})
        labels: dict[str, list[list[bool | None]]] = {}  # dropped problem -> its steps rows' labels
        rows_of: dict[str, dict[str, int]] = {}  # dropped problem -> table -> its rows
        shards = []
        written: list[dict[str, Any]] = []  # the shards written again: removed if one fails (a full disk)
        try:
            for shard in m.shards:
                path = self.out_dir / shard["file"]
                ids = pq.read_table(path, columns=["problem_id"]).column("problem_id").to_pylist()
                keep = [i for i, pid in enumerate(ids) if pid not in keys]
                if len(keep) == len(ids):
                    shards.append(shard)
                    continue
                dropped.rows[shard["table"]] += len(ids) - len(keep)
                for pid in ids:
                    if pid in keys:
                        counted = rows_of.setdefault(pid, {})
                        counted[shard["table"]] = counted.get(shard["table"], 0) + 1
                table = pq.read_table(path) if keep or shard["table"] == "steps" else None
                if shard["table"] == "steps":
                    for pid, row in zip(ids, table.column("labels").to_pylist()):
                        if pid in keys:
                            labels.setdefault(pid, []).append(row or [])
                if keep:
                    written.append(self._write_shard(shard["table"], table.take(keep)))
                    shards.append({**written[-1], "flush": shard.get("flush")})
        except BaseException:
            self.discard_shards(written)
            raise
        done = keys & set(m.completed)
        total = RunStats()  # what the dropped problems added to the run's counters
        grouped: set[str] = set()
        for group in m.flushes.values():
            mine = done.intersection(group.get("completed", ()))
            if not mine:
                continue
            grouped |= mine
            spaces = flush_spaces(group)
            counts = self._counts_of(mine, spaces, labels, rows_of)
            total += counts
            if "counts" in group and mine <= spaces.keys():
                subtract_counts(group["counts"], counts.row_counts())
            else:
                group.pop("counts", None)  # no longer its rows' counts: a repair falls back to reading rows
        total += self._counts_of(done - grouped, {}, labels, rows_of)  # shards of no recorded flush
        total.answer_spaces.pop(UNKNOWN_SPACE, None)  # not taken out: no record says which it was
        dropped.counts = total.row_counts()
        m.shards = shards
        m.log = {}  # the log no longer replays to this: the next write is whole, or a new log's base
        m.completed = [p for p in m.completed if p not in keys]
        for entries in (m.skipped, m.rejected, m.failed, m.fingerprints):
            for key in keys & entries.keys():
                del entries[key]
        for group in m.flushes.values():
            for kind in ("completed", "rejected"):
                group[kind] = [p for p in group.get(kind, ()) if p not in keys]
            if "spaces" in group:
                group["spaces"] = {space: [p for p in ids if p not in keys] for space, ids in group["spaces"].items()}
        return dropped

    def _counts_of(self, problems: set[str], spaces: dict[str, str], labels: dict[str, list[list[bool | None]]],
                   rows_of: dict[str, dict[str, int]]) -> RunStats:
        """What ``problems`` (done, being dropped) added to the counters, as ``add_problem``
        counted it: each in its answer space (``spaces``; missing: ``UNKNOWN_SPACE``)."""
        counts = RunStats()
        for pid in sorted(problems):
            tables = rows_of.get(pid, {})
            counts.count_problem(spaces.get(pid, UNKNOWN_SPACE), labels.get(pid, []), tables.get("nodes", 0),
                                 tables.get("pairs", 0), pid in self.manifest.skipped)
        return counts

    def close(self, stats: RunStats | None) -> None:
        """The final flush, tried once (:meth:`aclose` tries it again)."""
        self.flush(stats, status="finished")

    async def aclose(self, stats: RunStats | None, stop: asyncio.Event | None = None) -> None:
        """The final flush, tried again as a flush in the run is: a disk full at the very end
        would otherwise fail the run at once, and the next run redo every problem still
        buffered. The waits between tries leave the event loop free (signals, the
        watchdog); ``stop`` set (a stop signal) ends the wait with one last try. After
        ``flush_give_up_s`` of failures, or that last try, the error is raised as a single
        try's would be: every flush before it stays valid, the next run redoes the rest."""
        while True:
            try:
                self.close(stats)
            except OSError as exc:
                wait = self._retry_wait(time.monotonic(), exc)
                if wait is None or (stop is not None and stop.is_set()):
                    raise
                log.warning("prmtree: the final flush failed (%s); its rows wait in memory and it is tried again "
                            "in %.3g s (the run fails if it still fails after %g s)", describe_os_error(exc), wait,
                            self.flush_give_up_s)
                await _wait(stop, wait)
            else:
                if self.failing_since is not None:
                    log.warning("prmtree: the final flush succeeded: every row held in memory is on disk")
                self.failing_since = None
                return


async def _wait(stop: asyncio.Event | None, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile."""
    if stop is None:
        await asyncio.sleep(seconds)
        return
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass
