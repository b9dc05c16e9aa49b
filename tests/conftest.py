"""Shared fixtures (synthetic problems written as real JSONL + PNG files, tiny models, one
local Ray) and shared helpers, imported by tests as ``from conftest import rows, drive``."""

from __future__ import annotations

from pathlib import Path

import pytest

from prmtree.engine.config import RunConfig, SearchConfig
from prmtree.engine.driver import generation_request
from prmtree.engine.output import read_table
from prmtree.engine.rollout import parse_completion
from prmtree.engine.steps import Segmenter
from prmtree.engine.synthetic import generate_problems, write_jsonl
from prmtree.engine.answers import Verifier


def rows(out, table: str = "steps") -> list[str]:
    """A table's rows as sorted reprs (images dropped): equal iff two runs wrote the same data."""
    t = read_table(out, table)
    if "images" in t.column_names:
        t = t.drop_columns(["images"])
    return sorted(map(repr, t.to_pylist()))


def search_config(**fields) -> SearchConfig:
    return SearchConfig(**fields)


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
