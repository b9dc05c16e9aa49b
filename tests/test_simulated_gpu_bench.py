"""The benchmarks' simulated GPU: the answer mix it writes keeps its statistics (after the
per-completion ``Random`` became a hash), and its decode model admits, batches and meters
sequences as a capacity-bound engine would."""

import asyncio
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from prmtree.engine.records import Completion, GenerationRequest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from engine_throughput import MixedAnswerPolicy, mixed_problems  # noqa: E402
from gpu_utilisation import MeteredGPU  # noqa: E402
from verify_mix import MIX  # noqa: E402

MIX_META = {"int_gold": "7", "correct": ["a", "b", "c", "d"], "wrong": ["w0", "w1", "w2"], "tail": ["t0", "t1"]}


def rewritten(value: str, n: int = 40_000) -> Counter:
    c = Completion(f"x = 7. The answer is \\boxed{{{value}}}.", 6)
    out = Counter()
    for i in range(n):
        text = MixedAnswerPolicy._rewrite(c, MIX_META, seed=i // 4, index=i % 4).text
        assert text.startswith("x = 7. The answer is \\boxed{") and text.endswith("}.")
        out[text[len("x = 7. The answer is \\boxed{"):-2]] += 1
    return out


def test_a_right_answer_is_the_gold_half_the_time_else_any_of_its_forms():
    counts, n = rewritten("7"), 40_000
    assert set(counts) == set(MIX_META["correct"])
    assert counts["a"] / n == pytest.approx(0.5 + 0.5 / 4, abs=0.01)
    for form in "bcd":
        assert counts[form] / n == pytest.approx(0.5 / 4, abs=0.01)


def test_a_wrong_answer_is_its_plausible_form_three_times_in_four_else_an_odd_one():
    counts, n = rewritten("-5"), 40_000  # -5 % 3 == 1: the wrong form tied to the value
    assert set(counts) == {"w1", "t0", "t1"}
    assert counts["w1"] / n == pytest.approx(0.75, abs=0.01)
    assert counts["t0"] / n == pytest.approx(0.125, abs=0.01)
    assert rewritten("oops", 4000).keys() == {"w0", "t0", "t1"}  # not a number: the first wrong form


def test_the_rewrite_is_deterministic_and_touches_only_the_last_boxed_answer():
    c = Completion("\\boxed{7} then x = 7. The answer is \\boxed{7}.", 9, "length", 3, 11)
    a = MixedAnswerPolicy._rewrite(c, MIX_META, 12, 3)
    assert a == MixedAnswerPolicy._rewrite(c, MIX_META, 12, 3)
    assert a.text.startswith("\\boxed{7} then") and (a.num_tokens, a.finish_reason, a.cached_tokens, a.prompt_tokens) == (9, "length", 3, 11)


def test_mixed_completions_box_the_problems_real_answer_kinds():
    problems = mixed_problems(40, seed=5, weights=MIX)
    policy = MixedAnswerPolicy(error_rate=0.0, lucky_rate=0.0)
    right = 0
    for p in problems:
        for c in policy.complete(GenerationRequest(p, (), 4, seed=len(p.id))):
            boxed = c.text[c.text.rindex("\\boxed{") + 7: c.text.rindex("}")]
            assert boxed in p.meta["mix"]["correct"]  # no errors: always a form of the gold
            right += boxed == p.answer
    assert 0.5 < right / 160 < 0.9  # the gold itself half the time, plus its share of the other half


def test_the_decode_model_serves_capacity_sequences_per_latency_first_come_first_served():
    async def scenario() -> tuple[float, list[int], MeteredGPU]:
        gpu = MeteredGPU(latency_s=0.05, batch_capacity=8)
        order: list[int] = []

        async def one(i: int, n: int) -> None:
            await gpu._decode(n)
            order.append(i)

        start = time.perf_counter()
        # 4 + 4 fit at once; 6 waits for room; 2 fits beside 6 but waits its turn behind it
        await asyncio.gather(one(0, 4), one(1, 4), one(2, 6), one(3, 2), one(4, 20))
        return time.perf_counter() - start, order, gpu

    wall, order, gpu = asyncio.run(scenario())
    assert order == [0, 1, 2, 3, 4]
    assert 0.15 <= wall < 0.25  # three waves of 50 ms: {0, 1}, {2, 3}, {4 (capped at 8)}
    assert gpu.work == pytest.approx((4 + 4 + 6 + 2 + 8) * 0.05, rel=0.05)
    assert gpu._decoding == 0 and not gpu._queue
    assert 0.8 <= gpu.utilisation() <= 1.01  # 8 of 8 sequences in each of the three waves


def test_the_engine_process_writes_the_texts_the_policy_writes_in_process():
    # gpu_utilisation --engine-process: the same completions, through the same admission
    # (capacity 8 for 30 sequences: most requests wait their turn), from another process
    problems = mixed_problems(6, seed=5, weights=MIX)
    requests = [GenerationRequest(p, (), 4, seed=i) for i, p in enumerate(problems)]
    requests += [GenerationRequest(problems[0], ("x = 3.",), 3, seed=99, next_step_only=True),
                 GenerationRequest(problems[1], (), 3, seed=7, max_tokens=4)]

    async def scenario() -> tuple[list[list[Completion]], MeteredGPU]:
        gpu = MeteredGPU(latency_s=0.02, batch_capacity=8, engine_process=True)
        try:
            return list(await asyncio.gather(*(gpu.generate(r) for r in requests))), gpu
        finally:
            await gpu.close()

    got, gpu = asyncio.run(scenario())
    plain = MixedAnswerPolicy()
    assert got == [plain.complete(r) for r in requests]
    assert any(c.finish_reason == "length" for c in got[-1])  # the cut one came back cut
    assert gpu.model_cpu > 0 and gpu.model_cpu_s == 0  # the text was written in the other process
    assert gpu.work == pytest.approx(sum(r.n for r in requests) * 0.02, rel=0.05)
    assert gpu._decoding == 0 and not gpu._queue


@pytest.mark.slow
def test_the_stage_breakdown_adds_up_to_the_drivers_cpu():
    # gpu_utilisation --stages: every stage timed, "other" the rest of the driver's process
    from gpu_utilisation import one

    result = one(64, 0.001, 12, stages=True)
    stages = result["driver_ms_per_rollout_by_stage"]
    assert set(stages) == {"search", "parse", "verify", "label", "write", "other"}
    assert all(v > 0 for k, v in stages.items() if k != "other")
    assert sum(stages.values()) == pytest.approx(result["driver_cpu_ms_per_rollout"], abs=2e-3)
    assert one(64, 0.001, 4)["driver_ms_per_rollout_by_stage"] is None  # not asked: no timers
