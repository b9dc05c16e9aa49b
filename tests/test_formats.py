"""Trainer-ready output and every input format, checked with real files and `datasets`."""

import io
import json
import re

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import cli
from PIL import Image

import prmtree
from prmtree.engine.output import load_manifest, read_table
from prmtree.engine.config import InputConfig
from prmtree.engine.records import InputError, Problem
from prmtree.engine.problem import iter_input
from prmtree.engine.synthetic import write_jsonl
from prmtree.policies import Completion



def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_datasets_loads_steps_with_decoded_images_and_trl_columns(embedded_run, small_problems):
    ds = datasets.load_dataset("parquet", data_files=str(embedded_run / "steps" / "*.parquet"), split="train")
    f = ds.features
    # TRL's stepwise-supervision format: prompt (string), completions (list of str), labels (list of bool)
    assert f["prompt"] == datasets.Value("string")
    assert f["completions"] == datasets.List(datasets.Value("string"))
    assert f["labels"] == datasets.List(datasets.Value("bool"))
    assert f["images"] == datasets.List(datasets.Image())
    by_id = {p.id: p for p in small_problems}
    for row in ds:
        image = row["images"][0]
        assert isinstance(image, Image.Image)
        original = pixels(by_id[row["problem_id"]].images[0].data)
        assert np.array_equal(np.asarray(image.convert("RGB")), original)
        assert len(row["completions"]) == len(row["labels"])


def test_image_path_mode_references_files_that_decode(tmp_path, small_problems, monkeypatch):
    prmtree.run(small_problems, policy="simulated", out=tmp_path, config={"output": {"image_mode": "path"}})
    table = read_table(tmp_path, "steps")
    first = table.column("images").to_pylist()[0][0]
    # relative to the run directory (a moved run still finds them): datasets reads them from there
    assert first["bytes"] is None and first["path"].startswith("images/") and (tmp_path / first["path"]).is_file()
    monkeypatch.chdir(tmp_path)
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "steps" / "*.parquet"), split="train")
    row = ds[0]
    by_id = {p.id: p for p in small_problems}
    assert np.array_equal(np.asarray(row["images"][0].convert("RGB")), pixels(by_id[row["problem_id"]].images[0].data))
    assert len(list((tmp_path / "images").iterdir())) == len(small_problems)


def test_chat_format_prompt_is_messages(tmp_path, small_problems):
    prmtree.run(small_problems[:2], policy="simulated", out=tmp_path, config={"output": {"chat_format": True}})
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "steps" / "*.parquet"), split="train")
    prompt = ds[0]["prompt"]
    assert prompt[0]["role"] == "user"
    assert prompt[0]["content"][0]["type"] == "image"
    assert prompt[0]["content"][-1]["type"] == "text"
    assert prompt[0]["content"][-1]["text"] in {p.question for p in small_problems}


def test_max_ci_width_keeps_only_confident_steps(tmp_path, small_problems):
    mc = {"labels": {"method": "mc"}}  # values from k = 8 rollouts each (calibrated samples adaptively)
    prmtree.run(small_problems, policy="simulated", out=tmp_path / "all", seed=2, config=mc)
    prmtree.run(small_problems, policy="simulated", out=tmp_path / "narrow", seed=2, config={**mc, "output": {"max_ci_width": 0.5}})
    all_steps = sum(len(x) for x in read_table(tmp_path / "all", "steps").column("labels").to_pylist())
    narrow = read_table(tmp_path / "narrow", "steps").to_pylist()
    assert 0 < sum(len(r["labels"]) for r in narrow) < all_steps
    from prmtree.engine.value import wilson_interval

    for row in narrow:  # every kept label was decided by a value sampled k=8 times (or an exact outcome)
        for v in row["values"]:
            if v not in (0.0, 1.0):
                lo, hi = wilson_interval(round(v * 8), 8)
                assert hi - lo <= 0.5, v


def test_label_false_mode_keeps_steps_after_the_first_error(tmp_path, small_problems):
    prmtree.run(small_problems, policy="simulated", out=tmp_path, config={"output": {"after_first_error": "label-false"}})
    rows = read_table(tmp_path, "steps").to_pylist()
    tails = [r for r in rows if r["labels"].count(False) > 1]
    assert tails
    for r in tails:
        first = r["labels"].index(False)
        assert not any(r["labels"][first:])


def _mixed_input(tmp_path, problems):
    """Good synthetic rows with every kind of bad row in one JSONL file."""
    src = write_jsonl(problems, tmp_path)
    lines = src.read_text().splitlines()
    img = tmp_path / "images"
    good = io.BytesIO()
    Image.new("RGB", (4, 4)).save(good, format="PNG")
    (img / "corrupt.png").write_bytes(good.getvalue()[:40])
    (img / "not-image.png").write_bytes(b"GIF89a? no")
    bomb = io.BytesIO()
    Image.new("1", (9000, 9000)).save(bomb, format="PNG")
    (img / "bomb.png").write_bytes(bomb.getvalue())
    first = json.loads(lines[0])
    bad = [
        {"id": "no-question", "image": first["image"], "answer": "1"},
        {"id": "no-answer", "question": "q?", "image": first["image"]},
        {"id": "missing-image", "question": "q?", "image": "images/nowhere.png", "answer": "1"},
        {"id": "corrupt-image", "question": "q?", "image": "images/corrupt.png", "answer": "1"},
        {"id": "not-an-image", "question": "q?", "image": "images/not-image.png", "answer": "1"},
        {"id": "bomb", "question": "q?", "image": "images/bomb.png", "answer": "1"},
        {**first, "question": first["question"]},  # duplicate id
    ]
    mixed = lines[:2] + [json.dumps(b) for b in bad[:4]] + ["{broken json"] + lines[2:] + [json.dumps(b) for b in bad[4:]]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(mixed) + "\n")
    return path


@pytest.mark.slow
def test_every_bad_input_case_in_one_file(tmp_path, small_problems):
    path = _mixed_input(tmp_path, small_problems)
    r = cli("run", "--input", path, "--out", tmp_path / "out", "--no-progress")
    assert r.returncode == 0, r.stderr
    errors = {e["problem_id"]: e["reason"] for e in read_table(tmp_path / "out", "errors").to_pylist()}
    assert errors["no-question"].startswith("missing question: the row has no 'question' field (its fields: 'id', ")
    assert errors["no-answer"].startswith("missing answer: the row has no 'answer' field")
    assert errors["missing-image"] == "image images/nowhere.png not found"
    assert errors["corrupt-image"].startswith("image images/corrupt.png is corrupt or not an image")
    assert errors["not-an-image"].startswith("image images/not-image.png is corrupt or not an image")
    assert " at 0x" not in errors["not-an-image"]  # Pillow's buffer address would differ run to run
    assert errors["bomb"] == ("image images/bomb.png is 9000x9000 = 81000000 pixels, over the limit of "
                              "40000000 (decompression-bomb guard)")
    assert errors["mixed.jsonl:7"].startswith("line 7 is not valid JSON")
    assert errors[f"{small_problems[0].id} (copy 2)"].startswith(
        f"duplicate id {small_problems[0].id!r} (mixed.jsonl:14): an earlier row has this id")
    steps_ids = set(read_table(tmp_path / "out", "steps").column("problem_id").to_pylist())
    nodes_ids = set(read_table(tmp_path / "out", "nodes").column("problem_id").to_pylist())
    assert nodes_ids == {p.id for p in small_problems}
    assert steps_ids <= nodes_ids and len(steps_ids) >= 4
    assert len(load_manifest(tmp_path / "out" / "manifest.json").rejected) == 8


def test_input_formats_all_give_the_same_problems(tmp_path, small_problems):
    jsonl = write_jsonl(small_problems, tmp_path)
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    expected = [(p.id, p.question, p.answer, p.images[0].data) for p in small_problems]

    def got(path, fmt=InputConfig()):
        items = list(iter_input(path, fmt))
        assert all(isinstance(i, Problem) for i in items), [i for i in items if isinstance(i, InputError)]
        return [(p.id, p.question, p.answer, p.images[0].data) for p in items]

    assert got(jsonl) == expected
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    assert got(tmp_path / "rows.json") == expected
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": rows}))
    assert got(tmp_path / "wrapped.json") == expected
    # Parquet with an image path column (relative to the file) and renamed columns
    renamed = [{"uid": r["id"], "q": r["question"], "img": r["image"], "a": r["answer"],
                "meta": json.dumps(r["meta"])} for r in rows]
    pq.write_table(pa.Table.from_pylist(renamed), tmp_path / "paths.parquet")
    fmt = InputConfig(id_field="uid", question_field="q", image_field="img", answer_field="a")
    assert got(tmp_path / "paths.parquet", fmt) == expected
    # Parquet with an Image struct column
    structs = [{"id": p.id, "question": p.question, "answer": p.answer,
                "image": {"bytes": p.images[0].data, "path": None}} for p in small_problems]
    sub = tmp_path / "dir"
    sub.mkdir()
    pq.write_table(pa.Table.from_pylist(structs[:3]), sub / "a.parquet")
    pq.write_table(pa.Table.from_pylist(structs[3:]), sub / "b.parquet")
    assert got(sub) == expected  # a directory of files, in name order
    # A Hugging Face dataset saved to disk, with a decoded Image feature
    ds = datasets.Dataset.from_list(structs).cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "hf"))
    assert got(tmp_path / "hf") == expected


def test_run_from_a_renamed_parquet_via_config(tmp_path, small_problems):
    rows = [{"uid": p.id, "prompt_text": p.question, "picture": {"bytes": p.images[0].data, "path": None},
             "gold": p.answer, "meta": json.dumps(p.meta)} for p in small_problems]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet")
    config = {"input": {"id_field": "uid", "question_field": "prompt_text", "image_field": "picture",
                        "answer_field": "gold"}}
    s = prmtree.run(tmp_path / "in.parquet", policy="simulated", out=tmp_path / "out", config=config)
    assert s.problems_done == len(small_problems) and s.input_errors == 0


@pytest.mark.slow
def test_html_report_escapes_model_text(tmp_path, small_problems):
    class Evil:
        async def generate(self, request):
            bad = "<script>alert('pwned')</script>"
            return [Completion(f"{bad}\n\n\\boxed{{{request.problem.answer if i % 2 else 0}}}", 5)
                    for i in range(request.n)]

    prmtree.run(small_problems[:2], policy=Evil(), out=tmp_path / "out", strategy="shepherd")
    r = cli("inspect", tmp_path / "out", "--html", tmp_path / "r.html", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "label balance per depth" in r.stdout
    page = (tmp_path / "r.html").read_text()
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in page
    assert "<script" not in page
    assert "data:image/png;base64," in page
    assert "<svg" in page


@pytest.mark.slow
def test_exports(tmp_path, embedded_run):
    steps = read_table(embedded_run, "steps").to_pylist()
    for fmt, name in [("trl", "t.parquet"), ("prm800k", "p.jsonl"), ("pairs", "pairs.jsonl"), ("jsonl", "s.jsonl")]:
        r = cli("export", embedded_run, "--format", fmt, "--to", tmp_path / name, timeout=60)
        assert r.returncode == 0, r.stderr
    trl = datasets.load_dataset("parquet", data_files=str(tmp_path / "t.parquet"), split="train")
    assert trl.column_names == ["prompt", "images", "completions", "labels"]
    assert isinstance(trl[0]["images"][0], Image.Image)
    prm = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(prm) == len(steps)
    ratings = [s["completions"][0]["rating"] for s in prm[0]["label"]["steps"]]
    assert ratings == [1 if x else -1 for x in steps[0]["labels"]]
    pairs = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == read_table(embedded_run, "pairs").num_rows
    assert pairs and all(p["chosen_value"] > p["rejected_value"] for p in pairs)
    plain = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert plain[0]["completions"] == steps[0]["completions"]
    r = cli("export", tmp_path, "--format", "trl", "--to", tmp_path / "x")
    assert r.returncode == 2 and "no prmtree manifest" in r.stderr


def test_html_report_shortens_runaway_steps(tmp_path, small_problems):
    class Runaway:
        async def generate(self, request):
            return [Completion("na" * 200_000 + f"\n\n\\boxed{{{request.problem.answer if i % 2 else 0}}}", 5)
                    for i in range(request.n)]

    prmtree.run(small_problems[:2], policy=Runaway(), out=tmp_path / "out", strategy="shepherd")
    from prmtree.cli import main

    assert main(["inspect", str(tmp_path / "out"), "--html", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    # the boxed answer alone after a blank line stays with the step before it: 400,000 + its line
    assert re.search(r"\.\.\. \(400,0\d\d characters\)", page)
    assert len(page) < 3_000_000  # 400 KB steps, shown in full, made a page many times this
