"""Rollouts: completions turned into steps, an answer, and a verdict.

The driver parses every completion once, here, before a strategy sees it, so search
code works with steps and outcomes, never with raw model text.
"""

from __future__ import annotations

from collections.abc import Callable
from prmtree.engine.answers import extract_answer
from prmtree.engine.answers.extract import find_answer
from prmtree.engine.answers.kinds import options_of
from prmtree.engine.records import MAX_ANSWER_CHARS, Problem, Rollout
from prmtree.engine.steps import Segmenter

#: Checks one answer synchronously (tests and tools; the driver checks a request's
#: answers together, off its event loop, and passes None).
AnswerCheck = Callable[[Problem, str], bool]


def parse_completion(
    problem: Problem,
    text: str | bytes,
    num_tokens: int,
    finish_reason: str,
    segmenter: Segmenter,
    verifier: AnswerCheck | None,
    next_step_only: bool = False,
    depth: int = 0,
) -> Rollout:
    """Segment, extract and (with a ``verifier``) verify one completion. Never raises on
    model output. Without a verifier ``correct`` is False until :func:`with_verdict`: the
    driver checks a request's answers together, off its event loop. ``depth``: the steps of
    the prefix the text continues (``[steps] max_steps`` bounds prefix and continuation)."""
    malformed = None
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            text = text.decode("utf-8", errors="replace")
            malformed = "undecodable"
    if not isinstance(text, str):
        text = ""
    if not text.isascii():  # (ASCII text, the common case, has neither; isascii is O(1))
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: replace them, the text cannot be stored as is
            text = text.encode("utf-8", errors="replace").decode("utf-8")
            malformed = "undecodable"
        if "\ufffd" in text and malformed is None:
            malformed = "undecodable"
    steps = tuple(segmenter.first_step(text) if next_step_only else segmenter.split(text, depth))
    if not steps:
        return Rollout((), None, False, num_tokens, finish_reason, "empty")
    if next_step_only:
        # One step: it may or may not finish the solution.
        answer = extract_answer(steps[0]) if "\\boxed" in steps[0] else None
        if answer is not None and len(answer) > MAX_ANSWER_CHARS:
            return Rollout(steps, None, False, num_tokens, finish_reason, "answer_too_long")
        correct = verifier(problem, answer) if answer is not None and verifier is not None else False
        return Rollout(steps, answer, correct, num_tokens, finish_reason, malformed)
    if finish_reason == "length":
        return Rollout(steps, None, False, num_tokens, finish_reason, "truncated")
    # The rule prmtree.grade applies. Boxes are read from the whole text (several may make one
    # answer); prose from the last step first (a custom splitter's last step is the answer).
    options, choice = dict(options_of(problem)) or None, problem.answer_type == "choice"
    boxed = "\\boxed" in text or "\\fbox" in text
    found = find_answer(text if boxed else steps[-1], problem.answer, options, choice)
    if found.answer is None and found.refused != "hedged" and not boxed:
        found = find_answer(text, problem.answer, options, choice)
    answer = found.answer
    if found.refused == "hedged":
        return Rollout(steps, None, False, num_tokens, finish_reason, "hedged")
    if answer is None:
        return Rollout(steps, None, False, num_tokens, finish_reason, "no_answer")
    if len(answer) > MAX_ANSWER_CHARS:  # never compared: checking it would hold the event loop
        return Rollout(steps, None, False, num_tokens, finish_reason, "answer_too_long")
    correct = verifier(problem, answer) if verifier is not None else False
    return Rollout(steps, answer, correct, num_tokens, finish_reason, malformed)


def with_verdict(rollout: Rollout, correct: bool) -> Rollout:
    """``rollout`` with its verdict: the same object when it already has it (a rollout is
    parsed with ``correct=False``, and ``replace`` costs several microseconds per rollout)."""
    if rollout.correct == correct:
        return rollout
    return Rollout(rollout.steps, rollout.answer, correct, rollout.num_tokens, rollout.finish_reason,
                   rollout.malformed)  # every field of Rollout: cheaper than ``replace``
