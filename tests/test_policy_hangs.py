"""Policies that do not let go: one that swallows its cancellation, one whose call is stuck
in a thread. Neither may hold a run (or its process) past its time limits and stop
signals. Each runs in a subprocess, so a regression is a failed test, not a hung suite."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

SCRIPT = r"""
import asyncio, sys, time
import prmtree
from prmtree.engine.synthetic import generate_problems
from prmtree.policies.simulated import SimulatedPolicy

class Stubborn(SimulatedPolicy):
    name = "stubborn"
    calls = 0

    async def generate(self, request):
        self.calls += 1
        if self.calls == 5:
            print("BLOCKING", flush=True)
            if sys.argv[3] == "swallow":  # cancellation is caught and ignored, forever
                while True:
                    try:
                        await asyncio.sleep(10**6)
                    except asyncio.CancelledError:
                        pass
            else:  # a call stuck in a thread (asyncio.to_thread, as prmtree's own advice says)
                await asyncio.to_thread(time.sleep, 10**6)
        return await super().generate(request)

if __name__ == "__main__":
    s = prmtree.run(generate_problems(6, seed=3), policy=Stubborn(), out=sys.argv[1], seed=3,
                    config={"executor": {"request_timeout_s": float(sys.argv[2]), "retry_backoff_s": 0.05},
                            "labels": {"learn_floor": False}})  # no pilot: a first stop lets trees finish
    print("STOPPED" if s.stopped_by else "FINISHED", s.problems_done, s.problems_failed, flush=True)
"""


def _start(tmp_path, timeout_s: float, how: str) -> subprocess.Popen:
    script = tmp_path / "stubborn.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "o"), str(timeout_s), how],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "BLOCKING"
    return proc


def _finish(proc: subprocess.Popen, *signals: int) -> tuple[str, str, float]:
    """Send ``signals`` (SIGTERM twice: the first lets trees finish, the second cancels),
    then wait: stdout, stderr and the seconds from the last signal to the exit."""
    try:
        for sig in signals:
            time.sleep(0.4)
            proc.send_signal(sig)
        started = time.monotonic()
        out, err = proc.communicate(timeout=60)
        return out, err, time.monotonic() - started
    finally:
        proc.kill()


@pytest.mark.parametrize("how", ["swallow", "thread"])
def test_a_request_the_policy_will_not_give_up_times_out_and_the_process_exits(tmp_path, how):
    """The stuck request times out (1 s), is retried, and the run finishes every problem;
    the process then exits (a thread still sleeping is not waited for, a swallowed
    cancellation is walked away from after a grace period)."""
    proc = _start(tmp_path, 1.0, how)
    out, err, elapsed = _finish(proc)
    assert proc.returncode == 0, err
    assert out.split() == ["FINISHED", "6", "0"], err
    assert elapsed < 20


def test_two_stop_signals_end_a_run_whose_policy_swallows_cancellation(tmp_path):
    """The first SIGTERM lets the trees in flight finish, the second cancels them; the one
    whose policy ignores it is walked away from, and the run returns (it hung until SIGKILL)."""
    proc = _start(tmp_path, 600.0, "swallow")
    out, err, elapsed = _finish(proc, signal.SIGTERM, signal.SIGTERM)
    assert proc.returncode == 0, err
    assert "SIGTERM again: cancelling the problems in flight" in err and out.startswith("STOPPED"), (out, err)
    assert elapsed < 10


def test_a_walked_away_policy_still_finishes_its_cleanup(monkeypatch):
    """Walking away used to close the policy's coroutine, skipping every async ``finally``
    (an httpx stream never gave its connection back, so the next request hit PoolTimeout).
    The request fails at the grace; the policy's own cleanup then finishes unwaited for."""
    import asyncio

    from prmtree.engine.config import ExecutorConfig
    from prmtree.engine.contracts import CANCELLED_BY_PRMTREE
    from prmtree.rollout_workers import inline

    monkeypatch.setattr(inline, "CANCEL_GRACE_S", 0.2)
    released = []

    class SlowAbort:
        name = "slow-abort"

        async def generate(self, request):
            try:
                try:
                    await asyncio.sleep(100)
                except asyncio.CancelledError:
                    await asyncio.sleep(0.5)  # an abort sent to a busy server: longer than the grace
                    raise
            finally:
                await asyncio.sleep(0)  # an async cleanup (a connection given back)
                released.append(True)

    async def main():
        task = asyncio.create_task(inline.InlineExecutor(SlowAbort(), ExecutorConfig()).submit(None))
        await asyncio.sleep(0.05)
        task.cancel(CANCELLED_BY_PRMTREE)
        started = asyncio.get_running_loop().time()
        with pytest.raises(asyncio.CancelledError, match="went on 0.2 s after its cancellation"):
            await task
        walked = asyncio.get_running_loop().time() - started
        assert not released and walked < 0.45  # the request did not wait for the cleanup
        await asyncio.sleep(0.6)
        return walked

    asyncio.run(main())
    assert released == [True]
