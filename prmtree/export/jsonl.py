"""JSONL exports: one record per steps row, images in ``images/`` beside the file.

:class:`JsonlFormat` is what the trainer formats share (a subclass says how one row
becomes a record); ``jsonl`` itself is the steps table as it is.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from prmtree.engine.registry import EXPORT_FORMATS
from prmtree.export.base import ExportFormat, ExportOptions, atomic_open
from prmtree.export.images import ImageFolder
from prmtree.export.rows import by_problem, cut_row, iter_rows, unique_rows

#: Turns a steps row and its images' relative paths into a record, or None to leave the row out.
Builder = Callable[[dict[str, Any], list[str]], dict[str, Any] | None]


class JsonlFormat(ExportFormat):
    """A JSONL format: :meth:`builder` makes the function that turns one row into a record."""

    with_images: ClassVar[bool] = True  # write the images beside the file and reference them
    skips_flagged: ClassVar[bool] = True  # leave out paths MC and the judge disagreed on, unless keep_flagged

    @abc.abstractmethod
    def builder(self, options: ExportOptions) -> Builder:
        """The function that turns one steps row (and its image paths) into a record, or None."""

    def write(self, out: Path, target: Path, options: ExportOptions) -> int:
        skip_flagged = self.skips_flagged and not options.keep_flagged
        return write_jsonl(out, target, self.builder(options), with_images=self.with_images, skip_flagged=skip_flagged,
                           check=lambda n: self.check_records(out, options, n, skips_flagged=skip_flagged))


def write_jsonl(out: Path, target: Path, build: Builder, with_images: bool, skip_flagged: bool = False,
                check: Callable[[int], None] | None = None) -> int:
    """One line per steps row that ``build`` makes a record of; returns the number of lines.
    ``check`` gets the number before the file is put in place: what it raises leaves the target."""
    folder = ImageFolder(out, target.parent)
    n = 0
    seen: set[int] = set()  # paths cut to the same decided steps make one record
    with atomic_open(target) as handle:
        for group in by_problem(iter_rows(out)):
            for row in unique_rows([r for r in group if not (skip_flagged and r.get("flagged"))], seen):
                images = folder.paths(row.get("images") or [], row["problem_id"]) if with_images else []
                record = build(row, images)
                if record is None:
                    continue
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                n += 1
        if check is not None:
            check(n)
    return n


@EXPORT_FORMATS.register("jsonl")
class Jsonl(JsonlFormat):
    """The steps table as JSONL, every column but image bytes, images as relative paths;
    paths cut at their first undecided label, as every export does."""

    name = "jsonl"
    description = "the steps table as JSONL, images as relative paths"
    values_column = True
    skips_flagged = False  # the flagged column says which rows they are

    def builder(self, options: ExportOptions) -> Builder:
        return _plain


def _plain(row: dict[str, Any], images: list[str]) -> dict[str, Any] | None:
    cut = cut_row(row)
    if cut is None:
        return None
    record = {k: v for k, v in cut.items() if k != "images" and not isinstance(v, (bytes, bytearray))}
    record["images"] = images
    return record
