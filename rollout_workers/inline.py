"""The in-process executor: the policy runs in the driver's event loop.

For laptops, tests, and a single GPU with vLLM in-process. Concurrency is bounded so a
backend gets large batches without the driver queueing without limit.
"""

from __future__ import annotations

import asyncio

from prmtree.policies.base import Completion, GenerationRequest, Policy, PolicyError


class InlineExecutor:
    """``await submit(request)`` runs ``policy.generate`` with at most ``max_concurrency`` in flight."""

    kind = "inline"

    def __init__(self, policy: Policy, max_concurrency: int = 256) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.policy = policy
        self.max_concurrency = max_concurrency
        self._slots: asyncio.Semaphore | None = None
        self.in_flight = 0
        self.submitted = 0

    async def submit(self, request: GenerationRequest) -> list[Completion]:
        if self._slots is None:  # created lazily: it must belong to the running loop
            self._slots = asyncio.Semaphore(self.max_concurrency)
        async with self._slots:
            self.in_flight += 1
            self.submitted += 1
            try:
                completions = await self.policy.generate(request)
            finally:
                self.in_flight -= 1
        if not isinstance(completions, list) or not all(isinstance(c, Completion) for c in completions):
            raise PolicyError(
                f"{type(self.policy).__name__}.generate must return a list of Completion, "
                f"got {type(completions).__name__}"
            )
        return completions

    async def close(self) -> None:
        close = getattr(self.policy, "close", None)
        if close is not None:
            result = close()
            if asyncio.iscoroutine(result):
                await result
