import asyncio

import pytest

from prmtree.engine.records import Problem
from prmtree.engine.steps import Segmenter
from prmtree.engine.synthetic import parse_question, run_program
from prmtree.engine.records import GenerationRequest
from prmtree.policies.simulated import SimulatedPolicy


def gen(policy, problem, prefix=(), n=4, seed=1, **kw):
    return asyncio.run(policy.generate(GenerationRequest(problem, tuple(prefix), n, seed=seed, **kw)))


def test_synthetic_problems_have_4_to_12_steps_and_exact_answers(problems):
    for p in problems:
        kind, program = parse_question(p.question)
        assert 4 <= len(program) <= 12
        assert str(run_program(program, p.meta["scene"])[-1]) == p.answer
        assert p.images[0].data.startswith(b"\x89PNG")


def test_perfect_policy_solves_every_problem(problems):
    policy = SimulatedPolicy(error_rate=0.0, lucky_rate=0.0)
    seg = Segmenter()
    for p in problems:
        (c,) = gen(policy, p, n=1)
        steps = seg.split(c.text)
        assert policy.first_error(p, steps) is None
        assert f"\\boxed{{{p.answer}}}" in steps[-1]
        assert len(steps) == p.meta["n_steps"]


def test_same_seed_same_text_other_seed_other_text(problems):
    policy = SimulatedPolicy(error_rate=0.3)
    p = problems[0]
    assert [c.text for c in gen(policy, p, seed=5)] == [c.text for c in gen(policy, p, seed=5)]
    assert [c.text for c in gen(policy, p, seed=5)] != [c.text for c in gen(policy, p, seed=6)]


def test_an_error_in_the_prefix_carries_to_the_answer(problems):
    """The policy reads x from the prefix: a wrong prefix never reaches gold when noiseless."""
    policy = SimulatedPolicy(noiseless=True)
    seg = Segmenter()
    p = problems[1]
    (good,) = gen(SimulatedPolicy(error_rate=0.0), p, n=1)
    steps = seg.split(good.text)
    wrong_first = steps[0].replace("x = ", "x = 1")  # x = 3 -> x = 13
    assert policy.first_error(p, [wrong_first]) == 0
    for c in gen(policy, p, prefix=[wrong_first], n=8):
        assert f"\\boxed{{{p.answer}}}" not in c.text
    for c in gen(policy, p, prefix=steps[:2], n=8):
        assert f"\\boxed{{{p.answer}}}" in c.text


def test_first_error_is_the_first_wrong_step(problems):
    import re

    policy = SimulatedPolicy(error_rate=0.15)
    seg = Segmenter()
    p = problems[2]
    _, program = parse_question(p.question)
    right = run_program(program, p.meta["scene"])
    found = set()
    for seed in range(40):
        for c in gen(policy, p, seed=seed, n=2):
            steps = seg.split(c.text)
            stated = [int(re.findall(r"= (-?\d+)\.", s)[0]) for s in steps]
            fe = policy.first_error(p, steps)
            found.add(fe)
            expected = next((j for j, (a, b) in enumerate(zip(stated, right)) if a != b), None)
            assert fe == expected
    assert None in found and len(found) > 2


def test_wording_varies_between_samples(problems):
    policy = SimulatedPolicy(error_rate=0.0)
    texts = {c.text for c in gen(policy, problems[0], n=8)}
    assert len(texts) > 1


@pytest.mark.parametrize("fmt", ["blank_line", "step_marker", "tags"])
def test_writes_the_requests_step_format(problems, fmt):
    policy = SimulatedPolicy(error_rate=0.0)
    p = problems[3]
    (c,) = gen(policy, p, n=1, prefix=(), step_format=fmt)
    steps = Segmenter(fmt).split(c.text)
    assert len(steps) == p.meta["n_steps"]
    assert policy.first_error(p, steps) is None
    # read with another format, the text is one step: the format really is the request's
    other = "tags" if fmt != "tags" else "blank_line"
    assert len(Segmenter(other).split(c.text)) < p.meta["n_steps"]


def test_policy_arguments_of_the_wrong_type_are_refused_with_their_name():
    with pytest.raises(ValueError, match="error_rate must be a number, got 'abc'"):
        SimulatedPolicy(error_rate="abc")


def test_next_step_only_writes_one_step(problems):
    policy = SimulatedPolicy()
    (c,) = gen(policy, problems[0], n=1, next_step_only=True)
    assert len(Segmenter().split(c.text)) == 1


def test_max_tokens_truncates_with_length(problems):
    (c,) = gen(SimulatedPolicy(), problems[0], n=1, max_tokens=5)
    assert c.finish_reason == "length" and c.num_tokens == 5


def test_refuses_non_synthetic_problems_and_bad_args():
    with pytest.raises(ValueError, match="not a synthetic"):
        gen(SimulatedPolicy(), Problem(id="x", question="What is 2+2?", answer="4", meta={"scene": {}}))
    with pytest.raises(ValueError, match="error_rate"):
        SimulatedPolicy(error_rate=2)


def test_latency_is_applied(problems):
    import time

    t = time.perf_counter()
    gen(SimulatedPolicy(latency_s=0.05), problems[0], n=1)
    assert time.perf_counter() - t >= 0.05


@pytest.mark.parametrize("space", ["number", "yesno", "choice"])
def test_an_answer_space_name_it_does_not_know_answers_in_the_answers_own_space(space):
    # Before: any name but number/yesno/choice made every request fail with "coroutine
    # raised StopIteration", and the run ended by the circuit breaker without naming it.
    from dataclasses import replace

    from prmtree.engine.synthetic import generate_problems

    policy = SimulatedPolicy(error_rate=0.3, guess_rate=0.2)
    for p in generate_problems(6, seed=4, answer_spaces=(space,)):
        renamed = replace(p, meta={**p.meta, "answer_space": "counting"})
        assert [c.text for c in gen(policy, renamed, n=8)] == [c.text for c in gen(policy, p, n=8)]


def test_an_unanswerable_question_is_refused_naming_what_is_missing():
    from dataclasses import replace

    from prmtree.engine.synthetic import generate_problems

    (choice,) = generate_problems(1, seed=4, answer_spaces=("choice",))
    (yesno,) = generate_problems(1, seed=4, answer_spaces=("yesno",))
    bare = replace(choice, meta={k: v for k, v in choice.meta.items() if k != "options"})
    with pytest.raises(ValueError, match="choice question without meta.options"):
        gen(SimulatedPolicy(), bare)
    bare = replace(yesno, meta={**yesno.meta, "threshold": "ten"})
    with pytest.raises(ValueError, match="without a numeric meta.threshold \\(got 'ten'\\)"):
        gen(SimulatedPolicy(), bare)


def test_a_run_whose_rows_name_their_own_answer_space_labels_them(tmp_path):
    import json
    from dataclasses import replace

    import prmtree
    from prmtree.engine.synthetic import generate_problems

    rows = [replace(p, meta={**p.meta, "answer_space": "counting"})
            for p in generate_problems(6, seed=3, answer_spaces=("number", "yesno", "choice"))]
    summary = prmtree.run(rows, policy="simulated", out=tmp_path / "run", seed=7, config={"search": {"budget": 16}})
    stats = json.loads((tmp_path / "run" / "manifest.json").read_text())["stats"]
    assert summary.stats["problems_done"] == 6 and stats["failure_reasons"] == {}
    assert stats["answer_spaces"]["counting"]["problems"] == 6 and stats["labels_positive"] > 0
