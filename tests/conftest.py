"""Shared fixtures: synthetic problems written as real JSONL + PNG files."""

from __future__ import annotations

from pathlib import Path

import pytest

from prmtree.engine.synthetic import generate_problems, write_jsonl


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
