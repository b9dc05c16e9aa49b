"""Reading a run's tables back: only what the manifests list, as one Arrow table."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from prmtree.engine.output.manifest import load_manifests
from prmtree.engine.tables import table_schema


def read_table(out_dir: str | Path, table: str) -> pa.Table:
    """All shards of ``table`` listed by the manifests under ``out_dir``, as one table.

    Only listed shards are read, so a directory with a crashed run's leftovers still
    reads as exactly its completed problems. Without a manifest, every shard is read.
    """
    out_dir = Path(out_dir)
    found = load_manifests(out_dir)
    if found:
        files = [out_dir / s["file"] for m in found for s in m.shards if s["table"] == table]
    else:
        files = sorted((out_dir / table).glob("part-*.parquet"))
    if not files:
        return table_schema(table).empty_table()
    tables = [pq.read_table(f) for f in sorted(files)]
    if len({t.schema.field("prompt").type if "prompt" in t.schema.names else None for t in tables}) > 1:
        raise ValueError(f"{out_dir}/{table} mixes chat and plain prompts")
    return pa.concat_tables(tables)
