"""``prmtree export``: the formats trainers and evaluators already read.

* ``trl``: one Parquet file with TRL's stepwise-supervision columns (``prompt``,
  ``completions``, ``labels``) and ``images``, with the ``datasets`` features metadata;
* ``prm800k``: JSONL shaped like PRM800K (a question, then per-step ratings 1 / -1);
* ``pairs``: JSONL of step-level preference pairs (``prompt`` with the shared prefix,
  ``chosen``, ``rejected``), as DPO-style trainers read them;
* ``jsonl``: the steps table as JSONL, images as paths only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from prmtree.engine.output import read_table, table_schema

FORMATS = ("trl", "prm800k", "pairs", "jsonl")


def export(out: Path, fmt: str, target: Path) -> int:
    """Write ``out``'s data as ``fmt`` to ``target``; returns the number of rows written."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "trl":
        steps = read_table(out, "steps").select(["prompt", "images", "completions", "labels"])
        meta = table_schema("steps", chat_format=not pa.types.is_string(steps.schema.field("prompt").type)).metadata
        features = json.loads(meta[b"huggingface"])
        keep = {k: v for k, v in features["info"]["features"].items() if k in steps.schema.names}
        schema = steps.schema.with_metadata({b"huggingface": json.dumps({"info": {"features": keep}}).encode()})
        pq.write_table(steps.cast(schema), target, compression="zstd")
        return steps.num_rows
    if fmt == "pairs":
        rows = read_table(out, "pairs").to_pylist()
        with target.open("w", encoding="utf-8") as handle:
            for r in rows:
                prompt = "\n\n".join([r["prompt"], *r["prefix"]])
                record = {"problem_id": r["problem_id"], "prompt": prompt, "chosen": r["chosen"],
                          "rejected": r["rejected"], "chosen_value": r["chosen_value"],
                          "rejected_value": r["rejected_value"]}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        return len(rows)
    rows = read_table(out, "steps").to_pylist()
    with target.open("w", encoding="utf-8") as handle:
        for r in rows:
            if fmt == "prm800k":
                record = {
                    "question": {"problem": r["prompt"], "ground_truth_answer": r["answer"]},
                    "label": {
                        "steps": [
                            {"completions": [{"text": step, "rating": 1 if label else -1}], "chosen_completion": 0}
                            for step, label in zip(r["completions"], r["labels"])
                        ],
                        "finish_reason": "found_error" if False in r["labels"] else "solution",
                    },
                    "problem_id": r["problem_id"],
                }
            else:
                record = {k: v for k, v in r.items() if k != "images"}
                record["images"] = [im.get("path") for im in r["images"]]
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return len(rows)
