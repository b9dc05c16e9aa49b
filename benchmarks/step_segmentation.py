"""Step segmentation of real model output: how the driver's segmenter splits real responses.

Reads the peers' answer cases by path (default ``../shared/answer_cases/peer_cases.jsonl``;
its rows are the peers' data and are never copied into this repository), takes the whole
model outputs (``form == "completion"``: MathVista, MMMU-Pro, Math-Verify and Minerva
responses written as markdown lists, bold headers, ``Step N:`` lines, paragraphs or one
long paragraph) and splits each with the driver's default segmenter
(``Segmenter()``: ``[steps] format = "blank_line"``, no ``max_steps``).

Reports: responses, steps per response (mean / median / max), the share of responses
longer than 300 characters split into at least two steps, the longest step, the time per
response, and every response that misses the targets (its first 200 characters):

* a response longer than 300 characters is split into at least two steps (>= 95% of them);
* no step is longer than 1,500 characters unless the response is one sentence.

    python benchmarks/step_segmentation.py [--cases PATH] [--label after]

Results: ``results/step_segmentation.json`` (one entry per ``--label``; other labels kept;
the misses by id, length and reason only: their text is the peers' and is only printed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).parent / "results"
DEFAULT_CASES = Path(__file__).resolve().parent.parent.parent / "shared" / "answer_cases" / "peer_cases.jsonl"
LONG_RESPONSE = 300  # characters: a response this long should be at least two steps
SPLIT_TARGET = 0.95  # share of long responses split into >= 2 steps
MAX_STEP_CHARS = 1500  # no step longer, unless the response is one sentence


def load_responses(path: Path) -> list[tuple[str, str]]:
    """(case id, whole model output) for every completion-form case."""
    out = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                if row.get("form") == "completion" and isinstance(row.get("prediction"), str):
                    out.append((str(row.get("id")), row["prediction"]))
    return out


def one_sentence(text: str) -> bool:
    """Whether ``text`` is a single sentence (the only excuse for a step over the limit)."""
    from prmtree.engine.steps import split_sentences

    return len(split_sentences(text)) <= 1


def measure(responses: list[tuple[str, str]]) -> dict:
    from prmtree.engine.steps import Segmenter

    segmenter = Segmenter()
    counts, misses, longest = [], [], (0, "")
    long_total = long_split = 0
    start = time.perf_counter()
    splits = [segmenter.split(text) for _, text in responses]
    elapsed = time.perf_counter() - start
    for (case_id, text), steps in zip(responses, splits):
        counts.append(len(steps))
        biggest = max((len(s) for s in steps), default=0)
        if biggest > longest[0]:
            longest = (biggest, case_id)
        why = []
        if len(text.strip()) > LONG_RESPONSE:
            long_total += 1
            if len(steps) >= 2:
                long_split += 1
            else:
                why.append("one step")
        if biggest > MAX_STEP_CHARS and not one_sentence(text):
            why.append(f"a step of {biggest} characters")
        if why:
            misses.append({"id": case_id, "chars": len(text), "steps": len(steps), "why": ", ".join(why),
                           "start": text[:200]})
    share = long_split / long_total if long_total else 1.0
    return {
        "responses": len(responses),
        "steps_mean": round(statistics.mean(counts), 2) if counts else 0,
        "steps_median": statistics.median(counts) if counts else 0,
        "steps_max": max(counts, default=0),
        "long_responses": long_total,
        "long_split_share": round(share, 4),
        "longest_step_chars": longest[0],
        "longest_step_case": longest[1],
        "us_per_response": round(elapsed / max(1, len(responses)) * 1e6, 1),
        "targets_met": share >= SPLIT_TARGET and not any("characters" in m["why"] for m in misses),
        "misses": misses,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=Path, default=DEFAULT_CASES, help="the peers' case file (JSONL)")
    ap.add_argument("--label", default="after", help="key under which results are saved (before / after)")
    args = ap.parse_args(argv)
    if not args.cases.is_file():
        print(f"error: case file {args.cases} not found; pass --cases PATH", file=sys.stderr)
        return 2
    responses = load_responses(args.cases)
    result = measure(responses)
    print(f"responses: {result['responses']}")
    print(f"steps per response: mean {result['steps_mean']}, median {result['steps_median']}, max {result['steps_max']}")
    print(f"responses > {LONG_RESPONSE} chars split into >= 2 steps: {result['long_split_share']:.1%} "
          f"of {result['long_responses']} (target >= {SPLIT_TARGET:.0%})")
    print(f"longest step: {result['longest_step_chars']} chars (case {result['longest_step_case']}; "
          f"limit {MAX_STEP_CHARS} unless one sentence)")
    print(f"time: {result['us_per_response']} us per response")
    print(f"misses: {len(result['misses'])}")
    for m in result["misses"]:
        print(f"  - {m['id']} ({m['chars']} chars, {m['steps']} steps: {m['why']}): {m['start']!r}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "step_segmentation.json"
    saved = json.loads(out.read_text()) if out.is_file() else {}
    # the excerpts are the peers' text: printed, never saved into the repository
    saved[args.label] = {**result, "misses": [{k: v for k, v in m.items() if k != "start"} for m in result["misses"]]}
    out.write_text(json.dumps(saved, indent=1) + "\n")
    print(f"saved {out} [{args.label}]")
    return 0 if result["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
