"""Agreement of ``prmtree.grade`` with the verdicts of the peers that judge answers for a living.

The cases (``../shared/answer_cases/peer_cases.jsonl`` beside the repository by default;
``--cases PATH``) are the peers' data: Math-Verify's own tests, the MATH ``is_equiv``
tests, the PRM800K and Minerva graders' rules, the VQA evaluation's normalisation,
MathVista's and MMMU-Pro's released verdicts, MMMU's choice parser. They are read by path
and never copied into this repository.

Every case goes through ``prmtree.grade`` as a user would call it: a case of form
``answer`` (a final answer) with ``extract=False``, one of form ``completion`` (a whole
model output) with ``extract=True``; its ``answer_type`` and ``options`` as given. A
verdict of None (cannot judge) counts as "not correct". Printed per group: cases,
agreement, false accepts (a wrong answer graded right: a false-positive label), false
rejects, and each disagreement. The totals are over the gated cases (scope ``contract``)
and, apart, the ``free_prose`` ones (outputs that mark no answer at all).

    python benchmarks/answer_agreement.py [--cases PATH] [--quiet] [--as-given]

The VQA evaluation's rows are graded with ``answer_type="vqa"`` (their source implies it;
``--as-given`` grades them as ``auto``, as the case file leaves them).

Saves ``benchmarks/results/answer_agreement.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES_PATH = Path("shared") / "answer_cases" / "peer_cases.jsonl"


def default_cases() -> Path:
    """``../shared/answer_cases/peer_cases.jsonl`` beside the repository root; from a git
    worktree kept deeper (``work/wt/NAME``), the first such file above it."""
    for folder in ROOT.parents:
        if (folder / CASES_PATH).is_file():
            return folder / CASES_PATH
    return ROOT.parent / CASES_PATH

RESULTS = Path(__file__).parent / "results"


def load_cases(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


#: Groups whose source implies an answer type the case file leaves at ``auto``: the VQA
#: evaluation's normalisation rules are what ``answer_type="vqa"`` implements (the setting a
#: VQA data set uses); under ``auto`` prmtree is more lenient ("2 dogs" for 2, "yes, it is"
#: for yes), which ``--as-given`` measures.
IMPLIED_TYPES = {"VQA vqaEval normalisation": "vqa"}
AS_GIVEN = False


def answer_type(case: dict) -> str:
    given = case.get("answer_type") or "auto"
    if given == "auto" and not AS_GIVEN:
        return IMPLIED_TYPES.get(case["group"], given)
    return given


def run_case(case: dict) -> dict:
    """One case through ``prmtree.grade``: what came out and whether the peer agrees."""
    import prmtree

    extract = case.get("extract", case["form"] == "completion")
    verdict = prmtree.grade(
        case["gold"], case["prediction"], answer_type=answer_type(case),
        options=case.get("options"), extract=extract,
    )
    got = verdict.correct is True
    return {
        "id": case["id"], "group": case["group"], "scope": case["scope"], "form": case["form"],
        "gold": case["gold"], "prediction": case["prediction"], "expected": bool(case["expected"]),
        "got": got, "correct": verdict.correct, "extracted": verdict.extracted, "reason": verdict.reason,
        "agree": got == bool(case["expected"]), "note": case.get("note") or "",
    }


def tally(results: list[dict]) -> dict:
    n = len(results)
    agree = sum(r["agree"] for r in results)
    return {
        "cases": n,
        "agreement": round(agree / n, 4) if n else None,
        "agree": agree,
        "false_accepts": sum(r["got"] and not r["expected"] for r in results),
        "false_rejects": sum(r["expected"] and not r["got"] for r in results),
    }


def _short(text: str, width: int = 90) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 20] + " … " + text[-17:]


def report(results: list[dict], quiet: bool = False) -> dict:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        groups[r["group"]].append(r)
    summary: dict = {"groups": {}}
    for group, rows in groups.items():
        gated = [r for r in rows if r["scope"] == "contract"]
        t = tally(gated)
        summary["groups"][group] = t
        print(f"\n== {group}: {t['cases']} gated cases, agreement {t['agreement']:.1%}, "
              f"false accepts {t['false_accepts']}, false rejects {t['false_rejects']}"
              if t["cases"] else f"\n== {group}: no gated cases")
        if not quiet:
            for r in gated:
                if not r["agree"]:
                    kind = "FALSE ACCEPT" if r["got"] else "false reject"
                    print(f"  {kind} {r['id']}: gold={_short(r['gold'], 40)!r} prediction={_short(r['prediction'])!r}"
                          f"\n      expected={r['expected']} got={r['correct']} extracted="
                          f"{_short(r['extracted'] or '', 50)!r} reason={r['reason']!r}"
                          + (f"\n      note: {r['note']}" if r["note"] else ""))
    gated = [r for r in results if r["scope"] == "contract"]
    prose = [r for r in results if r["scope"] == "free_prose"]
    summary["gated"] = tally(gated)
    summary["free_prose"] = tally(prose)
    print(f"\nGATED (scope contract): {summary['gated']}")
    print(f"FREE PROSE (no answer marked): {summary['free_prose']}")
    if not quiet:
        for r in prose:
            if not r["agree"]:
                print(f"  free_prose {r['id']}: gold={_short(r['gold'], 40)!r} expected={r['expected']} "
                      f"got={r['correct']} extracted={_short(r['extracted'] or '', 50)!r} reason={r['reason']!r}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=Path, default=None, help="the peers' case file (JSON lines)")
    parser.add_argument("--quiet", action="store_true", help="totals only, no disagreements listed")
    parser.add_argument("--out", type=Path, default=RESULTS / "answer_agreement.json")
    parser.add_argument("--as-given", action="store_true", help="grade every row with the case file's answer_type")
    args = parser.parse_args(argv)
    args.cases = args.cases or default_cases()
    global AS_GIVEN
    AS_GIVEN = args.as_given
    if not args.cases.is_file():
        print(f"answer_agreement: no case file at {args.cases} (pass --cases PATH)", file=sys.stderr)
        return 2
    cases = load_cases(args.cases)
    started = time.perf_counter()
    results = [run_case(case) for case in cases]
    elapsed = time.perf_counter() - started
    summary = report(results, quiet=args.quiet)
    summary["seconds"] = round(elapsed, 2)
    summary["cases_file"] = args.cases.name
    summary["implied_types"] = {} if args.as_given else IMPLIED_TYPES
    summary["disagreements"] = [
        {k: r[k] for k in ("id", "group", "scope", "expected", "correct", "extracted", "reason")}
        for r in results if not r["agree"]
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    print(f"\n{len(results)} cases in {elapsed:.1f} s; saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
