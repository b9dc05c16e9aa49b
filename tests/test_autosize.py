"""Concurrency that sizes itself: the driver fills a backend's declared capacity, backs
off under overload or rising latency, and the rows never depend on it."""

from __future__ import annotations

import asyncio
import json
import random

import pytest
from conftest import rows

import prmtree
from prmtree.engine.config import RunConfig
from prmtree.engine.contracts import declared_capacity
from prmtree.engine.driver import HEADROOM, Concurrency, Driver, overloaded
from prmtree.engine.errors import ConfigError, GenerationError
from prmtree.policies.openai_policy import server_error
from prmtree.policies.simulated import SimulatedPolicy
from prmtree.rollout_workers.inline import InlineExecutor
from prmtree.summary import print_summary

NO_PILOT = {"labels": {"learn_floor": False}}


def test_declared_capacity_reads_an_attribute_or_a_method():
    assert declared_capacity(SimulatedPolicy(batch_capacity=96)) == 96
    assert declared_capacity(SimulatedPolicy()) is None
    assert declared_capacity(InlineExecutor(SimulatedPolicy(batch_capacity=32))) == 32

    class Method:
        def capacity(self):
            return 7

    assert declared_capacity(Method()) == 7


def test_aimd_slow_start_then_additive_then_halves_once_per_round_trip():
    c = Concurrency(None, start=8, step=4)
    # slow start: doubles each time `limit` sequences came back at the baseline latency
    for _ in range(8):
        c.completed(1, 0.05)
    assert c.limit == 16 and c.slow_start
    for _ in range(16):
        c.completed(1, 0.05)
    assert c.limit == 32
    c.overload()  # first backpressure: halve, then grow additively
    assert c.limit == 16 and not c.slow_start and c.decreases == 1
    c.overload()  # the requests sent before the decrease still report the old load
    assert c.limit == 16 and c.decreases == 1
    for _ in range(16):
        c.completed(1, 0.05)
    assert c.limit == 18  # + an eighth of the limit (at most step): additive, not a doubling
    # a round trip whose median latency is far above the recent lowest (2x and 5 ms over it)
    # is backpressure too
    for _ in range(18):
        c.completed(1, 0.05)
    assert c.limit == 20
    for _ in range(20):
        c.completed(1, 0.5)
    assert c.limit == 10 and c.decreases == 2 and c.latency_decreases == 1
    assert c.as_dict()["peak"] == 32


def test_aimd_with_a_declared_capacity_starts_full_and_latency_does_not_shrink_it():
    c = Concurrency(1000)
    assert c.limit == c.ceiling == int(1000 * HEADROOM)
    for _ in range(50):
        c.completed(4, 5.0)  # a queue at the engine is expected: only overload shrinks it
    assert c.limit == 1250
    c.overload()
    assert c.limit == 625
    for _ in range(1000):
        c.completed(4, 0.05)
    assert 625 < c.limit <= 1250
    c.set_capacity(100)  # the backend shrank (a worker lost)
    assert c.limit <= 125


def test_latency_that_varies_with_what_a_request_writes_is_not_backpressure():
    # Before: the lowest smoothed latency ever seen was the baseline and each request was
    # judged alone, so next steps (short) beside whole rollouts (long), or a server's
    # ordinary jitter, halved the limit down to 1 on a server with no limit at all
    # (75 s against 2.6 s with the capacity declared, in a prober's run).
    rng = random.Random(0)
    c = Concurrency(None, start=8)
    for _ in range(3000):
        tokens = rng.choice([6, 40, 120, 300])
        c.completed(4, 0.002 * (tokens + 10) * rng.lognormvariate(0, 0.5), tokens)
    assert c.decreases == 0 and c.limit >= 4096
    jitter = Concurrency(None, start=8)  # no token counts (a server that reports none), wide jitter
    for _ in range(3000):
        jitter.completed(4, 0.1 * rng.lognormvariate(0, 0.5))
    assert jitter.decreases == 0


def test_a_round_trip_at_twice_the_latency_per_token_halves_once_and_then_recovers():
    c = Concurrency(None, start=16)
    for _ in range(64):  # 4 round trips at 2 ms a token
        c.completed(1, 0.002 * 116, 100)
    limit = c.limit
    for _ in range(limit):  # the engine's queue: every request twice as slow
        c.completed(1, 0.002 * 2.5 * 116, 100)
    assert c.latency_decreases == 1 and c.limit == limit // 2
    for _ in range(limit):  # sent before the cut: they report the old load, and cut nothing more
        c.completed(1, 0.002 * 2.5 * 116, 100)
    assert c.decreases == 1
    for _ in range(2 * limit):  # the queue drained: the limit grows again, additively
        c.completed(1, 0.002 * 116, 100)
    assert limit // 2 < c.limit < limit and c.decreases == 1


def saturating(c, knee, round_trips, slower=1.0, tokens=100):
    """Round trips against a server whose latency per token grows with the sequences in
    flight past ``knee`` (no 429s), the limit always used; the limits seen."""
    limits = []
    for _ in range(round_trips):
        load = c.limit
        for _ in range(max(1, load // 4)):
            c.completed(4, 0.002 * slower * (tokens + 16) * max(1.0, load / knee), tokens, in_use=load)
        limits.append(c.limit)
    return limits


def test_a_server_that_saturates_without_refusing_holds_the_limit_near_its_knee():
    # A baseline of the last 8 round trips rose with the latency, a few percent per
    # additive step, and the limit climbed to 25x the knee; the lowest ever holds it
    c = Concurrency(None, start=8)
    limits = saturating(c, 256, 400)
    assert c.latency_decreases >= 1
    assert max(limits[200:]) <= 4 * 256 and min(limits[200:]) >= 256 // 2


def test_decoded_tokens_are_read_from_the_text_where_the_backend_counts_none():
    from prmtree.engine.driver import decoded_tokens
    from prmtree.engine.records import Completion

    # an OpenAI server's n choices share one count: each num_tokens is 0
    assert decoded_tokens([Completion("x" * 400, 0, "stop"), Completion("y" * 40, 0, "stop")]) == 100
    assert decoded_tokens([Completion("x" * 400, 7, "stop"), Completion("y" * 40, 90, "stop")]) == 90


def test_sizing_stats_of_a_slice_that_never_measured_combine_in_any_order():
    from prmtree.engine.stats import _combine_dicts

    # a slice whose every request failed has no latency (None): inspect and export crashed on it
    idle = {"sizing": {"capacity": None, "limit": 64, "latency_ms": None}}
    busy = {"sizing": {"capacity": 128, "limit": 160, "latency_ms": 52.5}}
    for parts in ([idle, busy], [busy, idle]):
        assert _combine_dicts(parts) == {"sizing": {"capacity": 128, "limit": 224, "latency_ms": 52.5}}


def test_the_limit_grows_only_while_it_is_used():
    # an idle stretch (the pilot's few trees) no longer runs it up to flood the next burst
    c = Concurrency(None, start=8)
    for _ in range(400):
        c.completed(1, 0.05, 10, in_use=2)
    assert c.limit == 8
    for _ in range(8):
        c.completed(1, 0.05, 10, in_use=6)
    assert c.limit == 16


@pytest.mark.parametrize("declared, said", [
    ("8", "got '8'"),  # a text is no count, even one float() reads
    (b"8", "got b'8'"),
])
def test_a_text_capacity_is_refused(declared, said):
    class Texty:
        capacity = declared

    with pytest.raises(ConfigError, match=said):
        declared_capacity(Texty())


def test_a_capacity_property_that_fails_is_refused_not_read_as_unknown():
    # Before: its AttributeError (an engine not built yet) read as "declares none", and
    # probing sent up to 300 sequences to an engine built for 32
    class Lazy:
        @property
        def capacity(self):
            return self._engine.max_num_seqs

    with pytest.raises(ConfigError, match=r"Lazy.capacity raised AttributeError: .*_engine"):
        declared_capacity(Lazy())

    class Async:
        async def capacity(self):
            return 8

    with pytest.raises(ConfigError, match="not async"):
        declared_capacity(Async())


def test_overload_is_told_apart_from_a_failed_request():
    assert overloaded(server_error("/v1/chat/completions", 429, "slow down"))
    assert overloaded(server_error("/v1/chat/completions", 503, ""))
    assert overloaded(GenerationError("HTTP 503: engine overloaded"))  # as it arrives from another process
    assert not overloaded(server_error("/v1/chat/completions", 500, "boom"))
    assert not overloaded(GenerationError("bad image"))


class Engine(SimulatedPolicy):
    """The simulated GPU, counting sequences submitted and not yet answered."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.now = self.peak = 0

    async def generate(self, request):
        self.now += request.n
        self.peak = max(self.peak, self.now)
        try:
            return await super().generate(request)
        finally:
            self.now -= request.n


def test_trees_grow_until_the_declared_capacity_is_full(problems):
    engine = Engine(latency_s=0.02, batch_capacity=48)
    many = [p for p in problems for _ in range(1)] * 1
    prmtree.run(many, policy=engine, config={**NO_PILOT, "search": {"budget": 40}})
    # with the old default (one tree's batch of 4 per tree, 64 trees) nothing bounds it by
    # the engine; now the sequences in flight reach the capacity and stop at its headroom
    assert 48 <= engine.peak <= 48 * HEADROOM + 16


def test_a_small_engine_is_not_flooded(problems):
    engine = Engine(latency_s=0.005, batch_capacity=8)
    prmtree.run(problems, policy=engine, config={**NO_PILOT, "search": {"budget": 24}})
    assert 8 <= engine.peak <= 8 * HEADROOM + 8  # a tree's first claim is a guess: one wave over, at most


class Overloaded(Engine):
    """Declares a big capacity, but answers 'overloaded' (retryable) past 12 sequences."""

    def __init__(self):
        super().__init__(latency_s=0.01)
        self.refused = 0

    @property
    def capacity(self):
        return 400

    async def generate(self, request):
        if self.now + request.n > 12:
            self.refused += 1
            raise GenerationError("HTTP 503: server overloaded", retryable=True)
        return await super().generate(request)


def test_overload_shrinks_the_trees_in_flight(problems):
    policy = Overloaded()
    config = RunConfig.model_validate({**NO_PILOT, "search": {"budget": 24},
                                       # 12 attempts: on a loaded machine one request was refused 8 times
                                       # running (each retry waits for room, but timing decides who gets it)
                                       "executor": {"retry_backoff_s": 0.005, "max_attempts": 12}})
    driver = Driver(config, InlineExecutor(policy, config.executor), None)
    asyncio.run(driver.run(problems))
    # the first burst (every tree's first wave at once) is refused in part; the limit
    # halves until the waves fit, and refused requests and later waves wait for room. It
    # ends well below the declared 400 x headroom (500), within an additive step or two of
    # where the overloads last cut it (where exactly depends on timing: 47 + 16 was seen)
    c = driver.concurrency
    assert c.decreases >= 3 and c.limit <= 500 // 4
    assert policy.refused > 0
    assert driver.stats.problems_done == len(problems) and driver.stats.problems_failed == 0


class Slows(Engine):
    """No declared capacity: each request takes longer the more sequences are in flight
    (a server past its knee), so latency says when to stop growing."""

    async def generate(self, request):
        self.now += request.n
        self.peak = max(self.peak, self.now)
        try:
            await asyncio.sleep(0.002 * max(1, self.now / 16) ** 2)
            return self.complete(request)
        finally:
            self.now -= request.n


def test_rising_latency_shrinks_an_unknown_backend(problems):
    policy = Slows()
    config = RunConfig.model_validate({**NO_PILOT, "search": {"budget": 40}})
    driver = Driver(config, InlineExecutor(policy, config.executor), None)
    asyncio.run(driver.run(problems * 3))
    c = driver.concurrency
    assert c.capacity is None and c.decreases >= 1
    assert c.limit < 256  # well below what slow start would have reached unchecked
    assert policy.peak < 300


@pytest.mark.parametrize("strategy", ["omega", "mcts"])
def test_rows_identical_whatever_the_concurrency(tmp_path, problems, strategy):
    base = {"seed": 3, "search": {"budget": 40}}
    runs = {
        "one": ({"trees_in_flight": 1, "max_concurrency": 1}, SimulatedPolicy()),
        "four": ({"trees_in_flight": 4}, SimulatedPolicy(latency_s=0.001)),
        "auto-capacity": ({}, SimulatedPolicy(latency_s=0.002, batch_capacity=12)),
        "auto-aimd": ({}, Slows()),
    }
    for name, (executor, policy) in runs.items():
        prmtree.run(problems[:12], policy=policy, strategy=strategy, out=tmp_path / name,
                    config={**base, "executor": executor})
    for table in ("steps", "nodes", "pairs"):
        expected = rows(tmp_path / "one", table)
        assert expected or table == "pairs"
        for name in runs:
            assert rows(tmp_path / name, table) == expected, (name, table)


def test_omega_with_several_paths_in_flight_writes_the_same_rows_whatever_the_concurrency(tmp_path, problems):
    """Several first-error searches per tree: more requests per wave, and still no
    dependence on timing (the wave is the tree's, answered in issue order)."""
    base = {"seed": 3, "search": {"budget": 60, "paths_in_flight": 4}}
    runs = {
        "one": ({"trees_in_flight": 1, "max_concurrency": 1}, SimulatedPolicy()),
        "auto-capacity": ({}, SimulatedPolicy(latency_s=0.002, batch_capacity=12)),
    }
    for name, (executor, policy) in runs.items():
        prmtree.run(problems[:12], policy=policy, strategy="omega", out=tmp_path / name,
                    config={**base, "executor": executor})
    single = tmp_path / "single"
    prmtree.run(problems[:12], policy=SimulatedPolicy(), strategy="omega", out=single,
                config={"seed": 3, "search": {"budget": 60}})
    for table in ("steps", "nodes"):
        expected = rows(tmp_path / "one", table)
        assert expected
        assert rows(tmp_path / "auto-capacity", table) == expected, table
    assert rows(single, "nodes") != rows(tmp_path / "one", "nodes")  # the setting is live: other trees


class RefusesOnce(Engine):
    """Declares 8 sequences; the first request of problem ``refused`` is answered 'overloaded';
    records when each request starts."""

    def __init__(self, refused):
        super().__init__(latency_s=0.01, batch_capacity=8)
        self.refused, self.starts, self.refused_at = refused, [], None

    async def generate(self, request):
        now = asyncio.get_running_loop().time()
        if request.problem.id == self.refused and self.refused_at is None:
            self.refused_at = now
            raise GenerationError("HTTP 503: server overloaded", retryable=True)
        self.starts.append((now, request.problem.id))
        return await super().generate(request)


def test_a_request_backing_off_an_overload_leaves_its_room_to_waiting_trees(problems):
    # Before: the refused request's tree claimed its wave again, then slept its backoff
    # holding it, so the waves waiting at the gate waited too and the engine sat idle
    # (a third of a prober's run had nothing in flight while waves waited)
    first = problems[0].id
    policy = RefusesOnce(first)
    config = RunConfig.model_validate({**NO_PILOT, "search": {"budget": 24},
                                       "executor": {"retry_backoff_s": 1.5, "max_attempts": 3}})
    driver = Driver(config, InlineExecutor(policy, config.executor), None)
    asyncio.run(driver.run(problems[:4]))
    retried = min(t for t, pid in policy.starts if pid == first)
    meanwhile = [pid for t, pid in policy.starts if policy.refused_at < t < retried]
    assert retried - policy.refused_at >= 1.4
    assert meanwhile and first not in meanwhile
    assert driver.stats.problems_done == 4 and driver.stats.problems_failed == 0


def test_where_sizing_settled_is_in_the_manifest_and_the_summary(tmp_path, problems, capsys):
    s = prmtree.run(problems, policy=Engine(latency_s=0.002, batch_capacity=16), out=tmp_path / "o",
                    config={**NO_PILOT, "search": {"budget": 24}})
    sizing = s.stats["driver"]["sizing"]
    assert sizing["capacity"] == 16 and sizing["limit"] == 20 and sizing["decreases"] == 0
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["stats"]["driver"]["sizing"] == sizing
    print_summary(s, None)
    assert "20 (20), backend capacity 16" in capsys.readouterr().out
