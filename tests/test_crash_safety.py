"""Long cluster jobs (issue 11): one writer per slice, one slice layout per directory,
verified shards, graceful SIGTERM / SIGINT, a circuit breaker, a policy that blocks the
event loop, and one-line errors for I/O failures. Real processes and real signals."""

import asyncio
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import PRMTREE, cli, completed, rows, run_until_stuck, wait_for

import prmtree
from prmtree.engine.errors import ConfigError
from prmtree.engine.config import RunConfig
from prmtree.engine.lock import FileLock, is_locked
from prmtree.engine.output import UNLISTED, load_manifest, verify_run
from prmtree.engine.synthetic import generate_problems, write_jsonl
from prmtree.policies.simulated import SimulatedPolicy
from prmtree.engine.errors import BackendDownError
from prmtree.rollout_workers.inline import EventLoopBlocked

TABLES = ("steps", "nodes", "pairs", "errors")
# Small trees, frequent flushes, few trees in flight: a run of 120 problems at 0.05 s per
# request takes several seconds, with many flushes to stop between.
SLOW_TOML = "[search]\nbudget = 40\n[executor]\ntrees_in_flight = 4\n[output]\nflush_interval_s = 0.2\n"


def one_line_error(r, code=2):
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prmtree: error: "), r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def long_job(tmp_path_factory):
    """120 problems, the run config, and an uninterrupted run's output to compare with."""
    base = tmp_path_factory.mktemp("slow")
    data = write_jsonl(generate_problems(120, seed=31), base / "data")
    (base / "slow.toml").write_text(SLOW_TOML)
    reference = base / "reference"
    prmtree.run(data, out=reference, config=str(base / "slow.toml"), seed=5)
    return base, data, reference


def run_args(long_job, out, latency=0.05, *extra):
    base, data, _ = long_job
    return [*PRMTREE, "run", "--input", str(data), "--out", str(out), "--no-progress", "--seed", "5",
            "--config", str(base / "slow.toml"), "--policy-arg", f"latency_s={latency}", *map(str, extra)]


def same_rows(out, reference):
    for table in TABLES:
        assert rows(out, table) == rows(reference, table), table


# -- one writer per slice -----------------------------------------------------------------


@pytest.mark.slow
def test_a_second_writer_exits_at_once_naming_the_holder_and_a_dead_holders_lock_is_taken_over(long_job, tmp_path):
    out = tmp_path / "o"
    first = subprocess.Popen(run_args(long_job, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: completed(out) >= 1)
        assert is_locked(out / ".manifest.json.lock")
        t = time.monotonic()
        second = subprocess.run(run_args(long_job, out), capture_output=True, text=True, timeout=60)
        assert time.monotonic() - t < 20 and first.poll() is None  # refused at once, the first still running
        line = one_line_error(second)
        assert "is being written by another prmtree run" in line
        assert f"pid {first.pid} on host {socket.gethostname()}, started " in line
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    # the kernel dropped the dead run's lock: the same command takes over and finishes
    r = subprocess.run(run_args(long_job, out, 0), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    same_rows(out, long_job[2])
    holder = json.loads((out / ".manifest.json.lock").read_text())
    assert holder["pid"] != first.pid and holder["host"] == socket.gethostname()


def test_the_lock_is_per_slice_and_released_when_the_run_ends(tmp_path):
    problems = generate_problems(6, seed=1)
    with FileLock(tmp_path / ".manifest-00000-of-00002.json.lock").acquire():  # slice 0/2 is being written
        with pytest.raises(ConfigError, match=r"\(--slice 0/2\) is being written by another prmtree run: pid "):
            prmtree.run(problems, out=tmp_path, slice="0/2")
        prmtree.run(problems, out=tmp_path, slice="1/2")  # another slice of the same layout: fine
    prmtree.run(problems, out=tmp_path, slice="0/2")
    assert not is_locked(tmp_path / ".manifest-00000-of-00002.json.lock")


# -- one slice layout per directory ----------------------------------------------------------


@pytest.mark.slow
def test_another_slice_layout_in_the_same_directory_is_refused_in_one_line(tmp_path, problems_file):
    out = tmp_path / "o"
    r = cli("run", "--input", problems_file, "--out", out, "--no-progress", "--slice", "0/2")
    assert r.returncode == 0, r.stderr
    line = one_line_error(cli("run", "--input", problems_file, "--out", out, "--no-progress", "--slice", "1/3"))
    assert "holds slices of 2 (--slice i/2)" in line and "this run is --slice 1/3" in line and "use --slice i/2" in line
    line = one_line_error(cli("run", "--input", problems_file, "--out", out, "--no-progress"))
    assert "this run is unsharded" in line
    assert cli("run", "--input", problems_file, "--out", out, "--no-progress", "--slice", "1/2").returncode == 0


def test_a_layout_being_written_now_counts_before_its_first_manifest(tmp_path):
    with FileLock(tmp_path / ".manifest-00001-of-00004.json.lock").acquire():
        with pytest.raises(ConfigError, match=r"a run writing manifest-00001-of-00004.json now"):
            prmtree.run(generate_problems(2), out=tmp_path)
    prmtree.run(generate_problems(2), out=tmp_path)  # that run is gone and wrote nothing: free


# -- verified shards ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("small") / "reference"
    prmtree.run(generate_problems(30, seed=8), out=out, config=SMALL_SHARDS)
    return out


SMALL_SHARDS = {"search": {"budget": 40}, "output": {"rows_per_shard": 25}}


def damaged_copy(small_reference, tmp_path, table, how):
    out = tmp_path / "o"
    shutil.copytree(small_reference, out)
    manifest = json.loads((out / "manifest.json").read_text())  # raw, to damage it
    listed = [s for s in manifest["shards"] if s["table"] == table]
    shard = listed[len(listed) // 2]
    path = out / shard["file"]
    if how == "delete":
        path.unlink()
    elif how == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "rows":
        for s in manifest["shards"]:
            if s["file"] == shard["file"]:
                s["rows"] += 1
        (out / "manifest.json").write_text(json.dumps(manifest))
    return out, shard["file"]


@pytest.mark.slow
@pytest.mark.parametrize("table, how, says", [
    ("steps", "delete", "missing"),
    ("nodes", "flip", "content changed (sha256 differs from the manifest)"),
    ("pairs", "rows", "rows, the manifest says"),
])
def test_a_damaged_shard_is_found_refused_and_its_problems_redone_on_resume(
        small_reference, tmp_path, table, how, says):
    out, bad = damaged_copy(small_reference, tmp_path, table, how)
    [damage] = verify_run(out)
    assert damage.file == bad and says in damage.problem
    r = cli("verify", out)
    assert r.returncode == 1 and f"manifest.json: DAMAGED: {bad}: " in r.stdout and says in r.stdout
    for command in (("inspect", out), ("export", out, "--format", "jsonl", "--to", tmp_path / "x.jsonl")):
        line = one_line_error(cli(*command))
        assert "is damaged" in line and bad in line and "prmtree verify" in line
    s = prmtree.run(generate_problems(30, seed=8), out=out, config=SMALL_SHARDS)
    assert 0 < s.rollouts_this_session < s.rollouts  # only the bad flush's problems were redone
    same_rows(out, small_reference)
    assert verify_run(out) == [] and cli("verify", out).returncode == 0
    manifest = load_manifest(out / "manifest.json")
    assert len(manifest.completed) == len(set(manifest.completed)) == 30
    assert manifest.stats["problems_done"] == 30  # the dropped problems are not counted twice
    listed = {s["file"] for s in manifest.shards}
    assert {f"{p.parent.name}/{p.name}" for p in out.glob("*/*.parquet")} == listed


class StopsWhenAllStarted(SimulatedPolicy):
    """Sends its own process a SIGTERM once every problem has asked for rollouts: the stop
    comes after the last problem started (as ``ray job stop`` or a scheduler would)."""

    def __init__(self, problems: int):
        super().__init__(latency_s=0.02)
        self.problems, self.seen, self.sent = problems, set(), False

    async def generate(self, request):
        self.seen.add(request.problem.id)
        if len(self.seen) == self.problems and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)
        return await super().generate(request)


@pytest.mark.parametrize("stop_at", [6, 5])
def test_a_stop_after_the_last_problem_started_ends_a_complete_run(tmp_path, capsys, stop_at):
    """Every problem had started when the stop came, and all finished: the run is complete
    (manifest finished, exportable, exit 0), not one that a pointless rerun must finish.
    A stop when 5 of 6 had started (the last waiting for room) leaves a run to resume."""
    policy = StopsWhenAllStarted(stop_at)
    s = prmtree.run(generate_problems(6, seed=31), policy=policy, out=tmp_path / "o", seed=5,
                    config={"labels": {"learn_floor": False}, "executor": {"trees_in_flight": 4}})
    manifest = load_manifest(tmp_path / "o" / "manifest.json")
    said = "every problem had started before the SIGTERM and all of them finished: the run is complete"
    assert policy.sent and verify_run(tmp_path / "o") == []
    if stop_at == 6:
        assert s.stopped_by is None and s.problems_done == 6 and said in capsys.readouterr().err
        assert manifest.status == "finished" and len(manifest.completed) == 6
    else:
        assert s.stopped_by == signal.SIGTERM and s.problems_done == 5 and said not in capsys.readouterr().err
        assert manifest.status == "running" and len(manifest.completed) == 5


@pytest.mark.slow
def test_one_stop_delivered_twice_at_once_lets_the_trees_in_flight_finish(long_job, tmp_path):
    """GNU ``timeout`` signals the process and then its process group: the same SIGTERM
    twice, moments apart. Counted once: the trees in flight finish (they were cancelled
    as by a second stop)."""
    out = tmp_path / "o"
    proc = subprocess.Popen(run_args(long_job, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: completed(out) >= 3)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)  # the second arrives after the first was handled (it may merge with a pending one)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "SIGTERM again" not in stderr and "cancelling" not in stderr, stderr
    in_flight = int(re.search(r"finishing the (\d+) in flight", stderr).group(1))
    assert in_flight >= 1, stderr
    manifest = load_manifest(out / "manifest.json")
    assert len(manifest.completed) >= 3 + in_flight  # every tree in flight finished and was saved
    assert verify_run(out) == []


@pytest.mark.slow
def test_verify_reports_every_slice_and_mixed_or_overlapping_slices(tmp_path, problems_file):
    out = tmp_path / "o"
    for shard in ("0/2", "1/2"):
        assert cli("run", "--input", problems_file, "--out", out, "--no-progress", "--slice", shard).returncode == 0
    r = cli("verify", out)
    assert r.returncode == 0, r.stdout
    assert [line.split(":")[0:2] for line in r.stdout.splitlines()] == [
        ["manifest-00000-of-00002.json", " OK"], ["manifest-00001-of-00002.json", " OK"]]
    # a manifest of another layout smuggled in (as an older prmtree allowed): the union duplicates rows
    shutil.copy(out / "manifest-00000-of-00002.json", out / "manifest-00000-of-00003.json")
    r = cli("verify", out)
    assert r.returncode == 1 and "beside slices of another layout" in r.stdout and "also completed in" in r.stdout


# -- SIGTERM / SIGINT -----------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_then_two_sigints_stop_cleanly_and_resuming_gives_the_uninterrupted_rows(long_job, tmp_path):
    out = tmp_path / "o"
    # 1. SIGTERM: no new problems, the ones in flight finish, everything is flushed, exit 143
    proc = subprocess.Popen(run_args(long_job, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: completed(out) >= 3)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "SIGTERM: taking no new problems" in stderr and "stopped by SIGTERM" in stderr
    assert "Traceback" not in stderr and "problems done" in stdout  # the summary is printed
    manifest = load_manifest(out / "manifest.json")
    assert 3 <= len(manifest.completed) < 120 and manifest.status == "running"
    assert manifest.stats["problems_done"] == len(manifest.completed)  # all finished ones saved
    assert verify_run(out) == []
    # 2. SIGINT twice: the second cancels the trees in flight at once, exit 130
    before = len(manifest.completed)
    proc = subprocess.Popen(run_args(long_job, out, 0.3), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: completed(out) >= before + 3)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.4)  # a second stop, not the first delivered twice (ECHO_WINDOW_S)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "SIGINT again: cancelling the problems in flight" in stderr and "Traceback" not in stderr
    assert verify_run(out) == []
    # 3. the same command finishes the job: the rows of an uninterrupted run, none twice
    r = subprocess.run(run_args(long_job, out, 0), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    same_rows(out, long_job[2])
    manifest = load_manifest(out / "manifest.json")
    assert len(manifest.completed) == len(set(manifest.completed)) == 120
    assert manifest.status == "finished"


@pytest.mark.parametrize("cancel", [False, True])
def test_driver_request_stop_takes_no_new_problems(cancel):
    from prmtree.engine.driver import Driver
    from prmtree.rollout_workers.inline import InlineExecutor

    in_flight = []

    def stop_after_two(finished, stats):
        if stats.problems_done == 2 and not in_flight:
            in_flight.append(driver.request_stop(cancel=cancel))

    # a pilot of one problem: the others start three at a time once it has learned
    config = RunConfig.model_validate({"executor": {"trees_in_flight": 3}, "labels": {"pilot_problems": 1}})
    driver = Driver(config, InlineExecutor(SimulatedPolicy(latency_s=0.01)), None, on_problem=stop_after_two)
    stats = asyncio.run(driver.run(iter(generate_problems(20, seed=4))))
    # draining: the trees in flight finish, no new one starts; cancelling: they are dropped.
    # Trees that finished in the same step as the second (not in flight, not yet counted)
    # are saved either way: at most trees_in_flight (3) beyond the two, never the 20.
    assert in_flight
    assert 2 <= stats.problems_done <= 2 + 3 - (in_flight[0] if cancel else 0) < 20


@pytest.mark.parametrize("pilot", [True, False])
def test_a_first_sigterm_says_what_becomes_of_the_trees_in_flight(pilot, capsys):
    """During the pilot the trees in flight are dropped, not finished (they are labelled with
    what the pilot learns); the message must say so, not promise to finish them."""
    from prmtree.engine.driver import Driver
    from prmtree.engine.stats import RunStats
    from prmtree.rollout_workers.inline import InlineExecutor
    from prmtree.runner import _GracefulStop

    labels = {"pilot_problems": 4} if pilot else {"learn_floor": False}
    config = RunConfig.model_validate({"executor": {"trees_in_flight": 3}, "labels": labels})
    driver = Driver(config, InlineExecutor(SimulatedPolicy(latency_s=0.01)), None)
    stop = _GracefulStop(None, RunStats())
    stop.driver = driver

    async def main():
        run = asyncio.ensure_future(driver.run(iter(generate_problems(20, seed=4))))
        while len(driver._in_flight) < 3:
            await asyncio.sleep(0.001)
        stop._on_signal(signal.SIGTERM)
        return await run

    stats = asyncio.run(main())
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    if pilot:
        assert line == ("prmtree: SIGTERM: taking no new problems; the pilot is not finished, so its 3 trees in "
                        "flight are dropped and the next run pilots again")
        assert stats.problems_done == 0
    else:
        assert line == ("prmtree: SIGTERM: taking no new problems, finishing the 3 in flight "
                        "(send it again to stop at once)")
        assert stats.problems_done == 3


def test_a_signal_after_a_failed_final_flush_claims_nothing_and_its_echo_is_one(capsys):
    """A full disk at the final flush: the first SIGTERM cuts its wait short (one last try),
    the same signal delivered again at once is that one (not a second stop), and one while
    the policy closes does not say "everything finished is saved" when the flush failed."""
    from prmtree.engine.stats import RunStats
    from prmtree.runner import _GracefulStop

    stop = _GracefulStop(None, RunStats())
    stop.finishing = True  # the final flush is failing and waits for space
    stop._on_signal(signal.SIGTERM)
    stop._on_signal(signal.SIGTERM)  # GNU timeout: the process, then its group
    assert stop.stopping.is_set()
    said = capsys.readouterr().err
    assert said.count("SIGTERM") == 1 and "the final flush is not waited for" in said, said
    stop.closing = asyncio.Event()  # the last try failed too: the policy is closed on the way out
    time.sleep(0.3)
    stop._on_signal(signal.SIGTERM)
    assert capsys.readouterr().err.strip() == "prmtree: SIGTERM: not waiting for the policy to close"
    saved = _GracefulStop(None, RunStats())
    saved.closing, saved.saved = asyncio.Event(), True
    saved._on_signal(signal.SIGINT)
    assert capsys.readouterr().err.strip() == (
        "prmtree: SIGINT: everything finished is saved; not waiting for the policy to close")


class _Stops:
    """A driver that records its stops (cancel flags) and a writer whose flush takes a while."""

    def __init__(self, flush_s=0.0):
        self.calls, self.flush_s = [], flush_s

    def pilot_unlearned(self):
        return False

    def request_stop(self, cancel=False):
        self.calls.append(cancel)
        return 3

    def flush(self, stats):
        time.sleep(self.flush_s)


@pytest.mark.parametrize("sig, second_cancels", [(signal.SIGTERM, False), (signal.SIGINT, True)])
def test_an_echo_is_told_by_when_it_arrived_not_by_when_the_loop_got_to_it(sig, second_cancels, capsys):
    """GNU timeout's two SIGTERMs, microseconds apart, while the first one's flush takes
    0.4 s: one stop (before: the echo, handled after the flush, cancelled the trees in
    flight). Two quick Ctrl-Cs are a person's: the second cancels."""
    from prmtree.engine.stats import RunStats
    from prmtree.runner import _GracefulStop

    driver = _Stops(flush_s=0.4)

    async def main():
        stop = _GracefulStop(driver, RunStats())
        stop.install(driver)
        os.kill(os.getpid(), sig)
        os.kill(os.getpid(), sig)
        await asyncio.sleep(0.8)
        stop.uninstall()

    asyncio.run(main())
    assert driver.calls == ([False, True] if second_cancels else [False]), capsys.readouterr().err


def test_a_job_s_driver_process_acts_on_every_forwarded_sigterm(capsys):
    """A job forwards a quick second Ctrl-C to its driver processes as a second SIGTERM,
    0.05-0.1 s after the first: the driver cancels (before: taken for an echo, and the job's
    "the drivers cancel the problems in flight" was not true)."""
    from prmtree.engine.stats import RunStats
    from prmtree.runner import _GracefulStop

    driver = _Stops()

    async def main():
        stop = _GracefulStop(None, RunStats(), merge_echoes=False)
        stop.install(driver)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.3)
        stop.uninstall()

    asyncio.run(main())
    assert driver.calls == [False, True]


def test_stops_a_job_forwards_are_never_taken_for_echoes():
    """A driver's stops come through StopHandle, already told apart by the job: two in a row
    (held while the run started) are two stops."""
    from prmtree.engine.stats import RunStats
    from prmtree.runner import StopHandle, _GracefulStop

    driver = _Stops()

    async def main():
        handle = StopHandle()
        handle.request(signal.SIGTERM)
        handle.request(signal.SIGTERM)
        stop = _GracefulStop(None, RunStats())
        stop.driver = driver
        handle._bind(stop, asyncio.get_running_loop())
        await asyncio.sleep(0.05)

    asyncio.run(main())
    assert driver.calls == [False, True]


def test_a_job_of_drivers_that_all_completed_is_not_stopped():
    from prmtree.engine.stats import RunStats
    from prmtree.multi_driver import merge_summaries
    from prmtree.runner import RunSummary

    def done(stopped_by=None):
        return RunSummary(out=None, run_stats=RunStats(problems_done=3), stopped_by=stopped_by)

    assert merge_summaries({0: done(), 1: done()}, {}, 2, None, signal.SIGTERM, time.time()).stopped_by is None
    one_stopped = {0: done(), 1: done(signal.SIGTERM)}
    assert merge_summaries(one_stopped, {}, 2, None, signal.SIGTERM, time.time()).stopped_by == signal.SIGTERM


def test_a_drivers_job_s_first_sigterm_says_a_pilot_not_finished_is_dropped(capsys):
    from prmtree.multi_driver import JobSignals

    signals = JobSignals(4)
    signals._on_signal(signal.SIGTERM, None)
    assert capsys.readouterr().err.strip() == (
        "prmtree: SIGTERM: the 4 drivers take no new problems and finish those in flight; a pilot not finished "
        "is dropped and the next run pilots again (send it again to stop at once)")
    assert signals.take() == [signal.SIGTERM]
    signals._on_signal(signal.SIGTERM, None)  # the same stop, to the job's process group too
    assert capsys.readouterr().err == "" and signals.take() == []
    time.sleep(0.3)  # past ECHO_WINDOW_S: a second stop
    signals._on_signal(signal.SIGTERM, None)
    assert "SIGTERM again: the drivers cancel" in capsys.readouterr().err
    assert signals.take() == [signal.SIGTERM]
    signals._on_signal(signal.SIGTERM, None)  # the second one's echo: not the default action (death)
    assert capsys.readouterr().err == "" and signals.take() == []


# -- circuit breaker ---------------------------------------------------------------------------------


class DeadAfter(SimulatedPolicy):
    """Answers ``good`` requests, then every request fails: a backend that went down (or,
    ``hang``, one alive but answering nothing, as under SIGSTOP)."""

    def __init__(self, good, hang=False):
        super().__init__()
        self._good = good
        self._hang = hang
        self._calls = 0

    async def generate(self, request):
        self._calls += 1
        if self._calls > self._good:
            if self._hang:
                await asyncio.sleep(3600)
            raise ConnectionError("connection refused")
        return await super().generate(request)


def test_the_circuit_breaker_stops_a_run_whose_requests_all_fail_and_saves_what_finished(tmp_path):
    policy = DeadAfter(good=300)  # the good count is private: the resume below is the same config
    config = {"search": {"budget": 40}, "executor": {"breaker_window": 20, "retry_backoff_s": 0.001,
                                                     "trees_in_flight": 4}}
    with pytest.raises(BackendDownError, match=r"the last 20 requests all failed, the latest with "
                                               r"ConnectionError: connection refused"):
        prmtree.run(generate_problems(100, seed=2), policy=policy, out=tmp_path, config=config)
    assert policy._calls < 300 + 40  # stopped soon after the outage began, not after 100 x 3 attempts
    manifest = load_manifest(tmp_path / "manifest.json")
    assert 0 < len(manifest.completed) < 100 and verify_run(tmp_path) == []
    # the backend is back: the same call finishes the rest; the breaker setting may change on resume
    config["executor"]["breaker_window"] = 0
    s = prmtree.run(generate_problems(100, seed=2), policy=DeadAfter(good=10**9), out=tmp_path, config=config)
    assert s.problems_done == 100 and s.retry_pending == 0


def test_a_hung_backend_trips_the_breaker_after_three_timeouts_of_silence_not_a_window_of_them(tmp_path):
    # Before: timeouts read as overload cut the concurrency to one request in flight, so the
    # 50 failures in a row took 50 timeouts (hours at the default 600 s) and failed problem
    # after problem meanwhile.
    policy = DeadAfter(good=200, hang=True)
    config = {"search": {"budget": 40}, "labels": {"learn_floor": False},
              "executor": {"request_timeout_s": 0.25, "retry_backoff_s": 0.001, "trees_in_flight": 4}}
    with pytest.raises(BackendDownError, match=r"circuit breaker: no request succeeded for [01] s \(the last [3-9] all "
                                               r"failed, the latest with GenerationError: policy timed out after "
                                               r"0.25 s\): a backend that answers nothing"):
        prmtree.run(generate_problems(100, seed=2), policy=policy, out=tmp_path, config=config)
    manifest = load_manifest(tmp_path / "manifest.json")
    assert 0 < len(manifest.completed) < 100 and len(manifest.failed) <= 4  # the trees in flight, at most
    assert verify_run(tmp_path) == []


def test_the_silence_rule_needs_three_failures_in_a_row_and_the_silence_both():
    from prmtree.engine.breaker import CircuitBreaker

    down = ConnectionError("down")
    b = CircuitBreaker(50, silence_s=30.0, now=0.0)
    b.record(down, now=100.0)
    b.record(down, now=101.0)  # two failures, long after the last success: one slow request is no outage
    b.record(None, now=102.0)
    for t in (103.0, 110.0, 131.0):  # three in a row, but 29 s since the success
        b.record(down, now=t)
    with pytest.raises(BackendDownError, match=r"no request succeeded for 30 s \(the last 4 all failed"):
        b.record(down, now=132.0)
    # a rate-limited server answers: 429s with Retry-After and a 503 a minute between them are no silence
    from prmtree.engine.errors import GenerationError

    limited = CircuitBreaker(50, silence_s=180.0, now=0.0)
    for t in range(0, 290, 10):
        limited.record(GenerationError("503", retryable=True) if t % 60 == 0 else
                       GenerationError("429", retryable=True, retry_after=10.0), now=float(t))
    off = CircuitBreaker(0, silence_s=1.0, now=0.0)  # window 0 disables the breaker, silence too
    for t in range(10):
        off.record(down, now=100.0 + t)


@pytest.mark.slow
def test_a_dead_backend_from_the_start_exits_1_naming_the_error(tmp_path, problems_file):
    r = cli("run", "--input", problems_file, "--out", tmp_path / "o", "--no-progress",
            "--policy", "openai", "--policy-arg", "base_url=http://127.0.0.1:9/v1", "--policy-arg", "model=m")
    assert r.returncode == 1, r.stderr
    # every pilot problem fails (16 problems x 3 attempts, before the breaker's 50): nothing
    # else starts, and the reason is named
    assert re.search(r"^prmtree: run stopped: the pilot learned nothing: all 16 of its problems failed \(e\.g\. "
                     r"GenerationError: .*ConnectError.*\), so no other problem was started", r.stderr, re.M), r.stderr
    assert "Traceback" not in r.stderr


def test_breaker_window_zero_disables_it_and_is_not_in_the_resume_hash(tmp_path):
    a = RunConfig.model_validate({"executor": {"breaker_window": 0}})
    assert a.config_hash() == RunConfig().config_hash()

    class Dead:
        async def generate(self, request):
            raise ConnectionError("down")

    config = {"executor": {"breaker_window": 0, "retry_backoff_s": 0.0, "max_attempts": 1},
              "labels": {"learn_floor": False}}  # no pilot, whose members all failing would stop the run
    s = prmtree.run(generate_problems(60, seed=2), policy=Dead(), out=tmp_path, config=config)
    assert s.problems_failed == 60 and s.retry_pending == 60


# -- a policy that blocks the event loop -------------------------------------------------------------


class Sleepy(SimulatedPolicy):
    """``time.sleep`` inside ``async def``: the event loop (and every timeout) stops."""

    name = "sleepy"

    def __init__(self, sleep_s):
        super().__init__()
        self.sleep_s = sleep_s
        self._blocked = 0

    async def generate(self, request):
        self._blocked += 1
        time.sleep(self.sleep_s)
        return await super().generate(request)


def test_a_policy_blocking_the_event_loop_past_the_timeout_stops_the_run_naming_it(tmp_path):
    config = {"executor": {"request_timeout_s": 0.1, "trees_in_flight": 16}}
    sleepy = Sleepy(0.3)
    with pytest.raises(EventLoopBlocked, match=r"policy 'sleepy': generate blocked the event loop for 0\.[3-9] s "
                                               r".*await asyncio\.sleep.*asyncio\.to_thread"):
        prmtree.run(generate_problems(20, seed=3), policy=sleepy, out=tmp_path, config=config)
    assert sleepy._blocked == 1  # stopped at the first block: no other request in flight blocked again
    assert verify_run(tmp_path) == []
    # under the timeout, a short synchronous stretch is allowed (a timeout far above 1 ms: a
    # loaded machine's own pauses must not count as the policy's)
    roomy = {"executor": {"request_timeout_s": 2.0, "trees_in_flight": 16}}
    s = prmtree.run(generate_problems(3, seed=3), policy=Sleepy(0.001), out=tmp_path / "ok", config=roomy)
    assert s.problems_done == 3


def test_timing_the_policy_keeps_cancellation_and_results_intact():
    from prmtree.engine.config import ExecutorConfig
    from prmtree.engine.records import Completion, GenerationRequest
    from prmtree.rollout_workers.inline import InlineExecutor

    cancelled = []

    class Answers:
        async def generate(self, request):
            await asyncio.sleep(0)
            return [Completion("\\boxed{42}", 1)]

    class Sleeps:
        async def generate(self, request):
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.append(request)
                raise

    config = ExecutorConfig(request_timeout_s=1.0)  # the policy is timed: a step over 1 s would stop the run
    request = GenerationRequest(generate_problems(1)[0], (), n=1)

    async def main():
        assert await InlineExecutor(Answers(), config).submit(request) == [Completion("\\boxed{42}", 1)]
        sleeps = InlineExecutor(Sleeps(), config)
        task = asyncio.ensure_future(sleeps.submit(request))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(sleeps.submit(request), 0.01)

    asyncio.run(main())
    assert len(cancelled) == 2  # each cancellation reached the policy's own await


# -- one-line errors --------------------------------------------------------------------------------------


def test_a_full_disk_is_one_line_and_leaves_a_consistent_directory(tmp_path, problems_file, monkeypatch, capsys):
    from prmtree import cli as cli_module
    from prmtree.engine.output import writer

    real = writer.pq.write_table
    calls = []

    def fills_up(table, where, **kw):
        calls.append(where)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(where))
        return real(table, where, **kw)

    monkeypatch.setattr(writer.pq, "write_table", fills_up)
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as exit_:
        cli_module.main(["run", "--input", str(problems_file), "--out", str(out), "--no-progress",
                         "--config", str(write_toml(tmp_path, "[output]\nrows_per_shard = 20\n"
                                                    "flush_give_up_s = 0\n"))])  # fail at once, no waiting
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert err.startswith("prmtree: error: no space left on device (") and "free some space" in err
    assert len(err.strip().splitlines()) == 1
    # what the manifest lists is whole; a shard renamed before the manifest update failed
    # is unlisted (the next run deletes it), the rest is redone
    assert [d for d in verify_run(out) if d.manifest != UNLISTED] == []


def write_toml(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="tmpfs")
def test_a_real_full_disk_and_a_read_only_out(tmp_path, problems_file):
    mounts = []
    try:
        for name, options in (("full", "size=64k"), ("ro", "ro,size=64k")):
            point = tmp_path / name
            point.mkdir()
            if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                              capture_output=True).returncode != 0:
                pytest.skip("cannot mount a tmpfs here (needs root)")
            mounts.append(point)
        data = write_jsonl(generate_problems(60, seed=1), tmp_path / "data")
        at_once = write_toml(tmp_path, "[output]\nflush_give_up_s = 0\n")  # the full disk is not waited out
        line = one_line_error(cli("run", "--input", data, "--out", mounts[0] / "o", "--no-progress",
                                  "--config", at_once))
        assert "no space left on device" in line
        line = one_line_error(cli("run", "--input", data, "--out", mounts[1] / "o", "--no-progress"))
        assert line == f"prmtree: error: cannot write to --out '{mounts[1] / 'o'}': Read-only file system"
    finally:
        for point in mounts:
            subprocess.run(["umount", str(point)], capture_output=True)


@pytest.mark.slow
def test_an_out_that_cannot_be_created_is_one_line(tmp_path, problems_file):
    (tmp_path / "file").write_text("x")
    line = one_line_error(cli("run", "--input", problems_file, "--out", tmp_path / "file" / "o", "--no-progress"))
    assert "cannot write to --out" in line and "Not a directory" in line
    if os.geteuid() != 0:  # root writes anyway
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        line = one_line_error(cli("run", "--input", problems_file, "--out", ro, "--no-progress"))
        assert "cannot write to --out" in line and "Permission denied" in line


@pytest.mark.slow
@pytest.mark.parametrize("text", ["{", "[]", '{"shards": 3}', "\xff\xfe"])
def test_a_corrupt_manifest_is_one_line_for_run_inspect_export_and_verify(tmp_path, problems_file, text):
    out = tmp_path / "o"
    assert cli("run", "--input", problems_file, "--out", out, "--no-progress").returncode == 0
    (out / "manifest.json").write_text(text, encoding="latin-1")
    line = one_line_error(cli("run", "--input", problems_file, "--out", out, "--no-progress"))
    assert "manifest.json is unreadable" in line
    for command in (("inspect", out), ("export", out, "--format", "jsonl", "--to", tmp_path / "x.jsonl")):
        assert "is damaged (manifest.json: unreadable" in one_line_error(cli(*command))
    r = cli("verify", out)
    assert r.returncode == 1 and r.stdout.startswith("manifest.json: DAMAGED: manifest.json: unreadable")


def _drop_shards(m):
    del m["shards"]


def _rows_as_text(m):
    m["shards"][0]["rows"] = "many"


def _drop_status(m):
    del m["status"]


@pytest.mark.slow
@pytest.mark.parametrize("damage, says", [(_drop_shards, "missing 'shards'"),
                                          (_rows_as_text, "rows is 'many', not a count"),
                                          (_drop_status, "missing 'status'")])
def test_a_manifest_missing_a_key_is_refused_and_deletes_nothing(tmp_path, problems_file, damage, says):
    # A manifest without its shard list once read as a run with no rows: the resume
    # deleted every shard as unlisted, and verify then passed on an empty dataset.
    out = tmp_path / "o"
    assert cli("run", "--input", problems_file, "--out", out, "--no-progress").returncode == 0
    manifest = json.loads((out / "manifest.json").read_text())  # raw, to damage it
    damage(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest))
    files = sorted(p.name for p in out.rglob("*.parquet"))
    line = one_line_error(cli("run", "--input", problems_file, "--out", out, "--no-progress"))
    assert "manifest.json is unreadable" in line and says in line
    assert sorted(p.name for p in out.rglob("*.parquet")) == files
    for command in (("inspect", out), ("export", out, "--format", "jsonl", "--to", tmp_path / "x.jsonl")):
        assert says in one_line_error(cli(*command))
    r = cli("verify", out)
    assert r.returncode == 1 and says in r.stdout


@pytest.mark.slow
def test_verify_reports_a_shard_no_manifest_lists(tmp_path, problems_file):
    out = tmp_path / "o"
    assert cli("run", "--input", problems_file, "--out", out, "--no-progress").returncode == 0
    assert cli("verify", out).returncode == 0
    shutil.copy(out / "steps" / "part-00000.parquet", out / "steps" / "part-00099.parquet")
    r = cli("verify", out)
    assert r.returncode == 1 and "steps/part-00099.parquet: DAMAGED: listed in no manifest" in r.stdout
    assert cli("inspect", out).returncode == 0  # it reads the listed shards only
    assert cli("run", "--input", problems_file, "--out", out, "--no-progress").returncode == 0  # deletes it
    assert not (out / "steps" / "part-00099.parquet").exists() and cli("verify", out).returncode == 0


@pytest.mark.slow
def test_export_to_an_existing_directory_is_one_line(tmp_path, problems_file):
    out = tmp_path / "o"
    assert cli("run", "--input", problems_file, "--out", out, "--no-progress").returncode == 0
    (tmp_path / "there").mkdir()
    one_line_error(cli("export", out, "--format", "jsonl", "--to", tmp_path / "there"))


STUCK_SCRIPT = """
import sys, time
import prmtree
from prmtree.engine.synthetic import generate_problems
from prmtree.policies.simulated import SimulatedPolicy

class Stuck(SimulatedPolicy):
    name = "stuck"

    async def generate(self, request):
        print("BLOCKING", flush=True)
        time.sleep(10**6)  # a synchronous call that never returns, inside async def

if __name__ == "__main__":
    prmtree.run(generate_problems(4, seed=3), policy=Stuck(), out=sys.argv[1],
                config={"executor": {"request_timeout_s": float(sys.argv[2])}})
"""


@pytest.mark.slow
@pytest.mark.parametrize("timeout_s, stop_with, status, said", [
    (1.0, None, 1, "it has held the loop for"),
    (600.0, signal.SIGTERM, 143, "SIGTERM arrived while it held the loop"),
    (600.0, signal.SIGINT, 130, "SIGINT arrived while it held the loop"),
])
def test_a_policy_that_blocks_the_loop_for_good_is_ended_and_obeys_signals(tmp_path, timeout_s, stop_with, status,
                                                                               said):
    # the loop never runs again, so neither a timeout nor the loop's signal handlers can act:
    # the run used to hang until SIGKILL
    returncode, stdout, stderr, elapsed = run_until_stuck(tmp_path, STUCK_SCRIPT, timeout_s, stop_with)
    assert returncode == status, stderr
    assert "policy 'stuck': generate blocks the event loop: " + said in stderr
    assert "run the same command again to resume" in stderr
    assert elapsed < (10 if stop_with is not None else timeout_s + 10)


@pytest.mark.slow
def test_verify_of_an_unreadable_manifest_does_not_promise_its_shards_will_be_deleted(tmp_path, problems_file):
    # Before: every shard was "listed in no manifest: the next run of its slice deletes it",
    # while that next run refuses the directory (exit 2) and deletes nothing.
    out = tmp_path / "o"
    assert cli("run", "--input", problems_file, "--out", out, "--no-progress").returncode == 0
    text = (out / "manifest.json").read_text()
    (out / "manifest.json").write_text(text[:500])
    r = cli("verify", out)
    assert r.returncode == 1 and r.stdout.startswith("manifest.json: DAMAGED: manifest.json: unreadable")
    assert "deletes it" not in r.stdout
    assert ("steps/part-00000.parquet: DAMAGED: its slice's manifest manifest.json cannot be read, so whether it "
            "lists this shard is unknown; the next run of that slice refuses the directory") in r.stdout
    files = sorted(p.name for p in out.rglob("*.parquet"))
    assert "manifest.json is unreadable" in one_line_error(cli("run", "--input", problems_file, "--out", out,
                                                                "--no-progress"))
    assert sorted(p.name for p in out.rglob("*.parquet")) == files


@pytest.mark.slow
def test_verify_of_a_run_being_written_names_the_running_prmtree(tmp_path):
    # Before: a run still going was "unfinished (run its command again to finish)", and
    # doing so was refused: the directory is being written by another prmtree run.
    data = write_jsonl(generate_problems(40, seed=31), tmp_path / "data")
    (tmp_path / "slow.toml").write_text(SLOW_TOML)
    out = tmp_path / "o"
    run = subprocess.Popen([*PRMTREE, "run", "--input", str(data), "--out", str(out), "--no-progress",
                            "--config", str(tmp_path / "slow.toml"), "--policy-arg", "latency_s=0.2"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: completed(out) >= 1)
        r = cli("verify", out)
        alive = run.poll() is None
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
    assert alive and r.returncode == 0, r.stdout
    assert f"; being written by a running prmtree (pid {run.pid} on host {socket.gethostname()}, started " in r.stdout
    assert "run its command again" not in r.stdout
    r = cli("verify", out)  # killed: nobody writes it now
    assert "being written by a running prmtree" not in r.stdout, r.stdout
    if "listed in no manifest" in r.stdout:  # the kill landed between a shard's rename and its manifest
        assert r.returncode == 1 and "the next run of its slice deletes it" in r.stdout, r.stdout
    else:
        assert r.returncode == 0 and r.stdout.rstrip().endswith("; unfinished (run its command again to finish)")


_FILE_SIZE_LIMIT = """
import resource, sys
from pathlib import Path
from prmtree.engine.output.atomic import write_text_atomic
from prmtree.engine.output.manifest import Manifest, append_log
resource.setrlimit(resource.RLIMIT_FSIZE, (40 << 10, 40 << 10))  # ``ulimit -f 40``: writes past it fail, EFBIG
out = Path(sys.argv[1])
for write in (lambda: write_text_atomic(out / "manifest.json", "x" * (80 << 10)),
              lambda: append_log(out, Manifest(config={}, config_hash="h", versions={}), "manifest.json",
                                 {"completed": ["p" * (80 << 10)]})):
    try:
        write()
    except OSError as exc:
        print(exc.errno, exc.filename)
"""


@pytest.mark.slow
def test_a_write_past_the_file_size_limit_names_its_file(tmp_path):
    # Before: "prmtree: error: File too large", with no file: a write to an open file
    # raises an OSError that names none.
    import errno as errnos

    r = subprocess.run([sys.executable, "-c", _FILE_SIZE_LIMIT, str(tmp_path)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"{errnos.EFBIG} {tmp_path / 'manifest.json'}",
                                     f"{errnos.EFBIG} {tmp_path / 'manifest.log.jsonl'}"]
    assert not (tmp_path / ".manifest.json.tmp").exists() and (tmp_path / "manifest.log.jsonl").stat().st_size == 0


@pytest.mark.slow
def test_a_run_past_the_file_size_limit_is_one_line_naming_the_file(tmp_path):
    import resource

    data = write_jsonl(generate_problems(40, seed=31), tmp_path / "data")
    out = tmp_path / "o"

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (20 << 10, 20 << 10))

    # no flush_give_up_s = 0: a file-size limit is not waited out (the same shard would fail again)
    started = time.monotonic()
    r = subprocess.run([*PRMTREE, "run", "--input", str(data), "--out", str(out), "--no-progress"],
                       capture_output=True, text=True, timeout=300, preexec_fn=limited)
    assert time.monotonic() - started < 60, "the file-size limit was waited out"
    assert "tried again" not in r.stderr, r.stderr
    line = one_line_error(r)
    assert re.search(rf"File too large \({re.escape(str(out))}/[^)]+\)$", line), line
