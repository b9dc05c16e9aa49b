"""A custom policy in a few lines: always answers with the first number in the question.

    python examples/custom_policy.py data/problems.jsonl out/custom
"""

import sys

import prmtree
from prmtree.policies import Completion, register_policy


@register_policy("first-number")
class FirstNumber:
    async def generate(self, request):
        number = next((w.strip(".;") for w in request.problem.question.split() if w.strip(".;").isdigit()), "0")
        text = f"I read the question.\n\nThe first number is {number}.\n\n\\boxed{{{number}}}"
        return [Completion(text, num_tokens=len(text.split())) for _ in range(request.n)]


if __name__ == "__main__":
    summary = prmtree.run(sys.argv[1], policy="first-number", out=sys.argv[2], strategy="shepherd")
    print(f"{summary.problems_done} problems, {summary.rollouts} rollouts")
