"""Parquet shards (steps / nodes / pairs / errors) and the run manifest.

Every table has an explicit schema. ``steps`` carries TRL's stepwise-supervision
columns (``prompt``, ``completions``, ``labels``) and an ``images`` column of Hugging
Face Image structs, with the ``huggingface`` features metadata in the schema so that
``datasets.load_dataset("parquet", ...)`` decodes images. A problem's rows are buffered
and written together; a shard is written under a temporary name and renamed when
closed, so every file named ``part-*.parquet`` is complete.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

LAYOUT_VERSION = 1
TABLES = ("steps", "nodes", "pairs", "errors")

_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

SCHEMAS: dict[str, pa.Schema] = {
    "steps": pa.schema(
        [
            ("problem_id", pa.string()),
            ("path_id", pa.string()),
            ("prompt", pa.string()),
            ("images", pa.list_(_IMAGE)),
            ("completions", pa.list_(pa.string())),
            ("labels", pa.list_(pa.bool_())),
            ("values", pa.list_(pa.float64())),
            ("answer", pa.string()),
            ("final_correct", pa.bool_()),
            ("strategy", pa.string()),
            ("policy", pa.string()),
        ]
    ),
    "nodes": pa.schema(
        [
            ("problem_id", pa.string()),
            ("node_id", pa.string()),
            ("parent_id", pa.string()),
            ("depth", pa.int32()),
            ("step", pa.string()),
            ("n_rollouts", pa.int32()),
            ("n_correct", pa.int32()),
            ("value", pa.float64()),
            ("ci_low", pa.float64()),
            ("ci_high", pa.float64()),
            ("label", pa.bool_()),
            ("terminal", pa.bool_()),
        ]
    ),
    "pairs": pa.schema(
        [
            ("problem_id", pa.string()),
            ("parent_id", pa.string()),
            ("prompt", pa.string()),
            ("prefix", pa.list_(pa.string())),
            ("chosen", pa.string()),
            ("rejected", pa.string()),
            ("chosen_value", pa.float64()),
            ("rejected_value", pa.float64()),
        ]
    ),
    "errors": pa.schema([("problem_id", pa.string()), ("stage", pa.string()), ("reason", pa.string())]),
}


def _hf_features(table: str) -> dict[str, Any]:
    """The ``datasets`` feature description of a table (for the ``huggingface`` metadata)."""
    value = {"string": "string", "bool": "bool", "double": "float64", "int32": "int32"}

    def feature(typ: pa.DataType) -> dict[str, Any]:
        if typ == _IMAGE:
            return {"_type": "Image"}
        if pa.types.is_list(typ):
            return {"_type": "List", "feature": feature(typ.value_type)}
        return {"_type": "Value", "dtype": value[str(typ)]}

    return {f.name: feature(f.type) for f in SCHEMAS[table]}


def schema_with_metadata(table: str) -> pa.Schema:
    meta = {"info": {"features": _hf_features(table)}}
    return SCHEMAS[table].with_metadata({b"huggingface": json.dumps(meta).encode()})


@dataclass
class ShardInfo:
    table: str
    file: str
    rows: int


class TableWriter:
    """Buffers rows of one table and writes them as rotating, atomically renamed shards."""

    def __init__(self, out_dir: Path, table: str, rows_per_shard: int, prefix: str = "part") -> None:
        self.dir = out_dir / table
        self.dir.mkdir(parents=True, exist_ok=True)
        self.table = table
        self.schema = schema_with_metadata(table)
        self.rows_per_shard = rows_per_shard
        self.prefix = prefix
        self.buffer: list[dict[str, Any]] = []
        self.shards: list[ShardInfo] = []
        self.rows_written = 0

    def add(self, rows: list[dict[str, Any]]) -> None:
        self.buffer.extend(rows)
        if len(self.buffer) >= self.rows_per_shard:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one or more complete shards."""
        while self.buffer:
            chunk = self.buffer[: self.rows_per_shard]
            del self.buffer[: self.rows_per_shard]
            name = f"{self.prefix}-{len(self.shards):05d}.parquet"
            final = self.dir / name
            tmp = self.dir / f".{name}.tmp"
            table = pa.Table.from_pylist(chunk, schema=self.schema)
            pq.write_table(table, tmp, compression="zstd")
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, final)
            self.shards.append(ShardInfo(self.table, f"{self.table}/{name}", len(chunk)))
            self.rows_written += len(chunk)


@dataclass
class Manifest:
    """What a run wrote and how: read by ``inspect`` and by resume."""

    config: dict[str, Any]
    config_hash: str
    versions: dict[str, str]
    layout_version: int = LAYOUT_VERSION
    shards: list[dict[str, Any]] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True)


def write_manifest(out_dir: Path, manifest: Manifest) -> None:
    """Replace ``manifest.json`` atomically."""
    tmp = out_dir / ".manifest.json.tmp"
    tmp.write_text(manifest.to_json(), encoding="utf-8")
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, out_dir / "manifest.json")


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(out_dir) / "manifest.json").read_text(encoding="utf-8"))


class DatasetWriter:
    """All four tables of one run plus its manifest."""

    def __init__(self, out_dir: str | Path, rows_per_shard: int = 50_000) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.tables = {t: TableWriter(self.out_dir, t, rows_per_shard) for t in TABLES}

    def add(self, table: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.tables[table].add(rows)

    def flush(self) -> None:
        for writer in self.tables.values():
            writer.flush()

    def shard_list(self) -> list[dict[str, Any]]:
        return [s.__dict__ for w in self.tables.values() for s in w.shards]

    def rows_written(self) -> dict[str, int]:
        return {t: w.rows_written for t, w in self.tables.items()}

    def close(self, manifest: Manifest) -> None:
        self.flush()
        manifest.shards = self.shard_list()
        write_manifest(self.out_dir, manifest)


def read_table(out_dir: str | Path, table: str) -> pa.Table:
    """All shards of ``table`` under ``out_dir`` as one table (empty with its schema if none)."""
    files = sorted((Path(out_dir) / table).glob("*.parquet"))
    if not files:
        return SCHEMAS[table].empty_table()
    return pa.concat_tables([pq.read_table(f) for f in files])
