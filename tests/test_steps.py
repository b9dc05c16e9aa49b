import pytest

from prmtree.engine.answers import extract_answer, last_boxed
from prmtree.engine.steps import Segmenter, merge_steps, normalize_step


def test_blank_line_blocks_are_steps_and_empty_ones_dropped():
    text = "First we count.\n\n  \n\nThen add 2.\n \nSo \\boxed{5}."
    assert Segmenter().split(text) == ["First we count.", "Then add 2.", "So \\boxed{5}."]


def test_single_newlines_stay_inside_a_step():
    assert Segmenter().split("a\nb\n\nc") == ["a\nb", "c"]


def test_step_markers():
    text = "Let me think.\nStep 1: count 3.\nStep 2: add 4\nmore text\n**Step 3:** answer \\boxed{7}"
    assert Segmenter("step_marker").split(text) == [
        "Let me think.\ncount 3.",  # a contentless opening heads step 1
        "add 4\nmore text",
        "answer \\boxed{7}",
    ]


def test_step_tags_and_unterminated_last_tag():
    text = "<step>one</step>\n<step> two </step><step>three"
    assert Segmenter("tags").split(text) == ["one", "two", "three"]


def test_tags_missing_gives_one_giant_step():
    assert Segmenter("tags").split("no tags here\n\nat all") == ["no tags here\n\nat all"]


def test_custom_callable():
    seg = Segmenter(lambda t: t.split("|"))
    assert seg.split("a| b ||c") == ["a", "b", "c"]


def test_max_steps_merges_neighbours_in_order():
    steps = [f"s{i}" for i in range(10)]
    merged = merge_steps(steps, 4)
    assert len(merged) == 4
    assert "\n\n".join(merged).split("\n\n") == steps
    assert Segmenter(max_steps=3).split("\n\n".join(steps)) == merge_steps(steps, 3)


def test_bad_segmenter_config_is_refused_with_the_value():
    with pytest.raises(ValueError, match="'lines'"):
        Segmenter("lines")
    with pytest.raises(ValueError, match="max_steps"):
        Segmenter(max_steps=0)


def test_first_step_only():
    assert Segmenter().first_step("a\n\nb") == ["a"]
    assert Segmenter().first_step("") == []


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so the answer is \\boxed{42}.", "42"),
        ("\\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("nested \\boxed{\\sqrt{x^{2}}}", "\\sqrt{x^{2}}"),
        ("\\fbox{B}", "B"),
        ("Reasoning...\nAnswer: (C)", "(C)"),
        ("Final answer: 12 apples", "12 apples"),
        ("blah\nthe last line is it\n\n", "the last line is it"),
        ("truncated \\boxed{12", None),
        ("", None),
        ("   \n ", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_last_boxed_needs_braces():
    assert last_boxed("\\boxed 5") is None
    assert last_boxed("\\boxed {5}") == "5"


def test_normalize_step_collapses_whitespace():
    assert normalize_step("  a \n\t b  ") == "a b"
