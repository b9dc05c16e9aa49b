"""Answers: read the final answer out of model text and decide whether it is the gold one.

Layers, bottom up: reading the answer in a completion, :mod:`.marks` (boxes, ``Answer:``
lines and what wraps an answer), :mod:`.choices`, :mod:`.values`, :mod:`.sentences` (the
value a sentence states), :mod:`.retractions`, :mod:`.prose` (an answer in prose, read
from the end) and :mod:`.extract` (the whole reading: :func:`.extract.find_answer`);
then :mod:`.normalize` (what an answer's text stands for), :mod:`.kinds` (which check an answer
gets), :mod:`.compare` (the checks, cheap paths then Math-Verify), :mod:`.pool` (Math-Verify
in worker processes, time-bounded), :mod:`.verifier` (memo, counters, dispatch).
"""

from prmtree.engine.answers.compare import (
    cheap_check,
    choice_match,
    math_match,
    numbers_match,
    text_match,
)
from prmtree.engine.answers.marks import extract_answer, last_boxed
from prmtree.engine.answers.kinds import AnswerKind, Options, answer_kind
from prmtree.engine.answers.normalize import (
    normalize_text,
    parse_number,
    parse_quantity,
)
from prmtree.engine.answers.pool import CheckPool, CheckTimedOut
from prmtree.engine.answers.verifier import AnswerCheck, Verifier

__all__ = [
    "AnswerCheck",
    "AnswerKind",
    "CheckPool",
    "CheckTimedOut",
    "Options",
    "Verifier",
    "answer_kind",
    "cheap_check",
    "choice_match",
    "extract_answer",
    "last_boxed",
    "math_match",
    "normalize_text",
    "numbers_match",
    "parse_number",
    "parse_quantity",
    "text_match",
]
