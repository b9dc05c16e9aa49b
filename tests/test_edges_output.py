"""Issue 18, the output directory's edges: stray manifest copies and shards listed twice
(item 9), exporting a run that is not finished (10), two exports to one target at once
(11), and ``image_mode = "path"`` runs that move (12). Each test causes the fault for real."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq
import pytest
from conftest import PRMTREE, completed, wait_for
from prmtree.engine.output import STRAY, load_manifest, read_table, verify_run
from prmtree.engine.output.atomic import sha256_file
from prmtree.engine.output.layout import Slice
from prmtree.engine.synthetic import generate_problems, write_jsonl

import prmtree
from prmtree.cli import main
from prmtree.export import ExportError, ExportOptions, export
from prmtree.inspect import collect

TINY = {"search": {"budget": 16}}


def _run(out: Path, n: int = 6, **kwargs) -> Path:
    prmtree.run(generate_problems(n, seed=3), policy="simulated", out=out, seed=1, config=TINY, **kwargs)
    return out


def _jsonl_records(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def _one_line(capsys, code: int = 2, *argv: str) -> str:
    with pytest.raises(SystemExit) as refused:
        main(list(argv))
    assert refused.value.code == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("prmtree: error: "), err
    return err[0]


# -- 9: stray manifests, shards listed twice -----------------------------------------------


def test_a_stray_manifest_copy_is_reported_by_verify_and_never_read_twice(tmp_path, capsys):
    out = _run(tmp_path / "o")
    steps = read_table(out, "steps").num_rows
    shutil.copy(out / "manifest.json", out / "manifest-backup.json")
    # a name of the manifest pattern that no slice writes (a one-slice layout is manifest.json)
    shutil.copy(out / "manifest.json", out / "manifest-00000-of-00001.json")

    strays = sorted(d.file for d in verify_run(out) if d.manifest == STRAY)
    assert strays == ["manifest-00000-of-00001.json", "manifest-backup.json"]
    assert main(["verify", str(out)]) == 1
    said = capsys.readouterr().out.splitlines()
    assert said[0].startswith("manifest.json: OK: ")
    assert [line.split(":")[0] for line in said[1:]] == strays
    assert all(": STRAY: no slice's manifest by its name" in line for line in said[1:])

    assert read_table(out, "steps").num_rows == steps
    assert collect(out).manifest["completed"] == 6 and collect(out).paths == steps
    assert main(["inspect", str(out)]) == 0
    assert "6 / 0 / 0" in capsys.readouterr().out  # problems completed / skipped / failed
    assert main(["export", str(out), "--format", "jsonl", "--to", str(tmp_path / "x.jsonl")]) == 0
    assert _jsonl_records(tmp_path / "x.jsonl") == steps
    assert export(out, "hf", tmp_path / "hf") == steps
    assert "| problems completed | 6 |" in (tmp_path / "hf" / "README.md").read_text()


def test_a_shard_listed_twice_in_one_manifest_or_in_two_is_reported_and_read_once(tmp_path, capsys):
    out = _run(tmp_path / "o")
    steps = read_table(out, "steps").num_rows
    manifest = json.loads((out / "manifest.json").read_text())
    shard = next(s for s in manifest["shards"] if s["table"] == "steps")
    manifest["shards"].append(dict(shard))  # listed twice, with its problems
    manifest["completed"] += manifest["completed"][:2]
    (out / "manifest.json").write_text(json.dumps(manifest))

    [damage] = verify_run(out)
    assert damage.file == shard["file"] and damage.problem.startswith("listed 2 times in manifest.json")
    assert main(["verify", str(out)]) == 1
    assert f"manifest.json: DAMAGED: {shard['file']}: listed 2 times" in capsys.readouterr().out
    assert read_table(out, "steps").num_rows == steps
    assert collect(out).manifest["completed"] == 6
    assert export(out, "jsonl", tmp_path / "x.jsonl") == steps == _jsonl_records(tmp_path / "x.jsonl")

    # across two slices' manifests: slice 1 also lists a shard of slice 0
    sliced = tmp_path / "s"
    _run(sliced, slice="0/2")
    _run(sliced, slice="1/2")
    steps = read_table(sliced, "steps").num_rows
    first = json.loads((sliced / "manifest-00000-of-00002.json").read_text())
    second = json.loads((sliced / "manifest-00001-of-00002.json").read_text())
    shard = next(s for s in first["shards"] if s["table"] == "steps")
    second["shards"].append(shard)
    (sliced / "manifest-00001-of-00002.json").write_text(json.dumps(second))
    [damage] = verify_run(sliced)
    assert (damage.manifest, damage.file) == ("manifest-00001-of-00002.json", shard["file"])
    assert damage.problem.startswith("also listed in manifest-00000-of-00002.json")
    assert read_table(sliced, "steps").num_rows == steps
    assert export(sliced, "jsonl", tmp_path / "y.jsonl") == steps

    # a slice's manifest copied over another slice's name: found, and export refuses it
    shutil.copy(sliced / "manifest-00000-of-00002.json", sliced / "manifest-00001-of-00002.json")
    problems = [d.problem for d in verify_run(sliced) if d.file is None]
    assert any(p.startswith("holds the manifest of slice 0/2, not of the slice its name says") for p in problems)
    line = _one_line(capsys, 2, "export", str(sliced), "--format", "jsonl", "--to", str(tmp_path / "z.jsonl"))
    assert "is damaged" in line and not (tmp_path / "z.jsonl").exists()


def test_a_directory_holding_only_a_stray_manifest_is_no_run_in_one_line(tmp_path, capsys):
    out = _run(tmp_path / "o")
    (out / "manifest.json").rename(out / "manifest-old.json")
    for command in ("verify", "inspect"):
        line = _one_line(capsys, 2, command, str(out))
        assert "holds no prmtree run: manifest-old.json is no slice's manifest" in line
    line = _one_line(capsys, 2, "export", str(out), "--format", "hf", "--to", str(tmp_path / "hf"))
    assert "manifest-old.json is no slice's manifest" in line and not (tmp_path / "hf").exists()
    with pytest.raises(ExportError, match="manifest-old.json is no slice's manifest"):
        export(out, "jsonl", tmp_path / "x.jsonl")
    with pytest.raises(ValueError, match="manifest-old.json is no slice's manifest"):
        read_table(out, "steps")


# -- 10: exporting a run that is not finished ------------------------------------------


@pytest.mark.slow
def test_export_of_a_run_in_progress_or_crashed_is_refused_unless_allow_partial(tmp_path, capsys):
    data = write_jsonl(generate_problems(30, seed=4), tmp_path / "data")
    (tmp_path / "c.toml").write_text("[search]\nbudget = 16\n[labels]\npilot_problems = 2\n[executor]\n"
                                     "trees_in_flight = 1\n[output]\nflush_interval_s = 0.1\n")
    out, target = tmp_path / "o", tmp_path / "x.jsonl"
    running = subprocess.Popen([*PRMTREE, "run", "--input", str(data), "--out", str(out), "--no-progress",
                                "--seed", "1", "--policy", "simulated", "--config", str(tmp_path / "c.toml"),
                                "--policy-arg", "latency_s=0.3"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: completed(out) >= 1)
        export_cmd = ["export", str(out), "--format", "jsonl", "--to", str(target)]
        line = _one_line(capsys, 2, *export_cmd)
        assert re.search(r"is not a finished run: \d+ problems? done so far", line)
        assert f"the run is still in progress (pid {running.pid} " in line
        assert "--allow-partial" in line and not target.exists()
        assert main([*export_cmd, "--allow-partial"]) == 0
        warned = capsys.readouterr().err
        assert warned.startswith("prmtree: warning: ") and "still in progress" in warned
        assert _jsonl_records(target) > 0
        assert running.poll() is None  # all of that while the run was going on
    finally:
        running.send_signal(signal.SIGKILL)  # a crash: the manifest still says "running"
        running.wait(30)
    assert load_manifest(out / "manifest.json").status == "running"
    with pytest.raises(ExportError) as refused:
        export(out, "jsonl", tmp_path / "y.jsonl")
    message = str(refused.value)
    assert re.search(r"\d+ problems? done so far", message) and "no process is writing it (stopped or crashed)" in message
    assert "run its command again to finish it" in message and "allow_partial=True" in message
    with pytest.warns(UserWarning, match="stopped or crashed"):
        assert export(out, "jsonl", tmp_path / "y.jsonl", ExportOptions(allow_partial=True)) > 0
    # resumed to the end (latency is operational: free to change on resume), it exports with no word
    prmtree.run(data, out=out, seed=1, policy="simulated", config=str(tmp_path / "c.toml"))
    assert main(["export", str(out), "--format", "jsonl", "--to", str(tmp_path / "z.jsonl")]) == 0
    assert capsys.readouterr().err == ""
    assert _jsonl_records(tmp_path / "z.jsonl") == read_table(out, "steps").num_rows


# -- 11: two exports to one target at once -----------------------------------------------


def _stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (SIGSTOP): its state in /proc is T."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] == "T"


def _paused_export(out: Path, target: Path, *extra: str) -> subprocess.Popen:
    """An ``hf`` export that stops itself once it holds the target's lock and has written its data."""
    env = {**os.environ, "PRMTREE_FAULT": "export_written"}
    process = subprocess.Popen([*PRMTREE, "export", str(out), "--format", "hf", "--to", str(target), *extra],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    wait_for(lambda: process.poll() is not None or _stopped(process.pid))
    assert process.poll() is None, process.communicate()
    return process


def _card_title(target: Path) -> str:
    return next(line for line in (target / "README.md").read_text().splitlines() if line.startswith("pretty_name:"))


@pytest.mark.slow
def test_a_second_export_to_a_target_being_written_fails_naming_the_holder_and_nothing_mixes(tmp_path, capsys):
    out = _run(tmp_path / "o")
    steps = read_table(out, "steps").num_rows
    target = tmp_path / "hf"
    first = _paused_export(out, target, "--pretty-name", "first", "--test-size", "0.5")
    try:
        assert not target.exists()  # written beside it, renamed into place at the end
        for extra in ((), ("--overwrite",)):  # this process is the second export
            line = _one_line(capsys, 2, "export", str(out), "--format", "hf", "--to", str(target),
                             "--pretty-name", "second", *extra)
            assert f"another export is writing {str(target)!r} now (pid {first.pid} on host " in line
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(60) == 0
    assert _card_title(target) == 'pretty_name: "first"'
    assert sorted(p.name for p in (target / "data").iterdir()) == [
        "test-00000-of-00001.parquet", "train-00000-of-00001.parquet"]

    # --overwrite of an earlier export: while it writes, readers see the earlier one, whole
    (target / ".gitattributes").write_text("*.parquet filter=lfs\n")
    third = _paused_export(out, target, "--pretty-name", "third", "--overwrite")
    try:
        assert _card_title(target) == 'pretty_name: "first"'
        assert (target / "data" / "test-00000-of-00001.parquet").exists()
    finally:
        third.send_signal(signal.SIGCONT)
    assert third.wait(60) == 0
    assert _card_title(target) == 'pretty_name: "third"'
    assert sorted(p.name for p in (target / "data").iterdir()) == [
        "train-00000-of-00001.parquet"]  # no test split left from the first
    assert pq.read_table(target / "data" / "train-00000-of-00001.parquet").num_rows == steps
    assert (target / ".gitattributes").read_text() == "*.parquet filter=lfs\n"  # a Hub clone's file stays
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hf.export.lock", "hf", "o"]  # no temporary left


@pytest.mark.slow
def test_two_exports_started_together_leave_one_whole_export(tmp_path):
    out = _run(tmp_path / "o")
    target = tmp_path / "hf"
    started = [subprocess.Popen([*PRMTREE, "export", str(out), "--format", "hf", "--to", str(target),
                                 "--pretty-name", name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for name in ("a", "b")]
    results = [(p.wait(60), p.stderr.read()) for p in started]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    winner = "ab"[[code for code, _ in results].index(0)]
    loser = next(err for code, err in results if code == 2)
    assert "another export is writing" in loser or "exists and is not empty" in loser
    assert _card_title(target) == f'pretty_name: "{winner}"'
    assert pq.read_table(target / "data" / "train-00000-of-00001.parquet").num_rows == read_table(out, "steps").num_rows


# -- 12: image_mode = "path" runs that move ---------------------------------------------


def test_image_mode_path_stores_paths_relative_to_the_run_and_a_moved_run_exports(tmp_path, capsys):
    problems = generate_problems(5, seed=6)
    out = tmp_path / "o"
    prmtree.run(problems, policy="simulated", out=out, config={**TINY, "output": {"image_mode": "path"}})
    [image] = read_table(out, "steps").column("images").to_pylist()[0]
    assert image["bytes"] is None and image["path"].startswith("images/") and not os.path.isabs(image["path"])

    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    shutil.move(out, moved)
    assert verify_run(moved) == []
    assert main(["verify", str(moved)]) == 0
    capsys.readouterr()
    export(moved, "hf", tmp_path / "hf")
    by_id = {p.id: p.images[0].data for p in problems}
    for row in pq.read_table(tmp_path / "hf" / "data" / "train-00000-of-00001.parquet").to_pylist():
        assert row["images"][0]["bytes"] == by_id[row["problem_id"]]
    assert main(["inspect", str(moved), "--html", str(tmp_path / "r.html")]) == 0
    assert "data:image/png;base64," in (tmp_path / "r.html").read_text()

    # verify checks the files are there
    gone = moved / image["path"]
    gone.unlink()
    [damage] = [d for d in verify_run(moved) if d.file.startswith("steps/")]
    assert damage.problem == f"1 image files its rows point to are missing (e.g. {image['path']!r})"
    assert main(["verify", str(moved)]) == 1
    assert f"image files its rows point to are missing (e.g. {image['path']!r})" in capsys.readouterr().out
    line = _one_line(capsys, 2, "export", str(moved), "--format", "jsonl", "--to", str(tmp_path / "x.jsonl"))
    assert "is damaged" in line and "image files its rows point to are missing" in line


def test_an_older_runs_absolute_image_paths_still_read_after_the_run_moved(tmp_path):
    # runs before issue 18 stored absolute paths to their images/ copies: rewrite a run's
    # shards so (manifest entries updated as that run's writer would have), then move it
    out = tmp_path / "o"
    prmtree.run(generate_problems(4, seed=6), policy="simulated", out=out,
                config={**TINY, "output": {"image_mode": "path"}})
    manifest = json.loads((out / "manifest.json").read_text())
    for shard in manifest["shards"]:
        path = out / shard["file"]
        table = pq.read_table(path)
        if "images" not in table.column_names:
            continue
        rows = table.to_pylist()
        for row in rows:
            row["images"] = [{"bytes": None, "path": str((out / im["path"]).resolve())} for im in row["images"]]
        pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
        shard.update(bytes=path.stat().st_size, sha256=sha256_file(path))
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert verify_run(out) == []
    expected = export(out, "jsonl", tmp_path / "before.jsonl")

    moved = tmp_path / "moved"
    shutil.move(out, moved)
    assert os.path.isabs(read_table(moved, "steps").column("images").to_pylist()[0][0]["path"])
    assert verify_run(moved) == []
    assert export(moved, "jsonl", tmp_path / "after.jsonl") == expected
    before = [json.loads(line) for line in (tmp_path / "before.jsonl").read_text().splitlines()]
    after = [json.loads(line) for line in (tmp_path / "after.jsonl").read_text().splitlines()]
    assert before == after and all((tmp_path / im).is_file() for r in after for im in r.get("images", []))
    (moved / "images" / Path(before[0]["images"][0]).name).unlink()  # same hash name as the export's
    assert any("image files its rows point to are missing" in d.problem for d in verify_run(moved))


# -- --force refused before it deletes; a foreign Parquet file is damage -------------------------


def _files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def test_force_on_a_slice_refused_by_a_sibling_slice_deletes_nothing(tmp_path, capsys):
    out = tmp_path / "o"
    for i in (0, 1):
        _run(out, 8, slice=f"{i}/2")
    before, steps = _files(out), read_table(out, "steps").num_rows
    data = tmp_path / "p.jsonl"
    write_jsonl(generate_problems(8, seed=3), data)
    # another seed for slice 0 only: refused (the slices of one --out are one run) ...
    line = _one_line(capsys, 2, "run", "--input", str(data), "--policy", "simulated", "--out", str(out),
                     "--seed", "2", "--slice", "0/2", "--force")
    assert "manifest-00001-of-00002.json, written with a different config (" in line and "seed: 1 -> 2" in line
    # ... and slice 0's shards and manifest are all still there (they were deleted before the refusal)
    assert _files(out) == before and read_table(out, "steps").num_rows == steps
    assert verify_run(out) == []


def test_force_with_an_input_that_holds_no_row_is_refused_before_anything_is_deleted(tmp_path, capsys):
    out = _run(tmp_path / "o")
    before = _files(out)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    line = _one_line(capsys, 2, "run", "--input", str(empty), "--policy", "simulated", "--out", str(out),
                     "--seed", "2", "--force")
    assert "--force starts" in line and "the input holds no problem (no row was read)" in line
    assert _files(out) == before and verify_run(out) == []
    with pytest.raises(prmtree.ConfigError, match="the input holds no problem"):
        prmtree.run([], policy="simulated", out=out, seed=2, force=True)
    # without --force an empty input is still a finished run that made nothing (exit 4), deleting nothing
    assert main(["run", "--input", str(empty), "--policy", "simulated", "--out", str(tmp_path / "o2")]) == 4


def test_verify_reports_a_parquet_file_no_run_wrote_in_a_table_folder(tmp_path, capsys):
    out = _run(tmp_path / "o")
    steps = read_table(out, "steps").num_rows
    shutil.copy(out / "steps" / "part-00000.parquet", out / "steps" / "extra.parquet")
    damage = verify_run(out)
    assert [d.file for d in damage] == ["steps/extra.parquet"]
    assert "not a prmtree shard" in damage[0].problem and damage[0].readers_unaffected
    assert main(["verify", str(out)]) == 1
    assert "steps/extra.parquet: " in capsys.readouterr().out
    assert read_table(out, "steps").num_rows == steps  # readers read what the manifest lists


def test_a_slice_run_after_another_learned_takes_its_floors_so_one_out_has_one_calibration(tmp_path):
    problems = generate_problems(20, seed=3)
    out = tmp_path / "o"
    prmtree.run(problems, policy="simulated", out=out, seed=1, config=TINY, slice="0/2")
    first = load_manifest(out / "manifest-00000-of-00002.json").calibration
    assert first["floors"] and first["members"] and set(first["fingerprints"]) == set(first["members"])
    # a pilot problem of slice 0 edited in the input slice 1 is given: slice 1 used to pilot again
    # on it and label with floors slice 0 never used, saying nothing; now it is refused, naming it
    member = next(m for m in first["members"] if Slice(0, 2).owns(m))
    edited = [replace(p, answer=str(int(p.answer) + 1)) if p.id == member else p for p in problems]
    with pytest.raises(prmtree.ConfigError, match=rf"problem '{member}', one of the pilot's problems, changed in the "
                                                  r"input since manifest-00000-of-00002.json learned the floors"):
        prmtree.run(edited, policy="simulated", out=out, seed=1, config=TINY, slice="1/2")
    assert not (out / "manifest-00001-of-00002.json").exists()
    with pytest.raises(prmtree.ConfigError, match="changed in the input since"):  # checked before anything is written
        prmtree.run(edited, policy="simulated", out=out, seed=1, config=TINY, slice="1/2", rerun_changed=True,
                    retry_errors=True)
    assert not (out / "manifest-00001-of-00002.json").exists()
    gone = [p for p in problems if p.id != member]
    with pytest.raises(prmtree.ConfigError, match="is gone from the input since"):
        prmtree.run(gone, policy="simulated", out=out, seed=1, config=TINY, slice="1/2")
    # on the same input slice 1 takes slice 0's calibration, and the two slices' rows are an
    # unsliced run's rows
    prmtree.run(iter(problems), policy="simulated", out=out, seed=1, config=TINY, slice="1/2")
    assert load_manifest(out / "manifest-00001-of-00002.json").calibration == first
    whole = tmp_path / "whole"
    prmtree.run(problems, policy="simulated", out=whole, seed=1, config=TINY)
    key = lambda t: sorted(map(str, t.drop_columns(["images"]).to_pylist()))  # noqa: E731
    assert key(read_table(out, "steps")) == key(read_table(whole, "steps"))


def test_verify_of_a_run_before_its_first_flush_says_a_run_is_writing_it(tmp_path, capsys):
    # verify exits 0 for an unfinished run: before its first flush too (it exited 2, the code
    # of a bad argument); inspect, with nothing to show yet, still refuses in one line
    from prmtree.engine.lock import FileLock

    out = tmp_path / "o"
    out.mkdir()
    lock = FileLock(out / ".manifest.json.lock")
    lock.acquire()
    try:
        assert main(["verify", str(out)]) == 0
        said = capsys.readouterr().out
        assert said.startswith(f"{out}: BEING WRITTEN: a running prmtree (pid ") and "first flush" in said
        line = _one_line(capsys, 2, "inspect", str(out))
        assert "holds no manifest yet: a run is writing it (pid " in line and "first flush" in line
    finally:
        lock.release()
    assert _one_line(capsys, 2, "verify", str(out)).endswith("holds no prmtree manifest")


def test_verify_of_a_sliced_run_names_a_slice_running_before_its_first_flush(tmp_path, capsys):
    # Before: "MISSING: slice 1/2 has not run here; run its command", which its lock then refused
    from prmtree.engine.lock import FileLock

    out = _run(tmp_path / "o", slice="0/2")
    lock = FileLock(out / Slice(1, 2).lock_name).acquire()
    try:
        assert main(["verify", str(out)]) == 0
        said = capsys.readouterr().out
        assert "manifest-00001-of-00002.json: BEING WRITTEN: slice 1/2 is running here (pid " in said
        assert "MISSING" not in said
    finally:
        lock.release()
    assert main(["verify", str(out)]) == 0
    assert "manifest-00001-of-00002.json: MISSING: slice 1/2 has not run here" in capsys.readouterr().out



def test_a_slice_given_the_same_input_from_a_copied_folder_takes_the_sibling_calibration(tmp_path):
    """Image files copied elsewhere (new paths and times, the same bytes) are the same input."""
    data = tmp_path / "a"
    write_jsonl(generate_problems(12, seed=3), data)
    out = tmp_path / "o"
    assert main(["run", "--input", str(data / "problems.jsonl"), "--policy", "simulated", "--out", str(out),
                 "--slice", "0/2"]) == 0
    copied = tmp_path / "b"
    shutil.copytree(data, copied, copy_function=shutil.copyfile)  # new paths and times, the same bytes
    assert main(["run", "--input", str(copied / "problems.jsonl"), "--policy", "simulated", "--out", str(out),
                 "--slice", "1/2"]) == 0
    first, second = (load_manifest(out / f"manifest-0000{i}-of-00002.json").calibration for i in (0, 1))
    assert first == second and first["fingerprints"]


def test_verify_beside_a_running_flush_looks_again_and_does_not_call_its_shards_damaged(tmp_path, capsys,
                                                                                         monkeypatch):
    # Before: `prmtree verify` while a run wrote exited 1 for shards renamed into place moments
    # before their flush's manifest listed them ("DAMAGED: listed in no manifest").
    import threading

    from prmtree import cli as cli_module
    from prmtree.engine.lock import FileLock

    monkeypatch.setattr(cli_module, "VERIFY_LIVE_WAIT_S", 0.05)
    out = _run(tmp_path / "o")
    flushing = out / "steps" / "part-00099.parquet"
    shutil.copy(out / "steps" / "part-00000.parquet", flushing)
    assert main(["verify", str(out)]) == 1  # no run writes here: damage, as before
    assert "steps/part-00099.parquet: DAMAGED: listed in no manifest" in capsys.readouterr().out

    lock = FileLock(out / Slice().lock_name).acquire()  # a run writing the slice
    try:
        assert main(["verify", str(out)]) == 0  # its flush never lists it while verify looks: said, not damage
        said = capsys.readouterr().out
        assert "steps/part-00099.parquet: BEING WRITTEN: no manifest lists it yet, and a running prmtree" in said
        assert "DAMAGED" not in said
        committed = threading.Timer(0.2, flushing.unlink)  # the flush done (here: as if it had listed it)
        committed.start()
        assert main(["verify", str(out)]) == 0
        committed.join()
        said = capsys.readouterr().out
        assert "part-00099" not in said and "manifest.json: OK: " in said
    finally:
        lock.release()


@pytest.mark.parametrize("command", ["verify", "inspect"])
def test_a_run_directory_that_does_not_exist_or_is_a_file_is_named_so(tmp_path, capsys, command):
    # Before: both read "holds no prmtree manifest", as for an empty folder.
    line = _one_line(capsys, 2, command, str(tmp_path / "typo"))
    assert line.endswith(f"{str(tmp_path / 'typo')!r} does not exist: name a run's output directory (its --out)")
    (tmp_path / "f").write_text("x")
    assert _one_line(capsys, 2, command, str(tmp_path / "f")).endswith("is a file, not a run's output directory "
                                                                         "(its --out)")


def test_verify_credits_an_unlisted_shard_only_to_a_run_writing_its_own_slice(tmp_path, capsys, monkeypatch):
    # a crashed slice's leftover shard stays damage while a sibling slice's run writes
    from prmtree import cli as cli_module
    from prmtree.engine.lock import FileLock

    monkeypatch.setattr(cli_module, "VERIFY_LIVE_WAIT_S", 0.01)
    out = _run(tmp_path / "o", slice="0/2")
    listed = sorted((out / "steps").glob("part-s00000of00002-*.parquet"))[0]
    shutil.copy(listed, out / "steps" / "part-s00000of00002-00099.parquet")
    lock = FileLock(out / Slice(1, 2).lock_name).acquire()
    try:
        assert main(["verify", str(out)]) == 1
        assert "steps/part-s00000of00002-00099.parquet: DAMAGED: listed in no manifest" in capsys.readouterr().out
    finally:
        lock.release()


def test_inspect_tells_a_stopped_run_from_a_running_one(tmp_path):
    # Before: a run stopped by SIGTERM or killed was shown as "running" (its manifest says so
    # until it finishes), though no process wrote it
    from prmtree.engine.lock import FileLock
    from prmtree.inspect import collect

    out = _run(tmp_path / "o")
    assert collect(out).manifest["status"] == "finished"
    raw = json.loads((out / "manifest.json").read_text())
    raw["status"] = "running"  # what a stop or a kill -9 leaves
    (out / "manifest.json").write_text(json.dumps(raw))
    assert collect(out).manifest["status"] == "incomplete: stopped before it finished (run its command again)"
    lock = FileLock(out / Slice().lock_name).acquire()  # its command, running again
    try:
        assert collect(out).manifest["status"] == "running"
    finally:
        lock.release()
