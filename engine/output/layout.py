"""How an output directory is laid out: input slices and the names of their files.

An input slice (``--slice i/N``) is a deterministic subset of the problems; each slice
writes its own manifest and its own shards (Parquet files) into the one directory. This
module owns those names, and :func:`manifest_layout` is the one place that reads a
directory's manifest names back into its slice layout.
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


def slice_count(manifest_name: str) -> int | None:
    """The slice count a manifest file name says (1: unsliced), or None if it names none."""
    m = MANIFEST_NAME.fullmatch(manifest_name)
    return None if m is None else int(m.group(1) or 1)


def manifest_layout(out_dir: str | Path) -> dict[str, int]:
    """The manifests in ``out_dir``, in name order, each with its slice count (1: unsliced)."""
    found = {}
    for path in sorted(Path(out_dir).glob("manifest*.json")):
        count = slice_count(path.name)
        if count is not None:
            found[path.name] = count
    return found
