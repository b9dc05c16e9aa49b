"""Session 21, the input side: inspect's bad-row table (a total, kinds, examples), a broken
JSON file's position, a ``file://`` image URI, and short base64 image data given as text."""

from __future__ import annotations

import base64
import io
import json

import pytest
from conftest import png
from PIL import Image
from prmtree.engine.errors import ConfigError
from prmtree.engine.records import InputError, Problem
from prmtree.engine.problem import iter_problems
from prmtree.engine.synthetic import generate_problems, write_jsonl
from prmtree.inspect import print_report, write_html

import prmtree

CONFIG = {"search": {"k": 4, "budget": 16}}


def items_of(path):
    """Problems by id and bad rows' reasons by key, as loading reads ``path``."""
    items = list(iter_problems(path))
    return ({i.id: i for i in items if isinstance(i, Problem)},
            {i.problem_id: i.reason for i in items if isinstance(i, InputError)})


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# -- inspect: every bad row counted, grouped by kind -----------------------------------------


@pytest.fixture(scope="module")
def many_bad(tmp_path_factory):
    """A run with 2 good rows, 30 rows whose image files are missing (each its own path), 3
    empty image lists, and 4 rows without an answer, each with its own other field: 37 bad
    rows of 3 kinds."""
    tmp = tmp_path_factory.mktemp("many_bad")
    data = write_jsonl(generate_problems(2, seed=3), tmp)
    good = [json.loads(line) for line in data.read_text().splitlines()]
    bad = [dict(good[0], id=f"miss{i}", image=f"images/missing_{i}.png") for i in range(30)]
    bad += [dict(good[0], id=f"empty{i}", image=[]) for i in range(3)]
    bad += [{"id": f"noanswer{i}", "question": "q?", f"extra{i}": 1} for i in range(4)]
    write_rows(data, good + bad)
    out = tmp / "out"
    prmtree.run(data, out=out, policy="simulated", config=CONFIG)
    return out


def test_inspect_states_every_bad_row_and_groups_them_by_kind_with_an_example(many_bad, capsys, monkeypatch):
    # it showed the 20 most common exact reasons, with no total and no row id: 30 missing
    # images read as 20 lines "1 image images/missing_N.png not found", the rest unsaid
    monkeypatch.setenv("COLUMNS", "250")
    print_report(many_bad)
    printed = capsys.readouterr().out
    table = printed[printed.index("bad input rows (errors/)"):]
    assert table.splitlines()[0].strip() == "bad input rows (errors/): 37"
    cells = [[c.strip() for c in line.split("│")[1:4]] for line in table.splitlines() if line.startswith("│")]
    cells = [c for c in cells if c[0]]  # a long cell wraps onto lines of its own
    assert [c[0] for c in cells] == ["30", "4", "3"]
    assert cells[0][1] == "image … not found"
    assert cells[1][1].startswith("missing answer: the row has no … field (its fields: …, …, …)")
    assert cells[2][1] == "image list is empty (leave the field out for a problem without images)"
    assert cells[0][2] == "miss0: image images/missing_0.png not found"  # one row of the kind, and its reason
    assert cells[1][2].startswith("noanswer0: missing answer: the row has no 'answer' field (its fields: 'id'")


def test_the_html_report_states_the_bad_rows_as_the_terminal_does(many_bad, tmp_path):
    write_html(many_bad, tmp_path / "r.html", max_trees=0)
    page = (tmp_path / "r.html").read_text()
    assert "<h2>Bad input rows (errors/): 37</h2>" in page
    assert ("<tr><td>30</td><td>image … not found</td><td>miss0: image images/missing_0.png not found</td></tr>"
            in page)


def test_kinds_past_the_twentieth_are_counted_in_one_line():
    from prmtree.inspect import bad_row_kinds, bad_row_lines

    rows = [(f"r{i}", f"image {name}.png not found") for i, name in enumerate("abcde")]  # one kind, 5 rows
    rows += [(f"s{i}", f"meta.options must be a list, got {kind}") for i, kind in enumerate(
        ["set", "map", "tuple", "bool", "float", "int", "str", "bytes", "frozenset", "range", "complex", "slice",
         "module", "type", "object", "property", "memoryview", "bytearray", "ellipsis", "function", "method",
         "generator", "coroutine", "cell"])]  # 24 kinds of one row each
    lines = bad_row_lines(bad_row_kinds(rows))
    assert lines[0] == ("5", "image … not found", "r0: image a.png not found")
    assert len(lines) == 21 and lines[-1] == ("5", "and 5 more kinds", "")
    assert sum(int(n) for n, _, _ in lines) == len(rows)


# -- a broken JSON file says where ----------------------------------------------------------


def test_a_broken_json_file_names_the_line_and_column(tmp_path):
    # "big.json is not valid JSON (Expecting value)": in 5,000 rows, no word of where
    rows = [json.dumps({"id": str(i), "question": "q", "answer": "1"}) for i in range(5000)]
    path = tmp_path / "big.json"
    path.write_text("[\n" + ",\n".join(rows) + ",\n]\n")  # a stray comma before the last line
    _, reasons = items_of(path)
    assert reasons == {"big.json": "big.json is not valid JSON at line 5002, column 1 (Expecting value)"}


def test_a_broken_json_file_with_a_bom_counts_columns_in_its_text(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + b'[{"id": "a", "question": "q", "answer": }]')  # "}" is character 41
    _, reasons = items_of(path)
    assert reasons == {"bom.json": "bom.json is not valid JSON at line 1, column 41 (Expecting value)"}


# -- a file:// URI of a local file is read as that file --------------------------------------


def test_a_file_uri_of_a_local_image_is_read_as_the_file(tmp_path):
    # it was "a URL: a run reads local files only; download the images": wrong for a local file
    (tmp_path / "my pics").mkdir()
    image = tmp_path / "my pics" / "a.png"
    image.write_bytes(png("blue"))
    data = write_rows(tmp_path / "d.jsonl", [
        {"id": "uri", "question": "q?", "answer": "1", "image": image.as_uri()},  # "my%20pics": escapes decoded
        {"id": "host", "question": "q?", "answer": "1", "image": "file://localhost" + str(image)},
        {"id": "plain", "question": "q?", "answer": "1", "image": str(image)},
    ])
    problems, reasons = items_of(data)
    assert reasons == {}
    assert problems["uri"].images[0] == problems["host"].images[0] == problems["plain"].images[0] == png("blue")
    assert problems["uri"].images[0].path == image.as_uri()  # as the input gave it
    assert problems["uri"].images[0].file == str(image)


def test_a_file_uri_without_a_local_file_says_what_to_give(tmp_path):
    data = write_rows(tmp_path / "d.jsonl", [
        {"id": "gone", "question": "q?", "answer": "1", "image": (tmp_path / "gone.png").as_uri()},
        {"id": "relative", "question": "q?", "answer": "1", "image": "file://img/a.png"},
        {"id": "web", "question": "q?", "answer": "1", "image": "https://example.com/a.png"},
    ])
    _, reasons = items_of(data)
    assert reasons["gone"] == f"image {(tmp_path / 'gone.png').as_uri()} not found"
    assert reasons["relative"] == ("image entry file://img/a.png is a file:// URI that names no local absolute "
                                   "path: give the file's path without file:// (relative to the input file's "
                                   "folder, or absolute)")
    assert reasons["web"].startswith("image entry is a URL (https://example.com/a.png): a run reads local files")


def test_a_resume_sees_a_file_uri_image_unchanged(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(png("blue"))
    data = write_jsonl(generate_problems(1, seed=5), tmp_path)
    row = dict(json.loads(data.read_text()), image=image.as_uri())
    write_rows(data, [row])
    out = tmp_path / "out"
    first = prmtree.run(data, out=out, policy="simulated", config=CONFIG)
    again = prmtree.run(data, out=out, policy="simulated", config=CONFIG)
    assert first.input_errors == again.input_errors == 0 and first.problems_done == 1
    image.write_bytes(png("green"))  # the file the URI names changed: the problem changed
    with pytest.raises(ConfigError, match="changed in the input"):
        prmtree.run(data, out=out, policy="simulated", config=CONFIG)


# -- image data given as text, however short ------------------------------------------------


def encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (1, 1), "red").save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"])
def test_short_base64_image_data_is_named_as_image_data_not_a_missing_file(tmp_path, fmt):
    # under 200 characters it was a file name: "image iVBORw0KGgo...(all of it) not found"
    text = base64.b64encode(encoded(fmt)).decode()
    data = write_rows(tmp_path / "d.jsonl", [{"id": "b64", "question": "q?", "answer": "1", "image": text}])
    _, reasons = items_of(data)
    assert reasons["b64"] == (f"image entry is image data given as text ({text[:24]}..., {len(text)} characters): "
                              "give the image's file path, or its bytes in an image struct in Parquet")


@pytest.mark.parametrize("name", ["abcd", "img1", "QUJDRA==", "images/ok"])  # base64 letters, no image inside
def test_a_missing_file_named_in_base64_letters_is_still_a_missing_file(tmp_path, name):
    data = write_rows(tmp_path / "d.jsonl", [{"id": "f", "question": "q?", "answer": "1", "image": name}])
    _, reasons = items_of(data)
    assert reasons["f"] == f"image {name} not found"
