"""The verifier the driver holds: a memo, counters, and the dispatch of each check to the
cheap paths or to Math-Verify.

Math-Verify runs in-process for the synchronous ``Verifier.__call__``, in a process pool
with a time bound for ``await Verifier.check`` (see :mod:`.pool`), so the driver's event
loop never blocks on sympy. Verdicts are memoised in a bounded LRU keyed by (answer kind,
gold, predicted answer), shared across problems: golds such as ``yes``, ``B`` or
``\\frac{1}{2}`` recur across a dataset. Verification is total: anything unparseable, slow
beyond its bound, or crashing is "not correct".
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import traceback
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prmtree.engine.answers.bounds import extreme_asked, split_bound, states_bound
from prmtree.engine.answers.compare import cheap_check, slow_match
from prmtree.engine.answers.kinds import Options, _auto_kind, options_of
from prmtree.engine.answers.pool import PATIENCE, CheckPool, CheckTimedOut
from prmtree.engine.answers.symbols import ascii_math, exact_numbers
from prmtree.engine.config import VerifyConfig

if TYPE_CHECKING:
    from prmtree.engine.records import Problem

AnswerCheck = Callable[[str, str], bool]
_MemoKey = tuple[str, str, str, str, Options, str | None]  # (answer_type, kind, gold, predicted, options, extreme asked)


class Verifier:
    """Decides correctness of extracted answers: cheap paths first, Math-Verify when needed.

    Takes the run's ``VerifyConfig`` whole. ``check`` (async, what the driver uses) sends
    Math-Verify work to a process pool of ``pool_workers``, each check bounded by ``timeout_s``; ``__call__`` (sync) runs it
    in-process. ``custom(gold, predicted)`` replaces all of it and runs in-process (it need
    not pickle; an ``async def`` is refused here, with a ``TypeError``).
    ``slow_check(gold, predicted)`` replaces Math-Verify and must pickle (a
    module-level function): the hook for other equivalence checkers and for fault injection.
    Call ``close()``/``await aclose()`` when done, to stop the pool's workers.
    """

    def __init__(
        self,
        config: VerifyConfig | None = None,
        *,
        custom: AnswerCheck | None = None,
        slow_check: AnswerCheck | None = None,
    ) -> None:
        config = config or VerifyConfig()
        if custom is not None:
            check_custom(custom)
        timeout_s, pool_workers = config.timeout_s, config.pool_workers
        self.custom = custom
        self.rel_tol = config.rel_tol
        self.decimal_comma = config.decimal_comma
        self.timeout_s = timeout_s
        self.memo_size = config.memo_size
        # In the pool, Math-Verify's own per-phase timeout (two parses and a verify) stays inside
        # ours, so a merely slow check ends in the worker instead of costing a pool restart.
        self.slow_check = slow_check
        inner_s = max(1, int(timeout_s // 2))
        self._pool_check_fn = slow_check or functools.partial(
            slow_match, timeout_s=inner_s, rel_tol=self.rel_tol, decimal_comma=self.decimal_comma
        )
        # A check past its bound is run once more with bounds PATIENCE times longer (a custom
        # slow check has no inner bound: only the pool's grows), so that a busy machine does
        # not turn "equal" into "not equal" and the rows of a run into a function of its load.
        self._patient_check_fn = slow_check or functools.partial(
            slow_match, timeout_s=max(inner_s + 1, round(inner_s * PATIENCE)), rel_tol=self.rel_tol,
            decimal_comma=self.decimal_comma
        )
        self._inline_check_fn = self._pool_check_fn  # the same bounds in-process: the same verdicts
        check_module = getattr(getattr(slow_check, "func", slow_check), "__module__", None)
        self._pool = CheckPool(workers=pool_workers, timeout_s=timeout_s, import_main=check_module == "__main__")
        self._memo: OrderedDict[_MemoKey, bool] = OrderedDict()
        self._inflight: dict[_MemoKey, asyncio.Future[bool]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._checks = 0
        self._memo_hits = 0
        self._quick = 0
        self._inline = 0
        self._inline_timeouts = 0  # in-process checks past their bound twice; the pool counts its own
        self._inline_patient_retries = 0
        self._custom_errors = 0  # custom checks that raised or answered no bool: graded wrong
        self._custom_error: str | None = None  # the first of them, for the warning
        self._check_errors = 0  # answers whose cheap checks raised (a bug of prmtree's): graded wrong
        self._check_error: str | None = None  # the first of them, for the warning

    def __getstate__(self) -> dict[str, Any]:
        """Picklable after use too: checks in flight belong to this process's event loop."""
        return {**self.__dict__, "_inflight": {}, "_tasks": set()}

    # -- the synchronous path (tests, parse_completion) ------------------------------------

    def __call__(self, problem: Problem, predicted: str | None) -> bool:
        """The verdict, computed in this thread (Math-Verify in-process when needed)."""
        if predicted is None:
            return False
        self._checks += 1
        try:
            key, verdict, gold_for_math = self._decide(problem, predicted)
        except Exception as exc:
            self._failed(problem, predicted, exc)
            return False
        if verdict is not None:
            return verdict
        self._inline += 1
        verdict = False
        for attempt, fn in enumerate((self._inline_check_fn, self._patient_check_fn)):
            try:
                verdict = bool(fn(gold_for_math, _for_math(key, problem.answer, predicted)))
                break
            except CheckTimedOut:  # the first time, once more under the longer bound
                if attempt:
                    self._inline_timeouts += 1
                else:
                    self._inline_patient_retries += 1
            except Exception:
                break
        self._remember(key, verdict)
        return verdict

    def quick(self, problem: Problem, predicted: str | None) -> bool | None:
        """The verdict from the memo or the cheap paths; ``None`` means "needs Math-Verify"."""
        if predicted is None:
            return False
        self._checks += 1
        return self._decide(problem, predicted)[1]

    # -- the asynchronous path (the driver) ------------------------------------------------

    async def check(self, problem: Problem, answers: Sequence[str | None]) -> list[bool]:
        """Verdicts for all answers of one request, in order. Cheap paths first; the distinct
        answers left go to the pool concurrently (shared with any concurrent request asking the
        same). Never raises: a failed, hung or crashed check is ``False``."""
        verdicts = [False] * len(answers)
        slow: dict[_MemoKey, tuple[list[int], str, str]] = {}
        for i, predicted in enumerate(answers):
            if predicted is None:
                continue
            self._checks += 1
            try:
                key, verdict, gold_for_math = self._decide(problem, predicted)
            except Exception as exc:
                self._failed(problem, predicted, exc)
                continue
            if verdict is not None:
                verdicts[i] = verdict
            elif key in slow:
                self._memo_hits += 1
                slow[key][0].append(i)
            else:
                slow[key] = ([i], gold_for_math, _for_math(key, problem.answer, predicted))
        if slow:
            try:
                found = await self._slow({key: (gold, predicted) for key, (_, gold, predicted) in slow.items()})
            except Exception:  # a bug here must not take the request down: unknown is "not correct"
                found = {}
            for key, (indices, _, _) in slow.items():
                for i in indices:
                    verdicts[i] = found.get(key) is True
        return verdicts

    async def _slow(self, checks: dict[_MemoKey, tuple[str, str]]) -> dict[_MemoKey, bool]:
        """Verdicts from the pool for these (memo key → gold, predicted) checks. The ones not
        already in flight for a concurrent request go as one batch; the rest are awaited."""
        loop = asyncio.get_running_loop()
        waiting: dict[_MemoKey, asyncio.Future[bool]] = {}
        fresh: list[tuple[_MemoKey, str, str]] = []
        for key, (gold, predicted) in checks.items():
            future = self._inflight.get(key)
            if future is None:
                future = self._inflight[key] = loop.create_future()
                fresh.append((key, gold, predicted))
            else:
                self._memo_hits += 1
            waiting[key] = future
        if fresh:
            task = asyncio.ensure_future(self._pool_batch(fresh))
            self._tasks.add(task)  # a strong reference: the loop keeps only weak ones
            task.add_done_callback(self._tasks.discard)
        return {key: await asyncio.shield(future) for key, future in waiting.items()}

    async def _pool_batch(self, fresh: list[tuple[_MemoKey, str, str]]) -> None:
        """Run ``fresh`` in the pool; resolve and forget their in-flight futures, whatever happens."""
        futures = [self._inflight[key] for key, _, _ in fresh]
        verdicts = [False] * len(fresh)
        try:
            verdicts = await self._pool.run_many(self._pool_check_fn, [(g, p) for _, g, p in fresh],
                                                 patient=self._patient_check_fn)
            for (key, _, _), verdict in zip(fresh, verdicts):
                self._remember(key, verdict)  # a timeout or crash too: retrying costs as much again
        except Exception:
            pass
        finally:  # also on cancellation (loop shutting down): nobody waits forever
            for (key, _, _), future, verdict in zip(fresh, futures, verdicts):
                self._inflight.pop(key, None)
                if not future.done():
                    future.set_result(verdict)

    # -- shared ----------------------------------------------------------------------------

    def _decide(self, problem: Problem, predicted: str) -> tuple[_MemoKey, bool | None, str]:
        """``(memo key, verdict or None, gold for Math-Verify)`` from the memo, a custom
        check or the cheap paths."""
        gold = problem.answer
        if not isinstance(predicted, str):
            predicted = str(predicted)
        if self.custom is not None:
            key: _MemoKey = ("custom", "custom", gold, predicted, (), None)
        else:
            gold = exact_numbers(ascii_math(gold))  # a gold written "√3", "½", "1\\frac{1}{2}", "0.\\overline{3}"
            options = options_of(problem)
            kind = problem.answer_type if problem.answer_type != "auto" else _auto_kind(gold, options)
            # a bound ("at most 12") is read with the question: it states the answer only to one
            # that asks for that extreme, so the memo tells those apart
            asked = extreme_asked(problem.question) if split_bound(predicted) is not None else None
            key = (problem.answer_type, kind, gold, predicted, options if kind == "choice" else (), asked)
        hit = self._recall(key)
        if hit is not None:
            self._memo_hits += 1
            return key, hit, gold
        if self.custom is not None:
            verdict: bool | None = self._custom_verdict(gold, predicted)
            gold_for_math = gold
        else:
            # A declared "number" is a value: 50% is 0.5 too; "auto" reads 50% as written (50).
            verdict, gold_for_math = cheap_check(
                key[1], gold, predicted, key[4], self.rel_tol,
                declared_number=key[0] == "number", decimal_comma=self.decimal_comma, asked=key[5],
            )
        if verdict is not None:
            self._quick += 1
            self._remember(key, verdict)
        return key, verdict, gold_for_math

    def _custom_verdict(self, gold: str, predicted: str) -> bool:
        """``custom(gold, predicted)`` as a verdict. One that raises, or answers anything but a
        bool, Python's or numpy's (``"no"`` would read as True), grades the answer wrong and is counted, with its
        first example, for the run's warnings: a silently failing check is wrong labels."""
        try:
            result = self.custom(gold, predicted)  # type: ignore[misc]
        except Exception as exc:
            why = f"raised {type(exc).__name__}: {exc}"
        else:
            if isinstance(result, bool) or _numpy_bool(result):
                return bool(result)
            why = _not_a_bool(result)
        self._custom_errors += 1
        if self._custom_error is None:
            self._custom_error = f"check_answer({gold!r:.40}, {predicted!r:.40}) {why}"[:300]
        return False

    def _failed(self, problem: Problem, predicted: str, exc: Exception) -> None:
        """A check of prmtree's own raised: the answer is graded wrong (a run never stops for
        one), counted, and the first is kept with where it raised, for the run's warnings. A
        bug here would otherwise be read as wrong answers, and so as wrong labels, in silence."""
        self._check_errors += 1
        if self._check_error is None:
            frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ is not None else None
            where = f" at {Path(frame.filename).name}:{frame.lineno}" if frame is not None else ""
            self._check_error = (f"{type(exc).__name__}: {exc}{where}, checking {predicted!r:.60} against "
                                 f"{problem.answer!r:.40}")[:300]

    def _recall(self, key: _MemoKey) -> bool | None:
        try:
            verdict = self._memo[key]
            self._memo.move_to_end(key)
            return verdict
        except KeyError:  # absent (or evicted by another thread between the two lines)
            return None

    def _remember(self, key: _MemoKey, verdict: bool) -> None:
        if self.memo_size <= 0:
            return
        self._memo[key] = verdict
        self._memo.move_to_end(key)
        while len(self._memo) > self.memo_size:
            try:
                self._memo.popitem(last=False)
            except KeyError:
                break

    def stats(self) -> dict[str, Any]:
        """Counters for the manifest: ``checks`` answers checked (``None`` answers aside), of
        which ``memo_hits`` from the memo (or shared with an identical check in flight),
        ``quick`` by the cheap paths or the custom check, ``inline_checks`` by in-process
        Math-Verify (sync path) and ``pool_checks`` in the pool, taking ``pool_time_s`` wall and
        ``pool_cpu_s`` worker CPU; ``patient_retries`` checks ran out of time and were run again
        under bounds ``PATIENCE`` times longer; ``timeouts`` (out of time twice, in the pool or
        in-process) and ``pool_failures`` (worker crashed) were answered ``False``; ``pool_restarts`` counts pools killed and replaced;
        ``custom_errors`` (and the first, ``custom_error``): custom checks graded wrong because they failed;
        ``check_errors`` (and the first, ``check_error``): answers graded wrong because prmtree's own
        checks raised."""
        pool = self._pool.stats()
        pool["timeouts"] += self._inline_timeouts
        pool["patient_retries"] += self._inline_patient_retries
        return {
            "checks": self._checks,
            "memo_hits": self._memo_hits,
            "quick": self._quick,
            "inline_checks": self._inline,
            **pool,
            "memo_entries": len(self._memo),
            **({"custom_errors": self._custom_errors, "custom_error": self._custom_error} if self._custom_errors else {}),
            **({"check_errors": self._check_errors, "check_error": self._check_error} if self._check_errors else {}),
        }

    def close(self) -> None:
        """Stop the pool's workers (a later ``check`` starts a fresh pool)."""
        self._pool.close()

    async def aclose(self) -> None:
        """``close()`` for async callers; it does not block (workers are killed, not joined)."""
        self.close()


def check_custom(custom: AnswerCheck) -> None:
    """Refuse, before a run, a ``check_answer`` that is an ``async def``: it is called for
    each answer and not awaited, so each call would be a coroutine, no verdict, and every
    answer graded wrong."""
    if inspect.iscoroutinefunction(custom) or inspect.iscoroutinefunction(getattr(custom, "__call__", None)):
        raise TypeError(f"check_answer {getattr(custom, '__name__', custom)!r} is an async def: it is called for each "
                        "answer without awaiting, so make it a plain def returning True or False")


def _numpy_bool(result: object) -> bool:
    """Is ``result`` numpy's bool (``np.isclose(...)``, ``a == b`` on numpy scalars):
    ``numpy.bool_``, named ``numpy.bool`` since numpy 2? Read from its type, not by importing numpy."""
    kind = type(result)
    return kind.__module__ == "numpy" and kind.__name__ in ("bool", "bool_")


def _not_a_bool(result: object) -> str:
    """Why a custom check's ``result`` is no verdict, naming its type as a user would write it
    (``int 1``, ``numpy.int64 1``, ``None``)."""
    if result is None:
        return "returned None, not a bool (a missing return?)"
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()  # no "coroutine was never awaited" warning per answer
        return "returned an awaitable, not a bool: check_answer must be a plain def, not an async def"
    kind = type(result)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    return f"returned {name} {result!r:.40}, not a bool"


def _for_math(key: _MemoKey, gold: str, predicted: str) -> str:
    """What Math-Verify compares: a bound's number where the question asks for the bound's
    extreme (``at most \\frac{1}{2}``: ``\\frac{1}{2}``) and the gold states no bound, as
    ``cheap_check`` reads it; else the answer as it is."""
    asked = key[5]
    bound = split_bound(predicted) if asked is not None and not states_bound(gold) else None
    return bound[1] if bound is not None and bound[0] == asked else predicted
