"""The simulated policy's outputs for a seed are pinned: a digest of many completions, over its
settings, step formats, prefixes (right and wrong), next-step-only, length cuts and judge
requests, taken with the code before its speed-ups. Any change to what it writes (a draw
added, reordered or skipped; a wording changed) changes the digest."""

import hashlib
import random

from prmtree.engine.records import GenerationRequest
from prmtree.engine.steps import Segmenter
from prmtree.engine.synthetic import generate_problems
from prmtree.policies.simulated import SimulatedPolicy

SETTINGS = [
    {}, {"error_rate": 0.0}, {"error_rate": 0.4}, {"noiseless": True}, {"cancel_errors": False, "error_rate": 0.3},
    {"guess_rate": 0.3, "wrong_answers": "consistent", "error_rate": 0.3}, {"lucky_rate": 0.5, "error_rate": 0.5},
    {"judge_garbage_rate": 0.2}, {"error_rate": 1.0, "noiseless": True},
]
# sha256 of every completion below, from policies/simulated.py at 7ca9dab (before its speed-ups)
EXPECTED = "6ace7fb8ebe9dae598ca93963493d0806900ca2b4770c61e050c4f7b59009135"


def completions_digest() -> tuple[str, int]:
    problems = generate_problems(12, seed=3)
    rng = random.Random(0)
    digest, count = hashlib.sha256(), 0
    segment = Segmenter().split
    for kw in SETTINGS:
        policy = SimulatedPolicy(**kw)
        for p in problems:
            for root in policy.complete(GenerationRequest(p, (), 2, seed=rng.randrange(2**40))):
                steps = segment(root.text)
                digest.update(repr(policy.first_error(p, steps)).encode())
                for cut in range(len(steps) + 1):
                    for fmt in ("tags", "step_marker", "blank_line"):
                        for next_only in (False, True):
                            purpose = "judge" if cut and rng.random() < 0.2 else "solve"
                            request = GenerationRequest(
                                p, tuple(steps[:cut]), rng.randint(1, 4), seed=rng.randrange(2**63), step_format=fmt,
                                next_step_only=next_only, max_tokens=rng.choice((1024, 9)), purpose=purpose)
                            for c in policy.complete(request):
                                digest.update(f"{c.text}\x00{c.num_tokens}\x00{c.finish_reason}\x01".encode())
                                count += 1
    return digest.hexdigest(), count


def test_outputs_for_a_seed_are_what_they_were():
    digest, count = completions_digest()
    assert count > 10_000
    assert digest == EXPECTED
