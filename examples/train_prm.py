"""Train a tiny PRM on prmtree's output and score a solution with it: the ``prmtree.train`` API.

    prmtree demo --out out/demo
    python examples/train_prm.py --data out/demo --out prm-tiny

The same as ``prmtree train --data out/demo --out prm-tiny`` followed by
``prmtree.PRM.load("prm-tiny").score(...)``; see the README's "Train and evaluate a PRM".
"""

from __future__ import annotations

import argparse
from typing import Any

import prmtree
from prmtree.train import TrainOptions, train
from prmtree.train.metrics import fmt


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a prmtree run's directory or an hf export")
    p.add_argument("--out", default="prm-tiny")
    p.add_argument("--model", default="tiny", help="tiny (no download) or an HF model path / Hub id")
    p.add_argument("--labels", choices=["hard", "soft"], default="hard")
    p.add_argument("--max-steps", type=int, default=0)
    args = p.parse_args(argv)

    result = train(TrainOptions(data=args.data, out=args.out, model=args.model, labels=args.labels,
                                max_steps=args.max_steps, log_every=20))
    held = result["held_out"]
    if held:
        print(f"held-out: step F1 (wrong steps) {fmt(held['step_f1_wrong'])}, "
              f"first-error accuracy {fmt(held['first_error_accuracy'])}, ProcessBench F1 {fmt(held['processbench_f1'])}")

    prm = prmtree.PRM.load(args.out)
    problem = prmtree.Problem(id="example", question="Let x be 4. Then add 3; multiply by 2.", answer="14")
    steps = ["x = 4.", "Add 3: x = 4 + 3 = 7.", "Multiply by 2: x = 7 * 2 = 15.", "The answer is \\boxed{15}."]
    for step, reward in zip(steps, prm.score(problem, steps)):
        print(f"{'unread' if reward is None else f'{reward:.3f}'}  {step}")  # None: past the model's length
    return result


if __name__ == "__main__":
    main()
