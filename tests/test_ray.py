"""The Ray executor on a real local Ray: equality with inline, affinity, faults caused for real."""

import re

import pytest
from conftest import rows

import prmtree
from prmtree.engine.errors import FatalExecutorError
from prmtree.engine.output import load_manifest
from prmtree.engine.synthetic import generate_problems

PROBLEMS = generate_problems(40, seed=17)


def ray_config(**executor):
    return {"seed": 2, "executor": {"kind": "ray", "workers": 3, "num_cpus_per_worker": 0,
                                    "retry_backoff_s": 0.01, **executor}}




@pytest.fixture(scope="module")
def inline_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("inline")
    prmtree.run(PROBLEMS, policy="simulated", out=out, config={"seed": 2})
    return out


def test_ray_run_equals_inline_row_for_row_and_trees_stay_on_one_worker(ray_session, tmp_path, inline_reference):
    s = prmtree.run(PROBLEMS, policy="simulated", out=tmp_path, config=ray_config())
    for table in ("steps", "nodes", "pairs", "errors"):
        assert rows(tmp_path, table) == rows(inline_reference, table)
    ex = load_manifest(tmp_path / "manifest.json").stats["executor"]
    assert ex["workers"] == 3 and ex["resubmissions"] == 0
    assert ex["trees"] == 40 and ex["min_tree_affinity"] >= 0.95 and ex["trees_on_one_worker"] == 40
    assert len(ex["per_worker_done"]) == 3 and all(n > 0 for n in ex["per_worker_done"].values())  # each got trees
    assert s.rollouts == load_manifest(inline_reference / "manifest.json").stats["rollouts"]


def test_killing_a_worker_mid_run_loses_nothing(ray_session, tmp_path, inline_reference):
    killed = []

    def kill_one(finished, stats):
        if stats.problems_done == 5 and not killed:
            name = next(n for n in ray_session.util.list_named_actors() if n.startswith("prmtree-worker-"))
            ray_session.kill(ray_session.get_actor(name), no_restart=False)  # Ray restarts it
            killed.append(name)

    prmtree.run(PROBLEMS, policy="simulated", policy_args={"latency_s": 0.01}, out=tmp_path,
                config=ray_config(trees_in_flight=12), on_problem=kill_one)
    assert killed
    assert rows(tmp_path) == rows(inline_reference)
    manifest = load_manifest(tmp_path / "manifest.json")
    assert len(manifest.completed) == len(set(manifest.completed)) == 40
    ex = manifest.stats["executor"]
    assert ex["worker_deaths"] >= 1 and ex["resubmissions"] >= 1


def test_a_raising_policy_is_retried_then_its_problem_is_left_for_the_next_run(ray_session, tmp_path):
    bad = PROBLEMS[3].id
    s = prmtree.run(PROBLEMS[:6], policy="ray_policies:RaisesFor", policy_args={"bad_ids": [bad]}, out=tmp_path,
                    config=ray_config(max_attempts=2))
    assert s.problems_failed == 1 and s.problems_done == 5 and s.retry_pending == 1
    assert load_manifest(tmp_path / "manifest.json").failed == {bad: f"policy: ValueError: model server rejected {bad} (after 2 attempts)"}
    assert s.stats["retries"] == 2  # a pilot member: its failed search is searched once more (same seeds)


def test_a_hanging_policy_hits_the_timeout(ray_session, tmp_path):
    s = prmtree.run(PROBLEMS[:2], policy="ray_policies:Hangs", out=tmp_path,
                    config=ray_config(request_timeout_s=0.3, max_attempts=1, workers=2))
    assert s.problems_failed == 2
    reasons = list(load_manifest(tmp_path / "manifest.json").failed.values())
    assert len(reasons) == 2
    for reason in reasons:  # the driver's clock or the worker's, whichever fires first
        assert re.fullmatch(r"policy: GenerationError: policy timed out after 0.3 s( in a worker)? \(1 attempt\)",
                            reason), reason


def test_all_workers_gone_stops_cleanly_and_a_resume_finishes(ray_session, tmp_path, inline_reference):
    def kill_all(finished, stats):
        if stats.problems_done == 6:
            for name in ray_session.util.list_named_actors():
                if name.startswith("prmtree-worker-"):
                    ray_session.kill(ray_session.get_actor(name), no_restart=True)

    with pytest.raises(FatalExecutorError, match="rollout workers are dead|failed on .* workers"):
        prmtree.run(PROBLEMS, policy="simulated", policy_args={"latency_s": 0.01}, out=tmp_path,
                    config=ray_config(trees_in_flight=4, max_restarts=0), on_problem=kill_all)
    manifest = load_manifest(tmp_path / "manifest.json")
    assert manifest.status == "running"
    assert 6 <= len(manifest.completed) < 40
    # the deaths that stopped it are counted (the stats were those of the last finished problem)
    assert manifest.stats["executor"]["worker_deaths"] >= 1
    s = prmtree.run(PROBLEMS, policy="simulated", policy_args={"latency_s": 0.01}, out=tmp_path,
                    config=ray_config(trees_in_flight=4, max_restarts=0))
    assert rows(tmp_path) == rows(inline_reference)
    assert load_manifest(tmp_path / "manifest.json").status == "finished"
    assert s.problems_done == 40


def test_rendezvous_moves_only_the_problems_of_a_leaving_worker():
    from prmtree.rollout_workers.ray.routing import rendezvous

    ids = [f"p{i}" for i in range(2000)]
    before = {p: rendezvous(p, [0, 1, 2, 3])[0] for p in ids}
    after = {p: rendezvous(p, [0, 1, 3])[0] for p in ids}  # worker 2 left
    moved = [p for p in ids if before[p] != after[p]]
    assert moved == [p for p in ids if before[p] == 2]  # the leaver's problems, nobody else's cache disturbed
    assert all(after[p] == rendezvous(p, [0, 1, 2, 3])[1] for p in moved)  # each to its second choice
    counts = {w: sum(1 for p in ids if before[p] == w) for w in range(4)}
    assert all(400 < c < 600 for c in counts.values())  # spread evenly


@pytest.mark.slow  # a fresh interpreter
def test_the_ray_package_imports_the_ray_library_lazily_and_unshadowed():
    # prmtree.rollout_workers.ray is named like the library: its absolute ``import ray``
    # must still find the library, and importing the package must not import it.
    import subprocess
    import sys

    code = ("import sys\nimport prmtree.rollout_workers.ray\nassert 'ray' not in sys.modules\n"
            "from prmtree.rollout_workers.ray.sizing import ray_module\nray = ray_module()\n"
            "assert ray.__name__ == 'ray' and callable(ray.remote) and callable(ray.init)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_spilling_past_the_queue_limit_keeps_rows_identical(ray_session, tmp_path, inline_reference):
    # 5 ms per call: ~570 of 1,556 requests spill (541 at 20 ms, in 16 s against 30)
    prmtree.run(PROBLEMS, policy="simulated", policy_args={"latency_s": 0.005}, out=tmp_path,
                config=ray_config(queue_limit=1, trees_in_flight=16, workers=2))
    assert rows(tmp_path) == rows(inline_reference)
    ex = load_manifest(tmp_path / "manifest.json").stats["executor"]
    assert ex["spills"] > 0  # a full worker sent requests to the other one


# Best of N (prmtree/bon.py) on Ray. Here, not in test_bon.py: the session's Ray must start
# after test_deploy.py, whose `ray stop --force` would take it down.
@pytest.mark.ray
def test_ray_samples_the_same_solutions_as_inline(ray_session, problems):
    config = {"seed": 2, "executor": {"kind": "ray", "workers": 2, "num_cpus_per_worker": 0, "retry_backoff_s": 0.01}}
    from prmtree.bon import sample

    on_ray = sample(problems[:8], 4, config=config)
    inline = sample(problems[:8], 4, seed=2)
    assert not on_ray.failed
    assert [[(c.text, c.correct) for c in s.candidates] for s in on_ray.sampled] == \
        [[(c.text, c.correct) for c in s.candidates] for s in inline.sampled]


def test_a_policy_only_the_workers_cannot_build_is_refused_in_one_line(ray_session, tmp_path):
    # Before: exit 1, "run stopped: rollout workers failed to start: The actor died because of
    # an error raised in its creation task, ..." and the worker's whole traceback as the message.
    from prmtree.engine.errors import PolicyConfigError

    with pytest.raises(PolicyConfigError) as refused:
        prmtree.run(PROBLEMS[:2], policy="ray_policies:FailsToBuild", out=tmp_path,
                    config=ray_config(workers=2))
    assert str(refused.value) == ("cannot build policy 'ray_policies:FailsToBuild': RuntimeError: no CUDA in this "
                                  "worker (in a Ray rollout worker)")


def test_the_policy_column_holds_the_built_policys_name_as_inline(ray_session, tmp_path):
    # Before: the Ray executor named the policy from its unbuilt class: a name property
    # wrote '<property object at 0x...>' in every row (a different one each run).
    from prmtree.engine.output import read_table

    for kind, config in (("ray", ray_config(workers=2)), ("inline", {"seed": 2})):
        prmtree.run(PROBLEMS[:2], policy="ray_policies:NamedByProperty", policy_args={"model": "m7"},
                    out=tmp_path / kind, config=config)
        assert set(read_table(tmp_path / kind, "steps").column("policy").to_pylist()) == {"sim:m7"}, kind


@pytest.mark.slow
@pytest.mark.parametrize("sig, code, said", [
    ("SIGTERM", 143, "prmtree: stopped by SIGTERM before the run started: nothing was done; run the same command "
                     "to start again"),
    ("SIGINT", 130, "prmtree: interrupted"),
])
def test_a_stop_signal_while_the_workers_load_ends_the_start_at_once(tmp_path, sig, code, said):
    # Before: the start waited in one blocking ray.get: a Ctrl-C waited for the whole model
    # load, and SIGTERM met Ray's own handler (a C++ stack dump, exit 1).
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import PRMTREE

    marker = tmp_path / "loading"
    tests_dir = os.path.dirname(__file__)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": "local",
           "PYTHONPATH": os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([*PRMTREE, "synth", "--out", str(tmp_path / "data"), "--problems", "2"], env=env)
    assert proc.wait(timeout=120) == 0
    proc = subprocess.Popen(
        [*PRMTREE, "run", "--input", str(tmp_path / "data" / "problems.jsonl"), "--out", str(tmp_path / "out"),
         "--no-progress", "--executor", "ray", "--workers", "1", "--policy", "ray_policies:LoadsForever",
         "--policy-arg", f"marker={marker}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():  # the worker is loading its model
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        sent = time.monotonic()
        proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == code, err
    assert took < 15, took
    assert err.strip().splitlines()[-1] == said and "SIGTERM received" not in err and "Traceback" not in err
