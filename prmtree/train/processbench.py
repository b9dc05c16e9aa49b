"""Solutions to score, read from JSONL: ProcessBench, VisualProcessBench or prmtree-shaped rows.

Shapes read (one JSON object a line):

* ProcessBench (Qwen): ``{"id", "problem", "steps": [...], "label": first error index or -1,
  "final_answer_correct"}``;
* VisualProcessBench (InternVL): ``{"image": [paths], "question", "answer", "response":
  {"steps": [...], "process_correctness": [1 | 0 | -1, ...]}}`` (1 right, 0 neutral, -1 wrong;
  ``response`` may also be a JSON string); image paths are relative to the file's folder;
* plain: ``{"id"?, "question" | "problem", "steps": [...], "images"?: [paths], "labels"?: [true | false |
  null, ...]}``.

An image entry is a path, or ``{"path": ...}`` as ``datasets`` writes it. Text with a lone
surrogate (``"\udcff"`` in JSON) is refused with its line: no tokenizer can encode it.

Where a row carries human labels, :attr:`Solution.labels` has one per step (None for a
neutral or unknown step), so ``prmtree score`` can report ProcessBench-style metrics.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prmtree.engine.errors import ConfigError
from prmtree.engine.records import Problem, ProblemImage


@dataclass
class Solution:
    """One solution to score: its problem, its steps, and the gold per-step labels if the file had any."""

    problem: Problem
    steps: list[str]
    labels: list[bool | None] | None
    row: dict[str, Any]


def _marks(marks: Any, n: int, where: str, name: str, allowed: str, types: tuple[type, ...]) -> list[Any]:
    """One mark per step, each of ``types`` (or null): a count that differs means the marks
    and steps are misaligned, and scoring them would pair labels with the wrong steps; a
    mark that is not a list (``"labels": true``) labels no step, and ignoring it would score
    the row as unlabelled without a word."""
    if not isinstance(marks, list):
        raise ConfigError(f"{where}: {name} must be a list of marks, one per step ({allowed}), got {marks!r}")
    if len(marks) != n:
        raise ConfigError(f"{where}: {n} step{'s' * (n != 1)} but {len(marks)} mark{'s' * (len(marks) != 1)} in "
                          f"{name} (one per step expected)")
    for m in marks:
        if m is not None and not isinstance(m, types):
            raise ConfigError(f"{where}: {name} marks must be {allowed}, got {m!r}")
    return marks


def _labels(row: dict[str, Any], response: dict[str, Any], n: int, where: str) -> list[bool | None] | None:
    if response.get("process_correctness") is not None:
        allowed = "1 (right), 0 (neutral) or -1 (wrong)"
        marks = _marks(response["process_correctness"], n, where, "process_correctness", allowed, (int, float))
        # the sign alone would read 2 or 0.5 as right and -3 as wrong: a mis-encoded file scored
        # with made-up labels; a bool is no mark here (false would read as 0, neutral)
        bad = next((m for m in marks if m is not None and (isinstance(m, bool) or m not in (1, 0, -1))), None)
        if bad is not None:
            raise ConfigError(f"{where}: process_correctness marks must be {allowed}, got {bad!r}")
        return [None if m == 0 or m is None else m > 0 for m in marks]
    if row.get("labels") is not None:
        # true/false, or 1/0 as a bool written as a number; a -1 (PRM800K's wrong) read as
        # bool(-1) would be a right step: such marks go in process_correctness
        marks = _marks(row["labels"], n, where, "labels", "true, false or null", (bool, int))
        bad = next((m for m in marks if m not in (None, True, False)), None)  # 0 == False, 1 == True: -1, 2, ...
        if bad is not None:
            raise ConfigError(f"{where}: labels marks must be true, false or null (1 / 0 as numbers; 1 / 0 / -1 "
                              f"marks go in response.process_correctness), got {bad!r}")
        return [None if m is None else bool(m) for m in marks]
    if "label" in row and row["label"] is not None:  # ProcessBench: the first wrong step's index, -1 for none
        first = row["label"]
        if isinstance(first, bool) or not isinstance(first, int) or not -1 <= first < n:
            raise ConfigError(f"{where}: 'label' must be -1 (no wrong step) or a step index below {n} "
                              f"(ProcessBench's first error), got {first!r}")
        if first < 0:
            return [True] * n
        return [True] * first + [False] + [None] * (n - first - 1)
    return None


def _image_path(entry: Any, where: str) -> str:
    """An image entry's path: a string, or ``{"path": ...}`` as ``datasets`` writes an Image."""
    if isinstance(entry, dict) and isinstance(entry.get("path"), str) and entry["path"]:
        return entry["path"]
    if isinstance(entry, str) and entry:
        return entry
    raise ConfigError(f"{where}: an image must be a path (a string) or {{\"path\": ...}}, got {entry!r}")


def _images(row: dict[str, Any], folder: Path, where: str) -> tuple[ProblemImage, ...]:
    paths = row.get("images", row.get("image")) or []
    if isinstance(paths, (str, dict)):
        paths = [paths]
    if not isinstance(paths, list):
        raise ConfigError(f"{where}: 'images' must be a list of paths, got {paths!r}")
    images = []
    for p in (_image_path(entry, where) for entry in paths):
        file = Path(p) if Path(p).is_absolute() else folder / p
        try:
            images.append(ProblemImage(file.read_bytes(), path=str(file)))
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read image {file} ({exc.strerror}); "
                              "unpack the benchmark's images beside the JSONL file") from None
    return tuple(images)


def parse_solution(row: dict[str, Any], folder: Path, where: str, load_images: bool = True) -> Solution:
    """One JSONL row as a :class:`Solution`."""
    if not isinstance(row, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(row).__name__}")
    response = row.get("response") or {}
    if isinstance(response, str):
        try:
            response = json.loads(response)
        except json.JSONDecodeError:
            response = {}
    steps = row.get("steps", response.get("steps") if isinstance(response, dict) else None)
    if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
        raise ConfigError(f"{where}: no 'steps' list of strings (ProcessBench: steps; VisualProcessBench: "
                          "response.steps)")
    question = row.get("question", row.get("problem"))
    if not isinstance(question, str) or not question.strip():
        raise ConfigError(f"{where}: no 'question' or 'problem' text")
    for text in (question, *steps):
        _encodable(text, where)
    images = _images(row, folder, where) if load_images else ()
    pid = _given(row, "id", "problem_id") or hashlib.blake2b(question.encode(), digest_size=8).hexdigest()
    answer = _given(row, "answer", "gold") or "-"
    problem = Problem(id=pid, question=question, answer=answer, images=images)
    return Solution(problem, list(steps), _labels(row, response if isinstance(response, dict) else {}, len(steps), where), row)


def _given(row: dict[str, Any], *keys: str) -> str | None:
    """The first of ``keys`` the row gives, as text: ``0`` is an id, only null and "" are none."""
    for key in keys:
        value = row.get(key)
        if value is not None and value != "":
            return str(value)
    return None


def _encodable(text: str, where: str) -> None:
    """Refuse text no tokenizer can encode: a lone surrogate (``"\\udcff"`` in JSON)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(f"{where}: the text holds a lone surrogate ({text[exc.start]!r} at character "
                          f"{exc.start}), which is not Unicode text: fix the file's encoding") from None


def read_solutions(path: str | Path, load_images: bool = True) -> list[Solution]:
    """Every row of a JSONL file; a bad row stops with its line number."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # a BOM is no character, as prmtree run reads it
    except OSError as exc:
        raise ConfigError(f"--input {path}: {exc.strerror}") from None
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not JSON ({exc.msg})") from None
        out.append(parse_solution(row, path.parent, where, load_images))
    return out
