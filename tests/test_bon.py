"""Best of N (``prmtree bon``): the selection rules, the baselines, the statistics, the
report, and the command. Solutions come from the simulated policy through the run's own
path; the PRM is a scorer object built here (an oracle-ish one that knows the first wrong
step, a random one, a constant one), as any object with ``score_batch`` is accepted."""

from __future__ import annotations

import json
import math
import random
import textwrap

import pytest
from prmtree.engine.errors import ConfigError
from prmtree.engine.synthetic import generate_problems, write_jsonl
from prmtree.policies.simulated import SimulatedPolicy

from prmtree.bon import (
    METHODS,
    PRM_RULES,
    BonResult,
    Candidate,
    Sampled,
    aggregate,
    best_of_n,
    evaluate,
    majority_pick,
    paired_bootstrap,
    parse_ns,
    pick,
    random_pick,
    sample,
    score,
    vote_key,
    wilson,
)
from prmtree.cli import main


class OracleScorer:
    """High rewards up to the first wrong step (the simulated policy's ground truth), low after."""

    def __init__(self) -> None:
        self.sim = SimulatedPolicy()
        self.calls = 0

    def score_batch(self, items):
        self.calls += 1
        out = []
        for problem, steps in items:
            first = self.sim.first_error(problem, steps)
            out.append([0.9 if first is None or j < first else 0.1 for j in range(len(steps))])
        return out


class RandomScorer:
    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    def score_batch(self, items):
        return [[self.rng.random() for _ in steps] for _, steps in items]


class ConstantScorer:
    def score_batch(self, items):
        return [[0.5] * len(steps) for _, steps in items]


def cand(scores, correct=False, answer=None, whole=None) -> Candidate:
    return Candidate("text", tuple(f"s{i}" for i in range(len(scores))), answer, correct,
                     step_scores=list(scores), whole_score=whole)


# -- selection rules on hand-made scores ---------------------------------------------------


def test_each_rule_picks_its_own_candidate():
    cands = [
        cand([1.0, 1.0, 0.35]),  # min .35, last .35, mean .78 (best mean), prod .35
        cand([0.6, 0.6]),  # min .6 (best min), last .6, mean .6, prod .36
        cand([0.2, 0.9]),  # min .2, last .9 (best last), mean .55, prod .18
        cand([0.55]),  # min .55, last .55, mean .55, prod .55 (best product)
        cand([]),  # not scored: never picked
    ]
    assert {rule: pick(rule, cands) for rule in PRM_RULES} == {
        "prm-min": 1, "prm-last": 2, "prm-mean": 0, "prm-prod": 3}
    assert aggregate("prm-mean", [0.2, 0.9]) == pytest.approx(0.55)
    assert aggregate("prm-prod", [0.5, 0.5]) == pytest.approx(math.log(0.25))
    assert aggregate("prm-min", []) == -math.inf


def test_orm_reads_the_whole_solution_score_not_the_last_step():
    cands = [cand([0.1, 0.95], whole=0.2), cand([0.9, 0.3], whole=0.8)]
    assert pick("prm-last", cands) == 0
    assert pick("orm", cands) == 1


def test_ties_go_to_the_earliest_sample_and_unscored_candidates_come_last():
    assert pick("prm-min", [cand([]), cand([0.4, 0.7]), cand([0.7, 0.4])]) == 1
    assert pick("orm", [cand([0.5]), cand([0.5], whole=0.0)]) == 1
    assert pick("prm-mean", [cand([]), cand([])]) == 0


def test_product_ranks_long_solutions_without_underflow():
    # 0.5 ** 1100 and 0.5 ** 1200 are both 0.0 in floats: a plain product would tie them
    assert pick("prm-prod", [cand([0.5] * 1200), cand([0.5] * 1100)]) == 1


# -- baselines ----------------------------------------------------------------------------


def test_majority_counts_equal_answers_together():
    cands = [cand([], answer="3"), cand([], answer="12"), cand([], answer="12.0", correct=True), cand([], answer="7"),
             cand([], answer=None), cand([], answer=None)]
    assert vote_key("12") == vote_key("12.0") != vote_key("7")
    assert vote_key("Yes.") == vote_key("yes")
    assert majority_pick(cands, 0, "p") == 1  # 12 twice; the solutions with no answer do not vote
    assert majority_pick([cand([]), cand([])], 0, "p") is None


def test_majority_ties_are_broken_by_the_seed_the_same_way_every_time():
    cands = [cand([], answer="12"), cand([], answer="7"), cand([], answer="7.0"), cand([], answer="12")]
    winners = {seed: majority_pick(cands, seed, "p") for seed in range(40)}
    assert winners == {seed: majority_pick(cands, seed, "p") for seed in range(40)}  # deterministic
    assert set(winners.values()) == {0, 1}  # either answer can win a tie; the first solution giving it stands for it
    assert majority_pick(cands, 3, "p") != majority_pick(cands, 3, "q") or \
        any(majority_pick(cands, 3, f"q{i}") != majority_pick(cands, 3, "p") for i in range(20))


def test_random_choice_is_seeded_and_covers_every_sample():
    picks = [random_pick(8, 0, f"p{i}") for i in range(400)]
    assert picks == [random_pick(8, 0, f"p{i}") for i in range(400)]
    assert set(picks) == set(range(8))
    assert picks != [random_pick(8, 1, f"p{i}") for i in range(400)]


# -- statistics ---------------------------------------------------------------------------


def test_wilson_interval_values():
    lo, hi = wilson(30, 40)
    assert (round(lo, 4), round(hi, 4)) == (0.5981, 0.8581)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    assert wilson(0, 0) == (0.0, 1.0)


def test_paired_bootstrap_of_a_sure_gain_excludes_zero():
    a = [True] * 30 + [False] * 10
    b = [True] * 20 + [False] * 20  # b right only where a is
    diff, lo, hi = paired_bootstrap(a, b, seed=0)
    assert diff == pytest.approx(0.25)
    assert 0.1 < lo < 0.25 < hi <= 0.45  # about 0.25 +- 1.96 x 0.068
    assert paired_bootstrap(a, a, seed=0) == (0.0, 0.0, 0.0)


# -- end to end through the simulated policy -------------------------------------------------


@pytest.fixture(scope="module")
def problems():
    return generate_problems(40, seed=5)


@pytest.fixture(scope="module")
def sampled(problems):
    got = sample(problems, 8, policy="simulated", seed=2)
    assert not got.failed and len(got.sampled) == 40
    return got.sampled


def test_sampling_goes_through_the_runs_segmenter_and_verifier(problems, sampled):
    again = sample(problems[:5], 8, policy="simulated", seed=2).sampled
    assert [[c.text for c in s.candidates] for s in again] == [[c.text for c in s.candidates] for s in sampled[:5]]
    assert [s.problem.id for s in sampled] == [p.id for p in problems]  # input order
    for s in sampled:
        assert len(s.candidates) == 8
        for c in s.candidates:
            assert c.steps == tuple(part.strip() for part in c.text.split("\n\n"))  # blank_line steps
            assert c.correct == (c.answer == s.problem.answer)  # synthetic answers are plain integers
    assert any(c.correct for s in sampled for c in s.candidates)
    assert not all(c.correct for s in sampled for c in s.candidates)


def test_oracle_is_at_least_every_method_on_every_problem(sampled):
    score(sampled, RandomScorer())
    result = evaluate(sampled, [1, 2, 4, 8], seed=2)
    for n in result.ns:
        oracle = result.hits[n]["oracle"]
        for m in METHODS:
            assert all(o or not h for o, h in zip(oracle, result.hits[n][m])), (n, m)
    # at N = 1 there is nothing to choose: every method is the one sample
    assert len({tuple(result.hits[1][m]) for m in METHODS}) == 1


def test_an_oracle_like_prm_beats_random_choice_clearly(sampled):
    score(sampled, OracleScorer())
    result = evaluate(sampled, [8], seed=2)
    gain, lo, _ = result.versus(8, "prm-min", "random")
    assert gain == pytest.approx(result.accuracy(8, "prm-min") - result.accuracy(8, "random"))
    assert gain >= 0.2
    assert lo > 0  # the paired interval excludes no gain
    sim = SimulatedPolicy()
    clean = [any(sim.first_error(s.problem, c.steps) is None for c in s.candidates) for s in sampled]
    assert sum(clean) >= 30
    assert all(hit for hit, ok in zip(result.hits[8]["prm-min"], clean) if ok)  # a clean solution is always found


def test_a_constant_prm_picks_the_first_sample(sampled):
    score(sampled, ConstantScorer())
    result = evaluate(sampled, [8], seed=2)
    first = [s.candidates[0].correct for s in sampled]
    for rule in (*PRM_RULES, "orm"):
        assert result.hits[8][rule] == first


def test_smaller_n_are_prefixes_of_the_one_sampling(sampled):
    score(sampled, RandomScorer(3))
    nested = evaluate(sampled, [2, 8], seed=2)
    alone = evaluate([Sampled(s.problem, s.candidates[:2]) for s in sampled], [2], seed=2)
    assert nested.hits[2] == alone.hits[2]


def test_json_shape_for_one_n_and_for_several(problems):
    one = best_of_n(problems[:12], OracleScorer(), 4, seed=1).to_json()
    assert one["n"] == 4 and one["problems"] == 12
    assert set(one["methods"]) == set(METHODS) == set(one["ci"])
    for m in METHODS:
        lo, hi = one["ci"][m]
        assert 0 <= lo <= one["methods"][m] <= hi <= 1
    assert set(one["vs"]) == {*PRM_RULES, "orm"} and len(one["vs"]["prm-min"]["random"]) == 3
    assert one["best_prm"] in PRM_RULES and one["ci_method"] == "wilson 95%"

    several = best_of_n(problems[:12], OracleScorer(), [4, 1, 2, 4], seed=1).to_json()
    assert several["n"] == [1, 2, 4]
    for m in METHODS:
        assert len(several["methods"][m]) == 3 and len(several["ci"][m]) == 3
        assert several["methods"][m][-1] == one["methods"][m]  # N = 4 from the same seeded samples
    assert len(several["best_prm"]) == 3
    json.dumps(several)


def test_bad_scores_and_bad_arguments_are_refused_in_one_line(problems):
    class Short:
        def score_batch(self, items):
            return [steps[:-1] and [0.5] * (len(steps) - 1) or [] for _, steps in items]

    class Logits:
        def score_batch(self, items):
            return [[2.5] * len(steps) for _, steps in items]

    with pytest.raises(ValueError, match=r"returned \d+ rewards for a solution of \d+ steps"):
        best_of_n(problems[:2], Short(), 2)
    with pytest.raises(ValueError, match=r"reward of 2.5 .*must be in \[0, 1\]"):
        best_of_n(problems[:2], Logits(), 2)

    class Nothing:  # before: TypeError tracebacks
        def score_batch(self, items):
            return None

    class Broken:
        def score_batch(self, items):
            raise KeyError("head")

    class Words:
        def score_batch(self, items):
            return [["good"] * len(steps) for _, steps in items]

    with pytest.raises(ValueError, match=r"score_batch returned NoneType, not a list of reward lists"):
        best_of_n(problems[:2], Nothing(), 2)
    with pytest.raises(ValueError, match=r"score_batch raised KeyError: 'head'"):
        best_of_n(problems[:2], Broken(), 2)

    class Exhausted:  # an exception without text: its name alone, not "StopIteration: "
        def score_batch(self, items):
            raise StopIteration

    with pytest.raises(ValueError, match=r"score_batch raised StopIteration$"):
        best_of_n(problems[:2], Exhausted(), 2)
    with pytest.raises(ValueError, match=r"rewards that are not numbers .*\['good'"):
        best_of_n(problems[:2], Words(), 2)
    with pytest.raises(ConfigError, match="N must be at least 1"):
        best_of_n(problems[:2], OracleScorer(), [0, 2])
    with pytest.raises(ConfigError, match="not a directory"):
        best_of_n(problems[:2], "/no/such/prm", 2)
    assert parse_ns("8") == [8] and parse_ns("32,1,2,2") == [1, 2, 32]
    for bad in ("0", "a,b", ","):
        with pytest.raises(ValueError, match="--n"):
            parse_ns(bad)


def test_result_reports_the_best_rule():
    hits = {4: {m: [True, False] for m in METHODS}}
    hits[4]["prm-mean"] = [True, True]
    assert BonResult([4], 2, 0, hits).best_prm(4) == "prm-mean"


def test_the_table_marks_the_best_rule_at_each_n_and_says_so():
    from rich.console import Console

    from prmtree.bon import print_table

    hits = {n: {m: [True, False] for m in METHODS} for n in (1, 4)}
    hits[1]["prm-min"] = hits[4]["prm-mean"] = [True, True]
    console = Console(width=200, record=True)
    print_table(BonResult([1, 4], 2, 0, hits), console)
    text = console.export_text()
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if line.startswith("│")]
    starred = {row[0] for row in cells if row and row[0] in METHODS and any(c.endswith(" *") for c in row[1:])}
    assert starred == {"prm-min", "prm-mean"}  # a star at each N, where that N's best rule is
    assert "* the best PRM rule at each N; at N=4, prm-mean: " in text


# -- the command ---------------------------------------------------------------------------


SCORERS = """
from prmtree.engine.errors import GenerationError
from prmtree.policies.simulated import SimulatedPolicy


class Oracle:
    def __init__(self):
        self.sim = SimulatedPolicy()

    def score_batch(self, items):
        out = []
        for problem, steps in items:
            first = self.sim.first_error(problem, steps)
            out.append([0.9 if first is None or j < first else 0.1 for j in range(len(steps))])
        return out


oracle = Oracle()


class FailsOne(SimulatedPolicy):
    async def generate(self, request):
        if request.problem.id.endswith("0001"):
            raise GenerationError("the model refused", retryable=False)
        return await super().generate(request)


class FailsAll(SimulatedPolicy):
    async def generate(self, request):
        raise GenerationError("the model refused", retryable=False)
"""


@pytest.fixture
def command(tmp_path, monkeypatch):
    (tmp_path / "bon_helpers.py").write_text(textwrap.dedent(SCORERS))
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write_jsonl(generate_problems(10, seed=4), tmp_path / "data")

    def run(*args):
        try:
            return main(["bon", "--input", str(path), *map(str, args)])
        except SystemExit as exc:
            return exc.code

    return run, tmp_path


def test_the_command_writes_table_json_and_png(command, capsys):
    run, tmp = command
    code = run("--prm", "bon_helpers:oracle", "--n", "1,2,4", "--seed", "3", "--json", tmp / "r.json", "--png", tmp / "r.png")
    out = capsys.readouterr().out
    assert code == 0
    assert "prm-min" in out and "majority" in out and "N=4" in out
    report = json.loads((tmp / "r.json").read_text())
    assert report["n"] == [1, 2, 4] and report["problems"] == 10
    assert (tmp / "r.png").read_bytes()[:4] == b"\x89PNG"
    code = run("--prm", "bon_helpers:Oracle", "--n", "2", "--seed", "3", "--json", tmp / "r2.json")  # a class: built
    assert code == 0 and json.loads((tmp / "r2.json").read_text())["n"] == 2


def test_the_command_counts_failed_problems_out_and_says_so(command, capsys):
    run, tmp = command
    code = run("--prm", "bon_helpers:oracle", "--policy", "bon_helpers:FailsOne", "--n", "2", "--json", tmp / "r.json")
    err = capsys.readouterr().err
    assert code == 3
    assert "1 problems failed" in err
    report = json.loads((tmp / "r.json").read_text())
    assert report["problems"] == 9 and report["failed"] == 1


def test_the_command_exits_3_when_every_problem_failed_and_4_when_no_row_was_usable(command, capsys):
    # before: both exited 2, the code for bad arguments, though the arguments were fine
    run, tmp = command
    assert run("--prm", "bon_helpers:oracle", "--policy", "bon_helpers:FailsAll", "--n", "2") == 3
    err = capsys.readouterr().err
    assert err == "prmtree: bon: no problem was sampled: 10 failed (e.g. GenerationError: the model refused (not retryable))\n", err
    bad = tmp / "bad.jsonl"
    bad.write_text('{"question": "q?", "answer": "1", "image": "missing.png"}\n')  # its image is not there
    try:
        code = main(["bon", "--input", str(bad), "--prm", "bon_helpers:oracle", "--n", "2"])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 4 and err.startswith("prmtree: bon: no problem was sampled: 1 bad input rows"), err


@pytest.mark.parametrize("args, message", [
    (["--prm", "X", "--n", "0"], "--n values must be at least 1"),
    (["--prm", "X", "--n", "two"], "--n takes a number or a list"),
    (["--prm", "/no/such/dir"], "--prm '/no/such/dir' is not a directory"),
    (["--prm", "no_such_module_x:Scorer"], "cannot import it"),
    (["--prm", "bon_helpers:SimulatedPolicy"], "has no score_batch"),
    (["--prm", "bon_helpers:oracle", "--json", "/no/such/dir/r.json"], "--json '/no/such/dir/r.json': its directory"),
    # before sampling: a traceback from matplotlib after all the work, or a file named other than written
    (["--prm", "bon_helpers:oracle", "--png", "plot.txt"], "--png 'plot.txt': name a .png file"),
    (["--prm", "bon_helpers:oracle", "--png", "noext"], "--png 'noext': name a .png file"),
    (["--prm", "bon_helpers:oracle", "--policy", "nosuchpolicy"], "nosuchpolicy"),
    (["--n", "4"], "the following arguments are required: --prm"),
])
def test_the_commands_argument_errors_are_one_line(command, capsys, args, message):
    run, _ = command
    assert run(*args) == 2
    err = capsys.readouterr().err
    assert err.startswith("prmtree: error: ") and err.count("\n") == 1 and message in err, err


def test_a_prm_directory_that_does_not_load_is_one_line(command, capsys, tmp_path):
    run, _ = command
    empty = tmp_path / "empty-prm"
    empty.mkdir()
    assert run("--prm", empty) == 2
    err = capsys.readouterr().err
    assert err.startswith("prmtree: error: ") and err.count("\n") == 1
    assert "prmtree[train]" in err or str(empty) in err


def test_a_prm_factory_that_needs_arguments_is_a_one_line_error(command, capsys):
    # Before: --prm module:factory whose factory takes an argument was a TypeError traceback.
    run, tmp = command
    (tmp / "needs_args.py").write_text("class Scorer:\n    def __init__(self, path):\n        self.path = path\n\n"
                                       "    def score_batch(self, items):\n        return [[0.5] * len(s) for _, s in items]\n\n"
                                       "def make(path):\n    return Scorer(path)\n")
    for target, call in (("needs_args:make", "make()"), ("needs_args:Scorer", "Scorer.__init__()")):
        assert run("--prm", target, "--n", "2") == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(
            f"prmtree: error: --prm {target!r}: cannot build it: calling it with no arguments raised TypeError: "
            f"{call} missing 1 required positional argument: 'path'"), err


def test_a_step_the_prm_did_not_read_leaves_its_candidate_unscored_ranked_last():
    # PRM.score_batch gives None for a step past the model's length limit; before it gave
    # the last reward read (0.5 when none was), which ranked as a judgement.
    read = Candidate("a", ("x", "y"), "1", False, step_scores=[0.2, 0.3])
    unread = Candidate("b", ("x", "y"), "2", True, step_scores=[0.9, None])
    for rule in PRM_RULES:
        assert aggregate(rule, [0.9, None]) == -math.inf and aggregate(rule, [None]) == -math.inf
        assert pick(rule, [unread, read]) == 1
    problem = generate_problems(1, seed=1)[0]
    sampled = [Sampled(problem, [Candidate("one two", ("one", "two"), "1", True)])]

    class Long:
        def score_batch(self, items):
            return [[0.8] + [None] * (len(steps) - 1) for _, steps in items]

    score(sampled, Long())
    assert sampled[0].candidates[0].step_scores == [0.8, None] and sampled[0].candidates[0].whole_score == 0.8
