"""Input rows that used to crash or hang a run (issue 11) are input errors, a directory's
unreadable files are refused in one line, and a resume skips finished problems before
reading or decoding their images."""

import io
import json
import os
import threading

import pytest
from conftest import cli, png
from PIL import Image

import prmtree
from prmtree.engine import problem as problem_module
from prmtree.engine.errors import ConfigError
from prmtree.engine.config import InputConfig
from prmtree.engine.output import load_manifest, read_table
from prmtree.engine.records import InputError, Problem
from prmtree.engine.problem import iter_input
from prmtree.engine.synthetic import generate_problems, write_jsonl


SYNTHETIC = generate_problems(1, seed=0)[0]  # a problem the simulated policy can answer


def write_rows(directory, rows, name="problems.jsonl"):
    directory.mkdir(exist_ok=True)
    (directory / "ok.png").write_bytes(SYNTHETIC.images[0].data)
    path = directory / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def reasons(path, fmt=InputConfig()):
    return {i.problem_id: i.reason for i in iter_input(path, fmt) if isinstance(i, InputError)}


GOOD = {"id": "good", "question": SYNTHETIC.question, "image": "ok.png", "answer": SYNTHETIC.answer,
        "meta": SYNTHETIC.meta}


def test_image_bytes_given_as_text_is_an_input_error_on_every_run(tmp_path):
    text = {"id": "text", "question": "q?", "image": {"bytes": "abc"}, "answer": "1"}
    path = write_rows(tmp_path / "d", [GOOD, text])
    assert "'bytes' must be binary data, got str" in reasons(path)["text"]
    for _ in range(2):  # the first run and its resume
        s = prmtree.run(path, out=tmp_path / "o", policy="simulated")
        assert s.input_errors == 1 and s.problems_done == 1
    assert read_table(tmp_path / "o", "errors").column("problem_id").to_pylist() == ["text"]


def test_a_300_character_id_works_with_image_mode_path(tmp_path):
    p = Problem(id="x/" * 150, question=SYNTHETIC.question, answer=SYNTHETIC.answer, images=SYNTHETIC.images,
                meta=SYNTHETIC.meta)
    s = prmtree.run([p], out=tmp_path, policy="simulated", config={"output": {"image_mode": "path"}})
    assert s.problems_done == 1 and s.input_errors == 0
    [images] = read_table(tmp_path, "steps").column("images").to_pylist()[:1]
    assert images[0]["bytes"] is None and os.path.isfile(tmp_path / images[0]["path"])
    assert len(os.path.basename(images[0]["path"])) < 100


def test_only_regular_files_are_read_as_images_a_fifo_does_not_hang(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    os.mkfifo(d / "pipe.png")
    path = write_rows(d, [
        GOOD,
        {"id": "fifo", "question": "q?", "image": "pipe.png", "answer": "1"},
        {"id": "zero", "question": "q?", "image": "/dev/zero", "answer": "1"},
    ])
    found = {}
    reader = threading.Thread(target=lambda: found.update(reasons(path)), daemon=True)
    reader.start()
    reader.join(timeout=20)
    assert not reader.is_alive(), "reading a FIFO as an image hung"
    assert found == {
        "fifo": "image pipe.png unreadable: a FIFO (only regular files are read as images)",
        "zero": "image /dev/zero unreadable: a device (only regular files are read as images)",
    }


def test_images_over_the_size_cap_are_refused_unread(tmp_path):
    big = png(size=(64, 64))
    path = write_rows(tmp_path / "d", [
        GOOD | {"id": "file"},
    ])
    (tmp_path / "d" / "ok.png").write_bytes(big)
    cap = InputConfig(max_image_bytes=len(big) - 1)
    assert reasons(path, cap)["file"] == (
        f"image ok.png is {len(big)} bytes, over the limit of {len(big) - 1} (max_image_bytes)")
    row = {"id": "e", "question": "q?", "image": {"bytes": big}, "answer": "1"}
    item = problem_module.problem_from_row(row, None, cap)
    assert isinstance(item, InputError) and "over the limit" in item.reason
    assert InputConfig().max_image_bytes == 64 << 20


def test_an_empty_image_list_is_an_input_error(tmp_path):
    path = write_rows(tmp_path / "d", [
        GOOD,
        {"id": "empty", "question": "q?", "image": [], "answer": "1"},
        {"id": "empty2", "question": "q?", "images": [], "answer": "1"},
        {"id": "none", "question": "no image at all?", "answer": "1"},
    ])
    assert reasons(path) == {"empty": "image list is empty (leave the field out for a problem without images)",
                             "empty2": "image list is empty (leave the field out for a problem without images)"}


def directory_with_unread_files(tmp_path):
    d = tmp_path / "d"
    write_rows(d, [GOOD])
    (d / "more.csv").write_text("id,question\n")
    (d / "more.jsonl.gz").write_bytes(b"\x1f\x8b")
    (d / "README.md").write_text("# data")
    (d / ".DS_Store").write_bytes(b"")
    (d / "images").mkdir()
    return d


def test_an_input_directory_with_files_it_would_skip_is_refused(tmp_path):
    d = directory_with_unread_files(tmp_path)
    with pytest.raises(ConfigError, match=r"holds files prmtree does not read: more.csv, more.jsonl.gz \(it reads"):
        prmtree.run(d, out=tmp_path / "o", policy="simulated")
    assert not (tmp_path / "o").exists()  # refused before anything was opened
    (d / "more.csv").unlink()
    (d / "more.jsonl.gz").unlink()
    s = prmtree.run(d, out=tmp_path / "o", policy="simulated")  # images, README and dot files are fine
    assert s.problems_done == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="holds no .jsonl, .json, .parquet files"):
        prmtree.run(empty, out=tmp_path / "o2", policy="simulated")


@pytest.mark.slow
def test_the_cli_refuses_an_input_directory_with_files_it_would_skip_in_one_line(tmp_path):
    r = cli("run", "--input", directory_with_unread_files(tmp_path), "--out", tmp_path / "o", "--no-progress")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "more.csv" in r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("with_ids", [True, False])
def test_a_resume_skips_finished_problems_before_decoding_their_images(tmp_path, monkeypatch, with_ids):
    problems_path = write_jsonl(generate_problems(12, seed=6), tmp_path / "data")
    if not with_ids:  # ids then come from a hash of the question and the image bytes
        rows = [json.loads(line) for line in problems_path.read_text().splitlines()]
        problems_path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "id"}) + "\n" for r in rows))
    out = tmp_path / "o"
    prmtree.run(problems_path, out=out, policy="simulated", config={"search": {"budget": 16}})
    counts = {"read": 0, "decoded": 0}

    def counting(name, real):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(problem_module, "read_image_file", counting("read", problem_module.read_image_file))
    monkeypatch.setattr(problem_module, "validate_image_bytes",
                        counting("decoded", problem_module.validate_image_bytes))
    s = prmtree.run(problems_path, out=out, policy="simulated", config={"search": {"budget": 16}})
    assert s.problems_done == 12 and s.rollouts_this_session == 0
    assert counts == {"read": 0 if with_ids else 12, "decoded": 0}
    # another slice's problems are not decoded either (without a pilot: a fresh slice's pilot
    # decodes the whole input's first members, to learn what an unsliced run learns)
    counts.update(read=0, decoded=0)
    s = prmtree.run(problems_path, out=tmp_path / "slice", policy="simulated", slice="0/3",
                    config={"search": {"budget": 16}, "labels": {"learn_floor": False}})
    slice_done = load_manifest(tmp_path / "slice" / "manifest-00000-of-00003.json").completed
    assert counts["decoded"] == s.problems_done == len(slice_done) < 12


def test_image_mode_path_names_never_collide_across_ids(tmp_path):
    # ids "x/1" and "x_1" once shared images/x_1-0.png: one row showed another problem's image
    base = {"question": SYNTHETIC.question, "answer": SYNTHETIC.answer, "meta": SYNTHETIC.meta}
    rows = [{**base, "id": "x/1", "image": str(tmp_path / "d" / "red.png")},
            {**base, "id": "x_1", "image": str(tmp_path / "d" / "blue.png")}]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "red.png").write_bytes(png("red"))
    (tmp_path / "d" / "blue.png").write_bytes(png("blue"))
    data = write_rows(tmp_path / "d", rows)
    prmtree.run(data, policy="simulated", out=tmp_path / "o", config={"output": {"image_mode": "path"}})
    shown = {}
    for row in read_table(tmp_path / "o", "steps").to_pylist():
        with Image.open(tmp_path / "o" / row["images"][0]["path"]) as image:
            shown.setdefault(row["problem_id"], set()).add(image.convert("RGB").getpixel((0, 0)))
    assert shown == {"x/1": {(255, 0, 0)}, "x_1": {(0, 0, 255)}}


def test_force_in_embed_mode_keeps_an_images_folder_it_did_not_write(tmp_path):
    # --out is the data directory: its images/ folder holds the input, not prmtree's copies
    data_dir = tmp_path / "d"
    (data_dir / "images").mkdir(parents=True)
    (data_dir / "images" / "red.png").write_bytes(png("red"))
    data = write_rows(data_dir, [{"id": "a", "question": SYNTHETIC.question, "answer": SYNTHETIC.answer,
                                  "meta": SYNTHETIC.meta, "image": "images/red.png"}])
    prmtree.run(data, policy="simulated", out=data_dir)
    prmtree.run(data, policy="simulated", out=data_dir, strategy="shepherd", force=True)
    assert (data_dir / "images" / "red.png").read_bytes() == png("red")
    assert data.exists() and (data_dir / "ok.png").exists()
    assert set(read_table(data_dir, "steps").column("strategy").to_pylist()) == {"shepherd"}


@pytest.mark.slow
def test_a_policy_arg_of_the_wrong_type_is_one_line_exit_2(tmp_path):
    data = write_rows(tmp_path / "d", [{"id": "a", "question": SYNTHETIC.question, "answer": SYNTHETIC.answer,
                                        "image": "ok.png"}])
    r = cli("run", "--input", data, "--out", tmp_path / "o", "--policy", "simulated",
            "--policy-arg", "error_rate=abc", "--no-progress")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "prmtree: error: cannot build policy 'simulated': error_rate must be a number, got 'abc'"]


def test_a_parquet_file_prmtree_did_not_write_in_a_table_folder_is_refused(tmp_path):
    # load_dataset("parquet", data_files="out/steps/*.parquet") would read it as part of the run
    data = write_rows(tmp_path / "d", [{"id": "a", "question": SYNTHETIC.question, "answer": SYNTHETIC.answer,
                                        "meta": SYNTHETIC.meta, "image": "ok.png"}])
    out = tmp_path / "o"
    (out / "steps").mkdir(parents=True)
    (out / "steps" / "mydata.parquet").write_bytes(b"junk!")
    (out / "steps" / "notes.txt").write_text("mine")  # not a Parquet file: no loader takes it
    with pytest.raises(ConfigError, match=r"steps/mydata.parquet is not a prmtree shard, and loaders reading "
                                          r"steps/\*.parquet would take it for one"):
        prmtree.run(data, policy="simulated", out=out)
    with pytest.raises(ConfigError, match="is not a prmtree shard"):
        prmtree.run(data, policy="simulated", out=out, force=True)
    assert (out / "steps" / "mydata.parquet").read_bytes() == b"junk!"
    (out / "steps" / "mydata.parquet").unlink()
    prmtree.run(data, policy="simulated", out=out)
    assert load_manifest(out / "manifest.json").completed == ["a"] and (out / "steps" / "notes.txt").read_text() == "mine"


def test_image_data_given_as_a_text_path_is_named_as_such_and_its_reason_kept_short(tmp_path):
    import base64

    encoded = base64.b64encode(png("red", size=(300, 300)) * 50).decode()
    data = write_rows(tmp_path / "d", [
        {"id": "url", "question": "q?", "answer": "1", "image": "data:image/png;base64," + encoded[:100]},
        {"id": "b64", "question": "q?", "answer": "1", "image": encoded},
    ])
    found = reasons(data)
    assert found["url"].startswith("image entry is image data given as text (data:image/png;base64")
    assert found["b64"].startswith("image entry is image data given as text (") and "give the image's file path" in found["b64"]
    assert len(found["b64"]) < 300


def test_an_errors_table_reason_is_capped():
    from prmtree.engine.tables import MAX_REASON_CHARS, error_row

    row = error_row("p", "input", "x" * 400_000)
    assert len(row["reason"]) < MAX_REASON_CHARS + 40 and row["reason"].endswith("... (400,000 characters)")


def test_a_huge_image_is_refused_by_the_pixel_limit_even_past_pillows_own_guard():
    from prmtree.engine.errors import ImageError
    from prmtree.engine.problem import validate_image_bytes

    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, "PNG")  # 400 M pixels in 48 KB
    with pytest.raises(ImageError, match=r"image big.png is over the limit of 40000000 pixels \(decompression-bomb"):
        validate_image_bytes(buffer.getvalue(), "big.png", max_pixels=40_000_000)


def test_a_max_pixels_above_pillows_own_guard_is_the_limit_that_holds():
    # Before: Pillow's guard (~179 M pixels) refused the image first, whatever max_pixels said
    from prmtree.engine.errors import ImageError
    from prmtree.engine.problem import validate_image_bytes

    buffer = io.BytesIO()
    Image.new("1", (20000, 10000)).save(buffer, "PNG")  # 200 M pixels in 24 KB
    limit = Image.MAX_IMAGE_PIXELS
    validate_image_bytes(buffer.getvalue(), "big.png", max_pixels=500_000_000)
    assert Image.MAX_IMAGE_PIXELS == limit  # raised for the check only
    with pytest.raises(ImageError, match=r"image big.png is 20000x10000 = 200000000 pixels, over the limit of "
                                         r"100000000"):
        validate_image_bytes(buffer.getvalue(), "big.png", max_pixels=100_000_000)


def test_rows_that_crashed_the_whole_run_are_bad_rows_and_the_rest_run(tmp_path):
    # Before: one row's image path holding a NUL ("embedded null byte", exit 2, every rerun) and
    # one row nested 1,000 levels deep (RecursionError traceback, exit 1) stopped the run.
    deep = {**GOOD, "id": "deep", "meta": {**GOOD["meta"], "x": json.loads("[" * 50 + "]" * 50)}}
    path = write_rows(tmp_path / "d", [GOOD, {**GOOD, "id": "nul", "image": "ok.png\u0000.png"}, {**GOOD, "id": "x"}])
    with path.open("a") as handle:
        handle.write('{"id": "deeper", "meta": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
        handle.write(json.dumps(deep) + "\n")
    found = reasons(path)
    assert found["nul"] == "image entry 'ok.png\\x00.png' holds a NUL character: no file has such a name"
    assert found["problems.jsonl:4"] == "line 4 is nested too deeply to read as JSON"
    s = prmtree.run(path, policy="simulated", out=tmp_path / "o", seed=1)
    assert s.problems_done == 3 and s.input_errors == 2  # good, x and deep (50 levels: read)
    again = prmtree.run(path, policy="simulated", out=tmp_path / "o", seed=1)
    assert again.rollouts_this_session == 0


def test_a_damaged_parquet_row_group_is_one_bad_row_and_the_other_groups_run(tmp_path):
    # Before: "Couldn't deserialize thrift" stopped every run (exit 2, naming no file), and
    # with the default labels nothing at all was saved
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{**GOOD, "id": f"p{i}", "image": None, "meta": json.dumps(GOOD["meta"])} for i in range(6)]
    path = tmp_path / "in" / "p.parquet"
    path.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=2)
    meta = pq.ParquetFile(path).metadata
    start = meta.row_group(1).column(0).data_page_offset
    data = bytearray(path.read_bytes())
    data[start:start + 40] = b"\xff" * 40  # the second group's first page header
    path.write_bytes(bytes(data))
    found = list(iter_input(path))
    assert [p.id for p in found if isinstance(p, Problem)] == ["p0", "p1", "p4", "p5"]  # the groups around it
    bad = [i for i in found if isinstance(i, InputError)]
    assert [b.problem_id for b in bad] == ["p.parquet[2:4]"]
    assert bad[0].reason.startswith("p.parquet: rows 2 to 3 cannot be read (a damaged row group: ")


def test_a_text_only_data_set_with_image_named_fields_runs(tmp_path):
    # Before: a field named like an image ("image_caption", "num_images") was taken for the
    # image column: every run refused in one line, whatever image_field said
    rows = [{**GOOD, "id": f"t{i}", "image_caption": "a cat", "num_images": 0} for i in range(2)]
    for row in rows:
        del row["image"]
    path = write_rows(tmp_path / "t", rows)
    problem_module.check_input(path, InputConfig())
    assert [p.images for p in iter_input(path)] == [(), ()]
    moved = write_rows(tmp_path / "m", [{**{k: v for k, v in GOOD.items() if k != "image"}, "picture_file": "ok.png"}])
    with pytest.raises(ConfigError, match=r'set \[input\] image_field = "picture_file"'):  # holds one: still named
        problem_module.check_input(moved, InputConfig())
    text_only = {k: v for k, v in GOOD.items() if k != "image"}
    sourced = write_rows(tmp_path / "s", [{**text_only, "source": {"path": "gsm8k/train.jsonl", "line": 3}}])
    problem_module.check_input(sourced, InputConfig())  # an object with a path that names no image
    named = write_rows(tmp_path / "n", [{**text_only, "image_path": "imgs/000123"}])  # no suffix: its name says
    with pytest.raises(ConfigError, match=r'set \[input\] image_field = "image_path"'):
        problem_module.check_input(named, InputConfig())
    problem_module.check_input(named, InputConfig(image_field="none"))  # named on purpose: no images


def test_saved_datasets_are_told_from_folders_that_only_describe_theirs(tmp_path):
    # Before: a JSONL folder with a dataset_info.json was read as a saved dataset (0 rows), and
    # a saved DatasetDict's dataset_dict.json was read as its only row
    path = write_rows(tmp_path / "d", [GOOD])
    (path.parent / "dataset_info.json").write_text('{"description": "mine"}')
    assert [p.id for p in iter_input(path.parent)] == ["good"]
    datasets = pytest.importorskip("datasets")
    one = datasets.Dataset.from_list([{"id": "a", "question": "Q?", "answer": "1"}])
    datasets.DatasetDict({"train": one, "test": one}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ConfigError, match=r"is a saved DatasetDict \(splits: train, test\): give one split's folder, "
                                          r"e.g. --input '.*dd/train'"):
        problem_module.check_input(tmp_path / "dd", InputConfig())
    assert [p.id for p in iter_input(tmp_path / "dd" / "train")] == ["a"]


def test_float_answers_are_written_as_their_data_set_shows_them(tmp_path):
    # Before: a float32 column's 0.1 became '0.10000000149011612', and a pandas int column with
    # a missing value (float64) 2 became '2.0', which vqa and text grading then called wrong
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "ok.png").write_bytes(SYNTHETIC.images[0].data)
    answers = pa.array(np.array([0.1, 2.2, 2.0, 123456.789], dtype=np.float32))
    table = pa.table({"id": ["a", "b", "c", "d"], "question": ["Q?"] * 4, "image": ["ok.png"] * 4, "answer": answers})
    pq.write_table(table, tmp_path / "f.parquet")
    as_vqa = InputConfig(answer_type="vqa")
    assert [p.answer for p in iter_input(tmp_path / "f.parquet", as_vqa)] == ["0.1", "2.2", "2", "123456.79"]
    pq.write_table(pa.table({"id": ["e", "f", "g"], "question": ["Q?"] * 3, "image": ["ok.png"] * 3,
                             "answer": [3.0, 0.1, 2.0 ** -30]}), tmp_path / "g.parquet")
    assert [p.answer for p in iter_input(tmp_path / "g.parquet", InputConfig(answer_type="text"))] == [
        "3", "0.1", "9.313226e-10"]
    # compared as numbers (auto, number): as before, so earlier runs' fingerprints still match
    assert [p.answer for p in iter_input(tmp_path / "g.parquet")] == ["3.0", "0.1", "9.313225746154785e-10"]
