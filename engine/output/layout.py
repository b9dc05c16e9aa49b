"""How an output directory is laid out: input slices and the names of their files.

An input slice (``--slice i/N``) is a deterministic subset of the problems; each slice
writes its own manifest and its own shards (Parquet files) into the one directory. This
module owns those names, and :func:`scan_manifests` is the one place that reads a
directory's manifest names back into its slice layout (and sets aside stray copies).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

#: The manifest of an unsliced run (no --slice).
UNSLICED_MANIFEST = "manifest.json"
#: ``manifest.json`` (unsliced) or ``manifest-IIIII-of-NNNNN.json``; group 1 is N.
MANIFEST_NAME = re.compile(r"manifest(?:-\d{5}-of-(\d{5}))?\.json")
#: The most slices a layout can name: manifest and shard names hold the index and the
#: count in 5 digits.
MAX_SLICES = 99_999
#: The shard files prmtree writes, of any slice layout.
SHARD_NAME = re.compile(r"part-(?:s\d{5}of\d{5}-)?\d{5,}\.parquet")


@dataclass(frozen=True)
class Slice:
    """Slice ``index`` of ``count`` of the input (``--slice i/N``): a deterministic subset."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"slice: expected i/N with 0 <= i < N, got {self.index}/{self.count}")
        if self.count > MAX_SLICES:
            raise ValueError(f"slice: expected at most {MAX_SLICES} slices (manifest and shard names hold "
                             f"5 digits), got {self.index}/{self.count}")

    @classmethod
    def parse(cls, text: str) -> Slice:
        m = re.fullmatch(r"\s*([+-]?\d+)\s*/\s*([+-]?\d+)\s*", text)
        if not m:
            raise ValueError(f"slice: expected i/N with 0 <= i < N (for example 0/4), got {text!r}")
        return cls(int(m.group(1)), int(m.group(2)))

    def owns(self, problem_id: str) -> bool:
        if self.count == 1:
            return True
        digest = hashlib.blake2b(problem_id.encode("utf-8"), digest_size=8).digest()
        return int.from_bytes(digest, "little") % self.count == self.index

    @property
    def tag(self) -> str:
        """What this slice's shard names carry, so slices never overwrite each other."""
        return "" if self.count == 1 else f"s{self.index:05d}of{self.count:05d}-"

    @property
    def manifest_name(self) -> str:
        return UNSLICED_MANIFEST if self.count == 1 else f"manifest-{self.index:05d}-of-{self.count:05d}.json"

    @property
    def lock_name(self) -> str:
        """The file a run writing this slice holds locked (``engine/lock.py``)."""
        return f".{self.manifest_name}.lock"

    @property
    def described(self) -> str:
        return "unsliced" if self.count == 1 else f"--slice {self.index}/{self.count}"

    def shard_name(self, seq: int) -> str:
        """The name of this slice's ``seq``-th shard of a table."""
        return f"part-{self.tag}{seq:05d}.parquet"

    def shard_pattern(self) -> re.Pattern[str]:
        """This slice's shard names; group 1 is the sequence number."""
        return re.compile(rf"part-{re.escape(self.tag)}(\d{{5,}})\.parquet")

    def layout_pattern(self) -> re.Pattern[str]:
        """The shard names of every slice of this slice's layout (its count)."""
        return re.compile(r"part-\d{5,}\.parquet" if self.count == 1 else
                          rf"part-s\d{{5}}of{self.count:05d}-\d{{5,}}\.parquet")


def shard_slice_count(name: str) -> int:
    """How many slices the layout that wrote a shard called ``name`` has (1: unsliced)."""
    return shard_slice(name).count


def shard_slice(name: str) -> Slice:
    """The slice whose run wrote a shard called ``name`` (``part-s00001of00002-...``; the
    whole input for an unsliced name)."""
    m = re.match(r"part-s(\d{5})of(\d{5})-", name)
    return Slice(int(m.group(1)), int(m.group(2))) if m else Slice()


def manifest_slice(manifest_name: str) -> Slice | None:
    """The slice whose manifest this file name is, or None if the layout names no slice so.

    Only the exact name a slice writes counts: ``manifest-00000-of-00001.json`` (a one-slice
    layout is unsliced: ``manifest.json``) and ``manifest-00003-of-00002.json`` match the
    pattern but are no slice's, so a copy under such a name is stray, never read as rows.
    """
    if manifest_name == UNSLICED_MANIFEST:
        return Slice()
    m = re.fullmatch(r"manifest-(\d{5})-of-(\d{5})\.json", manifest_name)
    if m is None or not 0 <= int(m.group(1)) < int(m.group(2)) or int(m.group(2)) < 2:
        return None
    return Slice(int(m.group(1)), int(m.group(2)))


def slice_count(manifest_name: str) -> int | None:
    """The slice count a manifest file name says (1: unsliced), or None if it names none."""
    found = manifest_slice(manifest_name)
    return None if found is None else found.count


def scan_manifests(out_dir: str | Path) -> tuple[dict[str, int], list[str]]:
    """The one scanner of a directory's ``manifest*.json`` files: the slices' manifests (in
    name order, each with its slice count, 1: unsliced) and the stray ones (a copy such as
    ``manifest-backup.json``: named by no slice, so no reader reads it; ``verify`` reports it)."""
    found: dict[str, int] = {}
    stray: list[str] = []
    for path in sorted(Path(out_dir).glob("manifest*.json")):
        count = slice_count(path.name)
        if count is None:
            stray.append(path.name)
        else:
            found[path.name] = count
    return found, stray


def manifest_layout(out_dir: str | Path) -> dict[str, int]:
    """The slices' manifests in ``out_dir``, in name order, each with its slice count (1: unsliced)."""
    return scan_manifests(out_dir)[0]


def stray_manifests(out_dir: str | Path) -> list[str]:
    """``manifest*.json`` files in ``out_dir`` that are no slice's manifest by their name."""
    return scan_manifests(out_dir)[1]
