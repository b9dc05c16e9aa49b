"""The manifest: what one slice of a run wrote, and how; and the one way to read it back.

A manifest is replaced atomically *after* the shards it lists, so it only ever lists
whole files. :func:`load_manifest` checks what it reads: a manifest without its shard
list would otherwise read as a run with no rows, and a resume would delete every shard.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prmtree.engine.output.atomic import write_text_atomic
from prmtree.engine.output.layout import UNSLICED_MANIFEST, manifest_layout
from prmtree.engine.tables import TABLES

LAYOUT_VERSION = 1

#: Keys a manifest cannot be read without (the others have defaults).
REQUIRED_KEYS = ("config", "config_hash", "versions", "status", "shards", "completed")


@dataclass
class Manifest:
    """What a run wrote and how: read by ``inspect``, ``export`` and resume."""

    config: dict[str, Any]
    config_hash: str
    versions: dict[str, str]
    layout_version: int = LAYOUT_VERSION
    slice: dict[str, int] = field(default_factory=lambda: {"index": 0, "count": 1})
    status: str = "running"  # "running" until the run ends, then "finished"
    shards: list[dict[str, Any]] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)  # bad input rows: final, in errors/
    failed: dict[str, str] = field(default_factory=dict)  # policy failures: retried by the next run
    # flush number -> {"completed": [...], "rejected": [...]}: the problems whose rows the
    # shards carrying that ``flush`` number hold (what a resume redoes if one is damaged)
    flushes: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    # problem id (or bad row's key) -> what its rows were made from (``records.problem_fingerprint``,
    # ``error_fingerprint``): a resume refuses, or with --rerun-changed redoes, a problem whose
    # input changed, and retries a bad row that changed. Missing (older manifests): unknown.
    fingerprints: dict[str, str] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    # what the run's pilot learned (``engine/pilot.py``): {"floors": {answer space: {...}},
    # "pool": {...}}; empty until it has. A resume labels with it and pilots nothing.
    calibration: dict[str, Any] = field(default_factory=dict)
    updated_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The manifest as plain JSON data (what :meth:`from_dict` reads back)."""
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """A manifest from parsed JSON; ValueError if it is not shaped like one."""
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        # What every manifest prmtree writes has: a manifest without its shard list would
        # otherwise read as a run with no rows, and a resume would delete every shard.
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise ValueError(f"missing {', '.join(map(repr, missing))}")
        known = {f for f in cls.__dataclass_fields__}
        manifest = cls(**{k: v for k, v in data.items() if k in known})
        for name, kind in (("shards", list), ("completed", list), ("skipped", dict), ("rejected", dict),
                           ("failed", dict), ("flushes", dict), ("fingerprints", dict), ("stats", dict), ("calibration", dict), ("config", dict),
                           ("config_hash", str), ("status", str)):
            if not isinstance(getattr(manifest, name), kind):
                raise ValueError(f"{name!r} is not a {kind.__name__}")
        if manifest.status not in ("running", "finished"):
            raise ValueError(f"status {manifest.status!r} is neither 'running' nor 'finished'")
        for shard in manifest.shards:
            if not isinstance(shard, dict) or not {"table", "file", "rows"} <= shard.keys():
                raise ValueError(f"a shard entry lacks table/file/rows: {shard!r:.80}")
            rows, file = shard["rows"], shard["file"]
            if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
                raise ValueError(f"shard {file!r:.80}: rows is {rows!r:.20}, not a count")
            if shard["table"] not in TABLES or not isinstance(file, str) or not file.startswith(f"{shard['table']}/"):
                raise ValueError(f"a shard entry names no table file of the run: {shard!r:.80}")
        return manifest


def write_manifest(out_dir: Path, manifest: Manifest, name: str = UNSLICED_MANIFEST) -> None:
    """Replace the manifest atomically, stamped with the time of writing."""
    manifest.updated_at = time.time()
    write_text_atomic(out_dir / name, manifest.to_json())


def load_manifest(path: str | Path) -> Manifest:
    """Read and check one manifest file; ValueError saying why if it is unreadable."""
    try:
        return Manifest.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(str(exc)) from None


def load_manifests(out_dir: str | Path) -> list[Manifest]:
    """Every slice's manifest in ``out_dir`` (one for an unsliced run), in name order;
    ValueError naming the first that is unreadable."""
    loaded = []
    for name in manifest_layout(out_dir):
        try:
            loaded.append(load_manifest(Path(out_dir) / name))
        except ValueError as exc:
            raise ValueError(f"{Path(out_dir) / name} is unreadable ({exc})") from None
    return loaded
