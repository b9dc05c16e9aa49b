r"""Step segmentation.

Segmentation decides what a "step" is, which is where PRM data succeeds or fails, so
it is pluggable: blank-line blocks read with the structure real models write (the
default), ``Step N:`` markers, explicit ``<step>...</step>`` tags, or any callable
``str -> list[str]``.

Real VLM output rarely follows "one step per paragraph": it comes as markdown numbered or
bulleted lists, bold headers, ``Step N:`` lines, or one long paragraph. The default
format therefore reads, in one linear pass:

1. blank-line blocks (the format's own delimiter: text written as asked splits exactly
   there, so the simulated policy's steps are read unchanged; ``\r\n`` endings alike), but
   not at a blank line inside display math (``$$..$$``, ``\[..\]``, ``\begin{env}..\end{env}``)
   or a code fence;
2. inside a block, a new step at every top-level list item (``1.``, ``1)``, ``-``, ``*``,
   ``+``; nested items and other lines stay with the item above them, and so do items of
   the other kind right under a list's item, "1. Read:" then "- red 12"), every ``Step N:``
   line, markdown heading and line that opens in bold (``**Step 1: ...**``,
   ``**Analysis**``); never inside display math or a code fence;
3. steps that carry no content are merged into a neighbour: a lone header line, a filler
   line ("Let's solve this step by step.", "Sure!"), a list marker, an opening reasoning
   tag (``<think>``) or a line of only punctuation/markup heads the step after it (the
   step before it when it is last); a closing tag (``</think>``) and a step that only
   states the final answer ("Final Answer: ...", ``\boxed{..}``, "Answer: C", not "The
   answer choices include ...") stay with the step before it;
4. sentence-level fallback: a response still in one step longer than
   :data:`SENTENCE_FALLBACK_CHARS`, and any step longer than :data:`LONG_STEP_CHARS`, is
   split into sentences (not at decimals ``3.5``, abbreviations ``e.g.``/``Fig. 2``, a
   lower-case continuation, an inline list marker or option letter ``steps: 1. Find``,
   ``options A. 37 B. 40``, or inside ``$..$``/``$$..$$``/``\(..\)``/``\[..\]`` math), with
   the same merges.

A step is always a stripped slice of the original text, merges included (``max_steps``
merges too: the text from the first merged step to the last).
"""

from __future__ import annotations

import bisect
import functools
import heapq
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

STEP_FORMATS: tuple[str, ...] = ("blank_line", "step_marker", "tags")

#: A response read as one step longer than this is split into sentences.
SENTENCE_FALLBACK_CHARS = 300
#: A step longer than this is split into sentences even when the response has others.
LONG_STEP_CHARS = 1000
#: Steps at most this long are checked for carrying no content (headers, filler, answers).
_SHORT_STEP_CHARS = 160

_BLANK_LINE = re.compile(r"\n[ \t\r]*\n")  # "\r\n\r\n" too: the "\r"s stay in the blocks, stripped off
#: What can hold a blank line that is no step boundary: display math and code fences.
#: (Literal openings only, so the scan is fast: a fence's line start and "\\[2pt]" are checked by hand.)
_DISPLAY_TOKEN = re.compile(r"\$\$|```|~~~|\\(?:\[|\]|(begin|end)\{([^{}\n]{1,40})\})")
_STEP_MARKER = re.compile(r"(?im)^[ \t]*(?:#{1,6}[ \t]+)?(?:\*\*)?step[ \t-]*\d+[ \t]*(?:\*\*)?[ \t]*[:.)][ \t]*(?:\*\*)?")
_STEP_TAG = re.compile(r"<step>(.*?)(?:</step>|\Z)", re.DOTALL)
_WHITESPACE = re.compile(r"\s+")

# -- structure inside a block: which lines open a step
_LINE = re.compile(r"[^\n]*\n?")
_LIST_ITEM = re.compile(r"([ \t]*)(?:(\d{1,3}[.)])|([-*+\u2022]))[ \t]+\S")
_OPENS_STEP = re.compile(
    r"[ \t]*(?:#{1,6}[ \t]+\S"                                   # markdown heading
    r"|(?:\*\*|__)(?![\s*_])"                                      # a line that opens in bold
    r"|(?:\*\*)?step[ \t-]*\d+[ \t]*(?:\*\*)?[ \t]*[:.)])",          # Step N:
    re.IGNORECASE,
)
_FENCE = re.compile(r"[ \t]*(?:```|~~~)")
_MATH_TOKEN = re.compile(r"\$\$|\\\[|\\\]|\\begin\{|\\end\{")

# -- steps without content
_MARKER_ONLY = re.compile(r"(?:[\W_]|\d{1,3}[.)]|step[ \t-]*\d+)*", re.IGNORECASE)
_HEADER = re.compile(
    r"(?:(?:\d{1,3}[.)]|[-*+\u2022])[ \t]+)?"
    r"(?:#{1,6}[ \t]+[^\n]*"                                         # ## Heading
    r"|\*\*[^*\n]+\*\*[ \t]*:?[ \t]*|__[^_\n]+__[ \t]*:?[ \t]*"      # **Header** / __Header__
    r"|(?:\*\*)?step[ \t-]*\d+[ \t]*(?:\*\*)?[ \t]*[:.)-]?[ \t]*(?:\*\*)?)",  # Step 2:
    re.IGNORECASE,
)
_FILLER = re.compile(
    r"[*_#> \t]*(?:(?:sure|okay|ok|alright|all right|certainly|of course|great|hmm+|well|got it|understood)\b[ \t,.!]*)*"
    r"(?:(?:let'?s|let us|let me|i will|i'll|we will|we'll|we can|i need to|we need to"
    r"|to (?:solve|answer) (?:this|the)(?: problem| question)?,?(?:[ \t]+(?:let'?s|we will|we can|i will|i'll))?)[ \t]+"
    r"(?:solve|think|work|go|analy[sz]e|break|approach|tackle|reason|figure|do|answer|start|begin)\b"
    r"(?:[ \t]+(?:this|it|the|problem|question|through|out|down|together|about|now|first|step[- ]by[- ]step"
    r"|carefully|systematically))*"
    r"|i hope (?:it|this) (?:is correct|helps))?[ \t]*[.!:]*[ \t*_]*",
    re.IGNORECASE,
)
_ANSWER_ONLY = re.compile(
    r"[#>*_ \t-]*(?:(?:(?:so|thus|hence|therefore)[ \t,]*)?(?:the[ \t]+)?"
    r"(?:final[ \t]+answer|answer|correct[ \t]+(?:answer|option|choice))\b"
    r"|[$(\\\[ \t]*\\boxed\{)",
    re.IGNORECASE,
)
#: A step that only states the final answer ("The answer is C.", "**Final Answer:** 12", "Answer: 3"):
#: _ANSWER_ONLY's opening, then nothing, or a verb / ":" and a short answer without reasoning
#: ("The answer choices include ...", "Final answer check: ...", "the correct option must have ..."
#: are content).
_ANSWER_STATEMENT = re.compile(
    r"[#>*_ \t-]*(?:(?:so|thus|hence|therefore)[ \t,]*)?(?:the[ \t]+)?"
    r"(?:final[ \t]+answer|answer|correct[ \t]+(?:answer|option|choice))"
    r"(?:[ \t*_.:]*"
    r"|(?:[ \t*_]*(?:[:=]|\*\*|__)|[ \t]+(?:is|(?:would|should|will|must)[ \t]+be)\b)[ \t*_:]*"
    r"(?![^\n]*\b(?:because|since|thus|hence|therefore|we|using|due\s+to|means|implies|check\w*)\b)"
    r"[^\n]{0,80})",
    re.IGNORECASE,
)
_BOXED_BODY = re.compile(r"\\boxed\{(?:[^{}\n]|\{[^{}\n]*\})*\}")
_HEAD, _CONTENT, _ANSWER, _CLOSE = 0, 1, 2, 3
#: A step of only reasoning markup: ``<think>``, ``</think>``, ``<|begin_of_thought|>``, ``◁think▷``...
#: An opening tag heads the step after it; a closing one closes the step before it.
_TAG_ONLY = re.compile(
    r"(?:(?:</?[A-Za-z][\w-]{0,30}>|<\|(?:begin|end)_of_\w{1,30}\|>|\u25c1/?\w{1,30}\u25b7)\s*)+"
)
#: A list item opening with a plain word (not bold, not a heading): content once it is long enough.
_PLAIN_ITEM = re.compile(r"(?:\d{1,3}[.)]|[-*+\u2022])[ \t]+(?!answer|final|the answer|correct)[^\W\d_]", re.IGNORECASE)
#: One pass for all three: markup only / filler (whole step), answer-only (prefix), header (one line).
_SPECIAL = re.compile(
    f"(?P<head>(?:{_MARKER_ONLY.pattern})\\Z|(?:{_FILLER.pattern})\\Z)"
    f"|(?P<answer>{_ANSWER_ONLY.pattern})|(?P<header>(?:{_HEADER.pattern})\\Z)",
    re.IGNORECASE,
)
#: How every head or answer-only step can begin (a cheap test that passes most content).
_SPECIAL_WORDS = (
    "step sure okay ok alright all certainly of great hmm well got understood let's lets let i i'll we we'll "
    "to so thus hence therefore the final answer correct"
).split()
_MAYBE_SPECIAL = re.compile(  # case by hand: IGNORECASE makes this per-step test several times slower
    r"[\W\d_]|(?:" + "|".join(f"[{w[0].upper()}{w[0]}]{re.escape(w[1:])}" for w in _SPECIAL_WORDS) + r")\b"
    r"|(?:" + "|".join(re.escape(w.upper()) for w in _SPECIAL_WORDS) + r")\b"
)

# -- sentences
_ABBREVIATIONS = (
    "e.g i.e etc vs cf al fig figs eq eqs eqn no nos approx ca dr mr mrs ms st prof sec ch vol pp p "
    "resp thm lem def prop cor ex viz inc ltd jr sr avg deg est"
).split()


def _not_after_abbreviation() -> str:
    """Fixed-width lookbehinds (one per length) refusing a full stop after an abbreviation."""
    by_len: dict[int, list[str]] = {}
    for word in _ABBREVIATIONS:
        for form in {word, word.capitalize(), word.upper()}:
            by_len.setdefault(len(word), []).append(re.escape(form + "."))
    return "".join(f"(?<!\\b(?:{'|'.join(words)}))" for _, words in sorted(by_len.items()))


def _not_after_marker() -> str:
    """Lookbehinds refusing a full stop that ends an inline list marker or option letter: a
    number (1-3 digits) or one capital letter opening a sentence or line ("steps: 1. Identify",
    "y-axis. 2. Identify", "Step 2. Add"), and a capital letter before a number ("options A. 37
    B. 40"); "is 12. Then", "point B. Then", "is 428 - 285. But" and "7*288. So" still end
    sentences (a difference or a product ends on its number)."""
    marks = []
    for token in (r"\d", r"\d\d", r"\d\d\d", "[A-Z]"):
        marks += [f"(?<=[.:;!?][ \\t]{token}\\.)", f"(?<=[\\n(]{token}\\.)", f"(?<=^{token}\\.)"]
    marks += [f"(?<=Step {token}\\.)" for token in (r"\d", r"\d\d")]  # ("go to step 2. Then" ends one)
    marks.append(r"(?<=[\s(][A-Z]\.)\s+[\d$\\-]")
    # one cheap test first: most sentences end in a lower-case letter, a bracket or math
    return f"(?!(?<=[0-9A-Z]\\.)(?:{'|'.join(marks)}))"


_SENTENCE_END = re.compile(
    r"[.!?](?=(?:(?:\$\$|\\\])[\"')\]*_\u201d\u2019]*\s*|(?:\$|\\\))?[\"')\]*_\u201d\u2019]*\s+)"
    r"[A-Z0-9$\\(\[*\"'#_<\u201c\u2018])"
    + _not_after_abbreviation()
    + _not_after_marker()
    + r"(?:\$\$|\$|\\\)|\\\])?[\"')\]*_\u201d\u2019]*"
)
#: "steps: 1. Identify ...": an inline numbered list opens a sentence.
_INLINE_LIST_OPENS = re.compile(r":(?=[ \t]1\.[ \t]+[A-Z])")
_INLINE_MATH_TOKEN = re.compile(r"\\[$()\[\]]|\$\$?")
_CLOSER = {"$": "$", "$$": "$$", "\\(": "\\)", "\\[": "\\]"}

_INSTRUCTIONS = {
    "blank_line": "Write one step per paragraph, separated by a blank line.",
    "step_marker": 'Begin every step with "Step N:" on a new line.',
    "tags": "Wrap every step in <step></step> tags.",
}
_STOPS = {"blank_line": ("\n\n",), "step_marker": ("\nStep ",), "tags": ("</step>",)}


@dataclass(frozen=True)
class StepFormat:
    """How steps are written and read: the one place that knows a format's syntax.

    It travels on every ``GenerationRequest``, so any policy (built-in or custom) writes
    steps the way the run's segmenter reads them; prompts, the segmenter and the
    simulated policy all delegate here.
    """

    name: str = "blank_line"

    def __post_init__(self) -> None:
        if self.name not in STEP_FORMATS:
            raise ValueError(f"step format must be one of {', '.join(STEP_FORMATS)}, got {self.name!r}")

    @property
    def instruction(self) -> str:
        """What the system prompt asks the model to do."""
        return _INSTRUCTIONS[self.name]

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """Where one step ends (for ``next_step_only`` generation)."""
        return _STOPS[self.name]

    @property
    def delimiter(self) -> str:
        """What separates two steps in ``join``'s output."""
        return {"blank_line": "\n\n", "step_marker": "\n", "tags": ""}[self.name]

    def split(self, text: str) -> list[str]:
        """The pieces of ``text`` (``blank_line``: :func:`split_structured`; the others raw, not
        yet stripped or merged; see :class:`Segmenter`)."""
        if self.name == "blank_line":
            return split_structured(text)
        if self.name == "step_marker":
            return _split_step_markers(text)
        raw = _STEP_TAG.findall(text)
        if not raw and text.strip():
            raw = [text]  # no tags at all: one giant step, still a usable rollout
        return raw

    def join(self, steps: Sequence[str], first_index: int = 0) -> str:
        """``steps`` written in this format; ``first_index`` numbers ``Step N:`` markers."""
        if self.name == "blank_line":
            return "\n\n".join(steps)
        if self.name == "step_marker":
            return "\n".join(f"Step {first_index + i + 1}: {s}" for i, s in enumerate(steps))
        return "".join(f"<step>{s}</step>" for s in steps)

    def prefix_text(self, prefix: Sequence[str]) -> str:
        """The steps taken so far, ending with the opening of the next step."""
        if not prefix:
            return ""
        return self.join(prefix) + self.delimiter + self.next_opening(len(prefix))

    def next_opening(self, n_prefix: int) -> str:
        """What opens step ``n_prefix + 1`` after a prefix (the model continues from it)."""
        if self.name == "blank_line" or n_prefix == 0:
            return ""
        return "<step>" if self.name == "tags" else f"Step {n_prefix + 1}:"

    def restore_opening(self, continuation: str, n_prefix: int) -> str:
        """A continuation of a prefix with the opening the prompt ended on put back."""
        return self.next_opening(n_prefix) + continuation if n_prefix else continuation


def _split_step_markers(text: str) -> list[str]:
    """``text`` cut at its ``Step N:`` markers (``**Step N:**``, ``### Step N:``), markers
    dropped; a bold title's closing ``**`` goes with its opening one ("**Step 1: Read**")."""
    pieces = []
    pos = 0
    unclosed = False
    for m in _STEP_MARKER.finditer(text):
        pieces.append(_close_bold(text[pos:m.start()]) if unclosed else text[pos:m.start()])
        unclosed = m.group().count("**") % 2 == 1
        pos = m.end()
    pieces.append(_close_bold(text[pos:]) if unclosed else text[pos:])
    if len(pieces) > 1 and pieces[0].strip() and _kind(pieces[0].strip()) == _HEAD:
        # "Let's solve this step by step." / "## Solution" before Step 1 heads it, as a
        # contentless block heads the next one in the default format
        pieces[1] = pieces[0].rstrip() + "\n" + pieces[1].lstrip(" \t")
        del pieces[0]
    return pieces


def _close_bold(piece: str) -> str:
    """``piece`` without the ``**`` that closes its first line's bold title, if any."""
    line_end = piece.find("\n")
    at = piece.rfind("**", 0, len(piece) if line_end < 0 else line_end)
    return piece if at < 0 else piece[:at] + piece[at + 2:]


def as_step_format(value: StepFormat | str) -> StepFormat:
    return value if isinstance(value, StepFormat) else StepFormat(value)


@dataclass(frozen=True)
class Segmenter:
    """Splits model text into steps.

    ``format`` is a :class:`StepFormat` (or its name) or any callable
    ``str -> list[str]``. ``max_steps`` bounds the steps of a whole solution path (VisualPRM
    uses 12): a continuation after ``depth`` steps of prefix is merged down to
    ``max_steps - depth`` steps (at least one), so prefix plus continuation never exceeds
    it when the prefix does not. Empty steps are always dropped.
    """

    format: StepFormat | str | Callable[[str], list[str]] = StepFormat()
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.format, str):
            object.__setattr__(self, "format", StepFormat(self.format))
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.max_steps}")

    def split(self, text: str, depth: int = 0) -> list[str]:
        """Steps of ``text`` (a continuation after ``depth`` steps), stripped, without empty
        ones, merged down to ``max_steps - depth`` (at least one)."""
        fmt = self.format
        if type(fmt) is StepFormat and fmt.name == "blank_line":
            steps = split_structured(text)  # already stripped slices, none empty
        else:
            raw = fmt.split(text) if isinstance(fmt, StepFormat) else custom_steps(fmt, text)
            steps = [s.strip() for s in raw if s and s.strip()]
        room = self.room(depth)
        if room is not None and len(steps) > room:
            if type(fmt) is StepFormat and fmt.name == "blank_line":
                steps = _merge_slices(text, steps, room)
            else:
                steps = merge_steps(steps, room)
        return steps

    @property
    def steps_any_text(self) -> bool:
        """Whether every text with a non-space character has a step: the built-in
        ``blank_line`` reader drops only whitespace, so a parse may defer the splitting
        (:meth:`Rollout.deferred`). Unknown for a custom splitter, or a subclass's ``split``."""
        return type(self) is Segmenter and type(self.format) is StepFormat and self.format.name == "blank_line"

    def room(self, depth: int) -> int | None:
        """How many steps a continuation after ``depth`` steps may have (None: no bound)."""
        return None if self.max_steps is None else max(1, self.max_steps - depth)

    def first_step(self, text: str) -> list[str]:
        """For next-step-only generation: at most the first step of ``text``."""
        return self.split(text)[:1]

    def heads_next(self, text: str) -> bool:
        """Whether ``text``, one step's worth of next-step-only generation, only heads the
        step after it (a header, filler, an opening ``<think>``; or a closing tag): the
        built-in ``blank_line`` reader would merge it into that step, so the step is not over.
        Never one holding an answer box (a bold or header line may state the final answer).
        False for the other formats and a custom splitter (their steps are their own)."""
        if not self.steps_any_text:
            return False
        piece = text.strip()
        if not piece or "boxed" in piece or "fbox" in piece:  # "**So the total is \boxed{7}.**" ends the solution
            return False
        return _BLANK_LINE.search(piece) is None and _kind(piece) in (_HEAD, _CLOSE)

    def joins_previous(self, step: str) -> bool:
        """Whether ``step``, the first step of a next-step-only continuation, only states the
        final answer ("The answer is \\boxed{12}.", with any closing tag or header of it that
        :meth:`heads_next` continued: "</think>\\n\\nThe answer is ..."): the built-in
        ``blank_line`` reader merges it into the step before it in a whole solution. False
        for the other formats and a custom splitter (their steps are their own)."""
        if not self.steps_any_text:
            return False
        kinds = [_kind(step[s:e]) for s, e in _piece_spans(step, _blank_lines_outside_displays(step))]
        # after a step, the reader merges every piece without content into it (_merge_contentless)
        return _ANSWER in kinds and _CONTENT not in kinds


def custom_steps(split_steps: Callable[[str], list[str]], text: str) -> list[str]:
    """``split_steps(text)``, checked: a list (any iterable but a string) of strings. A string
    returned whole would otherwise be split into characters, one step each, in silence."""
    raw = split_steps(text)
    if isinstance(raw, (str, bytes)) or not hasattr(raw, "__iter__"):
        raise TypeError(f"split_steps must return a list of strings, but returned {type(raw).__name__} "
                        f"{raw!r:.60}")
    steps = [step for step in raw if step is not None]  # re.split's unmatched groups: dropped, as empty steps are
    for step in steps:
        if not isinstance(step, str):
            raise TypeError(f"split_steps must return a list of strings, but its list holds {type(step).__name__} "
                            f"{step!r:.60}")
    return steps


def check_splitter(split_steps: Callable[[str], list[str]]) -> None:
    """Before a run: ``split_steps`` on a two-step text returns a list of strings (raises
    TypeError naming what it returned). One that raises on the sample is left to the run."""
    try:
        custom_steps(split_steps, "First, the first step.\n\nThen, the second step. The answer is 1.")
    except TypeError as exc:
        if "split_steps must return" in str(exc):
            raise
    except Exception:  # its own failure on a text it may not expect: each problem says so
        pass


def merge_steps(steps: Sequence[str], max_steps: int) -> list[str]:
    """Merge neighbouring steps, in order, until at most ``max_steps`` remain: each merge
    joins the adjacent pair with the least content together (characters, whitespace
    collapsed; the earlier pair on a tie), so short filler steps are absorbed first and the
    long, key steps stay apart instead of the tail being lumped into one step. Merged steps
    are joined by a blank line (the ``blank_line`` reader's merges take the text between them
    instead: :func:`_merge_slices`). O(n log n) in the number of steps."""
    return ["\n\n".join(steps[a:b + 1]) for a, b in _merge_groups(steps, max_steps)]


def _merge_slices(text: str, steps: Sequence[str], max_steps: int) -> list[str]:
    """:func:`merge_steps` for steps that are slices of ``text``, in order: each merged step is
    the slice from its first step's start to its last step's end."""
    starts = []
    pos = 0
    for step in steps:
        at = text.find(step, pos)
        if at < 0:  # not slices after all
            return merge_steps(steps, max_steps)
        starts.append(at)
        pos = at + len(step)
    return [text[starts[a]:starts[b] + len(steps[b])] for a, b in _merge_groups(steps, max_steps)]


def _merge_groups(steps: Sequence[str], max_steps: int) -> list[tuple[int, int]]:
    """The (first, last) step indices of each merged step, in order (see :func:`merge_steps`)."""
    n = len(steps)
    if n <= max_steps:
        return [(i, i) for i in range(n)]
    if max_steps == 1:
        return [(0, n - 1)]
    last = list(range(n))  # a merged step's last index, kept at its first index
    size = [len(normalize_step(s)) for s in steps]
    nxt = list(range(1, n + 1))
    prv = list(range(-1, n - 1))
    alive = [True] * n
    heap = [(size[i] + size[i + 1], i, i + 1) for i in range(n - 1)]
    heapq.heapify(heap)
    remaining = n
    while remaining > max_steps:
        weight, i, j = heapq.heappop(heap)
        if not (alive[i] and alive[j] and nxt[i] == j and size[i] + size[j] == weight):
            continue  # stale: one side has merged since
        last[i] = last[j]
        size[i] += size[j]
        alive[j] = False
        nxt[i] = nxt[j]
        if nxt[i] < n:
            prv[nxt[i]] = i
            heapq.heappush(heap, (size[i] + size[nxt[i]], i, nxt[i]))
        if prv[i] >= 0:
            heapq.heappush(heap, (size[prv[i]] + size[i], prv[i], i))
        remaining -= 1
    return [(i, last[i]) for i in range(n) if alive[i]]


def normalize_step(step: str) -> str:
    """The form of a step that decides identity: whitespace collapsed, ends stripped."""
    return _WHITESPACE.sub(" ", step).strip()


# --------------------------------------------------------------------------- real output


def _piece_spans(text: str, blanks: Iterable[re.Match[str]]) -> list[tuple[int, int]]:
    """The spans of ``text``'s pieces before any merging: its blocks between the ``blanks``
    (blank-line matches), each split into its items, headers and ``Step N:`` lines."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for m in blanks:
        _block_spans(text, pos, m.start(), spans)
        pos = m.end()
    _block_spans(text, pos, len(text), spans)
    return spans


def split_structured(text: str) -> list[str]:
    """The steps of ``text`` as real models write them (the ``blank_line`` format's reader):
    blank-line blocks, list items / headers / ``Step N:`` lines inside a block, no-content
    steps merged into a neighbour, and a sentence-level fallback for long paragraphs (see
    the module docstring). Linear in ``len(text)``; every step is a stripped slice of it."""
    display = "$$" in text or "\\[" in text or "\\begin{" in text or "```" in text or "~~~" in text
    if not display:
        steps = _one_line_steps(text)  # fast path: one-line blocks (text written as asked)
        if steps is not None:
            return steps
    spans = _piece_spans(text, _BLANK_LINE.finditer(text) if not display else _blank_lines_outside_displays(text))
    if len(spans) > 1:
        spans = _merge_contentless(text, spans)
    if spans and (
        (len(spans) == 1 and spans[0][1] - spans[0][0] > SENTENCE_FALLBACK_CHARS)
        or any(e - s > LONG_STEP_CHARS for s, e in spans)
    ):
        spans = _sentence_fallback(text, spans)
    return [text[s:e] for s, e in spans]


def _at_line_start(text: str, at: int) -> bool:
    """Is ``text[at]`` preceded on its line by spaces or tabs only? (Read back over those only:
    a long line of many fences would otherwise be scanned once per fence.)"""
    i = at - 1
    while i >= 0 and text[i] in " \t":
        i -= 1
    return i < 0 or text[i] == "\n"


def _display_spans(text: str) -> list[tuple[int, int]]:
    """The closed display-math blocks (``$$..$$``, ``\\[..\\]``, ``\\begin{env}..\\end{env}``) and
    code fences of ``text``, in order (one pass; an unclosed opener protects nothing, and
    nothing after it is looked for)."""
    spans: list[tuple[int, int]] = []
    closer: str | None = None  # what ends the open block: "```", "$$", "\\]" or an environment name
    depth = 0  # nesting of the open environment's own name
    open_at = 0
    for tok in _DISPLAY_TOKEN.finditer(text):
        t = tok.group()
        at = tok.start()
        if t in ("```", "~~~"):
            fence = t if _at_line_start(text, at) else ""  # only at a line's start
        elif t == "\\[" and at and text[at - 1] == "\\":
            continue  # "\\[2pt]": a line break, not a display
        else:
            fence = ""
        if closer is None:
            if fence in ("```", "~~~"):
                closer = fence
            elif t == "$$":
                closer = "$$"
            elif t == "\\[":
                closer = "\\]"
            elif tok.group(1) == "begin":
                closer, depth = tok.group(2), 1
            else:
                continue
            open_at = at
        elif closer in ("```", "~~~"):
            if fence == closer:
                spans.append((open_at, tok.end()))
                closer = None
        elif tok.group(1) is not None:
            if tok.group(2) == closer:
                depth += 1 if tok.group(1) == "begin" else -1
                if not depth:
                    spans.append((open_at, tok.end()))
                    closer = None
        elif t == closer:
            spans.append((open_at, tok.end()))
            closer = None
    return spans


def _blank_lines_outside_displays(text: str) -> list[re.Match[str]]:
    """The blank lines of ``text`` that are not inside display math or a code fence."""
    blanks = list(_BLANK_LINE.finditer(text))
    if not blanks:
        return blanks
    kept = []
    displays = _display_spans(text)
    d = 0
    for m in blanks:
        while d < len(displays) and displays[d][1] <= m.start():
            d += 1
        if d == len(displays) or displays[d][0] >= m.start():
            kept.append(m)
    return kept


def _one_line_steps(text: str) -> list[str] | None:
    """The steps of a text whose blank-line blocks are each one line and all plain content
    (what a model asked for one step per paragraph writes), or None when the text needs the
    full reading: a block of several lines, a heading, filler or answer-only step to merge, a
    step long enough for the sentence fallback. One loop over the blocks."""
    steps: list[str] = []
    for block in _BLANK_LINE.split(text):
        if "\n" in block:
            return None
        block = block.strip()
        if block:
            steps.append(block)
    if len(steps) == 1:
        return steps if len(steps[0]) <= SENTENCE_FALLBACK_CHARS else None
    for step in steps:
        size = len(step)
        if size > LONG_STEP_CHARS or (size <= _SHORT_STEP_CHARS and _short_kind(step) != _CONTENT):
            return None
    return steps


def split_sentences(text: str) -> list[str]:
    """``text`` cut into sentences: at ``.``/``!``/``?`` followed by space and a capital,
    digit, math or markup opening; never at decimals, known abbreviations (``e.g.``,
    ``Fig.``), nor inside ``$..$``, ``$$..$$``, ``\\(..\\)`` or ``\\[..\\]``. Linear time."""
    return [text[s:e] for s, e in _sentence_spans(text, 0, len(text))]


def _trimmed(text: str, start: int, end: int) -> tuple[int, int] | None:
    """``(start, end)`` without surrounding whitespace, None when only whitespace."""
    piece = text[start:end]
    if piece and not piece[0].isspace() and not piece[-1].isspace():
        return start, end
    stripped = piece.strip()
    if not stripped:
        return None
    lead = len(piece) - len(piece.lstrip())
    return start + lead, start + lead + len(stripped)


def _block_spans(text: str, start: int, end: int, out: list[tuple[int, int]]) -> None:
    """Append the steps of one blank-line block: a new step at each line that opens one."""
    span = _trimmed(text, start, end)
    if span is None:
        return
    start, end = span
    block = text[start:end]
    if "\n" not in block:
        out.append(span)
        return
    opens: list[int] = []  # block offsets of header / Step N: lines
    items: list[tuple[int, int, bool]] = []  # (offset, indent, numbered) of list items
    breaks: list[int] = []  # block offsets of unindented lines that are no list item
    in_fence = False
    math_depth = 0
    offset = 0
    for line in block.split("\n"):
        here = offset
        offset += len(line) + 1
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        if not math_depth:
            item = _LIST_ITEM.match(line)
            if item is not None:  # (the block's first line too: what kind of list it opens)
                indent = item.group(1) if here else text[text.rfind("\n", 0, start) + 1:start]  # (trimmed off)
                items.append((here, len(indent.expandtabs(4)), item.group(2) is not None))
            elif here and _OPENS_STEP.match(line):
                opens.append(here)
                breaks.append(here)
            elif line[:1] not in ("", " ", "\t", "\r"):
                breaks.append(here)  # an unindented line of text: a list after it is a new list
        if "$$" in line or "\\" in line:
            for tok in _MATH_TOKEN.finditer(line):
                t = tok.group()
                if t == "$$":
                    math_depth = 0 if math_depth else 1
                elif t == "\\[" and tok.start() and line[tok.start() - 1] == "\\":
                    continue  # "\\[2pt]": a line break, not a display
                elif t in ("\\[", "\\begin{"):
                    math_depth += 1
                elif math_depth:
                    math_depth -= 1
    cuts = list(opens)
    if items:
        top = min(indent for _, indent, _ in items)
        tops = [(off, numbered) for off, indent, numbered in items if indent == top]
        # list items in two or more sections (each under its header) are the sections' sub-points
        sub_points = False
        if len(opens) >= 2 and opens[0] < tops[0][0]:
            sections = {bisect.bisect(opens, off) for off, _ in tops}
            sub_points = len(sections) >= 2
        if not sub_points:
            # every top-level item opens a step, but for an item of another kind right under the
            # list's items ("1. Read:" then "- red 12", no line of text between): their sub-point
            kind: bool | None = None
            last = -1
            for off, numbered in tops:
                if kind is None or numbered == kind or bisect.bisect(breaks, off) > bisect.bisect(breaks, last):
                    kind = numbered
                    cuts.append(off)
                last = off
            cuts.sort()
    if not cuts:
        out.append(span)
        return
    prev = 0
    for cut in cuts:
        piece = _trimmed(text, start + prev, start + cut)
        if piece is not None:
            out.append(piece)
        prev = cut
    piece = _trimmed(text, start + prev, end)
    if piece is not None:
        out.append(piece)


def _kind(piece: str) -> int:
    """Whether a step heads the next one (header, filler, markup only), only states the
    final answer (stays with the step before), or carries content."""
    if len(piece) > _SHORT_STEP_CHARS:
        return _CONTENT
    return _short_kind(piece)


@functools.lru_cache(maxsize=1 << 15)
def _short_kind(piece: str) -> int:
    """:func:`_kind` of a short step, memoised: it is pure, and a run's completions repeat the
    same steps (a tree's rollouts share their openings and final lines) many times over."""
    if piece[:1] in ("<", "\u25c1") and _TAG_ONLY.fullmatch(piece):
        return _CLOSE if piece.startswith(("</", "<|end", "\u25c1/")) else _HEAD
    colon = piece.endswith((":", ":**"))
    if not (colon or _MAYBE_SPECIAL.match(piece)) or (not colon and len(piece) > 40 and _PLAIN_ITEM.match(piece)):
        return _CONTENT
    m = _SPECIAL.match(piece)
    if m is None:
        return _HEAD if colon and len(piece) <= 100 and "\n" not in piece else _CONTENT
    if m.lastgroup == "head":
        return _HEAD if len(piece) <= 100 or "\n" not in piece else _CONTENT
    if "\n" in piece:
        return _CONTENT
    if m.lastgroup != "answer":
        return _HEAD
    if "boxed{" in piece:  # the box's content is the answer, whatever its words
        piece = _BOXED_BODY.sub(r"\\boxed{}", piece)
    if m.group("answer").endswith("boxed{") or _ANSWER_STATEMENT.fullmatch(piece):
        return _ANSWER
    return _HEAD if (colon and len(piece) <= 100) or _HEADER.fullmatch(piece) else _CONTENT


def _merge_contentless(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge steps without content into a neighbour: a head into the step it heads (the
    step before when nothing follows), an answer-only step into the step before it."""
    out: list[tuple[int, int]] = []
    head: int | None = None  # start of a run of heads waiting for their step
    for s, e in spans:
        kind = _kind(text[s:e])
        if kind == _HEAD:
            if head is None:
                head = s
        elif kind == _ANSWER and out:
            out[-1] = (out[-1][0], e)  # (with any header of the answer: "**Final Answer**")
            head = None
        elif kind == _CLOSE:  # "</think>": closes the step before (heads the next when none is before)
            if out and head is None:
                out[-1] = (out[-1][0], e)
            elif head is None:
                head = s
        else:
            out.append((s if head is None else head, e))
            head = None
    if head is not None:
        if out:
            out[-1] = (out[-1][0], spans[-1][1])
        else:
            out.append((head, spans[-1][1]))
    return out


def _sentence_fallback(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Split the long steps (or the one step of a long response) into sentences."""
    threshold = SENTENCE_FALLBACK_CHARS if len(spans) == 1 else LONG_STEP_CHARS
    out: list[tuple[int, int]] = []
    for s, e in spans:
        if e - s > threshold:
            sentences = _sentence_spans(text, s, e)
            out.extend(_merge_contentless(text, sentences) if len(sentences) > 1 else sentences)
        else:
            out.append((s, e))
    return out


def _math_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """The closed inline/display math spans of ``text[start:end]``, in order (one pass
    over the delimiters; an unclosed opener protects nothing)."""
    spans = []
    opener = None
    open_at = 0
    for tok in _INLINE_MATH_TOKEN.finditer(text, start, end):
        t = tok.group()
        if t == "\\$":
            continue
        if opener is None:
            if t in _CLOSER:
                opener, open_at = t, tok.start()
        elif t == _CLOSER[opener]:
            spans.append((open_at, tok.end()))
            opener = None
    return spans


def _sentence_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    segment = text[start:end]
    cuts = [m.end() for m in _SENTENCE_END.finditer(text, start, end)]
    if ": 1. " in segment:
        cuts = sorted(cuts + [m.end() for m in _INLINE_LIST_OPENS.finditer(text, start, end)])
    if cuts and ("$" in segment or "\\(" in segment or "\\[" in segment):
        maths = _math_spans(text, start, end)
        kept = []
        m_i = 0
        for cut in cuts:
            while m_i < len(maths) and maths[m_i][1] <= cut:
                m_i += 1
            if m_i == len(maths) or maths[m_i][0] >= cut:  # not inside math
                kept.append(cut)
        cuts = kept
    out = []
    prev = start
    for cut in cuts:
        piece = _trimmed(text, prev, cut)
        if piece is not None:
            out.append(piece)
        prev = cut
    piece = _trimmed(text, prev, end)
    if piece is not None:
        out.append(piece)
    return out
