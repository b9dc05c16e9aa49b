"""Every error a caller of prmtree may need to catch, in one module that imports nothing.

Errors say what to do next (vLLM's ``EngineGenerateError`` vs ``EngineDeadError``):

* :class:`ConfigError`, :class:`PolicyConfigError`: stop at load, one line, exit 2;
* :class:`GenerationError` (``retryable``): one request failed, the driver may retry it;
* :class:`FatalExecutorError`: nothing can be served any more, the run stops (what is
  finished is flushed, the same command resumes the rest).
"""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A configuration problem, described in one line."""


class PolicyConfigError(ValueError):
    """A policy cannot be built or used as configured (unknown name, bad argument, sync
    ``generate``). Never retried: the run stops at load with this one line (exit 2)."""


class GenerationError(RuntimeError):
    """One request failed. ``retryable``: whether trying again may help (a timeout, a 503,
    a dropped connection) or not (a 400 for this request, an answer that breaks the
    contract). ``retry_after``: seconds the server asked to wait before trying again (an
    HTTP ``Retry-After``), or None; the driver waits at least that long before its next
    attempt, and (up to ``engine/breaker.py``'s ``RETRY_AFTER_MAX_S``) the circuit breaker
    does not count it: the server is up, and said when to come back. The driver is the
    only layer that retries."""

    def __init__(self, message: str, *, retryable: bool = True, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:  # keep the flags across Ray's pickling
        return (_generation_error, (str(self), self.retryable, self.retry_after))


def _generation_error(message: str, retryable: bool, retry_after: float | None = None) -> GenerationError:
    return GenerationError(message, retryable=retryable, retry_after=retry_after)


class PolicyContractError(GenerationError):
    """A policy answered with something that is not ``n`` well-formed completions."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)

    def __reduce__(self) -> tuple[Any, ...]:
        return (PolicyContractError, (str(self),))


class FatalExecutorError(RuntimeError):
    """The executor cannot serve any request (e.g. no worker left): the run must stop.

    Problems already finished are flushed; the same command resumes the rest.
    """


class BackendDownError(FatalExecutorError):
    """The circuit breaker tripped: the last requests all failed (``engine/breaker.py``)."""


class PilotFailedError(FatalExecutorError):
    """Every problem of the pilot failed, so it learned no floors: the run stops as when
    the backend is down (nothing else started, since its labels need those floors), and
    the same command pilots the same problems again, rather than label the whole run at
    chance floors frozen from nothing."""


class ImageError(ValueError):
    """An image that cannot be used: missing, unreadable, corrupt or too large."""


class ImageFileError(ImageError):
    """An image file that cannot be read now (missing, unreadable, not a regular file):
    unlike a corrupt or changed one, no sign that the row changed (a moved folder)."""


def describe_os_error(exc: OSError) -> str:
    """An I/O error in a few words: what and where."""
    where = f" ({exc.filename})" if exc.filename else ""
    return " ".join(f"{exc.strerror or exc}{where}".split())


def exception_text(exc: BaseException) -> str:
    """``str(exc)``, or ``<unprintable Name>`` where its ``__str__`` itself raises (a custom
    policy's exception class): formatting a failure must never become a failure of its own."""
    try:
        return str(exc)
    except Exception:
        return f"<unprintable {type(exc).__name__}>"


def raised(exc: BaseException) -> str:
    """An exception in one line: its type and the first line of its message, or its type
    alone where it has none (never ``"StopIteration: "`` with nothing after it)."""
    message = exception_text(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__


class StopSignal(KeyboardInterrupt):
    """A SIGTERM where a Ctrl-C raises ``KeyboardInterrupt``: while a backend starts (a
    model's load, a cluster's growth), before the run's own graceful stop is in place, a
    stop signal ends the start at once. ``signum`` gives the exit code (128 + it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
