"""Reading a run's tables back: only what the manifests list, as one Arrow table."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from prmtree.engine.output.layout import scan_manifests
from prmtree.engine.output.manifest import load_manifests
from prmtree.engine.tables import table_schema


#: The columns that order each table's rows when read back (the ids that name a row).
ROW_ORDER = {
    "steps": ("problem_id", "path_id"),
    "nodes": ("problem_id", "node_id"),
    "pairs": ("problem_id", "parent_id", "chosen", "rejected"),
    "errors": ("problem_id", "stage"),
}


def in_row_order(table: pa.Table, name: str) -> pa.Table:
    """``table`` sorted by its ids (``ROW_ORDER``). A run writes each problem's rows when its
    tree finishes, so two runs of one seed hold the same rows in an order that depends on
    timing; read back in this order, what is made from them (an export, a trained PRM, whose
    split and shuffle follow the rows) is the same for the same rows."""
    keys = [(c, "ascending") for c in ROW_ORDER.get(name, ()) if c in table.column_names]
    return table.sort_by(keys) if keys and table.num_rows > 1 else table


def listed_files(out_dir: str | Path, table: str) -> list[str]:
    """The shards of ``table`` the slices' manifests list, each once, in name order.

    Only the manifests the layout names are read (a stray ``manifest-backup.json`` is not),
    and a shard listed twice (in one manifest or in two) is one file: its rows count once.
    """
    return sorted({s["file"] for m in load_manifests(out_dir) for s in m.shards if s["table"] == table})


def read_table(out_dir: str | Path, table: str) -> pa.Table:
    """All shards of ``table`` listed by the manifests under ``out_dir``, as one table, its
    rows in id order (:func:`in_row_order`).

    Only listed shards are read, each once, so a directory with a crashed run's leftovers,
    a stray manifest copy or a shard listed twice still reads as exactly its completed
    problems. Without any manifest (rows written by hand), every shard is read; with only
    stray manifests, ValueError: whatever they list, no run's manifest says it is whole.
    """
    out_dir = Path(out_dir)
    layout, stray = scan_manifests(out_dir)
    if layout:
        files = [out_dir / f for f in listed_files(out_dir, table)]
    elif stray:
        raise ValueError(f"{str(out_dir)!r} holds no prmtree run: {', '.join(stray)} is no slice's manifest "
                         "(a run writes manifest.json or manifest-IIIII-of-NNNNN.json)")
    else:
        files = sorted((out_dir / table).glob("part-*.parquet"))
    if not files:
        return table_schema(table).empty_table()
    tables = [pq.read_table(f) for f in files]
    if len({t.schema.field("prompt").type if "prompt" in t.schema.names else None for t in tables}) > 1:
        raise ValueError(f"{out_dir}/{table} mixes chat and plain prompts")
    return in_row_order(pa.concat_tables(tables), table)
