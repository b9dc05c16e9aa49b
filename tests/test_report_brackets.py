"""Reasons, answers and paths hold square brackets ("for [/v1/chat]", "set [input]
answer_field"): the run's summary, ``inspect`` and ``bon`` print them as text. Before, rich
read them as markup: a closing-tag look-alike crashed the summary after the run had saved
everything (exit 1, a traceback, where a failed problem means 3) and ``inspect`` with it,
and ``[input]`` vanished from inspect's bad-row reasons."""

from __future__ import annotations

import json

import prmtree
from prmtree.engine.errors import GenerationError
from prmtree.engine.synthetic import generate_problems, write_jsonl
from prmtree.policies import Completion

REASON = "server said 404 for [/v1/chat] (check [input] base_url)"


async def fails_one(request):
    if request.problem.id == "syn-000001":
        raise GenerationError(REASON, retryable=False)
    return [Completion(f"Step one.\n\nSo \\boxed{{{request.problem.answer}}}", 3)] * request.n


def test_bracketed_reasons_are_printed_as_text_by_the_summary_and_inspect(tmp_path, capsys):
    from prmtree.cli import main

    problems = generate_problems(3, seed=8)
    data = write_jsonl(problems, tmp_path / "data")
    with open(data, "a") as f:
        f.write(json.dumps({"id": "bad", "question": "no answer here"}) + "\n")  # a bad row: its reason names [input]
    s = prmtree.run(str(data), policy=fails_one, out=tmp_path / "o")
    assert s.problems_failed == 1
    from prmtree.summary import print_summary

    print_summary(s, None)
    printed = capsys.readouterr().out
    assert "[/v1/chat]" in printed and "[input]" in printed
    assert main(["inspect", str(tmp_path / "o")]) == 0
    shown = " ".join(capsys.readouterr().out.split())  # the table wraps long cells
    assert "[/v1/chat]" in shown
    assert "[input]" in shown  # the bad row's reason says which section to edit
