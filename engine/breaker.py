"""A circuit breaker: stop the run when the backend fails every request.

Without it a dead backend (a server down, a wrong model name, an expired key) turns
every problem into a failure, one retry schedule at a time, and the run "finishes" having
done nothing. The driver records every attempt's outcome here; when the last ``window``
attempts all failed (with no success among them, counted in the order they ended), the
breaker raises :class:`~prmtree.rollout_workers.base.BackendDownError`, a
``FatalExecutorError``: the run stops (exit 1), everything finished is flushed, and the
same command resumes. With transient errors at rate p, a false trip needs ``window``
failures in a row (p ** window: 1e-50 at p = 0.1 and the default 50).
"""

from __future__ import annotations

from prmtree.engine.errors import BackendDownError


class CircuitBreaker:
    """Counts consecutive failed attempts; ``window`` 0 disables it."""

    def __init__(self, window: int) -> None:
        if window < 0:
            raise ValueError(f"breaker window must be >= 0, got {window}")
        self.window = window
        self.failures_in_a_row = 0
        self.unusable_in_a_row = 0  # requests whose completions were all malformed
        self.tripped: BackendDownError | None = None  # the first trip: what the run reports

    def record(self, error: BaseException | None) -> None:
        """One attempt ended: ``None`` if it succeeded, else its error. Raises
        :class:`BackendDownError` naming that error when the breaker trips (the same one for
        the attempts still in flight then, so the run reports the trip, not a later count)."""
        if self.tripped is not None:
            raise self.tripped
        if error is None:
            self.failures_in_a_row = 0
            return
        self.failures_in_a_row += 1
        if self.window and self.failures_in_a_row >= self.window:
            self.tripped = BackendDownError(
                f"circuit breaker: the last {self.failures_in_a_row} requests all failed, the latest with "
                f"{type(error).__name__}: {str(error) or '(no message)'}; everything finished is saved, "
                "run the same command again once the backend works"
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
