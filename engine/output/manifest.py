"""The manifest: what one slice of a run wrote, and how; and the one way to read it back.

A manifest is replaced atomically *after* the shards it lists, so it only ever lists
whole files. :func:`load_manifest` checks what it reads: a manifest without its shard
list would otherwise read as a run with no rows, and a resume would delete every shard.

Two forms, so that a flush costs what it adds, not what the run holds:

* *whole*: ``manifest.json`` holds everything (what a finished run, a repair and every
  older prmtree write);
* *log*: while a run is going, the per-problem state that grows (shards, completed ids,
  fingerprints, flushes, ...) is in an append-only, fsynced ``manifest.log.jsonl``
  (``manifest-IIIII-of-NNNNN.log.jsonl`` for a slice) and ``manifest.json`` stays small:
  config, stats, calibration, status, and ``log``: the file and how many of its bytes
  count. The log's first record holds the state before it (``base``), each record then
  one flush's additions. A flush appends its record after its shards are on disk, then
  replaces the small manifest: that replace is the commit, so bytes past the committed
  length (a record the crash left torn or unconfirmed) are ignored on read and cut off by
  the next append; a flush is all or nothing, as with the whole form.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prmtree.engine.output.atomic import fsync_dir, named, write_text_atomic
from prmtree.engine.output.layout import UNSLICED_MANIFEST, manifest_layout
from prmtree.engine.tables import TABLES

LAYOUT_VERSION = 1

#: Keys a manifest cannot be read without (the others have defaults).
REQUIRED_KEYS = ("config", "config_hash", "versions", "status", "shards", "completed")
#: The same for the log form, whose shards and completed ids are in its log.
REQUIRED_LOG_KEYS = ("config", "config_hash", "versions", "status", "log")
#: The per-problem state that grows with a run: in the log while the run goes.
GROWING = {"shards": list, "completed": list, "skipped": dict, "rejected": dict, "failed": dict,
           "flushes": dict, "fingerprints": dict}
#: What a slice's log file name ends with (``manifest.json`` -> ``manifest.log.jsonl``).
LOG_SUFFIX = ".log.jsonl"


def log_name(manifest_name: str) -> str:
    """The log file of the manifest called ``manifest_name``."""
    return manifest_name.removesuffix(".json") + LOG_SUFFIX


@dataclass
class Manifest:
    """What a run wrote and how: read by ``inspect``, ``export`` and resume."""

    config: dict[str, Any]
    config_hash: str
    versions: dict[str, str]
    layout_version: int = LAYOUT_VERSION
    slice: dict[str, int] = field(default_factory=lambda: {"index": 0, "count": 1})
    status: str = "running"  # "running" until the run ends, then "finished"
    shards: list[dict[str, Any]] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)  # bad input rows: final, in errors/
    failed: dict[str, str] = field(default_factory=dict)  # policy failures: retried by the next run
    # flush number -> {"completed": [...], "rejected": [...]}: the problems whose rows the
    # shards carrying that ``flush`` number hold (what a resume redoes if one is damaged);
    # "counts": what those rows add to ``stats`` (``RunStats.row_counts``), and "spaces":
    # answer space -> its problems, when they are of several (a drop takes each out of its own)
    flushes: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    # problem id (or bad row's key) -> what its rows were made from (``records.problem_fingerprint``,
    # ``error_fingerprint``): a resume refuses, or with --rerun-changed redoes, a problem whose
    # input changed, and retries a bad row that changed. Missing (older manifests): unknown.
    fingerprints: dict[str, str] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    # what the run's pilot learned (``engine/pilot.py``): {"floors": {answer space: {...}},
    # "pool": {...}}; empty until it has. A resume labels with it and pilots nothing.
    calibration: dict[str, Any] = field(default_factory=dict)
    updated_at: float = 0.0
    # the log form's pointer, {"file", "bytes", "records"}: the log holds the growing state,
    # and its first ``bytes`` count (empty: the whole form, or nothing written yet). A log
    # found shorter than that, or torn inside it, adds "torn": the bytes lost (``verify``).
    log: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The manifest as plain JSON data, whole form (what :meth:`from_dict` reads back)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "log"}  # json copies nothing

    def to_json(self) -> str:
        # indented for a person while small; a big run's in one line: only then does json
        # use its C encoder (1M problems: about 1 s, not 40)
        return json.dumps(self.to_dict(), indent=1 if len(self.completed) <= 10_000 else None, sort_keys=True)

    def head_json(self, log: dict[str, Any]) -> str:
        """The small manifest of the log form: everything but the growing state, which is in
        ``log`` (a few KB whatever the run's size)."""
        data = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in GROWING and k != "log"}
        data["log"] = {k: log[k] for k in ("file", "bytes", "records")}
        return json.dumps(data, indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """A manifest from parsed JSON; ValueError if it is not shaped like one."""
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        # What every manifest prmtree writes has: a manifest without its shard list would
        # otherwise read as a run with no rows, and a resume would delete every shard.
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise ValueError(f"missing {', '.join(map(repr, missing))}")
        known = {f for f in cls.__dataclass_fields__}
        manifest = cls(**{k: v for k, v in data.items() if k in known})
        for name, kind in (("log", dict), ("shards", list), ("completed", list), ("skipped", dict), ("rejected", dict),
                           ("failed", dict), ("flushes", dict), ("fingerprints", dict), ("stats", dict), ("calibration", dict), ("config", dict),
                           ("config_hash", str), ("status", str)):
            if not isinstance(getattr(manifest, name), kind):
                raise ValueError(f"{name!r} is not a {kind.__name__}")
        if manifest.status not in ("running", "finished"):
            raise ValueError(f"status {manifest.status!r} is neither 'running' nor 'finished'")
        for shard in manifest.shards:
            if not isinstance(shard, dict) or not {"table", "file", "rows"} <= shard.keys():
                raise ValueError(f"a shard entry lacks table/file/rows: {shard!r:.80}")
            rows, file = shard["rows"], shard["file"]
            if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
                raise ValueError(f"shard {file!r:.80}: rows is {rows!r:.20}, not a count")
            if shard["table"] not in TABLES or not isinstance(file, str) or not file.startswith(f"{shard['table']}/"):
                raise ValueError(f"a shard entry names no table file of the run: {shard!r:.80}")
        return manifest


def write_manifest(out_dir: Path, manifest: Manifest, name: str = UNSLICED_MANIFEST) -> None:
    """Replace the manifest atomically with its whole form, stamped with the time of writing
    (O(run): a finished run, a repair). Its log, if any, is then stale and removed; the
    writer's next flush starts a new one."""
    manifest.updated_at = time.time()
    write_text_atomic(out_dir / name, manifest.to_json())
    stale = {log_name(name), manifest.log.get("file") or log_name(name)}
    manifest.log = {}
    for file in stale:
        try:
            (out_dir / file).unlink(missing_ok=True)
        except OSError:
            pass  # harmless: nothing reads a log the manifest does not point to


def append_log(out_dir: Path, manifest: Manifest, name: str, record: dict[str, Any]) -> dict[str, Any]:
    """Append ``record`` to the manifest's log right after its committed bytes (cutting off
    any uncommitted tail a crash left), fsynced; returns the log pointer that commits it,
    for :func:`write_manifest_head`. Without a log yet, the log starts over. On failure
    the log is cut back (a part-written record on a full disk would hold the space the
    retry needs) and the error raised."""
    file = manifest.log.get("file") or log_name(name)
    start = manifest.log.get("bytes", 0) if manifest.log else 0
    line = (json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n").encode("utf-8")
    path = out_dir / file
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        try:
            os.ftruncate(fd, start)
            view, offset = memoryview(line), start
            while view:
                done = os.pwrite(fd, view, offset)
                view, offset = view[done:], offset + done
            os.fsync(fd)
        except BaseException as exc:
            named(exc, path)
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
            raise
    finally:
        os.close(fd)
    if start == 0:
        fsync_dir(out_dir)  # a new log file: its name durable too
    return {"file": file, "bytes": start + len(line), "records": (manifest.log.get("records", 0) if start else 0) + 1}


def write_manifest_head(out_dir: Path, manifest: Manifest, name: str, log: dict[str, Any], **changes: Any) -> None:
    """Commit a log record: replace the small manifest atomically, pointing at ``log``, with
    ``changes`` (status, stats, calibration) over ``manifest``'s fields (O(1) in the run)."""
    head = Manifest(**{k: getattr(manifest, k) for k in Manifest.__dataclass_fields__ if k not in GROWING})
    for key, value in changes.items():
        setattr(head, key, value)
    head.updated_at = time.time()
    write_text_atomic(out_dir / name, head.head_json(log))


def apply_record(state: dict[str, Any], record: dict[str, Any]) -> None:
    """One log record's additions applied to ``state`` (a manifest's ``vars``), in place:
    the one place both a flush and a reader say what a record means."""
    shards, completed = record.get("shards", []), record.get("completed", [])
    skipped, rejected = record.get("skipped", {}), record.get("rejected", {})
    failed, fingerprints = record.get("failed", {}), record.get("fingerprints", {})
    for key, value in (("shards", shards), ("completed", completed), ("skipped", skipped), ("rejected", rejected),
                       ("failed", failed), ("fingerprints", fingerprints)):
        if not isinstance(value, GROWING[key]):
            raise ValueError(f"a log record's {key!r} is not a {GROWING[key].__name__}")
    state["shards"].extend(shards)
    state["completed"].extend(completed)
    state["skipped"].update(skipped)
    state["rejected"].update(rejected)
    for problem_id in completed:  # an earlier run's failure, now done
        state["failed"].pop(problem_id, None)
    state["failed"].update(failed)
    state["fingerprints"].update(fingerprints)
    if record.get("flush") is not None:
        group = {"completed": list(completed), "rejected": list(rejected)}
        if isinstance(record.get("counts"), dict) and record["counts"]:
            group["counts"] = record["counts"]  # what its rows added to the stats (a repair takes it out)
        if isinstance(record.get("spaces"), dict) and record["spaces"]:
            group["spaces"] = record["spaces"]  # answer space -> its problems, when the flush held several
        state["flushes"][str(record["flush"])] = group


def _read_log(path: Path, committed: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """The growing state a log's committed bytes hold, its pointer as read, and the stats of
    its last whole record. A record torn or lost inside the committed bytes ends the read
    there (the pointer gets "torn"); without its first record the log says nothing, and
    reading it as a run with no rows would let a resume delete every shard: ValueError."""
    if not isinstance(committed, int) or isinstance(committed, bool) or committed < 1:
        raise ValueError(f"log bytes is {committed!r:.20}, not a length")
    try:
        with open(path, "rb") as handle:
            data = handle.read(committed)
    except FileNotFoundError:
        raise ValueError(f"its log {path.name} is missing") from None
    state: dict[str, Any] | None = None
    stats = None
    pos = records = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:
            break  # torn: cut short
        try:
            record = json.loads(data[pos:end])
        except ValueError:
            break  # torn or overwritten
        if not isinstance(record, dict):
            break
        if state is None:
            base = record.get("base")
            if not isinstance(base, dict):
                raise ValueError(f"its log {path.name} does not start with the run's state")
            state = {key: base.get(key, kind()) for key, kind in GROWING.items()}
            for key, kind in GROWING.items():
                if not isinstance(state[key], kind):
                    raise ValueError(f"its log's {key!r} is not a {kind.__name__}")
        apply_record(state, record)
        stats = record.get("stats") if isinstance(record.get("stats"), dict) else stats
        pos, records = end + 1, records + 1
    if state is None:
        raise ValueError(f"its log {path.name} holds no whole record (of the {committed} bytes the manifest counts)")
    pointer: dict[str, Any] = {"file": path.name, "bytes": pos, "records": records}
    if pos < committed:
        pointer["torn"] = committed - pos
    return state, pointer, stats


def load_manifest(path: str | Path) -> Manifest:
    """Read and check one manifest file, either form (with its log); ValueError saying why
    if it is unreadable."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "log" in data:
            missing = [k for k in REQUIRED_LOG_KEYS if k not in data]
            if missing:
                raise ValueError(f"missing {', '.join(map(repr, missing))}")
            log = data["log"]
            file = log.get("file") if isinstance(log, dict) else None
            if not isinstance(file, str) or Path(file).name != file or not file.endswith(LOG_SUFFIX):
                raise ValueError(f"'log' names no log file beside it: {log!r:.80}")
            state, pointer, last_stats = _read_log(path.parent / file, log.get("bytes"))
            data = {**data, **state, "log": pointer}
            if "torn" in pointer:  # the lost records' flushes never happened, as far as anyone can tell
                data["status"] = "running"
                data["stats"] = last_stats if last_stats is not None else data.get("stats", {})
        return Manifest.from_dict(data)
    except (ValueError, TypeError, AttributeError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(str(exc)) from None


def load_manifests(out_dir: str | Path) -> list[Manifest]:
    """Every slice's manifest in ``out_dir`` (one for an unsliced run), in name order;
    ValueError naming the first that is unreadable."""
    loaded = []
    for name in manifest_layout(out_dir):
        try:
            loaded.append(load_manifest(Path(out_dir) / name))
        except ValueError as exc:
            raise ValueError(f"{Path(out_dir) / name} is unreadable ({exc})") from None
    return loaded
