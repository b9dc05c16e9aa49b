"""A circuit breaker: stop the run when the backend fails every request.

Without it a dead backend (a server down, a wrong model name, an expired key) turns
every problem into a failure, one retry schedule at a time, and the run "finishes" having
done nothing. The driver records every attempt's outcome here; when the last ``window``
attempts all failed (with no success among them, counted in the order they ended), the
breaker raises :class:`~prmtree.rollout_workers.base.BackendDownError`, a
``FatalExecutorError``: the run stops (exit 1), everything finished is flushed, and the
same command resumes. With transient errors at rate p, a false trip needs ``window``
failures in a row (p ** window: 1e-50 at p = 0.1 and the default 50).

A failure that carries a ``Retry-After`` (``GenerationError.retry_after``: a 429 or 503
saying when to come back) is neither a failure nor a success here: the server answered,
and it is up, only busy or rate-limiting this client; the driver waits as asked before
its next attempt. Counting it would stop a run that a rate-limit window merely pauses
(every tree's requests are refused at once, 50 in a few seconds); letting it reset the
count would hide a backend that fails everything else. A server that keeps asking to
wait, serving no one, costs each problem its ``max_attempts`` (it fails, and the next run
retries it; a busy answer while others are served spends none, up to the driver's
``BUSY_RETRIES``), not the run, for :data:`RATE_LIMITED_GIVE_UP_S`: past that with no
request succeeding (an exhausted quota), its waits count as failures again and the
breaker stops the run. A wait over :data:`RETRY_AFTER_MAX_S` (or of 0) is not honoured
as asked, so it counts as a failure like any other.

A backend that hangs (alive, answering nothing) fails each request only at its timeout,
and the driver, reading timeouts as overload, halves its concurrency down to one request
in flight: ``window`` failures in a row would then take ``window`` timeouts, hours at
the default 600 s. So the breaker also trips on silence: at least
:data:`SILENT_FAILURES` failures in a row and no request succeeding for ``silence_s``
(the driver gives three request timeouts). A server asking to wait answered: it resets
that clock as a success does (while its waits are honoured).
"""

from __future__ import annotations

import math
import time

from prmtree.engine.errors import BackendDownError, exception_text

#: the longest ``Retry-After`` honoured (seconds; the OpenAI SDK's bound too): a server
#: asking for more is retried after this long, and its answer counts as a failure
RETRY_AFTER_MAX_S = 60.0
#: how long a server may answer nothing but "wait" (no request succeeding) before its waits
#: count as failures again: a rate-limit window passes in a minute or so, an exhausted quota
#: never does, and without this bound a run of 1,000 problems would wait out ~2 hours of
#: Retry-After: 60 before exiting
RATE_LIMITED_GIVE_UP_S = 300.0
#: the fewest failures in a row the silence rule trips on (one slow request is no outage)
SILENT_FAILURES = 3


def retry_after(error: BaseException | None) -> float | None:
    """The seconds a failed attempt's server asked to wait (``retry_after``), or None."""
    wait = getattr(error, "retry_after", None)
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not math.isfinite(wait) or wait < 0:
        return None
    return float(wait)


def asked_to_wait(error: BaseException | None) -> bool:
    """Whether the server said when to come back, within what is honoured: not a sign
    that the backend is down."""
    wait = retry_after(error)
    return wait is not None and 0 < wait <= RETRY_AFTER_MAX_S


class CircuitBreaker:
    """Counts consecutive failed attempts; ``window`` 0 disables it."""

    def __init__(self, window: int, silence_s: float = math.inf, now: float | None = None) -> None:
        if window < 0:
            raise ValueError(f"breaker window must be >= 0, got {window}")
        self.window = window
        self.silence_s = silence_s  # no success for this long (and SILENT_FAILURES in a row): a trip
        self.last_success = time.monotonic() if now is None else now  # or an answer asking to wait
        self.failures_in_a_row = 0
        self.unusable_in_a_row = 0  # requests whose completions were all malformed
        self.tripped: BackendDownError | None = None  # the first trip: what the run reports
        self.waiting_since: float | None = None  # when the server began answering only "wait"

    def record(self, error: BaseException | None, now: float | None = None) -> None:
        """One attempt ended: ``None`` if it succeeded, else its error (one that asks to wait
        within :data:`RETRY_AFTER_MAX_S` is not counted). Raises
        :class:`BackendDownError` naming that error when the breaker trips (the same one for
        the attempts still in flight then, so the run reports the trip, not a later count)."""
        if self.tripped is not None:
            raise self.tripped
        if error is None:
            self.failures_in_a_row = 0
            self.waiting_since = None
            self.last_success = time.monotonic() if now is None else now
            return
        now = time.monotonic() if now is None else now
        if asked_to_wait(error):  # up, and busy: neither a failure nor a success (module docstring)
            if self.waiting_since is None:
                self.waiting_since = now
            if now - self.waiting_since < RATE_LIMITED_GIVE_UP_S:
                self.last_success = now  # it answered: no silence (a 503 between 429s is no hang)
                return  # (past RATE_LIMITED_GIVE_UP_S of nothing but waits, they count: below)
        self.failures_in_a_row += 1
        if not self.window:
            return
        latest = f"{type(error).__name__}: {exception_text(error) or '(no message)'}"  # (a __str__ may raise)
        if self.failures_in_a_row >= self.window:
            self.tripped = BackendDownError(
                f"circuit breaker: the last {self.failures_in_a_row} requests all failed, the latest with "
                f"{latest}; everything finished is saved, run the same command again once the backend works"
            )
            raise self.tripped
        silent = now - self.last_success
        if self.failures_in_a_row >= SILENT_FAILURES and silent >= self.silence_s:
            self.tripped = BackendDownError(
                f"circuit breaker: no request succeeded for {silent:.0f} s (the last {self.failures_in_a_row} all "
                f"failed, the latest with {latest}): a backend that answers nothing; everything finished is "
                "saved, run the same command again once the backend works"
            )
            raise self.tripped

    def record_output(self, malformed: list[str | None]) -> None:
        """A request's rollouts parsed: each one's malformed reason, or None. Raises
        :class:`BackendDownError` when the last ``window`` requests had no usable one."""
        if self.tripped is not None:
            raise self.tripped
        if not malformed or not all(malformed):
            self.unusable_in_a_row = 0
            return
        self.unusable_in_a_row += 1
        if self.window and self.unusable_in_a_row >= self.window:
            reasons = ", ".join(sorted(set(m for m in malformed if m)))
            self.tripped = BackendDownError(
                f"circuit breaker: the last {self.unusable_in_a_row} requests returned no usable completion (the "
                f"latest: {reasons}); check the policy's prompt format, max_tokens and stop strings; everything "
                "finished is saved, run the same command again once the policy answers"
            )
            raise self.tripped
