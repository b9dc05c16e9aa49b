"""``prmtree export``: a run's labelled steps in the formats that PRM trainers read.

TRL removed its PRM trainer and the stepwise-supervision dataset type in September 2026
(huggingface/trl#7133), so the ``steps/`` table is no longer "what TRL reads". Each
format below was checked against the reading code of the trainer named (file paths are
in the trainers' public repositories):

``openrlhf``
    JSONL for OpenRLHF's PRM trainer (``openrlhf.cli.train_prm``; reader:
    ``openrlhf/datasets/process_reward_dataset.py``). ``input`` is the question and the
    steps, each step followed by the placeholder token (``ки`` by default, as in
    ``examples/scripts/train_prm_mistral.sh``); ``label`` is one label per placeholder:
    ``"+"``/``"-"`` (``--reward_tokens + -``), or with ``soft=True`` the MC values as
    floats (positive token first in ``--reward_tokens``). The reader tokenises ``input``
    with ``add_special_tokens=False`` and truncation, finds the placeholder ids and keeps
    the first ``len(placeholders)`` labels, so labels stay aligned after truncation.
    OpenRLHF dropped the PRM trainer in v0.9.6 (commit 6a981c8c, 2026-03-19): use
    ``openrlhf<=0.9.5``. Float labels only load in v0.5.0-v0.5.5.post2: from commit
    2134835b (Jan 2025) its reader assigns them into an integer tensor and fails.
    ``images`` (relative paths) is extra: the text trainer ignores it.
``visualprm``
    JSONL in InternVL's fine-tuning format as VisualPRM and MM-PRM train on it
    (InternVL ``internvl_chat/tools/reasoning_data_pipeline/
    visualprm_data_pipeline_postprocess.py``): a system turn with VisualPRM's PRM
    prompt, the first user turn ``<image>\\n### Question:\\n...\\n\\n### Solution
    Process:\\n<step 1>``, then one ``gpt`` turn ``+``/``-`` per step and one ``human``
    turn per further step. ``image`` is always a list of paths relative to the file's
    folder (``images/`` beside it): InternVL's multi-image reader
    (``internvl_chat_finetune.py``, ``multi_modal_multi_image_get_item``) counts the
    ``<image>`` tags in the human turns and accepts a system turn first, where the
    single-string reader would prepend a second ``<image>`` to the system prompt. A
    ``<name>_meta.json`` beside the file is InternVL's ``--meta_path`` entry (root,
    annotation, length). ``values`` (MC values) is extra.
``qwen-prm``
    JSONL in the Qwen2.5-Math-PRM convention (model card of Qwen/Qwen2.5-Math-PRM-7B):
    system / user / assistant messages whose assistant turn is the steps, each followed
    by ``<extra_0>``; ``text`` is those messages rendered with the ChatML template
    (images as ``<|vision_start|><|image_pad|><|vision_end|>``, as Qwen2-VL's template
    writes them), or with ``tokenizer``'s own chat template; ``labels`` holds one 1/0
    per ``<extra_0>`` (floats with ``soft=True``).
``math-shepherd``
    JSONL with the columns of peiyi9979/Math-Shepherd: ``input`` (question, then
    ``Step k: ... ки`` lines), ``label`` (the same text with each ``ки`` replaced by
    ``+``/``-``) and ``task``; TRL's former converter
    (``examples/datasets/math_shepherd.py``) parses it back exactly.
``hf``
    A directory that ``datasets.load_dataset(DIR)`` loads, images decoded: the whole
    steps table (extra columns included) as ``data/train-*.parquet`` (and ``test-*``
    with ``test_size``), step-level preference pairs as the ``pairs`` config, and a
    ``README.md`` dataset card (see :mod:`prmtree.dataset_card`). Ready for
    ``huggingface-cli upload --repo-type dataset``.
``stepwise`` (alias ``trl``)
    One Parquet file with TRL's former stepwise-supervision columns (``prompt``,
    ``images``, ``completions``, ``labels``), images embedded: for your own training
    loop, or a TRL release from before #7133. No current TRL trainer reads it.
``prm800k``
    JSONL shaped like PRM800K (question, then per-step ratings 1 / -1 and a
    ``finish_reason``: ``found_error``, ``solution``, or ``give_up`` where the labels
    stop at an undecided step), for evaluators.
``pairs``
    JSONL of step-level preference pairs (``prompt`` with the shared prefix, ``chosen``,
    ``rejected``, ``images``), as DPO-style trainers read them.
``jsonl``
    The steps table as JSONL, images as relative paths.

Images in JSONL formats are written once each to an ``images/`` folder beside the file,
named by a hash of their bytes, and referenced by relative path. Paths are cut at their
first undecided (null) label. Text that would be read as a marker (the placeholder,
``<extra_0>``, ``<image>``, ChatML tokens) is defused with a word joiner (U+2060) after
its first character, so every marker in an export is one the exporter put there.

Exports never write inside the run's directory, refuse an existing target unless
``overwrite=True``, and fail with :class:`ExportError` and one line saying why.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from prmtree.engine.output import load_manifests, read_table

FORMATS = (
    "openrlhf",
    "visualprm",
    "qwen-prm",
    "math-shepherd",
    "hf",
    "stepwise",
    "trl",
    "prm800k",
    "pairs",
    "jsonl",
)
ALIASES = {"trl": "stepwise"}
DIRECTORY_FORMATS = frozenset({"hf"})
# What may sit in a directory that --overwrite replaces an hf export in (a Hub clone keeps .git*).
HF_DIRECTORY_ENTRIES = frozenset(
    {"README.md", "data", ".git", ".gitattributes", ".gitignore", ".cache", ".huggingface"}
)
SOFT_FORMATS = frozenset({"openrlhf", "qwen-prm"})

DESCRIPTIONS = {
    "openrlhf": "JSONL for OpenRLHF's PRM trainer (openrlhf<=0.9.5): a placeholder after each step, label list",
    "visualprm": "JSONL for InternVL fine-tuning as VisualPRM / MM-PRM: image + conversations with +/- per step",
    "qwen-prm": "JSONL in the Qwen2.5-Math-PRM convention: chat messages, steps joined by <extra_0>, rendered text",
    "math-shepherd": "JSONL with Math-Shepherd's columns: input (steps tagged ки), label (+/-), task",
    "hf": "a Hugging Face dataset directory (Parquet, images embedded, README dataset card)",
    "stepwise": "Parquet with TRL's former stepwise-supervision columns, for your own training loop",
    "trl": "alias of stepwise (TRL removed its PRM trainer in September 2026)",
    "prm800k": "JSONL shaped like PRM800K (question, per-step ratings 1 / -1)",
    "pairs": "JSONL of step-level preference pairs (prompt, chosen, rejected)",
    "jsonl": "the steps table as JSONL, images as relative paths",
}

PLACEHOLDER = "ки"  # Math-Shepherd's step tag; OpenRLHF's example --placeholder_token
QWEN_STEP_TOKEN = "<extra_0>"
QWEN_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
QWEN_VISION = "<|vision_start|><|image_pad|><|vision_end|>"
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|endoftext|>")
IMAGE_TAG = "<image>"
# VisualPRM's system prompt (InternVL internvl_chat/tools/reasoning_data_pipeline/utils/constants.py).
VISUALPRM_SYSTEM_PROMPT = """You are an advanced AI assistant, designed to serve as a process supervision model. \
In this task, I will provide a problem statement followed by the first step of the solution process. For each \
subsequent turn, I will give you a new step in the solution. Your role is to assess whether the solution process is \
correct up to the current step.

- In the **first round**, I will input the problem and the first step of the solution process.
- In **each subsequent round**, I will provide the next step in the solution.

For each step, you should:

- Respond with **"+"** if you believe the solution process is correct up to this step.
- Respond with **"-"** if you detect any issues or errors in the process up to this step.

Please note:
- Only respond with **"+"** or **"-"**. Do not provide any additional explanations, comments, or justifications.

Your task is to verify the accuracy and correctness of each step in the given solution process."""

WORD_JOINER = "\u2060"
_STEP_NUMBER = re.compile(r"^\s*step\s*\d+\s*[:.]", re.IGNORECASE)
IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
ROWS_PER_FILE = 20_000


class ExportError(ValueError):
    """An export that cannot be done; the message is one line saying why."""


# -- entry point -----------------------------------------------------------------------


def export(
    out: str | Path,
    fmt: str,
    target: str | Path,
    *,
    overwrite: bool = False,
    soft: bool = False,
    placeholder: str = PLACEHOLDER,
    system_prompt: str | None = None,
    tokenizer: str | Path | None = None,
    test_size: float = 0.0,
    license: str = "unknown",
    pretty_name: str | None = None,
    task: str = "prmtree",
    keep_flagged: bool = False,
) -> int:
    """Write the run in ``out`` as ``fmt`` to ``target``; returns the number of records written.

    ``soft``: MC values instead of hard labels (``openrlhf``, ``qwen-prm``). ``placeholder``:
    the step tag of ``openrlhf``. ``system_prompt``: the system turn of ``visualprm`` and
    ``qwen-prm`` (their models' own prompt by default; ``""`` for none). ``tokenizer``: a
    local tokenizer directory whose chat template renders ``qwen-prm``'s ``text``.
    ``test_size``, ``license``, ``pretty_name``: the ``hf`` dataset's held-out share of
    problems, card licence and title. ``task``: Math-Shepherd's ``task`` column.
    ``keep_flagged``: the trainer formats (all but ``hf``, ``stepwise`` and ``jsonl``, which
    carry the ``flagged`` column) leave out the paths a ``consensus`` run kept although MC
    and the judge disagreed, unless this is set: a trainer would take their labels as sure.
    """
    out, target = Path(out), Path(target)
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    fmt = ALIASES.get(fmt, fmt)
    if soft and fmt not in SOFT_FORMATS:
        where = " (the hf and jsonl exports always carry the MC values in `values`)" if fmt in ("hf", "jsonl") else ""
        raise ExportError(f"soft labels go to {' and '.join(sorted(SOFT_FORMATS))} only, not {fmt}{where}")
    if not 0.0 <= test_size < 1.0:
        raise ExportError(f"test_size must be in [0, 1), got {test_size}")
    if not placeholder or placeholder.strip() != placeholder:
        raise ExportError(f"placeholder must be a non-empty token without surrounding spaces, got {placeholder!r}")
    for option, given, formats in [
        ("placeholder", placeholder != PLACEHOLDER, ("openrlhf",)),
        ("system_prompt", system_prompt is not None, ("visualprm", "qwen-prm")),
        ("tokenizer", tokenizer is not None, ("qwen-prm",)),
        ("test_size", bool(test_size), ("hf",)),
    ]:
        if given and fmt not in formats:
            raise ExportError(f"{option} applies to {' and '.join(formats)} only, not {fmt}")
    if not out.is_dir() or not (any(out.glob("manifest*.json")) or (out / "steps").is_dir()):
        raise ExportError(f"{str(out)!r} holds no prmtree manifest")
    extra = [_meta_path(target)] if fmt == "visualprm" else []
    _check_target(out, target, fmt, overwrite, extra)
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "hf":
        from prmtree.dataset_card import write_hf_dataset

        return write_hf_dataset(
            out, target, overwrite=overwrite, test_size=test_size, license=license, pretty_name=pretty_name,
            rows_per_file=ROWS_PER_FILE,
        )
    if fmt == "stepwise":
        return _write_stepwise(out, target)
    if fmt == "pairs":
        return _write_pairs(out, target)
    build: Callable[..., dict[str, Any] | None]
    if fmt == "openrlhf":
        build = functools.partial(_openrlhf, soft=soft, placeholder=placeholder)
    elif fmt == "visualprm":
        build = functools.partial(
            _visualprm, system_prompt=VISUALPRM_SYSTEM_PROMPT if system_prompt is None else system_prompt
        )
    elif fmt == "qwen-prm":
        build = _qwen_builder(soft, QWEN_SYSTEM_PROMPT if system_prompt is None else system_prompt, tokenizer)
    elif fmt == "math-shepherd":
        build = functools.partial(_math_shepherd, task=task)
    elif fmt == "prm800k":
        build = _prm800k
    else:
        build = _plain
    n = _write_jsonl(out, target, build, with_images=fmt != "prm800k", skip_flagged=fmt != "jsonl" and not keep_flagged)
    if fmt == "visualprm":
        _write_internvl_meta(target, n)
    return n


# -- target checks -----------------------------------------------------------------------


def _meta_path(target: Path) -> Path:
    return target.with_name(f"{target.stem}_meta.json")


def _check_target(out: Path, target: Path, fmt: str, overwrite: bool, extra: list[Path]) -> None:
    run, dest = out.resolve(), target.resolve()
    if dest == run or run in dest.parents:
        raise ExportError(f"{str(target)!r} is inside the run directory {str(out)!r}; export somewhere else")
    if dest in run.parents:
        raise ExportError(f"{str(target)!r} contains the run directory {str(out)!r}; export somewhere else")
    if fmt in DIRECTORY_FORMATS:
        if dest.exists() and not dest.is_dir():
            raise ExportError(f"{str(target)!r} is a file; --format {fmt} writes a directory")
        if dest.is_dir():
            if any(dest.glob("manifest*.json")):
                raise ExportError(f"{str(target)!r} holds a prmtree run; export somewhere else")
            entries = sorted(p.name for p in dest.iterdir())
            if entries and not overwrite:
                raise ExportError(f"{str(target)!r} exists and is not empty; pass --overwrite to replace the export")
            foreign = [name for name in entries if name not in HF_DIRECTORY_ENTRIES]
            if foreign:
                raise ExportError(
                    f"{str(target)!r} holds files an hf export does not write ({', '.join(foreign[:3])}); "
                    "choose a new or empty directory"
                )
        return
    for path in [target, *extra]:
        if path.is_dir():
            raise ExportError(f"{str(path)!r} is a directory; --format {fmt} writes a file (give a file name)")
        if path.exists() and not overwrite:
            raise ExportError(f"{str(path)!r} exists; pass --overwrite (overwrite=True) to replace it")


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w") -> Iterator[Any]:
    """Write ``path`` under a temporary name, then rename: a failed export leaves nothing half-written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as handle:
            yield handle
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# -- rows --------------------------------------------------------------------------------


def iter_rows(out: Path, table: str = "steps", batch_rows: int = 1024) -> Iterator[dict[str, Any]]:
    """The rows of ``table`` as dicts, a batch at a time (images stay bytes in Arrow until needed)."""
    data = read_table(out, table)
    for batch in data.to_batches(max_chunksize=batch_rows):
        yield from batch.to_pylist()


def question_text(prompt: Any) -> str:
    """The question of a steps row: the prompt string, or the text parts of a chat prompt's user turns."""
    if isinstance(prompt, str):
        return prompt
    parts = []
    for message in prompt or []:
        if message.get("role") not in (None, "user"):
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
            continue
        parts.extend(p.get("text") or "" for p in content or [] if p.get("type") == "text")
    return "\n".join(p for p in parts if p)


def decided(row: dict[str, Any]) -> tuple[list[str], list[bool], list[float | None]]:
    """Steps, labels and values of a row, cut at the first undecided (null) label."""
    steps = [str(s) for s in row.get("completions") or []]
    labels = list(row.get("labels") or [])
    values = list(row.get("values") or [])
    values += [None] * (len(labels) - len(values))
    n = min(len(steps), len(labels))
    for i in range(n):
        if labels[i] is None:
            n = i
            break
    return steps[:n], [bool(x) for x in labels[:n]], values[:n]


def soft_values(labels: list[bool], values: list[float | None]) -> list[float]:
    """MC values as soft labels; a step whose value was not measured gets its hard label (1.0 / 0.0)."""
    return [float(v) if v is not None and not math.isnan(v) else float(lab) for lab, v in zip(labels, values)]


def defuse(text: str, markers: tuple[str, ...]) -> str:
    """``text`` with each marker broken by a word joiner after its first character."""
    for marker in markers:
        if marker in text:
            text = text.replace(marker, marker[0] + WORD_JOINER + marker[1:])
    return text


def numbered(k: int, step: str) -> str:
    """``Step k: <step>`` unless the step already starts with a step number."""
    return step if _STEP_NUMBER.match(step) else f"Step {k}: {step}"


def tagged_solution(question: str, steps: list[str], tag: str) -> str:
    """Math-Shepherd's layout: ``<question> Step 1: <step> <tag>\\nStep 2: <step> <tag>``."""
    lines = [f"{numbered(k, defuse(s.strip(), (tag,)))} {tag}" for k, s in enumerate(steps, start=1)]
    return f"{defuse(question.strip(), (tag,))} " + "\n".join(lines)


# -- images ------------------------------------------------------------------------------

_MAGIC = ((b"\x89PNG", ".png"), (b"\xff\xd8", ".jpg"), (b"GIF8", ".gif"), (b"BM", ".bmp"))


def image_suffix(path: str | None, data: bytes) -> str:
    suffix = Path(path).suffix.lower() if path else ""
    if suffix and len(suffix) <= 6 and suffix[1:].isalnum():
        return suffix
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return next((ext for magic, ext in _MAGIC if data.startswith(magic)), ".png")


def image_bytes(out: Path, image: dict[str, Any], problem_id: str) -> bytes:
    """An image struct's bytes: embedded, or read from its path (absolute, or relative to the run)."""
    if image.get("bytes") is not None:
        return image["bytes"]
    path = image.get("path")
    if not path:
        raise ExportError(f"an image of problem {problem_id!r} has neither bytes nor a path")
    file = Path(path) if Path(path).is_absolute() else out / path
    try:
        return file.read_bytes()
    except OSError as exc:
        raise ExportError(f"image {path!r} of problem {problem_id!r} cannot be read: {exc.strerror or exc}") from None


class ImageFolder:
    """Writes images once each to ``<folder>/images/`` named by content hash; returns relative paths."""

    def __init__(self, out: Path, folder: Path) -> None:
        self.out = out
        self.dir = folder / "images"
        self.written: set[str] = set()

    def paths(self, images: list[dict[str, Any]], problem_id: str) -> list[str]:
        rels = []
        for image in images or []:
            data = image_bytes(self.out, image, problem_id)
            name = hashlib.sha256(data).hexdigest()[:32] + image_suffix(image.get("path"), data)
            if name not in self.written:
                self.dir.mkdir(parents=True, exist_ok=True)
                file = self.dir / name
                if not file.exists():
                    with atomic_open(file, "wb") as handle:
                        handle.write(data)
                self.written.add(name)
            rels.append(f"images/{name}")
        return rels


def embedded(out: Path, images: list[dict[str, Any]], problem_id: str) -> list[dict[str, Any]]:
    """Image structs with their bytes embedded and only a file name as path (no local directories)."""
    return [
        {"bytes": image_bytes(out, im, problem_id), "path": Path(im["path"]).name if im.get("path") else None}
        for im in images or []
    ]


# -- JSONL formats -----------------------------------------------------------------------


def _write_jsonl(out: Path, target: Path, build: Callable[..., dict[str, Any] | None], with_images: bool,
                 skip_flagged: bool = False) -> int:
    folder = ImageFolder(out, target.parent)
    n = 0
    with atomic_open(target) as handle:
        for row in iter_rows(out):
            if skip_flagged and row.get("flagged"):
                continue
            images = folder.paths(row.get("images") or [], row["problem_id"]) if with_images else []
            record = build(row, images)
            if record is None:
                continue
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return n


def _ids(row: dict[str, Any]) -> dict[str, Any]:
    return {"problem_id": row["problem_id"], "path_id": row.get("path_id")}


def _openrlhf(row: dict[str, Any], images: list[str], *, soft: bool, placeholder: str) -> dict[str, Any] | None:
    steps, labels, values = decided(row)
    if not steps:
        return None
    label: list[Any] = soft_values(labels, values) if soft else ["+" if x else "-" for x in labels]
    text = tagged_solution(question_text(row["prompt"]), steps, placeholder)
    return {"input": text, "label": label, "images": images, **_ids(row)}


def _math_shepherd(row: dict[str, Any], images: list[str], *, task: str) -> dict[str, Any] | None:
    steps, labels, _ = decided(row)
    if not steps:
        return None
    text = tagged_solution(question_text(row["prompt"]), steps, PLACEHOLDER)
    parts = text.split(PLACEHOLDER)  # exactly one tag per step: defuse() broke any other
    label = "".join(part + ("+" if x else "-") for part, x in zip(parts, labels)) + parts[-1]
    return {"input": text, "label": label, "task": task, "images": images, **_ids(row)}


def _visualprm(row: dict[str, Any], images: list[str], system_prompt: str) -> dict[str, Any] | None:
    steps, labels, values = decided(row)
    if not steps:
        return None
    markers = (IMAGE_TAG,)
    if len(images) == 1:
        tags = f"{IMAGE_TAG}\n"
    else:
        tags = "".join(f"Image-{i}: {IMAGE_TAG}\n" for i in range(1, len(images) + 1))
    question = defuse(question_text(row["prompt"]).strip(), markers)
    conversations = [{"from": "system", "value": system_prompt}] if system_prompt else []
    for k, (step, label) in enumerate(zip(steps, labels)):
        value = defuse(step.strip(), markers)
        if k == 0:
            value = f"{tags}### Question:\n{question}\n\n### Solution Process:\n{value}"
        conversations += [{"from": "human", "value": value}, {"from": "gpt", "value": "+" if label else "-"}]
    return {"image": images, "conversations": conversations, "values": values, **_ids(row)}


def _write_internvl_meta(target: Path, n: int) -> None:
    """InternVL's ``--meta_path`` file: the dataset's image root, annotation file and length."""
    meta = {
        target.stem: {
            "root": str(target.parent.resolve()) + os.sep,
            "annotation": str(target.resolve()),
            "data_augment": False,
            "repeat_time": 1,
            "length": n,
        }
    }
    with atomic_open(_meta_path(target)) as handle:
        handle.write(json.dumps(meta, indent=2) + "\n")


def chatml(messages: list[dict[str, Any]]) -> str:
    """Messages rendered as Qwen2.5's ChatML (Qwen2-VL's image placeholder for image parts)."""
    parts = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            content = "".join(QWEN_VISION if p["type"] == "image" else p.get("text") or "" for p in content)
        parts.append(f"<|im_start|>{message['role']}\n{content}<|im_end|>\n")
    return "".join(parts)


def _qwen_builder(soft: bool, system_prompt: str, tokenizer: str | Path | None) -> Callable[..., dict[str, Any] | None]:
    render: Callable[[list[dict[str, Any]]], str] = chatml
    if tokenizer is not None:
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise ExportError("rendering with a tokenizer's chat template needs transformers installed") from None
        try:
            tok = AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ExportError(f"cannot load a tokenizer from {str(tokenizer)!r}: {str(exc).splitlines()[0]}") from None
        if not getattr(tok, "chat_template", None):
            raise ExportError(f"the tokenizer in {str(tokenizer)!r} has no chat template")

        def render(messages: list[dict[str, Any]]) -> str:
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)

    markers = (QWEN_STEP_TOKEN, *CHATML_TOKENS)

    def build(row: dict[str, Any], images: list[str]) -> dict[str, Any] | None:
        steps, labels, values = decided(row)
        if not steps:
            return None
        question = defuse(question_text(row["prompt"]).strip(), markers)
        user: Any = question
        if images:
            user = [{"type": "image", "image": p} for p in images] + [{"type": "text", "text": question}]
        answer = "".join(defuse(s.strip(), markers) + QWEN_STEP_TOKEN for s in steps)
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        return {
            "messages": messages,
            "text": render(messages),
            "labels": soft_values(labels, values) if soft else [int(x) for x in labels],
            "images": images,
            **_ids(row),
        }

    return build


def _prm800k(row: dict[str, Any], images: list[str]) -> dict[str, Any] | None:
    """PRM800K's ``finish_reason``: ``found_error`` at a step rated -1, ``solution`` when
    every step is rated 1, ``give_up`` when the labels stop at an undecided step first."""
    steps, labels, _ = decided(row)
    if not steps:
        return None
    if False in labels:
        finish = "found_error"
    elif len(steps) < len(row.get("completions") or []):
        finish = "give_up"
    else:
        finish = "solution"
    return {
        "question": {"problem": question_text(row["prompt"]), "ground_truth_answer": row.get("answer")},
        "label": {
            "steps": [
                {"completions": [{"text": step, "rating": 1 if label else -1}], "chosen_completion": 0}
                for step, label in zip(steps, labels)
            ],
            "finish_reason": finish,
        },
        "problem_id": row["problem_id"],
    }


def _plain(row: dict[str, Any], images: list[str]) -> dict[str, Any]:
    record = {k: v for k, v in row.items() if k != "images" and not isinstance(v, (bytes, bytearray))}
    record["images"] = images
    return record


def _write_pairs(out: Path, target: Path) -> int:
    folder = ImageFolder(out, target.parent)
    images: dict[str, list[str]] = {}
    for row in read_table(out, "steps").select(["problem_id", "images"]).to_batches(max_chunksize=1024):
        for r in row.to_pylist():
            if r["problem_id"] not in images:
                images[r["problem_id"]] = folder.paths(r["images"] or [], r["problem_id"])
    n = 0
    with atomic_open(target) as handle:
        for r in iter_rows(out, "pairs"):
            record = {
                "problem_id": r["problem_id"],
                "prompt": "\n\n".join([r["prompt"], *r["prefix"]]),
                "chosen": r["chosen"],
                "rejected": r["rejected"],
                "chosen_value": r["chosen_value"],
                "rejected_value": r["rejected_value"],
                "images": images.get(r["problem_id"], []),
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return n


# -- Parquet -----------------------------------------------------------------------------


def hf_feature(typ: pa.DataType) -> dict[str, Any]:
    """The ``datasets`` feature (JSON form) of an Arrow type; ``{bytes, path}`` structs are images."""
    if pa.types.is_struct(typ) and {typ.field(i).name for i in range(typ.num_fields)} == {"bytes", "path"}:
        return {"_type": "Image"}
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        return {"_type": "List", "feature": hf_feature(typ.value_type)}
    if pa.types.is_struct(typ):
        return {typ.field(i).name: hf_feature(typ.field(i).type) for i in range(typ.num_fields)}
    dtype = {"double": "float64", "float": "float32", "halffloat": "float16"}.get(str(typ), str(typ))
    return {"_type": "Value", "dtype": dtype}


def with_hf_features(schema: pa.Schema) -> pa.Schema:
    """``schema`` with the ``huggingface`` metadata that makes ``datasets`` decode its images."""
    features = {f.name: hf_feature(f.type) for f in schema}
    return schema.with_metadata({b"huggingface": json.dumps({"info": {"features": features}}).encode()})


def embed_images_column(out: Path, table: pa.Table) -> pa.Table:
    """``table`` with its ``images`` column's bytes embedded (paths read) and paths cut to file names."""
    if "images" not in table.column_names:
        return table
    ids = table.column("problem_id").to_pylist()
    images = [embedded(out, ims, pid) for ims, pid in zip(table.column("images").to_pylist(), ids)]
    index = table.column_names.index("images")
    return table.set_column(index, pa.field("images", pa.list_(IMAGE_STRUCT)), pa.array(images, pa.list_(IMAGE_STRUCT)))


def _write_stepwise(out: Path, target: Path) -> int:
    steps = read_table(out, "steps")
    columns = ["problem_id", "prompt", "images", "completions", "labels"]
    table = embed_images_column(out, steps.select(columns)).drop_columns(["problem_id"])
    table = table.replace_schema_metadata(None)
    table = table.cast(with_hf_features(table.schema))
    with atomic_open(target, "wb") as handle:
        pq.write_table(table, handle, compression="zstd", row_group_size=100)
    return table.num_rows


def merged_manifest(out: Path) -> dict[str, Any]:
    """All slices' manifests as one: the first config, numeric statistics added up (nested too)."""
    found = [m.to_dict() for m in load_manifests(out)]
    merged: dict[str, Any] = {"config": {}, "stats": {}, "slices": len(found), "versions": {}, "status": "unknown"}
    if not found:
        return merged
    merged["config"] = found[0].get("config", {})
    merged["versions"] = found[0].get("versions", {})
    merged["status"] = "finished" if all(m.get("status") == "finished" for m in found) else "running"
    for key in ("completed", "failed", "skipped", "rejected"):
        merged[key] = sum(len(m.get(key) or []) for m in found)

    def add(into: dict[str, Any], stats: dict[str, Any]) -> None:
        for key, value in stats.items():
            if isinstance(value, bool):
                into.setdefault(key, value)
            elif isinstance(value, (int, float)):
                into[key] = into.get(key, 0) + value
            elif isinstance(value, dict):
                add(into.setdefault(key, {}), value)
            else:
                into.setdefault(key, value)

    for m in found:
        add(merged["stats"], m.get("stats") or {})
    return merged
