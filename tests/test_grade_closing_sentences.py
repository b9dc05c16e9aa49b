"""Sentences after a final answer that use the word "answer" without stating one, and answers
read wrongly around them, as models write them: each form below was graded wrongly once (a
right answer labelled wrong, or a wrong one labelled right), in silence.

Every form comes as a pair where it can: the answer stated is right, and the word or value
the wrong reading took (a judging word, a supposed value) is not.
"""

from __future__ import annotations

import pytest

import prmtree

BOX = "The area is $3 \\times 4 = 12$.\n\n$$\\boxed{12}$$\n\n"
DIAMETERS = ["6", "12", "18", "24"]

JUDGED = [
    # A closing sentence that judges the answer states none: it was read as the answer
    # ("reasonable", "correct"), and "correct" as a yes.
    ("12", BOX + "This answer is reasonable.", None, True),
    ("12", BOX + "The answer is correct.", None, True),
    ("12", BOX + "Therefore the answer is verified.", None, True),
    ("12", BOX + "This answer is consistent with the graph.", None, True),
    ("12", BOX + "I believe this answer is correct.", None, True),
    ("12", "The answer is 12.\n\nI believe my answer is correct and consistent with the figure.", None, True),
    ("left", "\\boxed{left}\n\nThis answer is right.", None, True),
    ("B", "The diameter is 12 cm.\n\n\\boxed{B}\n\nI believe this answer is correct.", DIAMETERS, True),
    ("yes", "There is no dog in the picture.\n\n\\boxed{No}\n\nI believe this answer is correct.", None, False),
    ("no", "There is no dog in the picture.\n\n\\boxed{No}\n\nI believe this answer is correct.", None, True),
    ("yes", "No. I believe this answer is correct.", None, False),
    ("yes", "No.\n\nI believe my answer is correct.", None, False),
    # ... but "right" may be the answer itself, where no answer stands before it.
    ("right", "The arrow points to the right. The answer is right.", None, True),
]

MINERVA = [
    # The lm-eval / Minerva closing line: its value, not the "correct" of "I hope it is correct".
    ("B", "The diameter is 12.\n\nFinal Answer: The final answer is B. I hope it is correct.", DIAMETERS, True),
    ("no", "Final Answer: The final answer is no. I hope it is correct.", None, True),
    ("yes", "Final Answer: The final answer is no. I hope it is correct.", None, False),
    ("yes", "Final Answer: The final answer is No. I hope it is correct.", None, False),
    ("dog", "Final Answer: The final answer is dog. I hope it is correct.", None, True),
    # Of several sentences on an Answer line, the first value stated stands (it was "red").
    ("no", "Answer: The answer is no. The bird is red.", None, True),
    ("red", "Answer: The answer is no. The bird is red.", None, False),
    ("yes", "Answer: The answer is yes. There are 2 dogs.", None, True),
]

SUPPOSED = [
    # A modal alone, a value in place of the denied one, and a correction count as they did.
    ("15", "Therefore, the answer would be 15.", None, True),
    ("12", "The answer is not 10 but 12.", None, True),
    ("7", "\\boxed{5}\n\nWait, the answer is not 5, it's 7.", None, True),
    ("12", "I think the answer is 12.", None, True),
    ("13", "\\boxed{12}\n\nI made a mistake: the answer is 13.", None, True),  # a correction, not a supposition
]

LEAD_WORD = [
    # A word between "the answer is" and its value: "therefore 12" was compared whole.
    ("12", "First, 5 + 7 = 12.\n\nThe answer is therefore 12.", None, True),
    ("13", "First, 5 + 7 = 12.\n\nThe answer is therefore 12.", None, False),
    ("12", "First, 5 + 7 = 12.\n\nThe answer is thus 12.", None, True),
    ("12", "First, 5 + 7 = 12.\n\nThe answer is indeed 12.", None, True),
    ("12", "First, 5 + 7 = 12.\n\nThe answer is just 12.", None, True),
    ("12", "First, 5 + 7 = 12.\n\nThe answer is clearly 12.", None, True),
    ("12", "First, 5 + 7 = 12.\n\nThe answer is still 12.", None, True),
    ("12", "The answer is therefore $12$.", None, True),
    ("12", "The answer is thus: 12", None, True),
    ("12", "\\boxed{11}\n\nThe answer is simply 12 cm.", None, True),
    ("B", "The diameter is 12.\n\nThe answer is therefore B.", DIAMETERS, True),
    ("C", "The diameter is 12.\n\nThe answer is therefore B.", DIAMETERS, False),
    ("yes", "There is a dog on the left.\n\nThe answer is clearly yes.", None, True),
    ("no", "There is a dog on the left.\n\nThe answer is clearly yes.", None, False),
    ("10", "The answer is clearly not 10.", None, False),
]

DOLLARS = [
    # An escaped dollar inside inline maths is the currency sign, not the span's end ("\\" was read).
    ("18", "So the total is $\\$18$.", None, True),
    ("18", "Therefore, Janet earns $\\$18$ per day.", None, True),
    ("1200", "Therefore, she paid $\\$1,200$ in total.", None, True),
    ("18", "The difference is $\\$20 - \\$2 = \\$18$.", None, True),
    ("20", "The difference is $\\$20 - \\$2 = \\$18$.", None, False),
    ("5", "The cost is $\\$5$ per item and $x = 5$.", None, True),
    # ... and a correction of a money answer is one, as of a number (a review: read as the first)
    ("12", "The answer is $\\$12$. Wait, I forgot the tax, so it is $\\$13$.", None, False),
    ("12", "The answer is \\$12. Wait, I forgot the tax, so it is \\$13.", None, False),  # (also before)
    ("12", "The answer is $\\$12$. Wait, actually it is $\\$12$.", None, True),
]

TWO_BOXES = [
    # A value box, then the box of the same option's letter: one choice, not two.
    ("B", "The diameter is $\\boxed{12}$, so the answer is $\\boxed{B}$.", DIAMETERS, True),
    ("B", "The diameter is $\\boxed{12}$ cm. Therefore, the correct option is $\\boxed{B}$.", DIAMETERS, True),
    ("C", "The diameter is $\\boxed{12}$, so the answer is $\\boxed{C}$.", DIAMETERS, False),
    ("B", "\\boxed{12} or \\boxed{C}", DIAMETERS, False),
]


NARROWED = [
    # Each was graded wrongly by too wide a first reading of suppositions, denials and option
    # sentences (most a wrong answer accepted; those rules were taken out): a denial of the
    # answer standing is a retraction, a change of mind after a choice is no choice.
    ("12", "\\boxed{12}\n\nWait, the answer is not 12.", None, False),
    ("12", "\\boxed{12}\n\nHmm, actually the answer is not 12.", None, False),
    ("12", "$\\boxed{12}$\n\nNo wait, the answer is not 12. Let me recount.", None, False),
    ("12", "The answer is 12.\n\nWait, the answer is not 12.", None, False),
    ("12", "The answer is 12. Hmm, no, the answer is not 12.", None, False),
    ("12", "\\boxed{12}\n\nNo. The answer is not 12; I forgot the corners.", None, False),
    ("12", "\\boxed{12}\n\nWait, the answer is not 12, since we must include the corners.", None, False),
    ("12", "The answer is 12.\n\nActually, the answer is not 12 since the corners count. Let me redo this.", None, False),
    ("12", "\\boxed{12}\n\nThe answer is not 12.", None, False),
    ("12", "Answer: The answer is not 10. It is 12.", None, True),  # (on an Answer line, the line's value)
    # ... a sentence that admits an error, or follows one, corrects the answer (no supposition) ...
    ("12", "\\boxed{12}\n\nWait, I made an error. If we recount, the answer is 14.", None, False),
    ("14", "\\boxed{12}\n\nWait, I made an error. If we recount, the answer is 14.", None, True),
    ("12", "The answer is 12.\n\nWait, I made an error. If we recount, the answer is 14.", None, False),
    ("12", "Answer: 12\n\nWait, I made an error. If we recount, the answer is 14.", None, False),
    ("12", "\\boxed{12}\n\nActually, I might have miscounted, so the answer is 14.", None, False),
    ("14", "\\boxed{12}\n\nActually, I might have miscounted, so the answer is 14.", None, True),
    ("12", "\\boxed{12}\n\nWait, I forgot the corners. If we include them, the answer is 14.", None, False),
    ("12", "\\boxed{12}\n\nWait, assuming the rows are 5 as shown, the answer is 15.", None, False),
    ("12", "\\boxed{12}\n\nWait. Assuming the figure is to scale, the answer is 14.", None, False),
    ("12", "\\boxed{12}\n\nWait, I had miscounted the rows, so the answer would be 15.", None, False),
    ("12", "\\boxed{12}\n\nCorrection: since there were 5 rows, the answer would be 15.", None, False),
    ("12", "\\boxed{12}\n\nLet me recheck (I might have slipped): the answer is 14.", None, False),
    ("12", "\\boxed{12}\n\nTime to think again: the answer is 14.", None, False),
    ("12", "\\boxed{12}\n\nOn reflection, if I count again, the answer is 14.", None, False),
    ("12", "\\boxed{12}\n\nWait, if x=2 we get 4; so the answer is 14.", None, False),
    ("12", "\\boxed{12}\n\nHmm, that's wrong. Otherwise said, the answer is 14.", None, False),
    ("12", "\\boxed{12}\n\nWait, that's wrong. Going back to think about it, the answer is 14.", None, False),
    # ... a conclusion with "if", "assuming" or a past tense is no supposition ...
    ("12", "There are 3 rows of 4. If we add them up, the answer is twelve.", None, True),
    ("12", "Assuming each row has 4, there are 3 rows, so the answer is twelve.", None, True),
    ("15", "There were 3 rows of 5, so the answer would be fifteen.", None, True),
    ("yes", "If the dog is on the left, the answer is yes. The dog is on the left.", None, True),
    ("12", "\\boxed{10}\n\nHmm, recount: if we include the corners, the answer is 12.", None, True),
    # ... a judging word with a value after it states that value ...
    ("10", "\\boxed{10}\n\nThe answer is correct: 12", None, False),
    # ... a capitalised or closing word after "the answer is" is the answer ...
    ("Still Life", "The painting is a still life. The answer is Still Life.", None, True),
    ("just", "Is the ruling just or unjust? The answer is just.", None, True),
    ("unjust", "Is the ruling just or unjust? The answer is just.", None, False),
    # ... and a bracketed choice whose sentence changes its mind or names another option is
    # not that choice.
    ("A", "The answer is (A) no, wait, it is C.", DIAMETERS, False),
    ("A", "The answer is (A) but actually it is C.", DIAMETERS, False),
    ("A", "So the answer is (A) 12 cm, which is option B.", DIAMETERS, False),
]


@pytest.mark.parametrize("gold, text, options, correct",
                         JUDGED + MINERVA + SUPPOSED + LEAD_WORD + DOLLARS + TWO_BOXES + NARROWED)
def test_closing_sentences_graded_as_the_answer_they_state(gold, text, options, correct):
    verdict = prmtree.grade(gold, text, options=options)
    assert verdict.correct is correct, verdict


@pytest.mark.parametrize("text, extracted", [
    (BOX + "This answer is reasonable.", "12"),
    ("Final Answer: The final answer is dog. I hope it is correct.", "dog"),
    ("The answer is therefore 12.", "12"),
])
def test_the_answer_read_is_the_one_stated(text, extracted):
    assert prmtree.grade("12", text).extracted == extracted


@pytest.mark.parametrize("text, reason", [
    ("The diameter is $\\boxed{12}$, so the answer is $\\boxed{C}$.", "hedged"),  # two options named
    ("The answer is clearly not 10.", "negated"),  # a denial alone states nothing
])
def test_what_states_no_one_answer_is_refused(text, reason):
    assert prmtree.grade("10", text, options=DIAMETERS if "boxed" in text else None).reason == reason
