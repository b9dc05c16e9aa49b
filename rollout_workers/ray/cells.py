"""A worker reading images embedded in the input where they lie: a cell of a Parquet file
or of a Hugging Face dataset's Arrow file (:class:`~prmtree.engine.records.ImageCell`).

Images of neighbouring rows are asked for one after another (the driver reads the input in
order), so a Parquet read takes the cell's whole row group, of the image column only, and
:class:`CellReader` keeps the last few groups read: a row group of HF-written Parquet
(100 image rows) costs one read, not one per image. An Arrow IPC stream file is
memory-mapped, not read: a cell costs the pages its bytes lie on. A file is known by its
inode, size and modification time, so a file replaced or rewritten is read afresh (and its
bytes then fail the caller's sha256 check).
"""

from __future__ import annotations

import os
import stat
import threading
from collections import OrderedDict
from typing import Any

from prmtree.engine.problem import arrow_table
from prmtree.engine.records import ImageCell


class CellReadError(Exception):
    """The cell could not be read: file missing or unreadable, no such row or column, or the
    cell holds no image bytes."""


class CellReader:
    """One worker's cell reads: the last ``groups_kept`` Parquet row groups read (one column
    each) and the last ``files_kept`` Arrow files mapped. Thread-safe (batches read off the
    worker's event loop, and they may overlap)."""

    def __init__(self, groups_kept: int = 2, files_kept: int = 4) -> None:
        self.groups_kept = groups_kept
        self.files_kept = files_kept
        self._groups: OrderedDict[tuple[Any, ...], Any] = OrderedDict()  # (file identity, group, column) -> column
        self._mapped: OrderedDict[tuple[Any, ...], Any] = OrderedDict()  # file identity -> table on the mapping
        self._lock = threading.Lock()
        self.groups_read = 0  # Parquet row groups read (a column of each)
        self.files_mapped = 0  # Arrow files memory-mapped

    def read(self, cell: ImageCell) -> bytes:
        """The image bytes in ``cell`` (unchecked: the caller compares size and sha256)."""
        identity = _identity(cell.file)
        if cell.kind == "parquet":
            values, start = self._parquet(cell, identity)
        else:
            with self._lock:
                values, start = self._arrow(cell, identity)
        offset = cell.row - start
        if not 0 <= offset < len(values):
            raise CellReadError(f"{cell.file}: no row {cell.row} (the file changed)")
        value = values[offset].as_py()
        if cell.index is not None:
            if not isinstance(value, list) or not 0 <= cell.index < len(value):
                raise CellReadError(f"{cell.file}: row {cell.row} has no image {cell.index} in {cell.column!r}")
            value = value[cell.index]
        data = value.get("bytes") if isinstance(value, dict) else None
        if not isinstance(data, bytes) or not data:
            raise CellReadError(f"{cell.file}: row {cell.row} holds no image bytes in {cell.column!r}")
        return data

    def _parquet(self, cell: ImageCell, identity: tuple[Any, ...]) -> tuple[Any, int]:
        """(the column of the cell's row group, the group's first row), read or kept."""
        key = (identity, cell.group, cell.column)
        with self._lock:  # held for the lookup only: a slow group read never holds up a kept one
            kept = self._groups.get(key)
            if kept is not None:
                self._groups.move_to_end(key)
                return kept
        import pyarrow.parquet as pq

        try:
            with pq.ParquetFile(cell.file) as handle:
                meta = handle.metadata
                group = cell.group if cell.group is not None else -1
                if not 0 <= group < meta.num_row_groups:
                    raise CellReadError(f"{cell.file}: no row group {cell.group} (the file changed)")
                start = sum(meta.row_group(g).num_rows for g in range(group))
                column = handle.read_row_group(group, columns=[cell.column]).column(0)
        except CellReadError:
            raise
        except Exception as exc:  # OSError, ArrowInvalid (not Parquet, no such column), ...
            raise CellReadError(f"{cell.file}: {exc}") from None
        with self._lock:  # two batches may have read the same group at once: either copy serves
            self.groups_read += 1
            kept = self._groups[key] = (column, start)
            while len(self._groups) > self.groups_kept:
                self._groups.popitem(last=False)
        return kept

    def _arrow(self, cell: ImageCell, identity: tuple[Any, ...]) -> tuple[Any, int]:
        """(the cell's column of the whole memory-mapped file, 0)."""
        table = self._mapped.get(identity)
        if table is None:
            import pyarrow as pa

            try:
                with pa.memory_map(cell.file) as source:  # the table's buffers keep the mapping
                    table = arrow_table(source)
            except Exception as exc:
                raise CellReadError(f"{cell.file}: {exc}") from None
            self.files_mapped += 1
            self._mapped[identity] = table
            while len(self._mapped) > self.files_kept:
                self._mapped.popitem(last=False)
        else:
            self._mapped.move_to_end(identity)
        if cell.column not in table.column_names:
            raise CellReadError(f"{cell.file}: no column {cell.column!r}")
        return table.column(cell.column), 0

    def stats(self) -> dict[str, Any]:
        return {"cell_groups_read": self.groups_read, "cell_files_mapped": self.files_mapped}


def _identity(path: str) -> tuple[Any, ...]:
    """A file as the reader knows it: a rewritten or replaced file is another."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise CellReadError(f"{path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):  # a FIFO would hang the reader
        raise CellReadError(f"{path}: not a regular file")
    return (path, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
