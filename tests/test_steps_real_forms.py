"""Steps from forms real models write that the first reader got wrong: reasoning markup
(``<think>``) lines, Windows line endings, blank lines inside display math and code fences,
inline list markers and option letters in the sentence fallback, lists that mix bullets and
numbers, steps that merely open with "The answer...", ``max_steps`` merges as slices, and
``Step-1:`` lines. Every response here is written for these tests."""

from __future__ import annotations

import pytest

from prmtree.engine.steps import Segmenter, split_sentences, split_structured

split = Segmenter().split


def _slices(text, steps):
    pos = 0
    for step in steps:
        at = text.find(step, pos)
        assert at >= 0, f"{step!r} is not a slice of the text after {pos}"
        pos = at + len(step)


# --------------------------------------------------------------------------- reasoning markup


def test_think_tag_lines_head_the_next_step_or_close_the_one_before():
    text = ("<think>\n\nOkay, so I need the area of the triangle in the picture. The base is 6.\n\n"
            "Wait, the height is marked 4, so the area is 12.\n\n</think>\n\nThe area is 12.\n\n"
            "**Final Answer**\n\\boxed{12}")
    assert split(text) == [
        "<think>\n\nOkay, so I need the area of the triangle in the picture. The base is 6.",
        "Wait, the height is marked 4, so the area is 12.\n\n</think>",
        "The area is 12.",
        "**Final Answer**\n\\boxed{12}",
    ]


def test_one_line_paragraphs_with_think_tags_are_not_labelled_steps():
    # the fast path (every block one line) must not keep a tag as a step either
    text = "<think>\n\nThe bar for May is 7.\n\nThe bar for June is 9.\n\n</think>\n\nJune is higher by 2."
    assert split(text) == ["<think>\n\nThe bar for May is 7.", "The bar for June is 9.\n\n</think>",
                           "June is higher by 2."]


def test_other_reasoning_markup_lines():
    text = ("<|begin_of_thought|>\n\nThe bar for May is 7 and the bar for June is 9.\n\nSo June is higher by 2.\n\n"
            "<|end_of_thought|>\n\n<|begin_of_solution|>\n\nJune is higher by 2.\n\n<|end_of_solution|>")
    assert split(text) == [
        "<|begin_of_thought|>\n\nThe bar for May is 7 and the bar for June is 9.",
        "So June is higher by 2.\n\n<|end_of_thought|>",
        "<|begin_of_solution|>\n\nJune is higher by 2.\n\n<|end_of_solution|>",
    ]
    assert split("\u25c1think\u25b7\n\nThe base is 6.\n\nThe area is 12.\n\n\u25c1/think\u25b7\n\nSo 12.") == [
        "\u25c1think\u25b7\n\nThe base is 6.", "The area is 12.\n\n\u25c1/think\u25b7", "So 12."]
    # a closing tag with nothing before it heads the step after it
    assert split("</think>\n\nThe area is 12.") == ["</think>\n\nThe area is 12."]


# --------------------------------------------------------------------------- CRLF


def test_crlf_blank_lines_separate_steps_like_lf():
    lf = "The red bar in the chart reaches 12.\n\nThe blue bar reaches 8.\n\nSo the difference is 12 - 8 = 4."
    crlf = lf.replace("\n", "\r\n")
    assert split(crlf) == split(lf) == ["The red bar in the chart reaches 12.", "The blue bar reaches 8.",
                                        "So the difference is 12 - 8 = 4."]
    text = "### Step 1\r\n\r\nThe red bar is 12.\r\n \r\nThe blue bar is 8."
    assert split(text) == ["### Step 1\r\n\r\nThe red bar is 12.", "The blue bar is 8."]  # slices: text not rewritten
    listed = "1. Red is 12.\r\n2. Blue is 8.\r\n\r\nSo the difference is 4."
    assert split(listed) == ["1. Red is 12.", "2. Blue is 8.", "So the difference is 4."]


# --------------------------------------------------------------------------- displays and fences


@pytest.mark.parametrize("text", [
    "Area is\n$$\nA = \\pi r^2\n\n= 12.56\n$$\nSo the answer is 12.56.",
    "The area is\n\\[\n\\frac{1}{2} \\times 6 \\times 4\n\n= 12\n\\]\nSo the answer is 12.",
    "We solve:\n\\begin{aligned}\n2x + 3 &= 11 \\\\\n\n2x &= 8 \\\\\n\nx &= 4\n\\end{aligned}\nSo x = 4.",
    "We solve:\n$$\\begin{cases}\nx + y = 5\n\nx - y = 1\n\\end{cases}$$\nSo x = 3.",
])
def test_a_blank_line_inside_display_math_does_not_split_it(text):
    assert split(text) == [text]


def test_a_blank_line_inside_a_code_fence_does_not_split_it():
    text = "```python\nimport math\n\nr = 3\narea = math.pi * r**2\n\nprint(area)\n```\n\nThe area is about 28.27."
    assert split(text) == ["```python\nimport math\n\nr = 3\narea = math.pi * r**2\n\nprint(area)\n```",
                           "The area is about 28.27."]
    # one-line blocks (the fast path) inside $$ .. $$
    assert split("$$ a = 3\n\nb = 4 $$\n\nSo a + b = 7.") == ["$$ a = 3\n\nb = 4 $$", "So a + b = 7."]


def test_an_unclosed_display_protects_nothing():
    text = "The red bar is 12.\n\n$$ x = 12\n\nThe blue bar is 8."
    assert split(text) == ["The red bar is 12.", "$$ x = 12", "The blue bar is 8."]


def test_a_line_break_with_spacing_is_no_display_opener():
    text = "We have:\n\\[ x = 3 \\\\[2pt] y = 4 \\]\n1. Then x + y = 7.\n2. So the answer is 7."
    assert split(text) == ["We have:\n\\[ x = 3 \\\\[2pt] y = 4 \\]", "1. Then x + y = 7.", "2. So the answer is 7."]


# --------------------------------------------------------------------------- sentence fallback


def test_sentence_fallback_keeps_inline_list_markers_with_their_item():
    text = ("To find the gap between the tallest and the shortest bar in the chart, we go through these steps: "
            "1. Find the tallest bar, which is the red bar for 2020 reaching 45 units on the y-axis. "
            "2. Find the shortest bar, which is the green bar for 2017 reaching 12 units. "
            "3. Subtract the two values: 45 - 12 = 33. Therefore, the gap is 33.")
    assert len(text) > 300
    assert split(text) == [
        # (a lead-in ending in a colon heads the step after it, as a header does)
        "To find the gap between the tallest and the shortest bar in the chart, we go through these steps: "
        "1. Find the tallest bar, which is the red bar for 2020 reaching 45 units on the y-axis.",
        "2. Find the shortest bar, which is the green bar for 2017 reaching 12 units.",
        "3. Subtract the two values: 45 - 12 = 33.",
        "Therefore, the gap is 33.",
    ]


def test_sentence_fallback_does_not_cut_after_option_letters():
    text = ("The question asks which value is the largest among the bars in the chart, where the red bar reaches 42, "
            "the blue bar reaches 37 and the green bar reaches 40 on the vertical axis. Comparing the options "
            "A. 37 B. 40 C. 42 D. 45, the largest bar shown in the figure is 42, which is option C. So the answer is C.")
    assert len(text) > 300
    assert split(text) == [
        "The question asks which value is the largest among the bars in the chart, where the red bar reaches 42, "
        "the blue bar reaches 37 and the green bar reaches 40 on the vertical axis.",
        "Comparing the options A. 37 B. 40 C. 42 D. 45, the largest bar shown in the figure is 42, which is option C. "
        "So the answer is C.",
    ]


def test_numbers_and_point_names_still_end_sentences():
    assert split_sentences("The total is 5. Then we add 3.") == ["The total is 5.", "Then we add 3."]
    assert split_sentences("Let M be the midpoint of B. Then AM = 3.") == ["Let M be the midpoint of B.", "Then AM = 3."]
    assert split_sentences("A. The red bar is taller. B. The blue bar is taller.") == [
        "A. The red bar is taller.", "B. The blue bar is taller."]
    assert split_sentences("Step 1. Read the chart. Step 2. Add the bars.") == [
        "Step 1. Read the chart.", "Step 2. Add the bars."]


# --------------------------------------------------------------------------- lists


def test_bullets_then_numbers_in_one_block_are_each_a_step():
    text = ("From the chart:\n- Red: 12\n- Blue: 8\nSteps:\n1. Compute 12 - 8 = 4.\n2. Divide by 8: 4/8 = 0.5.\n"
            "3. Convert to percent: 50%.")
    assert split(text) == ["From the chart:\n- Red: 12", "- Blue: 8\nSteps:", "1. Compute 12 - 8 = 4.",
                           "2. Divide by 8: 4/8 = 0.5.", "3. Convert to percent: 50%."]


def test_given_and_solution_sections():
    text = ("**Given:**\n- AB = 3\n- BC = 4\n**Solution:**\n1. By Pythagoras, AC^2 = 9 + 16 = 25.\n2. So AC = 5.\n"
            "3. The perimeter is 3 + 4 + 5 = 12.\n**Answer:** 12")
    assert split(text) == ["**Given:**\n- AB = 3", "- BC = 4", "**Solution:**\n1. By Pythagoras, AC^2 = 9 + 16 = 25.",
                           "2. So AC = 5.", "3. The perimeter is 3 + 4 + 5 = 12.\n**Answer:** 12"]


def test_numbered_steps_under_one_of_two_headers_are_steps():
    text = ("Let me work through this.\n### Analysis\n1. The red bar is 12.\n2. The blue bar is 8.\n"
            "3. The difference is 12 - 8 = 4.\n### Conclusion\nThe answer is 4.")
    assert split(text) == ["Let me work through this.\n### Analysis\n1. The red bar is 12.", "2. The blue bar is 8.",
                           "3. The difference is 12 - 8 = 4.", "### Conclusion\nThe answer is 4."]


def test_sub_points_stay_with_their_item():
    # bullets right under a numbered item, even unindented, and even when the item opens the block
    assert split("1. Read the chart:\n- red 12\n- blue 8\n2. Subtract: 12 - 8 = 4.") == [
        "1. Read the chart:\n- red 12\n- blue 8", "2. Subtract: 12 - 8 = 4."]
    assert split("1. **Read the chart:**\n   - red 12\n   - blue 8\n\n2. **Subtract:** 12 - 8 = 4.") == [
        "1. **Read the chart:**\n   - red 12\n   - blue 8", "2. **Subtract:** 12 - 8 = 4."]
    # an indented list opening its block is still the block's top level
    assert split("Facts:\n\n   - red is 12\n   - blue is 8\n\nSo the gap is 4.") == [
        "Facts:\n\n   - red is 12", "- blue is 8", "So the gap is 4."]
    # items under each of two section headers are the sections' sub-points
    text = "We read the chart.\n**Red**\n- 12 in May\n- 15 in June\n**Blue**\n- 8 in May\n- 9 in June"
    assert split(text) == ["We read the chart.", "**Red**\n- 12 in May\n- 15 in June", "**Blue**\n- 8 in May\n- 9 in June"]


# --------------------------------------------------------------------------- answer-only steps


def test_a_step_that_opens_with_answer_words_and_reasons_is_its_own_step():
    text = ("The triangle is right-angled at C, so AC = 5 and BC = 12.\n\n"
            "The answer choices include 13, 15, 17; by Pythagoras AC^2 + BC^2 = 169, so AB = 13.\n\nSo the answer is A.")
    assert split(text) == ["The triangle is right-angled at C, so AC = 5 and BC = 12.",
                           "The answer choices include 13, 15, 17; by Pythagoras AC^2 + BC^2 = 169, so AB = 13."
                           "\n\nSo the answer is A."]
    text = ("The slope of the line is 2 since it rises 4 over a run of 2.\n\n"
            "Therefore, the correct option must have slope 2, which rules out B and D.\n\n"
            "Only option C has intercept 1, so the answer is C.")
    assert len(split(text)) == 3
    text = ("We get x = 3 from 2x + 1 = 7.\n\nFinal answer check: substituting x = 3 gives 2(3) + 1 = 7.\n\nAnswer: 3")
    assert split(text) == ["We get x = 3 from 2x + 1 = 7.",
                           "Final answer check: substituting x = 3 gives 2(3) + 1 = 7.\n\nAnswer: 3"]
    assert split("The bars are 4 and 9.\n\nThe answer is 5 because 9 - 4 = 5.") == [
        "The bars are 4 and 9.", "The answer is 5 because 9 - 4 = 5."]


@pytest.mark.parametrize("answer", [
    "So the answer is A.", "**Final Answer**", "**Final Answer:** 5", "**Answer:** C", "Answer: 3",
    "Therefore, the correct option is (B) 40.", "The answer is: C", "The answer is $\\boxed{5}$.", "\\boxed{5}",
    "$\\boxed{5}$", "Final Answer: The final answer is $5$. I hope it is correct.",
])
def test_a_step_that_only_states_the_answer_stays_with_the_step_before(answer):
    assert split(f"The bars are 4 and 9.\n\nThe difference is 9 - 4 = 5.\n\n{answer}") == [
        "The bars are 4 and 9.", f"The difference is 9 - 4 = 5.\n\n{answer}"]


# --------------------------------------------------------------------------- max_steps, Step-N


def test_max_steps_merges_are_slices_of_the_text():
    text = "1. Red is 12.\n2. Blue is 8.\n3. Green is 5.\n4. Total is 25."
    assert Segmenter(max_steps=2).split(text) == ["1. Red is 12.\n2. Blue is 8.", "3. Green is 5.\n4. Total is 25."]
    long = ("The red bar reaches 12 on the axis. The blue bar reaches 8 on the axis. The green bar reaches 5. "
            "The yellow bar reaches 7 on the axis. The purple bar reaches 3. Adding them gives 12 + 8 + 5 + 7 + 3. "
            "That makes 35 in all, which is the total asked for in the question about the bar chart. So it is 35 in all.")
    assert len(long) > 300
    steps = Segmenter(max_steps=3).split(long)
    assert len(steps) == 3
    _slices(long, steps)
    assert " ".join(steps) == long


def test_step_hyphen_n_lines():
    assert split("Step-1: AB = 3.\nStep-2: BC = 4.\nStep-3: AC = 5.") == [
        "Step-1: AB = 3.", "Step-2: BC = 4.", "Step-3: AC = 5."]


def test_step_marker_format_reads_bold_titles_and_heading_markers():
    seg = Segmenter("step_marker")
    text = "**Step 1: Read the chart**\nRed is 12, blue is 8.\n**Step 2: Subtract**\n12 - 8 = 4.\n\\boxed{4}"
    assert seg.split(text) == ["Read the chart\nRed is 12, blue is 8.", "Subtract\n12 - 8 = 4.\n\\boxed{4}"]
    text = "### Step 1: Identify the bars\nRed is 12.\n### Step 2: Subtract\n12 - 8 = 4.\n### Final Answer\n4"
    assert seg.split(text) == ["Identify the bars\nRed is 12.", "Subtract\n12 - 8 = 4.\n### Final Answer\n4"]
    assert seg.split("Step 1: Red is 12.\n**Step 2:** Read **this** twice.\nStep-3: Done.") == [
        "Red is 12.", "Read **this** twice.", "Done."]


@pytest.mark.parametrize("opening", ["Let's solve this step by step.", "## Solution", "<think>", "Sure! Let's work through it:"])
def test_a_contentless_opening_before_step_1_heads_it_not_a_step_of_its_own(opening):
    seg = Segmenter("step_marker")
    text = f"{opening}\nStep 1: Red is 12, blue is 8.\nStep 2: 12 - 8 = 4.\nThe answer is \\boxed{{4}}."
    assert seg.split(text) == [f"{opening}\nRed is 12, blue is 8.", "12 - 8 = 4.\nThe answer is \\boxed{4}."]
    # an opening with content stays a step; a text without markers is one step, as before
    assert seg.split("The chart has two bars.\nStep 1: Red is 12.\nStep 2: So 4.") == [
        "The chart has two bars.", "Red is 12.", "So 4."]
    assert seg.split(f"{opening}\nRed is 12.") == [f"{opening}\nRed is 12."]


# --------------------------------------------------------------------------- a review's regressions


def test_a_sentence_ending_on_a_difference_or_product_still_ends():
    text = ("Let me compute 428 - 285. 428 - 200 = 228, 228 - 85 = 143. So the count is 7*288. "
            "So, 288 is within the 286 to 428 range. ") * 3
    steps = Segmenter().split(text)
    assert steps[:4] == ["Let me compute 428 - 285.", "428 - 200 = 228, 228 - 85 = 143.", "So the count is 7*288.",
                         "So, 288 is within the 286 to 428 range."]


@pytest.mark.parametrize("ending", ["The answer is 5, so option C.", "The answer is 5 which is option C.",
                                    "Answer: 5 (from step 2)", "Thus the answer is 5 as computed."])
def test_an_answer_restated_with_a_few_words_stays_with_the_step_before(ending):
    text = f"The triangle is right-angled, so the side is 5.\n\n{ending}"
    assert Segmenter().split(text) == [text]


def test_many_fences_on_one_long_line_are_read_in_linear_time():
    import time

    text = "a\n\nb " + "x ``` " * 40_000
    start = time.perf_counter()
    split_structured(text)
    assert time.perf_counter() - start < 2.0  # ~15 ms; the line-start check was quadratic (3.7 s at 300 KB)
