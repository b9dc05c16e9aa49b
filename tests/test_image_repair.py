"""``image_mode = "path"`` runs whose image files went missing or were altered: ``verify``
reports them, ``export`` refuses the run and says the run's command redoes the problems of
a bad shard, and it does: the resume drops the rows pointing to the broken files, redoes
their problems (which writes the files again), and the run reads as an untouched one, with
no row twice, even after a kill -9 mid-repair. Real runs, real files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import cli

import prmtree
from prmtree.engine.output import load_manifest, verify_run
from prmtree.engine.output.atomic import sha256_file
from prmtree.engine.output.faults import FAULT_ENV
from prmtree.engine.synthetic import generate_problems, write_jsonl

TABLES = ("steps", "nodes", "pairs", "errors")
#: Small trees, and shards small enough that ten problems make several of each table.
SMALL = {"search": {"budget": 30}, "output": {"image_mode": "path", "rows_per_shard": 12}}
SMALL_TOML = "[search]\nbudget = 30\n[output]\nimage_mode = \"path\"\nrows_per_shard = 12\n"


def table_rows(out: Path, table: str) -> list[str]:
    """A table's rows, images column included, read with pyarrow from the shards the
    manifest lists (each once), as sorted reprs: equal iff two runs hold the same rows."""
    manifest = load_manifest(out / "manifest.json")
    files = dict.fromkeys(s["file"] for s in manifest.shards if s["table"] == table)
    return sorted(repr(row) for file in files for row in pq.read_table(out / file).to_pylist())


def same_rows(out: Path, reference: Path) -> None:
    for table in TABLES:
        assert table_rows(out, table) == table_rows(reference, table), table


def image_owners(out: Path) -> dict[str, set[str]]:
    """Each image path the steps rows store -> the problems whose rows point to it."""
    owners: dict[str, set[str]] = {}
    for row in _steps(out):
        for image in row["images"]:
            owners.setdefault(image["path"], set()).add(row["problem_id"])
    return owners


def _steps(out: Path) -> list[dict]:
    """The steps rows' ids and images, from the listed shards."""
    manifest = load_manifest(out / "manifest.json")
    files = dict.fromkeys(s["file"] for s in manifest.shards if s["table"] == "steps")
    return [row for file in files for row in pq.read_table(out / file, columns=["problem_id", "images"]).to_pylist()]


def intact_and_whole(out: Path, problems: int) -> None:
    """``verify`` passes, every problem is done once and counted once, every file is listed."""
    assert verify_run(out) == []
    manifest = load_manifest(out / "manifest.json")
    assert manifest.status == "finished"
    assert len(manifest.completed) == len(set(manifest.completed)) == problems
    assert manifest.stats["problems_done"] == problems  # the redone problems are not counted twice
    listed = {s["file"] for s in manifest.shards}
    assert {f"{p.parent.name}/{p.name}" for p in out.glob("*/*.parquet")} == listed
    assert all((out / path).is_file() for path in image_owners(out))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_jsonl(generate_problems(10, seed=41), tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data) -> Path:
    """One untouched run, made once; tests that break it get a copy."""
    out = tmp_path_factory.mktemp("reference") / "o"
    prmtree.run(data, out=out, config=SMALL, seed=5)
    assert verify_run(out) == []
    return out


def copy_of(reference: Path, tmp_path: Path) -> Path:
    out = tmp_path / "o"
    shutil.copytree(reference, out)
    return out


def run_args(data: Path, out: Path) -> list:
    (out.parent / "small.toml").write_text(SMALL_TOML)
    return ["run", "--input", data, "--out", out, "--config", out.parent / "small.toml", "--seed", "5",
            "--image-mode", "path", "--no-progress"]


@pytest.mark.slow
def test_a_deleted_image_is_reported_refused_and_the_same_command_repairs_it(data, reference, tmp_path):
    out = copy_of(reference, tmp_path)
    path, owners = sorted(image_owners(out).items())[0]
    (out / path).unlink()

    r = cli("verify", out)
    assert r.returncode == 1 and f"image files its rows point to are missing (e.g. {path!r})" in r.stdout
    r = cli("export", out, "--format", "jsonl", "--to", tmp_path / "x.jsonl")
    assert r.returncode == 2 and "is damaged" in r.stderr and "redoes the problems of a bad shard" in r.stderr

    r = cli(*run_args(data, out))
    assert r.returncode == 0, r.stderr
    assert "nothing left to do" not in r.stdout + r.stderr
    assert f"1 image files its rows point to are missing (e.g. {path!r})" in r.stderr
    assert f"dropped the rows of the {len(owners)} problems pointing to them" in r.stderr

    assert cli("verify", out).returncode == 0
    intact_and_whole(out, 10)
    same_rows(out, reference)
    assert (out / path).read_bytes() == (reference / path).read_bytes()
    # the redone problems are counted once (before: their labels twice, e.g. 178 labelled steps for 108)
    counted = ("problems_done", "paths", "nodes", "pairs", "steps_labelled", "labels_positive", "labels_negative",
               "steps_per_path")
    stats, before = (load_manifest(d / "manifest.json").stats for d in (out, reference))
    assert {k: stats[k] for k in counted} == {k: before[k] for k in counted}
    r = cli("export", out, "--format", "jsonl", "--to", tmp_path / "x.jsonl")
    assert r.returncode == 0, r.stderr

    r = cli(*run_args(data, out))  # repaired: a third run has nothing left to do
    assert r.returncode == 0 and "nothing left to do" in r.stdout + r.stderr and "damaged" not in r.stderr


def test_images_missing_from_problems_in_different_shards_redo_only_those_problems(data, reference, tmp_path):
    out = copy_of(reference, tmp_path)
    manifest = load_manifest(out / "manifest.json")
    shard_of = {row["problem_id"]: s["file"] for s in manifest.shards if s["table"] == "steps"
                for row in pq.read_table(out / s["file"], columns=["problem_id"]).to_pylist()}
    owners = image_owners(out)
    first, last = sorted(owners, key=lambda p: shard_of[min(owners[p])])[::len(owners) - 1]
    assert shard_of[min(owners[first])] != shard_of[min(owners[last])]  # two shards, two flushes
    (out / first).unlink()
    (out / last).unlink()
    assert len([d for d in verify_run(out) if "are missing" in d.problem]) == 2

    redone = owners[first] | owners[last]
    untouched = {s["file"]: s["sha256"] for s in manifest.shards
                 if not redone & set(pq.read_table(out / s["file"], columns=["problem_id"]).column(0).to_pylist())}
    summary = prmtree.run(data, out=out, config=SMALL, seed=5)
    assert 0 < summary.rollouts_this_session < summary.rollouts
    after = {s["file"]: s["sha256"] for s in load_manifest(out / "manifest.json").shards}
    assert untouched.items() <= after.items()  # only the owners' rows were dropped and redone
    intact_and_whole(out, 10)
    same_rows(out, reference)


def test_an_image_shared_by_two_problems_redoes_both(tmp_path):
    source = write_jsonl(generate_problems(6, seed=43), tmp_path / "data")
    lines = [json.loads(line) for line in source.read_text().splitlines()]
    for i in (1, 3, 5):
        lines[i]["image"] = lines[i - 1]["image"]  # two problems, one image file: one copy in images/
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    reference = tmp_path / "reference"
    prmtree.run(source, out=reference, config=SMALL, seed=5)
    owners = image_owners(reference)
    shared = min(path for path, ids in owners.items() if len(ids) == 2)  # (a problem may have no steps rows)

    out = copy_of(reference, tmp_path / "copy")
    (out / shared).unlink()
    before = prmtree.run(source, out=tmp_path / "unused", config=SMALL, seed=5).rollouts
    summary = prmtree.run(source, out=out, config=SMALL, seed=5)
    assert 0 < summary.rollouts_this_session < before
    intact_and_whole(out, 6)
    same_rows(out, reference)


def test_an_altered_image_is_reported_and_written_again_on_resume(data, reference, tmp_path):
    out = copy_of(reference, tmp_path)
    path = sorted(image_owners(out))[2]
    original = (out / path).read_bytes()
    (out / path).write_bytes(original[: len(original) // 2])  # a copy cut short
    [damage] = verify_run(out)
    assert damage.file.startswith("steps/")
    assert damage.problem == f"1 image files its rows point to changed: their bytes no longer hash to their names " \
                             f"(e.g. {path!r})"

    prmtree.run(data, out=out, config=SMALL, seed=5)
    assert (out / path).read_bytes() == original
    intact_and_whole(out, 10)
    same_rows(out, reference)


def test_an_image_file_of_another_naming_is_not_hashed(data, reference, tmp_path):
    # names not made of a content hash (older runs named copies otherwise) are only checked to exist
    out = copy_of(reference, tmp_path)
    path = sorted(image_owners(out))[0]
    renamed = f"images/older-name{Path(path).suffix}"
    (out / path).rename(out / renamed)
    manifest = json.loads((out / "manifest.json").read_text())
    for shard in manifest["shards"]:
        if shard["table"] != "steps":
            continue
        table = pq.read_table(out / shard["file"])
        rows = table.to_pylist()
        for row in rows:
            row["images"] = [{**im, "path": renamed if im["path"] == path else im["path"]} for im in row["images"]]
        pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), out / shard["file"])
        shard.update(bytes=(out / shard["file"]).stat().st_size, sha256=sha256_file(out / shard["file"]))
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / renamed).write_bytes(b"not the image, but no hash in its name says so")
    assert verify_run(out) == []


@pytest.mark.slow
@pytest.mark.parametrize("point", ["image_repair_files_removed", "image_repair_shards_written",
                                   "image_repair_manifest_written"])
def test_a_kill_9_mid_repair_is_repaired_by_the_next_run(data, reference, tmp_path, point):
    out = copy_of(reference, tmp_path)
    paths = sorted(image_owners(out))
    (out / paths[0]).unlink()
    (out / paths[-1]).write_bytes(b"garbage")  # altered: the repair deletes it before anything else

    killed = cli(*run_args(data, out), env={**os.environ, FAULT_ENV: point})
    assert killed.returncode == 137, killed.stderr
    assert verify_run(out) != [] or point == "image_repair_manifest_written"

    r = cli(*run_args(data, out))
    assert r.returncode == 0, r.stderr
    intact_and_whole(out, 10)
    same_rows(out, reference)
    assert (out / paths[-1]).read_bytes() == (reference / paths[-1]).read_bytes()
