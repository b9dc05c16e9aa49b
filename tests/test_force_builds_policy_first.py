"""--force and --rerun-changed remove labelled rows only once the run's policy is built.

Before: both removed them first (the old slice, the changed problems' rows) and only then
built the policy; one that could not be built (a wrong argument, a model that does not
load) ended the run with exit 2, "nothing ran", and a finished run gone from --out.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

import prmtree
from prmtree.engine.errors import PolicyConfigError
from prmtree.engine.output import load_manifest, read_table
from prmtree.engine.synthetic import generate_problems
from prmtree.policies.simulated import SimulatedPolicy

PROBLEMS = generate_problems(4, seed=2)


def _rows(out) -> list[str]:
    return sorted(map(repr, read_table(out, "steps").to_pylist()))


def test_force_with_a_policy_that_cannot_be_built_removes_nothing(tmp_path):
    out = tmp_path / "o"
    prmtree.run(PROBLEMS, policy="simulated", out=out, seed=1)
    before = _rows(out)
    with pytest.raises(PolicyConfigError, match="error_rate must be in"):
        prmtree.run(PROBLEMS, policy="simulated", policy_args={"error_rate": 5}, out=out, seed=1, force=True)
    assert _rows(out) == before and before
    assert len(load_manifest(out / "manifest.json").completed) == 4
    # a policy that builds: --force starts over, as before
    s = prmtree.run(PROBLEMS, policy="simulated", policy_args={"error_rate": 0.5}, out=out, seed=1, force=True)
    assert s.problems_done == 4 and _rows(out) != before


def test_rerun_changed_with_a_policy_that_cannot_be_built_drops_nothing(tmp_path):
    out = tmp_path / "o"
    prmtree.run(PROBLEMS, policy="simulated", out=out, seed=1)
    before = _rows(out)
    edited = [*PROBLEMS[:3], replace(PROBLEMS[3], question=PROBLEMS[3].question + " (edited)")]
    with pytest.raises(PolicyConfigError, match="latency_s"):  # an operational argument: the config hash is the same
        prmtree.run(edited, policy="simulated", policy_args={"latency_s": -1}, out=out, seed=1, rerun_changed=True)
    assert _rows(out) == before
    assert sorted(load_manifest(out / "manifest.json").completed) == sorted(p.id for p in PROBLEMS)
    prmtree.run(edited, policy="simulated", out=out, seed=1, rerun_changed=True)  # the edited one is redone
    kept = [r for r in _rows(out) if PROBLEMS[3].id not in r]
    assert kept == [r for r in before if PROBLEMS[3].id not in r] and len(kept) < len(_rows(out))


class Counted(SimulatedPolicy):
    """The simulated policy, counting the instances built and closed (by class)."""

    built = 0
    closed = 0

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        type(self).built += 1

    def close(self):
        type(self).closed += 1


def test_force_with_a_judge_that_cannot_be_built_removes_nothing_and_closes_the_policy(tmp_path):
    # a review: the judge was built after the removal (the finished run gone), and the policy
    # built before it was never closed
    out = tmp_path / "o"
    config = {"labels": {"method": "consensus"}}
    prmtree.run(PROBLEMS, policy="simulated", out=out, seed=1, config=config)
    before = _rows(out)
    bad = {"labels": {"method": "consensus", "judge": {"name": "simulated", "error_rate": 5}}}
    Counted.built = Counted.closed = 0
    with pytest.raises(PolicyConfigError, match="error_rate must be in"):
        prmtree.run(PROBLEMS, policy=f"{__name__}:Counted", out=out, seed=1, config=bad, force=True)
    assert _rows(out) == before
    assert (Counted.built, Counted.closed) == (1, 1)
