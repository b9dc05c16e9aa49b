"""Checking a run directory against its manifests, without changing anything.

A listed shard must exist with the recorded size, sha256 and row count, and be listed
once; a manifest's log must hold every record the manifest counts; the slices must share one layout and no problem; no shard may lie there unlisted
(loaders globbing ``steps/*.parquet`` would read it), no ``manifest*.json`` may be a stray
copy (``manifest-backup.json``: nobody reads it, but whoever would trusts it), and an
``image_mode = "path"`` run's images must be there, each with the bytes its name's hash
says. ``prmtree verify`` prints what this finds; resume uses :func:`verify_shard` and
:func:`broken_images` to repair.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from prmtree.engine.output.atomic import sha256_file
from prmtree.engine.output.layout import (
    SHARD_NAME,
    UNSLICED_MANIFEST,
    Slice,
    manifest_layout,
    manifest_slice,
    scan_manifests,
)
from prmtree.engine.output.manifest import Manifest, load_manifest
from prmtree.engine.tables import IMAGE_STRUCT, TABLES

#: ``Damage.manifest`` of a shard that no manifest lists.
UNLISTED = "(no manifest)"
#: ``Damage.manifest`` of a ``manifest*.json`` file that is no slice's manifest.
STRAY = "(stray manifest)"
#: ``Damage.manifest`` of slices labelled with different floors (the run's, not one slice's).
FLOORS = "(floors)"


@dataclass(frozen=True)
class Damage:
    """One thing wrong with a run directory: a shard (``file``) or a manifest as a whole.

    ``readers_unaffected``: the readers (``read_table``, ``inspect``, ``export``) still read
    the run as its manifests say (they skip unlisted shards and stray manifests and read a
    shard listed twice once), so they need not refuse the directory; ``verify`` still fails.
    """

    manifest: str  # the slice's manifest file name (or UNLISTED, STRAY)
    file: str | None  # the shard or stray manifest, relative to the run directory; None: the manifest itself
    problem: str
    readers_unaffected: bool = False

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
    """Every listed shard of one slice checked against the manifest (a shard listed twice: once),
    and its log (``manifest.py``) whole up to the bytes the manifest counts."""
    damage = []
    if manifest.log.get("torn"):
        damage.append(Damage(name, manifest.log["file"], f"its last {manifest.log['torn']} bytes cannot be read as its "
                                                         "records (one torn, missing or altered there, and every one after "
                                                         "it): the flushes they recorded are lost and their shards unlisted; "
                                                         "the next run of its slice redoes their problems"))
    listed = Counter(shard["file"] for shard in manifest.shards)
    for file, times in listed.items():
        if times > 1:
            damage.append(Damage(name, file, f"listed {times} times in {name}: readers read its rows once",
                                 readers_unaffected=True))
    checked: set[str] = set()
    for shard in manifest.shards:
        if shard["file"] in checked:
            continue
        checked.add(shard["file"])
        if (why := verify_shard(out_dir, shard)) is not None:
            damage.append(Damage(name, shard["file"], why))
    if manifest.config.get("output", {}).get("image_mode") == "path":
        damage.extend(_missing_images(out_dir, name, manifest, checked - {d.file for d in damage}))
    return damage


def _missing_images(out_dir: Path, name: str, manifest: Manifest, intact: set[str]) -> list[Damage]:
    """Image files an ``image_mode = "path"`` slice's rows point to that are not there, or
    whose bytes no longer hash to their name (paths are relative to the run directory;
    older runs wrote absolute ones). Each file is looked at once, however many rows share it."""
    damage = []
    seen: dict[str, BrokenImage | None] = {}
    for shard in manifest.shards:
        if shard["file"] not in intact or not (out_dir / shard["file"]).is_file():
            continue
        intact.discard(shard["file"])  # each file once
        for why, broken in _by_kind(broken_images(out_dir, shard, seen)).items():
            unique = sorted({b.path for b in broken})
            damage.append(Damage(name, shard["file"], f"{len(unique)} image files its rows point to {why} "
                                                      f"(e.g. {unique[0]!r})"))
    return damage


#: ``BrokenImage.problem`` of a file that is not there.
IMAGE_MISSING = "are missing"
#: ... and of one whose bytes do not hash to the name they were stored under.
IMAGE_ALTERED = "changed: their bytes no longer hash to their names"
#: The name ``image_mode = "path"`` gives its copies: the first 32 hex digits of the bytes'
#: sha256, then the suffix (``engine/tables.py``); other names (older runs) are not hashed.
IMAGE_COPY = re.compile(r"[0-9a-f]{32}\.[a-z0-9]{1,5}")


@dataclass(frozen=True)
class BrokenImage:
    """A row of an ``image_mode = "path"`` run pointing to an image file that is missing or
    altered: the row is wrong, though its shard matches the manifest, so ``verify`` reports
    it and a resume redoes ``problem_id`` (``engine/resume.py``), which writes the file again."""

    problem_id: str
    path: str  # as the row stores it
    problem: str  # IMAGE_MISSING or IMAGE_ALTERED
    file: Path | None = None  # the altered file found (None: missing), which a repair removes


def broken_images(out_dir: Path, shard: dict[str, Any],
                  seen: dict[str, BrokenImage | None] | None = None) -> list[BrokenImage]:
    """The image files one listed shard's rows point to that are missing or altered, one
    entry per row and image. ``seen`` (path -> what was found) spares looking at a file
    shared by many rows twice; pass the same dict for the shards of one run.

    An altered file is found as a shard is: by its sha256, here the one its name holds, so
    a file that a crash or a copy left truncated does not pass for the image.
    """
    path = out_dir / shard["file"]
    columns = [f.name for f in pq.read_schema(path) if f.type == pa.list_(IMAGE_STRUCT)]
    if not columns:
        return []
    seen = {} if seen is None else seen
    table = pq.read_table(path, columns=["problem_id", *columns])
    ids = table.column("problem_id").to_pylist()
    broken = []
    for column in columns:
        for problem_id, images in zip(ids, table.column(column).to_pylist()):
            for image in images or []:
                if image.get("bytes") is not None or not image.get("path"):
                    continue
                if image["path"] not in seen:
                    seen[image["path"]] = _broken_image(out_dir, image["path"])
                found = seen[image["path"]]
                if found is not None:
                    broken.append(BrokenImage(problem_id, image["path"], found.problem, found.file))
    return broken


def _broken_image(out_dir: Path, path: str) -> BrokenImage | None:
    """What is wrong with the file a row's ``path`` names, for every row naming it (so no
    ``problem_id``), or None. Only content-hash names are hashed: older runs named copies
    otherwise, and those are only checked to be there."""
    file = resolve_image(out_dir, path)
    if file is None:
        return BrokenImage("", path, IMAGE_MISSING)
    if IMAGE_COPY.fullmatch(file.name) and sha256_file(file)[:32] != file.name[:32]:
        return BrokenImage("", path, IMAGE_ALTERED, file)
    return None


def _by_kind(broken: list[BrokenImage]) -> dict[str, list[BrokenImage]]:
    """``broken`` grouped by what is wrong, missing first."""
    groups: dict[str, list[BrokenImage]] = {IMAGE_MISSING: [], IMAGE_ALTERED: []}
    for b in broken:
        groups[b.problem].append(b)
    return {why: group for why, group in groups.items() if group}


def resolve_image(out_dir: Path, path: str) -> Path | None:
    """The file an ``image_mode = "path"`` row's image path names, or None if it is not there.

    Paths are relative to the run directory. Older runs wrote absolute paths to their
    ``images/`` copies: one that no longer exists (the run directory moved) is found by its
    content-hash name in this run's ``images/``.
    """
    given = Path(path)
    file = given if given.is_absolute() else out_dir / given
    if file.is_file():
        return file
    if given.is_absolute() and given.parent.name == "images" and (out_dir / "images" / given.name).is_file():
        return out_dir / "images" / given.name
    return None


def verify_run(out_dir: str | Path) -> list[Damage]:
    """Everything wrong with a run directory: unreadable manifests, slices of different
    layouts or sharing problems (their union would duplicate rows), and shards missing,
    altered or of the wrong row count. Empty: the directory reads as the manifests say."""
    out = Path(out_dir)
    damage: list[Damage] = []
    loaded: dict[str, Manifest] = {}
    layout, stray = scan_manifests(out)
    for name in stray:
        damage.append(Damage(STRAY, name, "no slice's manifest by its name (a run writes manifest.json or "
                                          "manifest-IIIII-of-NNNNN.json), so no reader reads it: a copy? "
                                          "delete it or move it out of the run directory",
                             readers_unaffected=True))
    for name in layout:
        try:
            loaded[name] = load_manifest(out / name)
        except ValueError as exc:
            damage.append(Damage(name, None, f"unreadable ({exc})"))
            continue
        said, named = loaded[name].slice if isinstance(loaded[name].slice, dict) else {}, manifest_slice(name)
        if named is not None and (named.index, named.count) != (said.get("index", 0), said.get("count", 1)):
            damage.append(Damage(name, None, f"holds the manifest of slice {said.get('index')}/{said.get('count')}, "
                                             "not of the slice its name says (a copy?)"))
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
    lister: dict[str, str] = {}
    for name, manifest in loaded.items():
        for file in dict.fromkeys(shard["file"] for shard in manifest.shards):
            first = lister.setdefault(file, name)
            if first != name:
                damage.append(Damage(name, file, f"also listed in {first}: readers read its rows once",
                                     readers_unaffected=True))
    damage.extend(_unlisted_shards(out, loaded, tuple(name for name in layout if name not in loaded)))
    if len(floor_sets(loaded)) > 1 and slices_to_redo(loaded):  # readers read the rows: they are labelled apart
        damage.append(Damage(FLOORS, None, floors_apart(loaded), readers_unaffected=True))
    return damage


@dataclass(frozen=True)
class FloorSet:
    """One set of floors the slices of a run learned (or took), and the slices holding it."""

    floors: dict[str, float]  # answer space -> floor
    problems: dict[str, int]  # answer space -> pilot members it was learned from
    slices: list[str]  # their manifests, in name order
    lost: dict[str, str]  # the pilot members it was learned without (id -> why)
    lost_unknown: bool = False  # learned from fewer problems than another set, naming none (an older prmtree's)

    def described(self) -> str:
        """``slices 1/3, 2/3: number 0.0398 from 16 problems (lost none)``."""
        return f"{self.slices_text()}: {self.floors_text()}"

    def slices_text(self) -> str:
        named = [_slice_text(name) for name in self.slices]
        return f"{'slice' if len(named) == 1 else 'slices'} {', '.join(named)}"

    def floors_text(self) -> str:
        floors = ", ".join(f"{space} {floor:.4f} from {self.problems.get(space, 0)} problems"
                           for space, floor in sorted(self.floors.items())) or "none learned"
        if self.lost_unknown and not self.lost:
            return f"{floors} (its pilot lost a member; which is not recorded: an older prmtree's manifest)"
        lost = ("lost none" if not self.lost else "its pilot lost " + ", ".join(
            f"{pid!r} ({why[:120]})" for pid, why in sorted(self.lost.items())[:3])
            + (f" and {len(self.lost) - 3} more" if len(self.lost) > 3 else ""))
        return f"{floors} ({lost})"


def _slice_text(name: str) -> str:
    own = manifest_slice(name)
    return f"{own.index}/{own.count}" if own is not None and own.count > 1 else name


def floor_sets(manifests: dict[str, Manifest]) -> list[FloorSet]:
    """The distinct floors the slices' pilots learned, in slice order (a slice whose pilot
    has not learned holds none). One --out must hold one: each driver pilots the same
    problems, so only a member one pilot lost and another did not sets them apart."""
    sets: dict[tuple[tuple[str, float], ...], FloorSet] = {}
    for name, manifest in sorted(manifests.items()):
        calibration = manifest.calibration or {}
        if calibration.get("floors") is None:
            continue
        floors = {space: float(f.get("floor", 0.0)) for space, f in calibration["floors"].items()}
        key = tuple(sorted(floors.items()))
        if key not in sets:
            problems = {space: int(f.get("problems", 0)) for space, f in calibration["floors"].items()}
            sets[key] = FloorSet(floors, problems, [], dict(calibration.get("lost") or {}))
        sets[key].slices.append(name)
    most: dict[str, int] = {}
    for found in sets.values():
        for space, count in found.problems.items():
            most[space] = max(most.get(space, 0), count)
    return [replace(found, lost_unknown=any(count < most[space] for space, count in found.problems.items()))
            for found in sets.values()]


def slices_to_redo(manifests: dict[str, Manifest]) -> list[str]:
    """The slices whose pilot lost a member a sibling's learned from (``--force`` starts
    them over with a sibling's floors), in name order."""
    from prmtree.engine.pilot import lost_more

    learned = {name: m.calibration for name, m in manifests.items() if (m.calibration or {}).get("floors") is not None}
    return [name for name, c in sorted(learned.items()) if any(lost_more(c, other) for other in learned.values())]


def floors_apart(manifests: dict[str, Manifest]) -> str:
    """One line: the slices of a run hold different floors, which, and how to repair it
    (``--force`` starts a slice whose pilot lost a member its siblings' did not over, with
    the floors of one that lost none: ``engine/resume.py``)."""
    from prmtree.engine.pilot import cleanest

    learned = {name: m.calibration for name, m in manifests.items() if (m.calibration or {}).get("floors") is not None}
    redo = slices_to_redo(manifests)
    source = cleanest(learned)
    said = "; ".join(s.described() for s in floor_sets(manifests))
    if not redo:  # each pilot learned from the same members, and learned otherwise
        return (f"the slices' pilots learned different floors though none lost a member another learned from: "
                f"the backend did not answer the same pilot requests the same way (its outputs are not "
                f"reproducible for a seed), so each slice's rows are labelled with its own floors: {said}")
    text = (f"the slices were labelled with different floors, though the slices of one --out must share one set "
            f"(a pilot member failed for some slices' pilots only): {said}")
    which = ("slice " if len(redo) == 1 else "slices ") + ", ".join(_slice_text(name) for name in redo)
    if source is not None:
        return (f"{text}. To repair: run the same command again with --force (a job array: the command of "
                f"{which}, with --force): it starts {which} over with the floors of slice "
                f"{_slice_text(source)}, and the others keep their rows")
    return (f"{text}. To repair: run the same command again with --force (a job array: the command of "
            f"{which}, with --force): it starts {which} over and pilots again, since each lost a member "
            "another learned from; then again, until verify passes")


def missing_slices(out_dir: str | Path) -> list[Slice]:
    """The slices (``--slice i/N``) of a sliced directory that never ran: no manifest. Not
    damage (the slices that ran read as their manifests say), but not the whole input."""
    counts = {count for name, count in manifest_layout(out_dir).items() if name != UNSLICED_MANIFEST}
    slices = [Slice(i, count) for count in sorted(counts) for i in range(count)]
    return [s for s in slices if not (Path(out_dir) / s.manifest_name).exists()]


def _unlisted_shards(out: Path, loaded: dict[str, Manifest], unreadable: tuple[str, ...] = ()) -> list[Damage]:
    """Shard files no manifest lists: left by a crash between a shard's rename and its
    manifest update (the slice's next run deletes them), or copied in; and any other
    ``*.parquet`` file in a table's folder (``extra.parquet``: a run refuses the directory). Readers that glob
    ``steps/*.parquet`` would read their rows as well, so they count as damage. A shard of
    a slice whose manifest cannot be read (``unreadable``) is no stray: its manifest may well
    list it, and that slice's next run refuses the directory rather than delete anything."""
    listed = {shard["file"] for manifest in loaded.values() for shard in manifest.shards}
    patterns = [(name, manifest_slice(name)) for name in unreadable]
    found = []
    foreign = []
    for table in TABLES:
        directory = out / table
        if directory.is_dir():
            found += [(f"{table}/{p.name}", next((name for name, s in patterns
                                                  if s is not None and s.shard_pattern().fullmatch(p.name)), None))
                      for p in sorted(directory.iterdir())
                      if SHARD_NAME.fullmatch(p.name) and f"{table}/{p.name}" not in listed]
            foreign += [f"{table}/{p.name}" for p in sorted(directory.iterdir())
                        if p.name.endswith(".parquet") and not SHARD_NAME.fullmatch(p.name)]
    return [Damage(UNLISTED, rel, "not a prmtree shard (no run wrote it, and none deletes it), but readers of the "
                                  "table's *.parquet read it too: move it out of the run directory",
                   readers_unaffected=True) for rel in foreign] + [
            Damage(UNLISTED, rel, "listed in no manifest: the next run of its slice deletes it; "
                             "until then, readers of the table's *.parquet read it too", readers_unaffected=True)
            if owner is None else
            Damage(UNLISTED, rel, f"its slice's manifest {owner} cannot be read, so whether it lists this shard "
                                  f"is unknown; the next run of that slice refuses the directory until {owner} "
                                  "is restored (removing it starts the slice over)", readers_unaffected=True)
            for rel, owner in found]
