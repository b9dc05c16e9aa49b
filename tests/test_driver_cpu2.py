"""The driver's CPU work, round 2 (issue 21): parsing's fast paths and memos give what the
plain code gives, on varied inputs: boxes found in one scan, the memoised answer reading,
the one-line-blocks step split and the memoised step kinds, the ASCII shortcut past the
encoding checks, and the one-test completion contract."""

import random

import pytest

from prmtree.engine.answers import extract, prose
from prmtree.engine.answers.extract import Found, find_answer, read_answer, read_answer_memo
from prmtree.engine.answers.marks import ANSWER_LINE, all_boxed, closing_brace
from prmtree.engine.errors import PolicyContractError
from prmtree.engine.records import Completion, GenerationRequest, Problem, check_completions
from prmtree.engine.rollout import parse_completion
from prmtree.engine import steps as steps_module
from prmtree.engine.steps import Segmenter, StepFormat, split_structured

# --------------------------------------------------------------------------- references


def _plain_all_boxed(text):
    """all_boxed as it was: a find per command, the braces matched one by one."""
    found, pos, n = [], 0, len(text)
    while True:
        b, f = text.find("\\boxed", pos), text.find("\\fbox", pos)
        start = min(x for x in (b, f, n) if x >= 0)
        if start >= n:
            return found
        i = start + 1
        while i < n and text[i].isalpha():
            i += 1
        while i < n and text[i] == " ":
            i += 1
        if i >= n or text[i] != "{":
            pos = i
            continue
        j = closing_brace(text, i)
        if j is None:
            return found
        found.append((j + 1, text[i + 1 : j].strip()))
        pos = j + 1


def _plain_split_structured(text):
    """split_structured as it was: the fast-path test by substitution, kinds unmemoised."""
    S = steps_module
    kind = S._short_kind.__wrapped__
    if "\n" not in S._BLANK_LINE.sub("", text):
        steps = [b for b in (b.strip() for b in S._BLANK_LINE.split(text)) if b]
        if len(steps) == 1:
            if len(steps[0]) <= S.SENTENCE_FALLBACK_CHARS:
                return steps
        elif all(len(s) <= S.LONG_STEP_CHARS and (len(s) > S._SHORT_STEP_CHARS or kind(s) == S._CONTENT)
                 for s in steps):
            return steps
    spans, pos = [], 0
    for m in S._BLANK_LINE.finditer(text):
        S._block_spans(text, pos, m.start(), spans)
        pos = m.end()
    S._block_spans(text, pos, len(text), spans)
    if len(spans) > 1:
        spans = S._merge_contentless(text, spans)
    if spans and ((len(spans) == 1 and spans[0][1] - spans[0][0] > S.SENTENCE_FALLBACK_CHARS)
                  or any(e - s > S.LONG_STEP_CHARS for s, e in spans)):
        spans = S._sentence_fallback(text, spans)
    return [text[s:e] for s, e in spans]


# --------------------------------------------------------------------------- varied inputs

_PIECES = [
    "Add 3: x = 4 + 3 = 7.", "The answer is \\boxed{B}.", "\\boxed{\\frac{1}{2}}", "\\fbox{12}", "\\boxed {7}",
    "\\boxedx{3}", "\\boxed", "\\boxed{", "\\boxed{a{b}c}", "\\boxed{{}}", "}", "{", "**Step 1:**", "## Solution",
    "Let's solve this step by step.", "Final Answer: The final answer is 7. I hope it is correct.",
    "1. First item", "- bullet", "Therefore, $x = 5$.", "So the answer is (C) 80.", "A or B", "not sure, maybe 12",
    "The answer: yes", "\\(x\\)", "$$y = 2$$", "Hmm.", "x" * 170, "y " * 400, "Answer: \\boxed{3}, \\boxed{4}",
    "The answer is \\boxed{\\text{teal}}.", "e.g. this. Then that. And 3.5 more.", "  ", "", "Step 2: go on",
    "\u00e9t\u00e9 \u00bd \u00b2", "Option B is correct", "choice (D)", "\\fbox{x}\\boxed{y}",
]
_JOINS = ["\n\n", "\n", " ", "\n \n", "\n\t\n\n", ""]


def _texts(seed, count):
    rng = random.Random(seed)
    for _ in range(count):
        parts = [rng.choice(_PIECES) for _ in range(rng.randint(0, 8))]
        text = ""
        for p in parts:
            text += p + rng.choice(_JOINS)
        yield text


def test_all_boxed_equals_the_plain_scan():
    texts = list(_texts(1, 3000)) + ["\\boxed{" * 50 + "}" * 49, "\\fbox \\boxed{1}", "a\\boxedb {2}", "\\boxed{}"]
    for text in texts:
        assert all_boxed(text) == _plain_all_boxed(text), text


def test_split_equals_the_plain_split():
    seg = Segmenter("blank_line")
    seg_bounded = Segmenter("blank_line", max_steps=3)
    for text in list(_texts(2, 3000)):
        plain = _plain_split_structured(text)
        assert split_structured(text) == plain, text
        assert seg.split(text) == [s.strip() for s in plain if s and s.strip()]
        # max_steps merges the same steps; the blank_line reader's merged step is the text between
        # them (a slice: the gaps are whitespace) where a custom splitter's is joined by "\n\n"
        bounded = seg_bounded.split(text, 1)
        joined = Segmenter(lambda t: _plain_split_structured(t), 3).split(text, 1)
        assert [steps_module.normalize_step(s) for s in bounded] == [steps_module.normalize_step(s) for s in joined]
        assert all(s in text for s in bounded)
    for name in ("step_marker", "tags"):  # the other formats still strip and drop empty steps
        fmt = StepFormat(name)
        for text in _texts(3, 300):
            raw = fmt.split(text)
            assert Segmenter(fmt).split(text) == [s.strip() for s in raw if s and s.strip()]


def test_step_kinds_memo_equals_the_plain_kind():
    plain = steps_module._short_kind.__wrapped__
    for piece in _PIECES + [p.strip() for p in _texts(4, 500)]:
        if len(piece) <= steps_module._SHORT_STEP_CHARS:
            assert steps_module._kind(piece) == plain(piece), piece
            assert steps_module._kind(piece) == plain(piece), piece  # a memo hit too


@pytest.mark.parametrize("options,choice", [
    (None, False), (None, True), ({"A": "red", "B": "blue", "C": "80", "D": "teal"}, False),
    (["red", "blue", "green"], True), (("x", "y"), False), ({}, True),
])
def test_memoised_answer_reading_equals_the_plain_one(options, choice):
    answers = ["B", "(C) 80", "The answer is (B).", "A or B", "3 or 4", "not sure, maybe 12", "$\\frac{1}{2}$",
               "Because B is valid", "option D", "teal", "12.", "**yes**", "\\text{red}", "x" * 300, "", "  "]
    for gold in ("B", "12", "1, 2", "either", "yes"):
        for answer in answers:
            expected = read_answer(answer, gold, options, choice)
            assert read_answer_memo(answer, gold, options, choice) == expected
            assert read_answer_memo(answer, gold, options, choice) == expected  # from the memo


def test_memoised_reading_takes_what_cannot_be_a_key():
    unhashable = {"A": ["red"], "B": ["blue"]}
    assert read_answer_memo("The answer is (B).", "B", unhashable) == read_answer("The answer is (B).", "B", unhashable)
    odd_keys = {1: "red", 2: "blue"}
    assert read_answer_memo("(B) blue", "B", odd_keys) == read_answer("(B) blue", "B", odd_keys)
    assert read_answer_memo(None, "B") == Found(None, "no answer")


def test_find_answer_on_varied_texts_equals_the_unmemoised_reading(monkeypatch):
    texts = list(_texts(5, 1500))
    options = {"A": "red", "B": "blue"}
    fast = [find_answer(t, g, o, c) for t in texts for g, o, c in (("7", None, False), ("B", options, True))]
    monkeypatch.setattr(extract, "read_answer_memo", read_answer)
    plain = [find_answer(t, g, o, c) for t in texts for g, o, c in (("7", None, False), ("B", options, True))]
    assert fast == plain


# The plain patterns the answer phrases and conclusions were found with before they were
# made fast (a boundary in front made them try every position: ~80 and ~200 us per 2 KB).
_PLAIN_CONCLUSION = __import__("re").compile(
    r"(?:^|(?<=[.!?:$\n])|(?<!\S))[^\S\n]*(?:Therefore|Thus|Hence|So|In\s+conclusion|Consequently|"
    r"We\s+(?:find|get|obtain|conclude)\s+that|This\s+gives)\b[,:]?[^\S\n]*"
    r"|(?:^|(?<=[.!?\n])|(?<=[.!?]\s))[^\S\n]*(?:therefore|thus|hence|so|we\s+find\s+that)\b[,:]?[^\S\n]*",
)
_PHRASE_TOKENS = ["answer", "Answer", "ANSWER", "final", "Final", "the", "The", "correct", "best", ":", "：", " is",
                  " would be", " ", "  ", "\n", "\t", "*", "x", "12", "é", "ß", "İ", "\u00a0", ".", "!", "?", "$",
                  "So", "so", "Thus", "thus", "Therefore", "hence", "also", "In conclusion", "We find that",
                  "we find that", "This gives", "Consequently", "\r", "\u2003", "Final Answer:", "the correct answer is",
                  " " * 70, "\n" + " " * 65]


def test_answer_phrases_and_conclusions_are_found_where_the_plain_patterns_find_them():
    rng = random.Random(11)
    for n in range(30_000):  # every tenth longer than the tail a conclusion is looked for first
        text = "".join(rng.choice(_PHRASE_TOKENS) for _ in range(rng.randint(0, 16) if n % 10 else rng.randint(100, 300)))
        # the last phrase that names an answer ("... this answer is correct" only judges one)
        plain = [m for m in prose._FINAL_PHRASE.finditer(text) if not prose._names_nothing(text, m)]
        first = prose.first_answer(text)
        fast = prose.last_phrase(text, first)
        assert (fast.span() if fast else None) == (plain[-1].span() if plain else None), text
        assert prose._answer_lines(text, first) == ANSWER_LINE.findall(text), text
        ends = [m.end() for m in _PLAIN_CONCLUSION.finditer(text)]
        assert prose._last_conclusion(text) == (ends[-1] if ends else None), text


def test_parse_keeps_its_checks_on_text_that_is_not_ascii():
    problem = Problem(id="p", question="q", answer="12")
    seg = Segmenter("blank_line")
    surrogate = parse_completion(problem, "Add 3.\n\nSo \\boxed{12} \udc80", 5, "stop", seg, None)
    # not valid Unicode: stored replaced, a wrong rollout whose answer is never checked
    assert surrogate.malformed == "undecodable" and surrogate.answer is None and "\udc80" not in surrogate.steps[-1]
    junk = parse_completion(problem, b"Add 3.\n\n\\boxed{12} \xff", 5, "stop", seg, lambda p, a: True)
    assert junk.malformed == "undecodable" and junk.answer is None and not junk.correct
    assert junk.steps[-1].endswith("\\boxed{12} \ufffd")  # the invalid byte replaced, stored
    # a U+FFFD the model wrote is a valid character: ordinary text, graded as any other
    replaced = parse_completion(problem, "Add 3.\n\n\\boxed{12} \ufffd", 5, "stop", seg, lambda p, a: a == "12")
    assert replaced.malformed is None and replaced.answer == "12" and replaced.correct
    accented = parse_completion(problem, "\u00c9tape un.\n\n\\boxed{12}", 5, "stop", seg, None)
    assert accented.malformed is None and accented.answer == "12"
    plain = parse_completion(problem, "Add 3.\n\nThen x = 12, so \\boxed{12}", 5, "stop", seg, None)
    assert plain.malformed is None and plain.steps == ("Add 3.", "Then x = 12, so \\boxed{12}")


def test_completion_contract_still_refuses_what_it_refused():
    request = GenerationRequest(problem=Problem(id="p", question="q", answer="1"), prefix=(), n=1)
    good = Completion("x", 3)
    assert check_completions(request, [good]) == [good]
    assert check_completions(request, [Completion(b"x", 3)])  # bytes text: allowed
    bad = [
        (Completion("x", True), "Completion.num_tokens must be an int >= 0, got True"),
        (Completion("x", -1), "Completion.num_tokens must be an int >= 0, got -1"),
        (Completion("x", 1, cached_tokens=-2), "Completion.cached_tokens must be an int >= 0, got -2"),
        (Completion("x", 1, prompt_tokens=1.5), "Completion.prompt_tokens must be an int >= 0, got 1.5"),
        (Completion("x", 1, finish_reason="eos"), "Completion.finish_reason must be one of stop, length, got 'eos'"),
        (Completion(None, 1), "Completion.text must be a string, got NoneType"),
        ("x", "must return Completion objects, got str"),
    ]
    for completion, message in bad:
        with pytest.raises(PolicyContractError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
            check_completions(request, [completion])


# --------------------------------------------------------------------------- the collector during a run

import gc  # noqa: E402

import prmtree  # noqa: E402
from prmtree import runner  # noqa: E402
from prmtree.engine.synthetic import generate_problems  # noqa: E402
from prmtree.policies.simulated import SimulatedPolicy  # noqa: E402


class _Watching(SimulatedPolicy):
    """The simulated policy, noting the collector's settings while the run generates."""

    name = "simulated"

    def __init__(self):
        super().__init__()
        self.seen = set()

    async def generate(self, request):
        self.seen.add((gc.get_threshold(), gc.get_freeze_count() > 0))
        return await super().generate(request)


@pytest.fixture
def collector():
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def test_a_run_tunes_the_collector_and_puts_it_back(tmp_path, collector):
    gc.set_threshold(700, 10, 10)
    policy = _Watching()
    problems = generate_problems(5, seed=3)
    config = {"search": {"k": 4, "budget": 16}, "labels": {"learn_floor": False}}
    a = prmtree.run(problems, policy=policy, out=tmp_path / "a", config=config)
    assert policy.seen == {((runner.GC_YOUNG_THRESHOLD, runner.GC_MIDDLE_THRESHOLD, 10), True)}
    assert gc.get_threshold() == (700, 10, 10) and gc.get_freeze_count() == 0
    gc.disable()  # the rows do not depend on the collector
    try:
        b = prmtree.run(problems, policy=SimulatedPolicy(), out=tmp_path / "b", config=config)
    finally:
        gc.enable()
    assert a.rollouts == b.rollouts > 0
    from conftest import rows
    for table in ("steps", "nodes"):
        assert rows(tmp_path / "a", table) == rows(tmp_path / "b", table)


def test_the_callers_collector_settings_are_respected(collector):
    gc.set_threshold(500_000, 5, 5)  # higher already: kept
    with runner.collector_tuned():
        assert gc.get_threshold() == (500_000, 5, 5) and gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
    gc.set_threshold(0, 10, 10)  # disabled by the caller: left so
    with runner.collector_tuned():
        assert gc.get_threshold()[0] == 0
    gc.set_threshold(700, 10, 10)
    gc.freeze()  # the caller froze its own heap: not unfrozen by a run
    frozen = gc.get_freeze_count()
    with runner.collector_tuned():
        with runner.collector_tuned():  # nested: restored once, at the outer end
            assert gc.get_threshold()[0] == runner.GC_YOUNG_THRESHOLD
        assert gc.get_threshold()[0] == runner.GC_YOUNG_THRESHOLD
    assert gc.get_threshold() == (700, 10, 10) and gc.get_freeze_count() >= frozen > 0


class _Cycle:
    pass


def test_what_a_run_kept_goes_to_the_oldest_generation_unscanned(collector):
    """Restoring the thresholds would set off a middle collection of everything the run
    kept; it is promoted without one, and a cycle it left is still collected later."""
    import weakref

    gc.set_threshold(700, 10, 10)
    gc.collect()
    with runner.collector_tuned():
        kept = [[i] for i in range(100)]  # tracked objects made during the run, alive after it
        cycle = _Cycle()
        cycle.me = cycle
        gone = weakref.ref(cycle)
        del cycle
    young = {id(o) for o in gc.get_objects(0) + gc.get_objects(1)}
    assert not any(id(o) in young for o in (kept, *kept))
    oldest = {id(o) for o in gc.get_objects(2)}
    assert all(id(o) in oldest for o in (kept, *kept))
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == (700, 10, 10)
    gc.collect()
    assert gone() is None
