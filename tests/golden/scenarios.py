"""Golden runs: the rows each table holds for fixed seeds, as fingerprints.

A refactor that keeps behaviour keeps every fingerprint. ``python tests/golden/scenarios.py
--write`` records them (only when a change of rows is intended, and said so in the commit).
Each scenario goes through the public API, so the same file runs against any version.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

FINGERPRINTS = Path(__file__).with_name("fingerprints.json")
TABLES = ("steps", "nodes", "pairs", "errors")

#: name -> (strategy, labelling method, executor kind)
SCENARIOS: dict[str, tuple[str, str, str]] = {
    f"{strategy}-{method}": (strategy, method, "inline")
    for strategy in ("omega", "shepherd", "mcts")
    for method in ("mc", "calibrated", "consensus")
}
SCENARIOS["omega-calibrated-ray"] = ("omega", "calibrated", "ray")


def _canonical(value: Any) -> Any:
    """Row values with image bytes replaced by their hash (paths of temporary inputs vary)."""
    if isinstance(value, dict):
        if set(value) == {"bytes", "path"}:
            data = value["bytes"]
            return {"bytes": hashlib.sha256(data).hexdigest() if data else None}
        return {k: _canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, float):
        return repr(value)
    return value


def fingerprint(out: Path) -> dict[str, str]:
    """sha256 of each table's rows, sorted: equal iff two runs wrote the same rows."""
    result = {}
    for table in TABLES:
        files = sorted((out / table).glob("*.parquet"))
        rows = [json.dumps(_canonical(r), sort_keys=True) for f in files for r in pq.read_table(f).to_pylist()]
        result[table] = f"{len(rows)}:" + hashlib.sha256("\n".join(sorted(rows)).encode()).hexdigest()[:20]
    return result


def input_file(directory: Path) -> Path:
    from prmtree.engine.synthetic import generate_problems, write_jsonl

    return write_jsonl(generate_problems(10, seed=3), directory)


def run_scenario(name: str, workdir: Path) -> dict[str, str]:
    import prmtree

    strategy, method, executor = SCENARIOS[name]
    out = workdir / name
    executor_cfg: dict[str, Any] = {"kind": executor}
    if executor == "ray":
        executor_cfg.update(workers=2, num_cpus_per_worker=0)
    prmtree.run(
        input_file(workdir / f"data-{name}"),
        policy="simulated",
        strategy=strategy,
        out=out,
        seed=5,
        config_overrides={"labels": {"method": method}, "search": {"budget": 120}, "executor": executor_cfg},
    )
    return fingerprint(out)


def run_demo(workdir: Path) -> dict[str, str]:
    import subprocess

    out = workdir / "demo"
    subprocess.run(
        [sys.executable, "-m", "prmtree", "demo", "--out", str(out), "--problems", "12", "--no-progress"],
        check=True, capture_output=True,
    )
    return fingerprint(out)


if __name__ == "__main__":
    import os

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with tempfile.TemporaryDirectory() as tmp:
        found = {"demo": run_demo(Path(tmp))}
        for name in SCENARIOS:
            found[name] = run_scenario(name, Path(tmp))
    print(json.dumps(found, indent=1))
    if "--write" in sys.argv:
        FINGERPRINTS.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
