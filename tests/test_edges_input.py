"""Issue 18, the input's edges: a row UTF-8 cannot store, an input changed under the same
ids, a bad row later fixed, duplicate and removed failed ids, slice counts past the
layout's names, a BOM, and a data set whose fields are named otherwise."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import replace

import pytest
from conftest import PRMTREE, cli
from prmtree.engine.errors import ConfigError
from prmtree.engine.output import load_manifest, read_table
from prmtree.engine.pilot import pilot_members
from prmtree.engine.problem import iter_problems
from prmtree.engine.synthetic import generate_problems, write_jsonl

import prmtree

CONFIG = {"search": {"k": 4, "budget": 16}}


def rows_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_rows(path, rows, bom=False):
    path.write_text(("\ufeff" if bom else "") + "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def run(path, out, **kwargs):
    return prmtree.run(path, out=out, policy="simulated", config=CONFIG, **kwargs)


def table_ids(out, table="steps"):
    return sorted(set(read_table(out, table).column("problem_id").to_pylist()))


@pytest.fixture
def data(tmp_path):
    """Six synthetic problems as JSONL + PNGs."""
    return write_jsonl(generate_problems(6, seed=3), tmp_path / "data")


# -- 2. a lone surrogate -------------------------------------------------------------------


@pytest.mark.parametrize("field", ["id", "question", "answer", "image"])
def test_a_lone_surrogate_in_a_row_is_bad_input_and_the_run_goes_on(tmp_path, data, field):
    rows = rows_of(data)
    rows[2][field] = rows[2][field] + "\udcff" if field != "id" else "bad\udcff"
    bad_id = "bad\\udcff" if field == "id" else rows[2]["id"]
    # json.dumps writes the surrogate as the JSON escape "\udcff": valid JSON, no character
    write_rows(data, rows)
    assert "\\udcff" in data.read_text()
    out = tmp_path / "out"
    s = run(data, out)
    assert s.problems_done == 5 and s.input_errors == 1
    [error] = read_table(out, "errors").to_pylist()
    assert error["problem_id"] == bad_id
    assert "lone surrogate '\\udcff'" in error["reason"] and "UTF-8 cannot store it" in error["reason"]
    manifest = load_manifest(out / "manifest.json")
    assert list(manifest.rejected) == [bad_id] and len(manifest.completed) == 5
    # a rerun keeps it recorded once: no second errors row, nothing left to do
    s = run(data, out)
    assert s.rollouts_this_session == 0
    assert read_table(out, "errors").num_rows == 1


def test_a_problem_given_in_python_with_a_lone_surrogate_is_bad_input(tmp_path):
    from prmtree.engine.records import Problem

    good, other = generate_problems(2, seed=4)
    bad = Problem(id=other.id, question=other.question + "\ud800", answer=other.answer, images=other.images,
                  meta=other.meta)
    s = prmtree.run([good, bad], out=tmp_path, policy="simulated", config=CONFIG)
    assert s.problems_done == 1 and s.input_errors == 1
    assert "question holds a lone surrogate '\\ud800'" in read_table(tmp_path, "errors").to_pylist()[0]["reason"]


def test_a_completion_with_a_lone_surrogate_is_an_undecodable_rollout_not_a_failure(tmp_path):
    """Model output is never the run's failure: a text with a lone surrogate counts as
    malformed ("undecodable"), a wrong rollout with no answer, and is never a path."""
    from prmtree.engine.records import Completion

    class Surrogates:
        async def generate(self, request):
            answers = [request.problem.answer, "nope", "nada"] * request.n  # right and wrong: the tree grows
            bad = "\udcff"
            return [Completion(f"step{bad if a == 'nope' else ''} {i}\n\nthen\n\n\\boxed{{{a}}}", 3, "stop")
                    for i, a in enumerate(answers[: request.n])]

    s = prmtree.run(generate_problems(2, seed=4), policy=Surrogates(), out=tmp_path, config={"labels": {"method": "mc"}})
    assert s.problems_done == 2 and s.problems_failed == 0
    assert 0 < s.stats["malformed_rollouts"]["undecodable"] < s.rollouts
    steps = read_table(tmp_path, "steps").to_pylist()
    assert steps and all("\udcff" not in c and not c.startswith("step?") for r in steps for c in r["completions"])


class _Marked:
    """The simulated policy, each completion (every one, or every other) carrying ``mark``."""

    name = "marked"

    def __init__(self, mark: str, every: int = 1) -> None:
        from prmtree.policies.simulated import SimulatedPolicy

        self.sim, self.mark, self.every = SimulatedPolicy(), mark, every

    async def generate(self, request):
        out = await self.sim.generate(request)
        for i, c in enumerate(out):
            if i % self.every == 0:
                c.text = self.mark + c.text
        return out


def _n_correct(out, depth: int) -> list[tuple[str, int, int]]:
    """Each node of ``depth``: its problem, rollouts and correct ones."""
    return sorted((n["problem_id"], n["n_rollouts"], n["n_correct"]) for n in read_table(out, "nodes").to_pylist()
                  if n["depth"] == depth)


def test_a_completion_holding_u_fffd_is_ordinary_text_graded_as_any_other(tmp_path):
    """U+FFFD is a valid character a model may write (a byte-fallback token). Before: every
    such rollout was counted "undecodable" yet graded and labelled as usual, and when each
    completion held one the breaker stopped the run ("no usable completion") although every
    answer was right."""
    problems = generate_problems(3, seed=4)
    clean = prmtree.run(problems, policy=_Marked(""), out=tmp_path / "clean", seed=3, config=CONFIG)
    marked = prmtree.run(problems, policy=_Marked("\ufffd"), out=tmp_path / "fffd", seed=3, config=CONFIG)
    assert marked.problems_done == 3 and marked.problems_failed == 0
    assert "undecodable" not in marked.stats["malformed_rollouts"]
    assert marked.rollouts == clean.rollouts > 0
    # the roots' requests are the same (deeper nodes' seeds hash their step text, which differs)
    assert _n_correct(tmp_path / "fffd", depth=0) == _n_correct(tmp_path / "clean", depth=0)
    steps = read_table(tmp_path / "fffd", "steps").to_pylist()
    assert steps and all(r["completions"][0].startswith("\ufffd") for r in steps)  # stored as written


def test_a_right_answer_in_text_that_is_not_valid_unicode_is_a_wrong_rollout(tmp_path):
    """A lone surrogate is not Unicode: the rollout is "undecodable", never graded, counted
    wrong (README: junk text "is a wrong rollout"). Before: it was counted undecodable and
    graded right all the same."""
    problems = generate_problems(3, seed=4)
    clean = prmtree.run(problems, policy=_Marked(""), out=tmp_path / "clean", seed=3, config=CONFIG)
    junk = prmtree.run(problems, policy=_Marked("\udcff", every=2), out=tmp_path / "junk", seed=3, config=CONFIG)
    assert junk.problems_done == 3
    roots = {n["problem_id"]: n for n in read_table(tmp_path / "junk", "nodes").to_pylist() if n["depth"] == 0}
    clean_roots = {n["problem_id"]: n for n in read_table(tmp_path / "clean", "nodes").to_pylist() if n["depth"] == 0}
    assert 0 < junk.stats["malformed_rollouts"]["undecodable"] < junk.rollouts
    # the same completions (one policy, one seed): only those without the surrogate count
    assert all(roots[p]["n_correct"] <= clean_roots[p]["n_correct"] for p in roots)
    assert sum(r["n_correct"] for r in roots.values()) < sum(r["n_correct"] for r in clean_roots.values())


# -- 6. the input changed under the same ids ------------------------------------------------


def test_a_changed_problem_is_refused_in_one_line_and_redone_with_rerun_changed(tmp_path, data):
    out = tmp_path / "out"
    run(data, out)
    before = {r["problem_id"]: r for r in read_table(out, "steps").to_pylist()}
    fingerprints = load_manifest(out / "manifest.json").fingerprints
    assert len(fingerprints) == 6 and all(len(f.split(".")) == 3 for f in fingerprints.values())
    rows = rows_of(data)
    changed = [rows[1]["id"], rows[4]["id"]]
    rows[1]["answer"] = "12345"  # a gold answer edited
    (data.parent / rows[4]["image"]).write_bytes((data.parent / rows[0]["image"]).read_bytes())  # an image replaced
    write_rows(data, rows)
    with pytest.raises(ConfigError) as refused:
        run(data, out)
    message = str(refused.value)
    assert "\n" not in message
    assert f"problem {changed[0]!r} (and 1 other) changed in the input" in message and "--rerun-changed" in message
    assert load_manifest(out / "manifest.json").fingerprints == fingerprints  # nothing touched
    s = run(data, out, rerun_changed=True)
    assert s.problems_done == 6 and s.rollouts_this_session > 0
    nodes = [(r["problem_id"], r["node_id"]) for r in read_table(out, "nodes").to_pylist()]
    assert len(nodes) == len(set(nodes)) and {pid for pid, _ in nodes} == set(before)  # no row twice, none lost
    # the edited gold answer is one the policy never gives: the redone problem is skipped, its old paths gone
    assert changed[0] not in table_ids(out) and changed[0] in before
    assert sorted(load_manifest(out / "manifest.json").skipped) == [changed[0]]
    manifest = load_manifest(out / "manifest.json")
    assert sorted(manifest.completed) == sorted(before) and len(manifest.completed) == 6
    assert manifest.fingerprints[changed[0]] != fingerprints[changed[0]]
    assert manifest.fingerprints[rows[0]["id"]] == fingerprints[rows[0]["id"]]
    assert cli_verify_ok(out)
    # and now it is up to date: nothing to do, exit 0 from the CLI
    r = cli("run", "--input", data, "--out", out, "--policy", "simulated", "--no-progress", "--config",
            toml(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "changed" not in r.stderr


def toml(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[search]\nk = 4\nbudget = 16\n")
    return path


def cli_verify_ok(out) -> bool:
    from prmtree.engine.output import verify_run

    return verify_run(out) == []


def test_a_rerun_does_not_read_unchanged_image_files_but_sees_a_changed_one(tmp_path, data, monkeypatch):
    from prmtree.engine import problem as problem_module

    out = tmp_path / "out"
    run(data, out)
    reads = []
    real = problem_module.read_image_file
    monkeypatch.setattr(problem_module, "read_image_file", lambda *a, **k: reads.append(a[0]) or real(*a, **k))
    s = run(data, out)
    assert s.rollouts_this_session == 0 and reads == []
    rows = rows_of(data)
    image = data.parent / rows[3]["image"]
    image.write_bytes(image.read_bytes())  # same bytes, new time: read, compared, unchanged
    os.utime(image, ns=(1, 1))
    s = run(data, out)
    assert s.rollouts_this_session == 0 and reads == [image]


def test_images_that_cannot_be_read_now_keep_a_labelled_problems_rows(tmp_path, data, capsys):
    # Before: a moved image folder (an unmounted share) made every labelled problem
    # "changed", and --rerun-changed, as the refusal advised, dropped all their rows.
    out = tmp_path / "out"
    run(data, out)
    before = read_table(out, "steps").to_pylist()
    rows = rows_of(data)
    (data.parent / rows[2]["image"]).unlink()  # one image gone
    s = run(data, out)
    err = capsys.readouterr().err
    assert s.rollouts_this_session == 0 and s.problems_done == 6
    assert f"1 labelled problem in {out} cannot have its images read now (e.g. {rows[2]['id']!r}: " in err
    assert "the rows are kept; put the images back to have them compared" in err
    images = data.parent / "images"
    images.rename(tmp_path / "away")  # every image gone
    s = run(data, out, rerun_changed=True)
    err = capsys.readouterr().err
    assert s.rollouts_this_session == 0 and "6 labelled problems" in err and "redoing" not in err
    assert read_table(out, "steps").to_pylist() == before
    assert sorted(load_manifest(out / "manifest.json").completed) == sorted(r["id"] for r in rows)
    (tmp_path / "away").rename(images)
    (images / "restored-later.png").write_bytes(b"")  # unrelated
    (data.parent / rows[2]["image"]).write_bytes((data.parent / rows[0]["image"]).read_bytes())  # back, but other bytes
    with pytest.raises(ConfigError, match=rf"problem {rows[2]['id']!r} changed in the input"):
        run(data, out)
    (data.parent / rows[2]["image"]).unlink()
    rows[2]["image"] = "https://example.com/a.png"  # the field itself edited: changed, not "cannot be read now"
    write_rows(data, rows)
    with pytest.raises(ConfigError, match=rf"problem {rows[2]['id']!r} changed in the input"):
        run(data, out)


def test_a_row_without_an_id_whose_image_is_gone_keeps_its_rows_too(tmp_path, data, capsys):
    # a second probe: its id is a hash of its image, so it read as a problem "no longer in
    # the input" beside a new bad row; it is found by its text now, and skipped as done
    rows = [{k: v for k, v in r.items() if k != "id"} for r in rows_of(data)]
    write_rows(data, rows)
    out = tmp_path / "out"
    run(data, out)
    before = read_table(out, "steps").to_pylist()
    (data.parent / rows[2]["image"]).unlink()
    s = run(data, out)
    err = capsys.readouterr().err
    assert s.rollouts_this_session == 0 and s.problems_done == 6 and s.input_errors == 0
    assert "1 labelled problem in" in err and "cannot have its images read now" in err
    assert "no longer in the input" not in err
    assert read_table(out, "steps").to_pylist() == before and read_table(out, "errors").num_rows == 0


def test_removed_problems_are_reported_and_a_failed_one_is_no_longer_retried(tmp_path, data, capsys):
    from prmtree.engine.output import DatasetWriter  # noqa: F401 - the manifest is edited as a failed run leaves it

    out = tmp_path / "out"
    rows = rows_of(data)
    run(data, out)
    manifest_path = out / "manifest.json"
    m = json.loads(manifest_path.read_text())
    m["failed"] = {"ghost": "policy: GenerationError: down (after 3 attempts)"}  # a failed id whose row is gone
    manifest_path.write_text(json.dumps(m))
    write_rows(data, rows[1:])  # and the first row removed
    s = run(data, out)
    err = capsys.readouterr().err
    assert "2 problems recorded in" in err and "are no longer in the input (e.g. 'ghost')" in err
    assert "1 labelled keep their rows" in err and "1 failed are no longer retried" in err
    assert s.retry_pending == 0
    assert load_manifest(manifest_path).failed == {}
    assert rows[0]["id"] in table_ids(out)  # kept


def test_a_manifest_without_fingerprints_still_resumes(tmp_path, data):
    out = tmp_path / "out"
    run(data, out)
    manifest_path = out / "manifest.json"
    m = json.loads(manifest_path.read_text())
    del m["fingerprints"]  # as an older prmtree wrote it
    manifest_path.write_text(json.dumps(m))
    rows = rows_of(data)
    rows[2]["answer"] = "999"  # a change it cannot see: unknown, so no refusal
    write_rows(data, rows)
    s = run(data, out)
    assert s.problems_done == 6 and s.rollouts_this_session == 0


# -- 7. a bad row fixed later; --retry-errors ----------------------------------------------


def test_a_bad_row_fixed_later_is_run_again(tmp_path, data):
    rows = rows_of(data)
    image = data.parent / rows[2]["image"]
    moved = image.with_suffix(".bak")
    image.rename(moved)  # rejected: image not found
    out = tmp_path / "out"
    s = run(data, out)
    assert s.problems_done == 5 and s.input_errors == 1
    assert read_table(out, "errors").column("problem_id").to_pylist() == [rows[2]["id"]]
    s = run(data, out)  # unchanged: still bad, recorded once
    assert s.rollouts_this_session == 0 and read_table(out, "errors").num_rows == 1
    moved.rename(image)  # fixed
    s = run(data, out)
    assert s.rollouts_this_session > 0
    m = load_manifest(out / "manifest.json")
    assert rows[2]["id"] in m.completed and m.rejected == {}
    assert read_table(out, "errors").num_rows == 0  # its old errors row dropped
    assert table_ids(out, "nodes") == sorted(r["id"] for r in rows)
    assert s.input_errors == 0 and s.problems_done == 6


def test_retry_errors_retries_every_bad_row(tmp_path, data, capsys):
    rows = rows_of(data)
    del rows[4]["answer"]
    write_rows(data, rows)
    out = tmp_path / "out"
    run(data, out)
    run(data, out, retry_errors=True)
    assert f"retrying 1 bad input row (--retry-errors; e.g. {rows[4]['id']!r})" in capsys.readouterr().err
    errors = read_table(out, "errors").to_pylist()
    assert [e["problem_id"] for e in errors] == [rows[4]["id"]]  # redone: one row, not two
    assert load_manifest(out / "manifest.json").rejected.keys() == {rows[4]["id"]}


@pytest.mark.slow
def test_the_cli_takes_rerun_changed_and_retry_errors(tmp_path, data):
    out = tmp_path / "out"
    args = ["run", "--input", data, "--out", out, "--policy", "simulated", "--no-progress", "--config", toml(tmp_path)]
    assert cli(*args).returncode == 0
    rows = rows_of(data)
    rows[0]["question"] += " Answer carefully."
    write_rows(data, rows)
    r = cli(*args)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert f"problem {rows[0]['id']!r} changed in the input" in r.stderr and "--rerun-changed" in r.stderr
    r = cli(*args, "--rerun-changed", "--retry-errors")
    assert r.returncode == 0, r.stderr
    # the first problem is one of the pilot's: every problem is redone, with floors learned again
    assert (f"problem {rows[0]['id']!r} changed in the input and was one of the pilot's problems" in r.stderr
            and "all 6 labelled problems in the input are redone" in r.stderr)


# -- 8. duplicate and removed failed ids ---------------------------------------------------


class FailsOn:
    """The simulated policy, except that it fails for good on the problem id in the
    ``PRMTREE_TEST_FAIL_ID`` environment variable (not an argument: the config stays the same)."""

    def __init__(self) -> None:
        from prmtree.policies.simulated import SimulatedPolicy

        self._inner = SimulatedPolicy()

    async def generate(self, request):
        from prmtree.engine.errors import GenerationError

        if request.problem.id == os.environ.get("PRMTREE_TEST_FAIL_ID"):
            raise GenerationError("this problem always fails", retryable=False)
        return await self._inner.generate(request)


def fail_env(fail_id: str | None) -> dict[str, str]:
    tests = os.path.dirname(__file__)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))}
    env.pop("PRMTREE_TEST_FAIL_ID", None)
    return {**env, "PRMTREE_TEST_FAIL_ID": fail_id} if fail_id else env


def test_a_failed_id_with_a_duplicate_is_retried_not_skipped_forever(tmp_path, data, monkeypatch):
    rows = rows_of(data)
    write_rows(data, rows + [dict(rows[1], question="a second copy")])
    out = tmp_path / "out"
    monkeypatch.setenv("PRMTREE_TEST_FAIL_ID", rows[1]["id"])
    s = prmtree.run(data, out=out, policy=FailsOn(), config=CONFIG)
    assert s.retry_pending == 1 and s.input_errors == 1 and s.retry_futile == 1
    [error] = read_table(out, "errors").to_pylist()
    assert error["problem_id"] == f"{rows[1]['id']} (copy 2)"
    assert error["reason"].startswith(f"duplicate id {rows[1]['id']!r} (problems.jsonl:7): an earlier row has")
    # the next run retries the failed problem (it used to be skipped as "rejected", failing forever)
    monkeypatch.delenv("PRMTREE_TEST_FAIL_ID")
    s = prmtree.run(data, out=out, policy=FailsOn(), config=CONFIG)
    m = load_manifest(out / "manifest.json")
    assert s.retry_pending == 0 and m.failed == {} and rows[1]["id"] in m.completed
    assert read_table(out, "errors").num_rows == 1  # the copy recorded once
    assert s.problems_done == 6


@pytest.mark.slow
def test_a_failed_id_removed_from_the_input_does_not_exit_3_forever(tmp_path, data):
    rows = rows_of(data)
    out = tmp_path / "out"
    args = ["run", "--input", data, "--out", out, "--policy", "test_edges_input:FailsOn", "--no-progress",
            "--config", toml(tmp_path)]
    r = cli(*args, env=fail_env(rows[5]["id"]))
    assert r.returncode == 3 and "run the same command again to retry them" in r.stderr
    assert "a retry does not clear their reasons" in r.stderr  # the policy said: not retryable
    assert rows[5]["id"] in load_manifest(out / "manifest.json").failed
    write_rows(data, rows[:5])
    r = cli(*args, env=fail_env(rows[5]["id"]))  # the policy would still fail it: it is gone, not retried
    assert r.returncode == 0, r.stderr
    assert f"1 problem recorded in {out} is no longer in the input (e.g. {rows[5]['id']!r})" in r.stderr
    assert "run the same command again" not in r.stderr
    assert load_manifest(out / "manifest.json").failed == {}


# -- 14. slice counts -----------------------------------------------------------------------


def test_a_slice_count_past_the_layouts_names_is_refused(tmp_path, data):
    from prmtree.engine.config import MAX_DRIVERS
    from prmtree.engine.output.layout import MAX_SLICES, Slice

    assert MAX_SLICES == MAX_DRIVERS == 99_999 and len(f"{MAX_SLICES}") == 5  # manifest-IIIII-of-NNNNN.json
    with pytest.raises(ConfigError, match="executor.drivers: .*must be at most 99999"):
        run(data, tmp_path / "o", drivers=100_000)
    Slice(MAX_SLICES - 1, MAX_SLICES)
    with pytest.raises(ConfigError, match=r"at most 99999 slices .* got 67352/100000"):
        run(data, tmp_path / "o", slice="67352/100000")
    with pytest.raises(ConfigError, match=r"expected i/N with 0 <= i < N"):
        run(data, tmp_path / "o", slice="-1/2")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
@pytest.mark.parametrize("flag, value, expected", [
    ("--slice", "67352/100000", "at most 99999 slices (manifest and shard names hold 5 digits), got 67352/100000"),
    ("--shard", "67352/100000", "at most 99999 slices"),
    ("--slice", "-1/2", "expected i/N with 0 <= i < N, got -1/2"),
    ("--shard", "-1/2", "expected i/N with 0 <= i < N"),
])
def test_the_cli_refuses_a_bad_slice_in_one_line(tmp_path, data, flag, value, expected):
    r = cli("run", "--input", data, "--out", tmp_path / "o", "--policy", "simulated", flag, value)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert expected in r.stderr and "expected one argument" not in r.stderr
    assert not (tmp_path / "o").exists()


# -- 10. BOM, fields named otherwise, nothing usable -------------------------------------------


@pytest.mark.slow
def test_a_pipe_as_input_is_refused_in_one_line(tmp_path, data):
    # Before: the field check read a buffer's worth of the pipe and the run the rest, so
    # the first rows were lost without a word (exit 0, "finished").
    fifo = tmp_path / "rows.fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=r"input '.*rows.fifo' is not a regular file \(a pipe or a device\): a run "
                                          r"reads its input more than once"):
        run(fifo, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    r = subprocess.run([*PRMTREE, "run", "--input", "/dev/stdin", "--out", str(tmp_path / "out2"), "--policy",
                        "simulated", "--no-progress"], input=data.read_text(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "'/dev/stdin' is not a regular file" in r.stderr


def test_json_and_jsonl_with_a_bom_are_read(tmp_path, data):
    rows = rows_of(data)
    write_rows(data, rows, bom=True)
    (data.parent / "as.json").write_text("\ufeff" + json.dumps(rows), encoding="utf-8")
    for path, out in ((data, tmp_path / "a"), (data.parent / "as.json", tmp_path / "b")):
        s = run(path, out)
        assert s.problems_done == 6 and s.input_errors == 0


def test_an_id_shaped_like_a_copys_key_or_not_a_string_is_bad_input_and_reruns_stay_clean(tmp_path, data):
    # Before: ids a, a, "a (copy 2)" put one key in the manifest twice (the real problem and
    # the copy), so every rerun was refused as "changed"; a list id was kept as its repr.
    rows = rows_of(data)
    rows[1]["id"] = rows[0]["id"]
    rows[2]["id"] = f"{rows[0]['id']} (copy 2)"
    rows[3]["id"] = [1, 2]
    rows[4]["id"] = 7  # a number is an id
    write_rows(data, rows)
    out = tmp_path / "out"
    s = run(data, out)
    assert s.problems_done == 3 and s.input_errors == 3
    reasons = {e["problem_id"]: e["reason"] for e in read_table(out, "errors").to_pylist()}
    assert reasons[f"{rows[0]['id']} (copy 2)"].startswith(f"duplicate id {rows[0]['id']!r}")
    assert reasons[f"{data.name}:3"] == (f"id '{rows[0]['id']} (copy 2)' ends like the key prmtree gives a duplicate "
                                         "id's later rows ('<id> (copy N)'); give this row another id")
    assert reasons[f"{data.name}:4"] == "id must be a string or a number, got list [1, 2]"
    assert "7" in table_ids(out)
    s = run(data, out)  # nothing changed: nothing to do, no refusal
    assert s.rollouts_this_session == 0 and s.problems_done == 3
    problems = generate_problems(3, seed=1)
    problems[2] = type(problems[2])(id=f"{problems[0].id} (copy 2)", question="q", answer="1")
    problems[1] = type(problems[1])(id=problems[0].id, question="q2", answer="2")
    for _ in range(2):
        s = prmtree.run(problems, out=tmp_path / "py", policy="simulated", config=CONFIG)
        assert s.input_errors == 2 and s.problems_done == 1


def test_rows_whose_fields_would_be_misread_are_bad_input_with_a_reason_that_says_so(tmp_path, data):
    # Before: a number question was "missing question", a chance of "0.5" or 5 and options
    # given as "ABCD" were ignored without a word (the default floor used), a URL was "not
    # found", and a Parquet decimal answer was refused.
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = rows_of(data)
    rows[0]["question"] = 123
    rows[1]["meta"] = {"chance": "0.5"}
    rows[2]["meta"] = {"chance": 5}
    rows[3]["meta"] = {"options": "ABCD"}
    rows[4]["image"] = "https://example.com/a.png"
    write_rows(data, rows)
    out = tmp_path / "out"
    s = run(data, out)
    assert s.problems_done == 1 and s.input_errors == 5
    reasons = {e["problem_id"]: e["reason"] for e in read_table(out, "errors").to_pylist()}
    assert reasons[rows[0]["id"]] == "question must be a string, got int"
    assert reasons[rows[1]["id"]] == ("meta.chance must be a number from 0 to below 1 (the share of guesses that "
                                      "reach the gold answer), got '0.5'")
    assert reasons[rows[2]["id"]].endswith("got 5")
    assert reasons[rows[3]["id"]] == ("meta.options must be a list of at least two options (or an object: letter -> "
                                      "option), got str 'ABCD'")
    assert reasons[rows[4]["id"]].startswith("image entry is a URL (https://example.com/a.png): a run reads local "
                                             "files only")
    table = pa.table({"id": ["d"], "question": ["How many?"], "answer": pa.array([decimal.Decimal("4")],
                                                                                  pa.decimal128(5, 0))})
    pq.write_table(table, tmp_path / "dec.parquet")
    problems = list(prmtree.engine.problem.iter_input(tmp_path / "dec.parquet"))
    assert problems[0].answer == "4"
    (tmp_path / "rows.csv").write_text("id,question,answer\n")
    with pytest.raises(ConfigError, match=r"input '.*rows.csv' is not a file prmtree reads \(it reads .jsonl, "
                                          r".json, .parquet; another name is read as JSONL\)"):
        run(tmp_path / "rows.csv", tmp_path / "csv")


def test_jsonl_under_another_name_and_with_crs_in_its_lines_is_read(tmp_path, data):
    # a review of the strict reader: .ndjson and mktemp names were refused; a CR inside a
    # row is whitespace JSON allows (a probe: splitting lines there broke the row in two)
    rows = rows_of(data)
    body = "\n".join(json.dumps(r).replace(", ", ",\r ", 1) for r in rows) + "\n"
    for name in ("p.ndjson", "tmp.XyZ123"):
        path = data.parent / name
        path.write_bytes(body.encode())
        s = run(path, tmp_path / name)
        assert s.problems_done == 6 and s.input_errors == 0, name
    crlf = data.parent / "crlf.jsonl"
    crlf.write_bytes(("\r\n".join(json.dumps(r) for r in rows) + "\r\n\r\nnot json\r\n").encode())
    s = run(crlf, tmp_path / "crlf")
    assert s.problems_done == 6 and s.input_errors == 1
    assert read_table(tmp_path / "crlf", "errors").to_pylist()[0]["problem_id"] == "crlf.jsonl:8"


def test_an_input_directory_with_a_broken_link_named_like_data_is_refused(tmp_path, data):
    # a probe: it was skipped as not a file, and its rows left out at exit 0
    folder = data.parent
    (folder / "more.jsonl").symlink_to(folder / "gone.jsonl")
    with pytest.raises(ConfigError, match=r"holds more.jsonl, named like data but not a regular file \(a broken link, "
                                          r"a pipe\): fix or move it"):
        run(folder, tmp_path / "o")


def test_meta_and_ids_that_would_be_misread_are_bad_input_too(tmp_path, data):
    # a probe: one option (or none) left the floor at a default as a string did; a false meta
    # ([], 0) passed as {}; NaN and 1e400 ids became "nan" and "inf"
    rows = rows_of(data)
    rows[0]["meta"] = {"options": ["only"]}
    rows[1]["meta"] = []
    lines = [json.dumps(r) for r in rows]
    lines[2] = lines[2].replace(json.dumps(rows[2]["id"]), "NaN", 1)
    lines[3] = lines[3].replace(json.dumps(rows[3]["id"]), "1e400", 1)
    data.write_text("\n".join(lines) + "\n")
    s = run(data, tmp_path / "o")
    assert s.problems_done == 2 and s.input_errors == 4
    reasons = {e["problem_id"]: e["reason"] for e in read_table(tmp_path / "o", "errors").to_pylist()}
    assert reasons[rows[0]["id"]].startswith("meta.options must be a list of at least two options")
    assert reasons[rows[1]["id"]] == "meta must be an object, got list"
    assert reasons[f"{data.name}:3"] == "id must be a finite number, got nan"
    assert reasons[f"{data.name}:4"] == "id must be a finite number, got inf"


def test_a_line_that_is_not_utf8_is_bad_input_and_a_bom_starting_any_line_is_read(tmp_path, data):
    # Before: Latin-1 text was read with U+FFFD in place of its letters and labelled as
    # such (exit 0), and a BOM after ``cat a.jsonl b.jsonl`` made that row bad JSON.
    rows = rows_of(data)
    lines = [json.dumps(r).encode() for r in rows]
    lines[1] = json.dumps(rows[1], ensure_ascii=False).replace(rows[1]["question"], "Caf\u00e9?").encode("latin-1")
    lines[3] = "\ufeff".encode() + lines[3]
    data.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "a"
    s = run(data, out)
    assert s.problems_done == 5 and s.input_errors == 1
    error = read_table(out, "errors").to_pylist()[0]
    assert error["problem_id"] == rows[1]["id"] or error["problem_id"].endswith(":2"), error
    assert "line 2 is not valid UTF-8 (byte 0xe9 at offset" in error["reason"] and "save the file as UTF-8" in error["reason"]
    assert "\ufffd" not in "".join(read_table(out, "steps").column("prompt").to_pylist())
    as_json = data.parent / "as.json"
    as_json.write_bytes(json.dumps(rows).replace(rows[0]["question"], "Caf\\u00e9").encode()[:-1] + b"\xe9]")
    s = run(as_json, tmp_path / "b")
    assert s.problems_done == 0 and s.input_errors == 1
    assert "as.json is not valid UTF-8 (byte 0xe9 at offset" in read_table(tmp_path / "b", "errors").to_pylist()[0]["reason"]


@pytest.mark.parametrize("field, renamed", [("question", "problem"), ("answer", "solution"),
                                            ("image", "image_path")])
def test_a_field_no_row_has_is_named_with_the_setting_that_maps_it(tmp_path, data, field, renamed):
    rows = [{renamed if k == field else k: v for k, v in r.items()} for r in rows_of(data)]
    write_rows(data, rows)
    with pytest.raises(ConfigError) as refused:
        run(data, tmp_path / "o")
    message = str(refused.value)
    assert f"no input row has the {field} field {field!r}" in message and "all 6 rows of" in message
    assert f"{str(data)!r} have: " in message
    assert repr(renamed) in message and f'set [input] {field}_field = "{renamed}"' in message
    assert not (tmp_path / "o").exists()
    s = run(data, tmp_path / "o", config_overrides={"input": {f"{field}_field": renamed}})
    assert s.problems_done == 6 and s.input_errors == 0


def test_a_single_row_without_the_field_is_named_in_the_singular(tmp_path, data):
    write_rows(data, [{("problem" if k == "question" else k): v for k, v in rows_of(data)[0].items()}])
    with pytest.raises(ConfigError, match=rf"\(the row of {re.escape(repr(str(data)))} has: "):
        run(data, tmp_path / "o")


@pytest.mark.slow
def test_a_run_where_no_row_was_usable_exits_non_zero_with_the_reason(tmp_path, data):
    rows = rows_of(data)
    for r in rows:
        r["image"] = "images/nowhere.png"
    write_rows(data, rows)
    args = ["run", "--input", data, "--out", tmp_path / "o", "--policy", "simulated", "--no-progress"]
    for _ in range(2):  # and its rerun: still nothing usable, still not a success
        r = cli(*args)
        assert r.returncode == 4, r.stderr
        assert f"no input row was usable: all 6 rows are bad input (e.g. {rows[0]['id']!r}: image " \
               "images/nowhere.png not found)" in r.stderr
    # a data set whose question field is named `problem`: refused before anything is written
    write_rows(data, [{("problem" if k == "question" else k): v for k, v in r.items()} for r in rows_of(data)])
    r = cli("run", "--input", data, "--out", tmp_path / "p", "--policy", "simulated", "--no-progress")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "no input row has the question field 'question'" in r.stderr
    assert 'set [input] question_field = "problem"' in r.stderr


# -- a changed pilot member: the floors learned from it are learned again ---------------------


def _rows(out):
    """Every row of the steps and nodes tables, comparable across runs (images left out)."""
    return {t: sorted(json.dumps({k: v for k, v in r.items() if k != "images"}, sort_keys=True, default=str)
                      for r in read_table(out, t).to_pylist()) for t in ("steps", "nodes")}


@pytest.mark.parametrize("member", [True, False])
def test_rerun_changed_gives_a_fresh_runs_rows_whether_or_not_a_pilot_member_changed(tmp_path, data, member, capsys):
    # Before: a changed pilot member was redone alone, with the floors and pool its old input
    # had taught the pilot: the rows (and the manifest's calibration) were not a fresh run's.
    config = {"search": {"k": 4, "budget": 16}, "labels": {"pilot_problems": 2}}
    out = tmp_path / "out"
    prmtree.run(data, out=out, policy="simulated", config=config)
    first = load_manifest(out / "manifest.json")
    members = first.calibration["members"]
    rows = rows_of(data)
    target = next(r for r in rows if (r["id"] in members) == member)
    target["answer"] = str(int(target["answer"]) - 1)  # a gold answer corrected
    write_rows(data, rows)
    capsys.readouterr()
    prmtree.run(data, out=out, policy="simulated", config=config, rerun_changed=True)
    err = capsys.readouterr().err
    fresh = tmp_path / "fresh"
    prmtree.run(data, out=fresh, policy="simulated", config=config)
    assert _rows(out) == _rows(fresh)
    again = load_manifest(out / "manifest.json")
    assert again.calibration == load_manifest(fresh / "manifest.json").calibration
    assert sorted(again.completed) == sorted(r["id"] for r in rows)
    if member:  # the pilot learned again: every problem redone
        assert again.calibration != first.calibration
        assert (f"problem {target['id']!r} changed in the input and was one of the pilot's problems" in err
                and "all 6 labelled problems in the input are redone" in err)
    else:  # only the changed one is redone, with the calibration as it was
        assert again.calibration == first.calibration
        assert f"redoing 1 problem whose input changed (e.g. {target['id']!r})" in err
    assert cli_verify_ok(out)


@pytest.mark.parametrize("lost", ["deleted", "image gone"])
def test_a_relearn_drops_the_rows_it_cannot_redo_so_no_rows_keep_the_old_floors(tmp_path, data, lost, capsys):
    # Before: a problem gone from the input (or whose image could not be read) kept its rows,
    # labelled with the floors the pilot had just learned again: two calibrations in one --out,
    # verify OK, and putting the image back changed nothing.
    config = {"search": {"k": 4, "budget": 16}, "labels": {"pilot_problems": 2}}
    out = tmp_path / "out"
    prmtree.run(data, out=out, policy="simulated", config=config)
    members = load_manifest(out / "manifest.json").calibration["members"]
    rows = rows_of(data)
    member = next(r for r in rows if r["id"] in members)
    member["answer"] = str(int(member["answer"]) - 1)  # a pilot problem's gold corrected: the floors change
    other = next(r for r in rows if r["id"] not in members)
    if lost == "deleted":
        rows.remove(other)
    else:
        image = data.parent / other["image"]
        image.rename(image.with_suffix(".away"))
    write_rows(data, rows)
    capsys.readouterr()
    prmtree.run(data, out=out, policy="simulated", config=config, rerun_changed=True)
    err = capsys.readouterr().err
    floors = {f for path in read_table(out, "steps").column("floors").to_pylist() for f in path}
    assert len(floors) == 1  # one calibration
    assert other["id"] not in load_manifest(out / "manifest.json").completed
    assert other["id"] not in set(read_table(out, "steps").column("problem_id").to_pylist())
    assert "all 5 labelled problems in the input are redone" in err
    said = "labelled loses its rows" if lost == "deleted" else "its rows are dropped"
    assert said in err
    fresh = tmp_path / "fresh"
    prmtree.run(data, out=fresh, policy="simulated", config=config)
    if lost == "deleted":
        assert _rows(out) == _rows(fresh)
    else:  # the image back: the next run redoes it, and the rows are a fresh run's
        image.with_suffix(".away").rename(image)
        prmtree.run(data, out=out, policy="simulated", config=config, retry_errors=True)
        prmtree.run(data, out=fresh, policy="simulated", config=config, retry_errors=True)
        assert _rows(out) == _rows(fresh)
    assert cli_verify_ok(out)


def test_rows_added_where_a_fresh_runs_pilot_would_take_them_are_said_and_learned_with_rerun_changed(
        tmp_path, capsys):
    # Before: rows of a new answer space appended to a run's input were labelled at the chance
    # floor, in silence (a fresh run pilots them: 0.04 against 0.02 here, and another pool).
    config = {"search": {"k": 4, "budget": 16}, "labels": {"pilot_problems": 2}}
    every = generate_problems(11, seed=3)
    first, same_space = every[:6], every[6:8]
    more = [replace(p, meta={**p.meta, "answer_space": "space2"}) for p in every[8:]]
    data = write_jsonl(first, tmp_path / "data")
    out = tmp_path / "out"
    prmtree.run(data, out=out, policy="simulated", config=config)
    calibration = load_manifest(out / "manifest.json").calibration
    # rows of a space whose pilot was full: nothing to say, and nothing redone
    write_jsonl(first + same_space, tmp_path / "data")
    capsys.readouterr()
    prmtree.run(data, out=out, policy="simulated", config=config)
    assert "pilot" not in capsys.readouterr().err
    # a new answer space: said, and the run goes on as it did (growing an input is a way to work)
    write_jsonl(first + same_space + more, tmp_path / "data")
    prmtree.run(data, out=out, policy="simulated", config=config)
    err = capsys.readouterr().err
    assert ("problem 'syn-000008' and 1 more would be among the pilot's problems of a fresh run of this input: "
            "this --out's floors were learned without them") in err
    assert load_manifest(out / "manifest.json").calibration == calibration
    # --rerun-changed learns them: the rows are a fresh run's of the whole input
    prmtree.run(data, out=out, policy="simulated", config=config, rerun_changed=True)
    assert "the pilot learns them again and all 11 labelled problems in the input are redone" in capsys.readouterr().err
    fresh = tmp_path / "fresh"
    prmtree.run(data, out=fresh, policy="simulated", config=config)
    assert _rows(out) == _rows(fresh)
    learned = load_manifest(out / "manifest.json").calibration
    assert learned == load_manifest(fresh / "manifest.json").calibration and "space2" in learned["floors"]
    # the pilot's members, as the resume computes them, are the run's own
    assert pilot_members(iter_problems(str(data)), 2, 2000) == learned["members"]


def test_a_pilot_problem_edited_before_it_was_labelled_is_refused_or_learned_again(tmp_path, data, capsys):
    # Before: a run killed after its pilot learned but before a pilot problem's rows were
    # flushed left that problem out of `completed`; its input edited, every resume (with
    # --rerun-changed too) labelled all problems with the floors its old input taught, in silence.
    from prmtree.engine.config import RunConfig
    from prmtree.engine.output.manifest import write_manifest
    from prmtree.engine.resume import _drop, open_run

    config = {"search": {"k": 4, "budget": 16}, "labels": {"pilot_problems": 2}}
    out = tmp_path / "out"
    prmtree.run(data, out=out, policy="simulated", config=config)
    m = load_manifest(out / "manifest.json")
    member = m.calibration["members"][0]
    # what that kill leaves: the calibration recorded, the member neither labelled nor listed
    opened = open_run(out, RunConfig.model_validate(m.config), m.versions)
    try:
        _drop(opened.writer, {member})
        write_manifest(out, opened.writer.manifest, "manifest.json")
    finally:
        opened.close()
    left = load_manifest(out / "manifest.json")
    assert member not in left.completed and member in left.calibration["fingerprints"]
    rows = rows_of(data)
    target = next(r for r in rows if r["id"] == member)
    target["answer"] = str(int(target["answer"]) - 1)
    write_rows(data, rows)
    with pytest.raises(ConfigError, match=rf"problem '{member}', one of the pilot's problems, changed in the input "
                                          r"since .* learned the floors from it \(before it was labelled\).* pass "
                                          r"--rerun-changed to learn them again"):
        prmtree.run(data, out=out, policy="simulated", config=config)
    capsys.readouterr()
    prmtree.run(data, out=out, policy="simulated", config=config, rerun_changed=True)
    assert f"problem {member!r} changed in the input and was one of the pilot's problems" in capsys.readouterr().err
    fresh = tmp_path / "fresh"
    prmtree.run(data, out=fresh, policy="simulated", config=config)
    assert _rows(out) == _rows(fresh)
    assert load_manifest(out / "manifest.json").calibration == load_manifest(fresh / "manifest.json").calibration
    assert cli_verify_ok(out)


def test_a_rerun_changed_that_cannot_write_its_manifest_leaves_no_rewritten_shard(tmp_path, data):
    # Before: the shards written again without the changed problem's rows stayed on disk when
    # the manifest could not be written (a full disk): listed nowhere, so `verify` failed and
    # readers of steps/*.parquet read the other problems' rows twice until the next run.
    import subprocess

    def run(path, out, **kwargs):  # one flush: each shard holds every problem's rows
        return prmtree.run(path, out=out, policy="simulated", config={
            **CONFIG, "labels": {"pilot_problems": 2}, "output": {"flush_interval_s": 1000}}, **kwargs)

    out = tmp_path / "out"
    run(data, out)
    before = sorted(str(f.relative_to(out)) for f in out.rglob("*.parquet"))
    assert len(before) == 2  # steps and nodes: the changed problem's rows beside the others
    members = load_manifest(out / "manifest.json").calibration["members"]
    rows = rows_of(data)
    target = next(r for r in rows if r["id"] not in members)  # redone alone: its shards written again
    target["answer"] = str(int(target["answer"]) + 1)
    write_rows(data, rows)
    manifest = out / "manifest.json"
    if subprocess.run(["chattr", "+i", str(manifest)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i does not work here (needs root and a file system with attributes)")
    try:  # the repair writes its shards, then the manifest cannot be replaced
        with pytest.raises(OSError):
            run(data, out, rerun_changed=True)
    finally:
        subprocess.run(["chattr", "-i", str(manifest)], check=True)
    assert sorted(str(f.relative_to(out)) for f in out.rglob("*.parquet")) == before
    assert cli_verify_ok(out)
    run(data, out, rerun_changed=True)  # the same command, once the disk is back
    fresh = tmp_path / "fresh"
    run(data, fresh)
    assert _rows(out) == _rows(fresh) and cli_verify_ok(out)


def test_a_rerun_stopped_before_the_new_pilot_learned_does_not_bring_the_old_floors_back(tmp_path, data,
                                                                                          monkeypatch):
    # Before: the writer still held the old calibration, and the flush of the stopped run wrote
    # it back: the next resume labelled every problem with floors from the old input.
    from prmtree.engine.errors import FatalExecutorError

    config = {"search": {"k": 4, "budget": 16}, "labels": {"pilot_problems": 2}}
    out = tmp_path / "out"
    prmtree.run(data, out=out, policy="simulated", config=config)
    members = load_manifest(out / "manifest.json").calibration["members"]
    rows = rows_of(data)
    target = next(r for r in rows if r["id"] in members)
    target["answer"] = str(int(target["answer"]) - 1)
    write_rows(data, rows)
    from prmtree.engine.driver import Driver

    async def engine_lost(self, items, owns=None):  # the run stops before its pilot learns (it flushes)
        raise FatalExecutorError("the engine is gone")

    with monkeypatch.context() as patch:
        patch.setattr(Driver, "run", engine_lost)
        with pytest.raises(FatalExecutorError):
            prmtree.run(data, out=out, policy="simulated", config=config, rerun_changed=True)
    assert load_manifest(out / "manifest.json").calibration == {}
    prmtree.run(data, out=out, policy="simulated", config=config)  # a plain resume: the pilot learns again
    fresh = tmp_path / "fresh"
    prmtree.run(data, out=fresh, policy="simulated", config=config)
    assert _rows(out) == _rows(fresh)
    assert load_manifest(out / "manifest.json").calibration == load_manifest(fresh / "manifest.json").calibration


def test_a_changed_pilot_member_in_a_sliced_run_is_refused_in_one_line(tmp_path, data):
    # The other slices cannot see the change: relearning in one slice would mix two calibrations.
    config = {"search": {"k": 4, "budget": 16}, "labels": {"pilot_problems": 2}}
    out = tmp_path / "out"
    for index in (0, 1):
        prmtree.run(data, out=out, policy="simulated", config=config, slice=f"{index}/2")
    members = load_manifest(out / "manifest-00000-of-00002.json").calibration["members"]
    rows = rows_of(data)
    target = next(r for r in rows if r["id"] in members)
    target["answer"] = str(int(target["answer"]) - 1)
    write_rows(data, rows)
    said = []
    for index in (0, 1):
        try:
            prmtree.run(data, out=out, policy="simulated", config=config, slice=f"{index}/2", rerun_changed=True)
        except ConfigError as exc:
            said.append(str(exc))
    assert len(said) == 1 and "\n" not in said[0]
    assert said[0].startswith(f"problem {target['id']!r} changed in the input since ")
    assert said[0].endswith("and it was one of the pilot's problems: every slice was labelled with the floors "
                            "learned from its old input, which a sliced run cannot learn again slice by slice: "
                            "use another --out")
