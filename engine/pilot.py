"""The pilot: a run's first problems of each answer space, searched before the rest, to
learn what the rest are labelled and budgeted with.

Two things are learned from the pilot's trees and then frozen for the whole run:

* each answer space's **floor** (``engine/floors.py``): the success rate of
  continuations after a wrong step;
* the **pool allowance**: how many rollouts past its budget a problem whose paths are
  still undecided may draw, so that, in expectation, problems draw what the pilot's
  problems left unspent (``unspent per problem / share that ran short``, at most
  ``labels.pool_per_problem``).

Why a pilot, frozen, rather than estimates that move as problems finish: rows must not
depend on which tree finished first, so a problem's floor and allowance may only depend
on problems chosen by input position. The pilot's members are the first
``labels.pilot_problems`` problems of each answer space among the first
``labels.pilot_window`` problems of the input (of this driver's slice); the other
problems of that window wait, unstarted, until the pilot is done. Members are searched
at the chance floor and labelled at the learned one. The result goes into the manifest
(``calibration``): a resumed run reads it back and runs no pilot, and a run stopped
before it was learned wrote no labelled rows, so its next run pilots the same problems.
A space first seen after the window keeps its chance floor.

A member whose search fails is searched once more before the pilot learns without it
(``Driver.search_problem``); one that fails again is lost, and the calibration names it
(``lost``): with several drivers each pilots alone, and a slice that lost a member its
siblings did not labels with other floors (``engine/output/verification.py`` finds it).
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from prmtree.engine.calibration import answer_space, chance_floor
from prmtree.engine.deciders import CalibratedDecider
from prmtree.engine.floors import LearnedFloor, learn_floor
from prmtree.engine.records import InputError, Problem, problem_fingerprint

if TYPE_CHECKING:
    from prmtree.engine.config import LabelsConfig
    from prmtree.engine.search.base import TreeSearch


def pilot_members(items: Iterable[Problem | InputError], per_space: int, window: int) -> list[str]:
    """The members a fresh run's pilot takes from an input, in order (:meth:`Pilot.admit`):
    the first ``per_space`` problems of each answer space among its first ``window``
    problems (a bad row is no problem). A resume compares them with the members its
    calibration was learned from: rows added, moved or removed there change the floors a
    fresh run of the input would label with."""
    counts: Counter[str] = Counter()
    members: list[str] = []
    seen = 0
    for item in items:
        if not isinstance(item, Problem):
            continue
        if _joins(counts, item, per_space):
            members.append(item.id)
        seen += 1
        if seen >= window:
            break
    return members


def _joins(counts: Counter[str], problem: Problem, per_space: int) -> bool:
    """Whether ``problem``, next in input order, is a pilot member: its answer space has
    fewer than ``per_space`` so far (``counts``, updated). The one rule of the pilot and of
    :func:`pilot_members`."""
    space = answer_space(problem)
    if counts[space] >= per_space:
        return False
    counts[space] += 1
    return True


@dataclass(frozen=True)
class PoolAllowance:
    """What the pilot's problems left unspent, and what a later problem may draw."""

    per_problem: int  # rollouts past its budget a problem may take for its labels
    unspent_per_problem: float  # the pilot's mean unspent budget
    short_share: float  # share of the pilot's problems whose labels wanted more than their budget

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Calibration:
    """What the pilot learned: the manifest's ``calibration`` entry."""

    floors: dict[str, LearnedFloor]
    pool: PoolAllowance
    # A member left unfinished is redone by a resumed run as the pilot did it: searched at
    # the chance floor, topped up at the first look's floors, labelled at the learned ones.
    members: list[str]
    first_floors: dict[str, float]
    # each member's input as the pilot learned from it (problem_fingerprint): a slice that takes
    # this calibration checks its own input's members against it
    fingerprints: dict[str, str] = field(default_factory=dict)
    # members that failed for good (id -> why), so learned without: written only when there
    # are any (a manifest without it, older ones included, lost none)
    lost: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = {"floors": {s: f.as_dict() for s, f in sorted(self.floors.items())}, "pool": self.pool.as_dict(),
                "members": list(self.members), "first_floors": dict(sorted(self.first_floors.items())),
                "fingerprints": dict(sorted(self.fingerprints.items()))}
        if self.lost:
            data["lost"] = dict(sorted(self.lost.items()))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        floors = {s: LearnedFloor.from_dict(f) for s, f in data.get("floors", {}).items()}
        pool = PoolAllowance(**data["pool"]) if "pool" in data else PoolAllowance(0, 0.0, 0.0)
        return cls(floors, pool, [str(m) for m in data.get("members", [])],
                   {str(s): float(f) for s, f in data.get("first_floors", {}).items()},
                   {str(k): str(v) for k, v in data.get("fingerprints", {}).items()},
                   {str(k): str(v) for k, v in data.get("lost", {}).items()})


def lost_more(calibration: dict[str, Any], other: dict[str, Any]) -> bool:
    """Whether a manifest's ``calibration`` was learned without a member ``other`` learned
    from: it lost one ``other`` did not, or (a manifest from before ``lost`` was recorded)
    its floors count fewer problems. Its floors are then not those of a run where that
    member passed."""
    if set(calibration.get("lost") or {}) - set(other.get("lost") or {}):
        return True
    return _taught(calibration) < _taught(other)


def _taught(calibration: dict[str, Any]) -> int:
    return sum(int(f.get("problems", 0)) for f in (calibration.get("floors") or {}).values())


def cleanest(calibrations: dict[str, dict[str, Any]], others: Iterable[dict[str, Any]] = ()) -> str | None:
    """The first (by name) of ``calibrations`` that lost no member any of them, or of
    ``others``, learned from: the floors the slices of one --out should share. None when
    each lost a member another did not (a pilot of its own is then the way to learn them)."""
    every = [*calibrations.values(), *others]
    for name, calibration in sorted(calibrations.items()):
        if not any(lost_more(calibration, other) for other in every):
            return name
    return None


def pool_allowance(searches: list[TreeSearch], budget: int, most: int) -> PoolAllowance:
    """The allowance from the pilot's searches: unspent budget per problem over the share
    of problems that ran short (add-one smoothed), at most ``most``."""
    if not searches or most <= 0:
        return PoolAllowance(0, 0.0, 0.0)
    unspent = sum(max(0, budget - s.stats.rollouts) for s in searches) / len(searches)
    short = sum(s.stats.budget_short for s in searches)
    per_problem = int(min(most, unspent * (len(searches) + 1) / (short + 1)))
    return PoolAllowance(per_problem, round(unspent, 3), round(short / len(searches), 4))


class Pilot:
    """Which problems pilot, which wait, and when the pilot is learned (see the module
    docstring). The driver asks :meth:`admit` for each problem in input order, reports
    each member's finished search with :meth:`searched` and calls :meth:`close` when the
    input ends; :attr:`learned` is set once the calibration is known."""

    def __init__(self, labels: LabelsConfig, budget: int,
                 decider_at: Callable[[Problem, float], CalibratedDecider],
                 on_learned: Callable[[Calibration], None]) -> None:
        self.labels = labels
        self.on_learned = on_learned
        self.budget = budget
        self.decider_at = decider_at
        self.per_space = labels.pilot_problems
        self.window = labels.pilot_window
        self.seen = 0
        self.members: dict[str, int] = {}  # problem id -> position among the members
        self.member_count: Counter[str] = Counter()
        self.reported: dict[str, tuple[Problem, TreeSearch | None]] = {}
        self.closed = False
        self.abandoned = False  # a stop before it learned: it never learns (the next run pilots again)
        self.failed = False  # every member failed: nothing to learn from, it never learns (nothing else starts)
        self.first_look = asyncio.Event()  # round one learned: members top up their labels with it
        self.first_floors: dict[str, float] = {}
        self.second: dict[str, tuple[Problem, TreeSearch | None]] = {}
        self.lost: dict[str, str] = {}  # members that failed for good -> why
        self.learned = asyncio.Event()
        self.calibration: Calibration | None = None

    @property
    def window_full(self) -> bool:
        """The window is read: the driver reads no further until the pilot is learned."""
        return self.seen >= self.window

    def admit(self, problem: Problem) -> bool:
        """Whether ``problem`` (the next in input order) is a member (searched now); a
        problem that is not waits for :attr:`learned`."""
        self.seen += 1
        member = _joins(self.member_count, problem, self.per_space)
        if member:
            self.members[problem.id] = len(self.members)
        if self.window_full:
            self.close()
        return member

    def is_member(self, problem: Problem) -> bool:
        return problem.id in self.members

    def searched(self, problem: Problem, search: TreeSearch | None, why: str = "unknown") -> None:
        """A member's search (round one) is over (None: it failed for good, ``why``, and
        teaches nothing)."""
        self.reported[problem.id] = (problem, search)
        if search is None:
            self.lost[problem.id] = why
        self._maybe_learn()

    def topped_up(self, problem: Problem, search: TreeSearch | None, why: str = "unknown") -> None:
        """A member's top-up at the first look's floor (round two) is over (None: failed)."""
        self.second[problem.id] = (problem, search)
        if search is None:
            self.lost.setdefault(problem.id, why)
        self._maybe_learn()

    def close(self) -> None:
        """No more members: the window is read, or the input ended."""
        self.closed = True
        self._maybe_learn()

    def _by_space(self, reports: dict[str, tuple[Problem, TreeSearch | None]]) -> dict[str, list[tuple[Problem, TreeSearch]]]:
        by_space: dict[str, list[tuple[Problem, TreeSearch]]] = defaultdict(list)
        for pid in sorted(self.members, key=self.members.__getitem__):  # input order: deterministic
            problem, search = reports[pid]
            if search is not None:
                by_space[answer_space(problem)].append((problem, search))
        return by_space

    def _floors(self, by_space: dict[str, list[tuple[Problem, TreeSearch]]]) -> dict[str, LearnedFloor]:
        floors = {}
        for space, found in by_space.items():
            chance = chance_floor(found[0][0], self.labels.chance, self.labels.free_chance)
            floors[space] = learn_floor([(p, s.tree) for p, s in found], chance, self.decider_at)
        return floors

    def _maybe_learn(self) -> None:
        """Round one: every member searched at the chance floor, floors learned from
        their trees (the first look). Round two: every member topped up its labels at
        the first look's floors (more rollouts where a wrong step now tells), floors
        learned again from the richer trees, and frozen with the pool allowance."""
        if self.abandoned or self.failed or not self.closed or len(self.reported) < len(self.members):
            return
        if not self.first_look.is_set():
            self.first_floors = {s: f.floor for s, f in self._floors(self._by_space(self.reported)).items()}
            self.first_look.set()
        if self.calibration is not None or len(self.second) < len(self.members):
            return
        by_space = self._by_space(self.second)
        if self.members and not by_space:  # frozen, chance floors and no pool would label the whole run
            self.failed = True
            return
        searches = [s for found in by_space.values() for _, s in found]
        self.calibration = Calibration(self._floors(by_space),
                                       pool_allowance(searches, self.budget, self.labels.pool_per_problem),
                                       sorted(self.members, key=self.members.__getitem__), dict(self.first_floors),
                                       {pid: problem_fingerprint(problem) for pid, (problem, _) in self.reported.items()},
                                       dict(self.lost))
        self.on_learned(self.calibration)
        self.learned.set()
