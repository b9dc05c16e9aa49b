"""Several driver processes around one policy, no Ray (``--executor inline --drivers N``):
the rows of one driver, a driver process killed, the job's process killed, a graceful
stop, errors that cross the socket, and the wire format itself."""

import asyncio
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import rows

import prmtree
from prmtree.cli import main
from prmtree.engine.errors import ConfigError, GenerationError
from prmtree.engine.output import Slice, load_manifest
from prmtree.engine.records import Completion, GenerationRequest, Problem
from prmtree.engine.synthetic import generate_problems, write_jsonl
from prmtree.local_drivers import drivers_for_capacity
from prmtree.policies.simulated import SimulatedPolicy
from prmtree.rollout_workers.host.wire import (
    FrameProtocol,
    decode_completions,
    decode_request,
    encode_completions,
    encode_request,
    frame,
    portable,
)

pytestmark = pytest.mark.slow  # each job starts driver processes (spawn: a fresh interpreter each)
TABLES = ("steps", "nodes", "pairs", "errors")
PROBLEMS = generate_problems(16, seed=31)
CONFIG = ("seed = 5\n[labels]\nlearn_floor = false\n[executor]\ntrees_in_flight = 4\nretry_backoff_s = 0.01\n"
          "[output]\nflush_interval_s = 0.1\n")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("local-drivers")
    config = folder / "run.toml"
    config.write_text(CONFIG)
    return {"input": write_jsonl(PROBLEMS, folder / "data"), "config": config}


def command(data, out, *more):
    return ["run", "--input", str(data["input"]), "--out", str(out), "--config", str(data["config"]),
            "--no-progress", *more]


@pytest.fixture(scope="module")
def one_driver(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    assert main(command(data, out)) == 0
    return out


def slice_manifests(out):
    return [load_manifest(p) for p in sorted(out.glob("manifest-*-of-*.json"))]


def test_two_driver_processes_write_the_rows_of_one_driver(data, one_driver, tmp_path):
    assert main(command(data, tmp_path, "--executor", "inline", "--drivers", "2")) == 0
    for table in TABLES:
        assert rows(tmp_path, table) == rows(one_driver, table), table
    manifests = slice_manifests(tmp_path)
    assert [m.slice for m in manifests] == [{"index": 0, "count": 2}, {"index": 1, "count": 2}]
    assert all(m.status == "finished" for m in manifests)
    assert sorted(pid for m in manifests for pid in m.completed) == sorted(p.id for p in PROBLEMS)
    for m in manifests:  # each driver reached the policy through the host, and sent each problem once
        ex = m.stats["executor"]
        assert ex["kind"] == "host" and ex["requests"] == m.stats["requests"] > 0
        assert ex["problems_sent"] == len(m.completed)
    assert not multiprocessing.active_children()  # the job waited for its driver processes


def test_a_killed_driver_process_is_named_and_the_same_command_finishes(data, one_driver, tmp_path, monkeypatch,
                                                                        capsys):
    from prmtree.progress import ProgressReporter

    killed = []
    show = ProgressReporter.progress

    def kill_driver_1(self, stats):
        victim = [p for p in multiprocessing.active_children() if p.name == "prmtree-driver-1"]
        if stats.problems_done >= 2 and not killed and victim:
            os.kill(victim[0].pid, signal.SIGKILL)
            killed.append(victim[0].pid)
        show(self, stats)

    monkeypatch.setattr(ProgressReporter, "progress", kill_driver_1)
    slow = ["--policy-arg", "latency_s=0.02"]  # an operational argument: the same rows, a resumable config
    with pytest.raises(SystemExit) as stop:
        main(command(data, tmp_path, "--executor", "inline", "--drivers", "2", *slow))
    assert stop.value.code == 1 and killed
    err = capsys.readouterr().err
    assert "the driver of slice 1/2 stopped early (slice 1/2: its process exited with code -9" in err, err
    assert "run the same command again" in err
    m0, m1 = slice_manifests(tmp_path)
    slice_1 = [p.id for p in PROBLEMS if Slice(1, 2).owns(p.id)]
    assert m0.status == "finished" and m1.status == "running" and len(m1.completed) < len(slice_1)

    monkeypatch.setattr(ProgressReporter, "progress", show)
    assert main(command(data, tmp_path, "--executor", "inline", "--drivers", "2", *slow)) == 0
    for table in TABLES:
        assert rows(tmp_path, table) == rows(one_driver, table), table
    assert all(m.status == "finished" for m in slice_manifests(tmp_path))


def test_kill_9_of_the_job_stops_its_drivers_with_their_work_saved(data, one_driver, tmp_path, monkeypatch, request):
    """The drivers run in their own process group, so nothing kills them with the job: they
    lose the host, save what they finished and exit; the same command then finishes, and
    removes the socket folder the killed job left."""
    import shutil
    import tempfile

    import psutil

    import prmtree.local_drivers as local_drivers

    args = [sys.executable, "-m", "prmtree", *command(data, tmp_path, "--executor", "inline", "--drivers", "2",
                                                       "--policy-arg", "latency_s=0.2")]
    temp = Path(tempfile.mkdtemp(prefix="pt-", dir="/tmp"))  # short: a socket's path has 108 bytes
    request.addfinalizer(lambda: shutil.rmtree(temp, ignore_errors=True))
    job = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "TMPDIR": str(temp)})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            manifests = slice_manifests(tmp_path)
            done = sum(len(m.completed) for m in manifests) if len(manifests) == 2 else 0
            if done >= 2 or job.poll() is not None:
                break
            time.sleep(0.05)
        assert job.poll() is None, job.stderr.read().decode()[-2000:]
        drivers = [p for p in psutil.Process(job.pid).children() if "spawn_main" in " ".join(p.cmdline())]
        assert len(drivers) == 2
        job.send_signal(signal.SIGKILL)
        job.wait(30)
        gone, alive = psutil.wait_procs(drivers, timeout=60)
        assert not alive, "driver processes outlived their job by a minute"
    finally:
        if job.poll() is None:
            job.kill()
        job.stderr.close()
    manifests = slice_manifests(tmp_path)
    assert all(m.status == "running" for m in manifests) and sum(len(m.completed) for m in manifests) >= 2
    left = list(temp.glob(f"prmtree-host-{job.pid}-*"))
    assert len(left) == 1 and (left[0] / "engine.sock").exists()  # a process killed so cannot clean up
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setattr(local_drivers, "SWEEP_AGE_S", 0.0)
    assert main(command(data, tmp_path, "--executor", "inline", "--drivers", "2")) == 0
    for table in TABLES:
        assert rows(tmp_path, table) == rows(one_driver, table), table
    assert list(temp.iterdir()) == []  # the rerun removed the dead job's folder, and its own


def test_sigterm_to_the_job_stops_every_driver_gracefully(one_driver, tmp_path):
    sent, reports = [], []

    def terminate(stats):
        reports.append(stats.problems_done)
        if not sent and stats.problems_done:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler would

    cfg = {"seed": 5, "labels": {"learn_floor": False}, "executor": {"kind": "inline", "trees_in_flight": 4}}
    s = prmtree.run(PROBLEMS, policy="simulated", policy_args={"latency_s": 0.05}, out=tmp_path, config=cfg,
                    drivers=2, on_progress=terminate)
    assert s.stopped_by == signal.SIGTERM and 0 < s.problems_done < len(PROBLEMS)
    assert reports[-1] == s.problems_done  # the last report is the summary's
    manifests = slice_manifests(tmp_path)
    assert "running" in [m.status for m in manifests]  # stopped, not finished: a rerun resumes
    for k, m in enumerate(manifests):  # a slice whose every problem had started when the stop came is complete
        assert m.status == "running" or set(m.completed) == {p.id for p in PROBLEMS if Slice(k, 2).owns(p.id)}
    done = {pid for m in manifests for pid in m.completed}
    assert len(done) == s.problems_done  # the trees in flight were finished and saved
    for table in TABLES:
        assert rows(tmp_path, table) == rows(one_driver, table, problems=done), table


class PickyPolicy(SimulatedPolicy):
    """Fails every request of one problem with an error that pickles, and of another with
    one that does not: both must reach the driver as that problem's failure."""

    def __init__(self) -> None:
        super().__init__(batch_capacity=64)
        self.bad, self.worse = PROBLEMS[0].id, PROBLEMS[1].id

    async def generate(self, request):
        if request.problem.id == self.bad:
            raise GenerationError("no such image today", retryable=False)
        if request.problem.id == self.worse:
            raise Unpicklable()
        return await super().generate(request)


class WrongTypePolicy(SimulatedPolicy):
    """Answers one problem with a string, not Completions: the host must say so at once,
    not leave the driver waiting for an answer that cannot travel."""

    async def generate(self, request):
        if request.problem.id == PROBLEMS[3].id:
            return "just text"
        return await super().generate(request)


def test_a_policy_that_breaks_the_contract_is_told_at_once_not_timed_out(tmp_path):
    cfg = {"seed": 5, "labels": {"learn_floor": False}, "executor": {"kind": "inline", "request_timeout_s": 60}}
    started = time.monotonic()
    s = prmtree.run(PROBLEMS, policy=WrongTypePolicy(), out=tmp_path, config=cfg, drivers=2)
    assert time.monotonic() - started < 50 and s.problems_done == len(PROBLEMS) - 1
    failed = {pid: why for m in slice_manifests(tmp_path) for pid, why in m.failed.items()}
    assert failed == {PROBLEMS[3].id: "policy: contract: simulated.generate must return a list of Completion, got str "
                                      "(not retryable)"}


def test_a_slice_that_refuses_the_run_is_a_refusal_in_one_line(data, tmp_path):
    """A driver's ConfigError (here: an input changed since its slice labelled it) is the
    job's: one line, exit 2, as with one driver."""
    import json

    assert main(command(data, tmp_path, "--executor", "inline", "--drivers", "2")) == 0
    import shutil

    changed = tmp_path.parent / f"{tmp_path.name}-input"
    shutil.copytree(data["input"].parent, changed)
    lines = data["input"].read_text().splitlines()
    row = json.loads(lines[0])
    row["question"] = "Now, " + row["question"]
    (changed / data["input"].name).write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")
    with pytest.raises(ConfigError, match=f"problem '{row['id']}' changed in the input since .* labelled it"):
        prmtree.run(str(changed / data["input"].name), out=tmp_path, config=str(data["config"]),
                    config_overrides={"executor": {"kind": "inline"}}, drivers=2)


class Unpicklable(Exception):
    def __init__(self) -> None:
        super().__init__("held a lock")
        self.lock = __import__("threading").Lock()


def test_a_policy_error_reaches_the_driver_of_its_problem(tmp_path):
    cfg = {"seed": 5, "labels": {"learn_floor": False},
           "executor": {"kind": "inline", "max_attempts": 2, "retry_backoff_s": 0.01}}
    s = prmtree.run(PROBLEMS, policy=PickyPolicy(), out=tmp_path, config=cfg, drivers=2)
    assert s.problems_done == len(PROBLEMS) - 2 and s.retry_pending == 2
    failed = {pid: why for m in slice_manifests(tmp_path) for pid, why in m.failed.items()}
    assert set(failed) == {PROBLEMS[0].id, PROBLEMS[1].id}
    assert "no such image today (not retryable)" in str(failed[PROBLEMS[0].id])
    assert "RuntimeError: Unpicklable: held a lock (after 2 attempts)" in str(failed[PROBLEMS[1].id])


def test_drivers_auto_follows_the_engine_capacity_and_the_cores():
    assert drivers_for_capacity(None, cores=16) == 1  # no declared capacity: one driver
    assert drivers_for_capacity(256, cores=16) == 1 and drivers_for_capacity(512, cores=16) == 1
    assert drivers_for_capacity(1024, cores=16) == 2 and drivers_for_capacity(4096, cores=16) == 8
    assert drivers_for_capacity(4096, cores=2) == 2 and drivers_for_capacity(4096, cores=1) == 1


def test_drivers_auto_on_a_small_engine_runs_in_this_process(one_driver, tmp_path):
    cfg = {"seed": 5, "labels": {"learn_floor": False}, "executor": {"trees_in_flight": 4}}
    finished, reports = [], []
    s = prmtree.run(PROBLEMS, policy="simulated", policy_args={"batch_capacity": 64}, out=tmp_path, config=cfg,
                    drivers="auto", on_problem=lambda f, stats: finished.append(f.problem.id),
                    on_progress=lambda stats: reports.append(stats.problems_done))
    assert s.problems_done == len(PROBLEMS) and sorted(finished) == sorted(p.id for p in PROBLEMS)
    assert reports[-1] == len(PROBLEMS)
    assert [p.name for p in tmp_path.glob("manifest*.json")] == ["manifest.json"]  # one driver, unsliced
    assert rows(tmp_path) == rows(one_driver)
    if len(os.sched_getaffinity(0)) >= 2:  # a 4,096-sequence engine gets drivers, which on_problem cannot follow
        with pytest.raises(ConfigError, match="on_problem runs where each problem finishes"):
            prmtree.run(PROBLEMS, policy="simulated", policy_args={"batch_capacity": 4096}, out=tmp_path / "big",
                        config=cfg, drivers="auto", on_problem=lambda f, stats: None)
        assert not (tmp_path / "big").exists()


def test_a_stop_while_the_drivers_start_is_a_graceful_stop(tmp_path):
    """A SIGTERM sent before the driver processes can act on it is held, not their death."""
    seen = []

    def early(stats):
        seen.append(stats)

    cfg = {"seed": 5, "labels": {"learn_floor": False}, "executor": {"kind": "inline", "trees_in_flight": 4}}
    import threading

    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()  # while the drivers import
    s = prmtree.run(PROBLEMS, policy="simulated", policy_args={"latency_s": 0.05}, out=tmp_path, config=cfg,
                    drivers=2, on_progress=early)
    assert s.stopped_by == signal.SIGTERM  # stopped, not failed: no DriversStopped
    assert s.problems_done < len(PROBLEMS)
    assert [m.status for m in slice_manifests(tmp_path)] == ["running", "running"]


def finishes_then_lingers(gold, predicted):
    """A check that leaves a thread the process waits for at exit (as some libraries do)."""
    import threading

    if not any(t.name == "lingering" for t in threading.enumerate()):
        threading.Thread(target=time.sleep, args=(3600,), name="lingering").start()
    return gold.strip().lower() == predicted.strip().lower()


def test_a_driver_that_lingers_after_its_end_is_ended(tmp_path, monkeypatch):
    import prmtree.local_drivers as local

    monkeypatch.setattr(local, "EXIT_WAIT_S", 2.0)
    cfg = {"seed": 5, "labels": {"learn_floor": False}, "executor": {"kind": "inline", "trees_in_flight": 4}}
    started = time.monotonic()
    s = prmtree.run(PROBLEMS[:6], policy="simulated", out=tmp_path, config=cfg, drivers=2,
                    check_answer=finishes_then_lingers)
    assert s.problems_done == 6 and time.monotonic() - started < 60
    assert not multiprocessing.active_children()


def test_the_engine_is_shared_by_the_drivers_still_running():
    from prmtree.rollout_workers.host import EngineHost
    from prmtree.rollout_workers.inline import InlineExecutor

    host = EngineHost(InlineExecutor(SimulatedPolicy(batch_capacity=1000)), drivers=3)
    assert host.capacity_share() == 334
    host.driver_gone()  # finished its slice, or died before it even connected
    assert host.capacity_share() == 500
    host.driver_gone()
    host.driver_gone()
    assert host.capacity_share() == 1000
    assert EngineHost(InlineExecutor(SimulatedPolicy()), drivers=2).capacity_share() is None


def test_a_check_that_cannot_travel_is_refused_before_anything_starts(tmp_path):
    with pytest.raises(ConfigError, match="check_answer must be importable to run in several driver processes"):
        prmtree.run(PROBLEMS, out=tmp_path, config={"executor": {"kind": "inline"}}, drivers=2,
                    check_answer=lambda gold, predicted: gold == predicted)
    assert not list(tmp_path.iterdir())


# -- the wire ------------------------------------------------------------------------------


def test_a_request_crosses_the_wire_whole_and_its_problem_by_id():
    problem = Problem(id="p1", question="q", answer="4")
    request = GenerationRequest(problem, ("step one", "step two"), n=4, max_tokens=99, temperature=0.3, top_p=0.9,
                                seed=12345, next_step_only=True, step_format="tags", purpose="judge")
    rid, back = decode_request(encode_request(7, request), {"p1": problem})
    assert rid == 7 and back == request
    completions = [Completion("a", 3, "length", 2, 9), Completion("b")]
    assert decode_completions(encode_completions(completions)) == completions


def test_frames_cut_anywhere_arrive_whole_and_in_order():
    got = []
    proto = FrameProtocol(got.append, lambda exc: None)
    messages = [("first", list(range(5))), {"capacity": 512}, b"x" * 70_000]
    stream = b"".join(frame(m) for m in messages)
    for i in range(0, len(stream), 7):  # seven bytes at a time
        proto.data_received(stream[i:i + 7])
    assert got == messages


def test_an_exception_that_does_not_pickle_travels_as_its_text():
    err = portable(Unpicklable())
    assert type(err) is RuntimeError and str(err) == "Unpicklable: held a lock"
    kept = portable(GenerationError("busy", retryable=False))
    assert type(kept) is GenerationError and kept.retryable is False


def test_a_driver_whose_host_is_gone_fails_its_requests_fatally(tmp_path):
    from prmtree.engine.errors import FatalExecutorError
    from prmtree.rollout_workers.host import EngineHost, HostExecutor, HostLost
    from prmtree.rollout_workers.inline import InlineExecutor

    class Never(SimulatedPolicy):
        async def generate(self, request):
            await asyncio.sleep(3600)

    async def scenario():
        host = EngineHost(InlineExecutor(Never(batch_capacity=100)), drivers=2)
        path = str(tmp_path / "engine.sock")
        await host.start(path)
        client = await asyncio.to_thread(HostExecutor, path)
        assert client.capacity() == 50 and client.policy_name == "simulated"  # its share of the engine
        request = GenerationRequest(PROBLEMS[0], (), n=2)
        waiting = asyncio.ensure_future(client.submit(request))
        await asyncio.sleep(0.2)
        assert host.stats()["in_flight"] == 1
        await host.stop()
        with pytest.raises(HostLost, match="closed the connection.*run the same command again"):
            await asyncio.wait_for(waiting, 10)
        with pytest.raises(FatalExecutorError):
            await client.submit(request)
        await client.close()

    asyncio.run(scenario())


def test_a_problem_released_and_asked_for_again_in_one_frame_stays_at_the_host(tmp_path):
    """A release and a new request for the same problem can leave in one frame: the host
    must keep the problem for the requests after it."""
    from prmtree.rollout_workers.host import EngineHost, HostExecutor
    from prmtree.rollout_workers.inline import InlineExecutor

    problem = PROBLEMS[2]

    async def scenario():
        host = EngineHost(InlineExecutor(SimulatedPolicy()), drivers=1)
        path = str(tmp_path / "engine.sock")
        await host.start(path)
        client = await asyncio.to_thread(HostExecutor, path)
        request = GenerationRequest(problem, (), n=2, seed=1)
        first = await client.submit(request)
        client.release(problem.id)
        again = await client.submit(request)  # the release and this request share a frame
        later = await client.submit(GenerationRequest(problem, (), n=3, seed=2))
        assert again == first and len(later) == 3
        assert list(host.clients[0].problems) == [problem.id]
        client.release(problem.id)
        await client.submit(GenerationRequest(PROBLEMS[3], (), n=1))  # a frame after the release
        assert list(host.clients[0].problems) == [PROBLEMS[3].id]
        await client.close()
        await host.stop()

    asyncio.run(scenario())


def test_with_the_pilot_on_a_listed_input_labels_as_one_driver_would(tmp_path):
    """Each driver pilots the input's first problems whatever their slice, as an unsliced
    run does; given only its slice of a list, each learned other floors and wrote other
    labels (a path input was right already: every driver reads it whole)."""
    problems = generate_problems(40, seed=7)
    cfg = {"seed": 1, "executor": {"kind": "inline", "trees_in_flight": 8}}  # the pilot on, as by default
    prmtree.run(problems, policy="simulated", out=tmp_path / "one", config=cfg)
    prmtree.run(problems, policy="simulated", out=tmp_path / "two", config=cfg, drivers=2)
    for table in TABLES:
        assert rows(tmp_path / "two", table) == rows(tmp_path / "one", table), table
    [one] = [load_manifest(p) for p in (tmp_path / "one").glob("manifest*.json")]
    for m in slice_manifests(tmp_path / "two"):
        assert m.calibration == one.calibration  # the same members, the same floors


def test_every_part_of_a_listed_input_holds_the_pilot_window_then_its_slice():
    from prmtree.engine.records import InputError
    from prmtree.multi_driver import split_inputs

    problems = generate_problems(12, seed=3)
    bad = InputError(problem_id="row-5", reason="broken")
    items = [*problems[:5], bad, *problems[5:]]
    parts = split_inputs(items, 3, window=4)
    for i, part in enumerate(parts):
        assert part[:4] == problems[:4]  # the window: every driver's, in input order
        own = [x for x in items[4:] if Slice(i, 3).owns(x.id if isinstance(x, Problem) else x.problem_id)]
        assert part[4:] == own
    assert sum(len(p) for p in parts) == len(items) + 2 * 4
    assert split_inputs(items, 3) == [[x for x in items if Slice(i, 3).owns(getattr(x, "id", None) or x.problem_id)]
                                      for i in range(3)]


def test_host_is_not_an_executor_a_user_picks(tmp_path, capsys):
    with pytest.raises(ConfigError, match="kind host is what the driver processes of --executor inline --drivers N use"):
        prmtree.run(PROBLEMS, out=tmp_path / "o", config={"executor": {"kind": "host"}})
    with pytest.raises(SystemExit) as stop:
        main(["run", "--input", "x.jsonl", "--out", str(tmp_path / "o"), "--executor", "host"])
    assert stop.value.code == 2 and "invalid choice: 'host'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_slow_on_progress_does_not_stall_the_engine(tmp_path):
    """The job calls on_progress off the engine's event loop, one call at a time: a callback
    that takes a second (a logging service's hiccup) costs the drivers nothing."""
    calls = []

    def slow(stats):
        calls.append(stats.problems_done)
        time.sleep(1.0)

    cfg = {"seed": 5, "labels": {"learn_floor": False}, "executor": {"kind": "inline", "trees_in_flight": 4}}
    started = time.monotonic()
    s = prmtree.run(PROBLEMS, policy="simulated", policy_args={"latency_s": 0.01}, out=tmp_path, config=cfg,
                    drivers=2, on_progress=slow)
    assert s.problems_done == len(PROBLEMS) and calls[-1] == len(PROBLEMS)
    assert time.monotonic() - started < 60  # on the engine's loop, each call stalled it: minutes


class HangsOnClose(SimulatedPolicy):
    async def close(self):
        await asyncio.sleep(3600)


def test_a_policy_whose_close_hangs_is_given_up_in_one_line(tmp_path, capfd):
    cfg = {"seed": 5, "labels": {"learn_floor": False},
           "executor": {"kind": "inline", "trees_in_flight": 4, "close_timeout_s": 1}}
    s = prmtree.run(PROBLEMS[:4], policy=HangsOnClose(), out=tmp_path, config=cfg, drivers=2)
    assert s.problems_done == 4
    assert ("prmtree: warning: gave up closing policy 'simulated': it did not return within 1 s (close_timeout_s) "
            "(everything finished is saved)") in capfd.readouterr().err


class StopsWhileClosing(SimulatedPolicy):
    """A SIGTERM while the job closes the policy (a scheduler ending the job then)."""

    async def close(self):
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):  # it would kill this test's process
            raise RuntimeError("no handler: a SIGTERM now gets the default action")
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(3600)


def test_a_stop_while_the_job_closes_the_policy_stops_the_wait_and_kills_nothing(tmp_path, capfd):
    cfg = {"seed": 5, "labels": {"learn_floor": False}, "executor": {"kind": "inline", "trees_in_flight": 4}}
    started = time.monotonic()
    s = prmtree.run(PROBLEMS[:4], policy=StopsWhileClosing(), out=tmp_path, config=cfg, drivers=2)
    assert s.problems_done == 4 and s.stopped_by is None and time.monotonic() - started < 60
    assert ("prmtree: warning: gave up closing policy 'simulated': on a stop signal (everything finished is saved)"
            in capfd.readouterr().err)


BLOCKS_ON_CLOSE = """
import os, signal, sys, threading, time
import prmtree
from prmtree.engine.synthetic import generate_problems
from prmtree.policies.simulated import SimulatedPolicy

class BlocksOnClose(SimulatedPolicy):
    async def close(self):
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
        time.sleep(30)  # blocks the loop: none of its handlers can run

if __name__ == "__main__":
    cfg = {"seed": 5, "labels": {"learn_floor": False},
           "executor": {"kind": "inline", "trees_in_flight": 4, "close_timeout_s": 2}}
    prmtree.run(generate_problems(4, seed=1), policy=BlocksOnClose(), out=sys.argv[1], config=cfg, drivers=2)
"""


def test_a_stop_while_the_job_s_policy_close_blocks_the_loop_still_ends_the_job(tmp_path):
    """The job's close waits on the loop for a stop; a close that blocks the loop is ended by
    the watchdog on a SIGTERM (before: the signal waited for the close's 30 s, unseen)."""
    script = tmp_path / "blocks.py"
    script.write_text(BLOCKS_ON_CLOSE)
    started = time.monotonic()
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 143, r.stderr[-2000:]
    assert time.monotonic() - started < 25
    assert "closing policy 'simulated' blocks the event loop: SIGTERM arrived" in r.stderr
    assert load_manifest(tmp_path / "o" / "manifest-00000-of-00002.json").status == "finished"
