"""The README.md dataset card of an ``hf`` export: YAML metadata the Hub reads, then how it was made.

The card's YAML declares the configs and their data files, the features (so images
decode as ``PIL`` images), licence, task categories and tags; its body gives the row and
step counts, the label balance per depth, the search and labelling settings, the policy,
the answer check and the cost of the run, all read from the run's manifest(s) and rows.

The YAML is written by hand (block style, JSON-quoted strings) so that exporting needs
neither ``pyyaml`` nor ``datasets``.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import fields
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from prmtree.engine.config import SECRET_NAME
from prmtree.engine.output import load_manifests
from prmtree.engine.stats import RunStats, coverage
from prmtree.engine.tables import hf_feature
from prmtree.export.rows import question_text

# -- YAML --------------------------------------------------------------------------------


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return json.dumps(str(value), ensure_ascii=False)


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML for dicts, lists and scalars (strings JSON-quoted, which YAML reads as is)."""
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return pad + "{}\n"
        lines = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{key}:\n{to_yaml(item, indent + 2)}")
            elif isinstance(item, (dict, list)):
                lines.append(f"{pad}{key}: {'[]' if isinstance(item, list) else '{}'}\n")
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}\n")
        return "".join(lines)
    if isinstance(value, list):
        if not value:
            return pad + "[]\n"
        lines = []
        for item in value:
            if isinstance(item, dict) and item:
                body = to_yaml(item, indent + 2)
                lines.append(f"{pad}- {body[indent + 2:]}")
            elif isinstance(item, list) and item:
                lines.append(f"{pad}-\n{to_yaml(item, indent + 2)}")
            else:
                lines.append(f"{pad}- {_scalar(item)}\n")
        return "".join(lines)
    return pad + _scalar(value) + "\n"


def yaml_feature(name: str | None, feature: dict[str, Any]) -> dict[str, Any]:
    """One feature in the Hub's YAML form (``datasets.Features._to_yaml_list``): dtype / list / struct."""
    entry: dict[str, Any] = {} if name is None else {"name": name}
    kind = feature.get("_type")
    if kind == "Value":
        entry["dtype"] = feature["dtype"]
    elif kind == "Image":
        entry["dtype"] = "image"
    elif kind == "List":
        inner = yaml_feature(None, feature["feature"])
        entry["list"] = inner["dtype"] if list(inner) == ["dtype"] else inner.get("struct", inner)
    else:  # a struct: {field: feature}
        entry["struct"] = [yaml_feature(k, v) for k, v in feature.items()]
    return entry


def yaml_features(schema: pa.Schema) -> list[dict[str, Any]]:
    return [yaml_feature(f.name, hf_feature(f.type)) for f in schema]


# -- card --------------------------------------------------------------------------------


def _size_category(n: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")]
    return next((name for bound, name in bounds if n < bound), "100M<n<1B")


def _label_stats(table: pa.Table) -> dict[str, Any]:
    labels = table.column("labels").to_pylist() if table.num_rows else []
    depth: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    lengths: Counter[int] = Counter()
    first_error = 0
    for row in labels:
        row = [x for x in row or [] if x is not None]
        lengths[len(row)] += 1
        first_error += False in row
        for d, label in enumerate(row, start=1):
            depth[d][0 if label else 1] += 1
    positive = sum(p for p, _ in depth.values())
    negative = sum(n for _, n in depth.values())
    finals = table.column("final_correct").to_pylist() if "final_correct" in table.column_names else []
    return {
        "paths": table.num_rows,
        "problems": len(set(table.column("problem_id").to_pylist())) if table.num_rows else 0,
        "steps": positive + negative,
        "positive": positive,
        "negative": negative,
        "paths_with_error": first_error,
        "final_correct": sum(1 for x in finals if x),
        "depth": dict(sorted(depth.items())),
        "lengths": dict(sorted(lengths.items())),
    }


def _first(table: pa.Table, column: str) -> str:
    if table.num_rows and column in table.column_names:
        return str(table.column(column)[0].as_py())
    return "unknown"


def _pct(a: int | float, b: int | float) -> str:
    return f"{100 * a / b:.1f}%" if b else "-"


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if not value.is_integer() else f"{int(value):,}"
    return str(value)


def _settings(section: dict[str, Any]) -> str:
    if not section:
        return "(not recorded)"
    shown = []
    for key, value in sorted(section.items()):
        if SECRET_NAME.search(str(key)):
            value = "(redacted)"
        shown.append(f"`{key}` = `{json.dumps(value, ensure_ascii=False, default=str)}`")
    return ", ".join(shown)


_METHOD = {
    "mc": "a step is labelled right when its Monte-Carlo value is above {threshold} (the rule of Math-Shepherd, "
    "OmegaPRM and VisualPRM).",
    "calibrated": "a step's label is decided from its rollouts against the answer space's chance floor (a lucky "
    "guess on a yes/no or multiple-choice answer does not make a wrong step right), relative to its parent's value, "
    "as a posterior probability that the step is right; a path ends at its first step whose evidence stays "
    "undecided (this export cuts every path there, whatever the run's `undecided` setting).",
    "consensus": "Monte-Carlo labels and a judge model's verdicts must agree on the first wrong step; paths where "
    "they disagree are dropped or flagged (`on_disagreement`).",
}


def _label_sources(table: pa.Table) -> Counter[str]:
    if "label_sources" not in table.column_names:
        return Counter()
    return Counter(s for row in table.column("label_sources").to_pylist() for s in row or [] if s is not None)


_STRATEGY = {
    "omega": "OmegaPRM: k rollouts at the root, then binary search along wrong rollouts for the first wrong step, "
    "candidates chosen by Q + U (arXiv:2406.06592)",
    "shepherd": "Math-Shepherd / VisualPRM: n solutions, k completions from every step prefix, stop at the first "
    "prefix whose MC value is 0 (arXiv:2312.08935)",
    "mcts": "step-level MCTS: UCT selection, expansion by single next steps, k rollouts per new child, "
    "back-propagation",
}


def dataset_card(
    out: Path, splits: dict[str, pa.Table], pairs: dict[str, pa.Table], *, license: str, pretty_name: str
) -> str:
    """The README.md of an hf export: YAML front matter, then counts, label balance, settings and cost.

    ``splits`` are the steps' splits, ``pairs`` the pairs' (split by the same problems; an
    empty split left out, no pairs at all an empty dict).
    """
    manifest = merged_manifest(out)
    config, stats = manifest["config"], manifest["stats"]
    steps = pa.concat_tables(splits.values()) if len(splits) > 1 else splits["train"]
    every = _label_stats(steps)
    per_split = {name: _label_stats(t) for name, t in splits.items()}
    # a text-only run (no row has an image) is not described as visual
    visual = "images" in steps.column_names and pc.sum(pc.list_value_length(steps.column("images"))).as_py() not in (0, None)
    search = config.get("search", {})
    output = config.get("output", {})
    policy = config.get("policy", {})
    strategy = search.get("strategy") or _first(steps, "strategy")
    policy_name = policy.get("name") or _first(steps, "policy")

    configs: list[dict[str, Any]] = [
        {"config_name": "default", "data_files": [{"split": s, "path": f"data/{s}-*"} for s in splits], "default": True}
    ]
    infos: list[dict[str, Any]] = [
        {
            "config_name": "default",
            "features": yaml_features(steps.schema),
            "splits": [{"name": s, "num_bytes": t.nbytes, "num_examples": t.num_rows} for s, t in splits.items()],
        }
    ]
    n_pairs = sum(t.num_rows for t in pairs.values())
    if n_pairs:
        configs.append(
            {"config_name": "pairs", "data_files": [{"split": s, "path": f"data/pairs-{s}-*"} for s in pairs]}
        )
        infos.append(
            {
                "config_name": "pairs",
                "features": yaml_features(next(iter(pairs.values())).schema),
                "splits": [{"name": s, "num_bytes": t.nbytes, "num_examples": t.num_rows} for s, t in pairs.items()],
            }
        )
    tags = ["prm", "process-reward-model", "process-supervision", "monte-carlo", "prmtree", f"prmtree-{strategy}"]
    if policy_name == "simulated":
        tags.append("synthetic")
    meta = {
        "pretty_name": pretty_name,
        "license": license,
        "task_categories": ["visual-question-answering", "text-classification"] if visual else ["text-classification"],
        "tags": tags,
        "size_categories": [_size_category(every["paths"])],
        "configs": configs,
        "dataset_info": infos,
    }

    lines = ["---", to_yaml(meta).rstrip("\n"), "---", "", f"# {pretty_name}", ""]
    lines += [
        ("Process-supervision data for vision-language reasoning: image-question problems, step-by-step solutions "
         if visual else "Process-supervision data for reasoning: text-only problems, step-by-step solutions ")
        + f"written by the policy `{policy_name}`, and a label for every step, made with "
        f"prmtree (`{strategy}` search, Monte-Carlo rollouts).",
        "",
    ]
    if policy_name == "simulated":
        lines += [
            "> These rows come from prmtree's **simulated** policy on synthetic problems: they exercise the "
            "pipeline and the trainers' input formats; they are not model-written reasoning.",
            "",
        ]
    lines += [
        "```python",
        "from datasets import load_dataset",
        'steps = load_dataset("USER/NAME", split="train")          # or load_dataset("path/to/this/folder")',
        'print(steps[0]["completions"], steps[0]["labels"])        # steps and their labels'
        + ("; images decode to PIL" if visual else ""),
    ]
    if n_pairs:
        first = "train" if "train" in pairs else next(iter(pairs))
        lines.append(f'pairs = load_dataset("USER/NAME", "pairs", split="{first}")'
                     "  # same prefix, chosen / rejected step")
    lines += ["```", "", "## Contents", ""]
    lines += ["| | " + " | ".join(per_split) + (" | all |" if len(per_split) > 1 else " |")]
    lines += ["|---" * (len(per_split) + 1 + (len(per_split) > 1)) + "|"]
    columns = list(per_split.values()) + ([every] if len(per_split) > 1 else [])
    for label, key in [("problems", "problems"), ("rows (labelled solution paths)", "paths"), ("steps", "steps"),
                       ("steps labelled correct (+)", "positive"), ("steps labelled wrong (-)", "negative"),
                       ("paths with a wrong step", "paths_with_error"),
                       ("paths whose final answer is right", "final_correct")]:
        lines.append(f"| {label} | " + " | ".join(_num(c[key]) for c in columns) + " |")
    lines.append("| share of steps labelled + | " + " | ".join(_pct(c["positive"], c["steps"]) for c in columns) + " |")
    if n_pairs:
        lines += ["", f"The `pairs` config holds {n_pairs:,} step-level preference pairs (same prefix, a "
                  "step with a higher MC value `chosen`, one with a lower value `rejected`)"
                  + ("." if len(splits) == 1 and len(pairs) == 1 else
                     ", split by the same problems as the steps (a held-out problem's pairs are in `test`, never "
                     "in `train`): " + ", ".join(f"`{s}` {t.num_rows:,} pairs of "
                                                 f"{len(set(t.column('problem_id').to_pylist())):,} problems"
                                                 for s, t in pairs.items()) + ".")]
    lines += ["", "### Label balance per depth", "",
              "Depth is the step's position in its solution (1 = first step).", "",
              "| depth | + | - | % + |", "|---|---|---|---|"]
    for d, (p, n) in every["depth"].items():
        lines.append(f"| {d} | {p:,} | {n:,} | {_pct(p, p + n)} |")
    lengths = ", ".join(f"{k} step{'s' if k != 1 else ''}: {v:,}" for k, v in every["lengths"].items())
    lines += ["", f"Steps per row: {lengths}.", ""]
    lines += _coverage_section(stats.get("answer_spaces") or {})

    lines += ["## Columns", "", "| column | type | meaning |", "|---|---|---|"]
    meaning = {
        "problem_id": "problem id (given, or a hash of question and image bytes)",
        "path_id": "id of this solution path in the problem's tree",
        "prompt": "the question (a string, or chat messages with image parts)",
        "images": "the problem's image(s), decoded to PIL by `datasets`" if visual else "empty: the problems are text-only",
        "completions": "the solution's steps, in order",
        "labels": "per step: true = the step is right (see How the labels were made)",
        "values": "per step: Monte-Carlo value, the share of rollouts from the prefix ending at this step that reach "
                  "the gold answer (a step not sampled itself carries a value from along its path, or null)",
        "answer": "gold answer",
        "final_correct": "whether this path's final answer matches the gold answer (null where the steps stop before it)",
        "strategy": "search strategy that found the path",
        "policy": "policy that wrote the steps",
        "label_method": "labelling method of the run (`mc`, `calibrated`, `consensus`)",
        "label_sources": "per step: what decided the label (sampled value, inferred along the path, judge...)",
        "confidences": "per step: probability that the label is right",
        "rollouts": "per step: rollouts sampled from the prefix ending at the step",
        "parent_values": "per step: Monte-Carlo value of the previous prefix",
        "ci_low": "per step: lower end of the value's Wilson interval",
        "ci_high": "per step: upper end of the value's Wilson interval",
        "judge_verdicts": "per step: the judge model's verdict, when a judge was asked",
        "floors": "per step: the answer space's floor the posterior assumed (learned from the run, or chance)",
        "flagged": "kept although the Monte-Carlo labels and the judge disagree",
    }
    for field in steps.schema:
        feature = yaml_feature(None, hf_feature(field.type))
        inner = feature.get("list")
        typ = feature.get("dtype") or (f"list of {inner}" if isinstance(inner, str) else "nested")
        what = meaning.get(field.name, "label provenance / extra column written by the run")
        lines.append(f"| `{field.name}` | {typ} | {what} |")

    lines += ["", "## How the labels were made", ""]
    lines.append(f"- **Search**: `{strategy}` — {_STRATEGY.get(strategy, 'a custom strategy')}. "
                 f"Settings: {_settings(search)}.")
    threshold = output.get("label_threshold", 0.0)
    lines.append(
        "- **Values**: a step's value is the share of rollouts sampled from the prefix ending at it that reach the "
        "gold answer (Monte-Carlo estimate, with a Wilson interval in the run's `nodes` table)."
    )
    labels_cfg = config.get("labels") or {}
    method = labels_cfg.get("method") or _first(steps, "label_method")
    method = "mc" if method == "unknown" else method  # runs from before label methods used the MC rule
    rule = _METHOD.get(method, "a custom labeller.").format(threshold=threshold)
    lines.append(f"- **Labelling**: `{method}` — {rule}"
                 + " Steps that were not sampled take the label implied along their path (a right step makes "
                 "earlier steps right, a wrong one later steps wrong)."
                 + (f" Settings: {_settings(labels_cfg)}." if labels_cfg else ""))
    sources = _label_sources(steps)
    if sources:
        lines.append("- **Where each label came from** (steps): "
                     + ", ".join(f"`{k}`: {v:,}" for k, v in sources.most_common()) + ".")
    flagged = sum(1 for x in steps.column("flagged").to_pylist() if x) if "flagged" in steps.column_names else 0
    if flagged or method == "consensus":
        lines.append(f"- **Flagged rows** (kept although the MC labels and the judge disagree): {flagged:,}.")
    lines.append(f"- **Output settings**: {_settings(output)}.")
    lines.append(f"- **Step segmentation**: {_settings(config.get('steps', {}))}.")
    lines.append(f"- **Policy**: {_settings(policy)}.")
    answer_type = config.get("input", {}).get("answer_type", "auto")
    lines.append(f"- **Answer check**: answer type `{answer_type}`; {_settings(config.get('verify', {}))}"
                 + (f"; verifier statistics: {_settings(stats['verifier'])}" if stats.get("verifier") else "") + ".")
    if manifest.get("config_hash") or config.get("seed") is not None:
        lines.append(f"- **Seed**: `{config.get('seed')}`.")
    lines.append("")

    lines += ["## Cost of the run", "", "| | |", "|---|---|"]
    cost = [("problems completed", manifest.get("completed")), ("problems skipped",
            manifest.get("skipped")), ("problems failed", manifest.get("failed")),
            ("rollouts", stats.get("rollouts")), ("generation requests", stats.get("requests")),
            ("retries", stats.get("retries")), ("generated tokens", stats.get("tokens")),
            ("prompt tokens", stats.get("prompt_tokens")),
            ("prompt tokens served from cache", stats.get("cached_tokens")),
            ("rollouts cut by the length limit", stats.get("truncated_by_length")),
            ("elapsed seconds" + (" (the longest slice's)" if manifest["slices"] > 1 else ""), stats.get("elapsed_s"))]
    for label, value in cost:
        if value is not None:
            lines.append(f"| {label} | {_num(value)} |")
    malformed = stats.get("malformed_rollouts") or {}
    if malformed:
        shown = ", ".join(f"{k}: {_num(v)}" for k, v in malformed.items())
        lines.append(f"| malformed rollouts (counted wrong) | {shown} |")
    lines.append(f"| slices | {manifest['slices']} |")
    example = question_text(steps.column("prompt")[0].as_py())[:200] if steps.num_rows else ""
    lines += ["", "## Limitations", "",
              "Monte-Carlo labels are estimates: a wrong step can be labelled right when a continuation reaches the "
              "gold answer by luck (frequent when the answer space is small, such as yes/no or multiple choice), "
              "and a right step wrong when the policy rarely finishes from it. `values` keeps the evidence so the "
              "labels can be re-thresholded.", "",
              f"Generated by prmtree {manifest.get('versions', {}).get('prmtree', '')} from a run with status "
              f"`{manifest.get('status')}`. Example question: {json.dumps(example, ensure_ascii=False)}.",
              ""]
    return "\n".join(lines)


def _coverage_section(answer_spaces: dict[str, dict[str, int]]) -> list[str]:
    """The card's coverage per answer space, from the run's counters: a data set whose
    yes/no questions went unlabelled says so here, not only in its overall counts."""
    spaces = coverage(answer_spaces)
    if not spaces:
        return []
    lines = ["### Coverage per answer space", "",
             "From the run's counters (every problem the run finished, skipped ones included): how many problems of "
             "each answer space have at least one labelled step. Guessable answers (yes/no, multiple choice) "
             "need more rollouts per decided step, so they are often labelled less.", "",
             "| answer space | problems | skipped | with a labelled step | labelled steps per problem | "
             "share of steps labelled + |", "|---|---|---|---|---|---|"]
    for s in spaces:
        positive = "-" if s.positive_share is None else _pct(s.positive, s.steps_labelled)
        name = s.space.replace("|", "\\|").replace("`", "'")  # a row's own name must not break the table
        lines.append(f"| `{name}` | {s.problems:,} | {s.skipped:,} | {s.labelled_problems:,} "
                     f"({_pct(s.labelled_problems, s.problems)}) | {s.steps_per_problem:.1f} | {positive} |")
    return lines + [""]


def merged_manifest(out: Path) -> dict[str, Any]:
    """All slices' manifests as one: the first config, the slices' stats merged as
    :class:`RunStats` adds them (only the counters some slice recorded)."""
    found = load_manifests(out)
    merged: dict[str, Any] = {"config": {}, "stats": {}, "slices": len(found), "versions": {}, "status": "unknown"}
    if not found:
        return merged
    merged["config"] = found[0].config
    merged["versions"] = found[0].versions
    merged["status"] = "finished" if all(m.status == "finished" for m in found) else "running"
    for key in ("completed", "failed", "skipped", "rejected"):  # problems: one listed twice counts once
        merged[key] = len({pid for m in found for pid in getattr(m, key) or []})
    total = sum((RunStats.from_dict(m.stats) for m in found), RunStats())
    recorded = {key for m in found for key in m.stats}
    merged["stats"] = {f.name: getattr(total, f.name) for f in fields(RunStats) if f.name in recorded}
    return merged
