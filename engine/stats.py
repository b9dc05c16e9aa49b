"""Run statistics: one schema, whose field names are the manifest's ``stats`` keys.

The driver counts into :class:`RunStats`; the manifest stores ``to_dict()``; a resume
continues from it with ``resumed()``; ``prmtree.run`` returns a view of it. A counter
added here appears in all four places at once.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

#: Field metadata: {"resume": False} for counts that describe this session only.
_SESSION = {"resume": False}


@dataclass
class RunStats:
    """Counters of a run (they add up over resumes unless marked session-only)."""

    problems_done: int = 0
    problems_skipped: int = 0
    problems_failed: int = field(default=0, metadata=_SESSION)  # this session; retried by the next
    input_errors: int = 0
    rollouts: int = 0
    requests: int = 0
    tokens: int = 0
    cached_tokens: int = 0
    prompt_tokens: int = 0
    retries: int = 0
    paths: int = 0
    steps_labelled: int = 0
    labels_positive: int = 0
    labels_negative: int = 0
    pairs: int = 0
    nodes: int = 0
    truncated_by_length: int = 0
    malformed_rollouts: Counter = field(default_factory=Counter)
    steps_per_path: Counter = field(default_factory=Counter)  # path length -> paths
    failure_reasons: Counter = field(default_factory=Counter, metadata=_SESSION)
    failure_examples: dict = field(default_factory=dict, metadata=_SESSION)  # kind -> its first full reason
    labelling: Counter = field(default_factory=Counter)  # judge calls, tokens, agreement, unparseable
    executor: dict = field(default_factory=dict, metadata=_SESSION)  # the executor's own counters
    verifier: dict = field(default_factory=dict, metadata=_SESSION)  # answer checks, memo hits, pool time
    elapsed_s: float = 0.0  # all sessions together
    rollouts_per_s_last_session: float = field(default=0.0, metadata=_SESSION)

    def __post_init__(self) -> None:
        self.started = time.perf_counter()
        self.elapsed_before_s = self.elapsed_s
        self.rollouts_before = self.rollouts

    @property
    def session_elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    @property
    def rollouts_this_session(self) -> int:
        return self.rollouts - self.rollouts_before

    @property
    def rollouts_per_s(self) -> float:
        """This session's rate (a resumed run's earlier rollouts are not in it)."""
        elapsed = self.session_elapsed_s
        return self.rollouts_this_session / elapsed if elapsed > 0 else 0.0

    def stop_clock(self) -> None:
        """Bring the time figures up to date (at each flush and at the end)."""
        self.elapsed_s = round(self.elapsed_before_s + self.session_elapsed_s, 3)
        self.rollouts_per_s_last_session = round(self.rollouts_per_s, 1)

    @classmethod
    def resumed(cls, previous: dict[str, Any]) -> RunStats:
        """Counters that continue those a manifest recorded, so totals add up over resumes."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if not f.metadata.get("resume", True) or f.name not in previous:
                continue
            value = previous[f.name]
            if f.default_factory is Counter:  # type: ignore[comparison-overlap]
                values[f.name] = Counter({_key(k): int(v) for k, v in dict(value).items()})
            elif isinstance(f.default, float):
                values[f.name] = float(value)
            else:
                values[f.name] = int(value)
        return cls(**values)

    @classmethod
    def combined(cls, parts: list[RunStats]) -> RunStats:
        """The counters of several drivers working at once (a ``--drivers`` job) as one run's:
        counts add up, the time is the longest slice's, rates of concurrent drivers add."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            got = [getattr(p, f.name) for p in parts]
            if f.name == "elapsed_s":
                values[f.name] = max(got, default=0.0)
            elif isinstance(f.default, (int, float)) and not isinstance(f.default, bool):
                values[f.name] = sum(got)
            elif f.default_factory is Counter:  # type: ignore[comparison-overlap]
                values[f.name] = sum(got, Counter())
            else:
                values[f.name] = _combine_dicts(got)
        out = cls(**values)
        out.rollouts_before = sum(p.rollouts_before for p in parts)
        out.elapsed_before_s = max((p.elapsed_before_s for p in parts), default=0.0)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``stats``: every field, under its own name."""
        self.stop_clock()
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Counter):
                value = {str(k): v for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
            out[f.name] = value
        return out


#: Counters in the executor's and verifier's dicts that several drivers do not add up: they
#: share one worker pool (``workers``), and the worst tree is the worst of any driver's.
_NOT_ADDED = {"workers": max, "min_tree_affinity": min}
#: Words in those dicts that may differ between drivers and are then all listed
#: (``"process,thread"``: one driver's answer checks fell back to threads).
_LISTED = {"pool_kind"}


def _combine_dicts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Numbers add (unless named in ``_NOT_ADDED``), nested dicts combine key by key, the
    words named in ``_LISTED`` are listed, other values are the first driver's."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if key not in out:
                out[key] = dict(value) if isinstance(value, dict) else value
            elif isinstance(value, dict) and isinstance(out[key], dict):
                out[key] = _combine_dicts([out[key], value])
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                pick = _NOT_ADDED.get(key)
                out[key] = pick(out[key], value) if pick else out[key] + value
            elif key in _LISTED and value not in str(out[key]).split(","):
                out[key] = ",".join(sorted([*out[key].split(","), value]))
    return out


def _key(k: Any) -> Any:
    return int(k) if isinstance(k, str) and k.isdigit() else k
