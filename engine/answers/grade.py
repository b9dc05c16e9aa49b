"""One answer graded as the driver grades it: extraction, then the Verifier's comparison.

:func:`grade` is the public face (``prmtree.grade``): it reads the answer out of a model's
text with :func:`.extract.find_answer` (the rule the driver applies to every rollout, see
:mod:`prmtree.engine.rollout`) and decides it with a :class:`.verifier.Verifier` (the
object the driver holds: cheap typed paths, then Math-Verify), so a user checking one
answer gets the verdict a run would write.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prmtree.engine.answers.extract import find_answer, gold_problem, read_answer
from prmtree.engine.answers.pool import CheckTimedOut
from prmtree.engine.answers.verifier import Verifier
from prmtree.engine.config import VerifyConfig
from prmtree.engine.records import ANSWER_TYPES, MAX_ANSWER_CHARS, Problem


@dataclass(frozen=True)
class Verdict:
    """``correct``: True, False, or None when the answer cannot be judged (no gold answer,
    or the check ran out of time); ``extracted``: the answer read from the text (None when
    none was found); ``reason``: a few words on why."""

    correct: bool | None
    extracted: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"correct": self.correct, "extracted": self.extracted, "reason": self.reason}


_VERIFIERS: dict[str, Verifier] = {}
_VERIFIERS_LOCK = threading.Lock()


def _verifier(config: VerifyConfig | Mapping[str, Any] | None) -> Verifier:
    """One Verifier per distinct config, kept: its memo is warm for repeated golds."""
    if config is None:
        config = VerifyConfig()
    elif not isinstance(config, VerifyConfig):
        config = VerifyConfig(**dict(config))
    key = json.dumps(config.model_dump(), sort_keys=True, default=str)
    with _VERIFIERS_LOCK:
        verifier = _VERIFIERS.get(key)
        if verifier is None:
            verifier = _VERIFIERS[key] = Verifier(config)
        return verifier


def bad_gold(gold: Any) -> str | None:
    """Why ``gold`` cannot be graded against (missing, NaN, empty, hedged, cut off), or None:
    what makes the run refuse the row (:func:`.extract.gold_problem`)."""
    if gold is None:
        return "no gold answer"
    if isinstance(gold, float) and math.isnan(gold):
        return "gold answer is NaN"
    text = str(gold).strip()
    if not text:
        return "gold answer is empty"
    if text.lower() == "nan":  # a NaN read from Parquet/CSV, written out
        return "gold answer is NaN"
    why = gold_problem(text)
    if why is not None:  # the run refuses such a row: the same words, cut at the advice
        return "gold answer " + why.split(":", 1)[0]
    return None


def grade(
    gold: Any,
    text: str,
    *,
    answer_type: str = "auto",
    options: Mapping[str, str] | Sequence[str] | None = None,
    extract: bool = True,
    config: VerifyConfig | Mapping[str, Any] | None = None,
    question: str | None = None,
) -> Verdict:
    """Is ``text`` right, for gold answer ``gold``?

    ``text`` is a model's whole output (``extract=True``: its final answer is read out of
    it: boxes, ``Final Answer:``/``the answer is`` phrases, a choice letter in a sentence)
    or already the answer (``extract=False``). ``answer_type`` is a problem's
    ``answer_type`` (``auto`` guesses from the gold); ``options`` the multiple-choice
    options (``{"A": "red", ...}`` or ``["red", ...]``); ``config`` the run's ``[verify]``
    table (a ``VerifyConfig`` or a dict); ``question`` the problem's question, where a bound
    is read with it (``at most 12`` answers "the most" with 12; to any other question it
    is no 12). Never raises on model text; an unknown ``answer_type`` raises ``ValueError``.
    """
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"answer_type must be one of {', '.join(ANSWER_TYPES)}, got {answer_type!r}")
    why = bad_gold(gold)
    if why is not None:
        return Verdict(None, None, why)
    gold = str(gold).strip()
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    opts = options or None
    choice = answer_type == "choice"
    if extract:
        found = find_answer(text, gold, opts, choice=choice)
    else:  # the text is the answer: only a choice problem's choice named in a sentence is read out of it
        found = read_answer(text, gold, opts, choice=choice)
    answer, refusal = found.answer, found.refused
    if refusal is not None:
        return Verdict(False, answer, refusal)
    if answer is None:
        return Verdict(False, None, "no answer")
    if len(answer) > MAX_ANSWER_CHARS:
        return Verdict(False, None, "answer too long")
    problem = Problem(
        id="grade", question=question if isinstance(question, str) and question.strip() else "grade",
        answer=gold, answer_type=answer_type,  # type: ignore[arg-type]
        meta={"options": opts} if opts else {},
    )
    verifier = _verifier(config)
    quick = verifier.quick(problem, answer)
    if quick is not None:
        return Verdict(quick, answer, "equal" if quick else "not equal")
    before = verifier.stats()["timeouts"]
    try:
        verdict = verifier(problem, answer)
    except CheckTimedOut:  # the Verifier answers False; it is counted below
        verdict = False
    if not verdict and verifier.stats()["timeouts"] != before:
        return Verdict(None, answer, "check timed out")
    return Verdict(verdict, answer, "equivalent (Math-Verify)" if verdict else "not equivalent (Math-Verify)")
