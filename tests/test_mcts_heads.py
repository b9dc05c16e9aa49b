"""mcts asks for one step at a time, cut at the step delimiter: a model that opens with
``<think>`` or a markdown header stops right after it. Those fragments are continued into
the step they head, not kept as nodes (and labelled steps) of their own."""

import asyncio
import random

import pytest

import prmtree
from prmtree.engine.errors import GenerationError
from prmtree.engine.output import load_manifest, read_table
from prmtree.engine.records import Completion, Problem

RIGHT = ("<think>", "## Reading the chart", "Bar A is 3 and bar B is 4.", "So the total is 7.", "</think>",
         "The answer is \\boxed{7}.")
WRONG = RIGHT[:2] + ("Bar A is 3 and bar B is 5.", "So the total is 8.", "</think>", "The answer is \\boxed{8}.")
HEADS = {"<think>", "## Reading the chart", "</think>"}


class MarkdownPolicy:
    """Writes RIGHT or WRONG (a seeded coin per completion, unless the prefix already took the
    wrong turn), continuing from where the prefix ends; one step at a time stops at the first
    blank line, as a server's stop string does."""

    def __init__(self) -> None:
        self.prefixes: list[tuple[str, ...]] = []
        self.tokens = 0  # every token written, in every request

    async def generate(self, request):
        self.prefixes.append(request.prefix)
        out = []
        written = "\n\n".join(request.prefix)
        for i in range(request.n):
            turned = RIGHT[2] in written or WRONG[2] in written  # the prefix took its turn already
            wrong = WRONG[2] in written if turned else random.Random(request.seed * 31 + i).random() < 0.4
            script = "\n\n".join(WRONG if wrong else RIGHT)
            assert script.startswith(written)
            text = script[len(written):].lstrip("\n")
            if request.next_step_only:
                text = text.split("\n\n", 1)[0]
            out.append(Completion(text, num_tokens=len(text) // 4 + 1))
            self.tokens += len(text) // 4 + 1
        return out


def problems(n: int) -> list[Problem]:
    return [Problem(id=f"p{i}", question="What is the total of the two bars?", answer="7") for i in range(n)]


@pytest.mark.parametrize("strategy", ["mcts", "omega"])
def test_a_header_or_think_tag_is_part_of_the_step_it_heads(tmp_path, strategy):
    policy = MarkdownPolicy()
    config = {"search": {"strategy": strategy, "k": 4, "branching": 2, "budget": 40}, "labels": {"method": "mc"}}
    summary = prmtree.run(problems(3), policy=policy, out=tmp_path, seed=5, config=config)
    assert summary.problems_done == 3
    steps = read_table(tmp_path, "steps").to_pylist()
    assert steps
    for row in steps:
        assert not HEADS & set(row["completions"]), row["completions"]  # no step is a lone header or tag
        assert row["completions"][0] == "<think>\n\n## Reading the chart\n\nBar A is 3 and bar B is " + row["completions"][0][-2:]
    if strategy == "mcts":  # the fragment was asked past, with itself as the prompt's last step
        assert ("<think>",) in policy.prefixes and ("<think>", "## Reading the chart") in policy.prefixes
        nodes = read_table(tmp_path, "nodes").to_pylist()
        assert not HEADS & {n["step"] for n in nodes}
    else:  # whole solutions: the reader merged them already, and nothing was asked again
        assert all(p[-1:] not in (("<think>",), ("## Reading the chart",)) for p in policy.prefixes)


def test_continued_fragments_count_both_requests_tokens_and_keep_rows_seeded(tmp_path):
    config = {"search": {"strategy": "mcts", "k": 4, "branching": 2, "budget": 40}, "labels": {"method": "mc"}}
    policy = MarkdownPolicy()
    first = prmtree.run(problems(2), policy=policy, out=tmp_path / "a", seed=5, config=config)
    again = prmtree.run(problems(2), policy=MarkdownPolicy(), out=tmp_path / "b", seed=5, config=config)
    assert read_table(tmp_path / "a", "steps").to_pylist() == read_table(tmp_path / "b", "steps").to_pylist()
    assert first.tokens == policy.tokens  # the fragment's request and its continuation's, both counted
    assert first.requests == len(policy.prefixes)


class AnswersInABoldLine(MarkdownPolicy):
    """Its last step is a bold line holding the boxed answer, then the end of its turn."""

    async def generate(self, request):
        self.prefixes.append(request.prefix)
        if request.prefix[-1:] == ("**So the total is \\boxed{7}.**",):
            return [Completion("so \\boxed{8}.", num_tokens=3) for _ in range(request.n)]  # past its own end
        steps = ("Bar A is 3 and bar B is 4.", "**So the total is \\boxed{7}.**")
        text = "\n\n".join(steps[len(request.prefix):]) or "\\boxed{7}"
        if request.next_step_only:
            text = text.split("\n\n", 1)[0]
        return [Completion(text, num_tokens=4) for _ in range(request.n)]


def test_a_header_line_that_states_the_boxed_answer_is_not_asked_past(tmp_path):
    policy = AnswersInABoldLine()
    config = {"search": {"strategy": "mcts", "k": 4, "branching": 2, "budget": 40}, "labels": {"method": "mc"}}
    prmtree.run(problems(1), policy=policy, out=tmp_path, seed=5, config=config)
    assert ("Bar A is 3 and bar B is 4.", "**So the total is \\boxed{7}.**") not in policy.prefixes
    nodes = read_table(tmp_path, "nodes").to_pylist()
    assert [n["value"] for n in nodes if n["step"] == "**So the total is \\boxed{7}.**"] == [1.0]


class FollowUpsFail(MarkdownPolicy):
    """Opens with "<think>" or "## Plan" (alternating completions); asked past "<think>" it
    fails at once, past "## Plan" it answers after a while."""

    def __init__(self) -> None:
        super().__init__()
        self.slow_done = False

    async def generate(self, request):
        if request.prefix == ("<think>",):
            raise GenerationError("no continuation today", retryable=False)
        if request.prefix == ("## Plan",):
            await asyncio.sleep(0.3)
            self.slow_done = True
            return [Completion("Bar A is 3.", num_tokens=2) for _ in range(request.n)]
        return [Completion("<think>" if i % 2 == 0 else "## Plan", num_tokens=1) for i in range(request.n)]


def test_a_failed_follow_up_fails_its_problem_after_its_siblings_end(tmp_path):
    policy = FollowUpsFail()
    config = {"search": {"strategy": "mcts", "k": 4, "branching": 2, "budget": 40}, "labels": {"method": "mc"},
              "executor": {"max_attempts": 1}}
    summary = prmtree.run(problems(1), policy=policy, out=tmp_path, seed=5, config=config)
    assert summary.problems_failed == 1
    assert load_manifest(tmp_path / "manifest.json").failed["p0"] == (
        "policy: GenerationError: no continuation today (not retryable)")
    assert policy.slow_done  # not left running after its problem had failed
