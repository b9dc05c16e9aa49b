"""Cluster deployment: `ray job submit` for real, the CLI's Ray path, and the docker/ files."""

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli, free_port, rows, starts_processes
import yaml

from prmtree.cli import build_parser
from prmtree.engine.output import load_manifest
from prmtree.engine.synthetic import generate_problems, write_jsonl

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")]))}


@pytest.fixture(scope="module")
@starts_processes()
def cluster_data(tmp_path_factory):
    """30 problems and the inline run's output that every cluster run must equal."""
    directory = tmp_path_factory.mktemp("cluster-data")
    path = write_jsonl(generate_problems(30, seed=23), directory)
    inline = directory / "inline"
    r = cli("run", "--input", path, "--out", inline, "--seed", "4", "--no-progress", env=ENV)
    assert r.returncode == 0, r.stderr
    return path, inline


@pytest.mark.slow
@pytest.mark.ray
def test_ray_job_submit_to_a_local_head(tmp_path, cluster_data):
    path, inline = cluster_data
    port, dash = free_port(), free_port()
    ray = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    start = subprocess.run([ray, "start", "--head", f"--port={port}", f"--dashboard-port={dash}",
                            "--include-dashboard=true", "--num-cpus=2", "--disable-usage-stats"],
                           capture_output=True, text=True, env=ENV, timeout=180)
    assert start.returncode == 0, start.stderr
    try:
        out = tmp_path / "out"
        deadline = time.monotonic() + 150  # a loaded machine may start the head's job agent well after the head
        while True:
            r = subprocess.run(["bash", str(REPO / "examples" / "ray_job.sh"), f"http://127.0.0.1:{dash}", str(path),
                                str(out), "--seed", "4", "--workers", "2"],
                               capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)
            if "No available agent to submit job" not in r.stderr or time.monotonic() > deadline:
                break  # nothing was submitted when the agent was not up: retrying is safe
            time.sleep(3)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert "succeeded" in r.stdout + r.stderr
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, env=ENV, timeout=120)
    assert rows(out) == rows(inline)
    ex = load_manifest(out / "manifest.json").stats["executor"]
    assert ex["workers"] == 2 and ex["trees"] == 30


@pytest.mark.slow
@pytest.mark.ray
def test_cli_ray_executor_exits_nonzero_when_every_worker_dies_and_resumes(tmp_path, cluster_data):
    path, _ = cluster_data
    out = tmp_path / "out"
    config = tmp_path / "ray.toml"
    # a pilot of 2 (engine/pilot.py): problems finish before the workers die
    config.write_text("seed = 4\n[labels]\npilot_problems = 2\n[executor]\nmax_restarts = 0\ntrees_in_flight = 4\n"
                      "num_cpus_per_worker = 0\nretry_backoff_s = 0.01\n")
    inline = tmp_path / "inline"  # the same config, inline
    assert cli("run", "--input", path, "--out", inline, "--config", config, "--no-progress", env=ENV).returncode == 0
    args = [sys.executable, "-m", "prmtree", "run", "--input", str(path), "--out", str(out), "--config", str(config),
            "--executor", "ray", "--workers", "2", "--policy", "ray_policies:DiesAfter", "--no-progress"]
    r = subprocess.run(args, capture_output=True, text=True, env={**ENV, "PRMTREE_TEST_DIE_AFTER": "40"},
                       timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "prmtree: run stopped:" in r.stderr and "run the same command again to resume" in r.stderr
    assert "Traceback" not in r.stderr
    done = len(load_manifest(out / "manifest.json").completed)
    assert 0 < done < 30
    r = subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    assert rows(out) == rows(inline)


@pytest.mark.slow
def test_dockerfiles_pass_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    r = subprocess.run([hadolint, "docker/Dockerfile", "docker/Dockerfile.gpu"], capture_output=True, text=True,
                       cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr


def test_compose_file_describes_a_head_a_worker_and_a_ray_driver():
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"head", "worker", "driver"}
    for service in services.values():
        assert (REPO / "docker" / ".." / service["build"]["dockerfile"]).resolve().exists()
        assert service["build"]["context"] == ".."
    assert "--head" in services["head"]["command"]
    # the driver container has no raylet: it joins through the head's Ray Client server
    assert "--ray-client-server-port=10001" in services["head"]["command"]
    assert "--address=head:6379" in services["worker"]["command"]
    run = services["driver"]["command"][-1].split("&&")[-1].split()
    assert run[:2] == ["prmtree", "run"]
    args = build_parser().parse_args(run[1:])
    assert (args.executor, args.address, args.workers) == ("ray", "ray://head:10001", "4")


def test_ray_job_script_uploads_a_relative_parquet_input():
    """The script says the input may be JSONL, Parquet or a directory relative to the
    uploaded working_dir: no exclude may drop one (a "*.parquet" exclude did)."""
    import fnmatch
    import json
    import re

    script = (REPO / "examples" / "ray_job.sh").read_text()
    env = json.loads(re.search(r"--runtime-env-json '([^']*)'", script).group(1))
    assert env["working_dir"] == "."
    for path in ("data/problems.parquet", "data/problems.jsonl", "data/shards/part-0.parquet"):
        for pattern in env["excludes"]:
            assert not fnmatch.fnmatch(path, pattern) and not path.startswith(pattern), (path, pattern)
    assert {"out/", ".git/"} <= set(env["excludes"])


def test_kuberay_rayjob_is_a_gpu_cluster_running_prmtree():
    job = yaml.safe_load((REPO / "docker" / "kuberay-rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["prmtree", "run"]
    args = build_parser().parse_args(argv[1:])
    assert (args.executor, args.address, args.workers, args.policy) == ("ray", "auto", "auto", "vllm")
    (group,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
