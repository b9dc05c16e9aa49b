"""The Python API's ``check_answer`` and ``split_steps`` decide rows as a setting does, so a
resume with another one (or none) is refused as a changed config is.

Before: neither was recorded; a run resumed without its custom grader (or splitter) mixed
rows graded two ways, with floors its pilot learned under the first, exit 0 and no word.
"""

from __future__ import annotations

import pytest

import prmtree
from prmtree.engine.config import RunConfig
from prmtree.engine.errors import ConfigError
from prmtree.engine.synthetic import generate_problems

PROBLEMS = generate_problems(3, seed=4)


def lenient(gold: str, predicted: str) -> bool:
    return True


def by_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("key, custom", [("check_answer", lenient), ("split_steps", by_lines)])
def test_a_resume_without_the_custom_function_is_refused_naming_it(tmp_path, key, custom):
    out = tmp_path / "o"
    prmtree.run(PROBLEMS[:2], policy="simulated", out=out, seed=1, **{key: custom})
    section = "verify" if key == "check_answer" else "steps"
    with pytest.raises(ConfigError) as refused:
        prmtree.run(PROBLEMS, policy="simulated", out=out, seed=1)
    said = str(refused.value)
    assert "was written with a different config" in said
    assert f"{section}.custom: '{__name__}:{custom.__qualname__}' -> (default)" in said
    # the same function: the run goes on (the third problem is added)
    s = prmtree.run(PROBLEMS, policy="simulated", out=out, seed=1, **{key: custom})
    assert s.problems_done == 3


def test_a_run_without_custom_functions_keeps_its_config_hash():
    # the settings were added later: at their defaults they are not in the hash, so runs
    # written before them resume
    flat = RunConfig().row_defining()
    assert "verify.custom" not in flat and "steps.custom" not in flat
    named = RunConfig(verify={"custom": "m:f"})
    assert named.row_defining()["verify.custom"] == "m:f" and named.config_hash() != RunConfig().config_hash()
