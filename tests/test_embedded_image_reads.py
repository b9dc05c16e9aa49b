"""Embedded images read where they lie: an image embedded in the input (a Parquet image
struct, a Hugging Face ``save_to_disk`` dataset's Arrow file) goes to a Ray worker as its
hash and its cell (file, row, column, list index, row group), and the worker reads and
checks the cell itself, so the bytes never pass through the driver. A cell that changed or
whose file vanished is never used: the worker answers a miss, the driver sends the bytes,
and that worker gets bytes from then on (one failed read per worker, not per image)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import rows
from test_image_paths import (assert_changed_source_refused, assert_one_failed_read_per_worker_then_bytes,
                              run_config)

import prmtree
from prmtree.engine.output import load_manifest
from prmtree.engine.problem import iter_problems
from prmtree.engine.records import Problem, ProblemImage, problem_fingerprint
from prmtree.engine.synthetic import generate_problems
from prmtree.rollout_workers.ray.cells import CellReader
from prmtree.rollout_workers.ray.images import ImageReadError, read_checked


def table_rows(n: int, listed: bool = False) -> list[dict]:
    """``n`` synthetic problems (real PNGs, made with Pillow) as input rows with the image
    embedded as a ``{bytes, path}`` struct (``listed``: in a one-image list, column ``images``)."""
    out = []
    for p in generate_problems(n, seed=41):
        image = {"bytes": p.images[0].data, "path": f"{p.id}.png"}
        out.append({"id": p.id, "question": p.question, "answer": p.answer, "answer_type": p.answer_type,
                    "meta": json.dumps(p.meta), **({"images": [image]} if listed else {"image": image})})
    return out


def write_parquet(path: Path, data: list[dict], row_group_size: int = 3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(data), path, row_group_size=row_group_size)
    return path


def write_hf_dataset(directory: Path, data: list[dict]) -> Path:
    """``data`` saved with ``datasets``' ``save_to_disk`` (images as ``Sequence(Image())``)."""
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({
        "id": datasets.Value("string"), "question": datasets.Value("string"), "answer": datasets.Value("string"),
        "answer_type": datasets.Value("string"), "meta": datasets.Value("string"),
        "images": datasets.Sequence(datasets.Image()),
    })
    datasets.Dataset.from_list(data, features=features).save_to_disk(str(directory))
    assert list(directory.glob("*.arrow"))
    return directory


def loaded(path: Path) -> list[Problem]:
    return [p for p in iter_problems(path) if isinstance(p, Problem)]


# -- the driver's side: where each image lies ---------------------------------------------


def test_parquet_images_carry_their_cell_and_row_group_and_keep_their_fingerprints(tmp_path):
    data = table_rows(7)
    problems = loaded(write_parquet(tmp_path / "in.parquet", data))
    assert [p.id for p in problems] == [r["id"] for r in data]
    cells = [p.images[0].cell for p in problems]
    assert [(c.kind, c.row, c.group, c.column, c.index) for c in cells] == [
        ("parquet", i, i // 3, "image", None) for i in range(7)]
    assert all(c.file == str((tmp_path / "in.parquet").resolve()) for c in cells)
    assert all(p.images[0].file is None and p.images[0].stamp is None for p in problems)
    # a resume compares what it compared before: the cell is no part of the fingerprint
    for p, row in zip(problems, data):
        plain = Problem(p.id, p.question, p.answer, (ProblemImage(row["image"]["bytes"], row["image"]["path"]),),
                        p.answer_type, p.meta)
        assert problem_fingerprint(p) == problem_fingerprint(plain) and problem_fingerprint(p).endswith(".")


def test_rows_of_a_row_group_too_large_for_a_worker_to_read_name_no_cell(tmp_path, monkeypatch):
    """A worker reading a cell reads its whole row group: pyarrow's default writes a whole
    file as one group, so a group over MAX_CELL_GROUP_BYTES leaves its images to be sent."""
    import prmtree.engine.problem as problem_mod

    data = table_rows(7)
    path = write_parquet(tmp_path / "in.parquet", data)  # groups of 3, 3 and 1 rows
    sizes = [pq.ParquetFile(path).metadata.row_group(g).total_byte_size for g in range(3)]
    monkeypatch.setattr(problem_mod, "MAX_CELL_GROUP_BYTES", sizes[2])  # only the 1-row group fits
    cells = [p.images[0].cell for p in loaded(path)]
    assert [c is not None for c in cells] == [False] * 6 + [True]
    assert (cells[6].row, cells[6].group) == (6, 2)


def test_hf_dataset_images_carry_their_arrow_cell_with_the_list_index(tmp_path):
    problems = loaded(write_hf_dataset(tmp_path / "hf", table_rows(4, listed=True)))
    assert len(problems) == 4
    for i, p in enumerate(problems):
        cell = p.images[0].cell
        assert (cell.kind, cell.row, cell.column, cell.index, cell.group) == ("arrow", i, "images", 0, None)
        assert cell.file.endswith(".arrow") and os.path.isabs(cell.file)


# -- the worker's side: reading a cell ----------------------------------------------------


def test_a_worker_reads_each_parquet_row_group_once_and_keeps_only_the_last_two(tmp_path):
    problems = loaded(write_parquet(tmp_path / "in.parquet", table_rows(7)))
    reader = CellReader(groups_kept=2)
    for p in problems:  # rows in order: 3 row groups of 3, 3 and 1 rows
        assert read_checked(p.images[0].ref(), reader) == p.images[0].data
    assert reader.stats()["cell_groups_read"] == 3
    assert read_checked(problems[4].images[0].ref(), reader) == problems[4].images[0].data  # group 1: kept
    assert reader.stats()["cell_groups_read"] == 3
    assert read_checked(problems[0].images[0].ref(), reader) == problems[0].images[0].data  # group 0: evicted
    assert reader.stats()["cell_groups_read"] == 4


def test_a_batch_out_of_group_order_reads_each_row_group_once(tmp_path):
    """A worker reads a batch's cells grouped by file and row group: six images in three
    groups asked 0, 2, 4, 1, 3, 5 cost three group reads with two groups kept, not six."""
    from prmtree.rollout_workers.ray.images import read_all

    problems = loaded(write_parquet(tmp_path / "in.parquet", table_rows(6), row_group_size=2))
    refs = [problems[i].images[0].ref() for i in (0, 2, 4, 1, 3, 5)]
    reader = CellReader(groups_kept=2)
    read, failed = read_all(refs, reader)
    assert not failed and read == {p.images[0].ref().sha256: p.images[0].data for p in problems}
    assert reader.stats()["cell_groups_read"] == 3


def test_an_arrow_dataset_in_ipc_file_format_is_read_by_the_driver_and_a_worker(tmp_path):
    """``datasets`` writes Arrow IPC streams; a directory of Arrow IPC *files* (Feather v2)
    is read too, by the driver and by a worker's cell reader, not refused with a raw error."""
    directory = tmp_path / "hf"
    directory.mkdir()
    data = table_rows(3)
    table = pa.Table.from_pylist(data)
    with pa.OSFile(str(directory / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    (directory / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    problems = loaded(directory)
    assert [p.id for p in problems] == [r["id"] for r in data]
    reader = CellReader()
    for p in problems:
        assert p.images[0].cell.kind == "arrow"
        assert read_checked(p.images[0].ref(), reader) == p.images[0].data
    assert reader.stats()["cell_files_mapped"] == 1


def test_a_worker_maps_an_arrow_file_once_and_refuses_a_cell_whose_bytes_differ(tmp_path):
    problems = loaded(write_hf_dataset(tmp_path / "hf", table_rows(4, listed=True)))
    reader = CellReader()
    for p in problems:
        assert read_checked(p.images[0].ref(), reader) == p.images[0].data
    assert reader.stats() == {"cell_groups_read": 0, "cell_files_mapped": 1}
    other = problems[1].images[0]  # the hash of another row's image: the cell's bytes are not it
    wrong = ProblemImage(problems[2].images[0].data, cell=other.cell).ref()
    with pytest.raises(ImageReadError, match="sha256 differs|bytes, the driver read"):
        read_checked(wrong, reader)


# -- through Ray --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("source", ["parquet", "hf"])
def test_a_run_on_embedded_images_sends_no_image_bytes_and_writes_the_same_rows(ray_session, tmp_path, source):
    data = table_rows(8, listed=source == "hf")
    path = (write_parquet(tmp_path / "data" / "in.parquet", data) if source == "parquet"
            else write_hf_dataset(tmp_path / "data" / "hf", data))
    expected = {}
    for r in data:
        image = r["images"][0] if source == "hf" else r["image"]
        expected[r["id"]] = (hashlib.sha256(image["bytes"]).hexdigest(), image["path"])
    runs = {}
    for mode in ("auto", "never"):
        log = tmp_path / f"{mode}.log"
        prmtree.run(path, policy="test_image_paths:SeesImages", policy_args={"log": str(log)},
                    out=tmp_path / mode, config=run_config(mode))
        seen = {tuple(line.split(" ")) for line in log.read_text().splitlines()}
        assert {s[0] for s in seen} == set(expected)
        assert all((sha, name) == expected[pid] for pid, sha, name in seen)  # each problem's own image
        runs[mode] = load_manifest(tmp_path / mode / "manifest.json").stats["executor"]
    auto, never = runs["auto"], runs["never"]
    assert auto["images_sent"] == 0 and auto["image_bytes_sent"] == 0 and auto["image_resends"] == 0
    assert auto["images_read_by_workers"] == 8 and auto["image_path_misses"] == 0
    assert never["images_sent"] == 8 and never["image_bytes_sent"] == sum(
        len(r["images"][0]["bytes"] if source == "hf" else r["image"]["bytes"]) for r in data)
    assert never["images_read_by_workers"] == 0
    assert rows(tmp_path / "auto") == rows(tmp_path / "never")
    assert rows(tmp_path / "auto", "nodes") == rows(tmp_path / "never", "nodes")


@pytest.mark.slow
def test_a_parquet_file_rewritten_after_the_driver_read_it_is_refused_by_hash(ray_session, tmp_path):
    data = table_rows(3)
    path = write_parquet(tmp_path / "in.parquet", data)
    problems = loaded(path)
    problem = problems[1]
    for r in data:  # same rows, same sizes, other bytes: only the hash tells
        r["image"] = {"bytes": bytes(b ^ 0xFF for b in r["image"]["bytes"]), "path": r["image"]["path"]}
    write_parquet(path, data)

    assert assert_changed_source_refused(problem)["cell_groups_read"] == 1


@pytest.mark.slow
def test_a_missing_parquet_file_costs_one_failed_read_per_worker_then_bytes(ray_session, tmp_path):
    path = write_parquet(tmp_path / "in.parquet", table_rows(8))
    problems = loaded(path)
    os.remove(path)

    assert_one_failed_read_per_worker_then_bytes(problems)
