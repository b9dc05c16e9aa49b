"""Training rows for a PRM, read from a prmtree run's directory, an ``hf`` export or a Parquet file.

Each path of the ``steps`` table becomes one :class:`StepRow`: the question, its images,
the steps and, per step, the hard label and the soft target. The soft target is the
calibrated posterior turned into P(step right) where the run has one (``confidences``),
else the step's Monte-Carlo value. A path is cut at its first undecided step: nothing
after it has a label a PRM should learn, and paths that the cut makes the same (a run with
``[labels] undecided = "keep"`` writes several paths through one undecided step) are one row.
A path a ``consensus`` run kept ``flagged`` (MC and the judge disagreed) is left out unless
``keep_flagged``, as every trainer export leaves it out. A run directory is read only whole
and intact, as an export reads it.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from prmtree.engine.errors import ConfigError
from prmtree.export.base import ExportError
from prmtree.export.hf import problem_hash
from prmtree.export.images import image_bytes
from prmtree.export.rows import without_flagged


@dataclass
class StepRow:
    """One solution path with a label per step."""

    problem_id: str
    question: str
    steps: list[str]
    labels: list[bool]
    soft: list[float]
    images: list[bytes] = field(default_factory=list)
    split: str = ""  # "test" where the export put the row in its test split


def question_text(prompt: Any) -> str:
    """The question of a ``prompt`` cell: a string, or chat messages (``--chat-format``)."""
    if isinstance(prompt, str):
        return prompt
    parts: list[str] = []
    for message in prompt or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        else:
            parts.extend(p.get("text") or "" for p in content or [] if p.get("type") == "text")
    return "\n".join(p for p in parts if p)


def soft_target(label: bool, value: float | None, confidence: float | None) -> float:
    """P(step right): the posterior where there is one, else the MC value, else the hard label."""
    if confidence is not None and not math.isnan(confidence):
        return float(confidence if label else 1.0 - confidence)
    if value is not None and not math.isnan(value):
        return float(min(1.0, max(0.0, value)))
    return 1.0 if label else 0.0


def rows_from_table(table: pa.Table, split: str = "", with_images: bool = True,
                    keep_flagged: bool = False, root: Path | None = None) -> list[StepRow]:
    """:class:`StepRow` s from a ``steps``-shaped table (run, ``hf`` export or ``stepwise`` Parquet);
    flagged paths left out unless ``keep_flagged`` (before the dedup, as ``stepwise`` does:
    a flagged path must not stand for an unflagged one cut alike). An image stored as a
    path (``--image-mode path``) is read from ``root``, the run's folder, as an export reads it."""
    if "completions" not in table.column_names or "labels" not in table.column_names:
        raise ConfigError(f"the data has no completions/labels columns (it has {', '.join(table.column_names)}): "
                          "pass a prmtree run's directory or an hf export")
    if not keep_flagged:
        table = without_flagged(table)
    keep = [c for c in ("problem_id", "prompt", "images", "completions", "labels", "values", "confidences")
            if c in table.column_names and (with_images or c != "images")]
    rows = []
    seen: set[tuple[Any, ...]] = set()
    cache: dict[str, bytes] = {}  # a problem's paths share its images: each file read once
    for r in table.select(keep).to_pylist():
        values = r.get("values") or []
        confidences = r.get("confidences") or []
        steps, labels, soft = [], [], []
        for i, (step, label) in enumerate(zip(r["completions"] or [], r["labels"] or [])):
            if label is None:  # undecided: the path's labels stop here
                break
            steps.append(str(step).strip())
            labels.append(bool(label))
            soft.append(soft_target(bool(label), values[i] if i < len(values) else None,
                                    confidences[i] if i < len(confidences) else None))
        if not steps:
            continue
        question = question_text(r.get("prompt"))
        images = _image_bytes(r.get("images"), str(r.get("problem_id") or question), root, cache)
        # a stepwise file has no problem_id: the question and its images stand for the problem
        key = (r.get("problem_id") or question, hash(tuple(images)), *steps)
        if key in seen:  # cut to the same decided steps as a path before it: the same row
            continue
        seen.add(key)
        rows.append(StepRow(problem_id=str(r.get("problem_id") or question), question=question, steps=steps,
                            labels=labels, soft=soft, images=images, split=split))
    return rows


def _image_bytes(images: Any, problem_id: str, root: Path | None, cache: dict[str, bytes]) -> list[bytes]:
    """A row's images as bytes: embedded, or read from their path (relative to ``root``) by
    the export's :func:`~prmtree.export.images.image_bytes`. Before, an image stored as a path
    was dropped, and a VLM trained on a ``--image-mode path`` run saw no image at all."""
    out = []
    for image in images or []:
        if not isinstance(image, dict):
            continue
        if image.get("bytes") is None and image.get("path") and image["path"] in cache:
            out.append(cache[image["path"]])
            continue
        try:
            data = image_bytes(root or Path("."), image, problem_id)
        except ExportError as exc:
            raise ConfigError(f"--data {root or '.'}: {exc}") from None
        if image.get("bytes") is None:
            cache[image["path"]] = data
        out.append(data)
    return out


def load_rows(path: str | Path, with_images: bool = True, allow_partial: bool = False,
              keep_flagged: bool = False, labels: str = "hard") -> list[StepRow]:
    """Rows from a run's directory, an ``hf`` export (its ``train``/``test`` splits) or a Parquet file;
    paths a ``consensus`` run flagged are left out unless ``keep_flagged``.

    ``labels="soft"`` refuses data with no soft targets (a ``stepwise`` export): its soft
    targets would all be the hard labels, and training on them is not what was asked.

    A run directory is refused when it is damaged (a shard or image that does not match its
    manifest) and, unless ``allow_partial``, when it is not finished (stopped, still
    running, slices not run): the same refusals as ``prmtree export``, in one line."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"--data {path}: no such file or directory")
    if path.is_file():
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise ConfigError(f"--data {path} is not a Parquet file ({str(exc).splitlines()[0]}): pass a prmtree "
                              "run's directory, an hf export's directory or a steps .parquet file") from None
        _check_soft_targets(table, path, labels)
        return rows_from_table(table, "", with_images, keep_flagged, path.parent)
    if any(path.glob("manifest*.json")):
        from prmtree.engine.output import read_table
        from prmtree.export import damaged, incomplete

        why = damaged(path)
        if why is not None:
            raise ConfigError(why)
        partial = incomplete(path)
        if partial is not None and not allow_partial:
            raise ConfigError(f"{partial}; pass --allow-partial to train on what is saved")
        if partial is not None:
            sys.stderr.write(f"prmtree train: {partial}: training on what is saved\n")
        return rows_from_table(read_table(path, "steps"), "", with_images, keep_flagged, path)
    rows: list[StepRow] = []
    for split in ("train", "test"):
        files = sorted((path / "data").glob(f"{split}-*.parquet"))
        if files:
            table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
            _check_soft_targets(table, path, labels)
            rows += rows_from_table(table, split if split == "test" else "", with_images, keep_flagged, path)
    if not rows and not (path / "data").is_dir():
        raise ConfigError(f"--data {path} is neither a prmtree run's directory (no manifest.json), "
                          "an hf export (no data/train-*.parquet) nor a Parquet file")
    return rows


def _check_soft_targets(table: pa.Table, path: Path, labels: str) -> None:
    """Refuse ``--labels soft`` on data that holds hard labels only (no ``values`` nor
    ``confidences``): :func:`soft_target` would fall back to the hard label on every step."""
    if labels == "soft" and not {"values", "confidences"} & set(table.column_names):
        raise ConfigError(f"--labels soft: --data {path} holds hard labels only (no values or confidences column; "
                          "a stepwise export keeps none): train on the run's directory or an hf export, "
                          "or use --labels hard")


def fingerprint(rows: list[StepRow]) -> str:
    """A digest of what ``rows`` hold (problem, question, images, steps, labels, soft targets),
    whatever their order: a ``--resume`` compares it with its checkpoint's, since the same
    options on data that changed (a run that grew) split the problems anew, and a problem
    trained on before could be held out after."""
    def digest(data: str | bytes) -> str:
        return hashlib.blake2b(data.encode() if isinstance(data, str) else data, digest_size=16).hexdigest()

    each = sorted(digest(json.dumps([r.problem_id, r.question, r.steps, r.labels, r.soft, r.split,
                                     [digest(image) for image in r.images]])) for r in rows)
    return digest("\n".join(each))


def split_rows(rows: list[StepRow], test_share: float, salt: str = "") -> tuple[list[StepRow], list[StepRow]]:
    """Train and held-out rows, split by problem: the export's test split, else a hashed share of problems.

    By problem, never by path: paths of one problem share their first steps, and a
    held-out set that shares them with training measures memory, not judgement.
    ``salt``: a second split of the training rows (validation) orders the problems by
    another hash, and ignores the export's test split (already taken out).
    """
    if not salt and any(r.split == "test" for r in rows):
        return [r for r in rows if r.split != "test"], [r for r in rows if r.split == "test"]
    problems = sorted({r.problem_id for r in rows}, key=lambda p: problem_hash(salt + p))  # salt "": the export's order
    if test_share <= 0 or len(problems) < 2:
        return list(rows), []
    n_test = min(len(problems) - 1, max(1, math.ceil(test_share * len(problems))))
    held = set(problems[:n_test])
    return [r for r in rows if r.problem_id not in held], [r for r in rows if r.problem_id in held]


def _nodes_table(path: str | Path) -> pa.Table | None:
    """A run directory's ``nodes`` table; None for anything else (an export, a Parquet file) or no nodes."""
    path = Path(path)
    if not path.is_dir() or not any(path.glob("manifest*.json")):
        return None
    from prmtree.engine.output import read_table

    table = read_table(path, "nodes")
    return table if table.num_rows else None


def node_texts(path: str | Path, problems: set[str]) -> list[str] | None:
    """The distinct step texts of a run's ``nodes`` table for ``problems``, sorted; None where
    ``path`` is not a run directory or its nodes table is empty (an ``hf`` export, a Parquet file).

    The search keeps every distinct step it sampled, right or wrong, about 50 per problem:
    far more varied text than the few paths the ``steps`` table holds, whose shared
    prefixes repeat the same steps. Only the given (training) problems' nodes: a held-out
    problem's steps must not be seen in pretraining either.
    """
    table = _nodes_table(path)
    if table is None:
        return None
    texts = {" ".join(str(step).split()) for pid, step in zip(table.column("problem_id").to_pylist(),
                                                              table.column("step").to_pylist())
             if step and str(pid) in problems}
    texts.discard("")
    return sorted(texts)


def disputed_steps(path: str | Path) -> set[tuple[str, tuple[str, ...]]]:
    """(problem, the steps up to and including it) for each step a ``consensus`` run's judge
    disputed on a path it kept flagged (source ``judge-disagreed``); empty for anything but
    a run directory. The search trees hold those steps with the same disputed labels, so
    :func:`tree_rows` must end its paths before them, as the flagged paths are left out."""
    path = Path(path)
    if not path.is_dir() or not any(path.glob("manifest*.json")):
        return set()
    from prmtree.engine.output import read_table

    table = read_table(path, "steps")
    if "flagged" not in table.column_names or "label_sources" not in table.column_names:
        return set()
    out: set[tuple[str, tuple[str, ...]]] = set()
    for r in table.select(["problem_id", "completions", "label_sources", "flagged"]).to_pylist():
        if not r["flagged"]:
            continue
        steps = [" ".join(str(s).split()) for s in r["completions"] or []]
        for i, source in enumerate(r["label_sources"] or []):
            if source == "judge-disagreed" and i < len(steps):
                out.add((str(r["problem_id"]), tuple(steps[:i + 1])))
    return out


def tree_rows(path: str | Path, steps_rows: list[StepRow], text_only: bool = False,
              disputed: set[tuple[str, tuple[str, ...]]] | None = None) -> list[StepRow] | None:
    """Every root-to-leaf path of a run's search trees (its ``nodes`` table); None where
    ``path`` is not a run directory or has no nodes. The question and images come from
    ``steps_rows`` (the same problem's ``steps`` rows); a problem without one is left out.

    Labels as the ``steps`` table fills them along a path (``engine.labels.label_path``):
    a node the search never decided is wrong below a wrong one (a wrong prefix stays wrong)
    and right above a right one; a path ends at a node that is neither. With ``text_only``
    (pretraining reads the text, not the labels) every path runs to its leaf and the rows
    carry no labels.

    The ``steps`` table ends each path at its first wrong step, so a PRM trained on it
    never sees what follows an error, and a causal PRM then scores the steps after a
    mistake as if nothing had gone wrong. The tree holds those steps, labelled wrong, and
    right siblings beside wrong ones at every depth.

    A path ends before a step in ``disputed`` (:func:`disputed_steps`: a label the judge
    disputed, on a path left out as flagged).
    """
    disputed = disputed or set()
    table = _nodes_table(path)
    if table is None:
        return None
    first: dict[str, StepRow] = {}
    for row in steps_rows:
        first.setdefault(row.problem_id, row)
    columns = ("problem_id", "node_id", "parent_id", "step", "label", "value", "posterior")
    nodes = [n for n in table.select(list(columns)).to_pylist() if n["problem_id"] in first]
    children: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    for node in nodes:
        children.setdefault((node["problem_id"], node["parent_id"]), []).append(node)
    right_below: dict[tuple[str, str], bool] = {}  # a node with a right-labelled descendant

    def has_right_below(node: dict[str, Any]) -> bool:
        key = (node["problem_id"], node["node_id"])
        if key not in right_below:
            stack, found = list(children.get(key, [])), False
            while stack and not found:
                kid = stack.pop()
                found = kid["label"] is True
                stack.extend(children.get((kid["problem_id"], kid["node_id"]), []))
            right_below[key] = found
        return right_below[key]

    def decided(node: dict[str, Any], wrong_above: bool) -> tuple[bool | None, float]:
        """(label, soft target) as a path fills them: None ends the path."""
        if wrong_above or node["label"] is False:
            return False, 0.0 if wrong_above or node["posterior"] is None else float(node["posterior"])
        if node["label"] is True:
            return True, soft_target(True, node["value"], None) if node["posterior"] is None \
                else float(node["posterior"])
        return (True, 1.0) if has_right_below(node) else (None, 0.0)

    rows: list[StepRow] = []
    for root in (n for n in nodes if n["parent_id"] is None):
        source = first[root["problem_id"]]
        stack: list[tuple[dict[str, Any], list[tuple[str, bool, float]], bool]] = [(root, [], False)]
        while stack:
            node, trail, wrong_above = stack.pop()
            nexts = []
            for kid in children.get((node["problem_id"], node["node_id"]), []):
                step = " ".join(str(kid["step"] or "").split())
                if not step:
                    continue
                label, soft = (True, 1.0) if text_only else decided(kid, wrong_above)
                if label is not None and disputed and \
                        (kid["problem_id"], tuple(t[0] for t in trail) + (step,)) in disputed:
                    label = None  # the judge disputed this label: the path ends before it
                if label is not None:
                    nexts.append((kid, trail + [(step, label, soft)], wrong_above or label is False))
            if not nexts:  # a leaf, or every child undecided: the path ends here
                if trail:
                    rows.append(StepRow(
                        problem_id=source.problem_id, question=source.question, steps=[t[0] for t in trail],
                        labels=[] if text_only else [t[1] for t in trail],
                        soft=[] if text_only else [t[2] for t in trail], images=source.images))
                continue
            stack.extend(reversed(nexts))
    return rows
