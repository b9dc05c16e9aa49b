"""mcts asks for one step at a time, cut at the step delimiter: a model that ends "...so the
total is 7." then a blank line and "The answer is \\boxed{7}." writes that bare answer line as
the next one-step completion. A whole solution's reader joins such a line to the step before
it, and mcts does the same: the joined step is a node (a sibling of the step it joins), never
the answer line alone."""

import re

import pytest

import prmtree
from prmtree.engine.output import read_table
from prmtree.engine.records import Completion, Problem
from prmtree.engine.rollout import parse_completion, with_verdict
from prmtree.engine.steps import Segmenter, split_structured
from conftest import rows

RIGHT = ("Bar A is 3 and bar B is 4.", "So the total is 7.", "The answer is \\boxed{7}.")
WRONG = ("Bar A is 3 and bar B is 5.", "So the total is 8.", "The answer is \\boxed{8}.")
THINKING = ("<think>",) + RIGHT[:2] + ("</think>",) + RIGHT[2:]  # the answer line after a closing tag
THINKING_WRONG = ("<think>",) + WRONG[:2] + ("</think>",) + WRONG[2:]
BARE = re.compile(r"(?:</think>\s*)?The answer is \\boxed\{\d\}\.")


class AnswerLinePolicy:
    """Writes ``right`` or ``wrong`` (a seeded coin per completion, unless the prefix already
    took its turn), continuing from the prefix, in the run's step format; one step at a time
    stops after the first step, as a server's stop string does."""

    def __init__(self, right=RIGHT, wrong=WRONG) -> None:
        self.right, self.wrong = right, wrong
        self.prefixes: list[tuple[str, ...]] = []

    async def generate(self, request):
        self.prefixes.append(request.prefix)
        fmt, prefix = request.step_format, request.prefix
        written = "\n\n".join(prefix)
        out = []
        for i in range(request.n):
            turned = RIGHT[0] in written or WRONG[0] in written  # the prefix took its turn already
            wrong = WRONG[0] in written if turned else (request.seed * 31 + i) % 5 < 2
            script = self.wrong if wrong else self.right
            if fmt.name == "blank_line":  # continue the text (a prefix step may be two joined)
                whole = "\n\n".join(script)
                assert whole.startswith(written)
                text = whole[len(written):].lstrip("\n")
                text = text.split("\n\n", 1)[0] if request.next_step_only else text
            else:
                rest = script[len(prefix):]
                text = fmt.join(rest[:1] if request.next_step_only else rest, len(prefix))
            assert text
            out.append(Completion(text, num_tokens=len(text) // 4 + 1))
        return out


def problems(n: int) -> list[Problem]:
    return [Problem(id=f"p{i}", question="What is the total of the two bars?", answer="7") for i in range(n)]


def run(tmp_path, policy, strategy="mcts", executor=None, steps=None, method="mc"):
    config = {"search": {"strategy": strategy, "k": 4, "branching": 2, "budget": 48}, "labels": {"method": method}}
    if executor:
        config["executor"] = executor
    if steps:
        config["steps"] = steps
    return prmtree.run(problems(3), policy=policy, out=tmp_path, seed=5, config=config)


@pytest.mark.parametrize("method", ["mc", "calibrated"])
@pytest.mark.parametrize("script, wrong", [(RIGHT, WRONG), (THINKING, THINKING_WRONG)], ids=["plain", "after-think"])
def test_a_bare_answer_line_joins_the_step_before_it(tmp_path, script, wrong, method):
    policy = AnswerLinePolicy(script, wrong)
    summary = run(tmp_path, policy, method=method)
    assert summary.problems_done == 3
    asked_after = [p for p in policy.prefixes if p[-1:] in ((RIGHT[1],), (WRONG[1],), ("</think>",))]
    assert asked_after  # the answer line was asked for one step at a time
    nodes = read_table(tmp_path, "nodes").to_pylist()
    steps = read_table(tmp_path, "steps").to_pylist()
    assert not [n["step"] for n in nodes if n["step"] and BARE.fullmatch(n["step"])]
    assert not [s for row in steps for s in row["completions"] if BARE.fullmatch(s)]
    # every path reads as the whole solution does: the answer line in its last step
    whole = [split_structured("\n\n".join(s)) for s in (script, wrong)]
    ending = [row for row in steps if "\\boxed" in row["completions"][-1]]
    assert ending
    for row in ending:
        assert row["completions"] in whole, row["completions"]
        assert row["labels"][-1] is ("\\boxed{7}" in row["completions"][-1])
    right_last, wrong_last = whole[0][-1], whole[1][-1]
    assert right_last.endswith("So the total is 7.\n\n" + ("</think>\n\n" if script == THINKING else "")
                               + "The answer is \\boxed{7}.")
    by_id = {n["node_id"]: n for n in nodes}
    joined = [n for n in nodes if n["step"] in (right_last, wrong_last)]
    # (calibrated never expands below a wrong step: no wrong answer is asked for there)
    assert {n["step"] for n in joined} == ({right_last, wrong_last} if method == "mc" else {right_last})
    for n in joined:
        assert n["terminal"] and n["value"] == (1.0 if n["step"] == right_last else 0.0)
        # a sibling of the step it joins, which stays with the leaf's own children
        sibling = [m for m in nodes if m["parent_id"] == n["parent_id"] and n["step"].startswith(m["step"] + "\n\n")]
        assert len(sibling) == 1 and by_id[n["parent_id"]]["depth"] == n["depth"] - 1


def test_joined_answer_lines_keep_rows_seeded_whatever_the_concurrency(tmp_path):
    run(tmp_path / "one", AnswerLinePolicy(), executor={"trees_in_flight": 1, "max_concurrency": 1})
    run(tmp_path / "many", AnswerLinePolicy(), executor={"trees_in_flight": 3})
    for table in ("steps", "nodes", "pairs"):
        assert rows(tmp_path / "one", table) == rows(tmp_path / "many", table), table
    assert any("\n\nThe answer is" in n["step"] for n in read_table(tmp_path / "one", "nodes").to_pylist())


@pytest.mark.parametrize("strategy", ["omega", "shepherd"])
def test_whole_solution_strategies_read_the_answer_line_as_before(tmp_path, strategy):
    policy = AnswerLinePolicy()
    run(tmp_path, policy, strategy=strategy)
    whole = [split_structured("\n\n".join(s)) for s in (RIGHT, WRONG)]
    steps = read_table(tmp_path, "steps").to_pylist()
    assert steps and all(row["completions"] in [w[:len(row["completions"])] for w in whole] for row in steps)
    nodes = {n["step"] for n in read_table(tmp_path, "nodes").to_pylist()}
    assert nodes & {w[-1] for w in whole} and not [n for n in nodes if n and BARE.fullmatch(n)]


def test_step_marker_answer_steps_are_their_own(tmp_path):
    run(tmp_path, AnswerLinePolicy(), steps={"format": "step_marker"})
    nodes = read_table(tmp_path, "nodes").to_pylist()
    assert "The answer is \\boxed{7}." in {n["step"] for n in nodes}  # the format's own step
    assert not [n for n in nodes if n["step"] and "\nThe answer is" in n["step"]]


def test_parse_joins_an_answer_only_step_to_the_prefix_last_step():
    problem = problems(1)[0]
    seg = Segmenter()
    r = parse_completion(problem, "The answer is \\boxed{7}.", 5, "stop", seg, None, True, 2, "So the total is 7.")
    assert r.joins_last and r.steps == ("So the total is 7.\n\nThe answer is \\boxed{7}.",) and r.answer == "7"
    assert with_verdict(r, True).joins_last  # the verdict keeps it
    # not at the root, not a step with content, not a custom splitter's or another format's steps
    assert not parse_completion(problem, "The answer is \\boxed{7}.", 5, "stop", seg, None, True).joins_last
    reasoned = "The answer choices include 7 and 8."
    assert parse_completion(problem, reasoned, 5, "stop", seg, None, True, 1, "x").steps == (reasoned,)
    custom = Segmenter(lambda text: text.split("\n\n"))
    for other in (custom, Segmenter("step_marker")):
        r = parse_completion(problem, "The answer is \\boxed{7}.", 5, "stop", other, None, True, 2, "So the total is 7.")
        assert not r.joins_last and r.steps == ("The answer is \\boxed{7}.",)
