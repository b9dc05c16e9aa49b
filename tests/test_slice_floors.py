"""The slices of one --out share one set of floors (README, the pilot): a pilot member that
fails is searched again before the pilot learns without it; slices whose pilots lost
different members are found by ``verify``, the summary and ``inspect``; and ``--force``
starts such a slice over with the floors of a sibling that lost none."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import prmtree
import pytest
from conftest import PRMTREE, rows

from prmtree.cli import main
from prmtree.engine.output import Slice, load_manifest
from prmtree.engine.pilot import Calibration
from prmtree.engine.synthetic import generate_problems, write_jsonl
from prmtree.policies.simulated import SimulatedPolicy

PROBLEMS = generate_problems(18, seed=41, min_steps=4, max_steps=7)
MEMBER = PROBLEMS[2].id  # among the pilot's 6 members
CONFIG = {"seed": 3, "search": {"budget": 60}, "labels": {"pilot_problems": 6},
          "executor": {"kind": "inline", "max_attempts": 1, "retry_backoff_s": 0.0, "breaker_window": 10**6}}
TABLES = ("steps", "nodes", "pairs")


class FlakyOnce(SimulatedPolicy):
    """The first request for each of ``flaky`` fails, as one 502 would; every later one passes
    (private state: not part of the config, so its runs and a clean one share one)."""

    def __init__(self, flaky: tuple[str, ...] = ()) -> None:
        super().__init__()
        self._flaky = set(flaky)

    async def generate(self, request):
        if request.problem.id in self._flaky:
            self._flaky.discard(request.problem.id)
            raise RuntimeError("transient 502 from the server")
        return await super().generate(request)


def calibrations(out):
    return [load_manifest(p).calibration for p in sorted(out.glob("manifest*.json"))]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    prmtree.run(PROBLEMS, policy=FlakyOnce(), out=out, config=CONFIG)
    return out


def test_one_transient_pilot_failure_changes_no_floor_with_one_driver(clean, tmp_path):
    s = prmtree.run(PROBLEMS, policy=FlakyOnce((MEMBER,)), out=tmp_path, config=CONFIG)
    assert s.problems_failed == 0 and s.retry_pending == 0
    assert s.stats["labelling"]["pilot_searched_again"] == 1  # its first search's work is in the totals
    assert calibrations(tmp_path) == calibrations(clean) and "lost" not in calibrations(tmp_path)[0]
    for table in TABLES:
        assert rows(tmp_path, table) == rows(clean, table), table


@pytest.mark.slow
def test_one_transient_pilot_failure_in_one_of_three_drivers_leaves_one_set_of_floors(clean, tmp_path):
    # before: the driver that met the 502 learned from 5 members, its siblings from 6, and the
    # --out held two sets of floors with exit 0 and nothing failed
    s = prmtree.run(PROBLEMS, policy=FlakyOnce((MEMBER,)), out=tmp_path, config=CONFIG, drivers=3)
    assert s.problems_failed == 0
    [one] = calibrations(clean)
    assert calibrations(tmp_path) == [one, one, one]
    for table in TABLES:
        assert rows(tmp_path, table) == rows(clean, table), table


def test_a_member_that_fails_for_good_is_named_in_the_calibration(tmp_path):
    class Down(SimulatedPolicy):
        async def generate(self, request):
            if request.problem.id == MEMBER:
                raise RuntimeError("this backend cannot answer it")
            return await super().generate(request)

    s = prmtree.run(PROBLEMS, policy=Down(), out=tmp_path, config=CONFIG)
    assert s.problems_failed == 1
    [cal] = calibrations(tmp_path)
    assert cal["lost"] == {MEMBER: "RuntimeError: this backend cannot answer it (1 attempt)"}
    assert cal["floors"]["number"]["problems"] == 5 and MEMBER in cal["members"]
    assert Calibration.from_dict(cal).as_dict() == cal
    older = {key: value for key, value in cal.items() if key != "lost"}  # a manifest from before it was recorded
    assert Calibration.from_dict(older).lost == {} and Calibration.from_dict(older).as_dict() == older


def test_a_member_that_timed_out_is_not_searched_again(tmp_path):
    # a hung member searched twice held the pilot, and every problem waiting on it, past the
    # breaker's silence limit: the run stopped "a backend that answers nothing", every rerun alike
    class Hangs(SimulatedPolicy):
        calls = 0

        async def generate(self, request):
            if request.problem.id == MEMBER:
                Hangs.calls += 1
                await asyncio.sleep(60)
            return await super().generate(request)

    config = {**CONFIG, "executor": {**CONFIG["executor"], "request_timeout_s": 0.3}}
    s = prmtree.run(PROBLEMS, policy=Hangs(), out=tmp_path, config=config)
    assert Hangs.calls == 1 and s.problems_failed == 1
    assert "pilot_searched_again" not in s.stats["labelling"]
    [cal] = calibrations(tmp_path)
    assert cal["lost"] == {MEMBER: "GenerationError: policy timed out after 0.3 s (1 attempt)"}


def test_the_floors_to_share_are_those_of_a_pilot_that_lost_no_member_another_learned_from():
    from prmtree.engine.pilot import cleanest

    lost_x = {"floors": {"number": {"problems": 5}}, "lost": {"x": "502"}}
    lost_y = {"floors": {"number": {"problems": 5}}, "lost": {"y": "502"}}
    whole = {"floors": {"number": {"problems": 6}}}
    assert cleanest({"0": lost_x, "1": whole, "2": whole}) == "1"
    assert cleanest({"0": lost_x}) == "0"  # a sole learned sibling's floors are shared, lost or not
    assert cleanest({"0": lost_x, "1": lost_y}) is None and cleanest({"1": lost_y}, [lost_x]) is None
    older = {"floors": {"number": {"problems": 5}}}  # before `lost` was recorded: the count tells
    assert cleanest({"0": older, "1": whole}) == "1"


# A job array's slices started together, each its own process: the policy fails MEMBER for
# good where LOSE names it, and holds every request until each of PARTIES processes has
# asked, so all have opened --out (and none took another's floors) before any pilot learns.
POLICY = '''
import asyncio, os, pathlib
from prmtree.policies.simulated import SimulatedPolicy

class Policy(SimulatedPolicy):
    async def generate(self, request):
        if os.environ.get("BARRIER"):
            here = pathlib.Path(os.environ["BARRIER"])
            (here / str(os.getpid())).touch()
            for _ in range(1200):
                if len(list(here.iterdir())) >= int(os.environ["PARTIES"]):
                    break
                await asyncio.sleep(0.025)
        if request.problem.id == os.environ.get("LOSE"):
            raise RuntimeError("this backend cannot answer it")
        return await super().generate(request)
'''
TOML = ('seed = 3\n[search]\nbudget = 60\n[labels]\npilot_problems = 6\n'
        '[executor]\nmax_attempts = 1\nretry_backoff_s = 0.0\nbreaker_window = 1000000\n')


@pytest.mark.slow
def test_slices_with_different_floors_are_loud_and_force_repairs_them(tmp_path, monkeypatch, capfd):
    (tmp_path / "slicepol.py").write_text(POLICY)
    (tmp_path / "run.toml").write_text(TOML)
    monkeypatch.syspath_prepend(str(tmp_path))
    data = write_jsonl(PROBLEMS, tmp_path / "data")
    out = tmp_path / "out"

    def command(target, *more):
        return ["run", "--input", str(data), "--out", str(target), "--config", str(tmp_path / "run.toml"),
                "--policy", "slicepol:Policy", "--no-progress", *more]

    lose = next(p.id for p in PROBLEMS[:6] if not Slice(0, 3).owns(p.id))  # another slice's: slice 0 fails nothing

    path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]

    def slices(*indices, **env):
        barrier = tmp_path / f"barrier-{'-'.join(map(str, indices))}"
        barrier.mkdir()
        procs = [subprocess.Popen([*PRMTREE, *command(out, "--slice", f"{i}/3")], cwd=tmp_path,
                                  env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *path]), "BARRIER": str(barrier),
                                       "PARTIES": str(len(indices)), **(env if i == 0 else {})},
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in indices]
        for proc in procs:
            assert proc.wait(timeout=120) == 0, proc.stdout.read()

    assert main(command(tmp_path / "one")) == 0  # one driver, nothing lost
    slices(0, 1, LOSE=lose)  # slice 0's pilot lost a member, slice 1's did not
    slices(2)  # it takes a sibling's floors: the one that lost none (before: the first, slice 0's)
    c0, c1, c2 = calibrations(out)
    assert c0["lost"] == {lose: "RuntimeError: this backend cannot answer it (1 attempt)"} and "lost" not in c1
    assert c2 == c1 != c0
    assert c0["floors"]["number"]["floor"] != c1["floors"]["number"]["floor"]
    assert rows(out) != rows(tmp_path / "one")

    capfd.readouterr()
    assert main(["verify", str(out)]) == 1
    said = capfd.readouterr().out
    f0, f1 = c0["floors"]["number"]["floor"], c1["floors"]["number"]["floor"]
    assert (f"floors: MIXED: the slices were labelled with different floors, though the slices of one --out must "
            f"share one set (a pilot member failed for some slices' pilots only): slice 0/3: number {f0:.4f} from 5 "
            f"problems (its pilot lost {lose!r} (RuntimeError: this backend cannot answer it (1 attempt))); slices "
            f"1/3, 2/3: number {f1:.4f} from 6 problems (lost none). To repair: run the same command again with "
            "--force (a job array: the command of slice 0/3, with --force): it starts slice 0/3 over with the floors "
            "of slice 1/3, and the others keep their rows") in said, said

    assert main(["inspect", str(out)]) == 0
    shown = capfd.readouterr().out
    assert "floors of slice 0/3" in shown and "floors of slices 1/3, 2/3" in shown and "floors differ" in shown

    # the merged summary of a several-driver job (the same --out, resumed: nothing left to do) warns
    assert main(command(out, "--executor", "inline", "--drivers", "3")) == 0
    printed = capfd.readouterr().out
    assert "warning: the slices were labelled with different floors" in printed.replace("\n", " "), printed

    # the repair the messages name: slice 0 starts over with slice 1's floors, the others keep theirs
    kept = {i: load_manifest(out / Slice(i, 3).manifest_name).shards for i in (1, 2)}
    assert main(command(out, "--executor", "inline", "--drivers", "3", "--force")) == 0
    err = capfd.readouterr().err
    assert ("repaired: --force: manifest-00000-of-00003.json's floors were learned without "
            f"{lose!r}, unlike a sibling slice's, so this slice was started over: it takes the floors of "
            "manifest-00001-of-00003.json") in err.replace("\n", " "), err
    assert calibrations(out) == [c1, c1, c1] == calibrations(tmp_path / "one") * 3
    assert {i: load_manifest(out / Slice(i, 3).manifest_name).shards for i in (1, 2)} == kept
    for table in TABLES:
        assert rows(out, table) == rows(tmp_path / "one", table), table
    assert main(["verify", str(out)]) == 0


def _learned(floor, problems, lost=None):
    from prmtree.engine.output.manifest import Manifest

    calibration = {"floors": {"number": {"floor": floor, "problems": problems}}, "pool": {}, "members": []}
    if lost:
        calibration["lost"] = lost
    return Manifest(config={}, config_hash="x", versions={}, calibration=calibration)


def test_floors_apart_without_a_lost_member_are_said_but_fail_nothing():
    # Before: verify failed ("floors: MIXED ... use another --out") on a backend whose
    # answers are not reproducible for a seed, though no member failed and nothing repairs it
    from prmtree.engine.output.verification import floor_sets, floors_apart, slices_to_redo

    apart = {"manifest-00000-of-00002.json": _learned(0.0353, 16), "manifest-00001-of-00002.json": _learned(0.0350, 16)}
    assert len(floor_sets(apart)) == 2 and slices_to_redo(apart) == []
    said = floors_apart(apart)
    assert said.startswith("the slices' pilots learned different floors though none lost a member another "
                           "learned from: the backend did not answer the same pilot requests the same way")
    assert "use another --out" not in said and "a pilot member failed" not in said


def test_an_older_manifest_that_learned_from_fewer_problems_is_not_said_to_have_lost_none():
    from prmtree.engine.output.verification import floor_sets, slices_to_redo

    older = {"manifest-00000-of-00002.json": _learned(0.0398, 16), "manifest-00001-of-00002.json": _learned(0.0362, 15)}
    texts = [s.described() for s in floor_sets(older)]
    assert texts == ["slice 0/2: number 0.0398 from 16 problems (lost none)",
                     "slice 1/2: number 0.0362 from 15 problems (its pilot lost a member; which is not recorded: "
                     "an older prmtree's manifest)"]
    assert slices_to_redo(older) == ["manifest-00001-of-00002.json"]
