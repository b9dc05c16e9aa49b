"""The in-process executor: the policy runs in the driver's event loop.

For laptops, tests, and a single GPU with vLLM in-process. Concurrency is bounded so a
backend gets large batches without the driver queueing without limit.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prmtree.policies.base import Completion, GenerationRequest, Policy, policy_name


class InlineExecutor:
    """``await submit(request)`` runs ``policy.generate`` with at most ``max_concurrency`` in flight."""

    def __init__(self, policy: Policy, max_concurrency: int = 256) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.policy = policy
        self.policy_name = policy_name(policy)
        self.max_concurrency = max_concurrency
        self._slots: asyncio.Semaphore | None = None
        self.in_flight = 0
        self.requests = 0

    async def submit(self, request: GenerationRequest) -> list[Completion]:
        if self._slots is None:  # created lazily: it must belong to the running loop
            self._slots = asyncio.Semaphore(self.max_concurrency)
        async with self._slots:
            self.in_flight += 1
            self.requests += 1
            try:
                return await self.policy.generate(request)
            finally:
                self.in_flight -= 1

    def release(self, problem_id: str) -> None:
        """Nothing is routed: nothing to forget."""

    def stats(self) -> dict[str, Any]:
        return {"kind": "inline", "requests": self.requests, "in_flight": self.load()}

    def load(self) -> dict[int, int]:
        return {0: self.in_flight}

    async def close(self) -> None:
        close = getattr(self.policy, "close", None)
        if close is not None:
            result = close()
            if asyncio.iscoroutine(result):
                await result
