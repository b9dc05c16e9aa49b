"""A lone Ray worker's restart is waited for, not taken for the end of the pool; a problem
the Ray executor cannot send fails alone instead of hanging its batch; and plain ``bytes``
images become ProblemImage at construction (they hung a Ray run)."""

import asyncio
import multiprocessing
import os
import pickle
import signal
import threading
import time
from pathlib import Path

import pytest
from conftest import png, rows

import prmtree
from prmtree.engine.config import ExecutorConfig
from prmtree.engine.errors import GenerationError
from prmtree.engine.output import load_manifest
from prmtree.engine.records import Completion, GenerationRequest, Problem, ProblemImage, problem_fingerprint
from prmtree.engine.synthetic import generate_problems
from prmtree.policies.simulated import SimulatedPolicy
from prmtree.rollout_workers.ray.routing import NoWorkersLeft

PROBLEMS = generate_problems(8, seed=29)
CONFIG = {"seed": 4, "labels": {"learn_floor": False}}  # no pilot: problems finish as they go


def ray_config(**executor):
    return {**CONFIG, "executor": {"kind": "ray", "workers": 1, "num_cpus_per_worker": 0, "trees_in_flight": 4,
                                   "retry_backoff_s": 0.01, **executor}}


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory):
    """The rows of PROBLEMS as an undisturbed run writes them (inline: the same rows as Ray)."""
    out = tmp_path_factory.mktemp("undisturbed")
    prmtree.run(PROBLEMS, policy="simulated", out=out, config=CONFIG)
    return out


def kill_the_worker_once(ray, killed: list):
    """An ``on_problem`` that SIGKILLs the one rollout worker's process after two problems."""
    def kill(finished, stats):
        if stats.problems_done >= 2 and not killed:
            names = [n for n in ray.util.list_named_actors() if n.startswith("prmtree-worker-")]
            assert len(names) == 1, names
            os.kill(ray.get(ray.get_actor(names[0]).ready.remote())["pid"], signal.SIGKILL)
            killed.append(names[0])

    return kill


# -- every worker down while Ray restarts it ------------------------------------------


def test_a_lone_worker_killed_mid_run_is_restarted_and_the_run_finishes(ray_session, tmp_path, undisturbed):
    # Before: NoWorkersLeft "all 1 rollout workers are dead" 1.2-1.5 s after the SIGKILL,
    # though Ray was restarting the worker (max_restarts 3, one used).
    killed = []
    s = prmtree.run(PROBLEMS, policy="simulated", policy_args={"latency_s": 0.05}, out=tmp_path,
                    config=ray_config(), on_problem=kill_the_worker_once(ray_session, killed))
    assert killed
    assert s.problems_done == len(PROBLEMS) and s.problems_failed == 0
    for table in ("steps", "nodes", "pairs"):
        assert rows(tmp_path, table) == rows(undisturbed, table), table
    ex = load_manifest(tmp_path / "manifest.json").stats["executor"]
    assert ex["worker_deaths"] >= 1 and ex["resubmissions"] >= 1


def test_a_lone_worker_with_no_restarts_still_stops_the_run(ray_session, tmp_path):
    killed = []
    with pytest.raises(NoWorkersLeft, match=r"^all 1 rollout workers are dead and none will be restarted \(worker 0 "
                                            r"was lost 1 time, more than max_restarts = 0\); finished problems are saved"):
        prmtree.run(PROBLEMS, policy="simulated", policy_args={"latency_s": 0.05}, out=tmp_path,
                    config=ray_config(max_restarts=0), on_problem=kill_the_worker_once(ray_session, killed))
    assert killed and load_manifest(tmp_path / "manifest.json").status == "running"


class RestartsSlowly(SimulatedPolicy):
    """Built again (Ray restarting its worker) only after ``restart_s``, as a model reloads."""

    name = "simulated"

    def __init__(self, marker: str, restart_s: float, **kwargs):
        if os.path.exists(marker):
            time.sleep(restart_s)
        Path(marker).write_text("built")
        super().__init__(**kwargs)


def test_a_stop_while_the_only_worker_restarts_ends_the_wait_and_a_resume_finishes(ray_session, tmp_path,
                                                                                    undisturbed):
    # Before: the first SIGTERM let the trees waiting for the restart go on waiting, and each
    # failed try at the restarting worker counted as a death: NoWorkersLeft ("lost more than
    # max_restarts = 3 times") after one SIGKILL, 8 s later.
    marker = tmp_path / "built"
    killed, stopped_at = [], []
    kill = kill_the_worker_once(ray_session, killed)

    def kill_then_stop(finished, stats):
        kill(finished, stats)
        if killed and not stopped_at:
            def stop():
                time.sleep(1.5)  # the worker is down, its trees wait for the restart (20 s)
                stopped_at.append(time.monotonic())
                os.kill(os.getpid(), signal.SIGTERM)
            threading.Thread(target=stop, daemon=True).start()

    policy = f"{__name__}:RestartsSlowly"
    args = {"marker": str(marker), "restart_s": 20.0, "latency_s": 0.05}
    s = prmtree.run(PROBLEMS, policy=policy, policy_args=args, out=tmp_path / "out", config=ray_config(),
                    on_problem=kill_then_stop)
    assert stopped_at and time.monotonic() - stopped_at[0] < 4.0
    assert s.stopped_by == signal.SIGTERM and 2 <= s.problems_done < len(PROBLEMS) and s.problems_failed == 0
    manifest = load_manifest(tmp_path / "out" / "manifest.json")
    assert len(manifest.completed) == s.problems_done and not manifest.failed
    assert manifest.stats["executor"]["worker_deaths"] == 1  # one SIGKILL, however often its restart was tried
    marker.unlink()  # the resume's worker is built at once
    prmtree.run(PROBLEMS, policy=policy, policy_args=args, out=tmp_path / "out", config=ray_config())
    for table in ("steps", "nodes", "pairs"):
        assert rows(tmp_path / "out", table) == rows(undisturbed, table), table


def test_a_lone_worker_that_restarts_slowly_is_waited_for_and_the_run_finishes(ray_session, tmp_path, undisturbed):
    # A vLLM worker that Ray restarts reloads its model: tens of seconds. Before: each request
    # tried the restarting worker every revive_after_s, and the run ended 20 s after one SIGKILL
    # with NoWorkersLeft ("request ... failed on 7 workers"), though Ray restarted it (max_restarts 1).
    marker = tmp_path / "built"
    killed = []
    args = {"marker": str(marker), "restart_s": 30.0, "latency_s": 0.05}
    s = prmtree.run(PROBLEMS, policy=f"{__name__}:RestartsSlowly", policy_args=args, out=tmp_path / "out",
                    config=ray_config(max_restarts=1), on_problem=kill_the_worker_once(ray_session, killed))
    assert killed
    assert s.problems_done == len(PROBLEMS) and s.problems_failed == 0
    for table in ("steps", "nodes", "pairs"):
        assert rows(tmp_path / "out", table) == rows(undisturbed, table), table
    ex = load_manifest(tmp_path / "out" / "manifest.json").stats["executor"]
    assert ex["worker_deaths"] == 1  # one SIGKILL: no death per try while it restarts
    assert 1 <= ex["resubmissions"] <= 4 * len(PROBLEMS)  # what it held when killed, not a resend per try


def start_executor(max_restarts: int = 3):
    from prmtree.rollout_workers.ray import RayExecutor

    config = ExecutorConfig(kind="ray", workers=1, num_cpus_per_worker=0, max_restarts=max_restarts)
    executor = RayExecutor("simulated", {}, config, revive_after_s=0.2)
    executor.start()
    return executor


def request(problem: Problem, seed: int = 1) -> GenerationRequest:
    return GenerationRequest(problem, (), n=2, seed=seed)


async def closing(executor, work):
    try:
        return await asyncio.wait_for(work, 30)  # a stranded request fails the test, not the session
    finally:
        await executor.close()


def test_a_worker_killed_for_good_ends_the_wait_at_once_and_counts_one_death(ray_session):
    # max_restarts allows restarts, but Ray says the actor is dead for good (ActorDiedError).
    # Before: it was tried again every revive_after_s, each try a death, until max_restarts
    # of them (6.6 s here; 123 s at the default 2 s), and the message said "lost more than
    # max_restarts = 30 times" after one ray.kill.
    executor = start_executor(max_restarts=30)

    async def scenario():
        assert len(await executor.submit(request(PROBLEMS[0]))) == 2
        ray_session.kill(executor.workers[0].actor, no_restart=True)
        started = time.monotonic()
        with pytest.raises(NoWorkersLeft) as stopped:
            await executor.submit(request(PROBLEMS[1]))
        return time.monotonic() - started, str(stopped.value)

    waited, message = asyncio.run(closing(executor, scenario()))
    assert waited < 1.5
    assert message == ("all 1 rollout workers are dead and none will be restarted (worker 0 was killed with ray.kill, "
                       "so Ray will not restart it); finished problems are saved, run the same command again to resume")
    assert executor.router.stats.worker_deaths == 1


# -- a request the executor cannot send --------------------------------------------------


class RefusesPickle:
    """An object whose pickling raises ``error`` (not the TypeError Ray raises for most)."""

    def __init__(self, error: Exception):
        self.error = error

    def __reduce__(self):
        raise self.error


class NeedsTwo(Exception):
    """An exception whose ``__init__`` takes more than its message (as ``openai.APIStatusError``):
    it pickles, and unpickling it raises TypeError."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


UNPICKLABLE = {
    "meta": threading.Lock,  # Ray raises TypeError
    "meta-mplock": multiprocessing.Lock,  # RuntimeError
    "meta-picklingerror": lambda: RefusesPickle(pickle.PicklingError("no pickling this")),
    "meta-valueerror": lambda: RefusesPickle(ValueError("no pickling this")),
    "meta-unpickle": lambda: NeedsTwo("server said 503", 503),  # pickles; the worker cannot unpickle it
}


def unsendable(problem: Problem, how: str) -> Problem:
    if how == "image":  # plain bytes where a ProblemImage belongs, past Problem's own check
        bad = Problem(problem.id, problem.question, problem.answer, problem.images, problem.answer_type, problem.meta)
        object.__setattr__(bad, "images", (bytes(problem.images[0]),))
        return bad
    return Problem(problem.id, problem.question, problem.answer, problem.images, problem.answer_type,
                   {**problem.meta, "lock": UNPICKLABLE[how]()})  # fine inline; pickle refuses it


CANNOT_PICKLE = "Ray cannot pickle it (an object in problem.meta that pickle refuses?): "


@pytest.mark.parametrize("how, why", [
    ("image", "AttributeError: 'bytes' object has no attribute 'sha256'"),
    ("meta", CANNOT_PICKLE + "TypeError: cannot pickle '_thread.lock' object"),
    ("meta-mplock", CANNOT_PICKLE + "RuntimeError: Lock objects should only be shared between processes through "
                                    "inheritance"),
    ("meta-picklingerror", CANNOT_PICKLE + "PicklingError: no pickling this"),
    ("meta-valueerror", CANNOT_PICKLE + "ValueError: no pickling this"),
    ("meta-unpickle", "the worker cannot take it (an object in problem.meta that does not unpickle?): TypeError: "
                      "NeedsTwo.__init__() missing 1 required positional argument: 'status'"),
], ids=["image", "meta", "meta-mplock", "meta-picklingerror", "meta-valueerror", "meta-unpickle"])
def test_a_request_that_cannot_be_sent_fails_alone_and_its_batch_mates_are_served(ray_session, how, why):
    # Before: "image" raised in the send timer's callback, asyncio logged and dropped it, and
    # every request of the batch waited for ever; "meta" was taken for the worker's death, and
    # so were the others until c437282 caught TypeError alone: the run ended "all 2 rollout
    # workers are dead". The bad problem's images were counted as sent, and believed held.
    executor = start_executor()
    bad = unsendable(PROBLEMS[1], how)

    async def scenario():  # gathered: the three requests leave in one batch
        served = await asyncio.gather(*(executor.submit(request(p)) for p in (PROBLEMS[0], bad, PROBLEMS[2])),
                                      return_exceptions=True)
        mirror = executor.workers[0].images  # what the driver believes the worker holds
        return served, {p.images[0].sha256 for p in PROBLEMS[:3] if p.images[0].sha256 in mirror}

    (good_before, failed, good_after), held = asyncio.run(closing(executor, scenario()))
    assert len(good_before) == 2 and len(good_after) == 2
    assert isinstance(failed, GenerationError) and not failed.retryable
    assert str(failed) == f"the ray executor cannot send a request of problem {bad.id!r}: {why}"
    assert executor.router.stats.worker_deaths == 0
    went = [PROBLEMS[0].images[0], PROBLEMS[2].images[0]]  # the bad one's image never went
    assert held == {im.sha256 for im in went}
    assert executor.images_sent == 2 and executor.image_bytes_sent == sum(len(im) for im in went)


class RaisesOnceOdd(SimulatedPolicy):
    """Its first request raises an exception that pickles but does not unpickle (as an HTTP
    client's error with a status argument does); the rest are answered as ever."""

    name = "simulated"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.raised = False

    async def generate(self, request):
        if not self.raised:
            self.raised = True
            raise NeedsTwo("the server answered 503", 503)
        return await super().generate(request)


def test_a_policy_error_that_does_not_unpickle_fails_one_attempt_not_the_worker(ray_session, tmp_path, undisturbed):
    # Before: the driver's poll could not read the answer (RaySystemError), its poller died
    # with every result that poll carried, and no request on the worker was answered again:
    # BackendDownError ("no request succeeded ... policy timed out") after 3 x request_timeout_s.
    started = time.monotonic()
    s = prmtree.run(PROBLEMS, policy=f"{__name__}:RaisesOnceOdd", out=tmp_path,
                    config=ray_config(request_timeout_s=5.0))
    assert s.problems_done == len(PROBLEMS) and s.problems_failed == 0
    assert time.monotonic() - started < 60
    for table in ("steps", "nodes", "pairs"):
        assert rows(tmp_path, table) == rows(undisturbed, table), table  # retried as inline retries it


class AnswersWithItsOwnClass(SimulatedPolicy):
    """Answers with a Completion subclass made where it runs (as a class of a policy's own
    script is): plain pickle cannot send it, Ray's cloudpickle sends it whole."""

    name = "simulated"

    async def generate(self, request):
        class Local(Completion):
            pass

        return [Local(c.text, c.num_tokens, c.finish_reason) for c in await super().generate(request)]


def test_completions_of_a_class_the_policy_made_reach_the_driver(ray_session):
    # Before (cc22095, results pickled one by one with plain pickle): "the policy's
    # completions cannot be pickled", every request, as Ray's own pickling had sent them.
    from prmtree.rollout_workers.ray import RayExecutor

    config = ExecutorConfig(kind="ray", workers=1, num_cpus_per_worker=0)
    executor = RayExecutor(f"{__name__}:AnswersWithItsOwnClass", {}, config, revive_after_s=0.2)
    executor.start()
    served = asyncio.run(closing(executor, executor.submit(request(PROBLEMS[0]))))
    assert [type(c).__name__ for c in served] == ["Local", "Local"] and all(isinstance(c, Completion) for c in served)


class AnswersOddly(SimulatedPolicy):
    """Answers problem ``syn-000000`` with completions the driver cannot unpickle."""

    name = "simulated"

    async def generate(self, request):
        out = await super().generate(request)
        if request.problem.id == PROBLEMS[0].id:
            return [Completion(c.text, c.num_tokens, NeedsTwo("odd", 1)) for c in out]
        return out


def test_an_answer_the_driver_cannot_read_fails_its_own_request_alone(ray_session):
    # Before: the poll raised RaySystemError, the poller died, and every request on the worker
    # waited out its time limit (here the test's 30 s), later ones too; then (97c66a7) every
    # request pending on the worker failed with it, and enough of them tripped the breaker.
    from prmtree.rollout_workers.ray import RayExecutor

    config = ExecutorConfig(kind="ray", workers=1, num_cpus_per_worker=0)
    executor = RayExecutor(f"{__name__}:AnswersOddly", {}, config, revive_after_s=0.2)
    executor.start()

    async def scenario():  # gathered: they leave in one batch and come back in one poll
        started = time.monotonic()
        answers = await asyncio.gather(*(executor.submit(request(p)) for p in PROBLEMS[:4]), return_exceptions=True)
        return answers, time.monotonic() - started

    (lost, *served), took = asyncio.run(closing(executor, scenario()))
    assert isinstance(lost, GenerationError) and lost.retryable and took < 5
    assert str(lost).startswith("worker 0's answer cannot be read by the driver: ")
    assert "NeedsTwo.__init__() missing 1 required positional argument" in str(lost)
    assert [len(s) for s in served] == [2, 2, 2]  # the requests beside it are served
    assert executor.router.stats.worker_deaths == 0


# -- plain bytes as a problem's image ---------------------------------------------------


def test_plain_bytes_images_are_taken_as_problem_images():
    data = png()
    plain = Problem("p1", "How many?", "1", images=[data, bytearray(data), memoryview(data)])
    assert isinstance(plain.images, tuple) and len(plain.images) == 3
    assert all(type(im) is ProblemImage and im == data and im.path is None for im in plain.images)
    typed = Problem("p1", "How many?", "1", images=(ProblemImage(data),) * 3)
    assert problem_fingerprint(plain) == problem_fingerprint(typed)
    kept = ProblemImage(data, "a.png")
    assert Problem("p1", "How many?", "1", images=(kept,)).images[0] is kept  # as the input readers build them


@pytest.mark.parametrize("images, message", [
    (("a.png",), "Problem.images[0] must be an image's encoded bytes (ProblemImage or bytes: PNG, JPEG, ...), got "
                 "str (problem 'p1'): read the file, ProblemImage(Path(p).read_bytes(), path=p)"),
    ((ProblemImage(png()), None), "Problem.images[1] must be an image's encoded bytes (ProblemImage or bytes: PNG, "
                                  "JPEG, ...), got NoneType (problem 'p1')"),
    (png(), "Problem.images must be a tuple of images, got bytes (problem 'p1'): write images=(image,)"),
], ids=["a path", "None", "one image, no tuple"])
def test_images_that_are_not_encoded_bytes_are_refused_by_the_problem_id(images, message):
    with pytest.raises(ValueError) as refused:
        Problem("p1", "How many?", "1", images=images)
    assert str(refused.value) == message


def test_a_problem_with_plain_bytes_images_runs_on_ray_as_inline(ray_session, tmp_path):
    # Before: the Ray run hung (its batch never sent); inline finished.
    problems = [Problem(p.id, p.question, p.answer, tuple(bytes(im) for im in p.images), p.answer_type, p.meta)
                if i == 1 else p for i, p in enumerate(PROBLEMS[:4])]
    inline = prmtree.run(problems, policy="simulated", out=tmp_path / "inline", config=CONFIG)
    on_ray = prmtree.run(problems, policy="simulated", out=tmp_path / "ray",
                         config=ray_config(workers=2, request_timeout_s=15, max_attempts=1))
    assert on_ray.problems_done == inline.problems_done == 4
    assert rows(tmp_path / "ray") == rows(tmp_path / "inline")
