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


def within(gold: str, predicted: str, tol: float = 0.0) -> bool:
    try:
        return abs(float(gold) - float(predicted)) <= tol
    except ValueError:
        return gold.strip() == predicted.strip()


def test_partials_of_one_function_with_other_arguments_are_other_graders(tmp_path):
    from functools import partial

    out = tmp_path / "o"
    prmtree.run(PROBLEMS[:2], policy="simulated", out=out, seed=1, check_answer=partial(within, tol=0.0))
    with pytest.raises(ConfigError, match=r"verify.custom: '.*within\(tol=0.0\)' -> '.*within\(tol=1000\)'"):
        prmtree.run(PROBLEMS, policy="simulated", out=out, seed=1, check_answer=partial(within, tol=1000))


def test_a_custom_name_in_a_config_without_its_function_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="verify.custom = 'mymod:lenient' names the Python API's check_answer"):
        prmtree.run(PROBLEMS, policy="simulated", out=tmp_path / "o", config={"verify": {"custom": "mymod:lenient"}})
    assert not (tmp_path / "o").exists()


def test_a_run_written_before_the_functions_were_recorded_resumes_with_its_function(tmp_path):
    import json

    out = tmp_path / "o"
    prmtree.run(PROBLEMS[:2], policy="simulated", out=out, seed=1, check_answer=lenient)
    manifest = out / "manifest.json"
    data = json.loads(manifest.read_text())
    for section in ("verify", "steps"):  # as an older prmtree wrote it: no such keys
        data["config"][section].pop("custom")
    data["config_hash"] = "0" * 16
    manifest.write_text(json.dumps(data))
    s = prmtree.run(PROBLEMS, policy="simulated", out=out, seed=1, check_answer=lenient)
    assert s.problems_done == 3
