"""The architecture's import rules, read from the code (docs/ARCHITECTURE.md draws them).

Every ``import`` of a prmtree module is an arrow, wherever it stands (module level,
inside a function, under ``TYPE_CHECKING``). The arrows must form no circle and never
point up the layers below; the search core's whole import closure must stay free of
asyncio, multiprocessing, PIL and pydantic.
"""

from __future__ import annotations

import ast
import fnmatch
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Where pyproject.toml installs each source folder.
PACKAGES = {"prmtree": "prmtree", "engine": "prmtree.engine", "policies": "prmtree.policies",
            "rollout_workers": "prmtree.rollout_workers"}

#: Bottom to top. A module may import modules of its own layer or lower ones.
LAYERS: list[tuple[str, list[str]]] = [
    ("records and errors", ["prmtree.engine", "prmtree.engine.errors", "prmtree.engine.steps",
                            "prmtree.engine.value", "prmtree.engine.records", "prmtree.engine.tree",
                            "prmtree.engine.stats", "prmtree.engine.contracts"]),
    ("registry", ["prmtree.engine.registry"]),
    ("config", ["prmtree.engine.config"]),
    ("decisions", ["prmtree.engine.calibration", "prmtree.engine.deciders", "prmtree.engine.labels",
                   "prmtree.engine.floors"]),
    ("search core", ["prmtree.engine.search", "prmtree.engine.search.*"]),
    ("engine parts", ["prmtree.engine.answers", "prmtree.engine.answers.*", "prmtree.engine.problem",
                      "prmtree.engine.rollout", "prmtree.engine.tables", "prmtree.engine.synthetic",
                      "prmtree.engine.quality", "prmtree.engine.breaker", "prmtree.engine.deadlines", "prmtree.engine.loop_load",
                      "prmtree.engine.lock",
                      "prmtree.engine.output", "prmtree.engine.output.*", "prmtree.engine.labelers",
                      "prmtree.engine.pilot"]),
    ("run", ["prmtree.engine.resume", "prmtree.engine.driver"]),
    ("policies", ["prmtree.policies", "prmtree.policies.*"]),
    ("executors", ["prmtree.rollout_workers", "prmtree.rollout_workers.*"]),
    ("entry points", ["prmtree", "prmtree.*"]),
]

SEARCH_CORE_FORBIDDEN = ("asyncio", "multiprocessing", "PIL", "pydantic")


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def import_graph() -> nx.DiGraph:
    mods = modules()
    graph = nx.DiGraph()
    for name, path in mods.items():
        graph.add_node(name)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in mods:  # a name inside a module: the module
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    graph.add_edge(name, target)
    return graph


def layer_of(module: str) -> int:
    for index, (_, patterns) in enumerate(LAYERS):
        if any(module == p or fnmatch.fnmatch(module, p) for p in patterns):
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS (and to docs/ARCHITECTURE.md)")


def test_the_import_graph_has_no_circle():
    graph = import_graph()
    assert graph.number_of_edges() > 100  # the graph was really read
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, f"import circles: {cycles[:5]}"


def test_every_import_points_down_the_layers():
    graph = import_graph()
    upward = [f"{a} ({LAYERS[layer_of(a)][0]}) -> {b} ({LAYERS[layer_of(b)][0]})"
              for a, b in graph.edges if layer_of(b) > layer_of(a)]
    assert not upward, "imports pointing up:\n" + "\n".join(upward)


def test_the_layer_rule_catches_an_upward_import():
    """The rule itself can fail: a records module importing the driver would be reported."""
    assert layer_of("prmtree.engine.driver") > layer_of("prmtree.engine.records")
    assert layer_of("prmtree.engine.search.omega") > layer_of("prmtree.engine.deciders")
    assert layer_of("prmtree.export.hf") > layer_of("prmtree.rollout_workers.ray.executor")


@pytest.mark.slow
def test_the_search_core_imports_no_async_process_image_or_validation_library():
    """In a fresh interpreter, importing every strategy loads none of them (the search core
    is pure: its whole import closure, not only its own lines)."""
    code = ("import sys, prmtree.engine.search, prmtree.engine.deciders; "
            f"print(','.join(m for m in {SEARCH_CORE_FORBIDDEN!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"the search core's imports load {loaded}"
    probe = subprocess.run([sys.executable, "-c", "import sys, prmtree.engine.driver; "
                            "print('asyncio' in sys.modules, 'pydantic' in sys.modules)"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert probe == ["True", "True"]  # the check sees what a module loads: the driver loads both
