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
#: Field metadata: slices merged take the longest (they run at the same time).
_LONGEST = {"merge": "max"}


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
    skip_reasons: Counter = field(default_factory=Counter)  # why problems were not searched -> problems
    #: answer space (``calibration.answer_space``) -> SPACE_COUNTERS: how well each space is
    #: labelled (a run can label free answers fully and leave yes/no questions unlabelled)
    answer_spaces: dict = field(default_factory=dict)
    examples: dict = field(default_factory=dict, metadata=_SESSION)  # what labelled nothing, shown: kind -> texts
    executor: dict = field(default_factory=dict, metadata=_SESSION)  # the executor's own counters
    #: answer checks, memo hits, pool time: all sessions' together (see ``record_verifier``)
    verifier: dict = field(default_factory=dict)
    driver: dict = field(default_factory=dict, metadata=_SESSION)  # seconds its event loop was watched, saturated
    elapsed_s: float = field(default=0.0, metadata=_LONGEST)  # all sessions together
    rollouts_per_s_last_session: float = field(default=0.0, metadata=_SESSION)  # slices at once: rates add

    def __post_init__(self) -> None:
        self.started = time.perf_counter()
        self.elapsed_before_s = self.elapsed_s
        self.rollouts_before = self.rollouts
        self.verifier_before = _copied(self.verifier)

    def record_verifier(self, this_session: dict[str, Any]) -> None:
        """The verifier's counters (``Verifier.stats()``: this session's checks only) added to
        the earlier sessions' (``verifier_before``, what the manifest recorded), as the
        rollouts they checked add up: the manifest and the dataset card count every check."""
        self.verifier = _combine_dicts([self.verifier_before, this_session])

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
            elif f.default_factory is dict:  # type: ignore[comparison-overlap]
                values[f.name] = _copied(value)
            elif isinstance(f.default, float):
                values[f.name] = float(value)
            else:
                values[f.name] = int(value)
        return cls(**values)

    @classmethod
    def from_dict(cls, stats: dict[str, Any]) -> RunStats:
        """Every counter a manifest recorded (this session's too): what merging slices needs.
        Unknown keys (a newer or older prmtree) are ignored."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in stats:
                continue
            value = stats[f.name]
            if f.default_factory is Counter:  # type: ignore[comparison-overlap]
                values[f.name] = Counter({_key(k): v for k, v in dict(value).items()})
            elif f.default_factory is dict:  # type: ignore[comparison-overlap]
                values[f.name] = _copied(value)
            else:
                values[f.name] = value
        return cls(**values)

    def __add__(self, other: RunStats) -> RunStats:
        """Two slices' counters as one run's (datatrove's ``Stats.__add__``): counts add
        up, the time is the longer slice's (slices run at once), the executor's and the
        verifier's counters combine by their own rules (``_NOT_ADDED``, ``_LISTED``).
        ``sum(parts, RunStats())`` merges a ``--drivers`` job, an export of several
        slices, the dataset card and ``inspect`` alike."""
        if not isinstance(other, RunStats):
            return NotImplemented
        values: dict[str, Any] = {}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.metadata.get("merge") == "max":
                values[f.name] = max(a, b)
            elif isinstance(a, dict):  # Counters add; the executor's, verifier's dicts by their rules
                values[f.name] = a + b if isinstance(a, Counter) else _combine_dicts([a, b])
            else:
                values[f.name] = a + b
        out = type(self)(**values)
        out.rollouts_before = self.rollouts_before + other.rollouts_before
        out.elapsed_before_s = max(self.elapsed_before_s, other.elapsed_before_s)
        out.started = min(self.started, other.started)
        return out

    def count_problem(self, space: str, labels: list[list[bool | None]], nodes: int, pairs: int,
                      skipped: bool = False) -> None:
        """Count one finished problem's rows: its answer space's coverage, its paths (each
        steps row's ``labels``, null: undecided), their labels and lengths, its nodes and
        pairs. The driver counts the run with it, the writer each flush (``ROW_COUNTERS``:
        what a repair takes out again when it drops a flush)."""
        self.count_space(space, labels, skipped)
        self.problems_done += 1
        self.problems_skipped += bool(skipped)
        self.nodes += nodes
        self.paths += len(labels)
        self.pairs += pairs
        for row in labels:
            pos, neg = row.count(True), row.count(False)
            self.steps_labelled += pos + neg
            self.labels_positive += pos
            self.labels_negative += neg
            self.steps_per_path[len(row)] += 1

    def row_counts(self) -> dict[str, Any]:
        """The counters :meth:`count_problem` adds to, as the manifest writes them."""
        full = self.to_dict()
        return {k: full[k] for k in ROW_COUNTERS}

    def count_space(self, space: str, labels: list[list[bool | None]], skipped: bool = False) -> None:
        """Count one finished problem of an answer space: ``labels`` holds each of its
        steps rows' labels (null: undecided). A skipped problem is done without labels.
        Only the labels before a path's first null count: no export or trainer reads past
        it (``[labels] undecided = "keep"`` writes the rest into the run's own tables)."""
        counts = self.answer_spaces.setdefault(space, dict.fromkeys(SPACE_COUNTERS, 0))
        for name in SPACE_COUNTERS:  # a manifest from before a counter was added
            counts.setdefault(name, 0)
        labels = [row[: row.index(None)] if None in row else row for row in labels]
        pos = sum(row.count(True) for row in labels)
        neg = sum(row.count(False) for row in labels)
        counts["problems"] += 1
        counts["skipped"] += bool(skipped)
        counts["labelled_problems"] += bool(pos + neg)
        counts["paths"] += len(labels)
        counts["steps_labelled"] += pos + neg
        counts["positive"] += pos
        counts["negative"] += neg

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``stats``: every field, under its own name."""
        self.stop_clock()
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Counter):
                value = {str(k): v for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
            elif f.name == "answer_spaces":
                value = {k: dict(v) for k, v in sorted(value.items())}
            out[f.name] = value
        return out


#: What :meth:`RunStats.count_problem` counts: a flush's rows add these, a repair that drops
#: the flush takes them out.
ROW_COUNTERS = ("problems_done", "problems_skipped", "nodes", "paths", "pairs", "steps_labelled", "labels_positive",
                "labels_negative", "steps_per_path", "answer_spaces")


def subtract_counts(stats: dict[str, Any], counts: dict[str, Any]) -> None:
    """Take ``counts`` (a dropped flush's ``RunStats.row_counts``) out of a manifest's
    ``stats`` in place, never below 0: numbers, and dicts key by key. An answer space left
    counting nothing (all its problems dropped) goes, as if it had never been counted."""
    for key, value in counts.items():
        have = stats.get(key)
        if isinstance(value, dict) and isinstance(have, dict):
            subtract_counts(have, value)
            for name in [k for k, v in have.items() if isinstance(v, dict) and v and not any(v.values())]:
                del have[name]
        elif isinstance(value, (int, float)) and isinstance(have, (int, float)) and not isinstance(have, bool):
            stats[key] = max(0, have - value)


#: What :attr:`RunStats.answer_spaces` counts per answer space: problems done (skipped ones
#: included), those skipped, those with at least one labelled step, steps rows, labelled
#: steps and their labels.
SPACE_COUNTERS = ("problems", "skipped", "labelled_problems", "paths", "steps_labelled", "positive", "negative")


@dataclass(frozen=True)
class SpaceCoverage:
    """How well one answer space was labelled: what ``inspect``, the dataset card and the
    run's summary show per space."""

    space: str
    problems: int = 0
    skipped: int = 0
    labelled_problems: int = 0
    paths: int = 0
    steps_labelled: int = 0
    positive: int = 0
    negative: int = 0

    @property
    def share(self) -> float:
        """The coverage: the share of the space's problems with at least one labelled step."""
        return self.labelled_problems / self.problems if self.problems else 0.0

    @property
    def steps_per_problem(self) -> float:
        return self.steps_labelled / self.problems if self.problems else 0.0

    @property
    def positive_share(self) -> float | None:
        return self.positive / self.steps_labelled if self.steps_labelled else None


def coverage(answer_spaces: dict[str, dict[str, int]]) -> list[SpaceCoverage]:
    """``RunStats.answer_spaces`` (or a manifest's) as one record per space, by name."""
    return [SpaceCoverage(str(space), **{k: int(counts.get(k, 0)) for k in SPACE_COUNTERS})
            for space, counts in sorted(answer_spaces.items())]


def _copied(value: Any) -> Any:
    """A manifest's nested dict, copied so a resumed or merged run never shares it."""
    return {k: _copied(v) for k, v in value.items()} if isinstance(value, dict) else value


#: Counters in the executor's, verifier's and driver's dicts that several drivers do not add
#: up: they share one worker pool (``workers``), the slowest driver's ``latency_ms`` is the
#: backend's, and the worst tree is the worst of any driver's.
_NOT_ADDED = {"workers": max, "min_tree_affinity": min, "latency_ms": max}
#: Words in those dicts that may differ between drivers and are then all listed
#: (``"process,thread"``: one driver's answer checks fell back to threads).
_LISTED = {"pool_kind"}


def _combine_dicts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Numbers add (unless named in ``_NOT_ADDED``), nested dicts combine key by key, the
    words named in ``_LISTED`` are listed, other values are the first driver's."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if key not in out or out[key] is None:  # None: that part never measured it
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
