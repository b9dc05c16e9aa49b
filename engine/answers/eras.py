"""A year's era: ``1776 BC`` is not ``1776 AD``.

The same digits name other years, so an answer that dates its year in the other era than the
gold's is wrong. A side that names no era is left to the other checks: the question may name
it ("In what year BC …?"), and a gold written "1776" is met by "1776 AD".
"""

from __future__ import annotations

import functools
import re

#: Before Christ (``BC``, ``B.C.``, ``BCE``, ``B. C. E.``), the common era (``AD``, ``A.D.``,
#: ``CE``, ``C.E.``), a final dot optional (a sentence's reader drops it: "44 A.D"). Capitals
#: only: "2 bc" is algebra.
_BEFORE = r"B\.?\s?C\.?(?:\s?E\.?)?"
_COMMON = r"(?:A\.?\s?D\.?|C\.?\s?E\.?)"
#: What may stand between a year and its era: a space, LaTeX's ``\text{ BC}``, ``\ ``, ``~``.
_LEAD = r"(?:\s+|\s*\\text\{\s*|\\[,; ]\s*(?:\\text\{\s*)?|~)"
_BC = re.compile(rf"\d{_LEAD}{_BEFORE}(?![A-Za-z^_])")
_AD = re.compile(rf"\d{_LEAD}{_COMMON}(?![A-Za-z^_])|\b(?:AD|A\.D\.)\s+\d")
#: An era after a year, kept with it by the value readers (``He died in 44 BC.`` reads ``44 BC``).
ERA_AFTER = re.compile(rf"\s+(?:{_BEFORE}|{_COMMON})(?![A-Za-z])")


def eras_differ(gold: str, predicted: str) -> bool:
    """Whether one side dates its year BC and the other names the common era."""
    gold_era, predicted_era = _era(gold), _era(predicted)
    return gold_era is not None and predicted_era is not None and gold_era != predicted_era


def _era(text: str) -> str | None:
    """``"BC"``, ``"AD"`` (or CE), or None. Short texts (golds, most answers) are remembered:
    they repeat through a run; a long one is read each time, not kept."""
    return _remembered_era(text) if len(text) <= _REMEMBERED_CHARS else _era_of(text)


def _era_of(text: str) -> str | None:
    if _BC.search(text):
        return "BC"
    return "AD" if _AD.search(text) else None


_REMEMBERED_CHARS = 200
_remembered_era = functools.lru_cache(maxsize=16384)(_era_of)
