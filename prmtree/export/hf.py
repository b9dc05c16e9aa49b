"""``hf``: a dataset directory ready for the Hugging Face Hub.

Layout, as ``datasets.load_dataset(DIR)`` and the Hub read it::

    DIR/README.md                               dataset card (see :mod:`prmtree.export.card`)
    DIR/data/train-00000-of-00001.parquet       steps rows (every column, images embedded)
    DIR/data/test-00000-of-00001.parquet        with test_size > 0: held-out problems
    DIR/data/pairs-train-00000-of-00001.parquet step-level preference pairs ("pairs" config)
    DIR/data/pairs-test-00000-of-00001.parquet  with test_size > 0: the held-out problems' pairs

One split of the problems holds for every config: a problem held out of the steps is held
out of the pairs too, so preference training never sees an evaluation problem's steps.

The folder is built beside ``DIR`` (``.DIR.<pid>.tmp``) and renamed into place when whole,
so a reader of ``DIR`` sees the earlier export or this one, never a mix (with
``--overwrite``, a Hub clone's ``.git*`` and other names in ``data/`` move into the new one).
Upload with ``huggingface-cli upload USER/NAME DIR --repo-type dataset``. Exporting needs
neither ``pyyaml`` nor ``datasets``. A run with no steps row to export is refused
(``NothingToExport``) unless ``allow_empty``: then ``train`` has the columns and no row group.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from prmtree.engine.output import read_table
from prmtree.engine.output.atomic import fsync_dir
from prmtree.engine.output.faults import pause_point
from prmtree.engine.registry import EXPORT_FORMATS
from prmtree.export.base import ExportError, ExportFormat, ExportOptions, atomic_open, write_parquet
from prmtree.export.card import dataset_card
from prmtree.export.images import embed_images_column, with_hf_features
from prmtree.export.rows import cut_table

# What may sit in a directory that --overwrite replaces an hf export in (a Hub clone keeps .git*).
HF_DIRECTORY_ENTRIES = frozenset(
    {"README.md", "data", ".git", ".gitattributes", ".gitignore", ".cache", ".huggingface"}
)
OURS = re.compile(r"(train|test|pairs|pairs-train|pairs-test)-\d{5}-of-\d{5}\.parquet")  # pairs-*: earlier exports
ROWS_PER_FILE = 20_000


@EXPORT_FORMATS.register("hf")
class HF(ExportFormat):
    name = "hf"
    description = "a Hugging Face dataset directory (Parquet, images embedded, README dataset card)"
    writes_directory = True
    values_column = True
    options = frozenset({"test_size", "license", "pretty_name"})

    def check_target(self, target: Path, overwrite: bool) -> None:
        """A new or empty directory, or with ``overwrite`` one that holds an earlier export."""
        dest = target.resolve()
        if dest.exists() and not dest.is_dir():
            raise ExportError(f"{str(target)!r} is a file; --format {self.name} writes a directory")
        if not dest.is_dir():
            return
        if any(dest.glob("manifest*.json")):
            raise ExportError(f"{str(target)!r} holds a prmtree run; export somewhere else")
        entries = sorted(p.name for p in dest.iterdir())
        if entries and not overwrite:
            raise ExportError(f"{str(target)!r} exists and is not empty; pass --overwrite to replace the export")
        foreign = [name for name in entries if name not in HF_DIRECTORY_ENTRIES]
        if foreign:
            raise ExportError(
                f"{str(target)!r} holds files an hf export does not write ({', '.join(foreign[:3])}); "
                "choose a new or empty directory"
            )

    def write(self, out: Path, target: Path, options: ExportOptions) -> int:
        """Write the dataset directory; returns the number of steps rows written (all splits)."""
        steps = cut_table(read_table(out, "steps"))  # one rule for every export: cut at the first undecided label
        self.check_records(out, options, steps.num_rows)  # before anything is built: a refusal leaves the target
        steps = embed_images_column(out, steps).replace_schema_metadata(None)
        steps = steps.cast(with_hf_features(steps.schema))
        pairs = read_table(out, "pairs").replace_schema_metadata(None)
        pairs = pairs.cast(with_hf_features(pairs.schema))

        # Written into a folder beside the target, then renamed into place: a reader of the
        # target sees the earlier export or this one, whole, never a mix of the two.
        building = target.parent / f".{target.name}.{os.getpid()}.tmp"
        if building.exists():
            shutil.rmtree(building)
        try:
            (building / "data").mkdir(parents=True)
            written = self._write_into(out, building, steps, pairs, options)
            _publish(building, target)
        finally:
            if building.exists():  # only this export's files: the target's own are moved after the rename
                shutil.rmtree(building)
        return written

    def _write_into(self, out: Path, building: Path, steps: pa.Table, pairs: pa.Table, options: ExportOptions) -> int:
        """The card and the splits' Parquet files, into the folder that becomes the target."""
        data = building / "data"
        steps_ids = steps.column("problem_id").to_pylist()
        test_ids = _held_out(steps_ids, options.test_size, also=pairs.column("problem_id").to_pylist())
        splits = _split(steps, test_ids)
        for split, table in splits.items():
            _write_parquet_files(table, data, split, ROWS_PER_FILE)
        # An empty split is left out (the card lists only the splits written): with every
        # pair's problem on one side, the pairs config has that split alone.
        pair_splits = {split: table for split, table in _split(pairs, test_ids).items() if table.num_rows}
        for split, table in pair_splits.items():
            _write_parquet_files(table, data, f"pairs-{split}", ROWS_PER_FILE)

        pause_point("export_written")
        pretty_name = options.pretty_name or f"prmtree PRM data ({out.resolve().name})"
        card = dataset_card(out, splits, pair_splits, license=options.license, pretty_name=pretty_name)
        with atomic_open(building / "README.md") as handle:
            handle.write(card)
        return steps.num_rows


def problem_hash(problem_id: str) -> bytes:
    """The order problems are held out in (here, and by ``prmtree train`` on data with no test split)."""
    return hashlib.blake2b(problem_id.encode(), digest_size=8).digest()


def _held_out(problem_ids: list[str], test_size: float, also: Iterable[str] = ()) -> set[str]:
    """The problems of the test split, one set for every config: ``test_size`` of the
    steps' problems, the first by a hash of their ids, and as many of the problems only
    ``also`` (the pairs) has, first by the same hash, as bring the pairs' held-out problems
    to ``test_size`` of theirs.

    The steps' share is counted over the steps' problems alone, so the steps split is the
    same whether or not a run has pairs; the pairs' share over all the pairs' problems, so
    a run whose pairs are mostly of problems with no steps row (every path cut at an
    undecided first label) still holds out that share of them, not a share set by its few
    steps problems.
    """
    if test_size <= 0:
        return set()
    steps = sorted(set(problem_ids), key=problem_hash)
    held = set(steps[:_share(len(steps), test_size)])
    pairs = set(also)
    only_pairs = sorted(pairs - set(steps), key=problem_hash)
    wanted = _share(len(pairs), test_size) - len(held & pairs)
    return held | set(only_pairs[:max(0, wanted)])


def _share(n: int, test_size: float) -> int:
    """How many of ``n`` problems are held out: ceil(test_size * n), at least one, and one
    left to train on (none of fewer than 2)."""
    return 0 if n < 2 else min(n - 1, max(1, math.ceil(test_size * n)))


def _split(table: pa.Table, test_ids: set[str]) -> dict[str, pa.Table]:
    """``train`` and, when problems are held out, ``test``: the rows of ``table`` by problem id."""
    if not test_ids:
        return {"train": table}
    is_test = pa.array([pid in test_ids for pid in table.column("problem_id").to_pylist()], pa.bool_())
    return {"train": table.filter(pc.invert(is_test)), "test": table.filter(is_test)}


def _write_parquet_files(table: pa.Table, directory: Path, split: str, rows_per_file: int) -> list[str]:
    files = max(1, math.ceil(table.num_rows / rows_per_file))
    names = []
    for i in range(files):
        chunk = table.slice(i * rows_per_file, rows_per_file)
        name = f"{split}-{i:05d}-of-{files:05d}.parquet"
        with atomic_open(directory / name, "wb") as handle:
            write_parquet(chunk, handle)
        names.append(name)
    return names


def _publish(building: Path, target: Path) -> None:
    """Put the finished export folder ``building`` in place of ``target``.

    A new or empty target is replaced by one rename. An earlier export is renamed aside
    first; what it held that this export does not write (a Hub clone's ``.git``, files in
    ``data/`` under other names) is then moved into the new folder, and the old one removed.
    """
    fsync_dir(building / "data")
    fsync_dir(building)
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        os.replace(building, target)  # rename(2) replaces an empty directory
        fsync_dir(target.parent)
        return
    old = target.parent / f".{target.name}.{os.getpid()}.old"
    if old.exists():
        shutil.rmtree(old)
    os.rename(target, old)
    os.rename(building, target)
    fsync_dir(target.parent)
    for entry in sorted(old.iterdir()):
        if entry.name == "data" and entry.is_dir():
            for path in sorted(entry.iterdir()):
                if not (path.is_file() and OURS.fullmatch(path.name)):
                    os.rename(path, target / "data" / path.name)
        elif entry.name != "README.md":
            os.rename(entry, target / entry.name)
    shutil.rmtree(old)
