"""Images sent once per worker: requests name images by hash, a worker caches the bytes
(bounded, LRU by bytes), the driver sends bytes only to a worker that lacks them, a
restarted worker gets them again, and a miss is answered by a resend, never a wrong image."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest
from conftest import rows

import prmtree
from prmtree.engine.config import ExecutorConfig
from prmtree.engine.records import (
    Completion,
    GenerationRequest,
    ImageRef,
    Problem,
    ProblemImage,
    refer_images,
    resolve_images,
)
from prmtree.engine.synthetic import generate_problems
from prmtree.rollout_workers.ray.actor import RolloutWorker
from prmtree.rollout_workers.ray.images import ImageCache
from prmtree.rollout_workers.ray.executor import _unpacked as unpacked


class EchoImages:
    """Answers with what it was shown: the problem id, each image's sha256, path and stamp.
    A wrong, missing or reference-only image shows in the text."""

    name = "echo-images"

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        seen = []
        for im in request.problem.images:
            assert isinstance(im, ProblemImage), f"the policy was handed a {type(im).__name__}"
            seen.append(f"{hashlib.sha256(im).hexdigest()}@{im.path}@{im.stamp}")
        await asyncio.sleep(0.001)
        return [Completion(f"{request.problem.id}|{'|'.join(seen)}|{request.seed}")] * request.n


ECHO = "test_image_cache:EchoImages"


def image_problem(i: int, size: int) -> Problem:
    data = hashlib.sha256(str(i).encode()).digest() * (size // 32)
    return Problem(f"p{i}", f"question {i}?", "1", (ProblemImage(data, f"images/p{i}.png", f"{size}:{i}"),))


def expected(request: GenerationRequest) -> str:
    im = request.problem.images[0]
    return f"{request.problem.id}|{hashlib.sha256(im).hexdigest()}@{im.path}@{im.stamp}|{request.seed}"


# -- records and the cache, no Ray ----------------------------------------------------


def test_a_request_with_references_resolves_to_an_equal_request():
    problem = image_problem(1, 4096)
    request = GenerationRequest(problem, ("step one",), n=4, seed=9)
    ref, by_hash = refer_images(request)
    (image,) = ref.problem.images
    assert isinstance(image, ImageRef) and image.sha256 == hashlib.sha256(problem.images[0]).hexdigest()
    assert image.size == 4096 and image.path == "images/p1.png" and by_hash == {image.sha256: problem.images[0]}
    back = resolve_images(ref, {image.sha256: bytes(problem.images[0])})
    assert back == request and back.problem.images[0].path == "images/p1.png"
    assert back.problem.images[0].stamp == "4096:1"
    with pytest.raises(KeyError):
        resolve_images(ref, {})
    assert refer_images(GenerationRequest(Problem("t", "q?", "1"), (), n=1)) == (
        GenerationRequest(Problem("t", "q?", "1"), (), n=1), {})


def test_the_cache_evicts_the_least_recently_used_by_bytes_after_the_batch():
    cache = ImageCache(max_bytes=250)
    for key in "abc":
        cache.put(key, key.encode() * 100)
    assert "a" in cache and cache.bytes == 300  # a batch's own images stay until it is served
    cache["a"]  # used: now the most recent
    cache.trim()
    assert "b" not in cache and "a" in cache and "c" in cache and cache.evictions == 1
    cache.put("a", b"a" * 100)
    assert cache.repeat_puts == 1 and cache.bytes == 200


def test_a_worker_answers_a_missing_image_with_a_miss_and_serves_it_once_sent():
    async def scenario():
        worker = RolloutWorker(ECHO, {}, 10.0, image_cache_bytes=1 << 20)
        request = GenerationRequest(image_problem(3, 2048), (), n=2, seed=4)
        ref, by_hash = refer_images(request)
        await worker.enqueue([(1, ref)], "c", batch=7)
        # the miss; one driver polls it; batch 7 arrived
        assert await worker.poll(1.0, "c") == ([(1, "miss", list(by_hash))], 1, [7])
        await worker.enqueue([(2, ref)], "c", {k: bytes(v) for k, v in by_hash.items()})
        await worker.enqueue([(3, ref)], "c")  # held now: no bytes needed
        got = []
        while len(got) < 2:
            got += [(i, s, unpacked(s, v)) for i, s, v in (await worker.poll(1.0, "c"))[0]]
        assert sorted((i, s, [c.text for c in v]) for i, s, v in got) == [
            (2, "ok", [expected(request)] * 2), (3, "ok", [expected(request)] * 2)]
        stats = worker.image_stats()
        assert stats["puts"] == 1 and stats["misses"] == 1 and stats["images"] == 1

    asyncio.run(scenario())


def test_the_inline_executor_hands_the_policy_the_problems_own_image_objects():
    from prmtree.rollout_workers.inline import InlineExecutor

    class Recording(EchoImages):
        seen: list = []

        async def generate(self, request):
            self.seen.append(request.problem.images[0])
            return await super().generate(request)

    problem = image_problem(5, 1024)
    request = GenerationRequest(problem, (), n=1, seed=1)

    async def scenario():
        executor = InlineExecutor(Recording(), ExecutorConfig())
        out = await executor.submit(request)
        await executor.close()
        return out

    out = asyncio.run(scenario())
    assert out[0].text == expected(request) and Recording.seen[0] is problem.images[0]  # passed, not copied


# -- through Ray ----------------------------------------------------------------------


def start_executor(workers: int, cache_mb: float = 64, attach: str | None = None):
    from prmtree.rollout_workers.ray import RayExecutor

    config = ExecutorConfig(kind="ray", workers=workers, num_cpus_per_worker=0, image_cache_mb=cache_mb,
                            queue_limit=10_000)
    executor = RayExecutor(ECHO, {}, config, attach=attach, revive_after_s=0.2)
    executor.start()
    return executor


async def image_stats(executor) -> dict[int, dict]:
    return {w.index: await w.actor.image_stats.remote() for w in executor.workers}


async def submit_all(executor, requests):
    return await asyncio.gather(*(executor.submit(r) for r in requests))


def check(requests, results):
    for request, completions in zip(requests, results):
        assert [c.text for c in completions] == [expected(request)] * request.n


@pytest.mark.slow
def test_each_worker_gets_each_image_once_across_many_requests(ray_session):
    problems = [image_problem(i, 200_000) for i in range(6)]

    async def scenario(executor):
        for wave in range(5):  # a tree's requests arrive over time, as the search goes
            requests = [GenerationRequest(p, ("s",) * wave, n=4, seed=wave * 10 + j)
                        for p in problems for j in range(3)]
            check(requests, await submit_all(executor, requests))
        stats = await image_stats(executor)
        assert sum(s["puts"] for s in stats.values()) == 6  # 90 requests, 6 images, each sent once
        assert all(s["repeat_puts"] == 0 and s["misses"] == 0 for s in stats.values())
        assert all(s["puts"] > 0 for s in stats.values())  # both workers had problems
        ex = executor.stats()
        assert ex["images_sent"] == 6 and ex["image_bytes_sent"] == 6 * 200_000 and ex["image_resends"] == 0

    asyncio.run(with_executors(scenario, start_executor(workers=2)))


async def with_executors(scenario, *executors):
    try:
        await scenario(*executors)
    finally:
        for executor in reversed(executors):
            await executor.close()


async def back_up(actor, timeout_s: float = 30.0) -> dict:
    """The actor's image stats once Ray has restarted it."""
    from ray.exceptions import ActorUnavailableError, RayActorError

    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            return await actor.image_stats.remote()
        except (ActorUnavailableError, RayActorError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


@pytest.mark.slow
def test_a_restarted_worker_gets_its_images_again(ray_session):
    problems = [image_problem(i, 100_000) for i in range(6)]

    async def scenario(executor):
        first = [GenerationRequest(p, (), n=2, seed=1) for p in problems]
        check(first, await submit_all(executor, first))
        victim = executor.workers[0]
        before = await victim.actor.image_stats.remote()
        assert before["images"] > 0
        ray_session.kill(victim.actor, no_restart=False)  # Ray makes a new actor: an empty cache
        second = [GenerationRequest(p, ("s",), n=2, seed=2) for p in problems]
        check(second, await submit_all(executor, second))  # every image right (resubmitted meanwhile)
        after = await back_up(victim.actor)
        for _ in range(100):  # it is used again once its poller hears from the restarted actor
            if victim.alive:
                break
            await asyncio.sleep(0.1)
        assert victim.alive
        third = [GenerationRequest(p, ("s", "t"), n=2, seed=3) for p in problems]
        check(third, await submit_all(executor, third))
        after = await victim.actor.image_stats.remote()
        assert after["puts"] >= 1 and after["images"] == after["puts"]  # a fresh cache, filled again
        assert after["misses"] == 0  # the driver knew it restarted: it sent the bytes unasked
        assert executor.stats()["worker_deaths"] >= 1 and executor.stats()["images_sent"] >= 6 + 1

    asyncio.run(with_executors(scenario, start_executor(workers=2)))


@pytest.mark.slow
def test_an_evicted_image_is_missed_and_resent_never_mixed_up(ray_session):
    """Two drivers share one worker (``--drivers``): the second's images evict the first's
    from a small cache, which the first cannot know; its next request misses, and it resends."""
    a, b, c = (image_problem(i, 200_000) for i in (10, 11, 12))

    async def scenario(owner, other):
        r1 = [GenerationRequest(a, (), n=1, seed=1)]
        check(r1, await submit_all(owner, r1))
        r2 = [GenerationRequest(p, (), n=1, seed=2) for p in (b, c)]
        check(r2, await submit_all(other, r2))  # 600 KB > 500 KB: a is evicted
        r3 = [GenerationRequest(a, ("s",), n=3, seed=3)]
        check(r3, await submit_all(owner, r3))
        stats = (await image_stats(owner))[0]
        assert stats["evictions"] >= 1 and stats["misses"] == 1
        assert owner.stats()["image_resends"] == 1 and owner.stats()["images_sent"] == 2

    owner = start_executor(workers=1, cache_mb=0.5)
    asyncio.run(with_executors(scenario, owner, start_executor(workers=1, cache_mb=0.5, attach=owner.handle().name)))


PROBLEMS = generate_problems(10, seed=23)


@pytest.mark.slow
def test_a_run_that_loses_a_worker_writes_a_clean_runs_rows(ray_session, tmp_path):
    clean = tmp_path / "clean"
    # no pilot: problems finish one by one, so the kill lands mid-run
    prmtree.run(PROBLEMS, policy="simulated", out=clean, config={"seed": 4, "labels": {"learn_floor": False}})
    from prmtree.rollout_workers.ray.routing import rendezvous

    killed, finished_ids = [], set()

    def kill_one(finished, stats):
        finished_ids.add(finished.problem.id)
        if stats.problems_done == 3 and not killed:  # the worker of the oldest tree in flight: it has work
            oldest = next(p.id for p in PROBLEMS if p.id not in finished_ids)
            index = rendezvous(oldest, [0, 1])[0]
            name = next(n for n in ray_session.util.list_named_actors()
                        if n.startswith("prmtree-worker-") and n.endswith(f"-{index}"))
            ray_session.kill(ray_session.get_actor(name), no_restart=False)
            killed.append(name)

    out = tmp_path / "ray"
    prmtree.run(PROBLEMS, policy="simulated", policy_args={"latency_s": 0.05}, out=out, on_problem=kill_one,
                config={"seed": 4, "labels": {"learn_floor": False}, "executor": {"kind": "ray", "workers": 2, "num_cpus_per_worker": 0,
                                                "trees_in_flight": 4, "retry_backoff_s": 0.01}})
    assert killed and rows(out) == rows(clean)
    from prmtree.engine.output import load_manifest

    ex = load_manifest(out / "manifest.json").stats["executor"]
    assert ex["worker_deaths"] >= 1 and ex["images_sent"] >= 10  # every problem's image, and again after the death
    assert os.path.isdir(out / "steps")
