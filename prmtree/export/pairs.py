"""``pairs``: JSONL of step-level preference pairs, as DPO-style trainers read them.

``prompt`` is the question with the shared prefix, then ``chosen`` and ``rejected`` (the
steps with the higher and the lower MC value) and ``images``. A run with no pair is
refused (``NothingToExport``) unless ``allow_empty``, before any image is written; only the
images of problems with a pair are written to ``images/``.
"""

from __future__ import annotations

import json
from pathlib import Path

from prmtree.engine.output import read_table
from prmtree.engine.registry import EXPORT_FORMATS
from prmtree.export.base import ExportFormat, ExportOptions, atomic_open
from prmtree.export.images import ImageFolder
from prmtree.export.rows import iter_rows


@EXPORT_FORMATS.register("pairs")
class Pairs(ExportFormat):
    name = "pairs"
    description = "JSONL of step-level preference pairs (prompt, chosen, rejected)"

    def write(self, out: Path, target: Path, options: ExportOptions) -> int:
        pairs = read_table(out, "pairs").select(["problem_id"])
        # before the images are written beside the target: a refusal writes nothing
        self.check_records(out, options, pairs.num_rows, table="pairs")
        # only the images of problems with a pair: a problem that made none has no row here
        with_pairs = set(pairs.column("problem_id").to_pylist())
        folder = ImageFolder(out, target.parent)
        images: dict[str, list[str]] = {}
        for row in read_table(out, "steps").select(["problem_id", "images"]).to_batches(max_chunksize=1024):
            for r in row.to_pylist():
                if r["problem_id"] in with_pairs and r["problem_id"] not in images:
                    images[r["problem_id"]] = folder.paths(r["images"] or [], r["problem_id"])
        n = 0
        with atomic_open(target) as handle:
            for r in iter_rows(out, "pairs"):
                record = {
                    "problem_id": r["problem_id"],
                    "prompt": "\n\n".join([r["prompt"], *r["prefix"]]),
                    "chosen": r["chosen"],
                    "rejected": r["rejected"],
                    "chosen_value": r["chosen_value"],
                    "rejected_value": r["rejected_value"],
                    "images": images.get(r["problem_id"], []),
                }
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                n += 1
        return n
