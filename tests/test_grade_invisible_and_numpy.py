"""Two grading faults a prober found: invisible format characters (a left-to-right mark, a
zero-width space, a byte-order mark) before an answer made a right answer wrong; and a
``check_answer`` returning numpy's bool (``np.isclose``) was taken for a broken check, every
answer graded wrong. Also: what a ``check_answer`` that returns no bool is told, and an
``async def`` one refused when the check is installed."""

from __future__ import annotations

import gc
import warnings

import pytest

import prmtree
from prmtree.engine.answers import Verifier
from prmtree.engine.answers.symbols import ascii_math
from prmtree.engine.records import Problem

# (gold, model text, grade keyword arguments, extracted): each right, an invisible character in it
INVISIBLE = [
    ("-4", "\\boxed{\u200e-4}", {}, "-4"),  # left-to-right mark
    ("-4", "\\boxed{\u200f-4}", {}, "-4"),  # right-to-left mark
    ("-4", "\\boxed{\u200b-4}", {}, "-4"),  # zero-width space
    ("-4", "\\boxed{\ufeff-4}", {}, "-4"),  # byte-order mark
    ("-4", "\\boxed{\u2066-4\u2069}", {}, "-4"),  # a left-to-right isolate
    ("-4", "\\boxed{\u202a-4\u202c}", {}, "-4"),  # an embedding and its pop
    ("-4", "\\boxed{-\u00ad4}", {}, "-4"),  # soft hyphen, inside
    ("-4", "\\boxed{-\u20604}", {}, "-4"),  # word joiner, inside
    ("-4", "\\boxed{\u200e\u2212 4}", {}, "- 4"),  # before a Unicode minus, which is then read
    ("-4", "\\boxed{-4\u200b}", {}, "-4"),  # after (it was right, by Math-Verify)
    ("-4", "So the answer is \u200e-4.", {}, "-4"),  # in prose
    ("-4", "\u200b -4", {"extract": False}, "-4"),
    ("\u200e-4", "\\boxed{-4}", {}, "-4"),  # in the gold
    ("A", "\\boxed{\u200eA}", {"answer_type": "choice", "options": ["red", "blue"]}, "A"),
    ("cat", "\\boxed{\u200bcat}", {"answer_type": "text"}, "cat"),
    ("\u200bcat", "\\boxed{cat}", {"answer_type": "text"}, "cat"),
    ("Paris", "The answer is \u2067Paris\u2069.", {"answer_type": "text"}, "Paris"),  # a right-to-left isolate
]


@pytest.mark.parametrize("gold, text, kwargs, extracted", INVISIBLE)
def test_invisible_format_characters_do_not_change_the_verdict(gold, text, kwargs, extracted):
    verdict = prmtree.grade(gold, text, **kwargs)
    assert (verdict.correct, verdict.extracted) == (True, extracted)


@pytest.mark.parametrize("gold, text", [("-4", "\\boxed{\u200e-5}"), ("-4", "\\boxed{\u200b4}"),
                                        ("cat", "\\boxed{\u200bcats}"), ("2", "\\boxed{1\u200b2}")])
def test_a_wrong_answer_with_invisible_characters_stays_wrong(gold, text):
    assert prmtree.grade(gold, text).correct is False


def test_invisible_characters_are_dropped_and_visible_ones_kept():
    assert ascii_math("\u2212\u200b4\ufeff") == "-4"
    assert ascii_math("caf\u00e9\u200b") == "caf\u00e9"
    # the joiners are spelling: Persian's ZWNJ, an Indic conjunct's ZWJ, an emoji family
    for kept in ("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", "\u0915\u094d\u200d\u0937",
                 "\U0001f468\u200d\U0001f469\u200d\U0001f467"):
        assert ascii_math(kept) == kept
        assert prmtree.grade(kept, f"\\boxed{{{kept}}}", answer_type="text").correct
    assert ascii_math("\u0600" + "12") == "\u0600" + "12"  # the Arabic number sign draws a mark
    assert ascii_math("-4") == "-4"


def P(answer: str) -> Problem:
    return Problem(id="p", question="q?", answer=answer)


def test_a_check_answer_returning_numpys_bool_is_a_verdict():
    np = pytest.importorskip("numpy")

    def close(gold, predicted):  # what many write: exact, else numerically close
        return gold.strip() == predicted.strip() or np.isclose(float(gold), float(predicted))

    v = Verifier(custom=close)
    assert v(P("-60"), "-60.0") is True
    assert v(P("-60"), "-607") is False
    assert Verifier(custom=lambda gold, predicted: np.bool_(gold == predicted))(P("1"), "1") is True
    assert "custom_errors" not in v.stats()


@pytest.mark.parametrize("returned, why", [
    (lambda: 1, "returned int 1, not a bool"),
    (lambda: None, "returned None, not a bool"),
    (lambda: "no", "returned str 'no', not a bool"),
    (lambda: __import__("numpy").int64(1), "returned numpy.int64 "),
    (lambda: __import__("numpy").array([True]), "returned numpy.ndarray "),
])
def test_a_check_answer_returning_no_bool_is_told_what_it_returned(returned, why):
    if "numpy" in why:
        pytest.importorskip("numpy")
    v = Verifier(custom=lambda gold, predicted: returned())
    assert v(P("-60"), "-60") is False
    stats = v.stats()
    assert stats["custom_errors"] == 1 and stats["custom_error"].startswith("check_answer('-60', '-60') " + why)


def test_an_async_check_answer_is_refused_when_installed():
    async def check(gold, predicted):
        return gold == predicted

    class Checker:
        async def __call__(self, gold, predicted):
            return gold == predicted

    for fn in (check, Checker()):
        with pytest.raises(TypeError, match="is an async def: it is called for each answer without awaiting, so "
                                            "make it a plain def returning True or False"):
            Verifier(custom=fn)


def test_a_check_answer_returning_a_coroutine_is_told_so_without_a_warning():
    async def check(gold, predicted):
        return gold == predicted

    v = Verifier(custom=lambda gold, predicted: check(gold, predicted))  # not itself async: passes the setup
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert v(P("1"), "1") is False
        gc.collect()  # where "coroutine ... was never awaited" would be said
    assert not [w for w in caught if "never awaited" in str(w.message)]
    assert "returned an awaitable, not a bool: check_answer must be a plain def" in v.stats()["custom_error"]


def test_an_async_check_answer_is_refused_by_run_and_bon_before_anything_is_built(tmp_path):
    import prmtree
    from prmtree.bon import sample
    from prmtree.engine.errors import ConfigError
    from prmtree.engine.synthetic import generate_problems

    async def check(gold, predicted):
        return gold == predicted

    problems = generate_problems(1, seed=3)
    with pytest.raises(ConfigError, match="check_answer 'check' is an async def: it is called for each answer"):
        prmtree.run(problems, policy="simulated", out=tmp_path / "o", check_answer=check)
    assert not (tmp_path / "o").exists()  # refused before the output folder was opened
    with pytest.raises(ConfigError, match="is an async def"):
        sample(problems, 2, policy="simulated", check_answer=check)
