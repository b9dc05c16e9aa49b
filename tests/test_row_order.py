"""Two runs of one seed hold the same rows in an order set by timing (each problem's rows are
written when its tree finishes); what is made from them must not depend on that order.
Before, `prmtree train` on two `prmtree demo` outputs with identical rows trained different
PRMs (its split and shuffle followed the row order: ProcessBench F1 0.652 against 0.553),
and exports listed the rows in finishing order."""

from __future__ import annotations

import asyncio

import pyarrow.parquet as pq
import pytest

import prmtree
from prmtree.engine.output import read_table
from prmtree.engine.synthetic import generate_problems
from prmtree.export import export
from prmtree.policies.simulated import SimulatedPolicy
from prmtree.train.data import load_rows, tree_rows


class OrderedBy(SimulatedPolicy):
    """The simulated policy, each problem's requests delayed by its rank: the trees finish
    in that order (first ranked first)."""

    def __init__(self, ranks: dict[str, int]) -> None:
        super().__init__()
        self.ranks = ranks

    async def generate(self, request):
        await asyncio.sleep(0.004 * self.ranks[request.problem.id])
        return self.complete(request)


@pytest.fixture(scope="module")
def two_orders(tmp_path_factory):
    problems = generate_problems(8, seed=21)
    ids = [p.id for p in problems]
    outs = []
    for order in (ids, ids[::-1]):
        out = tmp_path_factory.mktemp("order")
        policy = OrderedBy({pid: rank for rank, pid in enumerate(order)})
        prmtree.run(problems, policy=policy, out=out, seed=3, config={"labels": {"learn_floor": False}})
        outs.append(out)
    return outs


def _written(out, table: str) -> list[str]:
    return [pid for f in sorted((out / table).glob("part-*.parquet"))
            for pid in pq.read_table(f, columns=["problem_id"]).column("problem_id").to_pylist()]


def test_the_two_runs_wrote_the_same_rows_in_another_order(two_orders):
    a, b = two_orders
    assert _written(a, "steps") != _written(b, "steps")  # the premise: timing set the order
    assert sorted(_written(a, "steps")) == sorted(_written(b, "steps"))


@pytest.mark.parametrize("table", ["steps", "nodes", "pairs"])
def test_tables_read_back_in_id_order(two_orders, table):
    a, b = (read_table(out, table) for out in two_orders)
    assert a.num_rows > 0 and a.equals(b)
    ids = a.column("problem_id").to_pylist()
    assert ids == sorted(ids)


def test_training_rows_and_tree_paths_do_not_depend_on_the_order(two_orders):
    a, b = (load_rows(out) for out in two_orders)
    assert a == b and len(a) > 8
    assert tree_rows(two_orders[0], a) == tree_rows(two_orders[1], b)


@pytest.mark.parametrize("fmt", ["hf", "openrlhf", "math-shepherd"])
def test_an_export_of_either_run_is_the_same(two_orders, tmp_path, fmt):
    made = []
    for i, out in enumerate(two_orders):
        target = tmp_path / f"{fmt}-{i}"
        assert export(out, fmt, target) > 0
        made.append({p.relative_to(target): p.read_bytes() for p in sorted(target.rglob("*"))
                     if p.is_file() and p.name != "README.md"})
    assert made[0] == made[1]
