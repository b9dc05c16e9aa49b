"""``prmtree.grade``: one answer graded as a run grades it. Cases written here, one or more
per extraction rule, wrong-but-close ones beside the right ones; the same texts through a
whole ``prmtree.run`` give the same verdicts; and ``prmtree grade`` on the command line."""

from __future__ import annotations

import json

import pytest

import prmtree
from prmtree.engine.output import read_table
from prmtree.engine.records import Completion, GenerationRequest, Problem
from prmtree.policies import register_policy
from tests.conftest import cli

OPTS = {"A": "12 apples", "B": "15 apples", "C": "80", "D": "b"}

# (gold, text, options, answer_type, expected correct, expected extracted or None, reason or None)
CASES = [
    # several boxes: one set answer when the gold has several parts ...
    ("(1, 3), (4, 5)", r"The pairs are $\boxed{(1, 3)}$ and $\boxed{(4, 5)}$.", None, "auto", True, "(1, 3), (4, 5)", None),
    ("(1, 3), (4, 5)", r"The pairs are $\boxed{(1, 3)}$ and $\boxed{(4, 6)}$.", None, "auto", False, "(1, 3), (4, 6)", None),
    # ... the last box otherwise (working values boxed on the way)
    ("17", r"First $\boxed{8}$, then $8 + 9 = \boxed{17}$.", None, "auto", True, "17", None),
    ("8", r"First $\boxed{8}$, then $8 + 9 = \boxed{17}$.", None, "auto", False, "17", None),
    # a final-answer phrase after boxed working wins
    ("4210", r"Step: $\boxed{200}$, then $\boxed{10}$. Final Answer: The final answer is $4,210$. I hope it is correct.",
     None, "auto", True, "4,210", None),
    ("10", r"Step: $\boxed{200}$, then $\boxed{10}$. Final Answer: The final answer is $4,210$.", None, "auto",
     False, "4,210", None),
    # prose, nothing boxed: the phrase, reduced to the value it states
    ("34", "We check every case.\nSo the largest $k$ is 34.", None, "auto", True, "34", None),
    ("35", "We check every case.\nSo the largest $k$ is 34.", None, "auto", False, "34", None),
    ("7", "Adding them up, the answer is 7. Let me know if you need more.", None, "auto", True, "7", None),
    ("x \\geq 2", "Solving the inequality.\nTherefore $x \\geq 2$ is the solution set.", None, "auto", True,
     "x \\geq 2", None),
    ("0.4", "Two of the five marbles are red.\nThe share of red marbles is 0.4, which means two in five.", None, "auto",
     True, "0.4", None),
    ("0.5", "Two of the five marbles are red.\nThe share of red marbles is 0.4, which means two in five.", None, "auto",
     False, "0.4", None),
    ("25%", "Compare the two prices.\nTherefore, the price rises by 25%.", None, "auto", True, "25%", None),
    # a choice letter inside a sentence, with its option text
    ("C", "Counting the birds, the total is (C) 80.", OPTS, "choice", True, "(C) 80", None),
    ("B", "Counting the birds, the total is (C) 80.", OPTS, "choice", False, "(C) 80", None),
    ("A", "I counted twelve, so option A fits.", OPTS, "choice", True, "A", None),
    ("C", "Looking again, (A) is too small and (B) too big, so the answer is (C).", OPTS, "choice", True, "(C)",
     None),
    # hedges are refused, whatever they name
    ("B", "B or C", OPTS, "choice", False, "B or C", "hedged"),
    ("B", "The answer is either B or D.", OPTS, "choice", False, None, "hedged"),
    ("12", "It is 12 or 13.", None, "auto", False, None, "hedged"),
    ("12", "I am not sure, maybe 12.", None, "auto", False, None, "hedged"),
    ("2", "Solving the square: so x = 2 or x = -2.", None, "auto", False, "2 or x = -2", "hedged"),
    ("-2", "Solving the square: so x = 2 or x = -2.", None, "auto", False, "2 or x = -2", "hedged"),
    # a yes/no question answered by a sentence that opens with its verdict (its "is" gives
    # the reason: "smaller" is not the answer) ...
    ("no", "Compare the bars.\nAnswer: No, it is smaller.", None, "auto", True, "No, it is smaller", None),
    ("yes", "Compare the bars.\nAnswer: No, it is smaller.", None, "auto", False, "No, it is smaller", None),
    ("no", "The left bar is 3 and the right is 4.\nSo the answer is no, since x is 4.", None, "auto", True, None, None),
    ("yes", "Yes, because x = 12 > 10.", None, "auto", True, None, None),
    ("no", "Yes, because x = 12 > 10.", None, "auto", False, None, None),
    ("yes", "We compare them. Therefore, yes, it is greater.", None, "auto", True, None, None),
    ("no", "Checking each label.\nNo, it is not.", None, "auto", True, None, None),
    # ... while a number question keeps the value after "is"
    ("4", "Is it 5? No, it is 4.", None, "auto", True, "4", None),
    # a hyphenated word or "No." before a number is no verdict
    ("no", "Therefore, no-one can win the game, so the claim is true: yes.", None, "auto", False, None, None),
    ("no", "Checking the primes.\nAnswer: No. 7 is the only such prime number.", None, "auto", False, None, None),
    ("no", "No - it is smaller.", None, "auto", True, None, None),
    # two values offered whatever follows them are a hedge; a restatement is not
    ("2", "Therefore, x = 2 or x = -2 are the solutions.", None, "auto", False, None, "hedged"),
    ("2", "Therefore $x = 2$ or $x = -2$.", None, "auto", False, None, "hedged"),
    ("12", "Therefore, the total is 12 or 13 apples in all.", None, "auto", False, None, "hedged"),
    ("4", "So x = 4, or equivalently 2+2.", None, "auto", True, "4", None),
    # several choices named for a one-choice gold: right by luck, refused (whichever comes first)
    ("B", "B and C", None, "auto", False, "B and C", "hedged"),
    ("A", "The answer is A and B.", OPTS, "choice", False, None, "hedged"),
    ("B", "A, B", None, "auto", False, "A, B", "hedged"),
    ("A", "(A) and (B)", OPTS, "choice", False, None, "hedged"),
    ("A", "A) 12 apples and B) 15 apples", OPTS, "choice", False, None, "hedged"),
    ("A", "A. No wait, B.", OPTS, "choice", False, None, "hedged"),
    ("B", "B C", None, "auto", False, None, "hedged"),
    ("B", r"\boxed{A, B}", None, "auto", False, "A, B", "hedged"),
    ("B", "The answer is (B), not (A).", OPTS, "choice", True, None, None),  # one choice, one denied
    ("B", "B) 15 apples", OPTS, "choice", True, None, None),
    # a sentence with several "is": the last value stated ("which is" restates)
    ("28.27", "The radius is 3, so the area is 28.27.", None, "auto", True, "28.27", None),
    ("3", "The radius is 3, so the area is 28.27.", None, "auto", False, "28.27", None),
    ("120", "Each box is 12 kg, so the total is 120 kg.", None, "auto", True, None, None),
    ("12", "Each box is 12 kg, so the total is 120 kg.", None, "auto", False, None, None),
    ("9", "The area is 9, which is 3 squared.", None, "auto", True, "9", None),
    # a reasoning model's answer comes after </think>; a trace never closed has none
    ("7", "<think>\nSo x = \\boxed{5}.\n</think>\n\n$x = 7$", None, "auto", True, "7", None),
    ("5", "<think>\nSo x = \\boxed{5}.\n</think>\n\n$x = 7$", None, "auto", False, "7", None),
    ("C", "<think>\nMaybe \\boxed{B}. Hmm, no, C fits better.\n</think>\n\nC", OPTS, "choice", True, None, None),
    ("B", "<think>\nMaybe \\boxed{B}. Hmm, no, C fits better.\n</think>\n\nC", OPTS, "choice", False, None, None),
    ("5", "<think>\n\\boxed{5} wait maybe 7", None, "auto", False, None, "unfinished reasoning"),
    ("5", "<think>so the answer is 5.</think>", None, "auto", True, None, None),  # nothing after: the trace's
    # a yes/no verdict taken back is no verdict; a "no" inside the reason is not one
    ("yes", "Yes. No.", None, "auto", False, None, None),
    ("no", "No. Yes.", None, "auto", False, None, None),
    ("yes", "Yes, but actually no.", None, "auto", False, None, None),
    ("yes", "Yes; no wait, it is no.", None, "auto", False, None, None),
    ("yes", "Yes, there is no dog in the picture.", None, "auto", True, None, None),
    # a value the sentence denies is no answer; a denied value beside a stated one is not
    ("5", "It can't be 5.", None, "auto", False, None, "negated"),
    ("5", "The count isn't 5.", None, "auto", False, None, "negated"),
    ("5", "The image does not show 5 apples.", None, "auto", False, None, "negated"),
    ("5", "So the answer is definitely not 5 apples.", None, "auto", False, None, "negated"),
    ("7", "Since 3 is not a factor, the answer is 7.", None, "auto", True, "7", None),
    # a number that opens an expression is not that number
    ("4", "4 \\pi \\text{ cm}^2", None, "auto", False, None, None),
    ("4", "The area is 4 \\pi square cm.", None, "auto", False, None, None),
    ("4", "So the area is 4 \\sqrt 2 square units.", None, "auto", False, None, None),
    ("2", "Therefore the answer is 2 times the radius.", None, "auto", False, None, None),
    ("12", "There are 12 apples in the basket.", None, "auto", True, None, None),
    # a decimal gold is compared at its stated precision, as MathVista rounds to it
    ("0.21", "0.214", None, "auto", True, None, None),
    ("0.8", "0.83", None, "auto", True, None, None),
    ("0.21", "0.2", None, "auto", False, None, None),
    ("0.5", "\\frac{1}{2}", None, "auto", True, None, None),
    # what the rules above must not catch (a prober's false rejects of right answers):
    # an option's own text naming letters, roman numerals, a unit in brackets or LaTeX, a count
    # of times, a negation in the subject or an aside, a value in the claim's reason
    ("D", "(D) Both A and B", {"A": "Mitosis", "B": "Meiosis", "C": "Binary fission", "D": "Both A and B"},
     "choice", True, None, None),
    ("A", "(A) Vitamin A and C", ["Vitamin A and C", "Vitamin D", "Iron", "Zinc"], "choice", True, None, None),
    ("C", "C. I and II", None, "choice", True, None, None),
    ("B", "B. Hepatitis A and C", None, "choice", True, None, None),
    ("12", "Therefore, the perimeter is 12 (cm).", None, "auto", True, None, None),
    ("30", "Therefore, the angle is 30^\\circ, which is acute.", None, "auto", True, None, None),
    ("12", "The answer is 12 \\text{ cm}, as shown in the figure.", None, "auto", True, None, None),
    ("3", "He visited the museum 3 times.", None, "auto", True, None, None),
    ("5", "The number of cubes that are not red is 5.", None, "auto", True, None, None),
    ("5", "Answer: 5 (not including the teacher)", None, "auto", True, None, None),
    ("B", "Answer: B (not 4)", OPTS, "choice", True, None, None),
    ("3", "Therefore, the remainder is 3, since 23 = 4*5 + 3.", None, "auto", True, "3", None),
    ("23", "Therefore, the remainder is 7, since 23 = 4*5 + 3.", None, "auto", False, "7", None),
    ("5", "Therefore, x = 5, since 2x = 10.", None, "auto", True, "5", None),
    ("10", "Therefore, x = 5, since 2x = 10.", None, "auto", False, "5", None),
    ("3", "Thus, y = 3 when x = 2.", None, "auto", True, None, None),
    ("7", "Hence AB = 7, whereas BC = 5.", None, "auto", True, None, None),
    ("7", "Thus the length of side AB is 7 cm (given BC is 5 cm).", None, "auto", True, None, None),
    ("72", "Therefore the angle ABC = 72, and angle ACB = 36.", None, "auto", True, None, None),
    ("9", "Since the side is 3, the area is 9.", None, "auto", True, "9", None),
    # reasoning models: a box closing the trace with nothing after it; <think> only mentioned;
    # </think > spaced; R1-style <answer> tags
    ("12", "<think>\n3*4 = 12 so \\boxed{12}\n</think>\n", None, "auto", True, None, None),
    ("12", "<think>\n...\n</think >\nThe answer is 12.", None, "auto", True, None, None),
    ("12", "<think>3*4=12</think><answer>12</answer>", None, "auto", True, "12", None),
    ("13", "<think>3*4=12</think><answer>12</answer>", None, "auto", False, "12", None),
    ("B", "<think>between B and C</think>\n<answer>B</answer>", OPTS, "choice", True, None, None),
    # a reversal is the last clause; more choices named in other words
    ("yes", "Yes, the man is holding an umbrella; no, he is not wet.", None, "auto", True, None, None),
    ("yes", "Yes, no, yes.", None, "auto", True, None, None),
    ("yes", "Yes (no).", None, "auto", False, None, None),
    ("B", "B and also C", None, "auto", False, None, "hedged"),
    ("B", "(B)(C)", None, "auto", False, None, "hedged"),
    ("B", "B. Correction: C.", OPTS, "choice", False, None, "hedged"),
    # a third round: chains end at their last value; "we get"/"yields" conclude; a reason after
    # the value; markdown around it; an aside or a ", not X" after it; a quoted word is no reversal
    ("12", "Therefore, f(2) = 4 + 8 = 12.", None, "auto", True, "12", None),
    ("4", "Therefore, f(2) = 4 + 8 = 12.", None, "auto", False, "12", None),
    ("9", "The area of the square whose side is 3 is 9.", None, "auto", True, "9", None),
    ("5", "The value of x when y = 2 is 5.", None, "auto", True, "5", None),
    ("5", "Since 2x = 10 we get x = 5.", None, "auto", True, "5", None),
    ("7", "Substituting x = 2 yields y = 7.", None, "auto", True, "7", None),
    ("9", "Where the side = 3, the area = 9.", None, "auto", True, "9", None),
    ("4", "The answer is 4, because x = 2.", None, "auto", True, "4", None),
    ("2", "The answer is 4, because x = 2.", None, "auto", False, "4", None),
    ("12", "**12**", None, "auto", True, "12", None),
    ("5", "The number of cubes is **5**.", None, "auto", True, "5", None),
    ("12", "The answer is 12, not 13.", None, "auto", True, "12", None),
    ("13", "The answer is 12, not 13.", None, "auto", False, "12", None),
    ("3", "The answer is 3 (three).", None, "auto", True, "3", None),
    ("3", "The factored form is 3 (x + 2).", None, "auto", False, None, None),
    ("3", "The speed of light is 3 times 10^8 m/s.", None, "auto", False, None, None),
    ("no", "No, the sign says: Yes", None, "auto", True, None, None),
    ("A", "A. 8, B. 12", ["8", "12", "16", "20"], "choice", False, None, "hedged"),
    ("A", "A... wait, no, C.", None, "choice", False, None, "hedged"),
    ("12", "<think>3*4=12</think><answer>12</answer><answer></answer>", None, "auto", True, "12", None),
    ("yes", "<think>So the answer is yes.</think>", None, "auto", True, None, None),
    # a fourth round (old verdicts the third round had broken): separate assignments are no chain,
    # "giving"/"then" conclude nothing, an explanation ruling options out names one, a product
    # keeps its bracket, a negated verb is not a denied value, a "no" about another thing, a
    # special token after </think>, an empty <answer> beside a stated one; hedged asides stay
    ("2", "a = 2, x = 3.", None, "auto", True, "2", None),
    ("5", "The value of k is 5, giving y = 10.", None, "auto", True, "5", None),
    ("3", "x = 3 and then y = x + 1 = 4.", None, "auto", True, "3", None),
    ("B", "The correct option is B. Options A, C, D do not fit.", OPTS, "choice", True, None, None),
    ("4(\\sqrt{2}+1)", "the answer is 4(\\sqrt{2}+1).", None, "auto", True, None, None),
    ("3", "3(2+1)", None, "auto", False, None, None),
    ("2", "2 (\\sqrt{2})", None, "auto", False, None, None),
    ("10", "the students who did not pass number 10.", None, "auto", True, None, None),
    ("yes", "Yes, the left one is red; the right one, no.", None, "auto", True, None, None),
    ("5", "<think>\\boxed{5}</think><|im_end|>", None, "auto", True, "5", None),
    ("5", "The answer is 5. <answer></answer>", None, "auto", True, "5", None),
    ("3", "there are 3 (2 adults and 1 child) people.", None, "auto", True, None, None),
    ("5", "5 (or 6)", None, "auto", False, None, None),
    ("5", "5, not sure", None, "auto", False, None, "hedged"),
    # a choice in a formatting command (AMC-style boxes), a lower-case letter closed by a bracket
    ("B", "$\\boxed{\\textbf{(B)}\\ 12}$", None, "choice", True, None, None),
    ("C", "$\\boxed{\\textbf{(B)}\\ 12}$", None, "choice", False, None, None),
    ("B", "b) 15 apples", OPTS, "choice", True, None, None),
    ("A", "b) 15 apples", OPTS, "choice", False, None, None),
    # a value whose rounding is said aloud is that value
    ("5", "The answer is about 5.", None, "auto", True, "about 5", None),
    ("5", "approximately 5", None, "auto", True, None, None),
    ("12", "about 12 cm", None, "auto", True, None, None),
    ("5", "approximately 4.9", None, "auto", False, None, None),
    # a fifth round: an answer taken back in the last sentence is two answers; a value stated
    # after a denied one; "is therefore"; a reason that opens the sentence without a comma; a
    # count in words with its noun
    ("12", "The answer is 12. Wait, actually 13.", None, "auto", False, "12", "hedged"),
    ("13", "The answer is 12. Wait, actually 13.", None, "auto", False, None, "hedged"),
    ("12", "\\boxed{12}. Wait, actually 13.", None, "auto", False, None, "hedged"),
    ("12", "Answer: 12\nWait, no, it's 13.", None, "auto", False, None, "hedged"),
    ("12", "Therefore, the total is 12. Actually, it should be 13.", None, "auto", False, None, "hedged"),
    ("B", "The answer is B. Wait, actually C.", OPTS, "choice", False, None, "hedged"),
    ("12", "The answer is 12. Wait, let me double-check: 3 x 4 = 12. Yes.", None, "auto", True, "12", None),
    ("12", "The answer is 12. Actually, 3 of them are red.", None, "auto", True, "12", None),
    ("12", "The answer is 12. Actually, 12.0.", None, "auto", True, "12", None),
    ("13", "The answer is 12.\n\nWait, actually, the answer is 13.", None, "auto", False, None, "hedged"),
    ("13", "Step 1: 3*4 = 12.\nActually, 13.", None, "auto", True, "13", None),  # no answer before it
    ("12", "Step 1: 3*4 = 12.\nActually, 13.", None, "auto", False, "13", None),
    ("13", "Wait, actually 13.", None, "auto", True, "13", None),
    ("13", "3*4 = 12.\nActually, 13.", None, "auto", True, "13", None),  # a working value is no answer
    ("13", "12. Wait, actually 13.", None, "auto", False, None, "hedged"),  # a bare value is
    ("B", "The answer is (B) 12. Wait, actually B.", OPTS, "choice", True, None, None),
    ("5", "The answer isn't 5; it's 7", None, "auto", False, "7", None),
    ("7", "The answer isn't 5; it's 7", None, "auto", True, "7", None),
    ("7", "There are not 5 but 7 apples.", None, "auto", True, "7 apples", None),
    ("5", "It cannot be 5.", None, "auto", False, None, "negated"),
    ("18", "Each side is 3; the perimeter is therefore 18.", None, "auto", True, "18", None),
    ("3", "Each side is 3; the perimeter is therefore 18.", None, "auto", False, "18", None),
    ("5", "Because the side is 3 the hypotenuse is 5.", None, "auto", True, "5", None),
    ("two", "two dogs", None, "auto", True, None, None),
    ("two", "three dogs", None, "auto", False, None, None),
    ("two", "two thousand", None, "auto", False, None, None),
    # a prober's round on the fifth: a last sentence that is only a pause, a check of the
    # answer, or the same answer written another way takes nothing back; a denial's value
    # replaced only with a connector ("it's", "but"); a count is not a fraction or a percent
    ("12", "Therefore, the answer is 12.\n\nWait", None, "auto", True, "12", None),
    ("12", "\\boxed{12}\n\nSorry!", None, "auto", True, "12", None),
    ("12", "So the answer is 12.\n\nHope this helps!", None, "auto", True, "12", None),
    ("12", "The answer is 12. Wait, 3 \\times 4 = 12.", None, "auto", True, "12", None),
    ("8", "The answer is 8. Wait, 2 cubed is 8.", None, "auto", True, "8", None),
    ("12", "So the answer is 12.\n\nWait, actually 3 times 4 is 12, so yes.", None, "auto", True, "12", None),
    ("0.5", "The answer is 0.5. Wait, actually 1/2.", None, "auto", True, None, None),
    ("-3", "The answer is -3. Wait, actually -3.0.", None, "auto", True, None, None),
    ("1.5", "The answer is $\\frac{3}{2}$. Actually, 1.5.", None, "auto", True, None, None),
    ("C", "The answer is C. Actually, 12.", ["10", "11", "12", "13"], "choice", True, None, None),
    ("C", "The answer is (C) 12. Wait, 12.", ["10", "11", "12", "13"], "choice", True, None, None),
    ("B", "The answer is B.\n\nSorry, I", None, "choice", True, None, None),
    ("12", "The answer is 12. Hmm, no, it's 13.", None, "auto", False, None, "hedged"),
    ("12", "The answer is 12. Wait, that's wrong; it's 13.", None, "auto", False, None, "hedged"),
    ("12", "The answer is 12. Wait, actually x = 13.", None, "auto", False, None, "hedged"),
    ("12", "The answer is 12. Actually, $13$ is correct.", None, "auto", False, None, "hedged"),
    ("12", "The answer is 12. Wait, actually 13.<|im_end|>", None, "auto", False, None, "hedged"),
    ("yes", "The answer is yes. Wait, actually no.", None, "auto", False, None, "hedged"),
    ("8", "The answer is 12, not 8: 8 only counts the visible faces.", None, "auto", False, "12", None),
    ("12", "The answer is 12, not 8: 8 only counts the visible faces.", None, "auto", True, "12", None),
    ("2", "The area is not 4 — 2 is the side.", None, "auto", False, None, None),
    ("3", "So the total isn't 12 - 3.", None, "auto", False, None, None),
    ("5", "Since the denominator cannot be 0, 2 - x ≠ 0 so x = 5.", None, "auto", True, None, None),
    ("12", "As shown in the figure the perimeter is 12 since each side is 3 cm.", None, "auto", True, None, None),
    ("two", "two thirds", None, "auto", False, None, None),
    ("two", "2 more than five", None, "auto", False, None, None),
    ("three", "3 percent", None, "auto", False, None, None),
    ("two", "-2", None, "auto", False, None, None),
    # a second prober's round: only the last sentence retracts (an earlier "Hmm, 7 days." is
    # working), answers not plainly comparable are no change, end-of-text tokens and closers
    # are skipped, a value "instead" must end its clause, a count is not a scale or a fraction
    ("7", "Hmm, 7 days. The answer is 12 days.", None, "auto", False, None, None),
    ("12", "Hmm, 7 days. The answer is 12 days.", None, "auto", True, None, None),
    ("8", "Hmm, 8. Let me recompute: $\\boxed{12}$", None, "auto", False, "12", None),
    ("A", "Hmm, A. No. The answer is B.", ["3", "5", "7"], "choice", False, None, None),
    ("12", "Wait, let me verify. The answer is 12. Wait, actually 13.", None, "auto", False, None, "hedged"),
    ("12", "The answer is 12. Wait, actually 13." + "<|endoftext|>" * 25, None, "auto", False, None, "hedged"),
    ("12", "The answer is 12. Wait, actually 13.<end_of_turn>", None, "auto", False, None, "hedged"),
    ("12", "The answer is 12. Wait, actually $x = 13$.", None, "auto", False, None, "hedged"),
    ("B", "The answer is B. Wait, actually option C.", ["3", "5", "7"], "choice", False, None, "hedged"),
    ("12", "The answer is 12. Actually no it's 13.", None, "auto", False, None, "hedged"),
    ("12", "The answer is 12. Or 13.", None, "auto", False, None, "hedged"),
    ("12", "The answer is x=12. Wait, actually 12.", None, "auto", True, None, None),
    ("1000", "The answer is 10^3. Actually, 1000.", None, "auto", True, None, None),
    ("3.5", "The answer is 3,5. Actually, 3.5.", None, "auto", True, None, None),
    ("12", "The answer is 12 cm. Actually, 120 mm.", None, "auto", True, None, None),
    ("7", "It isn't 5, but 7 is also wrong.", None, "auto", False, None, None),
    ("7", "The answer isn't 5; that's 7 less than 12.", None, "auto", False, None, None),
    ("7", "The answer is not 5 but 7 - 2 = 5.", None, "auto", False, None, None),
    ("two", "2 million", None, "auto", False, None, None),
    ("two", "two twelfths", None, "auto", False, None, None),
    ("two", "2 greater", None, "auto", False, None, None),
    ("two", "two children", None, "auto", True, None, None),
    ("two", "There are two dogs.\n\nHope this helps!", None, "auto", True, None, None),
    ("12", "The answer is 12.\n\nNote: the figure has 4 rows.", None, "auto", True, "12", None),
    # a third prober's round: a solution is read from its last step first (a working
    # "Therefore, x = 3." before it is no answer); an answer named before a last step that
    # corrects it is two answers; a closer is a pleasantry or a rule, never "***12***"
    ("3", "Therefore, x = 3.\n\nThe count is 12.", None, "auto", False, "12", None),
    ("12", "There are 3 rows.\n\nTherefore, x = 3.\n\nEach row has 4 apples.\n\n12", None, "auto", True, "12", None),
    ("24", "Hence s = 4.\n\nThe perimeter is $6s = 24$.", None, "auto", True, None, None),
    ("6", "1. The triangle has base 3.\n2. So its height is 4.\n3. Area = 1/2 * 3 * 4 = 6.", None, "auto", True, None, None),
    ("6", "### Step 1\nSo the base is 3.\n\n### Step 2\nArea is 6", None, "auto", True, None, None),
    ("no", "Therefore, the red one is bigger.\n\nNo.", None, "auto", True, None, None),
    ("C", "So B is wrong.\n\nC. quadrilateral", ["triangle", "square", "quadrilateral"], "choice", True, None, None),
    ("12", "Answer: 12\n\nWait, I made an error. The correct count is 13.", None, "auto", False, None, "hedged"),
    ("12", "The answer is 12.\n\nLet me recount. There are actually 13 apples in total.", None, "auto", False, None, "hedged"),
    ("12", "The answer is 12.\n\nWait, actually it's 13.\n\nHope this helps!", None, "auto", False, None, "hedged"),
    ("12", "The answer is 12.\n\nWait, I think it's 13.", None, "auto", False, None, "hedged"),
    ("12", "Therefore, the total is 12.\n\nHowever, I missed one apple. The total is 13.", None, "auto", False, "13", None),
    ("12", "The answer is 12.\n\nWait, let me double-check: 3 × 4 = 12.", None, "auto", True, "12", None),
    ("12", "There are 3 rows of 4 apples.\n\n***12***", None, "auto", True, "12", None),
    ("12", "There are 3 rows of 4 apples.\n\nThanks to the grid layout, counting gives 12 apples.", None, "auto", True, None, None),
    ("three", "The answer is 3 factorial.", None, "auto", False, None, None),
    ("three", "3!", None, "auto", False, None, None),
    # a fourth prober's round: a check, a note or an explanation after the answer is not the
    # answer; an answer named outright stands against a later conclusion; a correction of a
    # choice or a yes/no counts; a supposition corrects nothing; emoji and pleasantries close
    ("5", "Therefore, the area is 15.\n\nCheck: 15 / 3 = 5.", None, "auto", False, "15", None),
    ("5", "Therefore $x = 10$.\n\nCheck:\n$$\n10 / 2 = 5\n$$", None, "auto", False, None, None),
    ("4", "**Answer:** 12\n\n**Explanation:**\n1. There are 3 rows.\n2. Each row has 4 apples.\n3. Thus each row is 4.",
     None, "auto", False, "12", None),
    ("12", "Answer: 12\n\n1. There are 3 rows.\n2. Thus each row is 4.", None, "auto", True, "12", None),
    ("7", "So there are 42 squares.\n\nIn total we counted 6 rows and 7 columns.", None, "auto", False, None, None),
    ("no", "The answer is no.\n\nWait, looking again, yes, there is a cat behind the sofa.", None, "auto", False, None,
     "hedged"),
    ("B", "The answer is B.\n\nWait, looking again, I think it is C.", ["3", "4", "5", "6"], "choice", False, None,
     "hedged"),
    ("12", "Therefore, the answer is 12.\n\nI double-checked by counting the 3 rows again.", None, "auto", True, "12",
     None),  # a check confirms (so "Double-checking: the grid has 13 squares." after 12 is read as 12 too)
    ("13", "The answer is 12.\n\nWait, I made an error, so the answer is 13.", None, "auto", False, None, "hedged"),
    ("42", "Therefore, there are 42 squares.\n\n😊", None, "auto", True, None, None),
    ("42", "Therefore, there are 42 squares.\n\nLet me know if you have any other questions about the 6x7 grid.",
     None, "auto", True, None, None),
    ("12", "So there are 12 cookies.\n\nNote: This assumes each of the 3 plates holds 4 cookies.", None, "auto", True,
     None, None),
    ("4", "The answer is 4.\n\nHowever, note that if the hidden face were counted it would be 5.", None, "auto", True,
     None, None),
    # a fifth prober's round (a sweep of 1,200 outputs): a comment after the answer corrects
    # nothing ("However, keep in mind …", "The error bars …", "Actually, 3 baskets of 4");
    # a check or note that is the only statement is the answer; a labelled value is its value
    ("12", "The answer is 12.\n\nHowever, keep in mind that 3 of the apples are green.", None, "auto", True, "12", None),
    ("12", "**Answer:** 12\n\nThe error bars indicate a range of about 2 units.", None, "auto", True, "12", None),
    ("12", "Answer: 12\n\nActually, the image contains 3 baskets, each with 4 apples.", None, "auto", True, "12", None),
    ("12", "The answer is 12.\n\nA common mistake is to count the 2 shadows as objects.", None, "auto", True, "12", None),
    ("12", "Let me look at the figure.\n\nExplanation: the figure has 3 rows of 4 squares, so there are 12 squares.",
     None, "auto", True, None, None),
    ("7", "Step-by-step reasoning:\n1. 4 cats\n2. 3 dogs\n\nNote: there are 7 animals in total.", None, "auto", True,
     None, None),
    ("3", "Step-by-step reasoning:\n1. 4 cats\n2. 3 dogs\n\nNote: there are 7 animals in total.", None, "auto", False,
     None, None),
    ("12", "Let me count.\n\n1. First row: 4\n2. Second row: 4\n3. Third row: 4\n\nTotal: 12", None, "auto", True, "12",
     None),
    # a sixth prober's sweep: a last paragraph overrides a conclusion before it only when it
    # states one value and no aside (a supposition, an addition, a note)
    ("6", "So, the total number of dogs is 9.\n\nIf you exclude the 3 broken ones, there would be 6.", None, "auto", False,
     "9", None),
    ("8", "Therefore, there are 24 cups.\n\nThere are 8 rows, and each row contains 3 cups.", None, "auto", False, None,
     None),
    ("4", "13\n\nThere are 4 dogs on the table and 9 on the floor.\n\nHope this helps!", None, "auto", False, "13", None),
    ("72", "So, the total number of cups is 72.\n\nThere are also 2 people nearby, but they were not counted.", None,
     "auto", True, None, None),
    ("20", "Therefore, there are 20 pencils in total.\n\nI hope this explanation is clear.", None, "auto", True, None,
     None),
    ("6", "So the base is 3.\n\nThe area is 6 (half of 12).", None, "auto", True, None, None),
    # a seventh prober's sweep: a last sentence that ends on its value states it, asides or not
    ("9", "Thus, each box has 9 apples.\n\nThe total number of apples, excluding the 5 rotten ones, is 85.", None,
     "auto", False, None, None),
    ("90", "So each row has 9 seats.\n\nWith 10 rows, the hall has 90 seats.", None, "auto", True, None, None),
    ("20", "Therefore, the width is 5 cm.\n\nThe area of the rectangle is 20 cm², which is also the number of tiles.",
     None, "auto", True, None, None),
    ("12", "So the total is 24.\n\nThat is 12 from Monday plus 12 from Tuesday.", None, "auto", False, None, None),
    # an eighth prober's check: an aside that ends on a value is still an aside
    ("12", "Therefore, there are 7 apples in total.\n\nFor comparison, last year the total was 12.", None, "auto", False,
     None, None),
    ("49", "Therefore, there are 7 apples in total.\n\nAlso, the number of boys is 49.", None, "auto", False, None, None),
    ("43", "Therefore, there are 7 apples in total.\n\nEach of the 72 rows has 43 apples.", None, "auto", False, None,
     None),
    ("64", "Therefore, there are 7 apples in total.\n\nEach bag has 30 marbles, and there are 64 bags.", None, "auto",
     False, None, None),
    # a ratio or a time is one value: its colon labels nothing ("Total: 12" does)
    ("3:2", "The ratio is 3:2.", None, "auto", True, "3:2", None),
    ("2", "The ratio is 3:2.", None, "auto", False, "3:2", None),
    ("10:30", "The meeting starts at 10:30.", None, "auto", True, "10:30", None),
    ("3:2", "Ratio of boys to girls: 3:2", None, "auto", True, "3:2", None),
    ("12", "Step 2: 12", None, "auto", True, "12", None),
    # an answer named before "is the answer"
    ("12", "Counting the apples: 5 red and 7 green.\n\n12 is the answer.", None, "auto", True, "12", None),
    ("12", "5 + 7 = 12. So 12 is the final answer.", None, "auto", True, "12", None),
    ("B", "Looking at the options, (B) is the correct answer.", None, "auto", True, None, None),
    ("B", "Option B is the correct answer.", None, "auto", True, "B", None),
    ("12", "Is 12 the answer? Yes, 12 is the answer.", None, "auto", True, "12", None),
    ("12", "The answer is 7? No: 12 is the answer.", None, "auto", True, "12", None),
    ("7", "Some say 12 is the answer, but the answer is 7.", None, "auto", True, "7", None),
    ("1000", "Adding up, 1,000 is the answer.", None, "auto", True, "1,000", None),
    ("12", "The sum of 5 and 7 is the answer, which is 12.", None, "auto", True, "12", None),
    ("12", "12 is the answer. Wait, actually 13.", None, "auto", False, "12", "hedged"),
    # one value written twice is one answer, read in the gold's form; two values hedge
    ("75%", "The share is 0.75, or 75%.", None, "auto", True, "75%", None),
    ("0.75", "The share is 0.75, or 75%.", None, "auto", True, "0.75", None),
    ("1/2", "The probability is 1/2, or 0.5.", None, "auto", True, "1/2", None),
    ("4", "The answer is 4, or equivalently 2+2.", None, "auto", True, "4", None),
    ("12", "The answer is 12 (or 12.0).", None, "auto", True, "12", None),
    ("12", "The answer is 12, or 13.", None, "auto", False, "12, or 13", "hedged"),
    ("13", "The answer is 12, or 13.", None, "auto", False, "12, or 13", "hedged"),
    # a prober's sweep of the three rules above: "X is the answer" only as a plain last sentence, a
    # ratio or time against a number is no match, retractions of percentages and ratios hedge
    ('12', 'Hmm, 13 is the answer? No, we missed one. The count is 12.', None, "auto", True, '12', None),
    ('13', 'Hmm, 13 is the answer? No, we missed one. The count is 12.', None, "auto", False, '12', None),
    ('12', 'The answer is 12. 13 is the answer only if we ignore the hidden cube.', None, "auto", True, '12', None),
    ('13', 'The answer is 12. 13 is the answer only if we ignore the hidden cube.', None, "auto", False, '12', None),
    ('12', 'Naively, 13 is the answer, but we double-counted one corner, so the total is 12.', None, "auto", True, '12', None),
    ('12', 'If we ignore the shaded one, 13 is the answer. Including it, the total is 12.', None, "auto", True, '12', None),
    ('13', 'If we ignore the shaded one, 13 is the answer. Including it, the total is 12.', None, "auto", False, '12', None),
    ('12', '13 would be the answer if we excluded the blue ones. We include them, so there are 12.', None, "auto", True, '12', None),
    ('B', 'The answer is (A). (B) is the answer only for the 2D version.', ['3', '4', '5', '6'], "auto", False, '(A)', None),
    ('30', 'At first glance, 20 is the answer. However, the scale starts at 10, so the actual value is 30.', None, "auto", True, '30', None),
    ('20', 'At first glance, 20 is the answer. However, the scale starts at 10, so the actual value is 30.', None, "auto", False, '30', None),
    ('12', '12 is the answer, or 13.', None, "auto", False, '12, or 13', 'hedged'),
    ('13', '12 is the answer, or 13.', None, "auto", False, '12, or 13', 'hedged'),
    ('3', 'Both 3 and 4 could work, so 3 is the answer or 4 is the answer.', None, "auto", False, 'the answer', None),
    ('55%', '55% is the answer. Wait, actually 45%.', None, "auto", False, '55%', 'hedged'),
    ('12', 'The answer is 12, or equivalently 13.', None, "auto", False, '12, or equivalently 13', 'hedged'),
    ('75%', 'The answer is 0.75, or 75%. Wait, actually 0.8.', None, "auto", False, '0.75, or 75%', 'hedged'),
    ('1/3', 'The meeting starts at 10:30.', None, "auto", False, '10:30', None),
    ('0.25', 'The odds are 1:4.', None, "auto", False, '1:4', None),
    ('12', 'Step 1: 5+7\nStep 2:12', None, "auto", True, '12', None),
    ('41', 'Red: 5\nGreen: 7\nQ3: 41', None, "auto", True, '41', None),
    ('3:2', 'The ratio of red to blue is 3 : 2.', None, "auto", True, '3 : 2', None),
    ('2', 'The ratio of red to blue is 3 : 2.', None, "auto", False, '3 : 2', None),
    ('13', 'The answer is 12 (or 13).', None, "auto", False, '12 (or 13)', 'hedged'),
    ('2', 'The root is 2, or equivalently -2.', None, "auto", False, '2, or equivalently -2', 'hedged'),
    ('50', 'The percentage is 0.5, or 50%.', None, "auto", True, '50%', None),
    ('3:2', 'The answer is 3:2.\n\nWait, I made an error. The ratio is 2:3.', None, "auto", False, '3:2', 'hedged'),
    ('10:30', 'The answer is 10:30.\n\nWait, I misread the clock. The time is 10:45.', None, "auto", False, '10:30', 'hedged'),
    # a claim broken down after a colon into parts that add up to it states the claim's value
    ("13", "I count 13 dogs: 9 on the left and 4 on the right.", None, "auto", True, "13 dogs", None),
    ("4", "I count 13 dogs: 9 on the left and 4 on the right.", None, "auto", False, "13 dogs", None),
    ("12", "There are 12 apples: 5 red and 7 green.", None, "auto", True, "12 apples", None),
    ("2019", "In 2019 the values were: 45 and 52", None, "auto", False, None, None),
    ("12", "Step 3: 5 + 7 = 12", None, "auto", True, "12", None),
    # a prober's sweep of multiple-choice and yes/no outputs: a choice is read before the values
    # that explain it, "A." is a choice not an article, a letter with another option's text is
    # neither ("(A) 12 cm" where B is 12 cm), two choices hedge however they are
    # offered, and a yes/no verdict is read in other words (POPE-style absences, "so yes", "Nope")
    ('A', 'The answer is B because the radius is 6.', ['6', '12', '14', '20'], "auto", False, 'B', None),
    ('B', 'The answer is B because the radius is 6.', ['6', '12', '14', '20'], "auto", True, 'B', None),
    ('A', 'Answer: (B) because the radius is 6.', ['6', '12', '14', '20'], "auto", False, 'B', None),
    ('A', 'The correct answer is B, as the height is 6.', ['6', '12', '14', '20'], "auto", False, 'B', None),
    ('A', 'Answer: B. The radius is 6.', ['6', '12', '14', '20'], "auto", False, 'B', None),
    ('A', 'B. The width is 6.', ['6', '12', '14', '20'], "auto", False, 'B', None),
    ('A', 'B\n\nThe radius is 6, so the diameter is twice that.', ['6', '12', '14', '20'], "auto", False, 'B', None),
    ('A', 'B. The triangle is isosceles', ['isosceles', 'scalene', 'equilateral'], "auto", False, 'B', None),
    ('B', 'A. 12 cm', ['6 cm', '12 cm', '14 cm', '20 cm'], "auto", False, 'A. 12 cm', None),
    ('A', 'A. 12 cm', ['6 cm', '12 cm', '14 cm', '20 cm'], "auto", False, 'A. 12 cm', None),
    ('B', 'A) 12 cm', ['6 cm', '12 cm', '14 cm', '20 cm'], "auto", False, 'A) 12 cm', None),
    ('B', 'A: 12 cm', ['6 cm', '12 cm', '14 cm', '20 cm'], "auto", False, 'A: 12 cm', None),
    ('A', 'A: 12 cm', ['6 cm', '12 cm', '14 cm', '20 cm'], "auto", False, 'A: 12 cm', None),
    ('A', "B\n\nExplanation: Since A is 6 cm, it's too small.", ['6 cm', '12 cm', '14 cm', '20 cm'], "auto", False, 'B', None),
    ('B', "B\n\nExplanation: Since A is 6 cm, it's too small.", ['6 cm', '12 cm', '14 cm', '20 cm'], "auto", True, 'B', None),
    ('A', 'A is correct.', ['6 cm', '12 cm', '14 cm', '20 cm'], "auto", True, 'A', None),
    ('A', 'Option (A) is correct.', ['6 cm', '12 cm', '14 cm', '20 cm'], "auto", True, 'A', None),
    ('A', 'I choose A.', ['6 cm', '12 cm', '14 cm', '20 cm'], "auto", True, 'A', None),
    ('A', 'Based on the image, I would say A.', ['6 cm', '12 cm', '14 cm', '20 cm'], "auto", True, 'A', None),
    ('A', 'Not B, so A.', ['6 cm', '12 cm', '14 cm', '20 cm'], "auto", True, 'A', None),
    ('B', "I'd go with B.", ['6 cm', '12 cm', '14 cm', '20 cm'], "auto", True, 'B', None),
    ('B', 'Among the choices, C is too large and A is too small, so B is correct.', ['6 cm', '12 cm', '14 cm', '20 cm'], "auto", True, 'B', None),
    ('B', 'B is the answer. A is too small, C is too big.', ['6 cm', '12 cm', '14 cm', '20 cm'], "auto", True, 'B', None),
    ('B', 'Option B (12 cm) is correct; option A (6 cm) is half of it.', ['6 cm', '12 cm', '14 cm', '20 cm'], "auto", True, 'B', None),
    ('B', 'Not A. Not C. Not D. So it must be B.', ['6 cm', '12 cm', '14 cm', '20 cm'], "auto", True, 'B', None),
    ('C', 'C. Wait, no. B.', ['6 cm', '12 cm', '14 cm', '20 cm'], "auto", False, 'C. Wait, no. B', 'hedged'),
    ('C', 'B\n\nC', ['6 cm', '12 cm', '14 cm', '20 cm'], "auto", False, 'B, C', 'hedged'),
    ('C', 'B\nC', ['6 cm', '12 cm', '14 cm', '20 cm'], "auto", False, 'B, C', 'hedged'),
    ('C', 'B. 12 cm\nC. 14 cm', ['6 cm', '12 cm', '14 cm', '20 cm'], "auto", False, 'B, C', 'hedged'),
    ('B', 'B\nB', ['6 cm', '12 cm', '14 cm', '20 cm'], "auto", True, 'B', None),
    ('C', '\\boxed{B} \\boxed{C}', ['6 cm', '12 cm', '14 cm', '20 cm'], "auto", False, 'B, C', 'hedged'),
    ('B', '\\boxed{B} so \\boxed{B}', ['6 cm', '12 cm', '14 cm', '20 cm'], "auto", True, 'B', None),
    ('B', 'The answer is B. C is also possible.', ['6 cm', '12 cm', '14 cm', '20 cm'], "auto", False, 'B', 'hedged'),
    ('B', 'The answer is B. But C could also be correct.', ['6 cm', '12 cm', '14 cm', '20 cm'], "auto", False, 'B', 'hedged'),
    ('B', 'The answer is B. B is also the largest.', ['6 cm', '12 cm', '14 cm', '20 cm'], "auto", True, 'B', None),
    ('B', 'B. A is also a square, but smaller.', ['6 cm', '12 cm', '14 cm', '20 cm'], "auto", True, 'B', None),
    ('yes', 'There are 2 dogs in the image, so yes.', None, "auto", True, 'There are 2 dogs in the image, so yes', None),
    ('no', 'The dog count is 0, so no.', None, "auto", True, 'The dog count is 0, so no', None),
    ('no', 'There is no cat in the image.', None, "auto", True, 'There is no cat in the image', None),
    ('yes', 'There is no cat in the image.', None, "auto", False, 'There is no cat in the image', None),
    ('no', 'The image does not contain a cat.', None, "auto", True, 'The image does not contain a cat', None),
    ('no', 'No cat is visible in the image.', None, "auto", True, 'No cat is visible in the image', None),
    ('no', "I don't see any cat, so no.", None, "auto", True, "I don't see any cat, so no", None),
    ('yes', 'I can see a cat in the image, so yes.', None, "auto", True, 'I can see a cat in the image, so yes', None),
    ('yes', 'Absolutely', None, "auto", True, 'Absolutely', None),
    ('yes', 'Yeah, there is.', None, "auto", True, 'Yeah, there is', None),
    ('no', 'Nope.', None, "auto", True, 'Nope', None),
    ('no', 'Certainly not.', None, "auto", True, 'Certainly not', None),
    ('yes', 'True, but not in this image.', None, "auto", False, 'True, but not in this image', None),
    ('no', 'There is no doubt that there is a dog.', None, "auto", False, 'a dog', None),
    ('no', 'Is there a dog in the image? No, there is not.', None, "auto", True, 'No, there is not', None),
    ('yes', 'Is there a dog in the image? No, there is not.', None, "auto", False, 'No, there is not', None),
    ('yes', 'Yes or no', None, "auto", False, 'Yes or no', 'hedged'),
    ("B", "B. 12 cm", ["6 cm", "12 cm", "14 cm", "20 cm"], "auto", True, "B. 12 cm", None),
    ("A", "(A) 12 cm", ["6 cm", "12 cm", "14 cm", "20 cm"], "auto", False, "(A) 12 cm", None),
    ("B", "(A) 12 cm", ["6 cm", "12 cm", "14 cm", "20 cm"], "auto", False, "(A) 12 cm", None),
    ("B", "a. 12 cm", ["6 cm", "12 cm", "14 cm", "20 cm"], "auto", False, "a. 12 cm", None),
    ("B", "b. 12 cm", ["6 cm", "12 cm", "14 cm", "20 cm"], "auto", True, "b. 12 cm", None),
    ("no", "Yes\nNo", None, "auto", False, "no", "hedged"),
    ("yes", "Yes\n\nYes", None, "auto", True, "Yes", None),
    # a regression sweep of the rules above: an explanation that mentions an option is no second
    # answer; "is 5: 12 - 7" is 5; a last sentence's verdict wins over an absence before it; a
    # letter with its own text and a reason; a retraction that states its value after "is"
    ('B', 'B\n\nOption A (3 cm) is the radius, not the diameter.', ['3 cm', '6 cm', '9 cm', '12 cm'], "auto", True, 'B', None),
    ('B', 'B\n\nOption B is correct since the diameter is twice the radius.', ['3 cm', '6 cm', '9 cm', '12 cm'], "auto", True, 'B', None),
    ('C', 'C\n\nGreen is the largest. Option B is the smallest slice.', {'A': 'red', 'B': 'blue', 'C': 'green', 'D': 'yellow'}, "auto", True, 'C', None),
    ('C', 'C\n\nThe green slice is the largest, so I pick option C.', {'A': 'red', 'B': 'blue', 'C': 'green', 'D': 'yellow'}, "auto", True, 'C', None),
    ('B', 'B\n\nActually, C is correct.', {'A': 'red', 'B': 'blue', 'C': 'green', 'D': 'yellow'}, "auto", False, 'B', 'hedged'),
    ('C', 'B\n\nActually, C is correct.', {'A': 'red', 'B': 'blue', 'C': 'green', 'D': 'yellow'}, "auto", False, 'B', 'hedged'),
    ('5', 'The difference is 5: 12 - 7.', None, "auto", True, '5', None),
    ('24', 'The area is 24: 4 × 6.', None, "auto", True, '24', None),
    ('3:2', 'The ratio is 3 : 2.', None, "auto", True, '3 : 2', None),
    ('no', 'There is no cat in the image, only a dog. Is there a dog? Yes.', None, "auto", False, 'Yes', None),
    ('no', 'There is no cat on the chair. Yes, the chair is empty.', None, "auto", False, 'Yes, the chair is empty', None),
    ('B', 'The answer is (B) 6 cm because the radius is 3 cm.', ['3 cm', '6 cm', '9 cm', '12 cm'], "auto", True, '(B) 6 cm', None),
    ('A', 'The answer is (B) 6 cm because the radius is 3 cm.', ['3 cm', '6 cm', '9 cm', '12 cm'], "auto", False, '(B) 6 cm', None),
    ('13', 'The total is 13. Wait, actually I double counted one; the total is 17.', None, "auto", False, '17', None),
    ('17', 'The total is 13. Wait, actually I double counted one; the total is 17.', None, "auto", True, '17', None),
    ('12', 'The answer is 12. Wait, actually I double counted one; the total is 11.', None, "auto", False, '12', 'hedged'),
    ('13', 'The answer is 13. Wait, let me check: 3 × 4 = 12.', None, "auto", True, '13', None),
    ('12', 'The answer is 12. Actually, 3 of them are red.', None, "auto", True, '12', None),
    # a score, a date or a range is one value, not its first number
    ("2-1", "The final score is 2-1.", None, "auto", True, "2-1", None),
    ("2", "The final score is 2-1.", None, "auto", False, "2-1", None),
    ("2021-03-12", "The date is 2021-03-12.", None, "auto", True, "2021-03-12", None),
    ("9", "The result is 12-3 = 9.", None, "auto", True, "9", None),
    ("5", "The answer is 5-6 apples.", None, "auto", False, "5-6 apples", None),
    # several sentences on one line: the first value stated stands; a later sentence's value is
    # as often a check, a restatement or a side fact (a rule that moved to a concluding last
    # sentence lost more verdicts than it won in two probers' sweeps)
    ("12", "The total is 12. Each box is 3 cm wide.", None, "auto", True, "12", None),
    ("7", "The increase is 7. The 2020 value is 52, which is the final year shown.", None, "auto", True, "7", None),
    ("5", "The number of birds is 5. The number of dogs is 2, so birds outnumber dogs.", None, "auto", True, "5", None),
    # (a hyphenated value is no subtraction against a plain number; arithmetic without spaces
    # ends on its value; a check, restatement or side fact after the answer does not move it)
    ("43", "In 3 years Ben is 43. That is 3 more than now.", None, "auto", True, "43", None),
    ("3", "In 3 years Ben is 43. That is 3 more than now.", None, "auto", False, "43", None),
    ("50", "25% of 200 is 50. The whole is 200.", None, "auto", True, "50", None),
    ("35", "Mr. Lee is 35. Mrs. Lee is 7 years younger.", None, "auto", True, "35", None),
    ("20", "The total is 20. Checking: 20 - 8 = 12.", None, "auto", True, "20", None),
    ("7", "The difference is 7. In contrast, B is 3.", None, "auto", True, "7", None),
    ("48", "The total is 48. Yesterday's total is 40.", None, "auto", True, "48", None),
    ("1", "The final score is 2-1.", None, "auto", False, "2-1", None),
    ("2006", "The date is 2021-03-12.", None, "auto", False, "2021-03-12", None),
    ("5", "Each child gets 5-6 apples.", None, "auto", False, "5-6 apples", None),
    ("8", "The remaining is 15-7=8.", None, "auto", True, "8", None),
    ("8", "The remaining marbles: 15-7=8.", None, "auto", True, "8", None),
]


@pytest.mark.parametrize("gold, text, options, answer_type, correct, extracted, reason", CASES)
def test_grade_reads_and_judges(gold, text, options, answer_type, correct, extracted, reason):
    verdict = prmtree.grade(gold, text, answer_type=answer_type, options=options)
    assert verdict.correct is correct, verdict
    if extracted is not None:
        assert verdict.extracted == extracted, verdict
    if reason is not None:
        assert verdict.reason == reason


def test_a_bare_letter_is_the_options_letter_not_an_option_whose_text_is_that_letter():
    # D's text is "b"; "B" names option B (15 apples), not D
    assert prmtree.grade("B", "B", options=OPTS, extract=False).correct is True
    assert prmtree.grade("D", "B", options=OPTS, answer_type="choice", extract=False).correct is False


def test_an_explanation_ruling_other_options_out_names_one_choice():
    verdict = prmtree.grade("B", "(B) is correct, while (A) and (C) are incorrect.", options=OPTS, extract=False)
    assert verdict.correct is True and verdict.reason == "equal"


def test_extract_false_takes_the_text_as_the_answer_but_still_refuses_hedges():
    assert prmtree.grade("5", "5", extract=False).correct is True
    assert prmtree.grade("5", r"so \boxed{5}", extract=False).extracted == r"so \boxed{5}"
    assert prmtree.grade("5", "5 or 6", extract=False).reason == "hedged"


def test_readme_choice_examples_hold_as_written():
    """README: a choice named in a sentence is graded as its letter; ``extracted`` keeps the
    words read; with extract=False the choice is read out only for a choice problem."""
    assert prmtree.grade("C", "the total is (C) 80.") == prmtree.Verdict(True, "(C) 80", "equal")
    assert prmtree.grade("A", "option A fits") == prmtree.Verdict(True, "option A fits", "equal")
    assert prmtree.grade("C", "the total is (C) 80.", extract=False) == prmtree.Verdict(
        False, "the total is (C) 80.", "not equal")
    assert prmtree.grade("C", "the total is (C) 80.", extract=False, answer_type="choice") == prmtree.Verdict(
        True, "(C) 80", "equal")
    assert prmtree.grade("C", "the total is (C) 80.", extract=False, options=OPTS).correct is True


@pytest.mark.parametrize("gold, text, correct", [
    # before: all but the first two were "not equivalent (Math-Verify)", and "1.6 \\times 10^{-19}"
    # was read as 1.6 with a unit
    (r"3 \times 10^8", r"\boxed{3e8}", True),
    (r"2.5 \times 10^6", "2.5e6", True),
    ("1.6e-19", r"\boxed{1.6 \times 10^{-19}}", True),
    (r"1.6 \times 10^{-19}", "1.6e-19", True),
    ("6.02e23", r"\boxed{6.02 \cdot 10^{23}}", True),
    ("6.02e23", r"\boxed{6.02*10^23}", True),
    ("6.02e23", r"\boxed{6.03 \times 10^{23}}", False),
    ("3e8", r"\boxed{3 \times 10^9}", False),
    ("1.6", r"\boxed{1.6 \times 10^{-19}}", False),
    ("7", r"\boxed{2 \times 10^{400}}", False),  # past a float's range: OverflowError, a traceback (review)
    ("7", r"\boxed{2e400}", False),
    ("2e400", r"\boxed{2 \times 10^{400}}", True),
    # a second probe: x / X as the sign, superscripts, a unit or a percent sign after it
    ("2.5e3", "Answer: 2.5x10^3", True),
    ("2.5e3", "Answer: 2.5 X 10^3", True),
    (r"2 \times 10^3", r"\boxed{2 x 10^3 m/s}", True),
    ("2.5e6", r"\boxed{2.5 × 10⁶}", True),
    ("25%", r"\boxed{2.5 \times 10^1\%}", True),
    ("2.5e6", r"\boxed{2.5 \times 10^6 dollars}", True),
    ("2.5e3", r"\boxed{2.5x10^4}", False),
])
def test_scientific_notation_written_either_way_is_the_same_number(gold, text, correct):
    assert prmtree.grade(gold, text).correct is correct


@pytest.mark.parametrize("gold, text, correct, extracted", [
    # before: "10 a.m." was accepted for 10 p.m. (Math-Verify reads both as 10), "5 p.m." was
    # read as "5 p", and a time in one convention never matched the other
    ("10 p.m.", "The meeting is at 10 a.m.", False, "at 10 a.m"),
    ("10 a.m.", "The meeting is at 10 a.m.", True, "at 10 a.m"),
    ("9:00 PM", "Final answer: 9 a.m.", False, "9 a.m."),
    ("9:00 AM", "Final answer: 9 a.m.", True, "9 a.m."),
    ("5 PM", "The store closes at 5 p.m.", True, "The store closes at 5 p.m"),  # the time with what it is said of
    ("17:00", "The store closes at 5 p.m. on weekdays.", True, "The store closes at 5 p.m. on weekdays"),
    ("5 a.m.", "The store closes at 5 p.m.", False, "The store closes at 5 p.m"),
    ("15:45", "The time shown is 3:45 PM.", True, "3:45 PM"),
    ("3:45", "The time shown is 3:45 PM.", True, "3:45 PM"),  # a bare 12-hour time names no half of the day
    ("3:45 AM", "The time shown is 3:45 PM.", False, "3:45 PM"),
    ("3:46 PM", "The time shown is 3:45 PM.", False, "3:45 PM"),
    ("3:00", "It is 3 o'clock.", True, "3 o'clock"),
    ("00:30", r"\boxed{12:30 a.m.}", True, "12:30 a.m."),
    ("00:30", r"\boxed{12:30 p.m.}", False, "12:30 p.m."),
    ("19:15", "The train leaves at 7:15 pm, so the answer is 7:15 pm.", True, "7:15 pm"),
    ("9", "8 + 1 = 9 o'clock. The meeting ends at 9.", True, "9 o'clock"),  # a bare hour, as 12 for 12 cm (a prober)
    ("8", "The meeting ends at 9 o'clock.", False, "The meeting ends at 9 o'clock"),
    ("9", "The meeting ends at 9 o'clock.", True, "The meeting ends at 9 o'clock"),
    ("9", "The answer is 9:30 pm.", False, "9:30 pm"),
    # a prober's false accepts: a time among a few words, in LaTeX, a range, a length of time
    ("5 a.m.", "The answer is approx. 5 p.m.", False, "approx. 5 p.m"),
    ("5 p.m.", r"$\boxed{5 \text{ a.m.}}$", False, r"5 \text{ a.m.}"),
    ("7:30 a.m.", "The dinner is scheduled for 7:30 p.m. in the main hall.", False,
     "scheduled for 7:30 p.m. in the main hall"),
    ("7:30 p.m.", "The dinner is scheduled for 7:30 p.m. in the main hall.", True,
     "scheduled for 7:30 p.m. in the main hall"),
    ("5 p.m.", "Final answer: 5 a.m. (05:00)", False, "5 a.m. (05:00)"),  # 05:00 is a 24-hour time
    ("5 p.m.", "Answer: 5 p.m. EST", True, "5 p.m. EST"),
    ("9 a.m. to 5 p.m.", "Final answer: 8 a.m. to 5 p.m.", False, "8 a.m. to 5 p.m"),
    ("9 a.m. to 5 p.m.", "Final answer: 9:00 AM - 5:00 PM", True, "9:00 AM - 5:00 PM"),
    ("3 hours", r"\boxed{3 p.m.}", False, "3 p.m."),
    ("12 noon", "The answer is 12 midnight.", False, "12 midnight"),
    ("noon", "The answer is 12:00 PM.", True, "12:00 PM"),
    ("17:00", r"\boxed{17{:}00}", True, "17{:}00"),
    # a second pass: what a gold says besides its time, the answer must say too
    ("9 a.m. on Monday", "9 a.m. on Tuesday", False, "9 a.m. on Tuesday"),
    ("9 a.m. on Monday", "The answer is 9 a.m. on Monday.", True, "9 a.m. on Monday"),
    ("Tuesday, 10:00 a.m.", "Thursday, 10:00 a.m.", False, "Thursday, 10:00 a.m"),
    ("Flight at 7:30 p.m. to Paris", "Flight at 7:30 p.m. to London", False, "Flight at 7:30 p.m. to London"),
    ("9 a.m. to 5 p.m.", "The office hours are 9 a.m. to 5 p.m. on weekdays.", True, "9 a.m. to 5 p.m. on weekdays"),
    ("John 3:16", "Luke 3:16", False, "Luke 3:16"),
    ("9 a.m. on Monday", "Monday, 9 a.m.", True, "Monday, 9 a.m"),  # in any order (a third prober)
    ("5 p.m.", "The shop closes after 5 p.m.", False, "The shop closes after 5 p.m"),
    ("21:00", "The clock shows 9:00 in the morning.", False, "The clock shows 9:00 in the morning"),
    ("4 p.m.", "The answer is 4 p.m. or 16:00.", True, "4 p.m. or 16:00"),  # one time twice, no hedge
    ("4 p.m.", "The answer is 4 p.m. or 5 p.m.", False, "4 p.m. or 5 p.m"),
    ("9 a.m. to 5 p.m.", "The answer is 5 p.m.", False, "5 p.m"),  # one end of the range
    ("9 a.m.\u20135 p.m.", "The store opens 9 a.m.\u20136 p.m. daily.", False, "The store opens 9 a.m.\u20136 p.m. daily"),
    ("2", "The wavelength is 2 pm and the energy is high.", True, "2 pm"),  # picometres: no time said of
    # a fourth pass: a number gold is not the sentence's hour; a time taken back or only a bound
    ("12", "The 7 a.m. train has 12 cars.", True, "The 7 a.m. train has 12 cars"),
    ("3", "The train at 7 a.m. arrives at platform 3.", True, "The train at 7 a.m. arrives at platform 3"),
    ("10 a.m.", "Brunch is served at 10 a.m., after the morning swim.", True, "served at 10 a.m., after the morning swim"),
    ("7 a.m.", "The No. 9 bus leaves at 7 a.m.", True, "The No. 9 bus leaves at 7 a.m"),
    ("9 a.m.", "The answer is 10 a.m. (previously 9 a.m.).", False, "10 a.m. (previously 9 a.m.)"),
    ("10 a.m.", "The answer is 10 a.m. (previously 9 a.m.).", True, "10 a.m. (previously 9 a.m.)"),
    ("5 p.m.", "The shop now closes at 6 p.m. instead of 5 p.m.", False, "The shop now closes at 6 p.m. instead of 5 p.m"),
    ("5 p.m.", "It does not close at 5 p.m.", False, "It does not close at 5 p.m"),
    ("9 a.m. to 5 p.m.", "It closes at 5 p.m.", False, "It closes at 5 p.m"),
    ("12 a.m.", "It happened at 12 at night.", True, "It happened at 12 at night"),
    ("8 p.m. on Friday", "Fri., 8 p.m.", True, "Fri., 8 p.m"),
    # a fifth pass: negations in other words, "not ... until", shared halves of the day
    ("5 p.m.", "It doesn't close at 5 p.m.", False, "It doesn't close at 5 p.m"),
    ("9 a.m.", "No trains run at 9 a.m.", False, "No trains run at 9 a.m"),
    ("8 a.m.", "Breakfast is not served until 8 a.m.", True, "not served until 8 a.m"),
    ("5 p.m.", "The form is due no later than 5 p.m.", True, "due no later than 5 p.m"),
    ("9 a.m. on Monday", "9 a.m. on Tuesday, not Monday", False, "9 a.m. on Tuesday, not Monday"),
    ("9 a.m. on Saturday", "The students sat the exam at 9 a.m.", False, "The students sat the exam at 9 a.m"),
    ("8 a.m.", "Take the 8 a.m. bus instead of the 9 a.m. one.", True, "Take the 8 a.m. bus instead of the 9 a.m. one"),
    ("2 p.m. to 4 p.m.", "Between 2 and 4 p.m.", True, "Between 2 and 4 p.m"),
    ("11 a.m. to 1 p.m.", "11 to 1 p.m.", True, "11 to 1 p.m"),
    ("8 p.m.", "We will meet at 8 tonight.", True, "We will meet at 8 tonight"),
    ("9:20 a.m.", "The train leaves at 20 past 9 in the morning.", True, "The train leaves at 20 past 9 in the morning"),
    ("8:30 p.m.", "The bus leaves at 8.30 a.m.", False, "The bus leaves at 8.30 a.m"),  # a dot with a half of the day
    ("8.3", "The answer is 8.30.", True, "8.30"),  # without one, a decimal
    ("5 p.m.", "The answer is 1700 hours.", True, "1700 hours"),
    ("5:00", "It is five o'clock.", True, "five o'clock"),
    # a sixth pass: minutes to the hour, "past" as a bound, a denied word that is not the gold's
    ("9 a.m.", "It's a quarter to 9 a.m.", False, "It's a quarter to 9 a.m"),
    ("8:45 a.m.", "It's a quarter to 9 a.m.", True, "It's a quarter to 9 a.m"),
    ("5 p.m.", "Any time past 5 p.m.", False, "Any time past 5 p.m"),
    ("9 a.m. on Monday", "Monday at 9 a.m. (not Tuesday)", True, "Monday at 9 a.m. (not Tuesday)"),
    ("9 a.m. on Monday", "9 a.m. on Monday or Tuesday", False, "9 a.m. on Monday or Tuesday"),
    ("7 a.m.", "There is no bus other than the 7 a.m. one.", True, "no bus other than the 7 a.m. one"),
    ("10:30-11:15", "10:30 to 11:15", True, "10:30 to 11:15"),  # the minutes of 10:30 are no "30 to 11"
    ("3:15", "The meeting was moved from 2:30 to 3:15.", True, "moved from 2:30 to 3:15"),
    ("6:30", "It is half past six.", True, "half past six"),  # minutes and hours in words
    ("8:45", "It is a quarter to nine.", True, "a quarter to nine"),
    ("3 p.m. on Wednesday", "Wed 3 p.m.", True, "Wed 3 p.m"),  # a capital makes "Wed" a day
    ("6 a.m. on Sunday", "The sun rises at 6 a.m.", False, "The sun rises at 6 a.m"),
    ("1.5", "The ratio is 3:2.", False, "3:2"),  # not a time: minutes have two digits
    ("12", "The answer is approx. 12.", True, "approx. 12"),  # read "approx" before
    ("13", "The answer is approx. 12.", False, "approx. 12"),
])
def test_times_of_day_compare_as_times(gold, text, correct, extracted):
    verdict = prmtree.grade(gold, text)
    assert (verdict.correct, verdict.extracted) == (correct, extracted)


@pytest.mark.parametrize("gold,text,correct", [
    # one date, any written form (Math-Verify reads none of them as a date)
    ("March 3, 2021", "3 March 2021", True),
    ("March 3, 2021", "The letter is dated Wednesday, March 3, 2021.", True),
    ("March 3, 2021", "2021-03-03", True),
    ("March 3, 2021", "the 3rd of March, 2021", True),
    ("March 4, 2021", "It reads Mar. 4, 2021. Therefore, the answer is Mar. 4, 2021.", True),  # read "Mar" before
    ("April 13, 1991", "13-Apr-1991", True),
    ("March 3, 2021", "the third of March 2021", True),
    ("March 21, 2021", "March twenty-first, 2021", True),
    ("March 3, 2021", "March second, 2021", False),
    ("May 17, 2018", r"The answer is \boxed{May 17, 2018}.", True),
    ("February 29, 2020", "2020-02-29", True),
    ("March 2, 2021", "February 30, 2021", False),  # no such day
    ("March 3, 2021", "March 3 to February 30, 2021", False),  # raised StopIteration
    # all-numeric: either order, unless a part past 12 fixes it; two parts are a fraction
    ("March 4, 2021", "03/04/2021", True),
    ("April 3, 2021", "The date shown on the document is 03/04/2021.", True),
    ("April 13, 2021", "4/13/2021", True),
    ("April 13, 2021", "13/4/2021", True),
    ("December 19, 2011", "19/12/2012", False),
    ("March 3, 2021", "3/3/21", True),
    ("March 4", "3/4", False),
    ("3/4", "0.75", True),
    # parts: every part the gold states, and perhaps more
    ("March 3, 2021", "March 4, 2021", False),
    ("March 3, 2021", "March 3, 2020", False),
    ("March 3, 2021", "March 2021", False),
    ("March 3, 2021", "March 3", False),
    ("March 3", "March 3, 2021", True),
    ("March 2021", "early March 2021", True),
    ("2021", "The memo was sent on March 3, 2021.", True),
    ("2021", "It was founded in 2021.", True),
    ("2021", "SINCE 2021", True),
    ("2021", "2020", False),
    ("2021", "before 2021", False),
    ("2021", "2,021", True),  # a number still
    # weekdays: only against a gold's weekday
    ("Wednesday, March 3, 2021", "March 3, 2021", True),
    ("Wednesday, March 3, 2021", "Thursday, March 3, 2021", False),
    # taken back, bounds and hedges
    ("March 3, 2021", "not March 4, but March 3, 2021", True),
    ("March 3, 2021", "It was originally scheduled for March 4, 2021 but moved to March 3, 2021.", True),
    ("March 4, 2021", "It was originally scheduled for March 4, 2021 but moved to March 3, 2021.", False),
    ("March 3, 2021", "before March 3, 2021", False),
    ("March 3, 2021", "March 3 or March 4, 2021", False),
    ("March 3, 2021", "It was not until March 3, 2021 that the law took effect.", True),
    ("March 3, 2021", "The deadline was moved from March 10, 2021 to March 3, 2021.", True),
    ("March 10, 2021", "The deadline was moved from March 10, 2021 to March 3, 2021.", False),
    ("March 3, 2021", "Scheduled for March 4 but moved to March 3, 2021.", True),
    ("March 3, 2021", "It was not held on March 3, 2021.", False),
    # ranges end by end; one end is not the range
    ("2019-2021", "2019 to 2021", True),
    ("2019-2021", "between 2019 and 2021", True),
    ("2019-2021", "2019-21", True),
    ("2010-2015", "The date shown on the document is 2010 - 2015.", True),
    ("2019-2021", "2021", False),
    ("2019-2021", "2018-2021", False),
    ("1999-00", "1999-2000", True),
    ("1999-00", "The answer is 2000-01.", False),  # Math-Verify: both 1999
    ("2010-11", "2010/11", True),
    ("March 3-5, 2021", "March 3 to March 5, 2021", True),
    ("October 9-13, 2023", "The date shown on the document is October 9 to October 13, 2023.", True),
    # decades
    ("1990s", "the 1990s", True),
    ("1990s", "the '90s", True),
    ("1990s", "the nineties", True),
    ("1990s", "1995", False),
    ("1980s", "1990s", False),
    # a date said to be after another is not that other
    ("March 1, 2021", "The answer is March 3, 2021, which is two days after the submission date of March 1, 2021.", False),
    ("12", "4 + 8, which is 12.", True),  # a sum, not a value then its restatement
    ("60", "1 hour, which is 60 minutes.", True),
    ("4", "4 + 8, which is 12.", False),
    # a year is the whole answer only with words that say so; other numbers make it no date answer
    ("2021", r"\boxed{\sqrt{2021}}", False),
    ("2021", "2021!", False),
    ("1500", "more than 1500", False),
    ("2021", "It grew 12% in March 2021.", False),
    ("2019-2021", "2 years (2019-2021)", False),
    ("1200", "Dec. 2018: $1,200", True),
    ("March 3, 2021", "March 3, 2021 at 10 a.m.", True),
    # bounds and estimates after the date too; two days or months offered
    ("March 3, 2021", "March 3, 2021 or later", False),
    ("March 3, 2021", "2 weeks from March 3, 2021", False),
    ("March 3", "March 3 and 4", False),
    ("March 4, 2021", "3 and 4 March 2021", False),
    ("April 2021", "March and April 2021", False),
    ("Wednesday, March 3, 2021", "Tuesday or Wednesday, March 3, 2021", False),
    ("Monday, March 8, 2021", "March 8, 2021, not Monday", False),
    # a month alone: after a word that makes it a time, never a name
    ("May", "Based on the chart, sales peaked in May.", True),
    ("1934", "The Long March began in October 1934.", True),
    ("April", "April Ludgate", False),
    ("1990s", r"\boxed{1990\text{s}}", True),
    # a date in a sentence is read as a number is: the first stated, the later one after "so"
    ("January 2019", "The earliest month shown is January 2019, and the month with the highest sales is April 2019.", False),
    ("April 2019", "The earliest month shown is January 2019, and the month with the highest sales is April 2019.", True),
    ("52", "The date is March 3, 2020 and the value is 52.", True),
    ("12", "The answer is 12 units, recorded in Dec. 2020.", True),  # "Dec. 2020" is when, not the value
    ("12", "I counted 12 June bugs.", True),
    ("10", "2011-2021, which is 10 years.", True),  # what "which is" says is the answer, as for numbers
    ("December", "12, which is December.", True),
    ("7", "Answer: 5, which is wrong — recounting gives 7", True),
    ("5", "The answer is 5, which is not right, it should be 7", False),
    ("3", "3 - 2000 - 1500", False),
    ("5", "The bracket shows 5 March Madness upsets", True),
    ("2014-2020", "Answer: 2014-20", True),
    ("1999-12", "1999-2012", False),  # no range of years: December 1999, more likely
    ("2010-11", "2010-2011", True),
    ("March 3, 2021", "Unlikely to be March 3, 2021", False),
    ("March 2021", "Cannot determine from March 2021 data", False),
    ("Saturday, March 6, 2021", "Sun., March 6, 2021", False),
    ("5", "We saw 5 june bugs.", True),
    ("7", "The answer is 7 in Dec. 3 of those were returned.", True),
    ("June 21", "June twenty-one", True),
    # not dates: verbs, fractions, differences
    ("5", "They march 5 miles.", True),
    ("5", "Only 5 may enter the room.", True),
    ("1023/1024", r"\boxed{\frac{1023}{1024}}", True),
    ("1999/2000", "1999-2000", False),
    ("1980", r"\boxed{2000 - 20}", True),
    # no dates: left to the other checks
    ("10 a.m.", "10:00 AM", True),
    ("2.1.3", "2.1.3", True),
    ("2019", "The population in 2019 was 1500 people.", False),
])
def test_calendar_dates_compare_as_dates(gold, text, correct):
    assert prmtree.grade(gold, text).correct is correct


@pytest.mark.parametrize("gold, text, correct", [
    # a bound is not the value it bounds (Math-Verify read each of these as 12)
    ("12", r"\boxed{> 12}", False),
    ("12", r"\boxed{\geq 12}", False),
    ("12", r"The answer is $\ge 12$.", False),
    ("12", "12+", False),
    ("12", "no more than 12", False),  # read as "12" before
    ("12", "The answer is no more than 12.", False),
    ("12", "It must be at least 12.", False),
    ("12", "The count is 12 at most.", False),
    ("12", "12 max", False),
    ("12", "over 12", False),
    ("12", "So there are 12 or more people.", False),
    ("2021", "2021 onwards", False),
    ("2021", "by 2021 at the latest", False),
    ("12", "12+ years", False),
    ("12", "greater than or equal to 12", False),
    # not bounds: approximations, signs, verbs, labels, vectors, working
    ("12", "about 12", True),
    ("12", r"\approx 12", True),
    ("3", "+3", True),
    ("12", "We round up to 12.", True),
    ("12", "The votes add up to 12.", True),
    ("12", "She handed over 12 apples.", True),
    ("3", "Above 50%: 3 countries", True),
    (r"\langle 2, 3 \rangle", "<2, 3>", True),
    ("12", "The answer is 12 and after checking, it satisfies the equation.", True),
    ("12", "The count is 12 + 0.", True),
    ("9.8", "g = 9.8 +/- 0.1", True),
    ("45 minutes", "45 min", True),
    ("12", "Since x > 3, the answer is 12.", True),
    # a gold that states a bound, or a sign, is compared as before
    ("18+", "18+", True),
    ("x > 3", "x > 3", True),
    ("+3", "3+", True),  # an ion's charge
    ("2", "The charge is 2+.", True),  # "N+" for one digit: a charge, not "or more"
    ("12", "We need 12 N upward.", True),  # a direction, not a bound
    # eras: 1776 BC is no 1776 AD; a segment named BC, or algebra's bc, is no era
    ("1776 BC", "1776 AD", False),
    ("44 BC", "He died in 44 A.D.", False),  # the sentence's last dot dropped: "44 A.D"
    ("1776 BC", r"\boxed{1776 \text{ AD}}", False),
    ("12", "The lift holds max 12 people.", False),
    ("44 BC", "Caesar died in 44 AD.", False),
    ("44 BC", "He died in 44 BC.", True),
    ("44 BC", "44 B.C.", True),
    ("1776", "1776 AD", True),
    ("2BC", r"2 \cdot BC", True),
    ("2BC", "2 BC", True),
    ("5", "BC = 5", True),
    ("2bc", r"\boxed{2 bc}", True),
])
def test_a_bound_on_a_value_is_not_the_value(gold, text, correct):
    assert prmtree.grade(gold, text).correct is correct


@pytest.mark.parametrize("question, text, correct", [
    # asked for an extreme, a bound that holds its number states it ...
    ("What is the maximum number of people the elevator can hold?", "At most 12 people can fit.", True),
    ("What is the minimum number of packs she must buy?", "She needs to buy at least 12 packs.", True),
    ("How many packs does she need to buy?", "She needs to buy at least 12 packs.", True),  # what is needed: a least
    ("From what age can children join?", "12 and up", True),
    ("How many people can the bus carry?", "The bus can carry up to 12 people.", True),
    ("What is the least number of colours needed?", r"\boxed{\geq 12}", True),
    ("What is the largest possible value?", "a maximum of 12", True),
    # ... a strict one never does, nor one of the other direction, nor a name that looks like one
    ("What is the largest possible value?", "at least 12", False),
    ("What is the least common multiple of 4 and 6?", "at least 12", False),
    ("What is the maximum number of people the elevator can hold?", "more than 12", False),
    ("What is the largest possible value?", r"\boxed{< 12}", False),
    # asked for a count, any bound is a hedge
    ("How many apples are in the picture?", "at least 12 apples", False),
    ("How many apples are in the picture?", "At most 12 apples are visible.", False),
    (None, "At most 12 people can fit.", False),  # no question: no extreme asked for
    # the asking sentence decides, not an instruction after it
    ("Find the minimum value of f. Your answer must be an integer.", "at least 12", True),
    ("What is the minimum number? Your answer must be an integer.", "at most 12", False),
    ("How many are there? You may use a calculator.", "at most 12", False),
])
def test_a_bound_that_holds_its_number_answers_a_question_for_an_extreme(question, text, correct):
    assert prmtree.grade("12", text, question=question).correct is correct


def test_a_bound_names_an_option_only_where_its_extreme_is_asked_for():
    options = ["10", "12", "More than 12"]
    assert prmtree.grade("B", "He can make at most 12 cookies.", options=options,
                         question="What is the maximum number of cookies he can make?").correct is True
    assert prmtree.grade("B", "at least 12", options=options, question="How many apples are there?").correct is False
    assert prmtree.grade("C", "More than 12", options=options).correct is True  # the option's own text


def test_a_gold_that_states_a_bound_compares_as_before_whatever_the_question():
    for question in ("What is the minimum number of pens?", "How many pens?"):
        assert prmtree.grade("12+", "at least 12", question=question).correct is False


def test_the_memo_tells_an_extreme_question_from_another():
    """One run's verifier sees the same gold and answer for problems asking different things:
    a remembered verdict must not carry "at most 12" from a question for the most to a count."""
    from prmtree.engine.answers import Verifier

    verifier = Verifier()
    most = Problem(id="a", question="What is the most the lift can carry?", answer="12")
    count = Problem(id="b", question="How many boxes are there?", answer="12")
    assert [verifier(most, "at most 12"), verifier(count, "at most 12"), verifier(most, "at most 12")] == \
        [True, False, True]
    # a bound's number goes to Math-Verify, not its words
    root = Problem(id="c", question="What is the maximum value of f?", answer=r"\frac{1}{\sqrt{2}}")
    assert verifier(root, r"\leq \frac{\sqrt{2}}{2}") is True
    assert verifier(Problem(id="d", question="What is f(1)?", answer=r"\frac{1}{\sqrt{2}}"),
                    r"\leq \frac{\sqrt{2}}{2}") is False
    # the driver's path (memo, then the pool) gives the same verdicts
    import asyncio

    driver = Verifier()
    try:
        assert asyncio.run(driver.check(most, ["at most 12"])) == [True]
        assert asyncio.run(driver.check(count, ["at most 12"])) == [False]
        assert asyncio.run(driver.check(root, [r"\leq \frac{\sqrt{2}}{2}"])) == [True]
    finally:
        driver.close()


def test_golds_that_only_look_hedged_are_graded():
    # a class label (PubMedQA's yes/no/maybe), letters that are an expression or a unit
    assert prmtree.grade("maybe", "maybe").correct is True
    assert prmtree.grade("m/s", "m/s").correct is True
    assert prmtree.grade("x/y", r"\boxed{\frac{x}{y}}").correct is True
    assert prmtree.grade(r"\left\{ 1, 2 \right\}", r"\boxed{\{1, 2\}}").reason != "gold answer has unbalanced braces (cut off?)"


def test_gold_answers_that_cannot_be_graded_against_give_none():
    for gold, why in ((None, "no gold answer"), (float("nan"), "gold answer is NaN"), ("nan", "gold answer is NaN"),
                      ("  ", "gold answer is empty"), ("A or B", "gold answer is hedged (more than one answer)"),
                      # the run refuses these rows too (tests/test_compare_types.py): one rule
                      ("not sure", "gold answer is hedged (more than one answer)"),
                      ("either 3 or 4", "gold answer is hedged (more than one answer)"),
                      ("N/A", "gold answer says there is no answer"),
                      ("\\frac{1}{", "gold answer has unbalanced braces (cut off?)")):
        verdict = prmtree.grade(gold, "5")
        assert verdict.correct is None and verdict.reason == why


def test_no_answer_and_truncated_boxes_are_wrong_with_their_reason():
    assert prmtree.grade("5", "").reason == "no answer"
    assert prmtree.grade("5", r"so \boxed{5").reason == "unterminated box"
    long = prmtree.grade("5", "\\boxed{" + "1" * 2_001 + "}")
    assert long.correct is False and long.reason == "answer too long"
    with pytest.raises(ValueError, match="answer_type"):
        prmtree.grade("5", "5", answer_type="vague")


# --------------------------------------------------------------------------- a whole run

RUN_CASES = [c for c in CASES if c[3] in ("auto", "choice") and c[6] != "unfinished reasoning"]  # (after a first step here)


@register_policy("grade-forms-test")
class FormsPolicy:
    """Answers each problem with the text its meta carries: the forms above, in a real run."""

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        text = "First, read the figure.\n\n" + request.problem.meta["text"]
        return [Completion(text, num_tokens=9)] * request.n


def test_a_run_labels_rollouts_as_grade_judges_them(tmp_path):
    problems = [
        Problem(id=f"p{i}", question="q", answer=gold, answer_type=answer_type,
                meta={"text": text, **({"options": options} if options else {})})
        for i, (gold, text, options, answer_type, *_rest) in enumerate(RUN_CASES)
    ]
    summary = prmtree.run(problems, policy="grade-forms-test", out=tmp_path,
                          config={"search": {"k": 2, "budget": 4}})
    assert summary.problems_done == len(problems)
    roots = {n["problem_id"]: n for n in read_table(tmp_path, "nodes").to_pylist() if n["depth"] == 0}
    for i, (gold, text, options, answer_type, correct, *_rest) in enumerate(RUN_CASES):
        root = roots[f"p{i}"]
        expected = prmtree.grade(gold, "First, read the figure.\n\n" + text, answer_type=answer_type, options=options)
        assert expected.correct is correct
        assert (root["n_correct"] == root["n_rollouts"] > 0) if correct else root["n_correct"] == 0, (i, text, root)


# --------------------------------------------------------------------------- the CLI


@pytest.mark.slow
def test_cli_grade_help_lists_every_answer_type_grade_accepts():
    from prmtree.engine.records import ANSWER_TYPES

    shown = " ".join(cli("grade", "--help").stdout.split())
    assert "auto, math, choice, number, text or vqa" in shown
    assert set(ANSWER_TYPES) == {"auto", "math", "choice", "number", "text", "vqa"}
    for kind in ANSWER_TYPES:  # each is one grade() takes
        prmtree.grade("1", "1", answer_type=kind)


def test_cli_grade_prints_the_verdict_and_exits_0_whatever_it_is():
    right = cli("grade", "17", r"First $\boxed{8}$, then $\boxed{17}$.")
    assert right.returncode == 0 and right.stdout.splitlines() == ["correct", "extracted: 17", "reason: equal"]
    hedge = cli("grade", "B", "B or C", "--answer-type", "choice", "--json")
    assert hedge.returncode == 0
    assert json.loads(hedge.stdout) == {"correct": False, "extracted": "B or C", "reason": "hedged"}
    raw = cli("grade", "B", "The total is (A) 5.", "--no-extract", "--options", '["5", "6"]')
    assert raw.returncode == 0 and raw.stdout.splitlines() == ["wrong", "extracted: (A) 5", "reason: not equal"]
    asked = cli("grade", "12", "At most 12 people fit.", "--question", "What is the most people that fit?")
    assert asked.returncode == 0 and asked.stdout.splitlines()[0] == "correct"
    assert cli("grade", "12", "At most 12 people fit.").stdout.splitlines()[0] == "wrong"  # no extreme asked for
    bad = cli("grade", "5", "5", "--options", "{nope")
    assert bad.returncode == 2 and "--options is not JSON" in bad.stderr and "Traceback" not in bad.stderr
