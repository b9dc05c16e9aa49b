"""``stepwise`` (alias ``trl``): one Parquet file with TRL's former stepwise-supervision columns.

``prompt``, ``images``, ``completions``, ``labels``, images embedded: for your own training
loop, or a TRL release from before huggingface/trl#7133 (September 2026), which removed the
PRM trainer and this dataset type. No current TRL trainer reads it.

It has no ``flagged`` column, so like the trainer formats it leaves out the paths a
``consensus`` run kept although MC and the judge disagreed, unless ``keep_flagged``; and
like every export it cuts paths at their first undecided label (``labels`` is a list of bool).
An export of no row is refused (``NothingToExport``) unless ``allow_empty``; then the file
has the columns and no row group, which pyarrow reads as 0 rows.
"""

from __future__ import annotations

from pathlib import Path

from prmtree.engine.output import read_table
from prmtree.engine.registry import EXPORT_FORMATS
from prmtree.export.base import ExportFormat, ExportOptions, atomic_open, write_parquet
from prmtree.export.images import embed_images_column, with_hf_features
from prmtree.export.rows import cut_table, without_flagged


@EXPORT_FORMATS.register("stepwise")
class Stepwise(ExportFormat):
    name = "stepwise"
    description = "Parquet with TRL's former stepwise-supervision columns, for your own training loop"
    aliases = {"trl": "alias of stepwise (TRL removed its PRM trainer in September 2026)"}

    def write(self, out: Path, target: Path, options: ExportOptions) -> int:
        steps = read_table(out, "steps")
        if not options.keep_flagged:  # before the cut: a flagged path must not stand for an unflagged one cut alike
            steps = without_flagged(steps)
        steps = cut_table(steps)
        self.check_records(out, options, steps.num_rows, skips_flagged=not options.keep_flagged)
        columns = ["problem_id", "prompt", "images", "completions", "labels"]
        table = embed_images_column(out, steps.select(columns)).drop_columns(["problem_id"])
        table = table.replace_schema_metadata(None)
        table = table.cast(with_hf_features(table.schema))
        with atomic_open(target, "wb") as handle:
            write_parquet(table, handle)
        return table.num_rows
