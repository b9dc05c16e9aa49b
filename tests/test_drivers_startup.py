"""A several-driver job's own failures, with real processes: a start-up refusal is one line
(not "run the same command again", which fails the same way), a driver's own reason reaches
the job's message, and a frozen driver cannot hold a stopped job."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import prmtree
from prmtree.engine.config import RunConfig
from prmtree.engine.synthetic import generate_problems, write_jsonl
from prmtree.multi_driver import (
    CANCEL_WAIT_S,
    DriversStopped,
    ProgressWatch,
    SliceDriver,
    _frozen_drivers,
    check_portable,
    cpu_reading,
)
from prmtree.runner import DriverJob

pytestmark = pytest.mark.slow  # driver processes (spawn: a fresh interpreter each)
PROBLEMS = generate_problems(16, seed=31)
REPO = Path(__file__).resolve().parent.parent


def run_script(tmp_path, source, *args, env=None, timeout=120):
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "RAY_AUTH_MODE": "disabled", **(env or {})})


# -- start-up refusals ---------------------------------------------------------------------

PLUGIN_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])  # a folder only this process knows of
import plugmod
import prmtree
from prmtree.engine.errors import ConfigError
from prmtree.engine.synthetic import generate_problems

if __name__ == "__main__":
    try:
        prmtree.run(generate_problems(4, seed=1), out=sys.argv[2], drivers=2, check_answer=plugmod.check,
                    config={"executor": {"kind": "ray", "workers": 1, "num_cpus_per_worker": 0,
                                         "num_cpus_per_driver": 0}})
    except ConfigError as exc:
        print("REFUSED", exc)
        sys.exit(2)
"""


def test_a_ray_job_refuses_a_check_from_a_folder_only_the_script_added_to_sys_path(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "plugmod.py").write_text("def check(gold, pred):\n    return gold.strip() == pred.strip()\n")
    started = time.monotonic()
    done = run_script(tmp_path, PLUGIN_SCRIPT, str(plugins), str(tmp_path / "out"), timeout=180)
    assert done.returncode == 2, done.stdout + done.stderr[-3000:]
    assert ("REFUSED check_answer must be importable to run in several driver processes" in done.stdout
            and "its module 'plugmod'" in done.stdout and "PYTHONPATH" in done.stdout), done.stdout
    assert "Ray" not in done.stderr and not (tmp_path / "out").exists()  # refused before Ray started
    assert time.monotonic() - started < 30


def hidden_module(tmp_path, monkeypatch, name, source):
    """Module ``name`` in a folder only this process has on sys.path (as a script's own
    ``sys.path.insert`` does), imported."""
    import importlib

    plugins = tmp_path / "plugins"
    plugins.mkdir(exist_ok=True)
    (plugins / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(plugins))
    return importlib.import_module(name)


def found_by_new_processes(tmp_path, monkeypatch):
    """The hidden modules' folder on PYTHONPATH, the environment Ray's workers inherit."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path / "plugins"),
                                                                   os.environ.get("PYTHONPATH")])))


def test_a_module_that_a_new_process_finds_may_go_to_ray_drivers(tmp_path, monkeypatch):
    """The same module on PYTHONPATH (the environment Ray's workers inherit) is accepted."""
    plugmod_ok = hidden_module(tmp_path, monkeypatch, "plugmod_ok", "def check(gold, pred):\n    return gold == pred\n")
    job = DriverJob(problems=[], config=RunConfig(), policy="simulated", check_answer=plugmod_ok.check)
    with pytest.raises(prmtree.ConfigError, match="its module 'plugmod_ok'"):
        check_portable(job, through_ray=True)
    found_by_new_processes(tmp_path, monkeypatch)
    check_portable(job, through_ray=True)
    check_portable(DriverJob(problems=[], config=RunConfig(), policy="simulated",
                             check_answer=lambda gold, pred: gold == pred), through_ray=True)  # cloudpickle sends it


@pytest.mark.parametrize("how", ["partial", "bound method", "classmethod", "callable instance", "lambda calling it",
                                 "partial of a lambda", "lru_cache", "from a dict", "a default argument"])
def test_a_check_that_pickles_through_a_module_ray_cannot_import_is_refused(tmp_path, monkeypatch, how):
    # Before: only a plain function's module was checked; a partial, a bound method, a
    # classmethod or a callable instance of a module found only through the script's sys.path
    # passed, and the job failed after ~17 s with Ray's tracebacks in its drivers.
    import functools

    m = hidden_module(tmp_path, monkeypatch, "plugmod_wrapped",
                      "def check(gold, pred, strip=True):\n    return gold.strip() == pred.strip()\n\n"
                      "class Checker:\n    def check(self, gold, pred):\n        return gold == pred\n\n"
                      "    @classmethod\n    def by_class(cls, gold, pred):\n        return gold == pred\n\n"
                      "    def __call__(self, gold, pred):\n        return gold == pred\n\n"
                      "import functools\n\n@functools.lru_cache\ndef cached(gold, pred):\n    return gold == pred\n")
    check = {"partial": functools.partial(m.check, strip=False), "bound method": m.Checker().check,
             "classmethod": m.Checker.by_class, "callable instance": m.Checker(),
             "lambda calling it": lambda gold, pred: m.check(gold, pred),  # sent whole; its module by name
             "partial of a lambda": functools.partial(lambda strip, gold, pred: m.check(gold, pred, strip), True),
             "lru_cache": m.cached,
             "from a dict": lambda gold, pred, graders={"math": m.check}: graders["math"](gold, pred),
             "a default argument": lambda gold, pred, grade=m.check: grade(gold, pred)}[how]
    job = DriverJob(problems=[], config=RunConfig(), policy="simulated", check_answer=check)
    with pytest.raises(prmtree.ConfigError, match="its module 'plugmod_wrapped'"):
        check_portable(job, through_ray=True)
    found_by_new_processes(tmp_path, monkeypatch)
    check_portable(job, through_ray=True)  # where Ray's workers find it: accepted


def test_a_name_the_check_only_reads_as_an_attribute_is_not_taken_for_a_module_it_needs(tmp_path, monkeypatch):
    # A script imports `normalize` from a module of its own folder for its data, and its
    # check calls unicodedata.normalize: cloudpickle sends the check without that module.
    # Before (b8c2282), every name in the code that was also a global counted: refused.
    import unicodedata

    m = hidden_module(tmp_path, monkeypatch, "textutils_hidden", "def normalize(text):\n    return text.strip()\n")
    script_globals = {"__name__": "__main__", "unicodedata": unicodedata, "normalize": m.normalize}
    check = eval("lambda gold, pred: unicodedata.normalize('NFC', gold) == pred", script_globals)
    check_portable(DriverJob(problems=[], config=RunConfig(), policy="simulated", check_answer=check),
                   through_ray=True)
    uses = eval("lambda gold, pred: normalize(gold) == pred", script_globals)  # this one needs it
    with pytest.raises(prmtree.ConfigError, match="its module 'textutils_hidden'"):
        check_portable(DriverJob(problems=[], config=RunConfig(), policy="simulated", check_answer=uses),
                       through_ray=True)


def test_a_wrapper_of_a_script_function_is_refused_for_what_it_is(monkeypatch):
    # An lru_cache on a script's function goes by reference to __main__, which Ray's workers
    # cannot import (their __main__ is Ray's): before, accepted, and the drivers failed later.
    import functools

    main = sys.modules["__main__"]
    plain = eval("lambda gold, pred: gold == pred", {"__name__": "__main__"})
    plain.__qualname__ = plain.__name__ = "cached_check"
    cached = functools.lru_cache(plain)
    monkeypatch.setattr(main, "cached_check", cached, raising=False)
    with pytest.raises(prmtree.ConfigError, match=r"goes by reference to the script's __main__ \(a decorated "):
        check_portable(DriverJob(problems=[], config=RunConfig(), policy="simulated", check_answer=cached),
                       through_ray=True)
    check_portable(DriverJob(problems=[], config=RunConfig(), policy="simulated", check_answer=plain),
                   through_ray=True)  # the plain function is sent whole


def test_a_module_registered_to_go_by_value_is_not_refused(tmp_path, monkeypatch):
    # Ray's own answer to a module its workers cannot import; before, it was refused all the same
    from ray import cloudpickle

    plugmod_by_value = hidden_module(tmp_path, monkeypatch, "plugmod_by_value",
                                     "def check(gold, pred):\n    return gold == pred\n")
    job = DriverJob(problems=[], config=RunConfig(), policy="simulated", check_answer=plugmod_by_value.check)
    with pytest.raises(prmtree.ConfigError, match="or register it with ray.cloudpickle.register_pickle_by_value"):
        check_portable(job, through_ray=True)
    cloudpickle.register_pickle_by_value(plugmod_by_value)
    try:
        check_portable(job, through_ray=True)
    finally:
        cloudpickle.unregister_pickle_by_value(plugmod_by_value)


UNGUARDED_SCRIPT = """
import sys
import prmtree
from prmtree.engine.synthetic import generate_problems

# no `if __name__ == "__main__":` guard: each driver process runs this again
prmtree.run(generate_problems(4, seed=1), out=sys.argv[1], drivers=2, config={"executor": {"kind": "inline"}})
print("FINISHED")
"""


def test_a_script_without_a_main_guard_is_refused_with_the_drivers_own_reason(tmp_path):
    done = run_script(tmp_path, UNGUARDED_SCRIPT, str(tmp_path / "out"))
    last = done.stderr.strip().splitlines()[-1]
    assert last == ("prmtree.engine.errors.ConfigError: prmtree.run with several driver processes was called while "
                    "a driver process started: the script runs again in each one (spawn), so put its prmtree.run "
                    "under if __name__ == \"__main__\":"), done.stderr[-3000:]
    assert "DriversStopped" not in done.stderr and "run the same command again" not in done.stderr
    assert "FINISHED" not in done.stdout


# -- a driver's own reason -----------------------------------------------------------------


def blocks_in_driver_1(gold, predicted):
    """A check that never returns in one driver process (a blocking call on its loop)."""
    if multiprocessing.current_process().name == "prmtree-driver-1":
        time.sleep(3600)
    return gold.strip() == predicted.strip()


def test_a_check_that_blocks_a_driver_is_named_as_the_check_in_the_job_s_message(tmp_path, capfd):
    cfg = {"seed": 5, "labels": {"learn_floor": False},
           "executor": {"kind": "inline", "trees_in_flight": 4, "request_timeout_s": 0.5}}
    with pytest.raises(DriversStopped) as stopped:
        prmtree.run(PROBLEMS, policy="simulated", out=tmp_path, config=cfg, drivers=2,
                    check_answer=blocks_in_driver_1)
    message = str(stopped.value)
    assert message.startswith("the driver of slice 1/2 stopped early (slice 1/2: the event loop is blocked (policy "
                              "'simulated' does not run on this loop: a custom check_answer or split_steps"), message
    assert "it has held the loop for" in message and "exited with code" not in message
    err = capfd.readouterr().err
    assert "background task or callback runs blocking code outside generate" not in err
    assert "A custom check_answer or split_steps runs on this loop and must return promptly" in err


# -- a frozen driver -----------------------------------------------------------------------


def start_job(tmp_path, sigint):
    """A CLI job of two driver processes in a session of its own, SIGINT as ``sigint``
    (SIG_IGN: started with ``&`` from a script); driver 1 frozen (SIGSTOP) once it runs."""
    data = write_jsonl(PROBLEMS, tmp_path / "data")
    config = tmp_path / "run.toml"
    config.write_text("seed = 5\n[labels]\nlearn_floor = false\n[executor]\ntrees_in_flight = 4\n"
                      "[output]\nflush_interval_s = 0.1\n")
    out = tmp_path / "out"
    args = [sys.executable, "-m", "prmtree", "run", "--input", str(data), "--out", str(out), "--config", str(config),
            "--no-progress", "--executor", "inline", "--drivers", "2", "--policy-arg", "latency_s=0.2"]
    job = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))
    lock = out / ".manifest-00001-of-00002.json.lock"
    deadline = time.monotonic() + 60
    driver = job.pid  # the job's precheck takes each slice's lock first, then driver 1 its own
    while time.monotonic() < deadline and job.poll() is None and driver == job.pid:
        time.sleep(0.05)
        try:
            driver = json.loads(lock.read_text())["pid"]
        except (OSError, ValueError, KeyError):
            pass
    assert job.poll() is None, job.stderr.read()
    time.sleep(1.0)  # it searches
    os.kill(driver, signal.SIGSTOP)
    return job, driver, args


def gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_second_stop_kills_a_frozen_driver_and_the_same_command_resumes_it(tmp_path):
    job, driver, args = start_job(tmp_path, signal.SIG_DFL)
    try:
        job.send_signal(signal.SIGINT)
        time.sleep(0.5)
        job.send_signal(signal.SIGINT)
        stopped = time.monotonic()
        _, err = job.communicate(timeout=CANCEL_WAIT_S + 20)
    finally:
        if job.poll() is None:
            job.kill()
        if not gone(driver):
            os.kill(driver, signal.SIGKILL)
            os.kill(driver, signal.SIGCONT)
    assert job.returncode == 1, err[-3000:]
    assert time.monotonic() - stopped < CANCEL_WAIT_S + 10
    assert (f"prmtree: the driver of slice 1/2 did not end within {CANCEL_WAIT_S:g} s of the second stop and made "
            "no progress: killed (SIGKILL); what its last flush saved is on disk and the same command resumes the "
            "rest") in err, err[-3000:]
    assert "slice 1/2: its process exited with code -9" in err and gone(driver)
    rerun = subprocess.run(args[:-2], capture_output=True, text=True, timeout=120)  # latency_s: operational
    assert rerun.returncode == 0, rerun.stderr[-3000:]


def test_a_third_stop_ends_a_job_started_with_sigint_ignored(tmp_path):
    job, driver, _ = start_job(tmp_path, signal.SIG_IGN)
    try:
        for _ in range(3):
            job.send_signal(signal.SIGINT)
            time.sleep(0.3)
        job.wait(timeout=CANCEL_WAIT_S - 1)  # the default action, not the wait for the frozen driver
    finally:
        if job.poll() is None:
            job.kill()
        job.stderr.close()
        if not gone(driver):
            os.kill(driver, signal.SIGKILL)
            os.kill(driver, signal.SIGCONT)
    assert job.returncode == -signal.SIGINT


USER_RAY_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])  # a folder only this process knows of
import plugmod
import ray
import prmtree
from prmtree.engine.synthetic import generate_problems

if __name__ == "__main__":
    mode, out = sys.argv[2], sys.argv[3]
    if mode == "joined":  # a notebook's cell: Ray started by the user, a lambda for a check
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        check, drivers = (lambda gold, pred: gold.strip() == pred.strip()), 2
    else:  # auto on a one-worker pool: one driver, this process, so the check never travels
        check, drivers = plugmod.check, "auto"
    s = prmtree.run(generate_problems(4, seed=1), out=out, drivers=drivers, check_answer=check,
                    config={"executor": {"kind": "ray", "workers": 1, "num_cpus_per_worker": 0,
                                         "num_cpus_per_driver": 0}, "search": {"budget": 16}})
    print("DONE", s.problems_done)
"""


@pytest.mark.parametrize("mode", ["joined", "auto"])
def test_a_check_that_can_travel_or_stays_here_is_not_refused(tmp_path, mode):
    # Before: a Ray the user started was checked by plain pickle's rules (a lambda refused,
    # though cloudpickle sends it whole), and auto was checked before it chose one driver
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "plugmod.py").write_text("def check(gold, pred):\n    return gold.strip() == pred.strip()\n")
    done = run_script(tmp_path, USER_RAY_SCRIPT, str(plugins), mode, str(tmp_path / "out"), timeout=240)
    assert done.returncode == 0 and "DONE 4" in done.stdout, done.stdout + done.stderr[-3000:]


def test_a_driver_still_working_is_not_taken_for_frozen():
    # Before: every driver alive 5 s after the second stop was killed, one mid-flush too,
    # and the problems that flush was saving were lost
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stopped = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.5)
        os.kill(stopped.pid, signal.SIGSTOP)
        time.sleep(0.2)
        watches = {name: (p.pid, ProgressWatch()) for name, p in (("busy", busy), ("idle", idle), ("stopped", stopped))}
        first = {name: w.frozen(cpu_reading(pid)) for name, (pid, w) in watches.items()}
        assert first == {"busy": False, "idle": False, "stopped": True}  # one look cannot tell idle yet
        time.sleep(1.2)
        assert {name: w.frozen(cpu_reading(pid)) for name, (pid, w) in watches.items()} == \
            {"busy": False, "idle": True, "stopped": True}
    finally:
        for p in (busy, idle, stopped):
            p.kill()
            p.wait()
    assert ProgressWatch().frozen(cpu_reading(busy.pid))  # gone: no reading, no progress


STUCK_RAY_JOB = """
import os, sys, time
import prmtree
from prmtree.engine.synthetic import generate_problems

TRIGGER = "TRIGGER_PATH"  # written into the script: a driver actor's sys.argv is Ray's


def check(gold, pred):  # a check that computes for ever once the trigger exists (on the driver's loop)
    if os.path.exists(TRIGGER):
        while True:
            pass
    return gold.strip() == pred.strip()

if __name__ == "__main__":
    prmtree.run(generate_problems(400, seed=2), policy="simulated", policy_args={"latency_s": 0.05},
                out=sys.argv[1], drivers=2, check_answer=check,
                config={"seed": 3, "labels": {"learn_floor": False},
                        "executor": {"kind": "ray", "workers": 1, "num_cpus_per_worker": 0,
                                     "num_cpus_per_driver": 0}})
"""


def test_a_ray_driver_stuck_computing_on_its_loop_cannot_outlive_the_stops(tmp_path):
    # Before: a driver actor's run had no loop watchdog (it runs in a thread, not the main
    # one), and once stuck drivers were no longer killed blindly 5 s after the second stop,
    # a driver computing for ever kept the job alive until a third stop.
    script = tmp_path / "job.py"
    out, trigger = tmp_path / "out", tmp_path / "trigger"
    script.write_text(STUCK_RAY_JOB.replace("TRIGGER_PATH", str(trigger)))
    job = subprocess.Popen([sys.executable, str(script), str(out)], cwd=tmp_path, text=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and job.poll() is None and len(list(out.glob("manifest-*.json"))) < 2:
            time.sleep(0.2)
        time.sleep(1.0)  # both drivers search
        assert job.poll() is None
        trigger.write_text("")
        time.sleep(1.0)
        job.send_signal(signal.SIGINT)
        time.sleep(0.5)
        job.send_signal(signal.SIGINT)
        stopped = time.monotonic()
        _, err = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()
    assert time.monotonic() - stopped < 20, err[-3000:]
    assert job.returncode != 0 and "SIGINT arrived while it held the loop" in err, err[-3000:]


class SpinningDriver(SliceDriver):
    """A job's driver actor that can be kept at work (``spin``) as a long flush keeps it."""

    def run(self, problems, job) -> None:  # a run that works (as a long flush does) or waits
        self._thread = threading.get_native_id()
        end = time.monotonic() + 30.0
        while time.monotonic() < end:
            if problems == "wait":
                time.sleep(0.2)

    def pid(self) -> int:
        return os.getpid()


def test_a_ray_driver_at_work_after_the_second_stop_is_not_taken_for_frozen(ray_session):
    # Before: the job killed every Ray driver still running 5 s after the second stop without
    # asking whether it worked (a driver flushing large shards lost the rows it was saving).
    remote = ray_session.remote(SpinningDriver).options(max_concurrency=4, num_cpus=0)
    busy, idle, stopped = (remote.remote() for _ in range(3))
    try:
        pid = ray_session.get(stopped.pid.remote())
        busy.run.remote("work", None)
        idle.run.remote("wait", None)
        time.sleep(0.5)
        os.kill(pid, signal.SIGSTOP)
        live = {0: busy, 1: idle, 2: stopped}
        watches = {i: ProgressWatch() for i in live}
        assert _frozen_drivers(live, watches) == [2]  # it cannot answer; one look cannot tell idle yet
        time.sleep(1.2)
        assert _frozen_drivers(live, watches) == [1, 2]
        time.sleep(1.2)
        assert _frozen_drivers({0: busy}, watches) == []  # still at work: left to end
    finally:
        os.kill(pid, signal.SIGCONT)
        for actor in (busy, idle, stopped):
            ray_session.kill(actor, no_restart=True)
