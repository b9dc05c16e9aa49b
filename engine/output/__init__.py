"""A run's output directory: crash-safe Parquet shards (steps / nodes / pairs / errors),
one manifest per input slice, and reading and verifying them back.

Every table has an explicit schema (``engine/tables.py``, beside its row builder).
``steps`` carries TRL's stepwise-supervision columns (``prompt``, ``completions``,
``labels``) and an ``images`` column of Hugging Face Image structs, with the
``huggingface`` features metadata in the schema so that ``datasets.load_dataset("parquet",
...)`` decodes images.

* ``layout``: input slices and the names of manifests and shards;
* ``atomic``: durable replace-by-rename, and file digests;
* ``manifest``: the manifest record and its one checked reader;
* ``writer``: buffering whole problems and flushing shards, then the manifest;
* ``reader``: a table of a run as its manifests list it;
* ``verification``: what is wrong with a run directory;
* ``faults``: the ``PRMTREE_FAULT`` hook of the crash tests.
"""

from prmtree.engine.output.layout import (
    MANIFEST_NAME,
    SHARD_NAME,
    Slice,
    manifest_layout,
    scan_manifests,
    stray_manifests,
)
from prmtree.engine.output.manifest import (
    LAYOUT_VERSION,
    Manifest,
    load_manifest,
    load_manifests,
    write_manifest,
)
from prmtree.engine.output.reader import listed_files, read_table
from prmtree.engine.output.verification import (
    STRAY,
    UNLISTED,
    BrokenImage,
    Damage,
    broken_images,
    missing_slices,
    resolve_image,
    verify_run,
    verify_shard,
)
from prmtree.engine.output.writer import DatasetWriter

__all__ = [
    "LAYOUT_VERSION",
    "MANIFEST_NAME",
    "SHARD_NAME",
    "STRAY",
    "UNLISTED",
    "BrokenImage",
    "Damage",
    "DatasetWriter",
    "Manifest",
    "Slice",
    "broken_images",
    "listed_files",
    "load_manifest",
    "load_manifests",
    "manifest_layout",
    "missing_slices",
    "read_table",
    "resolve_image",
    "scan_manifests",
    "stray_manifests",
    "verify_run",
    "verify_shard",
    "write_manifest",
]
