"""Steps from real model output: markdown lists, bold headers, ``Step N:`` lines,
paragraphs and one long paragraph, no-content merges, the final-answer line, and
``max_steps`` merging that keeps key steps apart. Every response here is written for
these tests (none is copied from the peers' case file)."""

from __future__ import annotations

import pytest

import prmtree
from prmtree.engine.output import read_table
from prmtree.engine.steps import Segmenter, merge_steps, split_sentences
from prmtree.policies import Completion

split = Segmenter().split


def test_numbered_list_with_dot_and_paren_markers():
    text = ("1. Count the red squares: there are 4.\n"
            "2. Count the blue circles: there are 3.\n"
            "3) Add them: 4 + 3 = 7.")
    assert split(text) == ["1. Count the red squares: there are 4.", "2. Count the blue circles: there are 3.",
                           "3) Add them: 4 + 3 = 7."]


def test_nested_items_and_continuation_lines_stay_with_their_item():
    text = ("1. Read the chart:\n"
            "   - bar A is 12\n"
            "   - bar B is 5\n"
            "2. Subtract: 12 - 5 = 7.\n"
            "   This is the gap between the bars.")
    assert split(text) == ["1. Read the chart:\n   - bar A is 12\n   - bar B is 5",
                           "2. Subtract: 12 - 5 = 7.\n   This is the gap between the bars."]


def test_bulleted_list_with_dash_and_star():
    text = "- The triangle has base 6.\n- Its height is 4.\n* So its area is 12."
    assert split(text) == ["- The triangle has base 6.", "- Its height is 4.", "* So its area is 12."]


def test_bold_headers_each_open_a_step_and_head_it():
    text = ("**Step 1: Read the figure.** The angle at A is 40 degrees.\n"
            "**Step 2: Use the angle sum.** 180 - 40 - 90 = 50.\n"
            "**Analysis**\n"
            "The missing angle is 50 degrees.")
    assert split(text) == ["**Step 1: Read the figure.** The angle at A is 40 degrees.",
                           "**Step 2: Use the angle sum.** 180 - 40 - 90 = 50.",
                           "**Analysis**\nThe missing angle is 50 degrees."]


def test_lone_header_blocks_are_merged_into_the_step_they_head():
    text = "### Step 1\n\nThe rectangle is 3 by 5.\n\n**Area**\n\nIts area is 3 * 5 = 15."
    assert split(text) == ["### Step 1\n\nThe rectangle is 3 by 5.", "**Area**\n\nIts area is 3 * 5 = 15."]


def test_step_n_lines_in_one_block():
    text = "Step 1: The jar holds 9 marbles.\nStep 2: Two are taken, so 9 - 2 = 7 remain.\nStep 3: 7 is odd."
    assert split(text) == ["Step 1: The jar holds 9 marbles.", "Step 2: Two are taken, so 9 - 2 = 7 remain.",
                           "Step 3: 7 is odd."]


def test_list_items_inside_display_math_or_code_do_not_split():
    text = "1. Expand:\n$$\n- 3x + 2\n- x\n$$\n2. Run it:\n```\n- item\n1. not a step\n```"
    assert split(text) == ["1. Expand:\n$$\n- 3x + 2\n- x\n$$", "2. Run it:\n```\n- item\n1. not a step\n```"]


def test_blank_line_paragraphs_are_steps():
    text = "The photo shows three dogs.\n\nTwo of them are brown.\n\nSo one dog is not brown."
    assert split(text) == ["The photo shows three dogs.", "Two of them are brown.", "So one dog is not brown."]


def test_one_long_paragraph_falls_back_to_sentences():
    text = ("The scale reads 3.5 kg for the first bag, e.g. the one on the left in Fig. 2 of the image. "
            "The second bag weighs $2.25$ kg, as the dial shows \\(x = 2.25. Y\\) on its face. "
            "Together they weigh \\[3.5 + 2.25 = 5.75. \\] Which is under the limit of 6 kg. "
            "So the pair can be carried as one parcel without paying the surcharge at the desk.")
    assert len(text) > 300
    assert split(text) == [
        "The scale reads 3.5 kg for the first bag, e.g. the one on the left in Fig. 2 of the image.",
        "The second bag weighs $2.25$ kg, as the dial shows \\(x = 2.25. Y\\) on its face.",
        "Together they weigh \\[3.5 + 2.25 = 5.75. \\] Which is under the limit of 6 kg.",
        "So the pair can be carried as one parcel without paying the surcharge at the desk.",
    ]


def test_a_short_paragraph_stays_one_step():
    assert split("The sign is red. It has eight sides. So it is a stop sign.") == [
        "The sign is red. It has eight sides. So it is a stop sign."]


def test_sentences_end_after_closing_math_and_not_before_lower_case():
    assert split_sentences("We get $x = 3.$ Then y = 4. and so on. Done!") == [
        "We get $x = 3.$", "Then y = 4. and so on.", "Done!"]


def test_filler_and_markup_only_steps_merge_into_their_neighbour():
    text = ("Let's solve this step by step.\n\n1. The clock shows 3:15.\n\n---\n\n"
            "2. A quarter hour later it is 3:30.\n\nI hope it is correct.")
    assert split(text) == ["Let's solve this step by step.\n\n1. The clock shows 3:15.",
                           "---\n\n2. A quarter hour later it is 3:30.\n\nI hope it is correct."]


def test_final_answer_line_stays_with_its_step():
    text = "The bars are 4 and 9.\n\nThe difference is 9 - 4 = 5.\n\nFinal Answer: 5"
    assert split(text) == ["The bars are 4 and 9.", "The difference is 9 - 4 = 5.\n\nFinal Answer: 5"]
    choice = "- Option A is too small.\n- Option C matches the 12 cm side.\n\n**Answer:** C"
    assert split(choice) == ["- Option A is too small.", "- Option C matches the 12 cm side.\n\n**Answer:** C"]
    boxed = "x = 2 + 2 = 4.\n\n**Final Answer**\n\n$\\boxed{4}$"
    assert split(boxed) == ["x = 2 + 2 = 4.\n\n**Final Answer**\n\n$\\boxed{4}$"]


def test_an_answer_first_response_keeps_the_answer_as_its_own_step():
    assert split("Answer: B\n\nThe leaf has serrated edges, which only B shows.") == [
        "Answer: B", "The leaf has serrated edges, which only B shows."]


def test_the_driver_reads_the_answer_from_the_merged_last_step(problems):
    from prmtree.engine.rollout import parse_completion

    text = "1. Count: 2 + 3 = 5.\n2. Double it: 10.\n\nThe answer is \\boxed{10}."
    r = parse_completion(problems[0], text, 20, "stop", Segmenter(), None)
    assert r.steps == ("1. Count: 2 + 3 = 5.", "2. Double it: 10.\n\nThe answer is \\boxed{10}.")
    assert r.answer == "10"


def test_max_steps_merges_the_least_content_pairs_first():
    steps = ["Okay.", "Compute the area of the big triangle: 1/2 * 4 * 6 = 12.", "So", "x = 12 + 3 = 15, the total.",
             "Done.", "The answer is 15."]
    # pair sizes 53, 52, 26, 31, 21: "Done." + answer (21), then "So" + "x = ..." (26), then those two (48)
    assert merge_steps(steps, 3) == [
        "Okay.",
        "Compute the area of the big triangle: 1/2 * 4 * 6 = 12.",
        "So\n\nx = 12 + 3 = 15, the total.\n\nDone.\n\nThe answer is 15.",
    ]
    # the old rule (near-equal groups by count) would have lumped the two key steps together
    key = ["Find the radius from the chord length and the distance to the centre: r = 5.", "So", "Then",
           "The area is pi * r^2 = 25 pi, about 78.5."]
    assert merge_steps(key, 2) == ["Find the radius from the chord length and the distance to the centre: r = 5.",
                                   "So\n\nThen\n\nThe area is pi * r^2 = 25 pi, about 78.5."]
    assert merge_steps(key, 1) == ["\n\n".join(key)]


def test_max_steps_bounds_prefix_plus_continuation_for_real_output():
    text = "\n".join(f"{i}. Step number {i} computes {i} * 2 = {2 * i}." for i in range(1, 9))
    seg = Segmenter(max_steps=5)
    assert len(seg.split(text)) == 5
    assert len(seg.split(text, depth=3)) == 2
    assert "\n\n".join(seg.split(text, depth=3)).replace("\n\n", "\n") == text


def test_a_whole_run_with_a_policy_that_answers_in_markdown_lists(tmp_path, problems):
    items = ["1. **Read the image.** The question asks for x.", "2. Work it out: the value follows from the scene.",
             "3. Check the sum once more."]

    class ListPolicy:
        name = "markdown-list"

        async def generate(self, request):
            rest = items[len(request.prefix):]
            out = []
            for i in range(request.n):
                answer = request.problem.answer if i % 2 == 0 else "-1"
                body = "\n".join(rest) if rest else "Nothing left to do."
                out.append(Completion(f"Let's solve this step by step.\n\n{body}\n\n**Final Answer:** \\boxed{{{answer}}}", 30))
            return out

    s = prmtree.run(problems[:3], policy=ListPolicy(), out=tmp_path,
                    config={"search": {"strategy": "shepherd", "k": 4, "budget": 16}})
    assert s.problems_done == 3
    rows = read_table(tmp_path, "steps").to_pylist()
    assert rows
    assert {row["final_correct"] for row in rows} == {True, False}
    for row in rows:
        boxed = row["answer"] if row["final_correct"] else "-1"
        # the filler heads the first item; the final-answer line stays with the last item
        assert row["completions"] == ["Let's solve this step by step.\n\n" + items[0], items[1],
                                      f"{items[2]}\n\n**Final Answer:** \\boxed{{{boxed}}}"]


@pytest.mark.parametrize("text", ["", "   \n\n  ", "---", "**Step 1**"])
def test_degenerate_responses(text):
    out = split(text)
    assert out == ([] if not text.strip() else [text.strip()])


def test_simulated_style_output_splits_exactly_at_blank_lines():
    text = "Add 3: x = 0 + 3 = 3.\n\nNext, multiply by 2, giving x = 3 * 2 = 6. The answer is \\boxed{6}."
    assert split(text) == ["Add 3: x = 0 + 3 = 3.", "Next, multiply by 2, giving x = 3 * 2 = 6. The answer is \\boxed{6}."]
