"""Images read where they lie (``[executor] worker_reads_images``): an image the driver read
from a file goes to a Ray worker as its hash and absolute path, the worker reads and checks
the file itself, and the bytes never pass through the driver. A file that changed or
vanished is never used: the worker answers a miss, the driver sends the bytes, and that
worker gets bytes from then on (one failed read per worker, not per image)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

import pytest
from conftest import rows

import prmtree
from prmtree.engine.config import ExecutorConfig
from prmtree.engine.output import load_manifest
from prmtree.engine.problem import iter_problems
from prmtree.engine.records import Completion, GenerationRequest, Problem, ProblemImage
from prmtree.engine.synthetic import generate_problems, write_jsonl
from prmtree.policies.simulated import SimulatedPolicy


class SeesImages(SimulatedPolicy):
    """The simulated policy, also logging (to the file ``log``) the sha256 and path of every
    image it is handed: what the policy received, whichever process it ran in."""

    name = "simulated"

    def __init__(self, log: str = "", **kw):
        super().__init__(**kw)
        self.log = log

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        with open(self.log, "a", encoding="utf-8") as handle:
            for im in request.problem.images:
                assert isinstance(im, ProblemImage), f"the policy was handed a {type(im).__name__}"
                handle.write(f"{request.problem.id} {hashlib.sha256(im).hexdigest()} {im.path}\n")
        return await super().generate(request)


class EchoSha:
    """Answers with the sha256 of each image it is given."""

    name = "echo-sha"

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        seen = ",".join(hashlib.sha256(im).hexdigest() for im in request.problem.images)
        return [Completion(f"{request.problem.id}|{seen}")] * request.n


def image_files(tmp_path: Path, n: int) -> Path:
    """``n`` synthetic problems as JSONL with one PNG file each, paths relative to the JSONL's
    folder (not the cwd of the driver or the workers)."""
    return write_jsonl(generate_problems(n, seed=31), tmp_path / "data")


def file_problems(path: Path) -> list:
    return [p for p in iter_problems(path) if not hasattr(p, "reason")]


def run_config(mode: str) -> dict:
    return {"seed": 5, "labels": {"learn_floor": False}, "search": {"k": 4, "budget": 16},
            "executor": {"kind": "ray", "workers": 2, "num_cpus_per_worker": 0, "worker_reads_images": mode}}


@pytest.mark.slow
def test_a_run_on_image_files_sends_no_image_bytes_and_writes_the_same_rows(ray_session, tmp_path):
    data = image_files(tmp_path, 8)
    expected = {}
    for line in data.read_text().splitlines():
        row = json.loads(line)
        expected[row["id"]] = (hashlib.sha256((data.parent / row["image"]).read_bytes()).hexdigest(), row["image"])
    runs = {}
    for mode in ("auto", "never"):
        log = tmp_path / f"{mode}.log"
        prmtree.run(data, policy="test_image_paths:SeesImages", policy_args={"log": str(log)},
                    out=tmp_path / mode, config=run_config(mode))
        seen = {tuple(line.split(" ")) for line in log.read_text().splitlines()}
        assert {s[0] for s in seen} == set(expected)
        assert all((sha, path) == expected[pid] for pid, sha, path in seen)  # each problem's own image, as given
        runs[mode] = load_manifest(tmp_path / mode / "manifest.json").stats["executor"]
    auto, never = runs["auto"], runs["never"]
    assert auto["images_sent"] == 0 and auto["image_bytes_sent"] == 0 and auto["image_resends"] == 0
    assert auto["images_read_by_workers"] == 8 and auto["image_path_misses"] == 0
    assert never["images_sent"] == 8 and never["image_bytes_sent"] > 8 * 100 and never["images_read_by_workers"] == 0
    assert rows(tmp_path / "auto") == rows(tmp_path / "never")
    assert rows(tmp_path / "auto", "nodes") == rows(tmp_path / "never", "nodes")


def start_executor(workers: int):
    from prmtree.rollout_workers.ray import RayExecutor

    config = ExecutorConfig(kind="ray", workers=workers, num_cpus_per_worker=0, queue_limit=10_000)
    executor = RayExecutor("test_image_paths:EchoSha", {}, config, revive_after_s=0.2)
    executor.start()
    return executor


async def closing(executor, scenario):
    try:
        return await scenario(executor)
    finally:
        await executor.close()


def assert_changed_source_refused(problem: Problem) -> dict:
    """``problem``'s image source (file, Parquet cell) now holds other bytes of the same size:
    one worker refuses it by hash, the driver sends its own bytes, and the policy sees the
    driver's image three times over two requests. Returns the worker's image stats."""
    original = hashlib.sha256(problem.images[0]).hexdigest()

    async def scenario(executor):
        out = await executor.submit(GenerationRequest(problem, (), n=2, seed=1))
        again = await executor.submit(GenerationRequest(problem, ("s",), n=1, seed=2))
        stats = await executor.workers[0].actor.image_stats.remote()
        return out + again, executor.stats(), stats

    out, ex, worker = asyncio.run(closing(start_executor(1), scenario))
    assert [c.text for c in out] == [f"{problem.id}|{original}"] * 3  # the driver's image, not the file's
    assert worker["read_failures"] == 1 and worker["reads"] == 0 and worker["puts"] == 1 and worker["misses"] == 1
    assert "changed since the driver read it (sha256 differs)" in worker["last_read_error"]
    assert ex["image_path_misses"] == 1 and ex["image_resends"] == 1 and ex["images_sent"] == 1
    assert ex["images_read_by_workers"] == 0 and ex["image_bytes_sent"] == len(problem.images[0])
    return worker


@pytest.mark.slow
def test_a_file_changed_after_the_driver_read_it_is_never_shown_to_the_policy(ray_session, tmp_path):
    (problem,) = file_problems(image_files(tmp_path, 1))
    image = problem.images[0]
    assert image.file and os.path.isabs(image.file) and image.path != image.file
    changed = bytes(b ^ 0xFF for b in image)  # same size: only the hash tells
    Path(image.file).write_bytes(changed)

    assert_changed_source_refused(problem)


def assert_one_failed_read_per_worker_then_bytes(problems: list) -> None:
    """8 problems whose image sources (files, Parquet cells) are gone, sent one at a time to
    two workers: each worker fails one read, answers a miss, and gets bytes from then on."""

    async def scenario(executor):
        texts = []
        for p in problems:  # one at a time: the first failure is known before the next is sent
            texts += [c.text for c in await executor.submit(GenerationRequest(p, (), n=1, seed=3))]
        stats = {w.index: await w.actor.image_stats.remote() for w in executor.workers}
        return texts, executor.stats(), stats

    texts, ex, workers = asyncio.run(closing(start_executor(2), scenario))
    assert texts == [f"{p.id}|{hashlib.sha256(p.images[0]).hexdigest()}" for p in problems]
    used = [s for s in workers.values() if s["puts"]]
    assert len(used) == 2  # both workers had problems
    assert all(s["read_failures"] == 1 and s["misses"] == 1 and s["reads"] == 0 for s in used)
    assert all("No such file or directory" in s["last_read_error"] for s in used)
    assert ex["image_path_misses"] == 2 and ex["image_path_failures"] == 2 and ex["image_resends"] == 2
    assert ex["images_sent"] == 8 and ex["images_read_by_workers"] == 0


@pytest.mark.slow
def test_missing_files_cost_one_failed_read_per_worker_then_bytes(ray_session, tmp_path):
    problems = file_problems(image_files(tmp_path, 8))
    for p in problems:
        os.remove(p.images[0].file)

    assert_one_failed_read_per_worker_then_bytes(problems)


def test_a_batch_sent_while_another_reads_files_finds_the_bytes_that_one_brought(tmp_path):
    """The worker reads files off its event loop, so batches can overlap: a batch sent after
    one that carries an image's bytes must find them (not answer a miss, and never report
    the file image of the first as unreadable)."""
    from prmtree.engine.records import refer_images
    from prmtree.rollout_workers.ray.actor import RolloutWorker

    (tmp_path / "a.png").write_bytes(os.urandom(5000))
    on_disk = ProblemImage((tmp_path / "a.png").read_bytes(), "a.png", "stamp", str(tmp_path / "a.png"))
    embedded = ProblemImage(os.urandom(3000), "embedded")
    first = Problem(id="a", question="q", answer="1", images=(on_disk, embedded), meta={"scene": {"A": 1}})
    second = Problem(id="b", question="q", answer="1", images=(embedded,), meta={"scene": {"A": 1}})

    async def scenario():
        worker = RolloutWorker("test_image_cache:EchoImages", {}, 10.0, image_cache_bytes=1 << 20)
        ref_a, _ = refer_images(GenerationRequest(first, (), n=1, seed=1))
        ref_b, _ = refer_images(GenerationRequest(second, (), n=1, seed=1))
        sent_a = worker.enqueue([(1, ref_a)], "c", {embedded.sha256: bytes(embedded)}, True)  # reads a.png
        sent_b = worker.enqueue([(2, ref_b)], "c", None, True)  # names the embedded image only
        await asyncio.gather(asyncio.ensure_future(sent_a), asyncio.ensure_future(sent_b))
        got = []
        while len(got) < 2:
            got += (await worker.poll(1.0, "c"))[0]
        return sorted((request_id, status) for request_id, status, _ in got), worker.image_stats()

    results, stats = asyncio.run(scenario())
    assert results == [(1, "ok"), (2, "ok")]
    assert stats["reads"] == 1 and stats["read_failures"] == 0 and stats["misses"] == 0
