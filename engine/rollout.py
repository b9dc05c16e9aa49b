"""Rollouts: completions turned into steps, an answer, and a verdict.

The driver parses every completion once, here, before a strategy sees it, so search
code works with steps and outcomes, never with raw model text. With the built-in step
reader a whole solution's steps are split only when first read (:meth:`Rollout.deferred`):
the answer is read from the text, and most rollouts' steps are never read.
"""

from __future__ import annotations

from collections.abc import Callable

from prmtree.engine.answers import extract_answer
from prmtree.engine.answers.extract import find_answer, retracted, says_nothing
from prmtree.engine.answers.kinds import options_of
from prmtree.engine.answers.marks import reasoning_markup
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
    last_step: str = "",
) -> Rollout:
    """Segment, extract and (with a ``verifier``) verify one completion. Never raises on
    model output. Without a verifier ``correct`` is False until :func:`with_verdict`: the
    driver checks a request's answers together, off its event loop. ``depth``: the steps of
    the prefix the text continues (``[steps] max_steps`` bounds prefix and continuation).
    ``last_step``: the prefix's last step; a next step that only states the final answer
    joins it (:attr:`Rollout.joins_last`), as the step reader joins them in a whole solution.

    Text that is not valid Unicode (bytes that are not UTF-8, a lone surrogate) is
    ``"undecodable"``: stored with the invalid parts replaced by U+FFFD, and a wrong rollout,
    never graded (its answer is None), like every malformed one. A U+FFFD the model wrote
    itself is a valid character (tokenizers emit it for byte-fallback tokens) and ordinary
    text: the rollout is graded as any other."""
    malformed = None
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            text = text.decode("utf-8", errors="replace")
            malformed = "undecodable"
    if not isinstance(text, str):
        text = ""
    if not text.isascii():  # (ASCII text, the common case, has none; isascii is O(1))
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: replace them, the text cannot be stored as is
            text = text.encode("utf-8", errors="replace").decode("utf-8")
            malformed = "undecodable"
    steps: tuple[str, ...] | None
    if not next_step_only and segmenter.steps_any_text:  # split when the steps are read
        steps = None
        empty = not text.strip()
    else:
        steps = tuple(segmenter.first_step(text) if next_step_only else segmenter.split(text, depth))
        empty = not steps
    if empty:  # (nothing written before the length limit: a truncated rollout, as a cut text is)
        return Rollout((), None, False, num_tokens, finish_reason, "truncated" if finish_reason == "length" else "empty")
    if next_step_only:
        # One step: it may or may not finish the solution.
        step = steps[0]
        joins = bool(last_step) and segmenter.joins_previous(step)
        if joins:  # "...so the total is 12." then "The answer is \boxed{12}.": one step
            steps = (last_step + segmenter.format.delimiter + step,)
        answer = extract_answer(step) if "\\boxed" in step and malformed is None else None
        if answer is not None and len(answer) > MAX_ANSWER_CHARS:
            return Rollout(steps, None, False, num_tokens, finish_reason, "answer_too_long", joins)
        correct = verifier(problem, answer) if answer is not None and verifier is not None else False
        return Rollout(steps, answer, correct, num_tokens, finish_reason, malformed, joins)
    return _answered(problem, text, num_tokens, finish_reason, segmenter, verifier, depth, malformed, steps)


def _answered(problem: Problem, text: str, num_tokens: int, finish_reason: str, segmenter: Segmenter,
              verifier: AnswerCheck | None, depth: int, malformed: str | None,
              steps: tuple[str, ...] | None = None) -> Rollout:
    """A whole solution (a text with a step) with its answer. ``steps`` None: split when
    read (:meth:`Rollout.deferred`), or here if the answer is read from the last step."""

    def made(answer: str | None, correct: bool, why: str | None) -> Rollout:
        if steps is None:
            return Rollout.deferred(segmenter.split, text, depth, answer, correct, num_tokens, finish_reason, why)
        return Rollout(steps, answer, correct, num_tokens, finish_reason, why)

    if finish_reason == "length":
        return made(None, False, "truncated")
    if malformed is not None:  # not valid Unicode: a wrong rollout, its answer never checked
        return made(None, False, malformed)
    # The rule prmtree.grade applies, to the whole text as grade reads it (boxes, several of which
    # may make one answer; a reasoning model's answer after its </think>; the built-in step
    # reader's prose). A custom splitter's prose is read from its last step first: that step may
    # be the answer alone.
    options, choice = dict(options_of(problem)) or None, problem.answer_type == "choice"
    markup = reasoning_markup(text)
    if markup or segmenter.steps_any_text or "\\boxed" in text or "\\fbox" in text:
        found = find_answer(text, problem.answer, options, choice, markup)
    else:
        if steps is None:
            steps = tuple(segmenter.split(text, depth))
        found = find_answer(steps[-1], problem.answer, options, choice)
        if (found.answer is None and found.refused != "hedged") or says_nothing(steps[-1], found):
            found = find_answer(text, problem.answer, options, choice)  # "... the answer is 12.\n\nWait"
        elif found.refused is None and found.answer is not None:  # a last step that takes back an earlier one's answer
            taken = retracted(text, found.answer, problem.answer, options)
            found = taken if taken is not None and taken.refused else found
    answer = found.answer
    if found.refused == "hedged":
        return made(None, False, "hedged")
    if answer is None:
        return made(None, False, "no_answer")
    if len(answer) > MAX_ANSWER_CHARS:  # never compared: checking it would hold the event loop
        return made(None, False, "answer_too_long")
    correct = verifier(problem, answer) if verifier is not None else False
    return made(answer, correct, None)


def with_verdict(rollout: Rollout, correct: bool) -> Rollout:
    """``rollout`` with its verdict: the same object when it already has it (a rollout is
    parsed with ``correct=False``, and ``replace`` costs several microseconds per rollout)."""
    if rollout.correct == correct:
        return rollout
    changed = object.__new__(Rollout)  # its fields (a deferred one's text too), cheaper than ``replace``
    changed.__dict__.update(rollout.__dict__, correct=correct)
    return changed
