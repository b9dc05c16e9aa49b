"""The pilot and the learned floor (issue 20): what a run learns about each answer space,
where it is recorded, and that rows stay reproducible around it."""

from __future__ import annotations

import json

import prmtree
import pytest
from prmtree.engine.calibration import chance_floor
from prmtree.engine.config import LabelsConfig
from prmtree.engine.deciders import CalibratedDecider
from prmtree.engine.floors import LOWEST, PRIOR_ROLLOUTS, learn_floor
from prmtree.engine.output import load_manifest, read_table
from prmtree.engine.pilot import Calibration, pool_allowance
from prmtree.engine.synthetic import generate_problems
from prmtree.engine.tree import ReasoningTree
from prmtree.policies.simulated import SimulatedPolicy

YESNO = generate_problems(24, seed=21, min_steps=6, max_steps=9, answer_spaces=("yesno",))
MIXED = generate_problems(18, seed=22, min_steps=5, max_steps=8, answer_spaces=("yesno", "choice", "number"))


def _policy(wrong_answers: str = "consistent") -> SimulatedPolicy:
    return SimulatedPolicy(error_rate=0.1, guess_rate=0.3, lucky_rate=0.0, cancel_errors=False,
                           wrong_answers=wrong_answers)


def _run(out, problems, policy=None, **labels):
    config = {"seed": 1, "search": {"budget": 120}, "labels": {"pilot_problems": 8, **labels}}
    return prmtree.run(problems, policy=policy or _policy(), out=out, config=config)


def _rows(out):
    rows = read_table(out, "steps").to_pylist()
    return sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)


def test_the_floor_is_learned_near_the_true_rate_after_a_wrong_step(tmp_path):
    """A consistently wrong solver reaches a yes/no gold answer after a wrong step only by
    guessing: 0.3 x 1/2 = 0.15, not the chance floor's 1/2. One that guesses whenever its
    value is wrong reaches it half the time: the floor stays near 1/2."""
    _run(tmp_path / "consistent", YESNO)
    _run(tmp_path / "guess", YESNO, policy=_policy("guess"))
    learned = load_manifest(tmp_path / "consistent" / "manifest.json").calibration["floors"]["yesno"]
    guessing = load_manifest(tmp_path / "guess" / "manifest.json").calibration["floors"]["yesno"]
    assert learned["source"] == "learned" and learned["chance"] == 0.5 and learned["problems"] == 8
    assert 0.06 <= learned["floor"] <= 0.3, learned
    assert 0.35 <= guessing["floor"] <= 0.6, guessing
    assert learned["wrong_rollouts"] > 2 * PRIOR_ROLLOUTS  # the evidence, not the prior, moved it


def test_no_evidence_keeps_the_chance_floor():
    labels = LabelsConfig()
    problem = YESNO[0]
    empty = ReasoningTree(problem.id)
    floor = learn_floor([(problem, empty)], chance_floor(problem), lambda p, f: CalibratedDecider(p, labels, 0.0, f))
    assert floor.floor == 0.5 and floor.source == "prior" and floor.wrong_rollouts == 0
    assert LOWEST > 0  # a learned floor is never 0: one lucky continuation stays possible


def test_calibration_is_recorded_and_every_label_carries_its_spaces_floor(tmp_path):
    s = _run(tmp_path, MIXED)
    cal = load_manifest(tmp_path / "manifest.json").calibration
    floors = {space: f["floor"] for space, f in cal["floors"].items()}
    assert set(floors) == {"yesno", "choice", "number"}
    assert floors["yesno"] < 0.5 and floors["choice"] < 0.25  # below chance: consistently wrong solvers
    assert len(cal["members"]) == 18 and set(cal["first_floors"]) == set(floors)  # 6 per space: all pilot
    space = {p.id: p.meta["answer_space"] for p in MIXED}
    rows = read_table(tmp_path, "steps").to_pylist()
    assert rows and s.steps_labelled > 0
    for row in rows:
        assert row["floors"] == [floors[space[row["problem_id"]]]] * len(row["labels"])


def test_mc_labels_learn_nothing_and_learn_floor_false_keeps_chance(tmp_path):
    prmtree.run(MIXED[:6], policy=_policy(), out=tmp_path / "mc", config={"labels": {"method": "mc"}})
    assert load_manifest(tmp_path / "mc" / "manifest.json").calibration == {}
    assert all(f is None for r in read_table(tmp_path / "mc", "steps").to_pylist() for f in r["floors"])
    _run(tmp_path / "off", MIXED[:6], learn_floor=False)
    assert load_manifest(tmp_path / "off" / "manifest.json").calibration == {}
    chance = {p.id: chance_floor(p) for p in MIXED}
    for row in read_table(tmp_path / "off", "steps").to_pylist():
        assert set(row["floors"]) == {chance[row["problem_id"]]}


def test_rows_do_not_depend_on_how_many_trees_are_in_flight(tmp_path):
    problems = generate_problems(30, seed=23, min_steps=5, max_steps=8, answer_spaces=("yesno", "number"))
    for n in (1, 7):
        prmtree.run(problems, policy=_policy(), out=tmp_path / str(n),
                    config={"seed": 2, "search": {"budget": 80}, "labels": {"pilot_problems": 4, "pilot_window": 12},
                            "executor": {"trees_in_flight": n}})
    assert _rows(tmp_path / "1") == _rows(tmp_path / "7")
    one = load_manifest(tmp_path / "1" / "manifest.json").calibration
    assert one == load_manifest(tmp_path / "7" / "manifest.json").calibration
    assert len(one["members"]) == 8  # 4 of each space, all inside the 12-problem window


def test_a_resumed_run_pilots_nothing_and_labels_with_what_was_learned(tmp_path):
    problems = generate_problems(20, seed=24, min_steps=5, max_steps=8, answer_spaces=("yesno",))
    _run(tmp_path / "o", problems[:10])
    before = load_manifest(tmp_path / "o" / "manifest.json").calibration
    _run(tmp_path / "o", problems)  # ten more: the manifest's calibration labels them
    after = load_manifest(tmp_path / "o" / "manifest.json")
    assert after.calibration == before and len(after.completed) == 20
    floor = before["floors"]["yesno"]["floor"]
    assert {f for r in read_table(tmp_path / "o", "steps").to_pylist() for f in r["floors"]} == {floor}


def test_a_member_that_fails_teaches_nothing_and_is_redone_as_a_member(tmp_path):
    class FailsFor(SimulatedPolicy):
        def __init__(self, bad, **kw):
            super().__init__(**kw)
            self.bad, self._broken = bad, True  # private: not part of the config, so a re-run resumes

        async def generate(self, request):
            if request.problem.id == self.bad and self._broken:
                raise RuntimeError("worker lost")
            return await super().generate(request)

    problems = YESNO[:10]
    policy = FailsFor(problems[1].id, error_rate=0.1, guess_rate=0.3, lucky_rate=0.0, cancel_errors=False,
                      wrong_answers="consistent")
    config = {"seed": 1, "search": {"budget": 120}, "labels": {"pilot_problems": 4},
              "executor": {"retry_backoff_s": 0.0, "max_attempts": 1}}
    s = prmtree.run(problems, policy=policy, out=tmp_path, config=config)
    assert s.problems_failed == 1 and s.problems_done == 9
    cal = load_manifest(tmp_path / "manifest.json").calibration
    assert cal["floors"]["yesno"]["problems"] == 3 and problems[1].id in cal["members"]
    policy._broken = False
    again = prmtree.run(problems, policy=policy, out=tmp_path, config=config)
    assert again.problems_done == 10 and load_manifest(tmp_path / "manifest.json").calibration == cal


def test_a_pilot_whose_problems_all_failed_stops_the_run_and_the_same_command_pilots_again(tmp_path):
    # Before: it froze floors learned from nothing (chance floors, no pool) and the rest of
    # the window ran on them; the advised "same command" then labelled the whole run so.
    from prmtree.engine.errors import PilotFailedError

    class Outage(SimulatedPolicy):
        broken = True  # a class attribute: not part of the policy's config, so the re-run resumes

        async def generate(self, request):
            if Outage.broken:
                raise RuntimeError("backend hiccup")
            return await super().generate(request)

    problems = MIXED[:12]
    config = {"seed": 1, "search": {"budget": 120}, "labels": {"pilot_problems": 2},
              "executor": {"retry_backoff_s": 0.0, "max_attempts": 1, "breaker_window": 10**6}}
    policy = Outage(error_rate=0.1, guess_rate=0.3, lucky_rate=0.0, cancel_errors=False, wrong_answers="consistent")
    with pytest.raises(PilotFailedError) as err:
        prmtree.run(problems, policy=policy, out=tmp_path / "o", config=config)
    assert str(err.value) == (
        "the pilot learned nothing: all 6 of its problems failed (e.g. RuntimeError: backend hiccup (1 "
        "attempt)), so no other problem was started, as their labels need the floors it learns; fix the cause, "
        "then run the same command again: it pilots the same problems again")
    cut = load_manifest(tmp_path / "o" / "manifest.json")
    assert not cut.calibration and not cut.completed and len(cut.failed) == 6  # the members only
    Outage.broken = False
    again = prmtree.run(problems, policy=policy, out=tmp_path / "o", config=config)
    fresh = prmtree.run(problems, policy=policy, out=tmp_path / "fresh", config=config)
    assert again.problems_done == fresh.problems_done == 12
    learned = load_manifest(tmp_path / "fresh" / "manifest.json").calibration
    assert load_manifest(tmp_path / "o" / "manifest.json").calibration == learned and learned["pool"]["per_problem"]
    assert _rows(tmp_path / "o") == _rows(tmp_path / "fresh")
    # an input of members only: nothing waits, so the run just ends with its failures (exit 3),
    # and freezes nothing: the retry pilots them again
    Outage.broken = True
    members_only = {**config, "labels": {"pilot_problems": 12}}
    s = prmtree.run(problems, policy=policy, out=tmp_path / "m", config=members_only)
    assert (s.problems_failed, s.problems_done, s.retry_pending) == (12, 0, 12)
    assert not load_manifest(tmp_path / "m" / "manifest.json").calibration
    Outage.broken = False
    prmtree.run(problems, policy=policy, out=tmp_path / "m", config=members_only)
    prmtree.run(problems, policy=policy, out=tmp_path / "m_fresh", config=members_only)
    assert load_manifest(tmp_path / "m" / "manifest.json").calibration == load_manifest(
        tmp_path / "m_fresh" / "manifest.json").calibration
    assert _rows(tmp_path / "m") == _rows(tmp_path / "m_fresh")


def test_a_slice_whose_pilot_members_are_all_another_slices_names_their_failure(tmp_path):
    # the review: "e.g. unknown", since another slice's members are not this slice's failures
    from prmtree.engine.errors import PilotFailedError
    from prmtree.engine.output import Slice

    class Outage(SimulatedPolicy):
        async def generate(self, request):
            raise RuntimeError("backend hiccup")

    problems = generate_problems(12, seed=22, min_steps=5, max_steps=8, answer_spaces=("yesno",))
    problems.sort(key=lambda p: not Slice(0, 2).owns(p.id))  # the one member is slice 0's
    config = {"seed": 1, "search": {"budget": 60}, "labels": {"pilot_problems": 1},
              "executor": {"retry_backoff_s": 0.0, "max_attempts": 1, "breaker_window": 10**6}}
    with pytest.raises(PilotFailedError, match=r"all 1 of its problems failed \(e\.g\. RuntimeError: backend hiccup"):
        prmtree.run(problems, policy=Outage(), out=tmp_path, config=config, slice="1/2")


def test_the_pool_lets_undecided_problems_draw_what_the_pilot_left_unspent(tmp_path):
    s = _run(tmp_path, YESNO, pool_per_problem=40)
    cal = load_manifest(tmp_path / "manifest.json").calibration["pool"]
    assert 0 < cal["per_problem"] <= 40
    drawn, drawing = s.labelling.get("pool_drawn", 0), s.labelling.get("pool_problems", 0)
    assert drawing <= 24 - 8 and drawn <= drawing * cal["per_problem"]
    none = _run(tmp_path / "none", YESNO, pool_per_problem=0)
    assert load_manifest(tmp_path / "none" / "manifest.json").calibration["pool"]["per_problem"] == 0
    assert none.labelling.get("pool_drawn", 0) == 0


def test_pool_allowance_is_unspent_budget_over_the_share_that_ran_short():
    class Stats:
        def __init__(self, rollouts, short):
            self.rollouts, self.budget_short = rollouts, short

    class Search:
        def __init__(self, rollouts, short):
            self.stats = Stats(rollouts, short)

    searches = [Search(40, False), Search(100, True), Search(70, False), Search(100, True)]
    a = pool_allowance(searches, budget=100, most=1000)
    # unspent per problem (60 + 0 + 30 + 0) / 4 = 22.5; short 2 of 4, add-one: 22.5 * 5 / 3
    assert a.unspent_per_problem == 22.5 and a.short_share == 0.5 and a.per_problem == int(22.5 * 5 / 3)
    assert pool_allowance(searches, budget=100, most=10).per_problem == 10
    assert pool_allowance([], budget=100, most=10).per_problem == 0


def test_calibration_round_trips_through_the_manifest_format():
    data = {"floors": {"yesno": {"floor": 0.15, "chance": 0.5, "problems": 8, "wrong_rollouts": 40.0,
                                 "source": "learned"}},
            "pool": {"per_problem": 12, "unspent_per_problem": 30.0, "short_share": 0.25},
            "members": ["a", "b"], "first_floors": {"yesno": 0.2}, "fingerprints": {"a": "f1", "b": "f2"}}
    assert Calibration.from_dict(json.loads(json.dumps(Calibration.from_dict(data).as_dict()))).as_dict() == data


@pytest.mark.parametrize("bad", [0, -1])
def test_pilot_settings_are_checked(bad):
    from prmtree.engine.errors import ConfigError
    from prmtree.engine.config import RunConfig

    with pytest.raises((ConfigError, ValueError)):
        RunConfig.model_validate({"labels": {"pilot_problems": bad}})


class _HostDies(SimulatedPolicy):
    """Served by an engine host (a local driver's engine) that stops, dropping every
    connection, at the ``after``-th request: each request in flight fails with ``HostLost``."""

    def __init__(self, after: int) -> None:
        super().__init__(error_rate=0.1, guess_rate=0.3, lucky_rate=0.0, cancel_errors=False, latency_s=0.002)
        self._after, self._calls, self.host = after, 0, None

    async def generate(self, request):
        import asyncio

        self._calls += 1
        if self._calls == self._after:
            asyncio.get_running_loop().call_soon(asyncio.ensure_future, self.host.stop())
        return await super().generate(request)


def _run_through_a_host(out, policy):
    """``_run`` with the policy behind an engine host in a thread of its own."""
    import asyncio
    import threading

    from prmtree.rollout_workers.host import EngineHost
    from prmtree.rollout_workers.inline import InlineExecutor

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    policy.host = EngineHost(InlineExecutor(policy), drivers=1)
    address = str(out.parent / f"{out.name}.sock")
    asyncio.run_coroutine_threadsafe(policy.host.start(address), loop).result(10)
    try:
        config = {"seed": 1, "search": {"budget": 120}, "labels": {"pilot_problems": 8},
                  "executor": {"kind": "host", "attach": address}}
        return prmtree.run(MIXED, out=out, config=config, config_overrides={"policy": {"name": "simulated"}})
    finally:
        loop.call_soon_threadsafe(loop.stop)


@pytest.mark.parametrize("share", [0.3, 0.6, 0.8, 0.9, 0.95])
def test_an_engine_lost_during_the_pilot_leaves_no_partial_calibration(tmp_path, share):
    """Every member in flight failing at once (the engine host gone) is the run's end, not
    those members' failures: the pilot must not learn from the members left, or the next
    run would label with what it half-learned. It pilots again, and writes the rows of a
    run that was never cut."""
    from prmtree.engine.errors import FatalExecutorError

    whole = _run_through_a_host(tmp_path / "whole", _HostDies(10**9))
    requests = whole.run_stats.requests
    with pytest.raises(FatalExecutorError, match="closed the connection"):
        _run_through_a_host(tmp_path / "cut", _HostDies(int(share * requests)))
    cut = load_manifest(tmp_path / "cut" / "manifest.json")
    learned = load_manifest(tmp_path / "whole" / "manifest.json").calibration
    assert not cut.calibration or cut.calibration == learned  # from every member, or not at all
    _run_through_a_host(tmp_path / "cut", _HostDies(10**9))
    assert _rows(tmp_path / "cut") == _rows(tmp_path / "whole")
