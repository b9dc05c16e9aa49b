"""Issue 21: when one driver's core cannot feed the engine, the run says so.

The driver's event loop is watched in windows (engine/loop_load.py); a run whose loop was
saturated for much of it ends with a warning naming the remedy (several drivers), and a
run that waited on its backend does not.
"""

from __future__ import annotations

import asyncio
import threading
import time
import types

import pytest
from prmtree.engine import loop_load
from prmtree.engine.loop_load import LoopLoad
from prmtree.engine.stats import RunStats
from prmtree.engine.synthetic import generate_problems
from prmtree.policies.simulated import SimulatedPolicy

import prmtree
from prmtree import summary as summary_module
from prmtree.summary import pace_warnings, print_summary


class _Clocks:
    """A wall clock and a CPU clock the test moves by hand."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def run(self, wall: float, cpu: float) -> None:
        self.wall += wall
        self.cpu += cpu


def test_a_window_counts_as_saturated_only_when_its_cpu_nearly_fills_it():
    clocks = _Clocks()
    load = LoopLoad(window_s=1.0, saturated=0.95, clocks=(lambda: clocks.wall, lambda: clocks.cpu))
    load.tick()  # opens the first window
    clocks.run(0.6, 0.6)
    load.tick()  # too short to close: nothing counted yet
    assert load.as_dict() == {"loops": 1, "loop_watched_s": 0.0, "loop_saturated_s": 0.0}
    clocks.run(0.6, 0.55)  # 1.2 s with 1.15 s on a CPU: 96% -> saturated
    load.tick()
    assert load.as_dict() == {"loops": 1, "loop_watched_s": 1.2, "loop_saturated_s": 1.2}
    clocks.run(2.0, 1.8)  # 90%: waited for something, not saturated
    load.tick()
    assert load.as_dict() == {"loops": 1, "loop_watched_s": 3.2, "loop_saturated_s": 1.2}
    clocks.run(1.0, 0.1)
    load.tick()
    assert load.as_dict() == {"loops": 1, "loop_watched_s": 4.2, "loop_saturated_s": 1.2}


def test_the_loops_idle_time_is_what_it_spends_in_select_and_select_is_put_back():
    load = LoopLoad(window_s=0.05)
    loop = asyncio.new_event_loop()
    try:
        selector = loop._selector
        theirs = selector.select  # another wrapper, already in place, comes back afterwards
        selector.select = theirs
        load.watch(loop)
        assert selector.select is not theirs
        loop.run_until_complete(asyncio.sleep(0.2))  # idle: blocked in select
        assert 0.15 <= load.idle_s <= 1.0
        load.unwatch()
        assert selector.select is theirs
        del selector.select
        load.watch(loop)
        load.unwatch()
        assert "select" not in vars(selector)  # the class's own select again
        load.watch(loop)
        ours = selector.select
        selector.select = lambda timeout=None: ours(timeout)  # someone wraps over ours
        later = selector.select
        load.unwatch()
        assert selector.select is later  # theirs is not torn out from under them
        load.watch(loop)  # watched again under theirs: ours, left below, no longer counts
        before = load.idle_s
        loop.run_until_complete(asyncio.sleep(0.1))
        assert 0.08 <= load.idle_s - before <= 0.17  # counted once, not twice (0.2)
        load.unwatch()
    finally:
        loop.close()


def test_a_loop_without_a_selectors_module_selector_is_not_wrapped():
    """uvloop has none; Windows' proactor runs callbacks inside its select: CPU time instead."""

    class Proactorish:
        def select(self, timeout=None):
            return []

    fake = types.SimpleNamespace(_selector=Proactorish())
    load = LoopLoad()
    load.watch(fake)
    assert "select" not in vars(fake._selector)
    load.unwatch()  # nothing to put back, nothing raised
    assert load.as_dict()["loop_watched_s"] == 0.0


def test_a_loop_starved_of_the_gil_still_counts_as_saturated():
    """Time the loop could not run (another thread held the GIL, another process its core)
    is not time it waited for the engine: its CPU time alone would read half busy."""
    load = LoopLoad(window_s=0.1)
    stop = threading.Event()

    def hog() -> None:
        while not stop.is_set():
            pass

    async def busy_loop() -> None:
        load.watch(asyncio.get_running_loop())
        try:
            end = time.perf_counter() + 0.6
            while time.perf_counter() < end:
                sum(range(2000))  # work on the loop, never waiting
                load.tick()
                await asyncio.sleep(0)  # a loop turn (select with a zero timeout)
        finally:
            load.unwatch()

    thread = threading.Thread(target=hog)
    cpu = time.thread_time()
    thread.start()
    try:
        asyncio.run(busy_loop())
    finally:
        stop.set()
        thread.join()
    cpu = time.thread_time() - cpu
    assert load.watched_s >= 0.4
    assert load.saturated_s == load.watched_s
    assert cpu < 0.85 * load.watched_s + 0.2  # the loop thread's CPU time would not have said so


def test_the_warning_needs_enough_saturated_seconds_and_share():
    stats = RunStats()
    stats.driver = {"loop_watched_s": 100.0, "loop_saturated_s": 40.0}
    assert pace_warnings(stats) == []  # 40% of the run: below the share
    stats.driver = {"loop_watched_s": 12.0, "loop_saturated_s": 8.0}
    assert pace_warnings(stats) == []  # most of it, but too short to say
    stats.driver = {"loop_watched_s": 100.0, "loop_saturated_s": 61.0}
    [warning] = pace_warnings(stats)
    assert warning.startswith("the driver's event loop was saturated for 61 of 100 s watched")
    assert "--executor inline --drivers N" in warning and "--executor ray --drivers N" in warning
    assert pace_warnings(RunStats()) == []  # a manifest from before the counters: nothing said
    stats.driver = {"loops": 4, "loop_watched_s": 380.0, "loop_saturated_s": 360.0}  # a --drivers 4 job
    [warning] = pace_warnings(stats)
    assert warning.startswith("the 4 drivers' event loops were saturated for 360 of 380 s watched (added over")
    assert "--drivers above 4" in warning
    stats.driver = {"loops": 4, "loop_watched_s": 40.0, "loop_saturated_s": 30.0}  # 7.5 s each: too short
    assert pace_warnings(stats) == []


def test_several_drivers_loads_add_up():
    a, b = RunStats(), RunStats()
    a.driver = {"loops": 1, "loop_watched_s": 10.0, "loop_saturated_s": 9.0}
    b.driver = {"loops": 1, "loop_watched_s": 20.0, "loop_saturated_s": 1.5}
    assert (a + b).driver == {"loops": 2, "loop_watched_s": 30.0, "loop_saturated_s": 10.5}


class _BusyPolicy(SimulatedPolicy):
    """Its answers cost the event loop CPU and never wait: the loop sets the pace."""

    async def generate(self, request):
        until = time.thread_time() + 0.0005
        while time.thread_time() < until:
            pass
        return self.complete(request)


class _WaitingPolicy(SimulatedPolicy):
    """Its answers take 2 ms of waiting and no CPU: the backend sets the pace."""

    async def generate(self, request):
        await asyncio.sleep(0.002)
        return self.complete(request)


@pytest.fixture
def short_windows(monkeypatch):
    monkeypatch.setattr(loop_load, "WINDOW_S", 0.1)
    monkeypatch.setattr(summary_module, "PACE_WARN_S", 0.3)


def test_a_run_whose_loop_set_the_pace_warns_in_its_summary(tmp_path, short_windows, capsys):
    s = prmtree.run(generate_problems(60, seed=3), policy=_BusyPolicy(), out=tmp_path / "o", seed=0)
    load = s.driver
    assert load["loop_saturated_s"] >= 0.3, load
    assert load["loop_saturated_s"] >= 0.5 * load["loop_watched_s"], load
    print_summary(s, None)
    text = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "warning: the driver's event loop was saturated for" in text
    assert s.stats["driver"] == load  # in the manifest's stats too


def test_a_run_that_waited_on_its_backend_does_not_warn(tmp_path, short_windows, capsys):
    s = prmtree.run(generate_problems(30, seed=3), policy=_WaitingPolicy(), out=tmp_path / "o", seed=0,
                    config={"executor": {"trees_in_flight": 1}})
    load = s.driver
    assert load["loop_watched_s"] >= 0.2, load  # windows were watched...
    assert load["loop_saturated_s"] == 0.0, load  # ... and the loop waited in every one
    assert pace_warnings(s) == []
    print_summary(s, None)
    assert "saturated" not in capsys.readouterr().out
