"""Several drivers in one Ray job (``--drivers N``) on a real local Ray: the rows of one
driver, a driver killed mid-run and the rerun that finishes, one slice layout per --out."""

import os
import signal

import pytest
from conftest import rows

import prmtree
from prmtree.cli import main
from prmtree.engine.output import Slice, load_manifest
from prmtree.engine.synthetic import generate_problems, write_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.ray]  # every test here runs on a real local Ray
TABLES = ("steps", "nodes", "pairs", "errors")
PROBLEMS = generate_problems(20, seed=23)


@pytest.fixture(scope="module")
def drivers_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("drivers")
    config = folder / "run.toml"
    # No CPUs reserved, so two drivers and two workers fit beside the tests on two cores;
    # a short flush interval, so a killed driver has flushed some problems already.
    # The pilot off: these tests are about drivers, and with it a single diverging tree
    # (seen only under load, not understood yet) moves every row through the floors.
    config.write_text("seed = 3\n[labels]\nlearn_floor = false\n[executor]\nnum_cpus_per_worker = 0\nnum_cpus_per_driver = 0\n"
                      "trees_in_flight = 4\nretry_backoff_s = 0.01\n[output]\nflush_interval_s = 0.1\n")
    return {"input": write_jsonl(PROBLEMS, folder / "data"), "config": config}


def command(drivers_data, out, *more):
    return ["run", "--input", str(drivers_data["input"]), "--out", str(out),
            "--config", str(drivers_data["config"]), "--executor", "ray", "--workers", "2", "--no-progress", *more]


@pytest.fixture(scope="module")
def one_driver(ray_session, drivers_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("one-driver")
    assert main(command(drivers_data, out)) == 0
    return out


@pytest.fixture(scope="module")
def two_drivers(ray_session, drivers_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("two-drivers")
    assert main(command(drivers_data, out, "--drivers", "2")) == 0
    return out


def slice_manifests(out):
    return [load_manifest(p) for p in sorted(out.glob("manifest-*-of-*.json"))]


def test_two_drivers_on_one_ray_pool_write_the_rows_of_one(one_driver, two_drivers):
    for table in TABLES:
        assert rows(two_drivers, table) == rows(one_driver, table), table
    manifests = slice_manifests(two_drivers)
    assert [m.slice for m in manifests] == [{"index": 0, "count": 2}, {"index": 1, "count": 2}]
    assert all(m.status == "finished" for m in manifests)
    completed = [pid for m in manifests for pid in m.completed]
    assert sorted(completed) == sorted(p.id for p in PROBLEMS)  # each problem once, in one slice
    for m in manifests:  # both drivers used the one pool, and kept each tree on one worker
        ex = m.stats["executor"]
        assert ex["workers"] == 2 and ex["trees_on_one_worker"] == ex["trees"] == len(m.completed)
    assert not [n for n in prmtree_actors() if "driver" in n]  # the job cleaned up after itself


def prmtree_actors():
    import ray

    return [n for n in ray.util.list_named_actors() if n.startswith("prmtree-")]


def test_a_ray_driver_killed_mid_run_is_named_and_the_same_command_finishes(
        ray_session, drivers_data, one_driver, tmp_path, monkeypatch, capsys):
    from prmtree.progress import ProgressReporter

    killed = []
    show = ProgressReporter.progress

    def kill_driver_1(self, stats):
        if stats.problems_done >= 2 and not killed:
            name = next(n for n in prmtree_actors() if n.startswith("prmtree-driver-") and n.endswith("-1"))
            ray_session.kill(ray_session.get_actor(name))
            killed.append(name)
        show(self, stats)

    monkeypatch.setattr(ProgressReporter, "progress", kill_driver_1)
    slow = ["--policy-arg", "latency_s=0.01"]  # an operational argument: the same rows, a resumable config
    with pytest.raises(SystemExit) as stop:
        main(command(drivers_data, tmp_path, "--drivers", "2", *slow))
    assert stop.value.code == 1 and killed
    err = capsys.readouterr().err
    assert "the driver of slice 1/2 stopped early" in err and "run the same command again" in err
    m0, m1 = slice_manifests(tmp_path)
    slice_1 = [p.id for p in PROBLEMS if Slice(1, 2).owns(p.id)]
    assert m0.status == "finished" and m1.status == "running" and len(m1.completed) < len(slice_1)

    monkeypatch.setattr(ProgressReporter, "progress", show)
    assert main(command(drivers_data, tmp_path, "--drivers", "2", *slow)) == 0  # the dead driver's lock died with it
    for table in TABLES:
        assert rows(tmp_path, table) == rows(one_driver, table), table
    manifests = slice_manifests(tmp_path)
    assert all(m.status == "finished" for m in manifests)
    assert sorted(pid for m in manifests for pid in m.completed) == sorted(p.id for p in PROBLEMS)


def test_sigterm_to_a_ray_job_stops_every_driver_gracefully(ray_session, one_driver, tmp_path):
    sent = []

    def terminate(stats):
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)  # as `ray job stop` or a scheduler would

    cfg = {"seed": 3, "labels": {"learn_floor": False}, "executor": {"kind": "ray", "workers": 2, "num_cpus_per_worker": 0, "num_cpus_per_driver": 0,
                                   "trees_in_flight": 2}}
    s = prmtree.run(PROBLEMS, policy="simulated", policy_args={"latency_s": 0.02}, out=tmp_path, config=cfg,
                    drivers=2, on_progress=terminate)
    assert s.stopped_by == signal.SIGTERM and 0 < s.problems_done < len(PROBLEMS)
    manifests = slice_manifests(tmp_path)
    assert "running" in [m.status for m in manifests]  # stopped, not finished: a rerun resumes
    for k, m in enumerate(manifests):  # a slice whose every problem had started when the stop came is complete
        assert m.status == "running" or set(m.completed) == {p.id for p in PROBLEMS if Slice(k, 2).owns(p.id)}
    done = {pid for m in manifests for pid in m.completed}
    assert len(done) == s.problems_done  # the trees in flight were finished and saved, none lost
    assert rows(tmp_path, "steps")
    for table in TABLES:  # ... as they are in a run that was not stopped
        assert rows(tmp_path, table) == rows(one_driver, table, problems=done), table


def test_another_driver_count_on_the_same_out_is_refused_in_one_line(drivers_data, two_drivers, one_driver, capsys):
    said = {}
    for drivers, out in (("3", two_drivers), ("1", two_drivers), ("2", one_driver)):
        with pytest.raises(SystemExit) as stop:
            main(command(drivers_data, out, "--drivers", drivers))
        assert stop.value.code == 2
        said[drivers] = err = capsys.readouterr().err
        assert err.count("\n") == 1 and "one output directory takes one slice layout" in err, err
    assert "holds the output of 2 drivers" in said["3"] and "this run is --drivers 3" in said["3"]
    assert "run it with --drivers 2" in said["3"] and "run it with --drivers 2" in said["1"]
    assert "holds the output of one driver" in said["2"] and "no --drivers" in said["2"]


@pytest.mark.parametrize("address", [None, "local"])
def test_a_job_that_cannot_fit_a_local_ray_is_refused_in_one_line_not_left_pending(drivers_data, tmp_path, address):
    # Ray keeps an actor it cannot place pending forever: 2 workers and 2 drivers of 1 CPU
    # each on a 2-CPU local Ray used to wait in silence until killed. ``--address local``
    # (Ray's name for a new local instance) was taken for a remote cluster that may grow,
    # and waited 10 minutes.
    import subprocess
    import sys

    workers = max(2, (os.cpu_count() or 2) - 1)  # with 2 drivers, one CPU more than a local Ray has

    args = [sys.executable, "-m", "prmtree", "run", "--input", str(drivers_data["input"]),
            "--out", str(tmp_path / "out"),
            "--executor", "ray", "--workers", str(workers), "--drivers", "2", "--no-progress",
            *(["--address", address] if address else [])]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(args, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{workers} rollout workers and 2 drivers need {workers + 2} CPU (the cluster has" in done.stderr
    assert "num_cpus_per_driver" in done.stderr
    assert not list((tmp_path / "out").glob("manifest*.json"))


def test_only_no_address_or_local_is_a_local_ray(monkeypatch):
    from prmtree.rollout_workers.ray.sizing import is_local

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert is_local(None) and is_local("local")
    assert not is_local("auto") and not is_local("ray://head:10001") and not is_local("10.0.0.1:6379")
    monkeypatch.setenv("RAY_ADDRESS", "local")
    assert is_local(None) and not is_local("auto")
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    assert not is_local(None) and is_local("local")


def test_on_a_remote_cluster_a_shortfall_is_a_warning_and_the_start_is_bounded(ray_session, capsys):
    from prmtree.engine.errors import ConfigError
    from prmtree.rollout_workers.ray.sizing import check_demand

    check_demand(1000, 0, "1000 rollout workers", local=False)  # an autoscaler may add nodes
    err = capsys.readouterr().err
    assert "1000 rollout workers need 1000 CPU (the cluster has 2)" in err and "waiting up to 600 s" in err
    with pytest.raises(ConfigError, match="need 1000 CPU .*a local Ray cannot grow"):
        check_demand(1000, 0, "1000 rollout workers", local=True)
    check_demand(2, 0, "2 rollout workers", local=True)  # fits: silent
    assert capsys.readouterr().err == ""


def test_auto_workers_leave_room_for_the_drivers_they_bring(ray_session):
    from prmtree.engine.config import ExecutorConfig
    from prmtree.rollout_workers.ray import RayExecutor

    def workers(**settings):
        config = ExecutorConfig(kind="ray", workers="auto", **settings)
        return RayExecutor("simulated", {}, config).worker_count()

    # 2 CPUs: 64 workers of 1/32 would bring two drivers of 1 CPU (one per 32), which do
    # not fit beside them; 32 workers and the job's own process as their one driver do.
    assert workers(num_cpus_per_worker=1 / 32, drivers="auto") == 32
    assert workers(num_cpus_per_worker=1 / 32, drivers=1) == 64
    assert workers(num_cpus_per_worker=0.5, drivers=2, num_cpus_per_driver=0.5) == 2


def test_drivers_sharing_a_pool_each_fill_their_share_of_it(ray_session, tmp_path):
    # Before: each driver sized itself for the whole pool, so two drivers on two workers of 32
    # sequences kept 160 in flight against 64 (both manifests said "capacity 64").
    s = prmtree.run(PROBLEMS, policy="simulated", policy_args={"batch_capacity": 32, "latency_s": 0.01},
                    out=tmp_path, drivers=2,
                    config={"seed": 3, "labels": {"learn_floor": False},
                            "executor": {"kind": "ray", "workers": 2, "num_cpus_per_worker": 0,
                                         "num_cpus_per_driver": 0}})
    assert s.problems_done == len(PROBLEMS)
    sizing = [m.stats["driver"]["sizing"] for m in slice_manifests(tmp_path)]
    # a driver's share of 2 x 32 from its first request (32 x 1.25 headroom in flight at most);
    # the last one may see the pool to itself once the other has left
    capacities, peaks = sorted(d["capacity"] for d in sizing), sorted(d["peak"] for d in sizing)
    assert capacities[0] == 32 and set(capacities) <= {32, 64}, sizing
    assert peaks[0] == 40 and set(peaks) <= {40, 80}, sizing
