"""The three top-level folders install as prmtree.engine / .policies / .rollout_workers."""

import json
import re
import subprocess
import sys
import zipfile
from importlib.metadata import distributions
from pathlib import Path

import pytest
from conftest import starts_processes

REPO = Path(__file__).resolve().parents[1]
MODULES = [
    "prmtree",
    "prmtree.cli",
    "prmtree.engine.driver",
    "prmtree.engine.search.omega",
    "prmtree.policies.simulated",
    "prmtree.rollout_workers.inline",
]


def _import_check(pythonpath: str | None) -> dict:
    code = (
        "import json, sys, importlib\n"
        f"mods = {MODULES!r}\n"
        "files = {m: importlib.import_module(m).__file__ for m in mods}\n"
        "heavy = [m for m in ('ray', 'torch', 'vllm', 'transformers') if m in sys.modules]\n"
        "print(json.dumps({'files': files, 'heavy': heavy}))\n"
    )
    env = None
    if pythonpath:
        import os

        env = {**os.environ, "PYTHONPATH": pythonpath}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/", check=True)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
@starts_processes()
def installed_import() -> dict:
    """The modules' files and the heavy backends loaded, as a fresh interpreter imports them."""
    return _import_check(None)


def test_import_prmtree_imports_no_heavy_backend(installed_import):
    assert installed_import["heavy"] == []


def test_installed_package_maps_the_folders(installed_import):
    files = installed_import["files"]
    urls = [d.read_text("direct_url.json") for d in distributions(name="prmtree")]
    editable = any(u and json.loads(u).get("dir_info", {}).get("editable") for u in urls)
    if not editable:
        pytest.skip("prmtree is not installed in editable mode here")
    assert Path(files["prmtree.engine.search.omega"]) == REPO / "engine" / "search" / "omega.py"
    assert Path(files["prmtree.policies.simulated"]) == REPO / "policies" / "simulated.py"
    assert Path(files["prmtree.rollout_workers.inline"]) == REPO / "rollout_workers" / "inline.py"


@pytest.mark.slow
def test_built_wheel_contains_and_imports_every_package(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("prmtree-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = [f"prmtree/{init.relative_to(REPO)}" for folder in ("engine", "policies", "rollout_workers")
                for init in (REPO / folder).rglob("__init__.py")]
    packages += [str(init.relative_to(REPO)) for init in (REPO / "prmtree").rglob("__init__.py")]
    import tomllib

    listed = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    # every (sub)package of the checkout is listed in pyproject.toml, and nothing else
    assert sorted(p.rsplit("/", 1)[0].replace("/", ".") for p in packages) == sorted(listed)
    missing = sorted(set(packages) - set(names))
    assert not missing, f"packages left out of the wheel (add them to pyproject.toml): {missing}"
    assert not any(n.startswith(("engine/", "policies/", "tests/")) for n in names)
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(wheel).extractall(unpacked)
    files = _import_check(str(unpacked))["files"]
    for module, file in files.items():
        assert Path(file).is_relative_to(unpacked), (module, file)


@pytest.mark.slow
def test_a_checkout_works_without_installing_prmtree(tmp_path):
    """``python -m prmtree`` and the engine's imports from a plain checkout: Python started
    without site's .pth files (so no editable-install finder), the dependencies on its path."""
    import site

    deps = site.getsitepackages()[0]
    code = (f"import sys; sys.path[:0] = [{str(REPO)!r}]; sys.path.append({deps!r}); "
            "import prmtree.engine.search.omega as m, prmtree.rollout_workers.ray, prmtree.export; print(m.__file__)")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == REPO / "engine" / "search" / "omega.py"
    help_code = (f"import sys, runpy; sys.path[:0] = [{str(REPO)!r}]; sys.path.append({deps!r}); "
                 "sys.argv = ['prmtree', '--help']; runpy.run_module('prmtree', run_name='__main__')")
    out = subprocess.run([sys.executable, "-S", "-c", help_code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    listed = re.search(r"\{([a-z,]+)\}", out.stdout)
    assert listed and {"demo", "run", "inspect", "grade", "verify", "export", "synth", "bon"} <= set(listed.group(1).split(","))
