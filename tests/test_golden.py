"""Behaviour pinned: every table's rows for fixed seeds equal the recorded fingerprints
(``tests/golden/``: the demo, each strategy under each labelling method, the Ray executor).

A refactor keeps them; a deliberate change of rows rewrites them with
``python tests/golden/scenarios.py --write`` and says why in its commit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "golden"))
import scenarios  # noqa: E402

EXPECTED = json.loads(scenarios.FINGERPRINTS.read_text())
INLINE = [name for name, (_, _, executor) in scenarios.SCENARIOS.items() if executor == "inline"]


def test_every_scenario_has_a_recorded_fingerprint():
    assert set(EXPECTED) == {"demo", *scenarios.SCENARIOS}
    assert all(set(tables) == set(scenarios.TABLES) for tables in EXPECTED.values())
    assert any(int(fp["steps"].split(":")[0]) > 0 for fp in EXPECTED.values())


def test_the_fingerprint_sees_a_changed_row(tmp_path):
    """One flipped label changes the steps fingerprint (the check can fail)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    before = scenarios.run_scenario("omega-mc", tmp_path)
    shard = sorted((tmp_path / "omega-mc" / "steps").glob("*.parquet"))[0]
    table = pq.read_table(shard)
    rows = table.to_pylist()
    rows[0]["labels"] = [not rows[0]["labels"][0], *rows[0]["labels"][1:]]
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), shard)
    after = scenarios.fingerprint(tmp_path / "omega-mc")
    assert after["steps"] != before["steps"] and after["nodes"] == before["nodes"]


@pytest.mark.parametrize("name", INLINE)
def test_rows_equal_the_recorded_ones(tmp_path, name):
    assert scenarios.run_scenario(name, tmp_path) == EXPECTED[name]


@pytest.mark.slow
def test_the_demo_writes_the_recorded_rows(tmp_path):
    assert scenarios.run_demo(tmp_path) == EXPECTED["demo"]


@pytest.mark.slow
@pytest.mark.ray
def test_the_ray_executor_writes_the_recorded_rows(tmp_path, ray_session):
    assert scenarios.run_scenario("omega-calibrated-ray", tmp_path) == EXPECTED["omega-calibrated-ray"]
