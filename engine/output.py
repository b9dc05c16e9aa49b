"""Crash-safe Parquet shards (steps / nodes / pairs / errors) and the run manifest.

Every table has an explicit schema. ``steps`` carries TRL's stepwise-supervision
columns (``prompt``, ``completions``, ``labels``) and an ``images`` column of Hugging
Face Image structs, with the ``huggingface`` features metadata in the schema so that
``datasets.load_dataset("parquet", ...)`` decodes images.

Durability rules, which make resuming a plain re-run:

* a problem's rows (all tables) are buffered together and flushed together;
* a shard is written under a temporary name, fsynced, then renamed;
* ``manifest.json`` is replaced atomically *after* the shards it lists, and lists the
  problems whose rows those shards hold; a shard the manifest does not list is
  discarded on resume, and its problems are redone;
* every shard is listed with its size, row count and sha256, and with the flush that
  wrote it; ``flushes`` lists each flush's problems. A problem's rows (all tables) are in
  one flush, so when a shard is missing or altered, :func:`verify_manifest` finds it and a
  resume drops that flush's shards and redoes its problems: no row lost, none twice.

So after a ``kill -9`` at any moment, a resume gives the rows of an uninterrupted run:
none lost, none twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from prmtree.engine.config import OutputConfig
from prmtree.engine.tables import TABLES, ProblemRows, error_row, table_schema

LAYOUT_VERSION = 1

# -- slices ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Slice:
    """Slice ``index`` of ``count`` of the input (``--shard i/N``): a deterministic subset."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard must be i/N with 0 <= i < N, got {self.index}/{self.count}")

    @classmethod
    def parse(cls, text: str) -> Slice:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not m:
            raise ValueError(f"shard must look like i/N (for example 0/4), got {text!r}")
        return cls(int(m.group(1)), int(m.group(2)))

    def owns(self, problem_id: str) -> bool:
        if self.count == 1:
            return True
        digest = hashlib.blake2b(problem_id.encode("utf-8"), digest_size=8).digest()
        return int.from_bytes(digest, "little") % self.count == self.index

    @property
    def tag(self) -> str:
        return "" if self.count == 1 else f"s{self.index:05d}of{self.count:05d}-"

    @property
    def manifest_name(self) -> str:
        return "manifest.json" if self.count == 1 else f"manifest-{self.index:05d}-of-{self.count:05d}.json"

    @property
    def lock_name(self) -> str:
        """The file a run writing this slice holds locked (``engine/lock.py``)."""
        return f".{self.manifest_name}.lock"

    @property
    def described(self) -> str:
        return "unsharded" if self.count == 1 else f"--shard {self.index}/{self.count}"

    def shard_pattern(self) -> re.Pattern[str]:
        return re.compile(rf"part-{re.escape(self.tag)}(\d{{5,}})\.parquet")


# -- manifest -------------------------------------------------------------------------


#: Keys a manifest cannot be read without (the others have defaults).
REQUIRED_KEYS = ("config", "config_hash", "versions", "status", "shards", "completed")


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
    # shards carrying that ``flush`` number hold (what a resume redoes if one is damaged)
    flushes: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    updated_at: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

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
        for name, kind in (("shards", list), ("completed", list), ("skipped", dict), ("rejected", dict),
                           ("failed", dict), ("flushes", dict), ("stats", dict), ("config", dict),
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


def write_manifest(out_dir: Path, manifest: Manifest, name: str = "manifest.json") -> None:
    """Replace the manifest atomically (write, fsync, rename, fsync the directory)."""
    manifest.updated_at = time.time()
    tmp = out_dir / f".{name}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(manifest.to_json())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, out_dir / name)
    _fsync_dir(out_dir)


def load_manifest(path: Path) -> Manifest:
    """Read and check one manifest file; ValueError saying why if it is unreadable."""
    try:
        return Manifest.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(str(exc)) from None


def read_manifest(out_dir: str | Path, name: str = "manifest.json") -> dict[str, Any]:
    return json.loads((Path(out_dir) / name).read_text(encoding="utf-8"))


def manifests(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every slice's manifest in ``out_dir`` (one for an unsharded run)."""
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(Path(out_dir).glob("manifest*.json"))]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fault(point: str) -> None:
    """Fault injection for the crash tests: die here, as a ``kill -9`` would."""
    if os.environ.get("PRMTREE_FAULT") == point:
        os._exit(137)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- writer ---------------------------------------------------------------------------


def _row_bytes(row: dict[str, Any]) -> int:
    """A cheap size estimate of a row, for rotating shards by bytes."""
    size = 0
    for value in row.values():
        if isinstance(value, (str, bytes)):
            size += len(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    size += sum(len(v) for v in item.values() if isinstance(v, (str, bytes)))
                elif isinstance(item, (str, bytes)):
                    size += len(item)
                else:
                    size += 8
        else:
            size += 8
    return size


class DatasetWriter:
    """Buffers whole problems and flushes them as shards plus an updated manifest.

    A flush happens when any table's buffer passes ``rows_per_shard`` or
    ``bytes_per_shard``, when ``flush_interval_s`` has passed since the last one (so
    an abrupt stop loses at most the problems finished since), and at the end.
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
        self.schemas = {t: table_schema(t, config.chat_format) for t in TABLES}
        for table in TABLES:
            (self.out_dir / table).mkdir(parents=True, exist_ok=True)
        self.buffers: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}
        self.row_sizes: dict[str, list[int]] = {t: [] for t in TABLES}  # estimated bytes, one per buffered row
        self.buffer_bytes: dict[str, int] = {t: 0 for t in TABLES}  # their running sum
        self.pending_completed: list[str] = []
        self.pending_skipped: dict[str, str] = {}
        self.pending_rejected: dict[str, str] = {}
        self.pending_failed: dict[str, str] = {}
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
        self.stats_provider: Any = None  # callable returning the stats dict to record

    # -- adding -----------------------------------------------------------------------

    def add_problem(self, problem_id: str, rows: ProblemRows, *, skipped: str | None = None) -> None:
        """Buffer all rows of one finished problem; it counts as done once flushed."""
        for table, table_rows in rows.by_table().items():
            if table_rows:
                self.buffers[table].extend(table_rows)
                sizes = [_row_bytes(r) for r in table_rows]
                self.row_sizes[table].extend(sizes)
                self.buffer_bytes[table] += sum(sizes)
        self.pending_completed.append(problem_id)
        self.pending_failed.pop(problem_id, None)
        if skipped:
            self.pending_skipped[problem_id] = skipped
        self._maybe_flush()

    def add_rejected(self, problem_id: str, stage: str, reason: str) -> None:
        """A bad input row: an ``errors/`` row, and never retried (the input must change)."""
        self.buffers["errors"].append(error_row(problem_id, stage, reason))
        self.row_sizes["errors"].append(len(reason) + len(problem_id))
        self.pending_rejected[problem_id] = reason
        self._maybe_flush()

    def add_failed(self, problem_id: str, reason: str) -> None:
        """A problem the policy failed on: recorded in the manifest, retried by the next run."""
        self.pending_failed[problem_id] = reason
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if self._over_limits() or time.monotonic() - self.last_flush >= self.flush_interval_s:
            self.flush()

    def _over_limits(self) -> bool:
        return any(
            len(self.buffers[t]) >= self.rows_per_shard or self.buffer_bytes[t] >= self.bytes_per_shard
            for t in TABLES
        )

    # -- flushing ---------------------------------------------------------------------

    def flush(self, status: str = "running") -> None:
        """Write buffered rows as complete shards, then the manifest that lists them."""
        written = []
        for table in TABLES:
            rows, sizes = self.buffers[table], self.row_sizes[table]
            while rows:
                n = self._chunk_length(sizes)
                written.append({**self._write_shard(table, rows[:n]), "flush": self.next_flush})
                rows, sizes = rows[n:], sizes[n:]
            self.buffers[table] = []
            self.row_sizes[table] = []
            self.buffer_bytes[table] = 0
        _fault("after_shard_rename")
        m = self.manifest
        if written or self.pending_completed or self.pending_rejected:
            m.flushes[str(self.next_flush)] = {
                "completed": list(self.pending_completed),
                "rejected": list(self.pending_rejected),
            }
            self.next_flush += 1
        m.shards.extend(written)
        m.completed.extend(self.pending_completed)
        m.skipped.update(self.pending_skipped)
        m.rejected.update(self.pending_rejected)
        for problem_id in self.pending_completed:
            m.failed.pop(problem_id, None)  # an earlier run's failure, now done
        m.failed.update(self.pending_failed)
        m.status = status
        if self.stats_provider is not None:
            m.stats = self.stats_provider()
        write_manifest(self.out_dir, m, self.slice.manifest_name)
        self.pending_completed, self.pending_skipped = [], {}
        self.pending_rejected, self.pending_failed = {}, {}
        self.last_flush = time.monotonic()

    def _chunk_length(self, sizes: list[int]) -> int:
        """How many of the buffered rows make the next shard (by rows and by bytes)."""
        total = 0
        for i, size in enumerate(sizes):
            total += size
            if i + 1 >= self.rows_per_shard or total >= self.bytes_per_shard:
                return i + 1
        return len(sizes)

    def _write_shard(self, table: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        seq = self.next_seq[table]
        self.next_seq[table] = seq + 1
        name = f"part-{self.slice.tag}{seq:05d}.parquet"
        directory = self.out_dir / table
        final, tmp = directory / name, directory / f".{name}.tmp"
        arrow = pa.Table.from_pylist(rows, schema=self.schemas[table])
        pq.write_table(arrow, tmp, compression="zstd")
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        _fsync_dir(directory)
        return {
            "table": table,
            "file": f"{table}/{name}",
            "rows": len(rows),
            "bytes": final.stat().st_size,
            "sha256": sha256_file(final),
        }

    def close(self) -> None:
        self.flush(status="finished")


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
            is_tmp = path.name.startswith(".") and path.name.endswith(".tmp") and pattern.fullmatch(path.name[1:-4])
            if (is_ours and rel not in listed) or is_tmp:
                path.unlink()
                removed.append(rel)
    return removed


# -- verification -----------------------------------------------------------------------

#: ``manifest.json`` (unsharded) or ``manifest-IIIII-of-NNNNN.json``; group 1 is N.
MANIFEST_NAME = re.compile(r"manifest(?:-\d{5}-of-(\d{5}))?\.json")


@dataclass(frozen=True)
class Damage:
    """One thing wrong with a run directory: a shard (``file``) or a manifest as a whole."""

    manifest: str  # the slice's manifest file name
    file: str | None  # the shard, relative to the run directory; None: the manifest itself
    problem: str

    def __str__(self) -> str:
        return f"{self.file or self.manifest}: {self.problem}"


def verify_shard(out_dir: Path, shard: dict[str, Any]) -> str | None:
    """What is wrong with one listed shard (missing, altered, wrong row count), or None.

    Checks what the manifest recorded: size, sha256 (reads the whole file), and the row
    count in the Parquet footer.
    """
    path = out_dir / shard["file"]
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    if "bytes" in shard and size != shard["bytes"]:
        return f"{size} bytes, the manifest says {shard['bytes']}"
    if "sha256" in shard and sha256_file(path) != shard["sha256"]:
        return "content changed (sha256 differs from the manifest)"
    try:
        rows = pq.read_metadata(path).num_rows
    except Exception as exc:  # pyarrow raises several types for a broken file
        return f"not a readable Parquet file ({type(exc).__name__})"
    if rows != shard["rows"]:
        return f"{rows} rows, the manifest says {shard['rows']}"
    return None


def verify_manifest(out_dir: Path, name: str, manifest: Manifest) -> list[Damage]:
    """Every listed shard of one slice checked against the manifest."""
    return [
        Damage(name, shard["file"], why)
        for shard in manifest.shards
        if (why := verify_shard(out_dir, shard)) is not None
    ]


def verify_run(out_dir: str | Path) -> list[Damage]:
    """Everything wrong with a run directory: unreadable manifests, slices of different
    layouts or sharing problems (their union would duplicate rows), and shards missing,
    altered or of the wrong row count. Empty: the directory reads as the manifests say."""
    out = Path(out_dir)
    damage: list[Damage] = []
    loaded: dict[str, Manifest] = {}
    for path in sorted(out.glob("manifest*.json")):
        if not MANIFEST_NAME.fullmatch(path.name):
            continue
        try:
            loaded[path.name] = load_manifest(path)
        except ValueError as exc:
            damage.append(Damage(path.name, None, f"unreadable ({exc})"))
    counts = {name: int(MANIFEST_NAME.fullmatch(name).group(1) or 1) for name in loaded}  # type: ignore[union-attr]
    if len(set(counts.values())) > 1:
        for name, count in counts.items():
            damage.append(Damage(name, None, f"one of {count} slices, beside slices of another layout "
                                             f"({', '.join(sorted(set(map(str, counts.values()))))} ways)"))
    seen: dict[str, str] = {}
    for name, manifest in loaded.items():
        twice = [pid for pid in manifest.completed if seen.setdefault(pid, name) != name]
        if twice:
            damage.append(Damage(name, None, f"{len(twice)} problems also completed in {seen[twice[0]]} "
                                             f"(e.g. {twice[0]!r}): their rows appear twice"))
        damage.extend(verify_manifest(out, name, manifest))
    damage.extend(_unlisted_shards(out, loaded))
    return damage


def missing_slices(out_dir: str | Path) -> list[Slice]:
    """The slices (``--shard i/N``) of a sliced directory that never ran: no manifest. Not
    damage (the slices that ran read as their manifests say), but not the whole input."""
    counts = {int(m.group(1)) for p in Path(out_dir).glob("manifest-*-of-*.json")
              if (m := MANIFEST_NAME.fullmatch(p.name)) and m.group(1)}
    slices = [Slice(i, count) for count in sorted(counts) for i in range(count)]
    return [s for s in slices if not (Path(out_dir) / s.manifest_name).exists()]


#: ``Damage.manifest`` of a shard that no manifest lists.
UNLISTED = "(no manifest)"
#: The shard files prmtree writes, of any slice layout.
SHARD_NAME = re.compile(r"part-(?:s\d{5}of\d{5}-)?\d{5,}\.parquet")


def _unlisted_shards(out: Path, loaded: dict[str, Manifest]) -> list[Damage]:
    """Shard files no manifest lists: left by a crash between a shard's rename and its
    manifest update (the slice's next run deletes them), or copied in. Readers that glob
    ``steps/*.parquet`` would read their rows as well, so they count as damage."""
    listed = {shard["file"] for manifest in loaded.values() for shard in manifest.shards}
    found = []
    for table in TABLES:
        directory = out / table
        if directory.is_dir():
            found += [f"{table}/{p.name}" for p in sorted(directory.iterdir())
                      if SHARD_NAME.fullmatch(p.name) and f"{table}/{p.name}" not in listed]
    return [Damage(UNLISTED, rel, "listed in no manifest: the next run of its slice deletes it; "
                             "until then, readers of the table's *.parquet read it too")
            for rel in found]


def read_table(out_dir: str | Path, table: str) -> pa.Table:
    """All shards of ``table`` listed by the manifests under ``out_dir``, as one table.

    Only listed shards are read, so a directory with a crashed run's leftovers still
    reads as exactly its completed problems. Without a manifest, every shard is read.
    """
    out_dir = Path(out_dir)
    found = manifests(out_dir)
    if found:
        files = [out_dir / s["file"] for m in found for s in m["shards"] if s["table"] == table]
    else:
        files = sorted((out_dir / table).glob("part-*.parquet"))
    if not files:
        return table_schema(table).empty_table()
    tables = [pq.read_table(f) for f in sorted(files)]
    if len({t.schema.field("prompt").type if "prompt" in t.schema.names else None for t in tables}) > 1:
        raise ValueError(f"{out_dir}/{table} mixes chat and plain prompts")
    return pa.concat_tables(tables)
