"""Shared fixtures (synthetic problems written as real JSONL + PNG files, tiny models, one
local Ray), shared helpers imported by tests as ``from conftest import rows, drive``, and
the markers: a test that starts processes is ``slow`` (``-m "not slow"`` skips it)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from prmtree.engine.config import RunConfig
from prmtree.engine.driver import generation_request
from prmtree.engine.output import load_manifest, read_table
from prmtree.engine.rollout import parse_completion
from prmtree.engine.steps import Segmenter
from prmtree.engine.synthetic import generate_problems, write_jsonl
from prmtree.engine.answers import Verifier


# -- markers -----------------------------------------------------------------------------

#: Fixture name -> the marks of every test that uses it (directly or through another fixture).
FIXTURE_MARKS: dict[str, tuple[str, ...]] = {}


def starts_processes(*kinds: str):
    """Decorate a fixture (under ``@pytest.fixture``) that starts processes: a CLI run, a
    Ray cluster, a vLLM server. Every test that uses it is marked ``slow`` and ``kinds``
    (``"ray"``, ``"vllm"``), so a new test cannot forget them."""

    def register(fixture_function):
        FIXTURE_MARKS[fixture_function.__name__] = ("slow", *kinds)
        return fixture_function

    return register


def pytest_collection_modifyitems(config, items):
    """Marks from the fixtures a test uses; and a ``ray`` or ``vllm`` test is always ``slow``."""
    for item in items:
        wanted = {mark for name in getattr(item, "fixturenames", ()) for mark in FIXTURE_MARKS.get(name, ())}
        if item.get_closest_marker("ray") or item.get_closest_marker("vllm"):
            wanted.add("slow")
        for mark in sorted(wanted):
            if item.get_closest_marker(mark) is None:
                item.add_marker(mark)


# -- helpers ------------------------------------------------------------------------------

PRMTREE = [sys.executable, "-m", "prmtree"]


def cli(*args, cwd=None, env=None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``prmtree *args`` in a subprocess, its output captured as text (mark the test ``slow``)."""
    return subprocess.run([*PRMTREE, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)


def run_until_stuck(tmp_path, script_text: str, timeout_s: float, stop_with) -> tuple[int, str, str, float]:
    """Run ``script_text`` (which prints BLOCKING once its loop is held), send ``stop_with``
    half a second later (None: wait for the watchdog); exit code, stdout, stderr and the
    seconds from BLOCKING to the exit."""
    script = tmp_path / "stuck.py"
    script.write_text(script_text)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "o"), str(timeout_s)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "BLOCKING"
        started = time.monotonic()
        if stop_with is not None:
            time.sleep(0.5)
            proc.send_signal(stop_with)
        proc.wait(timeout=60)
        elapsed = time.monotonic() - started
    finally:
        proc.kill()
    return proc.returncode, proc.stdout.read(), proc.stderr.read(), elapsed


def wait_for(condition, timeout: float = 60.0) -> None:
    """Poll ``condition`` until it holds: wait for what a process does, not for a time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def completed(out) -> int:
    """How many problems ``out``'s manifest lists as done (0 before the first flush)."""
    try:
        return len(load_manifest(Path(out) / "manifest.json").completed)
    except (OSError, ValueError):
        return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png(color="red", size=(8, 8)) -> bytes:
    """A small solid PNG image."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def rows(out, table: str = "steps", problems=None) -> list[str]:
    """A table's rows as sorted reprs (images dropped): equal iff two runs wrote the same data.
    ``problems``: only the rows of these problem ids."""
    t = read_table(out, table)
    if "images" in t.column_names:
        t = t.drop_columns(["images"])
    return sorted(repr(r) for r in t.to_pylist() if problems is None or r["problem_id"] in problems)


def drive(search, policy, seed: int = 0, reverse_waves: bool = False):
    """Run ``search`` to the end synchronously with a simulated policy (no driver, no
    asyncio), building requests exactly as the driver does. ``reverse_waves`` generates a
    wave's requests in reverse order (as another executor's interleaving might) while
    still observing them in issue order."""
    config = RunConfig(seed=seed, search=search.config)
    seg, verifier = Segmenter(), Verifier()
    waves = 0
    while not search.done():
        wave = search.next_requests()
        if not wave:
            assert search.done(), "no requests but not done"
            break
        waves += 1
        order = list(reversed(range(len(wave)))) if reverse_waves else list(range(len(wave)))
        results = {}
        for i in order:
            r = wave[i]
            gen = generation_request(config, search.problem, r)
            results[i] = [
                parse_completion(search.problem, c.text, c.num_tokens, c.finish_reason, seg, verifier, r.next_step_only)
                for c in policy.complete(gen)
            ]
        for i, r in enumerate(wave):
            search.observe(r, results[i])
        assert waves < 10_000
    return search


@pytest.fixture(scope="session")
def problems():
    return generate_problems(24, seed=11)


@pytest.fixture(scope="session")
def long_problems():
    """Problems whose solutions have 8-12 steps (where search strategy matters)."""
    return generate_problems(24, seed=5, min_steps=8, max_steps=12)


@pytest.fixture(scope="session")
def problems_file(tmp_path_factory, problems) -> Path:
    return write_jsonl(problems, tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def small_problems():
    """Six problems: enough for every table and export, quick to run."""
    return generate_problems(6, seed=8)


@pytest.fixture(scope="session")
def embedded_run(tmp_path_factory, small_problems) -> Path:
    """A finished run of ``small_problems`` (images embedded, plain prompts). Read it only."""
    import prmtree

    out = tmp_path_factory.mktemp("embedded-run")
    prmtree.run(small_problems, policy="simulated", out=out, seed=1)
    return out


@pytest.fixture(scope="session")
def tiny_text_model(tmp_path_factory) -> Path:
    """A two-layer Qwen2 with a trained BPE tokenizer and chat template, built once per run."""
    from tiny_models import build_text_model

    return build_text_model(tmp_path_factory.mktemp("tiny-text"))


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory) -> Path:
    """A LLaVA with a one-layer CLIP tower and a tiny Qwen2, built once per run."""
    from tiny_models import build_vlm

    return build_vlm(tmp_path_factory.mktemp("tiny-vlm"))


@pytest.fixture(scope="session")
@starts_processes("ray")
def ray_session():
    """One real local Ray for the whole test run (about 4 s to start)."""
    import os

    os.environ["RAY_AUTH_MODE"] = "disabled"
    tests_dir = str(Path(__file__).parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")]))
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def run_with_pairs(out: Path, keep_steps_of: Callable[[list[str]], Callable[[str], bool]]) -> Path:
    """A real run of 20 problems, most with preference pairs, whose steps table then keeps only
    the rows of the problems ``keep_steps_of(problems with pairs)`` accepts, as a run can leave
    them (every path cut at an undecided first label, ``max_ci_width``): pairs without steps."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    import prmtree

    prmtree.run(generate_problems(20, seed=3), policy="simulated", out=out, seed=4)
    manifest = json.loads((out / "manifest.json").read_text())
    with_pairs = sorted(set(read_table(out, "pairs").column("problem_id").to_pylist()))
    assert len(with_pairs) >= 10
    keep = keep_steps_of(with_pairs)
    steps = read_table(out, "steps")
    kept = steps.filter(pa.array([keep(pid) for pid in steps.column("problem_id").to_pylist()]))
    for shard in [s for s in manifest["shards"] if s["table"] == "steps"]:
        (out / shard["file"]).unlink()
    manifest["shards"] = [s for s in manifest["shards"] if s["table"] != "steps"]
    pq.write_table(kept, out / "steps" / "part-00000.parquet")
    manifest["shards"].append({"table": "steps", "file": "steps/part-00000.parquet", "rows": kept.num_rows})
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.fixture
def unwritable_steps(tmp_path):
    """An output folder whose ``steps/`` cannot be written (``chattr +i`` stops root too; the
    run writes nothing there before its final flush); made writable again at the end,
    whatever the test did."""
    out = tmp_path / "o"
    (out / "steps").mkdir(parents=True)
    if subprocess.run(["chattr", "+i", str(out / "steps")], capture_output=True).returncode != 0:
        pytest.skip("chattr +i does not work here (needs root and a file system with attributes)")
    try:
        yield out
    finally:
        subprocess.run(["chattr", "-i", str(out / "steps")], check=True)
