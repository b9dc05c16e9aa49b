"""The output tables: each one's Arrow schema and the code that builds its rows, together.

Adding a column is one edit in one place: the field in the table's schema and the key
in its row builder, next to each other below. Adding a table is one :class:`Table` in
``TABLES`` (its schema and its builder): the writer, the manifest, ``verify`` and
``read_table`` go over ``TABLES``. ``output/writer.py`` writes what these build.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from prmtree.engine.calibration import RIGHT, UNDECIDED
from prmtree.engine.config import OutputConfig
from prmtree.engine.labels import Labelling
from prmtree.engine.records import Problem, safe_text
from prmtree.engine.search.base import TreeSearch

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
CHAT_MESSAGE = pa.struct(
    [
        ("role", pa.string()),
        ("content", pa.list_(pa.struct([("type", pa.string()), ("text", pa.string())]))),
    ]
)


def image_structs(problem: Problem, mode: str, out_dir: Path | None) -> list[dict[str, Any]]:
    """Hugging Face Image structs: bytes embedded, or a path to a copy under ``out/images``.

    Copies are named by a hash of their bytes: distinct images never share a name (ids
    ``x/1`` and ``x_1`` once did), and an image used twice is stored once. The path is
    relative to the run directory (``images/<hash>.png``), so a moved run still finds them.
    """
    if mode == "embed" or out_dir is None:
        return [{"bytes": im.data, "path": im.path} for im in problem.images]
    structs = []
    directory = out_dir / "images"
    directory.mkdir(exist_ok=True)
    for im in problem.images:
        suffix = Path(im.path).suffix.lower() if im.path else ""
        if not suffix or len(suffix) > 6 or not suffix[1:].isalnum():
            suffix = ".png"
        target = directory / f"{hashlib.sha256(im.data).hexdigest()[:32]}{suffix}"
        if not target.exists():
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            tmp.write_bytes(im.data)
            tmp.replace(target)
        structs.append({"bytes": None, "path": f"images/{target.name}"})
    return structs


def chat_prompt(problem: Problem) -> list[dict[str, Any]]:
    """The question as chat messages: one user turn with an image part per image, then the text."""
    content = [{"type": "image", "text": None} for _ in problem.images]
    content.append({"type": "text", "text": problem.question})
    return [{"role": "user", "content": content}]


@dataclass(frozen=True)
class RowContext:
    """What a table's rows are built from: one labelled problem and the run's settings."""

    problem: Problem
    search: TreeSearch
    labelling: Labelling
    output: OutputConfig
    policy: str  # the policy's short name
    method: str  # the labelling method
    out_dir: Path | None = None  # where ``image_mode = "path"`` copies images

    def images(self) -> list[dict[str, Any]]:
        return image_structs(self.problem, self.output.image_mode, self.out_dir)

    def prompt(self) -> Any:
        return chat_prompt(self.problem) if self.output.chat_format else self.problem.question


# -- steps: one row per labelled solution path ----------------------------------------

STEPS_SCHEMA = pa.schema(
    [
        ("problem_id", pa.string()),
        ("path_id", pa.string()),
        ("prompt", pa.string()),
        ("images", pa.list_(IMAGE_STRUCT)),
        ("completions", pa.list_(pa.string())),
        ("labels", pa.list_(pa.bool_())),
        ("values", pa.list_(pa.float64())),
        ("answer", pa.string()),
        ("final_correct", pa.bool_()),
        ("strategy", pa.string()),
        ("policy", pa.string()),
        # provenance, one entry per step: what decided each label (re-filter without re-running)
        ("label_method", pa.string()),
        ("label_sources", pa.list_(pa.string())),
        ("confidences", pa.list_(pa.float64())),  # P(label right): posterior for right, 1 - posterior for wrong
        ("rollouts", pa.list_(pa.int32())),
        ("parent_values", pa.list_(pa.float64())),
        ("ci_low", pa.list_(pa.float64())),
        ("ci_high", pa.list_(pa.float64())),
        ("judge_verdicts", pa.list_(pa.string())),
        ("floors", pa.list_(pa.float64())),  # the answer space's floor each posterior assumed (learned or chance)
        ("flagged", pa.bool_()),  # consensus kept the path although MC and the judge disagreed
    ]
)


def _confidence(label: bool | None, posterior: float | None) -> float | None:
    if posterior is None or label is None:
        return None
    return posterior if label else 1.0 - posterior


def step_rows(ctx: RowContext) -> list[dict[str, Any]]:
    problem, images, prompt = ctx.problem, ctx.images(), ctx.prompt()
    strategy, policy, method = ctx.search.name, ctx.policy, ctx.method
    return [
        {
            "problem_id": problem.id,
            "path_id": p.path_id,
            "prompt": prompt,
            "images": images,
            "completions": p.steps,
            "labels": p.labels,
            "values": p.values,
            "answer": problem.answer,
            "final_correct": p.final_correct,
            "strategy": strategy,
            "policy": policy,
            "label_method": method,
            "label_sources": [e.source for e in p.provenance],
            "confidences": [_confidence(label, e.posterior) for label, e in zip(p.labels, p.provenance)],
            "rollouts": [e.rollouts for e in p.provenance],
            "parent_values": [e.parent_value for e in p.provenance],
            "ci_low": [e.ci_low for e in p.provenance],
            "ci_high": [e.ci_high for e in p.provenance],
            "judge_verdicts": [e.judge for e in p.provenance],
            "floors": [e.floor for e in p.provenance],
            "flagged": p.flagged,
        }
        for p in ctx.labelling.paths
    ]


# -- nodes: one row per tree node ----------------------------------------------------

NODES_SCHEMA = pa.schema(
    [
        ("problem_id", pa.string()),
        ("node_id", pa.string()),
        ("parent_id", pa.string()),
        ("depth", pa.int32()),
        ("step", pa.string()),
        ("n_rollouts", pa.int32()),
        ("n_correct", pa.int32()),
        ("value", pa.float64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("label", pa.bool_()),
        ("terminal", pa.bool_()),
        ("decision", pa.string()),  # right | wrong | undecided, by the run's labelling method
        ("posterior", pa.float64()),  # P(step right) (null under the mc rule)
    ]
)


def node_rows(ctx: RowContext) -> list[dict[str, Any]]:
    problem, tree, decisions = ctx.problem, ctx.search.tree, ctx.labelling.nodes
    rows = []
    for node_id, s in tree.nodes():
        lo, hi = s.interval()
        ev = decisions.get(node_id)
        rows.append(
            {
                "problem_id": problem.id,
                "node_id": node_id,
                "parent_id": tree.parent(node_id),
                "depth": s.depth,
                "step": s.step,
                "n_rollouts": s.n_rollouts,
                "n_correct": s.n_correct,
                "value": s.value if s.measured else None,
                "ci_low": lo,
                "ci_high": hi,
                "label": None if ev is None or ev.decision == UNDECIDED else ev.decision == RIGHT,
                "terminal": s.terminal,
                "decision": ev.decision if ev is not None else None,
                "posterior": ev.posterior if ev is not None else None,
            }
        )
    return rows


# -- pairs: step-level preference pairs (same prefix, chosen / rejected step) ---------

PAIRS_SCHEMA = pa.schema(
    [
        ("problem_id", pa.string()),
        ("parent_id", pa.string()),
        ("prompt", pa.string()),
        ("prefix", pa.list_(pa.string())),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("chosen_value", pa.float64()),
        ("rejected_value", pa.float64()),
    ]
)


def pair_rows(ctx: RowContext) -> list[dict[str, Any]]:
    problem = ctx.problem
    return [
        {
            "problem_id": problem.id,
            "parent_id": pair.parent_id,
            "prompt": problem.question,
            "prefix": pair.prefix,
            "chosen": pair.chosen,
            "rejected": pair.rejected,
            "chosen_value": pair.chosen_value,
            "rejected_value": pair.rejected_value,
        }
        for pair in ctx.labelling.pairs
    ]


# -- errors: why a problem has no rows -----------------------------------------------

ERRORS_SCHEMA = pa.schema([("problem_id", pa.string()), ("stage", pa.string()), ("reason", pa.string())])


#: Longest reason kept in the errors table (a reason can quote a huge input value).
MAX_REASON_CHARS = 2000


def error_row(problem_id: str, stage: str, reason: str) -> dict[str, Any]:
    """An ``errors/`` row; text UTF-8 cannot hold (a lone surrogate) is written out
    (``\\udcff``), so one bad row never makes the table unwritable."""
    problem_id, reason = safe_text(problem_id), safe_text(reason)
    if len(reason) > MAX_REASON_CHARS:
        reason = f"{reason[:MAX_REASON_CHARS]}... ({len(reason):,} characters)"
    return {"problem_id": problem_id, "stage": stage, "reason": reason}


# -- the tables -----------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """One output table: its folder name, its Arrow schema, and what builds a labelled
    problem's rows (None: rows come from elsewhere, as a failed problem's error row)."""

    name: str
    schema: pa.Schema
    rows: Callable[[RowContext], list[dict[str, Any]]] | None


#: Every table, in the order they are written. Iterating gives the names.
TABLES: dict[str, Table] = {t.name: t for t in (
    Table("steps", STEPS_SCHEMA, step_rows),
    Table("nodes", NODES_SCHEMA, node_rows),
    Table("pairs", PAIRS_SCHEMA, pair_rows),
    Table("errors", ERRORS_SCHEMA, None),
)}


def table_schema(table: str, chat_format: bool = False) -> pa.Schema:
    """The schema of ``table``, with the ``huggingface`` features metadata attached."""
    schema = TABLES[table].schema
    if chat_format and table == "steps":
        schema = schema.set(schema.get_field_index("prompt"), pa.field("prompt", pa.list_(CHAT_MESSAGE)))
    meta = {"info": {"features": {f.name: hf_feature(f.type) for f in schema}}}
    return schema.with_metadata({b"huggingface": json.dumps(meta).encode()})


def hf_feature(typ: pa.DataType) -> dict[str, Any]:
    """The ``datasets`` feature (JSON form) of an Arrow type; ``{bytes, path}`` structs are images.

    Any Arrow type has one, so an export of a run whose files carry extra columns works too."""
    if pa.types.is_struct(typ) and {typ.field(i).name for i in range(typ.num_fields)} == {"bytes", "path"}:
        return {"_type": "Image"}
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        return {"_type": "List", "feature": hf_feature(typ.value_type)}
    if pa.types.is_struct(typ):
        return {typ.field(i).name: hf_feature(typ.field(i).type) for i in range(typ.num_fields)}
    dtype = {"double": "float64", "float": "float32", "halffloat": "float16"}.get(str(typ), str(typ))
    return {"_type": "Value", "dtype": dtype}


# -- one problem's rows ---------------------------------------------------------------


class ProblemRows(dict[str, list[dict[str, Any]]]):
    """Everything one problem contributes, table name -> rows; written together."""

    def by_table(self) -> dict[str, list[dict[str, Any]]]:
        return {name: self.get(name, []) for name in TABLES}


def problem_rows(ctx: RowContext) -> ProblemRows:
    """All rows a labelled problem contributes, table by table."""
    return ProblemRows({name: table.rows(ctx) for name, table in TABLES.items() if table.rows is not None})
