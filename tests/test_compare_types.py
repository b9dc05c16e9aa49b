"""Comparison by type (issue 19): integers exact, decimals to the gold's precision, number and
scale words, mixed numbers, thousands separators, decimal commas, percent, units, tuples and
sets, VQA mode; bad gold answers refused. Cases written here, not copied from the peers' file."""

from __future__ import annotations

import asyncio
import math

import pytest

from prmtree.engine.answers import Verifier, cheap_check
from prmtree.engine.answers.compare import numbers_match, sequence_match, slow_match, vqa_match
from prmtree.engine.config import InputConfig, VerifyConfig
from prmtree.engine.problem import _fields
from prmtree.engine.records import Problem

# (gold, prediction, answer_type, expected)
CASES = [
    # integers exactly, at any size and type
    ("1000000", "1000001", "auto", False),
    ("123456789", "123456790", "math", False),
    ("123456789", "123456790", "number", False),
    ("4096", "4096.0", "auto", True),
    ("7", "6.9999999", "auto", False),
    ("250", "$250", "auto", True),
    # decimals: the gold's stated precision (half up), or the tolerance
    ("2.72", "2.7183", "auto", True),
    ("2.72", "2.71", "auto", False),
    ("2.72", "2.7", "auto", False),
    ("0.45", "0.445", "number", True),
    ("0.45", "0.4449", "number", False),
    ("0.67", "2/3", "auto", True),
    ("\\frac{2}{3}", "0.6667", "auto", False),
    # number words and scale words
    ("3", "three", "auto", True),
    ("3", "Three.", "number", True),
    ("0", "zero", "auto", True),
    ("34", "thirty-four", "auto", True),
    ("34", "thirty-five", "auto", False),
    ("four", "4", "auto", True),
    ("5", "5 thousand", "auto", False),
    ("5000", "5 thousand", "auto", True),
    ("8", "8 dozen", "auto", False),
    ("96", "8 dozen", "auto", True),
    ("2500000", "2.5 million", "number", True),
    # mixed numbers and thousands separators
    ("\\frac{19}{4}", "4 3/4", "auto", True),
    ("\\frac{43}{4}", "4 3/4", "auto", False),
    ("25000", "25 000", "auto", True),
    ("25000", "25,000", "number", True),
    ("2500", "25,00", "auto", False),
    # percent: as written for auto; also as a fraction for a declared number
    ("40\\%", "40", "auto", True),
    ("40\\%", "0.4", "auto", False),
    ("40%", "0.4", "number", True),
    ("0.4", "40%", "number", True),
    ("40%", "0.04", "number", False),
    # units: one side only is ignored, different units converted (pint), dimensions differ
    ("8", "8 \\text{ m}", "auto", True),
    ("8 km", "8 km", "auto", True),
    ("8 km", "8000 m", "auto", True),
    ("8 km", "8 m", "auto", False),
    ("8 cm", "8 cm^2", "auto", False),
    ("45^\\circ", "45 degrees", "auto", True),
    # tuples in order, sets in any order
    ("(3,4)", "(3, 4)", "auto", True),
    ("(3,4)", "(4,3)", "auto", False),
    ("\\{3,4\\}", "\\{4, 3\\}", "auto", True),
    ("\\{3,4\\}", "4, 3", "auto", True),
    ("\\{3,4\\}", "\\{3, 3\\}", "auto", False),
    ("3, 4, 5", "5, 4, 3", "auto", False),
    ("3, 4, 5", "3, 4, 5", "auto", True),
    ("(1000000, 2)", "(1000001, 2)", "auto", False),
    # words stay words; number words inside them too
    ("three cats", "3 cats", "text", True),
    ("three cats", "4 cats", "text", False),
]

VQA_CASES = [
    ("t shirt", "t-shirt", True),
    ("3", "Three", True),
    ("0", "none", True),
    ("12", "twelve", False),  # VQA's number map stops at ten
    ("cat", "a cat.", True),
    ("can't tell", "cant tell", True),
    ("5", "5 cats", False),  # exact match: no unit stripping
    ("yes", "yes, it is", False),
    ("shoes", "shoe's", False),
    ("1500", "1,500", True),
    ("25", "2.5", False),
]


def _problem(gold: str, answer_type: str = "auto") -> Problem:
    return Problem(id="p", question="q?", answer=gold, answer_type=answer_type)


@pytest.mark.parametrize("gold,predicted,answer_type,expected", CASES)
def test_each_rule_through_the_verifier(gold, predicted, answer_type, expected):
    assert Verifier()(_problem(gold, answer_type), predicted) is expected


@pytest.mark.parametrize("gold,predicted,expected", VQA_CASES)
def test_vqa_mode_is_the_vqa_evaluations_exact_match(gold, predicted, expected):
    assert vqa_match(gold, predicted) is expected
    assert Verifier()(_problem(gold, "vqa"), predicted) is expected


def test_vqa_conventions_differ_from_auto():
    """auto drops a noun after a number and reads every number word; vqa does neither."""
    verifier = Verifier()
    assert verifier(_problem("5"), "5 cats") is True
    assert verifier(_problem("5", "vqa"), "5 cats") is False
    assert verifier(_problem("12"), "twelve") is True
    assert verifier(_problem("12", "vqa"), "twelve") is False


def test_numbers_and_cheap_check_entry_points():
    assert numbers_match("1000000", "1000001") is False
    assert numbers_match("50%", "0.5") is False
    assert numbers_match("50%", "0.5", percent_fraction=True) is True
    assert numbers_match("8 km", "8000 m") is True
    assert cheap_check("number", "1000000", "1000001")[0] is False
    assert cheap_check("math", "123456789", "123456790")[0] is False
    # different units are not decided on the driver's loop: they go to the pool
    assert cheap_check("number", "8 km", "8000 m") == (None, "8 km")
    assert slow_match("8 km", "8000 m") is True
    assert sequence_match("(1,2)", "[1,2]") is None  # an interval against a tuple: Math-Verify's


def test_decimal_comma_is_off_by_default_and_read_when_set():
    plain, comma = Verifier(), Verifier(VerifyConfig(decimal_comma=True))
    # against a one-number gold with a point, "2,5" can only be a decimal comma: read so
    assert plain(_problem("2.5"), "2,5") is True and plain(_problem("1000.99"), "1000,99") is True
    assert plain(_problem("2.5"), "2,6") is False and plain(_problem("2.5"), "2,500") is False
    # not the other way round: a gold "2,5" is a list of two answers unless decimal_comma is set
    assert plain(_problem("2,5"), "2.5") is False and comma(_problem("2,5"), "2.5") is True
    assert comma(_problem("2.5"), "2,5") is True
    assert comma(_problem("1234.5"), "1.234,5") is True
    assert comma(_problem("2.5"), "2,6") is False
    assert plain(_problem("1234"), "1,234") is True
    assert comma(_problem("1234"), "1,234") is False  # with decimal commas, 1,234 is 1.234


@pytest.mark.slow
def test_the_driver_path_and_the_pool_agree_with_the_synchronous_verdicts():
    """One pool for all: every rule's verdict is the same through ``await check`` (cheap paths
    on the loop, units and expressions in worker processes) as through ``__call__``."""
    sync_verifier, async_verifier = Verifier(), Verifier()

    async def driver() -> list[bool]:
        verdicts = []
        for gold, predicted, answer_type, _ in CASES:
            verdicts += await async_verifier.check(_problem(gold, answer_type), [predicted])
        return verdicts

    try:
        found = asyncio.run(driver())
    finally:
        async_verifier.close()
    expected = [e for _, _, _, e in CASES]
    assert [sync_verifier(_problem(g, t), p) for g, p, t, _ in CASES] == expected
    assert found == expected
    assert async_verifier.stats()["pool_checks"] >= 2  # the unit conversions ran in the pool


# --------------------------------------------------------------------------- bad gold answers


@pytest.mark.parametrize("answer,reason", [
    (math.nan, "answer is NaN (a missing value)"),
    ("nan", "answer 'nan' is a missing value (NaN)"),
    ("NaN", "answer 'NaN' is a missing value (NaN)"),
    ("  ", "missing answer"),
    ("A or B", "answer 'A or B' is hedged (more than one answer)"),
    ("(C) or (D)", "is hedged"),
    ("yes or no", "is hedged"),
    ("either red or blue", "is hedged"),
    ("not sure", "is hedged"),
    ("N/A", "answer 'N/A' says there is no answer"),
    ("\\frac{1}{", "has unbalanced braces"),
])
def test_a_bad_gold_answer_is_a_bad_input_row(answer, reason):
    got = _fields({"question": "q?", "answer": answer}, InputConfig(), "row-1")
    assert not isinstance(got, tuple)
    assert reason in got.reason and "\n" not in got.reason


@pytest.mark.parametrize("answer", ["B", "x = 1 or x = 2", "red", 3.5, 0, "none"])
def test_good_gold_answers_pass(answer):
    assert isinstance(_fields({"question": "q?", "answer": answer}, InputConfig(), "row-1"), tuple)


def test_nan_and_hedged_golds_in_a_parquet_input_go_to_errors(tmp_path):
    """A NaN read from Parquet (how pandas writes a missing answer) is refused, not compared as "nan"."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from prmtree.engine.problem import iter_input, iter_problems

    table = pa.table({"id": ["a", "b", "c"], "question": ["q1?", "q2?", "q3?"],
                      "answer": [float("nan"), 4.0, 7.0]})
    pq.write_table(table, tmp_path / "in.parquet")
    rows = list(iter_input(tmp_path / "in.parquet"))
    errors = [r for r in rows if not isinstance(r, Problem)]
    problems = [r for r in rows if isinstance(r, Problem)]
    assert [p.id for p in problems] == ["b", "c"]
    assert len(errors) == 1 and errors[0].problem_id == "a" and "NaN" in errors[0].reason
    given = [Problem(id="d", question="q?", answer="nan"), Problem(id="e", question="q?", answer="A or C")]
    refused = list(iter_problems(given))
    assert [type(r).__name__ for r in refused] == ["InputError", "InputError"]
    assert "hedged" in refused[1].reason


def test_a_sentence_is_not_a_number_answer():
    """Under a declared number type, a prediction in prose is no number (extraction reduces
    a completion to its value first); number words and units are not prose."""
    v = Verifier()
    number = Problem(id="n", question="q?", answer="1", answer_type="number")
    assert v(number, "The overall ratio of male to female is 1.") is False
    assert v(number, "1") is True and v(number, "one") is True
    assert v(Problem(id="m", question="q?", answer="105", answer_type="number"), "one hundred and five") is True
    assert v(Problem(id="u", question="q?", answer="5", answer_type="number"), "5 square meters") is True


@pytest.mark.parametrize("gold, predicted, options, expected", [
    ("(b)", "(D) (a)", ["(c)", "(d)", "(a)", "(b)", "(e)"], True),  # the opening (D) names option D, whose text is (b)
    ("(b)", "(b)", ["(c)", "(d)", "(a)", "(b)", "(e)"], False),  # letter B: option text (d)
    ("(b)", "D", ["(c)", "(d)", "(a)", "(b)", "(e)"], True),
    ("blue", "(B) blue", ["red", "blue"], True),
    ("B", "a red car", ["a red car", "a blue car"], False),  # an article is no letter: the text names A
])
def test_choices_whose_option_texts_look_like_letters(gold, predicted, options, expected):
    assert cheap_check("choice", gold, predicted, tuple(zip("ABCDE", options)))[0] is expected
