"""The asyncio driver: concurrency, determinism, failures, malformed output."""

import asyncio
import random

import pyarrow.parquet as pq
import pytest
from conftest import rows

import prmtree
from prmtree.engine.config import RunConfig
from prmtree.engine.output import load_manifest, read_table
from prmtree.engine.records import Completion
from prmtree.engine.errors import PolicyConfigError
from prmtree.policies.simulated import SimulatedPolicy


def cfg(**executor):
    return RunConfig.model_validate({"seed": 7, "executor": executor})




class Jittery:
    """Delegates to the simulated policy after a real-time delay from a seeded sequence."""

    name = "simulated"

    def __init__(self, **kw):
        self.inner = SimulatedPolicy(**kw)
        self.rng = random.Random(0)

    async def generate(self, request):
        await asyncio.sleep(self.rng.random() * 0.003)
        return await self.inner.generate(request)


@pytest.mark.parametrize("strategy", ["omega", "shepherd", "mcts"])
def test_same_seed_same_rows_whatever_the_concurrency(tmp_path, problems, strategy):
    a = prmtree.run(problems[:12], policy=SimulatedPolicy(), strategy=strategy, out=tmp_path / "a",
                    config=cfg(trees_in_flight=1, max_concurrency=1))
    b = prmtree.run(problems[:12], policy=Jittery(), strategy=strategy, out=tmp_path / "b",
                    config=cfg(trees_in_flight=64, max_concurrency=7))
    assert a.rollouts == b.rollouts > 0
    for table in ("steps", "nodes", "pairs"):
        assert rows(tmp_path / "a", table) == rows(tmp_path / "b", table)
    prmtree.run(problems[:12], policy=SimulatedPolicy(), strategy=strategy, out=tmp_path / "c", seed=8)
    assert rows(tmp_path / "a") != rows(tmp_path / "c")


def test_many_trees_are_in_flight_at_once(problems):
    seen = []

    class Counting(SimulatedPolicy):
        def __init__(self):
            super().__init__(latency_s=0.01)
            self.now = 0

        async def generate(self, request):
            self.now += 1
            seen.append(self.now)
            try:
                return await super().generate(request)
            finally:
                self.now -= 1

    prmtree.run(problems, policy=Counting(), config=cfg(trees_in_flight=16))
    assert max(seen) == 16  # one wave per omega tree: trees in flight bound the requests


class Failing(SimulatedPolicy):
    """Raises for one problem always, and for every other request once (then succeeds)."""

    def __init__(self, bad_id):
        super().__init__()
        self.bad_id = bad_id
        self.seen = set()
        self._broken = True  # private: not part of the config, so a re-run resumes

    async def generate(self, request):
        if request.problem.id == self.bad_id and self._broken:
            raise RuntimeError("GPU fell off the bus")
        key = (request.problem.id, request.prefix, request.seed)
        if key not in self.seen:
            self.seen.add(key)
            raise ConnectionError("transient")
        return await super().generate(request)


def test_policy_errors_are_retried_then_the_problem_is_retried_by_the_next_run(tmp_path, problems):
    bad = problems[2].id
    out = tmp_path / "o"
    policy = Failing(bad)
    # the failing problem is not one of the pilot's 2 (a member's failure changes what the pilot learns)
    config = RunConfig.model_validate({"seed": 7, "executor": {"retry_backoff_s": 0.001}, "labels": {"pilot_problems": 2}})
    s = prmtree.run(problems[:6], policy=policy, out=out, config=config)
    assert s.problems_failed == 1 and s.problems_done == 5 and s.retry_pending == 1
    assert load_manifest(out / "manifest.json").failed == {bad: "policy: RuntimeError: GPU fell off the bus (after 3 attempts)"}
    assert read_table(out, "errors").num_rows == 0  # errors/ is for bad input; this one is retried
    assert dict(s.failure_reasons) == {"RuntimeError": 1}
    assert s.failure_examples == {"RuntimeError": "RuntimeError: GPU fell off the bus (after 3 attempts)"}
    assert s.stats["retries"] >= s.stats["requests"]
    policy._broken = False  # the backend is back: the same call retries the failed problem only
    again = prmtree.run(problems[:6], policy=policy, out=out, config=config)
    assert (again.problems_done, again.problems_failed, again.retry_pending) == (6, 0, 0)
    assert load_manifest(out / "manifest.json").failed == {}
    clean = prmtree.run(problems[:6], policy=SimulatedPolicy(), out=tmp_path / "clean", config=config)
    assert rows(out) == rows(tmp_path / "clean")  # retries reuse the seed: same rows
    assert clean.rollouts == again.rollouts


def test_a_hanging_policy_times_out(tmp_path, problems):
    class Hangs:
        async def generate(self, request):
            await asyncio.sleep(3600)

    config = RunConfig.model_validate(
        {"executor": {"request_timeout_s": 0.05, "max_attempts": 2, "retry_backoff_s": 0.0}}
    )
    s = prmtree.run(problems[:3], policy=Hangs(), out=tmp_path, config=config)
    assert s.problems_failed == 3
    reasons = set(load_manifest(tmp_path / "manifest.json").failed.values())
    assert reasons == {"policy: GenerationError: policy timed out after 0.05 s (after 2 attempts)"}


def test_malformed_completions_are_wrong_rollouts_and_tallied(tmp_path, problems):
    class Junk:
        name = "junk"

        async def generate(self, request):
            return [
                Completion("", 0, "stop"),
                Completion("just one giant step with no answer marker at all", 9, "stop"),
                Completion("a\n\nb \\boxed{4", 10, "stop"),  # unterminated box
                Completion("step\n\nmore", 1024, "length"),
                Completion("\udcff\udcfe junk \ufffd\n\n\\boxed{x}", 5, "stop"),
                Completion(f"fine\n\n\\boxed{{{request.problem.answer}}}", 5, "stop"),
            ][: request.n]

    # mc: every request asks for k = 6 (adaptive labels ask for smaller last batches)
    s = prmtree.run(problems[:4], policy=Junk(), out=tmp_path, config={"search": {"k": 6}, "labels": {"method": "mc"}})
    assert s.problems_done == 4 and s.problems_failed == 0
    mal = s.stats["malformed_rollouts"]
    n = s.stats["requests"]  # every request gets the same six completions
    assert n >= 4
    assert mal == {"empty": n, "truncated": n, "no_answer": n, "undecodable": n}
    assert s.stats["truncated_by_length"] == n
    assert s.rollouts == 6 * n
    nodes = read_table(tmp_path, "nodes").to_pylist()
    roots = [n for n in nodes if n["depth"] == 0]
    # a "no answer marker" text is read by its last line, so it is a wrong answer, not malformed
    assert all(r["n_rollouts"] == 6 and r["n_correct"] == 1 for r in roots)


def test_a_policy_returning_the_wrong_type_fails_its_problem_clearly(tmp_path, problems):
    class Wrong:
        async def generate(self, request):
            return "text"

    s = prmtree.run(problems[:1], policy=Wrong(), out=tmp_path, config={"executor": {"retry_backoff_s": 0}})
    (reason,) = load_manifest(tmp_path / "manifest.json").failed.values()
    assert reason == "policy: contract: Wrong.generate must return a list of Completion, got str (not retryable)"
    assert s.problems_failed == 1 and s.retries == 0  # a broken contract is not retried


@pytest.mark.parametrize(
    "answer, message",
    [
        (lambda r: [], "returned 0 completions for n=8"),
        (lambda r: [Completion("x")] * (r.n - 1), "returned 7 completions for n=8"),
        (lambda r: [Completion("x")] * (3 * r.n), "returned 24 completions for n=8"),
        (lambda r: [Completion("x", num_tokens=-5)] * r.n, "Completion.num_tokens must be an int >= 0, got -5"),
        (lambda r: [Completion("x", finish_reason="eos")] * r.n, "finish_reason must be one of stop, length, got 'eos'"),
    ],
)
def test_the_policy_contract_is_checked_where_answers_enter(tmp_path, problems, answer, message):
    class Bent:
        async def generate(self, request):
            return answer(request)

    s = prmtree.run(problems[:2], policy=Bent(), out=tmp_path)
    assert s.problems_failed == 2 and s.rollouts == 0 and s.problems_done == 0
    failed = load_manifest(tmp_path / "manifest.json").failed
    assert len(failed) == 2 and all(message in r for r in failed.values())


def test_a_sync_generate_is_refused_at_load_with_one_line(problems):
    class Sync:
        def generate(self, request):
            return []

    with pytest.raises(PolicyConfigError, match="generate must be 'async def generate"):
        prmtree.run(problems[:1], policy=Sync())


def sync_policy_function(request):
    return []


def test_a_sync_policy_function_is_refused_naming_async(problems):
    with pytest.raises(PolicyConfigError, match=r"policy function 'test_driver:sync_policy_function' must be "
                                                r"'async def sync_policy_function\(request\)'"):
        prmtree.run(problems[:1], policy="test_driver:sync_policy_function")


def test_shards_rotate_and_every_part_is_complete(tmp_path, problems):
    s = prmtree.run(problems, policy=SimulatedPolicy(), out=tmp_path, config={"output": {"rows_per_shard": 20}})
    files = sorted((tmp_path / "steps").glob("part-*.parquet"))
    assert len(files) >= 3
    assert all(pq.read_metadata(f).num_rows <= 20 for f in files)
    assert sum(pq.read_metadata(f).num_rows for f in files) == s.stats["paths"]
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_policy_answering_only_junk_trips_the_breaker_instead_of_finishing_with_no_labels(tmp_path, problems):
    from prmtree.engine.errors import BackendDownError

    class Empty:
        name = "empty"

        async def generate(self, request):  # e.g. a wrong chat template: every answer empty
            return [Completion("", 0, "stop") for _ in range(request.n)]

    config = {"executor": {"breaker_window": 5}}
    with pytest.raises(BackendDownError, match=r"the last 5 requests returned no usable completion \(the latest: "
                                               r"empty\); check the policy's prompt format"):
        prmtree.run(problems[:6], policy=Empty(), out=tmp_path, config=config)
    # junk now and then is a wrong rollout, as before (the test above): only a run of it trips


def test_the_summary_shows_an_example_of_each_failure_kind(problems, capsys):
    from prmtree.summary import print_summary

    s = prmtree.run(problems[:3], policy=Failing(problems[1].id), config={"executor": {"retry_backoff_s": 0.001}})
    print_summary(s, None)
    shown = " ".join(capsys.readouterr().out.split())
    assert "failed: RuntimeError" in shown and "e.g. RuntimeError: GPU fell off the bus (after 3 attempts)" in shown


def test_retry_waits_double_up_to_their_cap(tmp_path, problems):
    """Seven attempts at 0.05 s doubling would wait 1.6 s before the last; the cap holds it at 0.1 s."""
    import time

    class FailsSixTimes(SimulatedPolicy):
        def __init__(self):
            super().__init__()
            self.attempts: list[float] = []

        async def generate(self, request):
            self.attempts.append(time.monotonic())
            if len(self.attempts) < 7:
                raise ConnectionError("transient")
            return await super().generate(request)

    policy = FailsSixTimes()
    config = RunConfig.model_validate({"seed": 7, "search": {"k": 2, "budget": 2}, "labels": {"pilot_problems": 1},
                                       "executor": {"max_attempts": 7, "retry_backoff_s": 0.05,
                                                    "retry_backoff_max_s": 0.1, "trees_in_flight": 1}})
    s = prmtree.run(problems[:1], policy=policy, out=tmp_path / "o", config=config)
    assert s.problems_done == 1 and s.stats["retries"] == 6
    gaps = [b - a for a, b in zip(policy.attempts, policy.attempts[1:7])]
    assert [round(g, 2) >= w for g, w in zip(gaps, [0.05, 0.1, 0.1, 0.1, 0.1, 0.1])] == [True] * 6, gaps
    assert max(gaps) < 1.2 and sum(gaps) < 2.0, gaps  # uncapped, the sixth wait is 1.6 s, all six 3.15 s
