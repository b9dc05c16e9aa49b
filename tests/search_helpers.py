"""Drive a search strategy synchronously with the simulated policy (no driver, no asyncio)."""

from __future__ import annotations

from prmtree.engine.driver import request_seed
from prmtree.engine.rollout import parse_completion
from prmtree.engine.steps import Segmenter
from prmtree.engine.verify import Verifier
from prmtree.policies.base import GenerationRequest
from prmtree.policies.simulated import SimulatedPolicy


def drive(search, policy: SimulatedPolicy, seed: int = 0, reverse_waves: bool = False):
    """Run ``search`` to the end; ``reverse_waves`` generates a wave's requests in reverse
    order (as a different executor interleaving might) while still observing in issue order."""
    seg, verifier = Segmenter(), Verifier()
    waves = 0
    while not search.done():
        wave = search.next_requests()
        if not wave:
            assert search.done(), "no requests but not done"
            break
        waves += 1
        order = list(reversed(range(len(wave)))) if reverse_waves else list(range(len(wave)))
        results = {}
        for i in order:
            r = wave[i]
            gen = GenerationRequest(
                search.problem, r.prefix, r.n, seed=request_seed(seed, search.problem.id, r.node_id, r.batch),
                next_step_only=r.next_step_only,
            )
            results[i] = [
                parse_completion(search.problem, c.text, c.num_tokens, c.finish_reason, seg, verifier, r.next_step_only)
                for c in policy.complete(gen)
            ]
        for i, r in enumerate(wave):
            search.observe(r, results[i])
        assert waves < 10_000
    return search
