"""The run's summary warnings reach a script too: :func:`prmtree.run` issues each as a
:class:`prmtree.RunWarning` (before, only `prmtree run` printed them, so a ``check_answer``
failing on every answer passed as wrong answers in silence through the Python API)."""

from __future__ import annotations

import warnings

import pytest

import prmtree
from prmtree.engine.synthetic import generate_problems, write_jsonl
from prmtree.policies import Completion

PROBLEMS = generate_problems(3, seed=8)


class Pipes:
    name = "pipes"

    async def generate(self, request):
        return [Completion(f"one | two | ANSWER-{i % 2}", 5) for i in range(request.n)]


def test_the_python_api_issues_each_summary_warning_as_a_run_warning(tmp_path):
    with pytest.warns(prmtree.RunWarning) as issued:
        s = prmtree.run(PROBLEMS, policy=Pipes(), strategy="shepherd", out=tmp_path / "a",
                        check_answer=lambda gold, predicted: 1 / 0,
                        config={"search": {"k": 2, "n_solutions": 2}, "labels": {"method": "mc"}})
    said = [str(w.message) for w in issued if w.category is prmtree.RunWarning]
    assert said == s.warnings and len(said) == 1
    assert said[0].startswith("check_answer failed on 6 answers, graded wrong") and "ZeroDivisionError" in said[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", prmtree.RunWarning)  # a script that wants them as errors
        with pytest.raises(prmtree.RunWarning, match="check_answer failed on"):
            prmtree.run(PROBLEMS, policy=Pipes(), strategy="shepherd", out=tmp_path / "b",
                        check_answer=lambda gold, predicted: 1 / 0,
                        config={"search": {"k": 2, "n_solutions": 2}, "labels": {"method": "mc"}})


def test_a_clean_run_issues_none_and_the_cli_prints_each_once(tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error", prmtree.RunWarning)
        s = prmtree.run(PROBLEMS, policy="simulated", out=tmp_path / "clean")
    assert s.warnings == [] and s.problems_done == 3
    from prmtree.cli import main

    data = write_jsonl(PROBLEMS, tmp_path / "data")
    code = main(["run", "--input", str(data), "--out", str(tmp_path / "wrong"), "--policy", "simulated",
                 "--policy-arg", "error_rate=1.0", "--policy-arg", "guess_rate=0.0", "--no-progress"])
    printed = capsys.readouterr()
    assert code == 0
    [line] = [w for w in (printed.out + printed.err).splitlines() if "root all wrong" in w]
    assert line.startswith("warning: ") and "RunWarning" not in printed.err
