"""Checking a run directory against its manifests, without changing anything.

A listed shard must exist with the recorded size, sha256 and row count; the slices must
share one layout and no problem; and no shard may lie there unlisted (loaders globbing
``steps/*.parquet`` would read it). ``prmtree verify`` prints what this finds; resume
uses :func:`verify_shard` to repair.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from prmtree.engine.output.atomic import sha256_file
from prmtree.engine.output.layout import (
    SHARD_NAME,
    UNSLICED_MANIFEST,
    Slice,
    manifest_layout,
)
from prmtree.engine.output.manifest import Manifest, load_manifest
from prmtree.engine.tables import TABLES

#: ``Damage.manifest`` of a shard that no manifest lists.
UNLISTED = "(no manifest)"


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
    layout = manifest_layout(out)
    for name in layout:
        try:
            loaded[name] = load_manifest(out / name)
        except ValueError as exc:
            damage.append(Damage(name, None, f"unreadable ({exc})"))
    counts = {name: layout[name] for name in loaded}
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
    """The slices (``--slice i/N``) of a sliced directory that never ran: no manifest. Not
    damage (the slices that ran read as their manifests say), but not the whole input."""
    counts = {count for name, count in manifest_layout(out_dir).items() if name != UNSLICED_MANIFEST}
    slices = [Slice(i, count) for count in sorted(counts) for i in range(count)]
    return [s for s in slices if not (Path(out_dir) / s.manifest_name).exists()]


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
