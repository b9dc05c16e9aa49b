"""Opening an output directory: a fresh run, a resume, or a refusal.

Resuming is a plain re-run: shards the manifest does not list are discarded, problems
it records as finished (completed, or rejected as bad input) are skipped, everything
else is redone, including problems the policy failed on last time.
A run whose row-defining config differs is refused unless ``force``, which starts the
slice over; a different output layout version is always refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prmtree.engine.config import ConfigError, RunConfig, config_changes
from prmtree.engine.output import LAYOUT_VERSION, TABLES, DatasetWriter, Manifest, Slice, discard_unlisted


IMAGE_COPY = re.compile(r"[0-9a-f]{32}\.[a-z0-9]{1,5}")


@dataclass
class OpenedRun:
    writer: DatasetWriter
    done: set[str] = field(default_factory=set)  # problem ids already finished
    previous_stats: dict[str, Any] = field(default_factory=dict)


def open_run(
    out_dir: str | Path,
    config: RunConfig,
    versions: dict[str, str],
    slice: Slice = Slice(),
    force: bool = False,
) -> OpenedRun:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / slice.manifest_name
    previous: Manifest | None = None
    if manifest_path.exists():
        import json

        try:
            previous = Manifest.from_dict(json.loads(manifest_path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{manifest_path} is unreadable ({exc}); use another --out or remove it") from None
        if previous.layout_version != LAYOUT_VERSION:
            raise ConfigError(
                f"{out} holds output layout version {previous.layout_version}; this prmtree writes "
                f"version {LAYOUT_VERSION}: use another --out"
            )
        if previous.config_hash != config.config_hash():
            if not force:
                changes = config_changes(previous.config, config)
                shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
                raise ConfigError(
                    f"{out} was written with a different config ({shown}); "
                    "pass --force to start over, or use another --out"
                )
            _remove_slice(out, previous, slice)
            previous = None
    discard_unlisted(out, previous, slice)
    manifest = Manifest(
        config=config.model_dump(mode="json"),
        config_hash=config.config_hash(),
        versions=versions,
        slice={"index": slice.index, "count": slice.count},
    )
    if previous is not None:
        manifest.shards = previous.shards
        manifest.completed = previous.completed
        manifest.skipped = previous.skipped
        manifest.rejected = previous.rejected
        manifest.failed = previous.failed
        manifest.stats = previous.stats
    writer = DatasetWriter(out, manifest, slice=slice, config=config.output)
    done = set(manifest.completed) | set(manifest.rejected)
    return OpenedRun(writer, done, dict(manifest.stats))


def _remove_slice(out: Path, manifest: Manifest, slice: Slice) -> None:
    """``--force``: forget this slice's earlier output entirely."""
    discard_unlisted(out, None, slice)  # every shard of the slice, listed or not
    (out / slice.manifest_name).unlink(missing_ok=True)
    images = out / "images"
    if slice.count == 1 and manifest.config.get("output", {}).get("image_mode") == "path" and images.is_dir():
        for path in images.iterdir():  # only the copies prmtree wrote (named by content hash)
            if IMAGE_COPY.fullmatch(path.name):
                path.unlink()
    for table in TABLES:
        (out / table).mkdir(exist_ok=True)
