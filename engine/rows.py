"""Output rows of one finished problem: labelled paths, nodes and pairs as table rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prmtree.engine.config import OutputConfig
from prmtree.engine.labels import label_paths, preference_pairs
from prmtree.engine.problem import Problem
from prmtree.engine.search.base import TreeSearch
from prmtree.engine.value import hard_label


def image_structs(problem: Problem, mode: str, out_dir: Path | None) -> list[dict[str, Any]]:
    """Hugging Face Image structs: bytes embedded, or a path to a copy under ``out/images``."""
    if mode == "embed" or out_dir is None:
        return [{"bytes": im.data, "path": im.path} for im in problem.images]
    structs = []
    directory = out_dir / "images"
    directory.mkdir(exist_ok=True)
    for i, im in enumerate(problem.images):
        suffix = Path(im.path).suffix if im.path else ".png"
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in problem.id)
        target = directory / f"{safe}-{i}{suffix or '.png'}"
        if not target.exists():
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.write_bytes(im.data)
            tmp.replace(target)
        structs.append({"bytes": None, "path": str(target.resolve())})
    return structs


def chat_prompt(problem: Problem) -> list[dict[str, Any]]:
    """The question as chat messages: one user turn with an image part per image, then the text."""
    content = [{"type": "image", "text": None} for _ in problem.images]
    content.append({"type": "text", "text": problem.question})
    return [{"role": "user", "content": content}]


def problem_rows(
    problem: Problem,
    search: TreeSearch,
    output: OutputConfig,
    policy_name: str,
    out_dir: Path | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """All rows one problem contributes to ``steps``, ``nodes`` and ``pairs``."""
    tree = search.tree
    paths = label_paths(tree, output.label_threshold, output.after_first_error, output.max_ci_width)
    pairs = preference_pairs(tree, output.label_threshold)
    images = image_structs(problem, output.image_mode, out_dir)
    prompt: Any = chat_prompt(problem) if output.chat_format else problem.question
    steps = [
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
            "strategy": search.name,
            "policy": policy_name,
        }
        for p in paths
    ]
    nodes = []
    for node_id, s in tree.nodes():
        lo, hi = s.interval()
        nodes.append(
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
                "label": hard_label(s.value, output.label_threshold) if s.measured else None,
                "terminal": s.terminal,
            }
        )
    pair_rows = [
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
        for pair in pairs
    ]
    return {"steps": steps, "nodes": nodes, "pairs": pair_rows}
