"""docs/ARCHITECTURE.md's "where to add things", done: each addition is one class or one
entry in one place, and a real run picks it up (the labeller's and the export format's
examples sit beside their own tests)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

import prmtree
from prmtree.engine import tables
from prmtree.engine.config import ExecutorConfig
from prmtree.engine.output import read_table
from prmtree.engine.records import Completion, GenerationRequest
from prmtree.engine.registry import EXECUTORS, STRATEGIES
from prmtree.engine.search.base import RolloutRequest, TreeSearch
from prmtree.engine.synthetic import generate_problems
from prmtree.policies import register_policy
from prmtree.policies.simulated import SimulatedPolicy

PROBLEMS = generate_problems(3, seed=8)


@STRATEGIES.register("first-solutions-test")
class FirstSolutions(TreeSearch):
    """k solutions from the root, each path then sampled where the decider wants it."""

    name = "first-solutions-test"
    settings = ()  # reads only the fields every strategy shares (k, budget, sampling)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.paths: list[list[str]] = []
        self.finished = False
        self.pending = 0

    def next_requests(self) -> list[RolloutRequest]:
        if self.finished or self.pending:
            return []
        if not self.tree.stats(self.tree.root).measured:
            wave = [self.request(self.tree.root, self.k)]
        else:
            wave, _ = self.sample_paths(self.paths)
        self.finished = not wave
        self.pending = len(wave)
        return wave

    def observe(self, request: RolloutRequest, rollouts: list) -> None:
        self.pending -= 1
        self.record(request.node_id, rollouts)
        if request.node_id == self.tree.root:
            self.paths = [self.add_rollout_path(self.tree.root, r) for r in rollouts if r.steps and r.has_answer]

    def done(self) -> bool:
        return self.finished and not self.pending


def test_a_strategy_is_one_class_in_the_registry(tmp_path):
    assert "first-solutions-test" in STRATEGIES.names()
    summary = prmtree.run(PROBLEMS, policy=SimulatedPolicy(), strategy="first-solutions-test", out=tmp_path,
                          config={"labels": {"method": "mc"}, "search": {"k": 4}})
    rows = read_table(tmp_path, "steps").to_pylist()
    assert summary.problems_done == 3 and rows
    assert {r["strategy"] for r in rows} == {"first-solutions-test"}
    # under the mc rule every step up to a path's first wrong one was sampled by its own k
    nodes = [n for n in read_table(tmp_path, "nodes").to_pylist() if n["depth"] > 0 and not n["terminal"]]
    assert nodes and all(n["n_rollouts"] in (0, 4) for n in nodes)
    assert any(n["n_rollouts"] == 4 for n in nodes)


@register_policy("constant-answer-test")
class ConstantAnswer:
    """Answers every request with one step stating the gold answer."""

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        return [Completion(f"So the answer is \\boxed{{{request.problem.answer}}}.", num_tokens=7)] * request.n


def test_a_policy_is_one_registered_class(tmp_path):
    summary = prmtree.run(PROBLEMS, policy="constant-answer-test", out=tmp_path)
    assert summary.problems_done == 3 and summary.tokens > 0
    nodes = read_table(tmp_path, "nodes").to_pylist()
    roots = [n for n in nodes if n["depth"] == 0]
    assert len(roots) == 3 and all(n["n_correct"] == n["n_rollouts"] > 0 for n in roots)


@EXECUTORS.register("counting-test")
class CountingExecutor:
    """The policy in this process, counting what it is asked."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.policy_name = "counting"
        self.requests = 0

    @classmethod
    def from_config(cls, config: ExecutorConfig, policy: Any, policy_args: dict[str, Any] | None) -> CountingExecutor:
        from prmtree.policies.base import resolve_policy

        return cls(resolve_policy(policy, policy_args))

    async def submit(self, request: GenerationRequest) -> list[Completion]:
        self.requests += 1
        return await self.policy.generate(request)

    def release(self, problem_id: str) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {"requests": self.requests}

    def load(self) -> dict[int, int]:
        return {}

    async def close(self) -> None:
        pass


def test_an_executor_is_one_class_in_the_registry(tmp_path):
    summary = prmtree.run(PROBLEMS, policy="simulated", out=tmp_path,
                          config={"executor": {"kind": "counting-test"}})
    assert summary.problems_done == 3
    assert summary.stats["executor"]["requests"] == summary.requests > 0
    assert {r["policy"] for r in read_table(tmp_path, "steps").to_pylist()} == {"counting"}
    with pytest.raises(prmtree.ConfigError, match="unknown executor 'nowhere'; known: inline, ray, "):
        prmtree.run(PROBLEMS, policy="simulated", config={"executor": {"kind": "nowhere"}})


def depth_rows(ctx: tables.RowContext) -> list[dict[str, Any]]:
    """One row per problem: how deep its tree grew."""
    depths = [s.depth for _, s in ctx.search.tree.nodes()]
    return [{"problem_id": ctx.problem.id, "max_depth": max(depths), "nodes": len(depths)}]


def test_a_table_is_one_entry_in_TABLES(tmp_path, monkeypatch):
    schema = pa.schema([("problem_id", pa.string()), ("max_depth", pa.int32()), ("nodes", pa.int64())])
    monkeypatch.setitem(tables.TABLES, "depths", tables.Table("depths", schema, depth_rows))
    prmtree.run(PROBLEMS, policy=SimulatedPolicy(), out=tmp_path)
    got = read_table(tmp_path, "depths")
    assert got.schema.names == ["problem_id", "max_depth", "nodes"]
    assert sorted(got.column("problem_id").to_pylist()) == sorted(p.id for p in PROBLEMS)
    nodes = read_table(tmp_path, "nodes").to_pylist()
    for row in got.to_pylist():
        mine = [n for n in nodes if n["problem_id"] == row["problem_id"]]
        assert row["nodes"] == len(mine) and row["max_depth"] == max(n["depth"] for n in mine)
    from prmtree.engine.output import verify_run

    assert verify_run(tmp_path) == []  # its shards are listed and checked like the others'
