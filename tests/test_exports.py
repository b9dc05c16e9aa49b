"""Every export read the way its trainer reads it.

OpenRLHF and InternVL do not install here, so their readers are reproduced from their
code (cited per test) with a tokenizer the test trains on the exported text: placeholder
tokens found in the tokenised input, labels assigned to them after truncation, image
tags counted against images. Qwen2.5-Math-PRM's convention is checked with a chat
template that renders like Qwen's; the ``hf`` dataset with ``datasets`` itself.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shutil
from itertools import chain
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.json
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from conftest import cli, run_with_pairs
from PIL import Image

import prmtree
from prmtree.engine.output import read_table
from prmtree.engine.synthetic import generate_problems
from prmtree.engine.registry import EXPORT_FORMATS
from prmtree.export import PLACEHOLDER, ExportError, ExportFormat, ExportOptions, export, format_list
from prmtree.export.base import atomic_open
from prmtree.export.qwen_prm import QWEN_STEP_TOKEN
from prmtree.export.rows import WORD_JOINER, decided, defuse, iter_rows
from prmtree.export.visualprm import VISUALPRM_SYSTEM_PROMPT

# -- fixtures ------------------------------------------------------------------------------


# ``small_problems`` and ``embedded_run`` (a real run: embedded images, plain prompts) are in conftest.py.


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory, small_problems):
    """A real run with images as paths under out/images and prompts as chat messages."""
    out = tmp_path_factory.mktemp("chat-run")
    prmtree.run(small_problems[:3], policy="simulated", out=out, seed=2,
                config={"output": {"image_mode": "path", "chat_format": True}})
    return out


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def nasty_run(tmp_path_factory, embedded_run):
    """Hand-written rows a real run can produce but the synthetic policy does not: two images,
    text that contains every marker, a step already numbered, an undecided label, extra columns."""
    out = tmp_path_factory.mktemp("nasty-run")
    (out / "steps").mkdir()
    base = read_table(embedded_run, "steps").schema
    schema = base.append(pa.field("label_source", pa.list_(pa.string()))).append(
        pa.field("confidence", pa.list_(pa.float64())))
    images = [{"bytes": _png((200, 0, 0)), "path": "a.png"}, {"bytes": _png((0, 0, 200)), "path": "b.png"}]
    rows = [
        {
            "problem_id": "p1", "path_id": "x1",
            "prompt": "Сколько книжки? <image> counts <extra_0> and <|im_end|> ки too",
            "images": images,
            "completions": ["Step 1: read the книжки ки.", "x = 2 <extra_0> <|im_start|> <image>", "so 4 ки"],
            "labels": [True, True, False], "values": [1.0, None, 0.0],
            "answer": "4", "final_correct": False, "strategy": "omega", "policy": "hand",
            "label_source": ["mc", "inferred", "mc"], "confidence": [0.9, 0.5, 0.8],
        },
        {
            "problem_id": "p2", "path_id": "x2", "prompt": "What is 1 + 1?", "images": images[:1],
            "completions": ["1 + 1 = 2.", "undecided step", "after it"],
            "labels": [True, None, False], "values": [0.75, 0.5, None],
            "answer": "2", "final_correct": True, "strategy": "omega", "policy": "hand",
            "label_source": ["mc", "mc", "mc"], "confidence": [0.9, 0.1, 0.9],
        },
        {
            "problem_id": "p3", "path_id": "x3", "prompt": "Nothing decided?", "images": images[:1],
            "completions": ["a step"], "labels": [None], "values": [None],
            "answer": "1", "final_correct": False, "strategy": "omega", "policy": "hand",
            "label_source": ["mc"], "confidence": [0.0],
        },
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), out / "steps" / "part-00000.parquet")
    (out / "manifest.json").write_text(json.dumps({"config": {}, "config_hash": "", "versions": {}, "completed": [],
                                                   "stats": {}, "shards": [
        {"table": "steps", "file": "steps/part-00000.parquet", "rows": 3}], "status": "finished"}))
    return out


def steps_rows(out: Path) -> list[dict]:
    return read_table(out, "steps").to_pylist()


def by_path(out: Path) -> dict[str, dict]:
    return {r["path_id"]: r for r in steps_rows(out)}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def tiny_tokenizer(texts, specials):
    """A word-level tokenizer trained on ``texts``, the markers added as special tokens (as a
    trainer adds its placeholder / step token), wrapped as transformers' fast tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(list(texts) + ["+ -"], trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
    tok.add_special_tokens(list(specials))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")


def convert_token_to_id(token, tokenizer):
    """openrlhf/utils/utils.py: a token must encode to exactly one id."""
    ids = tokenizer.encode(token, add_special_tokens=False)
    assert len(ids) == 1, f"{token!r} is not a single token"
    return ids[0]


# -- OpenRLHF ------------------------------------------------------------------------------


def openrlhf_item(text, label_values, tokenizer, max_length, placeholder, reward_tokens):
    """openrlhf/datasets/process_reward_dataset.py ``__getitem__`` (v0.9.5, the last release
    with the PRM trainer); float labels take v0.5.5's float tensor (later releases fail on them)."""
    input_ids = tokenizer(text, max_length=max_length, padding=False, truncation=True, return_tensors="pt",
                          add_special_tokens=False)["input_ids"]
    assert isinstance(label_values, list), "labels should be a list of strings or numbers"
    placeholder_id = convert_token_to_id(placeholder, tokenizer)
    if isinstance(label_values[0], str):
        for label in label_values:
            assert label in reward_tokens
        label_tensor = torch.tensor([convert_token_to_id(x, tokenizer) for x in label_values], dtype=input_ids.dtype)
        labels = torch.full_like(input_ids, -100)
    else:
        label_tensor = torch.tensor(label_values, dtype=torch.float)
        labels = torch.full_like(input_ids, -100, dtype=torch.float)
    mask = input_ids == placeholder_id
    num_placeholders = mask.sum(dim=-1)
    labels[mask] = label_tensor[..., : num_placeholders.max()]
    return input_ids[0], labels[0], mask[0]


@pytest.mark.parametrize("soft", [False, True])
def test_openrlhf_labels_sit_on_placeholders_and_survive_truncation(tmp_path, embedded_run, soft):
    target = tmp_path / "prm.jsonl"
    n = export(embedded_run, "openrlhf", target, ExportOptions(soft=soft))
    source = by_path(embedded_run)
    assert n == len(source)
    ds = datasets.load_dataset("json", data_files=str(target), split="train")  # OpenRLHF's blending_datasets
    tok = tiny_tokenizer(ds["input"], [PLACEHOLDER])
    max_length = int(np.median([len(tok(t, add_special_tokens=False)["input_ids"]) for t in ds["input"]]))
    truncated = whole = 0
    for text, label, path_id in zip(ds["input"], ds["label"], ds["path_id"]):
        steps, hard, values = decided(source[path_id])
        ids, labels, mask = openrlhf_item(text, label, tok, max_length, PLACEHOLDER, ["+", "-"])
        full = tok(text, add_special_tokens=False)["input_ids"]
        k = int(mask.sum())
        if len(full) <= max_length:
            whole += 1
            assert k == len(label) == len(steps)
        else:
            truncated += 1
            assert k <= len(label) == len(steps)
        positions = mask.nonzero().flatten().tolist()
        if soft:
            want = [v if v is not None else float(h) for h, v in zip(hard, values)][:k]
            assert labels[mask].tolist() == pytest.approx(want)
        else:
            plus, minus = convert_token_to_id("+", tok), convert_token_to_id("-", tok)
            assert labels[mask].tolist() == [plus if h else minus for h in hard[:k]]
        # label j sits right after step j's own tokens
        start = 0
        for j, pos in enumerate(positions):
            step_ids = tok(defuse(steps[j].strip(), (PLACEHOLDER,)), add_special_tokens=False)["input_ids"]
            assert ids[start:pos].tolist()[-len(step_ids):] == step_ids
            start = pos + 1
    assert truncated and whole


# -- InternVL / VisualPRM ------------------------------------------------------------------


def internvl_read(meta_path: Path):
    """InternVL internvl_chat_finetune.py: the meta file's root + annotation, each line's images
    (a list goes to ``multi_modal_multi_image_get_item``), and ``preprocess_internvl2_5``'s
    handling of the conversation: system turn first, ``<image>`` tags replaced in human turns
    in order, their count asserted equal to the number of images."""
    meta = json.loads(meta_path.read_text())
    (name, entry), = meta.items()
    lines = Path(entry["annotation"]).read_text(encoding="utf-8").splitlines()
    assert entry["length"] == len(lines)
    for line in lines:
        item = json.loads(line)
        assert isinstance(item["image"], list) and item["image"]
        images = [Image.open(os.path.join(entry["root"], p)).convert("RGB") for p in item["image"]]
        conversations = item["conversations"]
        system = None
        if conversations[0]["from"] == "system":
            system, conversations = conversations[0]["value"], conversations[1:]
        seen = 0
        for turn in conversations:
            if turn["from"] == "human":
                for _ in range(turn["value"].count("<image>")):
                    if seen == len(images):
                        break
                    turn["value"] = turn["value"].replace("<image>", "<img><IMG_CONTEXT></img>", 1)
                    seen += 1
            else:
                assert turn["from"] == "gpt"
        assert seen == len(images)
        yield item, images, system, conversations


def test_visualprm_reads_as_internvl_multi_turn_prm_data(tmp_path, embedded_run, small_problems):
    target = tmp_path / "vprm" / "train.jsonl"
    n = export(embedded_run, "visualprm", target)
    source = by_path(embedded_run)
    pictures = {p.id: p.images[0].data for p in small_problems}
    meta = tmp_path / "vprm" / "train_meta.json"
    items = list(internvl_read(meta))
    assert len(items) == n == len(source)
    for item, images, system, conversations in items:
        row = source[item["path_id"]]
        steps, labels, _ = decided(row)
        assert system == VISUALPRM_SYSTEM_PROMPT
        assert [t["from"] for t in conversations] == ["human", "gpt"] * len(steps)
        assert [t["value"] for t in conversations[1::2]] == ["+" if x else "-" for x in labels]
        first = conversations[0]["value"]
        assert first.startswith("<img><IMG_CONTEXT></img>\n### Question:\n" + row["prompt"])
        assert first.endswith("### Solution Process:\n" + steps[0].strip())
        assert [t["value"] for t in conversations[2::2]] == [s.strip() for s in steps[1:]]
        original = Image.open(io.BytesIO(pictures[row["problem_id"]])).convert("RGB")
        assert np.array_equal(np.asarray(images[0]), np.asarray(original))
    # one file per distinct image, named by content
    assert len(list((tmp_path / "vprm" / "images").iterdir())) == len({r["problem_id"] for r in source.values()})


def test_visualprm_without_system_prompt_and_with_two_images(tmp_path, nasty_run):
    target = tmp_path / "v.jsonl"
    assert export(nasty_run, "visualprm", target, ExportOptions(system_prompt="")) == 2  # p3 has no decided step
    items = list(internvl_read(tmp_path / "v_meta.json"))
    two = next(i for i, *_ in items if i["path_id"] == "x1")
    # an empty system turn: without one InternVL would use its template's default system message
    assert two["conversations"][0] == {"from": "system", "value": ""}
    assert two["conversations"][1]["value"].startswith(
        "Image-1: <img><IMG_CONTEXT></img>\nImage-2: <img><IMG_CONTEXT></img>\n### Question:")
    assert [t["value"] for t in two["conversations"][2::2]] == ["+", "+", "-"]
    one = next(i for i, *_ in items if i["path_id"] == "x2")
    assert [t["value"] for t in one["conversations"][2::2]] == ["+"]  # cut at the undecided label


# -- Qwen2.5-Math-PRM ------------------------------------------------------------------------

# Renders like Qwen2.5's / Qwen2-VL's chat templates (ChatML; image parts as vision tokens).
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
)
QWEN_SPECIALS = [QWEN_STEP_TOKEN, "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"]


def test_qwen_prm_without_a_system_prompt_writes_an_empty_system_turn(tmp_path):
    # Before: no system turn, so Qwen's templates (Qwen2.5's, Qwen2-VL's) put in their default
    # system prompt, in the --tokenizer `text` and wherever a trainer renders `messages`
    from prmtree.export.qwen_prm import QwenPRM

    row = {"problem_id": "p", "path_id": "x", "prompt": "What is 3 + 4?", "images": [],
           "completions": ["A is 3.", "The total is 7."], "labels": [True, False], "values": [1.0, 0.0]}
    tok = tiny_tokenizer(["What is 3 + 4 ?"], QWEN_SPECIALS)
    tok.chat_template = (  # as Qwen2.5's: a default system turn where the messages open without one
        "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "{% endif %}" + QWEN_TEMPLATE)
    tok.save_pretrained(tmp_path / "qwen")
    fmt = QwenPRM()
    fmt._parts = False
    for options in (ExportOptions(system_prompt=""), ExportOptions(system_prompt="", tokenizer=tmp_path / "qwen")):
        record = fmt.builder(options)(row, [])
        assert record["messages"][0] == {"role": "system", "content": ""}
        assert "helpful assistant" not in record["text"]
        assert record["text"].startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user\n")


def test_qwen_prm_marks_every_step_with_extra_0_in_the_rendered_chat(tmp_path, embedded_run):
    target = tmp_path / "qwen.jsonl"
    n = export(embedded_run, "qwen-prm", target)
    source = by_path(embedded_run)
    records = read_jsonl(target)
    assert len(records) == n == len(source)
    tok = tiny_tokenizer([r["text"] for r in records], QWEN_SPECIALS)
    tok.chat_template = QWEN_TEMPLATE
    step_sep_id = tok.encode(QWEN_STEP_TOKEN, add_special_tokens=False)[0]  # as the model card does
    for r in records:
        steps, labels, _ = decided(source[r["path_id"]])
        assert tok.apply_chat_template(r["messages"], tokenize=False) == r["text"]
        ids = torch.tensor(tok(r["text"], add_special_tokens=False)["input_ids"])
        assert int((ids == step_sep_id).sum()) == len(r["labels"]) == len(steps)
        assert r["labels"] == [int(x) for x in labels]
        assistant = r["messages"][-1]["content"]
        assert r["images"] and assistant == [{"type": "text", "text": "".join(s.strip() + QWEN_STEP_TOKEN for s in steps)}]
        assert all(isinstance(m["content"], list) for m in r["messages"])  # one type per column
        assert all((tmp_path / p).is_file() for p in r["images"])
    # the trainers' loaders read the file: pyarrow's JSON reader, and `datasets` (which uses it)
    table = pa.json.read_json(target)
    assert table.num_rows == len(records)
    loaded = datasets.load_dataset("json", data_files=str(target), split="train")
    assert tok.apply_chat_template(loaded[0]["messages"], tokenize=False) == records[0]["text"]
    # the same file rendered with a tokenizer's own chat template
    tok.save_pretrained(tmp_path / "tok")
    again = tmp_path / "qwen2.jsonl"
    export(embedded_run, "qwen-prm", again, ExportOptions(tokenizer=tmp_path / "tok", soft=True))
    for r, s in zip(read_jsonl(again), records):
        assert r["text"] == s["text"]
        assert all(0.0 <= x <= 1.0 for x in r["labels"]) and len(r["labels"]) == len(s["labels"])
    # a text model's template (Qwen2.5-Math-PRM's joins contents as strings) cannot write image parts:
    # one line, not a TypeError traceback from inside the template
    tok.chat_template = ("{% for message in messages %}<|im_start|>{{ message['role'] + '\\n' + message['content'] }}"
                         "<|im_end|>\n{% endfor %}")
    tok.save_pretrained(tmp_path / "text-tok")
    with pytest.raises(ExportError, match=r"the chat template of .*text-tok' cannot render a message with images "
                                          r"\(TypeError: .*\): use a vision model's tokenizer"):
        export(embedded_run, "qwen-prm", tmp_path / "qwen3.jsonl", ExportOptions(tokenizer=tmp_path / "text-tok"))
    assert not (tmp_path / "qwen3.jsonl").exists()
    tok.chat_template = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\\n{{ message['content'] }}"
                         "<|im_end|>\\n{% endfor %}")  # prints a parts list as its Python text
    tok.save_pretrained(tmp_path / "repr-tok")
    with pytest.raises(ExportError, match=r"writes a message's image parts as text: use a vision model's tokenizer"):
        export(embedded_run, "qwen-prm", tmp_path / "qwen4.jsonl", ExportOptions(tokenizer=tmp_path / "repr-tok"))


def test_a_chat_template_that_drops_steps_before_a_think_tag_is_refused(tmp_path):
    # Before: DeepSeek-R1-style templates keep only the text after the last '</think>' of an
    # assistant message: a step holding one lost every step before it, and their <extra_0>,
    # while `labels` kept them all: rewards read at the wrong steps, exit 0.
    from prmtree.export.qwen_prm import QwenPRM

    row = {"problem_id": "p", "path_id": "x", "prompt": "What is 3 + 4?", "images": [],
           "completions": ["<think>\nA is 3.", "B is 4.\n</think>", "The total is 7."],
           "labels": [True, True, False], "values": [1.0, 1.0, 0.0]}
    tok = tiny_tokenizer(["What is 3 + 4 ?"], QWEN_SPECIALS)
    tok.chat_template = QWEN_TEMPLATE
    tok.save_pretrained(tmp_path / "plain")
    fmt = QwenPRM()
    fmt._parts = False  # (what write() finds for a run without images: every content a string)
    record = fmt.builder(ExportOptions(tokenizer=tmp_path / "plain"))(row, [])
    assert record["text"].count(QWEN_STEP_TOKEN) == len(record["labels"]) == 3
    tok.chat_template = (
        "{% for message in messages %}{% set content = message['content'] %}"
        "{% if message['role'] == 'assistant' and '</think>' in content %}"
        "{% set content = content.split('</think>')[-1] %}{% endif %}"
        "<|im_start|>{{ message['role'] }}\n{{ content }}<|im_end|>\n{% endfor %}")
    tok.save_pretrained(tmp_path / "think")
    with pytest.raises(ExportError, match=r"--tokenizer '.*nowhere' is no folder: give the folder of a tokenizer"):
        QwenPRM().builder(ExportOptions(tokenizer=tmp_path / "nowhere"))  # not transformers' "Repo id must use ..."
    with pytest.raises(ExportError, match=r"rendered problem 'p' with 2 <extra_0> markers for its 3 labelled steps "
                                          r"\(a reasoning model's template drops the text before a '</think>'"):
        fmt.builder(ExportOptions(tokenizer=tmp_path / "think"))(row, [])


# -- Math-Shepherd ---------------------------------------------------------------------------


def math_shepherd_parse(example):
    """TRL's former examples/datasets/math_shepherd.py ``process_example`` (general case)."""
    inputs = example["input"].replace("ки", "ⶻ")
    indexes = [m.start() for m in re.finditer("ⶻ", inputs)]
    assert all(example["label"][idx] in ["+", "-"] for idx in indexes)
    labels = [example["label"][idx] == "+" for idx in indexes]
    steps = [inputs[i:j] for i, j in zip(chain([0], indexes), chain(indexes, [None]))][:-1]
    prompt, completions = steps[0], [c[1:].strip() for c in steps[1:]]
    prompt, first_step = prompt.split("Step 1:")
    completions = [("Step 1:" + first_step).strip()] + completions
    assert len(completions) == len(labels)
    return prompt.strip(), completions, labels


def test_math_shepherd_columns_parse_back_to_the_steps(tmp_path, embedded_run):
    target = tmp_path / "ms.jsonl"
    assert export(embedded_run, "math-shepherd", target) == len(steps_rows(embedded_run))
    ds = datasets.load_dataset("json", data_files=str(target), split="train")
    assert {"input", "label", "task"} <= set(ds.column_names)
    source = by_path(embedded_run)
    for example in ds:
        steps, labels, _ = decided(source[example["path_id"]])
        prompt, completions, parsed = math_shepherd_parse(example)
        assert prompt == source[example["path_id"]]["prompt"].strip()
        assert completions == [f"Step {k}: {s.strip()}" for k, s in enumerate(steps, start=1)]
        assert parsed == labels
        assert len(example["input"]) == len(example["label"]) + example["input"].count("ки")


def test_math_shepherd_numbers_every_step_itself_so_its_readers_find_step_1():
    """Before: a step numbered ``Step 1.`` by the policy was kept as it was, and a question
    holding ``Step 1:`` split twice: TRL's converter raised on both."""
    from prmtree.export.rows import tagged_solution

    text = tagged_solution("Do Step 1: first?", ["Step 1. add", "**Step 2:** carry", "step 9: done"], "ки")
    example = {"input": text, "label": text.replace("ки", "+")}
    prompt, completions, labels = math_shepherd_parse(example)
    assert completions == ["Step 1: add", "Step 2: carry", "Step 3: done"] and labels == [True] * 3
    # headers as models write them; a number that is not the step's own is left alone
    steps = ["## Step 1: Find x", "**Step 1: Understand it**", "Step 2.1: sub-step", "Step 1: **Set up.** x"]
    text = tagged_solution("Why?", steps, "ки")
    _, completions, _ = math_shepherd_parse({"input": text, "label": text.replace("ки", "+")})
    assert [c.replace(WORD_JOINER, "") for c in completions] == [
        "Step 1: Find x", "Step 2: **Step 1: Understand it**", "Step 3: Step 2.1: sub-step", "Step 4: **Set up.** x"]
    text = tagged_solution("Why?", ["**Step 1: Title**", "b"], "ки")  # its own 'Step 1:' left in the first step
    assert math_shepherd_parse({"input": text, "label": text.replace("ки", "+")})[1][0].startswith("Step 1: **S")
    assert prompt.replace(WORD_JOINER, "") == "Do Step 1: first?"


# -- markers in the text never become extra labels ------------------------------------------


def test_markers_inside_text_are_defused_in_every_format(tmp_path, nasty_run):
    source = {r["path_id"]: r for r in steps_rows(nasty_run)}
    export(nasty_run, "openrlhf", tmp_path / "o.jsonl")
    for r in read_jsonl(tmp_path / "o.jsonl"):
        assert r["input"].count(PLACEHOLDER) == len(r["label"]) == len(decided(source[r["path_id"]])[0])
        assert len(r["images"]) == len(source[r["path_id"]]["images"])
    first = next(r for r in read_jsonl(tmp_path / "o.jsonl") if r["path_id"] == "x1")
    assert "Step 1: read the книжки" not in first["input"] and f"к{WORD_JOINER}и" in first["input"]
    assert first["input"].count("Step 1:") == 1  # the step's own number is kept, not doubled
    export(nasty_run, "qwen-prm", tmp_path / "q.jsonl")
    for r in read_jsonl(tmp_path / "q.jsonl"):
        assert r["text"].count(QWEN_STEP_TOKEN) == len(r["labels"])
        assert r["text"].count("<|im_start|>") == len(r["messages"])
    export(nasty_run, "visualprm", tmp_path / "v.jsonl")  # InternVL's own tokens too: a turn's end, an image's
    for r in read_jsonl(tmp_path / "v.jsonl"):
        human = [t["value"] for t in r["conversations"] if t["from"] == "human"]
        assert human[0].count("<image>") == len(r["image"]) and not any(t.count("<image>") for t in human[1:])
        assert not any(token in t for t in human for token in ("<|im_end|>", "<|im_start|>", "<img>", "<IMG_CONTEXT>"))
    export(nasty_run, "math-shepherd", tmp_path / "m.jsonl")
    for r in read_jsonl(tmp_path / "m.jsonl"):
        assert r["input"].count(PLACEHOLDER) == len(decided(source[r["path_id"]])[0])
        assert len(math_shepherd_parse(r)[1]) == len(decided(source[r["path_id"]])[0])
    export(nasty_run, "openrlhf", tmp_path / "soft.jsonl", ExportOptions(soft=True))
    soft = {r["path_id"]: r["label"] for r in read_jsonl(tmp_path / "soft.jsonl")}
    assert soft == {"x1": [1.0, 1.0, 0.0], "x2": [0.75]}  # unmeasured value -> its hard label


def test_a_placeholder_that_defusing_cannot_break_is_refused_and_overlapping_ones_are_broken(tmp_path, nasty_run):
    # Before: --placeholder "=" was taken, and a word joiner after the only character left
    # each "=" of the step text whole, so "x = 2" read as an extra placeholder and the
    # labels paired with the wrong steps. A marker whose start repeats its end ("aa" in
    # "aaa") survived one replacing pass.
    for placeholder in ("=", "к", f"a{WORD_JOINER}"):
        with pytest.raises(ExportError, match=r"placeholder must be at least 2 characters, without U\+2060, got "
                                              + re.escape(repr(placeholder))) as info:
            ExportOptions(placeholder=placeholder)
        assert "\n" not in str(info.value)
    assert "aa" not in defuse("aaa", ("aa",)) and "abab" not in defuse("x ababab", ("abab",))
    assert defuse("aaa", ("aa",)).replace(WORD_JOINER, "") == "aaa"
    source = {r["path_id"]: r for r in steps_rows(nasty_run)}
    export(nasty_run, "openrlhf", tmp_path / "o.jsonl", ExportOptions(placeholder="кк"))
    for r in read_jsonl(tmp_path / "o.jsonl"):
        assert r["input"].count("кк") == len(r["label"]) == len(decided(source[r["path_id"]])[0])


# -- Hugging Face dataset -----------------------------------------------------------------


def card_parts(directory: Path) -> tuple[dict, str]:
    text = (directory / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def test_qwen_prm_of_a_run_mixing_image_and_text_only_rows_reads_with_pyarrow(tmp_path):
    problems = [p if i % 2 else dataclasses.replace(p, images=()) for i, p in enumerate(generate_problems(6, seed=3))]
    prmtree.run(problems, policy="simulated", out=tmp_path / "run", config={"search": {"budget": 24}})
    export(tmp_path / "run", "qwen-prm", tmp_path / "q.jsonl")
    records = read_jsonl(tmp_path / "q.jsonl")
    assert any(r["images"] for r in records) and any(not r["images"] for r in records)
    assert all(isinstance(m["content"], list) for r in records for m in r["messages"])  # one type per column
    assert pa.json.read_json(tmp_path / "q.jsonl").num_rows == len(records)


def test_the_card_of_a_text_only_run_claims_no_images(tmp_path):
    problems = [dataclasses.replace(p, images=()) for p in generate_problems(6, seed=3)]
    prmtree.run(problems, policy="simulated", out=tmp_path / "run", config={"search": {"budget": 24}})
    export(tmp_path / "run", "hf", tmp_path / "hf")
    meta, body = card_parts(tmp_path / "hf")
    assert meta["task_categories"] == ["text-classification"]  # it said visual-question-answering
    assert "text-only problems" in body and "image-question" not in body and "decode to PIL" not in body
    assert "| `images` | list of image | empty: the problems are text-only |" in body


def test_hf_directory_loads_with_decoded_images_and_a_card(tmp_path, embedded_run, small_problems):
    target = tmp_path / "hf"
    n = export(embedded_run, "hf", target, ExportOptions(test_size=0.34, license="cc-by-4.0"))
    rows = steps_rows(embedded_run)
    assert n == len(rows)
    ds = datasets.load_dataset(str(target))
    assert set(ds) == {"train", "test"}
    assert ds["train"].num_rows + ds["test"].num_rows == len(rows)
    train_ids, test_ids = set(ds["train"]["problem_id"]), set(ds["test"]["problem_id"])
    assert train_ids and test_ids and not train_ids & test_ids  # split by problem: no leakage
    pictures = {p.id: p.images[0].data for p in small_problems}
    row = ds["train"][0]
    assert isinstance(row["images"][0], Image.Image)
    original = Image.open(io.BytesIO(pictures[row["problem_id"]])).convert("RGB")
    assert np.array_equal(np.asarray(row["images"][0].convert("RGB")), np.asarray(original))
    assert ds["train"].features["images"] == datasets.List(datasets.Image())

    meta, body = card_parts(target)
    assert meta["license"] == "cc-by-4.0"
    assert meta["task_categories"] == ["visual-question-answering", "text-classification"] and "prm" in meta["tags"]
    assert "image-question problems" in body and "images decode to PIL" in body
    default = next(c for c in meta["configs"] if c["config_name"] == "default")
    assert {f["split"]: f["path"] for f in default["data_files"]} == {"train": "data/train-*", "test": "data/test-*"}
    info = next(i for i in meta["dataset_info"] if i["config_name"] == "default")
    assert datasets.Features._from_yaml_list(info["features"]) == ds["train"].features
    assert {s["name"]: s["num_examples"] for s in info["splits"]} == {k: v.num_rows for k, v in ds.items()}

    steps = sum(len(r["labels"]) for r in rows)
    positive = sum(sum(r["labels"]) for r in rows)
    assert "| steps | " in body and f"| {steps:,} |" in body
    assert "| rows (labelled solution paths) | " in body and f" {len(rows):,} |" in body
    depth1 = [r["labels"][0] for r in rows if r["labels"]]
    assert f"| 1 | {sum(depth1):,} | {len(depth1) - sum(depth1):,} |" in body
    assert f"{positive:,}" in body
    assert "## How the labels were made" in body and "`omega`" in body and "`k` = `8`" in body
    assert "| rollouts |" in body and "| generated tokens |" in body and "simulated" in body

    pairs = datasets.load_dataset(str(target), "pairs")  # split by the same problems as the steps
    assert sum(d.num_rows for d in pairs.values()) == read_table(embedded_run, "pairs").num_rows > 0
    assert set(pairs["test"]["problem_id"]) <= test_ids and not set(pairs["train"]["problem_id"]) & test_ids


def without_pairs(run: Path, copy: Path) -> Path:
    """``run`` without its pairs table."""
    shutil.copytree(run, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["shards"] = [s for s in manifest["shards"] if s["table"] != "pairs"]
    shutil.rmtree(copy / "pairs")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


@pytest.fixture(scope="module")
def pairs_run(tmp_path_factory) -> Path:
    """A real run of 20 problems, most with preference pairs; then, as a run can leave them
    (every path cut at an undecided first label), four problems' steps rows removed, so
    that they have pairs and no steps."""
    return run_with_pairs(tmp_path_factory.mktemp("pairs-run"),
                          lambda with_pairs: lambda pid: pid not in with_pairs[:4])


def test_hf_test_split_holds_out_the_same_problems_in_every_config(tmp_path, pairs_run):
    """--test-size splits problems once, for the steps and the pairs alike: a held-out
    problem's pairs in the pairs config's train split would teach preference training the
    very problems the test split evaluates on."""
    target = tmp_path / "hf"
    export(pairs_run, "hf", target, ExportOptions(test_size=0.3))
    with_steps = set(read_table(pairs_run, "steps").column("problem_id").to_pylist())
    with_pairs = set(read_table(pairs_run, "pairs").column("problem_id").to_pylist())
    assert with_pairs - with_steps and with_pairs & with_steps

    meta, body = card_parts(target)
    published = {  # with pyarrow, the files each config's split names in the card
        c["config_name"]: {f["split"]: {pid for path in sorted(target.glob(f["path"]))
                                        for pid in pq.read_table(path).column("problem_id").to_pylist()}
                           for f in c["data_files"]}
        for c in meta["configs"]
    }
    loaded = {config: {split: set(ds["problem_id"]) for split, ds in datasets.load_dataset(str(target), config).items()}
              for config in ("default", "pairs")}
    assert loaded == published
    train = loaded["default"]["train"] | loaded["pairs"]["train"]
    test = loaded["default"]["test"] | loaded["pairs"].get("test", set())
    assert not train & test  # no problem on both sides, whichever config it is in
    for config, splits in loaded.items():
        assert set(splits) == {"train", "test"} and not splits["train"] & splits["test"], config
    assert loaded["default"]["train"] | loaded["default"]["test"] == with_steps
    assert loaded["pairs"]["train"] | loaded["pairs"]["test"] == with_pairs

    # the steps split is the one the steps alone make: pairs-only problems do not move it
    alone = tmp_path / "alone"
    export(without_pairs(pairs_run, tmp_path / "steps-only"), "hf", alone, ExportOptions(test_size=0.3))
    assert set(datasets.load_dataset(str(alone), split="test")["problem_id"]) == loaded["default"]["test"]

    pairs_config = next(c for c in meta["configs"] if c["config_name"] == "pairs")
    assert {f["split"]: f["path"] for f in pairs_config["data_files"]} == {
        "train": "data/pairs-train-*", "test": "data/pairs-test-*"}
    info = next(i for i in meta["dataset_info"] if i["config_name"] == "pairs")
    counts = {k: v.num_rows for k, v in datasets.load_dataset(str(target), "pairs").items()}
    assert {s["name"]: s["num_examples"] for s in info["splits"]} == counts
    assert "split by the same problems as the steps" in body
    assert f"`test` {counts['test']:,} pairs of {len(loaded['pairs']['test']):,} problems" in body


def test_hf_from_a_chat_format_run_with_image_paths(tmp_path, chat_run):
    target = tmp_path / "hf"
    export(chat_run, "hf", target)
    ds = datasets.load_dataset(str(target), split="train")
    assert ds[0]["prompt"][0]["role"] == "user"
    assert isinstance(ds[0]["images"][0], Image.Image)
    published = pq.read_table(target / "data" / "train-00000-of-00001.parquet").column("images").to_pylist()
    assert published and all(im["bytes"] and "/" not in im["path"] for ims in published for im in ims)  # no local paths


def test_hf_keeps_extra_columns_and_overwrite_keeps_foreign_files(tmp_path, nasty_run):
    target = tmp_path / "hf"
    export(nasty_run, "hf", target)
    ds = datasets.load_dataset(str(target), split="train")
    assert ds["label_source"][0] == ["mc", "inferred", "mc"]
    assert ds["confidence"][0] == pytest.approx([0.9, 0.5, 0.8])
    (target / ".gitattributes").write_text("*.parquet filter=lfs\n")
    with pytest.raises(ExportError, match="not empty"):
        export(nasty_run, "hf", target)
    export(nasty_run, "hf", target, ExportOptions(overwrite=True))
    assert (target / ".gitattributes").exists() and len(list((target / "data").iterdir())) == 1
    (target / "notes.txt").write_text("mine\n")
    with pytest.raises(ExportError, match="does not write"):
        export(nasty_run, "hf", target, ExportOptions(overwrite=True))  # not an export folder: never cleared
    assert (target / "notes.txt").exists() and (target / "README.md").exists()


# -- stepwise (TRL's former layout), prm800k, pairs, jsonl -----------------------------------------


def test_stepwise_and_its_trl_alias(tmp_path, chat_run):
    export(chat_run, "stepwise", tmp_path / "s.parquet")
    export(chat_run, "trl", tmp_path / "t.parquet")
    for name in ("s.parquet", "t.parquet"):
        ds = datasets.load_dataset("parquet", data_files=str(tmp_path / name), split="train")
        assert ds.column_names == ["prompt", "images", "completions", "labels"]
        assert isinstance(ds[0]["images"][0], Image.Image)  # bytes embedded although the run kept paths
    assert pq.read_table(tmp_path / "s.parquet").equals(pq.read_table(tmp_path / "t.parquet"))


def test_text_formats_reference_an_image_folder(tmp_path, chat_run):
    rows = steps_rows(chat_run)
    assert export(chat_run, "jsonl", tmp_path / "s.jsonl") == len(rows)
    plain = read_jsonl(tmp_path / "s.jsonl")
    assert plain[0]["completions"] == rows[0]["completions"]
    assert all((tmp_path / p).is_file() for r in plain for p in r["images"])
    export(chat_run, "pairs", tmp_path / "pairs.jsonl")
    pairs = read_jsonl(tmp_path / "pairs.jsonl")
    assert pairs and all(p["chosen_value"] > p["rejected_value"] and (tmp_path / p["images"][0]).is_file()
                         for p in pairs)
    export(chat_run, "prm800k", tmp_path / "p.jsonl")
    first = read_jsonl(tmp_path / "p.jsonl")[0]
    assert first["question"]["problem"] == rows[0]["prompt"][0]["content"][-1]["text"]
    ratings = [s["completions"][0]["rating"] for s in first["label"]["steps"]]
    assert ratings == [1 if x else -1 for x in rows[0]["labels"]]



def test_pairs_export_writes_only_the_images_its_rows_reference(tmp_path):
    # Before: the pairs export wrote the image of every problem in the steps table, also of
    # problems that made no pair (here, those whose sampled solutions were all right).
    import hashlib

    problems = generate_problems(8, seed=3)
    out = tmp_path / "run"
    prmtree.run(problems, policy="simulated", policy_args={"error_rate": 0.2}, out=out, seed=3)
    with_steps = set(read_table(out, "steps").column("problem_id").to_pylist())
    with_pairs = set(read_table(out, "pairs").column("problem_id").to_pylist())
    assert with_pairs and with_steps - with_pairs  # some problems have a pair, some have none
    target = tmp_path / "export" / "pairs.jsonl"
    assert export(out, "pairs", target) == read_table(out, "pairs").num_rows
    rows = read_jsonl(target)
    referenced = {p for r in rows for p in r["images"]}
    assert {r["problem_id"] for r in rows} == with_pairs and all(r["images"] for r in rows)
    assert {f"images/{f.name}" for f in (target.parent / "images").iterdir()} == referenced
    pictures = {p.id: hashlib.sha256(p.images[0].data).hexdigest() for p in problems}
    assert len(set(pictures.values())) == len(problems)  # one distinct picture per problem
    written = {hashlib.sha256((target.parent / p).read_bytes()).hexdigest() for p in referenced}
    assert written == {pictures[pid] for pid in with_pairs}

# -- refusals --------------------------------------------------------------------------------


def test_refusals_are_one_line_and_leave_the_run_alone(tmp_path, embedded_run):
    before = {p: p.stat().st_mtime_ns for p in embedded_run.rglob("*")}
    existing = tmp_path / "x.jsonl"
    existing.write_text("keep\n")
    cases = [
        (dict(out=embedded_run, fmt="openrlhf", target=existing), "exists; pass --overwrite"),
        (dict(out=embedded_run, fmt="openrlhf", target=tmp_path), "is a directory"),
        (dict(out=embedded_run, fmt="jsonl", target=embedded_run / "steps.jsonl"), "inside the run directory"),
        (dict(out=embedded_run, fmt="hf", target=embedded_run), "inside the run directory"),
        (dict(out=embedded_run, fmt="hf", target=embedded_run.parent), "contains the run directory"),
        (dict(out=embedded_run, fmt="hf", target=existing), "is a file"),
        (dict(out=embedded_run, fmt="math-shepherd", target=tmp_path / "m.jsonl", soft=True), "soft labels go to"),
        (dict(out=embedded_run, fmt="parquet", target=tmp_path / "y"), "format must be one of"),
        (dict(out=embedded_run, fmt="jsonl", target=tmp_path / "y.jsonl", tokenizer="tok"), "tokenizer applies to qwen-prm"),
        (dict(out=embedded_run, fmt="openrlhf", target=tmp_path / "y.jsonl", test_size=0.1), "test_size applies to hf"),
        (dict(out=tmp_path, fmt="jsonl", target=tmp_path / "z.jsonl"), "holds no prmtree manifest"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ExportError, match=message) as info:
            export(kwargs.pop("out"), kwargs.pop("fmt"), kwargs.pop("target"), ExportOptions(**kwargs))
        assert "\n" not in str(info.value)
    assert existing.read_text() == "keep\n"
    assert {p: p.stat().st_mtime_ns for p in embedded_run.rglob("*")} == before
    assert export(embedded_run, "openrlhf", existing, ExportOptions(overwrite=True)) == len(steps_rows(embedded_run))


@pytest.mark.slow
def test_cli_exports_with_every_listed_format(tmp_path, embedded_run):
    listed = {name for name, _ in format_list()}
    assert {"openrlhf", "visualprm", "qwen-prm", "math-shepherd", "hf", "stepwise", "trl"} <= listed
    r = cli("export", embedded_run, "--format", "openrlhf", "--to", tmp_path / "o.jsonl", timeout=60)
    assert r.returncode == 0, r.stderr
    assert len(read_jsonl(tmp_path / "o.jsonl")) == len(steps_rows(embedded_run))


def test_a_new_format_is_one_registered_class(tmp_path, embedded_run, request):
    @EXPORT_FORMATS.register("first-steps")
    class FirstSteps(ExportFormat):
        name = "first-steps"
        description = "the first step of every path, one per line"

        def write(self, out, target, options):
            with atomic_open(target) as handle:
                lines = [f"{row['path_id']}\t{row['completions'][0]}\n" for row in iter_rows(out)]
                handle.writelines(lines)
            return len(lines)

    request.addfinalizer(lambda: EXPORT_FORMATS.unregister("first-steps"))
    assert ("first-steps", FirstSteps.description) in format_list()
    n = export(embedded_run, "first-steps", tmp_path / "first.tsv")
    lines = (tmp_path / "first.tsv").read_text(encoding="utf-8").splitlines()
    assert n == len(lines) == len(steps_rows(embedded_run))
    assert dict(line.split("\t") for line in lines) == {r["path_id"]: r["completions"][0] for r in steps_rows(embedded_run)}
    with pytest.raises(ExportError, match="soft labels go to openrlhf and qwen-prm only, not first-steps"):
        export(embedded_run, "first-steps", tmp_path / "soft.tsv", ExportOptions(soft=True))


def test_trainer_formats_leave_out_paths_the_judge_disputed_unless_asked(tmp_path):
    from prmtree.policies.simulated import SimulatedPolicy

    problems = generate_problems(12, seed=4, min_steps=8, answer_spaces=("yesno", "choice", "number"))
    config = {"labels": {"method": "consensus", "on_disagreement": "flag"}}
    out = tmp_path / "run"
    prmtree.run(problems, policy=SimulatedPolicy(guess_rate=0.3, judge_accuracy=0.6), out=out, config=config)
    rows = steps_rows(out)
    flagged = sum(bool(r["flagged"]) for r in rows)
    assert 0 < flagged < len(rows)
    kept = sum(1 for r in rows if not r["flagged"] and decided(r)[0])
    flagged_decided = sum(1 for r in rows if r["flagged"] and decided(r)[0])
    for fmt in ("openrlhf", "qwen-prm", "math-shepherd", "visualprm", "prm800k"):
        assert export(out, fmt, tmp_path / f"{fmt}.jsonl") == kept, fmt
        assert export(out, fmt, tmp_path / f"{fmt}-all.jsonl", ExportOptions(keep_flagged=True)) == kept + flagged_decided, fmt
    export(out, "jsonl", tmp_path / "p.jsonl")
    plain = [json.loads(line) for line in (tmp_path / "p.jsonl").open()]
    assert sum(bool(r["flagged"]) for r in plain) == flagged  # jsonl keeps them, with the column


def test_prm800k_says_why_each_path_ends_and_leaves_out_paths_with_nothing_decided(tmp_path, nasty_run):
    # p3's only step is undecided: an empty "steps" list used to be written as a finished
    # solution; p2 stops at an undecided step: that is a give-up, not a solution.
    assert export(nasty_run, "prm800k", tmp_path / "p.jsonl") == 2
    by_id = {r["problem_id"]: r["label"] for r in read_jsonl(tmp_path / "p.jsonl")}
    assert set(by_id) == {"p1", "p2"}
    assert by_id["p1"]["finish_reason"] == "found_error"
    assert [s["completions"][0]["rating"] for s in by_id["p1"]["steps"]] == [1, 1, -1]
    # PRM800K's fields, and its trajectory rule: the chosen completions end before the -1 step
    assert [s["chosen_completion"] for s in by_id["p1"]["steps"]] == [0, 0, None]
    record = read_jsonl(tmp_path / "p.jsonl")[0]
    assert {"labeler", "timestamp", "generation", "is_quality_control_question",
            "is_initial_screening_question"} <= set(record) and not record["is_quality_control_question"]
    assert record["question"]["pre_generated_steps"] == [s["completions"][0]["text"] for s in record["label"]["steps"]]
    assert {"ground_truth_solution", "pre_generated_answer", "pre_generated_verifier_score"} <= set(record["question"])
    assert "total_time" in record["label"] and all(
        s["human_completion"] is None and s["completions"][0]["flagged"] is None for s in record["label"]["steps"])
    assert by_id["p2"]["finish_reason"] == "give_up"
    assert [s["completions"][0]["rating"] for s in by_id["p2"]["steps"]] == [1]
