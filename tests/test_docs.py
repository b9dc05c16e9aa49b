"""The README's commands and examples are what CI and users actually run."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from prmtree.engine.config import RunConfig, load_config, tomllib

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_readme_opens_with_the_demo_and_test_commands_and_ci_runs_the_latter():
    first_block = re.search(r"```bash\n(.*?)```", README, re.DOTALL).group(1).strip().splitlines()
    assert README.index("```bash") < 20
    assert first_block[0] == "pip install -e . && prmtree demo"
    test_command = first_block[1]
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == test_command


def test_readme_config_block_is_a_valid_config():
    block = re.search(r"```toml\n(.*?)```", README, re.DOTALL).group(1)
    config = RunConfig.model_validate(tomllib.loads(block))
    assert config.search.strategy == "omega" and config.policy.kwargs == {"error_rate": 0.08}


def test_example_config_is_valid():
    config = load_config(REPO / "examples" / "run.toml")
    assert config.seed == 7


@pytest.mark.slow
def test_custom_policy_example_runs(tmp_path, problems_file):
    r = subprocess.run(
        [sys.executable, str(REPO / "examples" / "custom_policy.py"), str(problems_file), str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("24 problems, ")
    assert (tmp_path / "o" / "manifest.json").exists()


@pytest.mark.slow
def test_the_readme_custom_policy_runs_as_written(tmp_path):
    """The README's own-policy example, executed literally (it opens each image with
    ``Image.open(io.BytesIO(image))``, as a policy author would write it)."""
    section = README[README.index("### Your own policy"):]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    assert "Image.open(io.BytesIO(request.problem.images[0]))" in code
    from prmtree.engine.synthetic import generate_problems, write_jsonl

    write_jsonl(generate_problems(3, seed=1), tmp_path / "data")
    (tmp_path / "example.py").write_text(code)
    r = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    done, rollouts, _ = r.stdout.split()
    assert (int(done), int(rollouts) > 0) == (3, True)  # every problem answered: no image failed to open
    from prmtree.engine.output import load_manifest

    assert load_manifest(tmp_path / "out" / "my-vlm" / "manifest.json").failed == {}
