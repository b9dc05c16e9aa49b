import threading

import pytest

from prmtree.engine.problem import Problem
from prmtree.engine.verify import Verifier, choice_match, math_match, numbers_match, parse_number, text_match


def P(answer, answer_type="auto", **meta):
    return Problem(id=f"p-{answer}-{answer_type}", question="q?", answer=answer, answer_type=answer_type, meta=meta)


@pytest.mark.parametrize(
    "gold, pred, expected",
    [
        ("1/2", "0.5", True),
        ("0.5", "\\frac{1}{2}", True),
        ("\\frac{1}{2}", "\\dfrac{1}{2}", True),
        ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}", True),
        ("2", "3", False),
        ("x^2+1", "1+x^2", True),
        ("\\{1,2\\}", "\\{2,1\\}", True),
        ("(1, 2]", "(1,2]", True),
        ("\\pi", "3.14", False),
    ],
)
def test_math_equivalences(gold, pred, expected):
    assert Verifier()(P(gold, "math"), pred) is expected


@pytest.mark.parametrize(
    "gold, pred, expected",
    [
        ("12", "12.0", True),
        ("12", "12.0000001", True),
        ("12", "12.01", False),
        ("1,000", "1000", True),
        ("50%", "50", True),
        ("$4", "4", True),
        ("-3", "-3", True),
        ("-3", "3", False),
        ("0.5", "1/2", True),
        ("7", "seven", False),
    ],
)
def test_numbers_with_tolerance(gold, pred, expected):
    assert Verifier()(P(gold, "number"), pred) is expected


def test_number_tolerance_is_configurable():
    assert not numbers_match("100", "100.5")
    assert numbers_match("100", "100.5", rel_tol=0.01)
    assert parse_number("1e3") == 1000.0
    assert parse_number("abc") is None


@pytest.mark.parametrize(
    "gold, pred, expected",
    [
        ("B", "B", True),
        ("B", "(B)", True),
        ("B", "b", True),
        ("B", "B. a cat", True),
        ("B", "(C)", False),
        ("B", "a cat", True),
        ("B", "a dog", False),
    ],
)
def test_multiple_choice_by_letter_or_option_text(gold, pred, expected):
    problem = P(gold, "choice", options={"A": "a dog", "B": "a cat", "C": "a cow"})
    assert Verifier()(problem, pred) is expected


def test_auto_detects_choice_number_math():
    v = Verifier()
    assert v(P("C", "auto", options={"A": "x", "B": "y", "C": "z"}), "(C)")
    assert v(P("3.5", "auto"), "7/2")
    assert v(P("\\frac{3}{4}", "auto"), "0.75")


def test_text_is_normalised():
    assert text_match("The Eiffel Tower", "eiffel tower.")
    assert not text_match("Paris", "London")
    assert Verifier()(P("Paris", "text"), "paris!")


def test_custom_callable_and_its_exceptions_are_false():
    v = Verifier(custom=lambda gold, pred: pred.startswith(gold))
    assert v(P("ab"), "abc")
    assert not v(P("ab"), "b")
    boom = Verifier(custom=lambda gold, pred: 1 / 0)
    assert boom(P("1"), "1") is False


def test_no_answer_is_wrong():
    assert Verifier()(P("1"), None) is False


def test_memoised_per_problem_and_answer():
    calls = []

    def check(gold, pred):
        calls.append(pred)
        return gold == pred

    v = Verifier(custom=check)
    p1, p2 = P("1"), Problem(id="other", question="q", answer="1")
    assert v(p1, "1") and v(p1, "1") and v(p2, "1")
    assert not v(p1, "2")
    assert calls == ["1", "1", "2"]
    assert v.hits == 1
    v.forget(p1.id)
    v(p1, "1")
    assert calls[-1] == "1" and len(calls) == 4


def test_math_verify_works_outside_the_main_thread():
    results = []
    t = threading.Thread(target=lambda: results.append(math_match("1/2", "0.5")))
    t.start()
    t.join()
    assert results == [True]


def test_choice_match_without_options_needs_letters():
    assert choice_match("A", "(a)")
    assert not choice_match("A", "B")
