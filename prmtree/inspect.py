"""``prmtree inspect``: what a run produced, in the terminal or as a self-contained HTML page.

Model text is untrusted: the HTML report escapes every step, question and reason, and
embeds images as data URLs; it loads nothing from anywhere.
"""

from __future__ import annotations

import base64
import html
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from prmtree.engine.driver import reason_kind
from prmtree.engine.output import (
    load_manifests,
    manifest_layout,
    missing_slices,
    read_table,
    resolve_image,
)
from prmtree.engine.output.verification import FloorSet, floor_sets
from prmtree.engine.stats import RunStats, SpaceCoverage, coverage
from prmtree.export import unfinished_slices

VALUE_BINS = [(0.0, 0.0, "0")] + [(i / 10, (i + 1) / 10, f"{i / 10:.1f}-{(i + 1) / 10:.1f}") for i in range(10)]
CONFIDENCE_BINS = ("<0.9", "0.9-0.95", "0.95-0.99", "0.99-0.999", ">=0.999")


def _confidence_bin(c: float) -> str:
    for limit, name in zip((0.9, 0.95, 0.99, 0.999), CONFIDENCE_BINS):
        if c < limit:
            return name
    return CONFIDENCE_BINS[-1]


@dataclass
class Report:
    out: Path
    manifest: dict[str, Any]
    depth_balance: dict[int, tuple[int, int]] = field(default_factory=dict)  # depth -> (positive, negative)
    value_histogram: dict[str, int] = field(default_factory=dict)
    step_counts: dict[int, int] = field(default_factory=dict)
    bad_rows: dict[str, tuple[int, str, str]] = field(default_factory=dict)  # kind -> (count, row id, reason)
    bad_row_total: int = 0  # rows in errors/
    paths: int = 0
    label_sources: dict[str, int] = field(default_factory=dict)  # what decided each labelled step
    confidence_histogram: dict[str, int] = field(default_factory=dict)  # P(label right) of labelled steps
    flagged_paths: int = 0
    failures: dict[str, tuple[int, str, str]] = field(default_factory=dict)  # kind -> (count, problem id, reason)
    spaces: list[SpaceCoverage] = field(default_factory=list)  # coverage per answer space (the manifests' counts)


def _merged_manifest(out: Path) -> dict[str, Any]:
    """All slices' manifests as one; ``stats`` is their :class:`RunStats` added up."""
    named = dict(zip(manifest_layout(out), load_manifests(out)))
    found = list(named.values())
    if not found:
        raise ValueError(f"{str(out)!r} holds no prmtree manifest")
    writing, stopped = unfinished_slices(out, named)
    # a manifest says "running" until its run finishes: running only while a process writes it
    status = ("finished" if not (writing or stopped) else "running" if not stopped else
              "incomplete: stopped before it finished (run its command again)" if len(found) == 1 else
              f"incomplete: {len(stopped)} slices stopped before they finished (run their commands again)")
    merged: dict[str, Any] = {"slices": len(found), "config": found[0].config, "config_hash": found[0].config_hash,
                              "status": status}
    # problems, not list entries: a problem listed twice (a shard listed twice) counts once
    completed = {pid for m in found for pid in m.completed}
    merged["completed"] = len(completed)
    merged["failed"] = len({pid for m in found for pid in m.failed} - completed)
    merged["skipped"] = len({pid for m in found for pid in m.skipped})
    merged["failed_ids"] = {pid: why for m in found for pid, why in m.failed.items() if pid not in completed}
    merged["stats"] = sum((RunStats.from_dict(m.stats) for m in found), RunStats())
    merged["calibration"] = found[0].calibration  # the slices learn the same (or take the first's): the first one's shown
    merged["floor_sets"] = floor_sets(named)  # ... unless a pilot member failed for some only: then each is shown
    missing = missing_slices(out)
    merged["slices_in_layout"] = len(found) + len(missing)
    if missing:
        merged["status"] = f"incomplete: {len(missing)}/{len(found) + len(missing)} slices not run"
    return merged


def _bin(value: float) -> str:
    if value == 0:
        return "0"
    for lo, hi, name in VALUE_BINS[1:]:
        if lo < value <= hi:
            return name
    return VALUE_BINS[-1][2]


def collect(out: Path) -> Report:
    report = Report(out, _merged_manifest(out))
    balance: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    table = read_table(out, "steps")
    columns = [c for c in ("labels", "label_sources", "confidences", "flagged") if c in table.column_names]
    steps = table.select(columns).to_pylist()
    report.paths = len(steps)
    counts: Counter[int] = Counter()
    sources: Counter[str] = Counter()
    confidence: Counter[str] = Counter({name: 0 for name in CONFIDENCE_BINS})
    for row in steps:
        counts[len(row["labels"])] += 1
        for depth, label in enumerate(row["labels"], start=1):
            if label is not None:  # null: undecided, kept unlabelled
                balance[depth][0 if label else 1] += 1
        sources.update(row.get("label_sources") or [])
        for c in row.get("confidences") or []:
            if c is not None:
                confidence[_confidence_bin(c)] += 1
        report.flagged_paths += bool(row.get("flagged"))
    report.label_sources = dict(sources.most_common())
    report.confidence_histogram = dict(confidence)
    report.depth_balance = {d: (p, n) for d, (p, n) in sorted(balance.items())}
    report.step_counts = dict(sorted(counts.items()))
    hist: Counter[str] = Counter({name: 0 for _, _, name in VALUE_BINS})
    for value in read_table(out, "nodes").column("value").to_pylist():
        if value is not None:
            hist[_bin(value)] += 1
    report.value_histogram = dict(hist)
    errors = read_table(out, "errors").select(["problem_id", "reason"]).to_pylist()
    report.bad_row_total = len(errors)
    report.bad_rows = bad_row_kinds([(row["problem_id"], row["reason"]) for row in errors])
    report.failures = failure_kinds(report.manifest["failed_ids"])
    report.spaces = coverage(report.manifest["stats"].answer_spaces)
    return report


def failure_kinds(failed: dict[str, str]) -> dict[str, tuple[int, str, str]]:
    """The manifest's failed problems by kind, most common first: kind -> (count, one problem
    id, its reason). A manifest reason is ``stage: reason``; the kind is the reason's, as the
    run's summary groups them (``contract``, ``GenerationError``, ...)."""
    kinds: dict[str, list[Any]] = {}
    for pid, reason in sorted(failed.items()):
        _, sep, rest = reason.partition(": ")
        entry = kinds.setdefault(reason_kind(rest if sep else reason), [0, pid, reason])
        entry[0] += 1
    return {k: (n, pid, reason) for k, (n, pid, reason) in sorted(kinds.items(), key=lambda kv: -kv[1][0])}


#: What varies between bad rows of one kind: a URL, a quoted value, a number, a value cut
#: short ("iVBORw0KGgo..."), the path in "image <path> not found | unreadable | is ...".
_VARIES = re.compile(r"[A-Za-z][\w+.-]*://[^\s)]*|'[^']*'|\"[^\"]*\"|(?<![\w.-])\d+(?:[.,x]\d+)*(?![\w-])"
                     r"|[^\s(]+\.\.\.")
_IMAGE_PATH = re.compile(r"^image (?!entry |list |struct ).+?(?= not found| unreadable| is )", re.DOTALL)

#: Kinds of bad input rows ``inspect`` lists; the rest are counted in one line.
SHOWN_BAD_KINDS = 20


def input_error_kind(reason: str) -> str:
    """A bad input row's kind: its reason with the path or value in it shown as "…", so 60
    rows whose image files are missing are one kind, not 60."""
    return _VARIES.sub("…", _IMAGE_PATH.sub("image …", reason))


def bad_row_kinds(rows: list[tuple[str, str]]) -> dict[str, tuple[int, str, str]]:
    """The bad input rows ((row id, reason) each) by kind, most common first: kind ->
    (count, one row id, its reason)."""
    kinds: dict[str, list[Any]] = {}
    for pid, reason in sorted(rows):
        entry = kinds.setdefault(input_error_kind(reason), [0, pid, reason])
        entry[0] += 1
    return {k: (n, pid, reason) for k, (n, pid, reason) in sorted(kinds.items(), key=lambda kv: -kv[1][0])}


def bad_row_lines(kinds: dict[str, tuple[int, str, str]]) -> list[tuple[str, str, str]]:
    """(count, kind, e.g.) lines for the bad input rows' kinds (see :func:`bad_row_kinds`):
    the most common, then one line for the rest ("and N more kinds")."""
    ranked = list(kinds.items())
    lines = [(f"{n:,}", kind[:200], f"{pid}: {reason[:200]}") for kind, (n, pid, reason) in ranked[:SHOWN_BAD_KINDS]]
    rest = ranked[SHOWN_BAD_KINDS:]
    if rest:
        lines.append((f"{sum(n for _, (n, _, _) in rest):,}", f"and {len(rest)} more kinds", ""))
    return lines


def print_report(out: Path) -> Report:
    report = collect(out)
    console = Console(markup=False)  # reasons, answers and paths hold brackets ("[input] answer_field")
    m, stats = report.manifest, report.manifest["stats"]
    run = Table(title=f"prmtree run: {out}", show_header=False)
    run.add_column("what")
    run.add_column("value", justify="right")
    run.add_row("status", str(m.get("status")))
    run.add_row("strategy / policy", f"{m['config']['search']['strategy']} / {m['config']['policy']['name']}")
    layout = m.get("slices_in_layout", m["slices"])
    run.add_row("slices", str(m["slices"]) if layout == m["slices"] else f"{m['slices']} of {layout} run")
    run.add_row("problems completed / skipped / failed", f"{m['completed']} / {m['skipped']} / {m['failed']}")
    run.add_row("rollouts", f"{int(stats.rollouts):,}")
    run.add_row("tokens", f"{int(stats.tokens):,}")
    run.add_row("labelled paths", f"{report.paths:,}")
    run.add_row("steps labelled + / -", f"{int(stats.labels_positive):,} / {int(stats.labels_negative):,}")
    console.print(run)
    depth = Table(title="label balance per depth")
    for col in ("depth", "+", "-", "% positive"):
        depth.add_column(col, justify="right")
    for d, (p, n) in report.depth_balance.items():
        depth.add_row(str(d), str(p), str(n), f"{100 * p / (p + n):.0f}%")
    console.print(depth)
    console.print(_labelling_table(report))
    if report.spaces:
        console.print(coverage_table(report.spaces))
    if any(report.confidence_histogram.values()):
        console.print(_bars("label confidence P(label right)", report.confidence_histogram))
    console.print(_bars("node value histogram", report.value_histogram))
    console.print(_bars("steps per path", {str(k): v for k, v in report.step_counts.items()}))
    if report.failures:
        failures = Table(title="failed problems (the same command retries them)")
        for col in ("count", "kind", "e.g."):
            failures.add_column(col, justify="right" if col == "count" else "left")
        for kind, (count, pid, reason) in report.failures.items():
            failures.add_row(str(count), kind, f"{pid}: {reason[:200]}")
        console.print(failures)
    if report.bad_rows:
        errors = Table(title=f"bad input rows (errors/): {report.bad_row_total:,}")
        for col in ("count", "kind", "e.g."):
            errors.add_column(col, justify="right" if col == "count" else "left")
        for line in bad_row_lines(report.bad_rows):
            errors.add_row(*line)
        console.print(errors)
    return report


def _labelling_lines(report: Report) -> list[tuple[str, str]]:
    """How the labels were made: method, what decided the steps, the judge's record."""
    m = report.manifest
    labels_cfg = m["config"].get("labels", {})
    judged = m["stats"].labelling
    lines = [("method", str(labels_cfg.get("method", "mc")))]
    if labels_cfg:
        lines.append(("confidence / prior", f"{labels_cfg.get('confidence')} / {labels_cfg.get('prior')}"))
    total = sum(report.label_sources.values())
    for source, count in report.label_sources.items():
        what = "steps left undecided" if source == "undecided" else f"steps decided by {source}"
        lines.append((what, f"{count:,} ({100 * count / total:.1f}%)"))
    from prmtree.summary import calibration_lines

    lines += _floor_lines(calibration_lines(m.get("calibration") or {}, judged), m.get("floor_sets") or [])
    steps = int(m["stats"].steps_labelled)
    if steps:
        lines.append(("rollouts per labelled step", f"{m['stats'].rollouts / steps:.2f}"))
    if judged.get("judge_calls"):
        agreed, disagreed = judged.get("judge_agreed", 0), judged.get("judge_disagreed", 0)
        lines += [
            ("judge calls / tokens", f"{judged['judge_calls']:,} / {judged.get('judge_tokens', 0):,}"),
            ("MC and judge agree", f"{agreed:,} of {agreed + disagreed:,} paths"),
            ("paths dropped / kept flagged", f"{judged.get('paths_dropped_by_judge', 0):,} / {report.flagged_paths:,}"),
            ("pairs left out (a step disputed)", f"{judged.get('pairs_dropped_by_judge', 0):,}"),
            ("judge unparseable / failed", f"{judged.get('judge_unparseable', 0):,} / {judged.get('judge_failures', 0):,}"),
        ]
    return lines


def _floor_lines(lines: list[tuple[str, str]], sets: list[FloorSet]) -> list[tuple[str, str]]:
    """``lines`` with its one floors row replaced by a row per set of floors and its slices,
    where the slices hold several (``prmtree verify`` fails on that, saying how to repair)."""
    if len(sets) < 2:
        return lines
    rows = [(f"floors of {s.slices_text()}", s.floors_text()) for s in sets]
    rows.append(("floors differ between slices", "prmtree verify says how to repair"))
    at = next((i for i, (what, _) in enumerate(lines) if what.startswith("floors learned")), len(lines))
    return lines[:at] + rows + lines[at + 1:]


def _labelling_table(report: Report) -> Table:
    table = Table(title="labels: how they were made", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for what, value in _labelling_lines(report):
        table.add_row(what, value)
    return table


COVERAGE_COLUMNS = ("answer space", "problems", "skipped", "with a label", "labels / problem", "% +")


def coverage_rows(spaces: list[SpaceCoverage]) -> list[tuple[str, ...]]:
    """Coverage per answer space, one row each: problems (skipped ones included), those
    skipped, those with at least one labelled step (and their share), labelled steps per
    problem, and the share of those labelled +."""
    return [(s.space, f"{s.problems:,}", f"{s.skipped:,}", f"{s.labelled_problems:,} ({s.share:.0%})",
             f"{s.steps_per_problem:.1f}", "-" if s.positive_share is None else f"{s.positive_share:.0%}")
            for s in spaces]


def coverage_table(spaces: list[SpaceCoverage]) -> Table:
    table = Table(title="coverage per answer space")
    for col in COVERAGE_COLUMNS:
        table.add_column(col, justify="left" if col == "answer space" else "right")
    for row in coverage_rows(spaces):
        table.add_row(*row)
    return table


def _bars(title: str, data: dict[str, int]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("bin", justify="right")
    table.add_column("count", justify="right")
    table.add_column("bar")
    top = max(data.values(), default=0) or 1
    for key, count in data.items():
        table.add_row(key, str(count), "█" * round(30 * count / top))
    return table


# -- HTML -------------------------------------------------------------------------------


def _colour(value: float | None) -> str:
    if value is None:
        return "#bbbbbb"
    red, green = int(220 * (1 - value)), int(180 * value)
    return f"rgb({red},{green},60)"


def _svg_bars(data: dict[str, int], width: int = 520, height: int = 160) -> str:
    n = max(len(data), 1)
    top = max(data.values(), default=0) or 1
    bar_w = (width - 20) / n
    parts = [f'<svg width="{width}" height="{height + 30}" role="img">']
    for i, (key, count) in enumerate(data.items()):
        h = (height - 10) * count / top
        x = 10 + i * bar_w
        parts.append(
            f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{bar_w * 0.8:.1f}" height="{h:.1f}" fill="#4a78c2">'
            f"<title>{html.escape(key)}: {count}</title></rect>"
            f'<text x="{x + bar_w * 0.4:.1f}" y="{height + 14}" font-size="9" text-anchor="middle">'
            f"{html.escape(key)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _svg_tree(nodes: list[dict[str, Any]]) -> str:
    """Nodes placed by depth (x) and leaf order (y), coloured by value; hover shows the step."""
    children: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for node in nodes:
        children[node["parent_id"]].append(node)
    pos: dict[str, tuple[float, float]] = {}
    next_row = [0]

    def place(node: dict[str, Any]) -> float:
        kids = children.get(node["node_id"], [])
        if not kids:
            y = next_row[0]
            next_row[0] += 1
        else:
            ys = [place(k) for k in kids]
            y = sum(ys) / len(ys)
        pos[node["node_id"]] = (node["depth"], y)
        return y

    for root in children.get(None, []):
        place(root)
    dx, dy = 46, 14
    width = 40 + dx * (max((d for d, _ in pos.values()), default=0) + 1)
    height = 20 + dy * max(next_row[0], 1)
    parts = [f'<svg width="{width}" height="{height}" class="tree">']
    for node in nodes:
        if node["parent_id"] in pos:
            (x1, y1), (x2, y2) = pos[node["parent_id"]], pos[node["node_id"]]
            parts.append(
                f'<line x1="{20 + x1 * dx}" y1="{10 + y1 * dy}" x2="{20 + x2 * dx}" y2="{10 + y2 * dy}" '
                'stroke="#999" stroke-width="1"/>'
            )
    for node in nodes:
        x, y = pos[node["node_id"]]
        value = node["value"]
        shown = "not sampled" if value is None else f"MC {value:.2f} ({node['n_correct']}/{node['n_rollouts']})"
        if node.get("decision"):
            post = node.get("posterior")
            shown += f", {node['decision']}" + (f" (P(right) {post:.3f})" if post is not None else "")
        ring = {"right": "#060", "wrong": "#b00", "undecided": "#d90"}.get(node.get("decision") or "", "none")
        parts.append(
            f'<circle cx="{20 + x * dx}" cy="{10 + y * dy}" r="5" fill="{_colour(value)}" stroke="{ring}" stroke-width="2">'
            f"<title>{html.escape(shown)}\n{html.escape(_shortened(node['step']))}</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _image_html(out: Path, images: list[dict[str, Any]]) -> str:
    parts = []
    for image in images or []:
        data = image.get("bytes")
        file = resolve_image(out, image["path"]) if not data and image.get("path") else None
        if file is not None:
            data = file.read_bytes()
        if data:
            encoded = base64.b64encode(data).decode("ascii")
            parts.append(f'<img src="data:image/png;base64,{encoded}" width="160" alt="problem image">')
    return "".join(parts)


def _step_note(path: dict[str, Any], j: int) -> str:
    """One step's provenance, as the HTML shows it beside the step."""
    parts = [f"MC {path['values'][j]:.2f}"]
    confidence = (path.get("confidences") or [None] * (j + 1))[j]
    if confidence is not None:
        parts.append(f"confidence {confidence:.3f}")
    rollouts = (path.get("rollouts") or [None] * (j + 1))[j]
    if rollouts:
        parts.append(f"{rollouts} rollouts")
    source = (path.get("label_sources") or [None] * (j + 1))[j]
    if source:
        parts.append(source)
    verdict = (path.get("judge_verdicts") or [None] * (j + 1))[j]
    if verdict:
        parts.append(f"judge: {verdict}")
    return ", ".join(parts)


#: Characters of one step (or question) the HTML report shows: a runaway generation would
#: otherwise make a report of hundreds of megabytes that no browser opens.
HTML_TEXT_CHARS = 4000


def _shortened(text: str) -> str:
    return text if len(text) <= HTML_TEXT_CHARS else f"{text[:HTML_TEXT_CHARS]}... ({len(text):,} characters)"


def write_html(out: Path, target: Path, max_trees: int = 30) -> None:
    report = collect(out)
    steps = read_table(out, "steps").to_pylist()
    nodes = read_table(out, "nodes").to_pylist()
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for node in nodes:
        by_problem[node["problem_id"]].append(node)
    first_row: dict[str, dict[str, Any]] = {}
    for row in steps:
        first_row.setdefault(row["problem_id"], row)
    esc = html.escape
    m = report.manifest
    body = [
        "<!doctype html><html><head><meta charset='utf-8'><title>prmtree report</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}"
        ".steps li.neg{color:#b00}.steps li.pos{color:#060}.steps li.und{color:#d90}section{margin-bottom:2em}</style></head><body>",
        f"<h1>prmtree report: {esc(str(out))}</h1>",
        f"<p>strategy {esc(m['config']['search']['strategy'])}, policy {esc(str(m['config']['policy']['name']))}; "
        f"{m['completed']} problems completed, {m['skipped']} skipped, {m['failed']} failed; "
        f"{int(m['stats'].rollouts):,} rollouts; {report.paths:,} labelled paths.</p>",
        "<h2>Label balance per depth</h2><table><tr><th>depth</th><th>+</th><th>-</th></tr>",
        *(f"<tr><td>{d}</td><td>{p}</td><td>{n}</td></tr>" for d, (p, n) in report.depth_balance.items()),
        "</table><h2>Labels: how they were made</h2><table>",
        *(f"<tr><td>{esc(w)}</td><td>{esc(v)}</td></tr>" for w, v in _labelling_lines(report)),
        "</table><h2>Coverage per answer space</h2><table><tr>",
        *(f"<th>{esc(c)}</th>" for c in COVERAGE_COLUMNS),
        "</tr>",
        *("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in coverage_rows(report.spaces)),
        "</table><h2>Label confidence</h2>",
        _svg_bars(report.confidence_histogram),
        "<h2>Node values</h2>",
        _svg_bars(report.value_histogram),
        "<h2>Steps per path</h2>",
        _svg_bars({str(k): v for k, v in report.step_counts.items()}),
    ]
    if report.failures:
        body.append("<h2>Failed problems</h2><table><tr><th>count</th><th>kind</th><th>e.g.</th></tr>")
        body.extend(f"<tr><td>{n}</td><td>{esc(k)}</td><td>{esc(pid)}: {esc(r[:200])}</td></tr>"
                    for k, (n, pid, r) in report.failures.items())
        body.append("</table>")
    if report.bad_rows:
        body.append(f"<h2>Bad input rows (errors/): {report.bad_row_total:,}</h2>"
                    "<table><tr><th>count</th><th>kind</th><th>e.g.</th></tr>")
        body.extend(f"<tr><td>{esc(n)}</td><td>{esc(k)}</td><td>{esc(e)}</td></tr>" for n, k, e in bad_row_lines(report.bad_rows))
        body.append("</table>")
    body.append("<h2>Trees</h2>")
    for pid in list(by_problem)[:max_trees]:
        row = first_row.get(pid)
        body.append(f"<section><h3>{esc(pid)}</h3>")
        if row is not None:
            prompt = row["prompt"] if isinstance(row["prompt"], str) else str(row["prompt"])
            body.append(f"<p>{esc(_shortened(prompt))}</p><p>gold answer: {esc(_shortened(row['answer']))}</p>")
            body.append(_image_html(out, row["images"]))
        body.append(_svg_tree(by_problem[pid]))
        for path in [r for r in steps if r["problem_id"] == pid][:3]:
            items = "".join(
                f"<li class='{'und' if label is None else 'pos' if label else 'neg'}'>{esc(_shortened(step))} "
                f"<small>({esc(_step_note(path, j))})</small></li>"
                for j, (step, label) in enumerate(zip(path["completions"], path["labels"]))
            )
            flag = "<p><b>flagged:</b> MC and the judge disagree</p>" if path.get("flagged") else ""
            body.append(f"{flag}<ol class='steps'>{items}</ol>")
        body.append("</section>")
    body.append("</body></html>")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(body), encoding="utf-8")
