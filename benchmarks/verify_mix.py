"""Answer checking on a realistic answer mix: driver CPU per check before and after.

The mix is what a VLM writes on image-QA and math-VQA data: words (``teal``, ``Teal.``,
``\\text{teal}``), yes/no, multiple choice (``(B)``, ``B. blue``, ``blue``), numbers with
units (``12 cm``, ``12\\text{ cm}``), LaTeX fractions and radicals with a long tail of
distinct wrong answers, intervals and expressions. k answers per request, as the driver
checks one request's completions at a time.

- **before**: the previous verifier, reproduced inline below: ``answer_type="auto"`` sends
  every non-numeric gold (words included) to Math-Verify, in-process, on the event loop;
  memo per (problem, answer).
- **after_sync**: today's ``Verifier.__call__``: typed cheap paths, Math-Verify in-process
  only for what they cannot decide, memo shared across problems.
- **after_async**: ``await Verifier.check(problem, answers)`` as the driver will use it, many
  requests in flight: Math-Verify in a process pool, off the loop.

Each variant runs in a fresh interpreter (Math-Verify's own caches start cold each time),
under a 10 ms asyncio ticker that records the longest stall of the event loop.

    python benchmarks/verify_mix.py [--problems 300] [--k 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import re
import string
import subprocess
import sys
import threading
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

# --------------------------------------------------------------------------- the mix

WORDS = ["teal", "red", "blue", "green", "triangle", "square", "circle", "cat", "dog", "left", "right",
         "two cats", "New York", "bicycle", "kitchen", "umbrella", "winter", "wooden table"]
UNITS = ["cm", "m", "kg", "degrees", "apples", "dollars"]
MIX = {"words": 25, "yes_no": 10, "choice": 25, "number_unit": 20, "fraction": 8, "radical": 5,
       "interval": 4, "expression": 3}


def _pick(rng: random.Random, correct: list[str], wrong: list[str], tail: list[str]) -> str:
    """An answer as a model writes it: often right in some form, often wrong, sometimes odd."""
    r = rng.random()
    if r < 0.45:
        return rng.choice(correct)
    if r < 0.9:
        return rng.choice(wrong)
    return rng.choice(tail)


def make_problem(rng: random.Random, i: int, k: int) -> tuple[dict, list[str]]:
    """One problem (id, answer, meta) and k answers to it."""
    kind = rng.choices(list(MIX), weights=list(MIX.values()))[0]
    gold, meta, correct, wrong, tail = answer_forms(rng, kind)
    answers = [_pick(rng, correct, wrong, tail) for _ in range(k)]
    return {"id": f"p{i}", "answer": gold, "meta": meta, "kind": kind}, answers


def answer_forms(rng: random.Random, kind: str) -> tuple[str, dict, list[str], list[str], list[str]]:
    """A gold answer of ``kind`` and how models write it: ``(gold, meta, correct, wrong, tail)``:
    forms equal to the gold, plausible wrong answers, and odd ones (``engine_throughput.py``
    rewrites simulated answers with these too)."""
    meta: dict = {}
    if kind == "words":
        gold = rng.choice(WORDS)
        correct = [gold, gold.capitalize() + ".", f"\\text{{{gold}}}", f"The answer is {gold}."]
        wrong = [w for w in WORDS if w != gold]
        tail = [f"{gold} {rng.choice(WORDS)}", f"not {gold}", "unknown"]
    elif kind == "yes_no":
        gold = rng.choice(["yes", "no"])
        other = "no" if gold == "yes" else "yes"
        correct = [gold, gold.capitalize(), gold.upper(), gold.capitalize() + ".", f"{gold.capitalize()}, it is."]
        wrong = [other, other.capitalize() + "."]
        tail = ["maybe", "cannot be determined"]
    elif kind == "choice":
        options = dict(zip("ABCD", rng.sample(WORDS, 4)))
        meta = {"options": options}
        gold = rng.choice("ABCD")
        correct = [gold, f"({gold})", f"{gold}. {options[gold]}", options[gold], f"\\text{{({gold})}}"]
        wrong = [x for letter in "ABCD" if letter != gold for x in (letter, f"({letter})", options[letter])]
        tail = ["E", "none of the above"]
    elif kind == "number_unit":
        n, unit = rng.randint(2, 500), rng.choice(UNITS)
        gold = f"{n} {unit}"
        correct = [str(n), gold, f"{n}\\text{{ {unit}}}", f"{n}.0"]
        wrong = [str(n + d) for d in (-2, -1, 1, 2, 10)] + [f"{n * 2} {unit}"]
        tail = [f"\\sqrt{{{n * n}}}", f"{n}/{rng.randint(2, 9)}", f"x = {n + 1}"]
    elif kind == "fraction":
        a, b = rng.randint(1, 9), rng.randint(2, 12)
        gold = f"\\frac{{{a}}}{{{b}}}"
        correct = [gold, f"\\dfrac{{{a}}}{{{b}}}", f"{a}/{b}", f"\\frac{{{2 * a}}}{{{2 * b}}}"]
        wrong = [f"\\frac{{{a + 1}}}{{{b}}}", f"\\frac{{{b}}}{{{a}}}", f"{round(a / b, 2)}"]
        tail = [f"\\frac{{{rng.randint(1, 30)}}}{{{rng.randint(2, 40)}}}" for _ in range(4)]
    elif kind == "radical":
        a, b = rng.choice([2, 3, 5, 6, 7]), rng.randint(2, 6)
        gold = f"\\frac{{\\sqrt{{{a}}}}}{{{b}}}"
        correct = [gold, f"\\sqrt{{{a}}}/{b}", f"\\frac{{1}}{{{b}}}\\sqrt{{{a}}}"]
        wrong = [f"\\frac{{\\sqrt{{{a + 1}}}}}{{{b}}}", f"\\sqrt{{{a}}}", f"{round(math.sqrt(a) / b, 3)}"]
        tail = [f"{rng.randint(2, 9)}\\sqrt{{{rng.randint(2, 30)}}}" for _ in range(4)]
    elif kind == "interval":
        a, b = sorted(rng.sample(range(-5, 10), 2))
        gold = f"({a}, {b}]"
        correct = [gold, f"({a},{b}]", f"\\left({a}, {b}\\right]"]
        wrong = [f"[{a}, {b})", f"({a}, {b})", f"[{a}, {b}]"]
        tail = [f"({a}, \\infty)", f"x > {a}"]
    else:
        c = rng.randint(1, 9)
        gold = f"x^2+{c}"
        correct = [gold, f"{c}+x^2", f"x^{{2}} + {c}"]
        wrong = [f"x^2-{c}", f"x^2+{c + 1}", f"2x+{c}"]
        tail = [f"(x+{c})^2", f"x^3+{c}"]
    return gold, meta, correct, wrong, tail


def make_mix(problems: int, k: int, seed: int = 0) -> list[tuple[dict, list[str]]]:
    rng = random.Random(seed)
    return [make_problem(rng, i, k) for i in range(problems)]


# --------------------------------------------------------------------------- before (the old verifier)

_NUMBER = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?$", re.IGNORECASE)
_FRACTION = re.compile(r"^([-+]?\d+)\s*/\s*(\d+)$")
_LATEX_FRAC = re.compile(r"^([-+]?)\\[dt]?frac\{(-?\d+)\}\{(\d+)\}$")
_CHOICE = re.compile(r"^\(?([A-Za-z])\)?[.:)]?$")
_CHOICE_LEAD = re.compile(r"^\(?([A-Z])\)?(?:[.:)]|\s|$)")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_TEXT_WRAP = re.compile(r"^\\text\{(.*)\}$")
_PUNCT = str.maketrans("", "", string.punctuation)


def _old_parse_number(text: str) -> float | None:
    t = _TEXT_WRAP.sub(r"\1", text.strip().strip("$").strip())
    t = t.replace(",", "").replace("\\!", "").replace(" ", "")
    t = t[:-2] if t.endswith("\\%") else t[:-1] if t.endswith("%") else t
    t = t[2:] if t.startswith("\\$") else t
    if _NUMBER.match(t):
        v = float(t)
        return v if math.isfinite(v) else None
    m = _FRACTION.match(t)
    if m and int(m.group(2)) != 0:
        return int(m.group(1)) / int(m.group(2))
    m = _LATEX_FRAC.match(t)
    if m and int(m.group(3)) != 0:
        v = int(m.group(2)) / int(m.group(3))
        return -v if m.group(1) == "-" else v
    return None


def _old_text(text: str) -> str:
    t = _TEXT_WRAP.sub(r"\1", text.strip()).lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", t).split())


def _old_text_match(g: str, p: str) -> bool:
    return _old_text(g) == _old_text(p) != ""


def _old_letter(text: str) -> str | None:
    m = _CHOICE.match(text.strip())
    return m.group(1).upper() if m else None


def _old_choice_match(gold: str, predicted: str, options: dict | None) -> bool:
    gold_letter = _old_letter(gold)
    pred = _TEXT_WRAP.sub(r"\1", predicted.strip())
    m = _CHOICE_LEAD.match(pred.strip())
    pred_letter = _old_letter(pred) or (m.group(1) if m else None)
    if gold_letter and pred_letter:
        return gold_letter == pred_letter
    if options:
        gold_text = options.get(gold_letter, gold) if gold_letter else gold
        for letter, option in options.items():
            if _old_text_match(option, pred):
                return (letter.upper() == gold_letter) if gold_letter else _old_text_match(option, gold_text)
    return _old_text_match(gold, pred)


def _old_math_match(gold: str, predicted: str) -> bool:
    from math_verify import parse, verify

    timeout = 5 if threading.current_thread() is threading.main_thread() else None

    def as_math(t: str) -> str:
        t = t.strip()
        return t if t.startswith("$") or "\\boxed" in t else f"${t}$"

    try:
        g, p = parse(as_math(gold), parsing_timeout=timeout), parse(as_math(predicted), parsing_timeout=timeout)
        return bool(g and p and verify(g, p, timeout_seconds=timeout))
    except Exception:
        return False


class OldVerifier:
    """The verifier before issue 12, as it was (memo per problem, Math-Verify in-process)."""

    def __init__(self) -> None:
        self.memo: dict[tuple[str, str], bool] = {}
        self.math_verify_calls = 0

    def __call__(self, problem: dict, predicted: str) -> bool:
        key = (problem["id"], predicted)
        if key not in self.memo:
            self.memo[key] = self._check(problem, predicted)
        return self.memo[key]

    def _check(self, problem: dict, predicted: str) -> bool:
        gold, options = problem["answer"], problem["meta"].get("options")
        g = gold.strip()
        if _old_letter(g) and (options or len(g.strip("()")) == 1 and g.strip("()").isupper()):
            return _old_choice_match(gold, predicted, options)
        if _old_parse_number(g) is not None:
            g_num, p_num = _old_parse_number(gold), _old_parse_number(predicted)
            if g_num is not None and p_num is not None and math.isclose(g_num, p_num, rel_tol=1e-6, abs_tol=1e-9):
                return True
            if p_num is not None:
                return False
            self.math_verify_calls += 1
            return _old_math_match(gold, predicted)
        if gold.strip() == predicted.strip():
            return True
        self.math_verify_calls += 1
        return _old_math_match(gold, predicted) or _old_text_match(gold, predicted)


# --------------------------------------------------------------------------- measuring


class Ticker:
    """Measures the event loop's longest stall: what every tree in flight waits."""

    def __init__(self) -> None:
        self.max_gap = 0.0

    async def run(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            self.max_gap = max(self.max_gap, now - last - 0.01)
            last = now


def _problem(p: dict):
    from prmtree.engine.records import Problem

    return Problem(id=p["id"], question="q?", answer=p["answer"], meta=p["meta"])


def _per_check(cpu_by_kind: dict[str, float], mix: list) -> dict[str, float]:
    counts: dict[str, int] = {}
    for p, answers in mix:
        counts[p["kind"]] = counts.get(p["kind"], 0) + len(answers)
    return {kind: round(cpu / counts[kind] * 1e6, 1) for kind, cpu in sorted(cpu_by_kind.items())}


async def _measure(variant: str, mix: list, in_flight: int) -> dict:
    ticker = Ticker()
    tick = asyncio.create_task(ticker.run())
    extra: dict = {}
    if variant == "before":
        old = OldVerifier()
        _old_math_match("1", "1")  # sympy imported and warm, as in a running driver
        cpu, wall = time.process_time(), time.perf_counter()
        verdicts, by_kind = [], {}
        for p, answers in mix:
            t = time.process_time()
            verdicts.append([old(p, a) for a in answers])
            by_kind[p["kind"]] = by_kind.get(p["kind"], 0.0) + time.process_time() - t
            await asyncio.sleep(0)  # the next request's turn
        extra["math_verify_calls"] = old.math_verify_calls
        extra["driver_cpu_us_per_check_by_kind"] = _per_check(by_kind, mix)
    else:
        from prmtree.engine.answers import Verifier, math_match

        verifier = Verifier()
        problems = [(_problem(p), answers) for p, answers in mix]
        if variant == "after_sync":
            math_match("1", "1")
            cpu, wall = time.process_time(), time.perf_counter()
            verdicts, by_kind = [], {}
            for (p, _), (problem, answers) in zip(mix, problems):
                t = time.process_time()
                verdicts.append([verifier(problem, a) for a in answers])
                by_kind[p["kind"]] = by_kind.get(p["kind"], 0.0) + time.process_time() - t
                await asyncio.sleep(0)
            extra["driver_cpu_us_per_check_by_kind"] = _per_check(by_kind, mix)
        else:
            t = time.perf_counter()
            await verifier.check(_problem({"id": "warm", "answer": "\\sqrt{2}", "meta": {}}), ["\\sqrt{3}"])
            extra["pool_start_s"] = round(time.perf_counter() - t, 3)
            extra["max_loop_stall_ms_pool_start"] = round(ticker.max_gap * 1e3, 1)
            ticker.max_gap = 0.0  # steady state from here: the pool starts once per run
            warm = verifier.stats()
            cpu, wall = time.process_time(), time.perf_counter()
            slots = asyncio.Semaphore(in_flight)

            async def request(problem, answers):
                async with slots:
                    return await verifier.check(problem, answers)

            verdicts = await asyncio.gather(*(request(problem, answers) for problem, answers in problems))
            extra["in_flight"] = in_flight
        wall_s, cpu_s = time.perf_counter() - wall, time.process_time() - cpu
        stats = verifier.stats()
        if variant == "after_async":
            for key in ("checks", "pool_checks", "pool_time_s", "pool_cpu_s", "quick", "memo_hits"):
                stats[key] -= warm[key]
        await verifier.aclose()
        extra["stats"] = stats
        extra["quick_share"] = round(stats["quick"] / stats["checks"], 3)
        extra["memo_hit_share"] = round(stats["memo_hits"] / stats["checks"], 3)
        extra["math_verify_calls"] = stats["inline_checks"] + stats["pool_checks"]
        if variant == "after_async":
            extra["pool_cpu_us_per_check"] = round(stats["pool_cpu_s"] / len(mix) / len(mix[0][1]) * 1e6, 1)
    if variant == "before":
        wall_s, cpu_s = time.perf_counter() - wall, time.process_time() - cpu
    tick.cancel()
    checks = sum(len(a) for _, a in mix)
    return {
        "variant": variant,
        "checks": checks,
        "wall_s": round(wall_s, 3),
        "driver_cpu_s": round(cpu_s, 3),
        "driver_cpu_us_per_check": round(cpu_s / checks * 1e6, 1),
        "max_loop_stall_ms": round(ticker.max_gap * 1e3, 1),
        "correct_share": round(sum(map(sum, verdicts)) / checks, 3),
        **extra,
        "_verdicts": verdicts,
    }


def run_variant(variant: str, problems: int, k: int, in_flight: int) -> dict:
    return asyncio.run(_measure(variant, make_mix(problems, k), in_flight))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=300)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--in-flight", type=int, default=64, help="requests checked concurrently (after_async)")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # internal: one variant, in this fresh process
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.problems, args.k, args.in_flight)))
        return
    results = {}
    for variant in ("before", "after_sync", "after_async"):
        cmd = [sys.executable, __file__, "--variant", variant, "--problems", str(args.problems), "--k", str(args.k),
               "--in-flight", str(args.in_flight)]
        results[variant] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        shown = {key: v for key, v in results[variant].items() if not key.startswith("_") and "by_kind" not in key}
        print(json.dumps(shown))
    verdicts = {v: results[v].pop("_verdicts") for v in results}
    flat = {v: [x for row in verdicts[v] for x in row] for v in verdicts}
    mix = make_mix(args.problems, args.k)
    changed: dict[str, int] = {}
    kinds = [p["kind"] for p, answers in mix for _ in answers]
    for kind, b, a in zip(kinds, flat["before"], flat["after_async"]):
        if a != b:
            changed[kind] = changed.get(kind, 0) + 1
    before, after = results["before"], results["after_async"]
    summary = {
        "problems": args.problems,
        "k": args.k,
        "mix_weights": MIX,
        "driver_cpu_us_per_check_before": before["driver_cpu_us_per_check"],
        "driver_cpu_us_per_check_after_sync": results["after_sync"]["driver_cpu_us_per_check"],
        "driver_cpu_us_per_check_after_async": after["driver_cpu_us_per_check"],
        "speedup_driver_cpu": round(before["driver_cpu_s"] / max(after["driver_cpu_s"], 1e-9), 1),
        "max_loop_stall_ms_before": before["max_loop_stall_ms"],
        "max_loop_stall_ms_after_async": after["max_loop_stall_ms"],
        "math_verify_calls_before": before["math_verify_calls"],
        "math_verify_calls_after": after["math_verify_calls"],
        "driver_cpu_us_per_check_by_kind_before": before["driver_cpu_us_per_check_by_kind"],
        "driver_cpu_us_per_check_by_kind_after_sync": results["after_sync"]["driver_cpu_us_per_check_by_kind"],
        "sync_and_async_verdicts_agree": flat["after_sync"] == flat["after_async"],
        "verdicts_changed_vs_before_by_kind": changed,
    }
    print(json.dumps(summary, indent=1))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "verify_mix.json"
    out.write_text(json.dumps({"summary": summary, **results}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
