"""The driver's mirror of a worker's image cache (``KnownImages``) stays equal to the cache
(``ImageCache``) once it overflows: both order a batch's images the same way before evicting,
so with one driver the driver never names an image the worker dropped (a miss and a resend)
nor resends one it kept. And a bound too small for a batch's images is said, once."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random

import pytest

from prmtree.engine.config import ExecutorConfig
from prmtree.engine.records import Completion, GenerationRequest, ImageCell, Problem, ProblemImage
from prmtree.rollout_workers.ray.actor import RolloutWorker
from prmtree.rollout_workers.ray.executor import RayExecutor
from prmtree.rollout_workers.ray.images import KnownImages
from prmtree.rollout_workers.ray.routing import WorkerState
from prmtree.rollout_workers.ray.executor import _unpacked as unpacked


class EchoImages:
    """Answers with the sha256 of each image it was handed: a wrong image shows in the text."""

    name = "echo-images"

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        return [Completion("|".join(hashlib.sha256(im).hexdigest() for im in request.problem.images))] * request.n


ECHO = "test_image_cache_mirror:EchoImages"


def image(i: int, size: int, file: str | None = None) -> ProblemImage:
    return ProblemImage(hashlib.sha256(str(i).encode()).digest() * (size // 32), f"images/{i}.png", file=file)


def problems(images: list[ProblemImage], count: int, rng: random.Random) -> list[Problem]:
    """``count`` problems of one to three of ``images`` each (one listed twice now and then)."""
    out = []
    for i in range(count):
        chosen = rng.sample(images, rng.randint(1, 3))
        if rng.random() < 0.3:
            chosen.append(chosen[0])
        out.append(Problem(f"p{i}", f"question {i}?", "1", tuple(chosen)))
    return out


def expected(problem: Problem) -> str:
    return "|".join(hashlib.sha256(im).hexdigest() for im in problem.images)


async def drain(worker: RolloutWorker, count: int) -> list[tuple[int, str, object]]:
    got: list[tuple[int, str, object]] = []
    while len(got) < count:
        got += [(i, s, unpacked(s, v)) for i, s, v in (await worker.poll(1.0, "c"))[0]]
    return got


def sources(tmp_path, sizes: list[int], source: str) -> list[ProblemImage]:
    """Images of ``sizes`` with nowhere to read them from (``bytes``), or each in its own file
    (``files``), or embedded in a Parquet file's cells, three rows per row group (``cells``)."""
    if source == "bytes":
        return [image(i, size) for i, size in enumerate(sizes)]
    if source == "files":
        for i, size in enumerate(sizes):
            (tmp_path / f"{i}.png").write_bytes(bytes(image(i, size)))
        return [image(i, size, str(tmp_path / f"{i}.png")) for i, size in enumerate(sizes)]
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "images.parquet"
    pq.write_table(pa.Table.from_pylist([{"image": {"bytes": bytes(image(i, size)), "path": f"{i}.png"}}
                                         for i, size in enumerate(sizes)]), path, row_group_size=3)
    return [ProblemImage(bytes(image(i, size)), f"{i}.png",
                         cell=ImageCell("parquet", str(path), i, "image", group=i // 3)) for i, size in enumerate(sizes)]


class DriverAndWorker:
    """One driver's side (an executor's batch preparation, ``_with_image_refs``, and its
    mirror) and one worker (``RolloutWorker.enqueue``), in one process, without Ray."""

    def __init__(self, cache_mb: float, read_paths: bool) -> None:
        self.executor = RayExecutor(ECHO, {}, ExecutorConfig(kind="ray", image_cache_mb=cache_mb))
        self.state = WorkerState(0, None, images=KnownImages(self.executor.image_cache_bytes))
        self.worker = RolloutWorker(ECHO, {}, 10.0, image_cache_bytes=self.executor.image_cache_bytes)
        self.read_paths = read_paths
        self.request_id = 0

    async def serve(self, batch: list[Problem]) -> None:
        """One batch through both sides; every request answered with its own images."""
        items = []
        for problem in batch:
            self.request_id += 1
            items.append((self.request_id, GenerationRequest(problem, (), n=1, seed=self.request_id)))
        refs, sent = self.executor._with_image_refs(self.state, items)
        await self.worker.enqueue(refs, "c", sent, read_paths=self.read_paths)
        got = {i: (status, value) for i, status, value in await drain(self.worker, len(items))}
        for i, request in items:
            assert got[i][0] == "ok" and got[i][1][0].text == expected(request.problem)

    def held(self, images: list[ProblemImage]) -> tuple[list[str], list[str]]:
        """Which of ``images`` the driver believes the worker holds, and which it holds."""
        keys = [im.sha256 for im in images]
        return [k for k in keys if k in self.state.images], [k for k in keys if k in self.worker.images]


@pytest.mark.parametrize("source", ["bytes", "files", "cells"])
def test_the_mirror_equals_the_cache_after_every_batch(tmp_path, source):
    """Batches of several requests, prepared and served as the executor and the worker do
    (the worker reading files and cells itself where it can): after each, the driver
    believes the worker holds exactly what its cache holds, so nothing misses and nothing is
    sent or read twice."""
    rng = random.Random(7)
    images = sources(tmp_path, [rng.choice([60_000, 100_000, 150_000]) for _ in range(8)], source)
    pool = problems(images, 10, rng)
    pair = DriverAndWorker(cache_mb=0.3, read_paths=source != "bytes")  # two to five images

    async def scenario() -> None:
        for _ in range(150):
            await pair.serve(rng.choices(pool, k=rng.randint(1, 4)))
            believed, held = pair.held(images)
            assert believed == held

    asyncio.run(scenario())
    stats, executor = pair.worker.image_stats(), pair.executor
    assert stats["evictions"] > 20  # the cache overflowed over and over
    assert stats["misses"] == 0 and stats["repeat_puts"] == 0 and stats["read_failures"] == 0
    assert stats["puts" if source == "bytes" else "reads"] == executor.images_sent + executor.image_path_sends


def test_an_image_named_twice_by_a_problem_is_used_once_in_its_order():
    """A problem naming A, B, A: both sides count A's use first (the driver looks each hash up
    once, in first-seen order), so C's arrival evicts A on both sides, not A on one, B on the other."""
    a, b, c = (image(i, 100_000) for i in range(3))
    twice = Problem("twice", "question?", "1", (a, b, a))
    pair = DriverAndWorker(cache_mb=0.25, read_paths=False)  # two images

    async def scenario() -> None:
        for batch in ([twice], [twice], [Problem("c", "question?", "1", (c,))]):
            await pair.serve(batch)
            believed, held = pair.held([a, b, c])
            assert believed == held

    asyncio.run(scenario())
    assert pair.held([a, b, c])[1] == [b.sha256, c.sha256]


def start_executor(cache_mb: float) -> RayExecutor:
    config = ExecutorConfig(kind="ray", workers=1, num_cpus_per_worker=0, image_cache_mb=cache_mb, queue_limit=10_000)
    executor = RayExecutor(ECHO, {}, config, revive_after_s=0.2)
    executor.start()
    return executor


def test_one_worker_with_a_small_cache_never_misses(ray_session):
    """Through Ray, one request at a time: B, then A and B, then D (A is evicted, B kept),
    then A (sent again, unasked), and so on. The driver sends exactly what the worker lacks."""
    images = {key: image(i, 100_000) for i, key in enumerate("ABDE")}
    steps = ["B", "AB", "D", "A", "B", "DE", "A", "EB", "BA", "D", "AD", "E"]

    async def scenario(executor: RayExecutor) -> None:
        for i, names in enumerate(steps):
            problem = Problem(f"p{i}", f"question {i}?", "1", tuple(images[k] for k in names))
            out = await executor.submit(GenerationRequest(problem, (), n=1, seed=i))
            assert out[0].text == expected(problem)
        stats = await executor.workers[0].actor.image_stats.remote()
        assert stats["evictions"] >= 5
        assert stats["misses"] == 0 and stats["repeat_puts"] == 0
        assert executor.stats()["image_resends"] == 0 and executor.stats()["images_sent"] == stats["puts"]

    async def run() -> None:
        executor = start_executor(cache_mb=0.25)  # two 100 KB images
        try:
            await scenario(executor)
        finally:
            await executor.close()

    asyncio.run(run())


# -- a bound too small for a batch's images ------------------------------------------------


def send(executor: RayExecutor, state: WorkerState, *batches: list[Problem]) -> None:
    for i, batch in enumerate(batches):
        executor._with_image_refs(state, [(j, GenerationRequest(p, (), n=1, seed=i)) for j, p in enumerate(batch)])


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "prmtree" and r.levelno == logging.WARNING]


def one_mb_executor() -> tuple[RayExecutor, WorkerState]:
    executor = RayExecutor(ECHO, {}, ExecutorConfig(kind="ray", image_cache_mb=1))
    return executor, WorkerState(0, None, images=KnownImages(executor.image_cache_bytes))


def test_an_image_larger_than_the_cache_is_said_once(caplog):
    executor, state = one_mb_executor()
    huge = Problem("huge", "question?", "1", (image(1, 3 << 19),))  # 1.5 MB
    with caplog.at_level(logging.WARNING, logger="prmtree"):
        send(executor, state, [huge], [huge], [huge])
    assert executor.images_sent == 3  # sent with every batch: what the warning is about
    assert warnings_of(caplog) == [
        "prmtree: an image of 1.5 MB is larger than a worker's image cache ([executor] image_cache_mb = 1): the "
        "worker drops what it cannot hold once the batch is served, and every later batch that uses those images "
        "carries their bytes again (or has the worker read them from their files again); set [executor] "
        "image_cache_mb to at least 2 (this batch's images together)"]


def test_one_batchs_images_over_the_cache_are_said_once(caplog):
    executor, state = one_mb_executor()
    two = Problem("two", "question?", "1", (image(1, 600_000), image(2, 600_000)))
    with caplog.at_level(logging.WARNING, logger="prmtree"):
        send(executor, state, [two], [two])
    (message,) = warnings_of(caplog)
    assert message.startswith("prmtree: the 2 images one batch brought a worker (1.1 MB together) are more than "
                              "its image cache holds ([executor] image_cache_mb = 1)")
    assert message.endswith("set [executor] image_cache_mb to at least 2 (this batch's images together)")


def test_images_that_fit_evict_older_ones_without_a_word(caplog):
    executor, state = one_mb_executor()
    each = [Problem(f"p{i}", "question?", "1", (image(i, 600_000),)) for i in range(4)]
    with caplog.at_level(logging.WARNING, logger="prmtree"):
        send(executor, state, *([p] for p in each))
    assert len(state.images) == 1 and warnings_of(caplog) == []


# -- the benchmark of bytes through the driver ---------------------------------------------


def test_the_driver_bytes_benchmark_counts_the_results_coming_back(ray_session):
    """``benchmarks/driver_bytes.py`` counts both directions: the batches to the workers and
    the results each ``poll`` brings back (pickled as Ray sends them), and their total."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "driver_bytes", Path(__file__).resolve().parents[1] / "benchmarks" / "driver_bytes.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    start = RayExecutor.start
    run = bench.measure(bench.padded_problems(2, 20_000, seed=7), workers=1, trees_in_flight=2, mode="files")
    assert RayExecutor.start is start  # the counting is undone
    assert run["polls"] > 0 and run["images_read_by_workers"] == 2
    assert 50 < run["back_bytes_per_rollout"] < 1000  # each rollout's completion comes back
    assert abs(run["total_bytes_per_rollout"] - run["after_bytes_per_rollout"] - run["back_bytes_per_rollout"]) <= 1
