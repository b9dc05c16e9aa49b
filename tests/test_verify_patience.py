"""A check that runs out of time is run once more under a bound PATIENCE times longer.

Math-Verify's own alarm and the pool's bound are wall-clock: on a loaded machine a check
that normally takes a second can pass them, and "out of time" is answered "not equal". The
rows of a run would then depend on how busy the machine was. Here checks are slowed once,
as a load spike would, and must still get their verdicts; only a check out of time twice
is answered ``False`` and counted as a timeout.
"""

import asyncio
import time

import pytest
from pool_checks import out_of_time_once, slow_once, slow_retry_or_hang  # light, for the pool workers

from prmtree.engine.answers import Verifier
from prmtree.engine.answers.pool import PATIENCE
from prmtree.engine.config import VerifyConfig
from prmtree.engine.records import Problem

SQRT = Problem(id="p", question="q", answer="\\frac{\\sqrt{2}}{2}", answer_type="auto")


def test_in_process_a_check_out_of_its_own_time_once_is_retried_and_gets_its_verdict(tmp_path):
    v = Verifier(slow_check=out_of_time_once)
    assert v(SQRT, f"TIMEOUT:{tmp_path / 'a'}:\\sqrt{{2}}/2") is True
    assert v(SQRT, f"TIMEOUT:{tmp_path / 'b'}:\\sqrt{{3}}/2") is False  # a verdict, not a timeout
    stats = v.stats()
    assert stats["patient_retries"] == 2 and stats["timeouts"] == 0
    assert v(SQRT, "TIMEOUT:always:\\sqrt{2}/2") is False  # out of time twice: "not equal", counted
    stats = v.stats()
    assert stats["patient_retries"] == 3 and stats["timeouts"] == 1


@pytest.mark.slow
def test_in_the_pool_a_batch_member_out_of_its_own_time_is_rerun_alone(tmp_path):
    async def main():
        v = Verifier(VerifyConfig(timeout_s=5.0, pool_workers=1), slow_check=out_of_time_once)
        try:
            first = await v.check(SQRT, [f"TIMEOUT:{tmp_path / 'a'}:\\sqrt{{2}}/2", "\\sqrt{3}/2"])
            second = await v.check(SQRT, ["TIMEOUT:always:\\sqrt{2}/2", "\\sqrt{2}/2"])
            return first, second, v.stats()
        finally:
            await v.aclose()

    first, second, stats = asyncio.run(main())
    assert first == [True, False]  # the bystander's verdict from the batch, the retried one's from its second try
    assert second == [False, True]
    assert stats["patient_retries"] == 2 and stats["timeouts"] == 1 and stats["pool_failures"] == 0
    assert stats["pool_restarts"] == 0  # the check's own time ran out: its worker was never stuck


@pytest.mark.slow
def test_in_the_pool_a_check_slowed_past_the_bound_once_gets_its_verdict(tmp_path):
    async def main():
        v = Verifier(VerifyConfig(timeout_s=1.0, pool_workers=1), slow_check=slow_once)
        try:
            assert await v.check(SQRT, ["\\sqrt{2}/2"]) == [True]  # the pool is started and warm
            t = time.perf_counter()
            verdicts = await v.check(SQRT, [f"SLOW:1.6:{tmp_path / 'slow'}:\\frac{{1}}{{\\sqrt{{2}}}}"])
            return verdicts, time.perf_counter() - t, v.stats()
        finally:
            await v.aclose()

    verdicts, elapsed, stats = asyncio.run(main())
    assert verdicts == [True]  # before: False, as if the answers differed
    assert stats["patient_retries"] == 1 and stats["timeouts"] == 0
    assert stats["pool_restarts"] == 1  # the stuck worker was killed, the second try ran on a fresh one
    assert 1.0 < elapsed < 1.0 * (1 + PATIENCE) + 5


@pytest.mark.slow
def test_a_patient_retry_whose_pool_is_killed_by_another_checks_timeout_still_gets_its_verdict(tmp_path):
    # Two workers, one chunk each: the first check runs out of its own time (a batch member
    # retried patiently, 2.5 s under a 3 s bound), while the other chunk hangs past the pool's
    # 1 s bound, which kills every worker. The retry loses its worker to that: it is tried
    # again on a fresh pool, not answered "not equal".
    from pool_checks import HANG

    async def main():
        v = Verifier(VerifyConfig(timeout_s=1.0, pool_workers=2), slow_check=slow_retry_or_hang)
        try:
            await v.check(SQRT, ["\\sqrt{2}/2", "\\sqrt{3}"])  # both workers started and warm
            marker = tmp_path / "once"
            return await v.check(SQRT, [f"TIMEOUT:{marker}:\\sqrt{{2}}/2", HANG]), v.stats()
        finally:
            await v.aclose()

    verdicts, stats = asyncio.run(main())
    assert verdicts == [True, False]
    assert stats["pool_failures"] == 0 and stats["timeouts"] == 1 and stats["patient_retries"] == 2
