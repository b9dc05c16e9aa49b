"""A multiple-choice answer that states its option's text another way: the same maths spelled
or spaced otherwise (``\\dfrac`` for ``\\frac``, ``(2,1)`` for ``(2, 1)``, ``\\geq`` for ``≥``),
or the option's words inside a sentence (ScienceQA's "Sample B has the higher temperature.").
Each was graded wrong once: a right solution labelled wrong, in silence.

Every form comes as a pair: the option it states is accepted, and a wrong, negated or
ambiguous statement of the same kind is refused (the other option, a sign, an order, a
second option named, a doubt).
"""

from __future__ import annotations

import pytest

import prmtree

TRIG = {"A": r"$\frac{1}{2}$", "B": r"$\frac{\sqrt{3}}{2}$", "C": r"$\frac{\sqrt{3}}{3}$", "D": r"$\sqrt{3}$"}
POINTS = {"A": "(1, 2)", "B": "(2, 1)", "C": "(2, -1)", "D": "(-2, 1)"}
RELATIONS = {"A": "x ≤ 2", "B": "x ≥ 2", "C": "x > 2", "D": "x ≠ 2"}
LATEX_RELATIONS = ["$x \\leq 2$", "$x \\geq 2$", "$x < 2$", "$x \\neq 2$"]
LINES = {"A": "y=2x+1", "B": "y=2x-1", "C": "y=x+2"}
INTERVALS = {"A": "[1, \\infty)", "B": "(1, \\infty)", "C": "(-\\infty, 1]"}
MIXED = {"A": "21/2", "B": "2 1/2", "C": "5/2"}
TEMPERATURE = {"A": "sample A", "B": "sample B", "C": "neither; the samples have the same temperature"}
METALS = {"A": "iron", "B": "iron oxide", "C": "copper"}

MATH_FORMS = [
    # \dfrac for \frac, braces and dollars aside: the option stated; another option is not it.
    ("B", r"So $\sin 60^\circ = \boxed{\dfrac{\sqrt{3}}{2}}$.", TRIG, True),
    ("C", r"So $\sin 60^\circ = \boxed{\dfrac{\sqrt{3}}{2}}$.", TRIG, False),
    ("B", r"\boxed{\tfrac{\sqrt 3}{2}}", TRIG, True),
    ("D", r"\boxed{\dfrac{\sqrt{3}}{2}}", TRIG, False),
    # A point's spacing, \left( \right) and thin spaces: order and signs still count.
    ("B", r"The intersection is \boxed{(2,1)}.", POINTS, True),
    ("A", r"The intersection is \boxed{(2,1)}.", POINTS, False),
    ("B", r"\boxed{\left(2,\,1\right)}", POINTS, True),
    ("C", r"\boxed{\left(2,\,1\right)}", POINTS, False),
    ("B", r"\boxed{(2,-1)}", POINTS, False),
    ("D", r"\boxed{(2,-1)}", POINTS, False),
    ("B", r"\boxed{(2,-1)}", {"A": "(1, 2)", "B": "(2, 1)"}, False),  # a minus sign is no hyphen
    ("B", r"\boxed{(2, 1)}", {"A": "(1, 2)", "B": "(2,1)"}, True),
    # A relation in LaTeX or ASCII for the option's symbol; the other direction is refused.
    ("B", r"The answer is $x \geq 2$.", RELATIONS, True),
    ("A", r"The answer is $x \geq 2$.", RELATIONS, False),
    ("C", r"The answer is $x \geq 2$.", RELATIONS, False),
    ("B", r"\boxed{x \ge 2}", RELATIONS, True),
    ("B", r"\boxed{x>=2}", RELATIONS, True),
    ("A", r"\boxed{x \le 2}", RELATIONS, True),
    ("B", r"\boxed{x \le 2}", RELATIONS, False),
    ("A", r"\boxed{x \leq 2}", RELATIONS, True),
    ("D", r"\boxed{x \neq 2}", RELATIONS, True),
    ("A", r"\boxed{x \neq 2}", RELATIONS, False),
    # ... and the other way round: Unicode symbols for options written in LaTeX.
    ("A", "The solution set is x ≤ 2.", LATEX_RELATIONS, True),
    ("C", "The solution set is x ≤ 2.", LATEX_RELATIONS, False),
    ("B", "Answer: x≥2", LATEX_RELATIONS, True),
    ("D", "Answer: x ≠ 2", LATEX_RELATIONS, True),
    ("C", "Answer: x ≠ 2", LATEX_RELATIONS, False),
    # A gold given as the option's text (MathVista's way) reads the same way.
    ("x ≥ 2", r"\boxed{x \geq 2}", RELATIONS, True),
    ("x ≥ 2", r"\boxed{x \leq 2}", RELATIONS, False),
    # An equation's and an interval's spacing; a sign or a bracket still differs.
    ("A", r"\boxed{y = 2x + 1}", LINES, True),
    ("B", r"\boxed{y = 2x + 1}", LINES, False),
    ("A", r"\boxed{[1,\infty)}", INTERVALS, True),
    ("B", r"\boxed{[1,\infty)}", INTERVALS, False),
    # Spacing between two numbers is kept: 2 1/2 (a mixed number) is no 21/2.
    ("A", r"\boxed{2 1/2}", MIXED, False),
    ("A", r"\boxed{2\ 1/2}", MIXED, False),
]

SENTENCES = [
    # The option's words open the sentence, a clause, or close it: that option.
    ("B", "Sample B has the higher temperature.", TEMPERATURE, True),
    ("A", "Sample B has the higher temperature.", TEMPERATURE, False),
    ("C", "Sample B has the higher temperature.", TEMPERATURE, False),
    ("B", "Based on the diagram, sample B has the higher temperature.", TEMPERATURE, True),
    ("B", "The particles in sample B move faster, so sample B has the higher temperature.", TEMPERATURE, True),
    ("B", "**Sample B** has the higher temperature because its particles move faster.", TEMPERATURE, True),
    ("B", r"\boxed{\text{Sample B has the higher temperature}}", TEMPERATURE, True),
    ("B", "It's sample B.", TEMPERATURE, True),
    ("A", "It's sample B.", TEMPERATURE, False),
    ("B", "The answer must be sample B.", TEMPERATURE, True),
    # Negated, doubted, asked, or named with another option: no choice made.
    ("B", "It is not sample B.", TEMPERATURE, False),
    ("B", "Sample B does not have the higher temperature.", TEMPERATURE, False),
    ("B", "Sample B isn't the hotter one.", TEMPERATURE, False),
    ("B", "Maybe sample B has the higher temperature.", TEMPERATURE, False),
    ("B", "Sample B has the higher temperature?", TEMPERATURE, False),
    ("B", "If sample B were heated, it would have the higher temperature.", TEMPERATURE, False),
    ("B", "Not sample A but sample B.", TEMPERATURE, False),  # two named: refused as it stands
    ("B", "Sample B has the higher temperature, not sample A.", TEMPERATURE, False),
    ("A", "Sample A and sample B are equal.", TEMPERATURE, False),
    ("B", "Sample A and sample B are equal.", TEMPERATURE, False),
    ("B", "Sample B has the same temperature as the other sample.", TEMPERATURE, False),
    # Named in passing or compared with, not chosen: "… warmer than sample B" is sample A.
    ("B", "In sample B the particles move faster.", TEMPERATURE, False),
    ("B", "Sample A is warmer than sample B.", TEMPERATURE, False),
    # A letter marked as the choice is read as one, and checked against its text.
    ("B", "A, because it is sample B.", TEMPERATURE, False),
    ("B", "A: sample B", TEMPERATURE, False),
    # An option inside a longer one is the longer one.
    ("B", "Iron oxide forms on the nail.", METALS, True),
    ("A", "Iron oxide forms on the nail.", METALS, False),
    ("A", "Iron rusts in water.", METALS, True),
    ("B", "Iron rusts in water.", METALS, False),
    ("A", "Iron and copper both conduct.", METALS, False),
]


@pytest.mark.parametrize("gold,text,options,expected", MATH_FORMS + SENTENCES)
def test_an_option_stated_another_way(gold: str, text: str, options: object, expected: bool) -> None:
    assert prmtree.grade(gold, text, options=options).correct is expected


@pytest.mark.parametrize("gold,answer,options,expected", [
    ("B", r"\dfrac{\sqrt{3}}{2}", TRIG, True),
    ("C", r"\dfrac{\sqrt{3}}{2}", TRIG, False),
    ("B", "(2,1)", POINTS, True),
    ("C", "(2,1)", POINTS, False),
    ("B", "$x \\geq 2$", RELATIONS, True),
    ("A", "$x \\geq 2$", RELATIONS, False),
    ("B", "Sample B has the higher temperature.", TEMPERATURE, True),
    ("B", "It is not sample B.", TEMPERATURE, False),
])
def test_a_final_answer_given_as_it_is(gold: str, answer: str, options: object, expected: bool) -> None:
    """``extract=False`` (the answer already read out) grades the same forms the same way."""
    assert prmtree.grade(gold, answer, options=options, extract=False).correct is expected


def test_the_sentence_reads_as_its_option_letter() -> None:
    """What the verdict shows as read is the option the sentence chose."""
    verdict = prmtree.grade("B", "Sample B has the higher temperature.", options=TEMPERATURE)
    assert (verdict.correct, verdict.extracted) == (True, "B")

