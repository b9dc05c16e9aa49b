"""The run's images as exports carry them: files beside a JSONL export, or bytes in Parquet.

Images in JSONL formats are written once each to an ``images/`` folder beside the file,
named by a hash of their bytes, and referenced by relative path. Parquet exports embed the
bytes and keep only a file name as path, with the ``huggingface`` features metadata that
makes ``datasets`` decode them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from prmtree.engine.output import resolve_image
from prmtree.engine.tables import IMAGE_STRUCT, hf_feature
from prmtree.export.base import ExportError, atomic_open

_MAGIC = ((b"\x89PNG", ".png"), (b"\xff\xd8", ".jpg"), (b"GIF8", ".gif"), (b"BM", ".bmp"))


def image_suffix(path: str | None, data: bytes) -> str:
    suffix = Path(path).suffix.lower() if path else ""
    if suffix and len(suffix) <= 6 and suffix[1:].isalnum():
        return suffix
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return next((ext for magic, ext in _MAGIC if data.startswith(magic)), ".png")


def image_bytes(out: Path, image: dict[str, Any], problem_id: str) -> bytes:
    """An image struct's bytes: embedded, or read from its path (relative to the run; an older
    run's absolute path still works, also after the run directory moved)."""
    if image.get("bytes") is not None:
        return image["bytes"]
    path = image.get("path")
    if not path:
        raise ExportError(f"an image of problem {problem_id!r} has neither bytes nor a path")
    file = resolve_image(out, path) or (Path(path) if Path(path).is_absolute() else out / path)
    try:
        return file.read_bytes()
    except OSError as exc:
        raise ExportError(f"image {path!r} of problem {problem_id!r} cannot be read: {exc.strerror or exc}") from None


class ImageFolder:
    """Writes images once each to ``<folder>/images/`` named by content hash; returns relative paths."""

    def __init__(self, out: Path, folder: Path) -> None:
        self.out = out
        self.dir = folder / "images"
        self.written: set[str] = set()

    def paths(self, images: list[dict[str, Any]], problem_id: str) -> list[str]:
        rels = []
        for image in images or []:
            data = image_bytes(self.out, image, problem_id)
            name = hashlib.sha256(data).hexdigest()[:32] + image_suffix(image.get("path"), data)
            if name not in self.written:
                self.dir.mkdir(parents=True, exist_ok=True)
                file = self.dir / name
                if not file.exists():
                    with atomic_open(file, "wb") as handle:
                        handle.write(data)
                self.written.add(name)
            rels.append(f"images/{name}")
        return rels


def embedded(out: Path, images: list[dict[str, Any]], problem_id: str) -> list[dict[str, Any]]:
    """Image structs with their bytes embedded and only a file name as path (no local directories)."""
    return [
        {"bytes": image_bytes(out, im, problem_id), "path": Path(im["path"]).name if im.get("path") else None}
        for im in images or []
    ]


def embed_images_column(out: Path, table: pa.Table) -> pa.Table:
    """``table`` with its ``images`` column's bytes embedded (paths read) and paths cut to file names."""
    if "images" not in table.column_names:
        return table
    ids = table.column("problem_id").to_pylist()
    images = [embedded(out, ims, pid) for ims, pid in zip(table.column("images").to_pylist(), ids)]
    index = table.column_names.index("images")
    return table.set_column(index, pa.field("images", pa.list_(IMAGE_STRUCT)), pa.array(images, pa.list_(IMAGE_STRUCT)))


def with_hf_features(schema: pa.Schema) -> pa.Schema:
    """``schema`` with the ``huggingface`` metadata that makes ``datasets`` decode its images."""
    features = {f.name: hf_feature(f.type) for f in schema}
    return schema.with_metadata({b"huggingface": json.dumps({"info": {"features": features}}).encode()})
