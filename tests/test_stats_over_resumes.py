"""The manifest's ``stats`` add up over resumes: a resumed run's answer checks count with the
earlier sessions' as its rollouts do, and a resume with nothing left to do keeps them (the
dataset card's "verifier statistics" with them). Real runs, real manifests."""

from __future__ import annotations

import json

from prmtree.engine.synthetic import generate_problems

import prmtree

PROBLEMS = generate_problems(4, seed=3)
TINY = {"search": {"budget": 16}}


def test_answer_checks_add_up_over_resumes_and_a_resume_with_nothing_to_do_keeps_them(tmp_path):
    from prmtree.export import export

    out = tmp_path / "run"
    first = prmtree.run(PROBLEMS[:2], policy="simulated", out=out, seed=7, config=TINY)
    before = first.stats["verifier"]["checks"]
    assert before == first.stats["rollouts"] > 0  # the simulated policy boxes every answer: one check each
    resumed = prmtree.run(PROBLEMS, policy="simulated", out=out, seed=7, config=TINY)
    assert resumed.rollouts_this_session > 0
    stats = json.loads((out / "manifest.json").read_text())["stats"]
    assert stats["verifier"]["checks"] == stats["rollouts"] > before
    assert stats["verifier"]["memo_hits"] + stats["verifier"]["quick"] <= stats["verifier"]["checks"]
    nothing = prmtree.run(PROBLEMS, policy="simulated", out=out, seed=7, config=TINY)
    assert nothing.rollouts_this_session == 0
    after = json.loads((out / "manifest.json").read_text())["stats"]
    assert after["verifier"] == stats["verifier"] and after["rollouts"] == stats["rollouts"]
    export(out, "hf", tmp_path / "hf")
    card = (tmp_path / "hf" / "README.md").read_text()
    assert f"verifier statistics: `checks` = `{stats['rollouts']}`" in card
