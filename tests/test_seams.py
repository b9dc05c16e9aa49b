"""The seams between parts: what changes rows (and is refused on resume) versus what only
changes how a run goes, the step format reaching every policy, and configuration errors
stopping before anything heavy starts."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import prmtree
from prmtree.engine.errors import ConfigError
from prmtree.engine.config import RunConfig
from prmtree.engine.output import load_manifest, read_table
from prmtree.engine.registry import STRATEGIES
from prmtree.engine.steps import Segmenter, StepFormat
from prmtree.engine.synthetic import generate_problems
from prmtree.policies import Completion, register_policy
from prmtree.rollout_workers import EXECUTORS
from prmtree.engine.contracts import Executor
from prmtree.rollout_workers.inline import InlineExecutor

PROBLEMS = generate_problems(4, seed=2)
TESTS = Path(__file__).parent


def first(out, config):
    return prmtree.run(PROBLEMS[:2], out=out, config=config)


@pytest.mark.parametrize(
    "base, change",
    [
        ({}, {"search": {"branching": 5, "c_uct": 2.0, "n_solutions": 9}}),  # inactive strategies' knobs
        ({"search": {"strategy": "shepherd"}}, {"search": {"strategy": "shepherd", "alpha": 0.3}}),
        ({}, {"policy": {"latency_s": 0.001, "batch_capacity": 64}}),  # the simulated policy's operational args
        ({}, {"executor": {"max_concurrency": 3, "trees_in_flight": 2, "request_timeout_s": 5}}),
        ({}, {"output": {"rows_per_shard": 7, "flush_interval_s": 1.0, "flush_give_up_s": 0}}),
    ],
)
def test_operational_changes_resume(tmp_path, base, change):
    first(tmp_path, base)
    merged = {**base, **change}
    if "search" in base and "search" in change:
        merged["search"] = {**base["search"], **change["search"]}
    s = prmtree.run(PROBLEMS, out=tmp_path, config=merged)
    assert s.problems_done == 4 and s.rollouts_this_session > 0  # resumed: 2 carried over, 2 new
    assert len(load_manifest(tmp_path / "manifest.json").completed) == 4


@pytest.mark.parametrize(
    "base, change, named",
    [
        ({}, {"search": {"alpha": 0.7}}, "search.alpha: 0.5 -> 0.7"),
        ({"search": {"strategy": "mcts"}}, {"search": {"strategy": "mcts", "branching": 5}}, "search.branching: 3 -> 5"),
        ({}, {"search": {"k": 4}}, "search.k: 8 -> 4"),
        ({}, {"policy": {"error_rate": 0.2}}, "policy.error_rate: (default) -> 0.2"),
        ({}, {"steps": {"format": "tags"}}, "steps.format: 'blank_line' -> 'tags'"),
        ({}, {"output": {"after_first_error": "label-false"}}, "output.after_first_error"),
        ({}, {"seed": 3}, "seed: 0 -> 3"),
        ({}, {"input": {"answer_type": "text"}}, "input.answer_type"),
    ],
)
def test_row_defining_changes_are_refused_naming_the_field(tmp_path, base, change, named):
    first(tmp_path, base)
    merged = {**base, **change}
    if "search" in base and "search" in change:
        merged["search"] = {**base["search"], **change["search"]}
    with pytest.raises(ConfigError, match="different config") as err:
        prmtree.run(PROBLEMS, out=tmp_path, config=merged)
    assert named in str(err.value)


def test_the_hash_covers_the_active_strategy_only():
    omega = RunConfig()
    assert RunConfig(search={"branching": 9}).config_hash() == omega.config_hash()
    assert RunConfig(search={"alpha": 0.9}).config_hash() != omega.config_hash()
    keys = set(omega.row_defining())
    assert "search.alpha" in keys and "search.branching" not in keys and "executor.workers" not in keys


@pytest.mark.parametrize("fmt", ["tags", "step_marker"])
def test_a_decorator_registered_policy_receives_the_runs_step_format(tmp_path, fmt):
    seen = set()

    @register_policy(f"format-echo-{fmt}")
    class FormatEcho:
        async def generate(self, request):
            seen.add(request.step_format)
            steps = ["I look at the image.", "I count.", f"So \\boxed{{{request.problem.answer}}}"]
            text = request.step_format.join(steps[len(request.prefix):], len(request.prefix))
            return [Completion(text, 9) for _ in range(request.n)]

    config = {"steps": {"format": fmt}, "search": {"strategy": "shepherd", "k": 2, "n_solutions": 2}}
    prmtree.run(PROBLEMS[:1], policy=f"format-echo-{fmt}", out=tmp_path, config=config)
    assert seen == {StepFormat(fmt)}
    (root,) = [n for n in read_table(tmp_path, "nodes").to_pylist() if n["depth"] == 0]
    assert root["n_correct"] == 2
    steps = [n["step"] for n in read_table(tmp_path, "nodes").to_pylist() if n["depth"] > 0]
    assert steps == ["I look at the image.", "I count.", f"So \\boxed{{{PROBLEMS[0].answer}}}"]


def test_step_format_round_trips_through_join_split_and_the_prompt_opening():
    steps = ["a b", "c", "d \\boxed{1}"]
    for name in ("blank_line", "step_marker", "tags"):
        fmt = StepFormat(name)
        assert Segmenter(fmt).split(fmt.join(steps)) == steps
        continuation = fmt.join(steps[2:], 2)
        opened = fmt.prefix_text(steps[:2])  # what the prompt ends with
        rest = continuation[len(fmt.next_opening(2)):]  # what a model writes after it
        assert Segmenter(fmt).split(fmt.join(steps[:2]) + fmt.delimiter + fmt.restore_opening(rest, 2)) == steps
        assert opened.startswith(fmt.join(steps[:2]))


def test_executors_implement_the_whole_contract():
    assert EXECUTORS.names()[:2] == ["inline", "ray"]  # the built-ins first (tests register more)
    from prmtree.policies.simulated import SimulatedPolicy
    from prmtree.rollout_workers.ray import RayExecutor

    assert isinstance(InlineExecutor(SimulatedPolicy()), Executor)
    assert isinstance(RayExecutor("simulated"), Executor)  # not started: the contract is structural
    assert STRATEGIES.names()[:3] == ["omega", "shepherd", "mcts"]


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["inline", "ray"])
def test_a_bad_policy_arg_exits_2_with_one_line_before_any_model_loads(tmp_path, executor):
    from prmtree.engine.synthetic import write_jsonl

    data = write_jsonl(PROBLEMS[:1], tmp_path / "data")
    marker = tmp_path / "model-loaded"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run(
        [sys.executable, "-m", "prmtree", "run", "--input", str(data), "--out", str(tmp_path / "o"),
         "--executor", executor, "--workers", "1", "--policy", "ray_policies:LoadsAModel",
         "--policy-arg", f"marker={marker}", "--policy-arg", "colour=red", "--no-progress"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines == ["prmtree: error: policy 'ray_policies:LoadsAModel' does not take arguments "
                     "['colour', 'marker']: got an unexpected keyword argument 'colour'"]
    assert not marker.exists()  # no model was loaded, no cluster started
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_a_refused_resume_builds_no_executor(tmp_path):
    import importlib

    sys.path.insert(0, str(TESTS))
    try:
        importlib.import_module("ray_policies")
        marker = tmp_path / "model-loaded"
        policy = "ray_policies:LoadsAModel"
        prmtree.run(PROBLEMS[:1], policy=policy, policy_args={"marker": str(marker)}, out=tmp_path / "o")
        marker.unlink()
        with pytest.raises(ConfigError, match="different config"):
            prmtree.run(PROBLEMS[:1], policy=policy, policy_args={"marker": str(marker), "error_rate": 0.3},
                        out=tmp_path / "o")
        assert not marker.exists()  # refused before the (7B) model would have loaded
    finally:
        sys.path.remove(str(TESTS))
