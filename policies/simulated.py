"""A simulated solver for the synthetic problems, with known ground truth.

It reads the problem it is given (the question's program, and the scene the image
shows) and writes a step-by-step solution in the request's step format, continuing
from the request's prefix: it reads x from the prefix's last step, so an error already
in the prefix carries through to the answer, as with a real model. Each step it writes
is wrong with probability ``error_rate``; a wrong solution still ends on the gold
answer with probability ``lucky_rate``. For yes/no and four-option questions (see
``engine/synthetic.py``) a solver holding a wrong value can only guess from the answer
space, and with ``guess_rate`` any solver guesses its final answer: the workload where
"some rollout reached the answer" stops meaning "the step was right". Asked as a judge
(``request.purpose == "judge"``) it is right with probability ``judge_accuracy``. Every
request is seeded, so runs reproduce. With ``cancel_errors`` (the default) a later slip
can undo an earlier one (x off by +1, then -1): a wrong prefix then reaches the gold
answer far more often than by chance — lucky continuations no Monte-Carlo rule can see.

``wrong_answers`` says what a solver holding a wrong value answers to a yes/no or
four-option question. ``"guess"`` (the default): it guesses from the answer space, so a
wrong step's continuations still reach the gold answer at chance (1/2 for yes/no).
``"consistent"``: it gives a definite wrong answer (for four options, the letter its
value points to: the option equal to it, else one of the wrong letters chosen from the
value), and still guesses its final answer with ``guess_rate`` like any solver — the
realistic case, a model that took a wrong step is mostly consistently wrong: its
continuations reach the gold answer at about ``guess_rate`` x chance (0.3 x 1/2 = 0.15
for yes/no).

``noiseless=True`` is the yardstick for exactness tests: no lucky answers, and
continuations of a non-empty prefix make no new errors, so a right prefix always
reaches the gold answer and a wrong one never does. Solutions sampled from the root,
and single next steps, still make errors: there is something to find.

:meth:`first_error` is the ground truth: the index of the first wrong step of any
solution, read from the steps themselves.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import OrderedDict
from dataclasses import replace
from typing import Literal

from prmtree.engine.calibration import answer_space
from prmtree.engine.records import Completion, GenerationRequest, Problem
from prmtree.engine.synthetic import parse_question, run_program

_X_VALUE = re.compile(r"x = (?:[^=]*= )?(-?\d+)\.")
_BOXED = re.compile(r"\\boxed\{([^}]*)\}")
_ERRORS = (-2, -1, 1, 2)
# Several wordings per step, as a sampled model would write: solutions that agree in
# substance still differ in text, so they do not all merge into one tree path.
_START_SHAPES = (
    "There are {n} {q} shapes in the image, so x = {n}.",
    "I count {n} {q} shapes, so x = {n}.",
    "The image has {n} {q} shapes; let x = {n}.",
)
_START_BARS = (
    "Bar {q} has height {n}, so x = {n}.",
    "Reading the chart, bar {q} reaches {n}, so x = {n}.",
    "The height of bar {q} is {n}; let x = {n}.",
)
_OP_TEMPLATES = ("{Verb} {what}:", "Next, {verb} {what}, giving", "Now {verb} {what}:")
_VERBS = {"add": "Add", "subtract": "Subtract", "multiply": "Multiply by"}
WRONG_ANSWERS = ("guess", "consistent")


class _Solved:
    """A problem as the solver understands it: the program and the right values."""

    __slots__ = ("kind", "program", "scene", "values", "operands", "space", "gold", "threshold", "options",
                 "heads", "starts")

    def __init__(self, problem: Problem) -> None:
        self.kind, self.program = parse_question(problem.question)
        scene = problem.meta.get("scene") if isinstance(problem.meta, dict) else None
        if not isinstance(scene, dict):
            raise ValueError(f"problem {problem.id!r} has no scene: the simulated policy only solves synthetic problems")
        self.scene = {str(k): int(v) for k, v in scene.items()}
        self.values = run_program(self.program, self.scene)
        self.operands = [
            self.scene[ins.operand] if isinstance(ins.operand, str) else ins.operand for ins in self.program
        ]
        self.gold = problem.answer.strip()
        self.threshold = problem.meta.get("threshold")
        self.space = _space(problem)
        options = problem.meta.get("options") or {}
        self.options = {str(k): int(v) for k, v in options.items()} if self.space == "choice" else {}
        if self.space == "choice" and not self.options:
            raise ValueError(f"problem {problem.id!r} is a choice question without meta.options: "
                             "the simulated policy cannot answer it")
        if self.space == "yesno" and (isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float))):
            raise ValueError(f"problem {problem.id!r} is a yes/no question without a numeric meta.threshold "
                             f"(got {self.threshold!r}): the simulated policy cannot answer it")
        # Each step's wordings, worked out once per problem rather than once per step written:
        # an operation step's three heads, and a start step's three sentences per value seen.
        self.heads: list[tuple[str, ...] | None] = []
        for ins, operand in zip(self.program, self.operands):
            if ins.op == "start":
                self.heads.append(None)
                continue
            if isinstance(ins.operand, str):
                what = f"the {operand} {ins.operand} shapes" if self.kind == "shapes" else f"bar {ins.operand} ({operand})"
            else:
                what = str(operand)
            verb = _VERBS[ins.op]
            self.heads.append(tuple(t.format(Verb=verb, verb=verb.lower(), what=what) for t in _OP_TEMPLATES))
        self.starts: dict[tuple[int, int], tuple[str, ...]] = {}  # (step, value seen) -> sentences

    def start_texts(self, j: int, seen: int) -> tuple[str, ...]:
        """Start step ``j``'s sentences for the value seen (a miscount is the right one +-1)."""
        texts = self.starts.get((j, seen))
        if texts is None:
            templates = _START_SHAPES if self.kind == "shapes" else _START_BARS
            texts = self.starts[(j, seen)] = tuple(t.format(n=seen, q=self.program[j].operand) for t in templates)
        return texts

    def answer_for(self, x: int) -> str | None:
        """The answer a solver holding value x gives; None when x leaves it guessing
        (a wrong value matches no option, and says nothing about the yes/no question)."""
        if self.space == "number":
            return str(x)
        if x != self.values[-1]:
            return None
        if self.space == "yesno":
            return "yes" if x > int(self.threshold) else "no"
        return next(letter for letter, v in self.options.items() if v == x)

    def wrong_answer(self) -> str:
        """A definite wrong answer (the noiseless solver's, holding a wrong value)."""
        if self.space == "yesno":
            return "no" if self.gold == "yes" else "yes"
        return next(letter for letter in sorted(self.options) if letter != self.gold)

    def consistent_answer(self, x: int) -> str:
        """The definite wrong answer of a solver holding the wrong value x: the opposite
        of the gold yes/no; for options, the option equal to x, else a wrong letter that
        depends on x (so wrong solvers do not all pick the same letter)."""
        if self.space == "yesno":
            return self.wrong_answer()
        wrong = sorted(letter for letter in self.options if letter != self.gold)
        matching = [letter for letter in wrong if self.options[letter] == x]
        return matching[0] if matching else wrong[x % len(wrong)]

    def guess(self, rng: random.Random, x: int) -> str:
        """A guess from the answer space."""
        if self.space == "yesno":
            return rng.choice(("yes", "no"))
        if self.space == "choice":
            return rng.choice(sorted(self.options))
        return str(x + rng.choice((-5, -3, -2, 2, 3, 5)))


#: The answer spaces the simulated solver writes answers for (``engine/synthetic.py``'s).
SPACES = ("number", "yesno", "choice")


def _space(problem: Problem) -> str:
    """The answer space the solver answers in. ``meta.answer_space`` is a free grouping key
    (README): a name it does not know (``"counting"``) says nothing about how to answer, so
    the answer's own space decides, read as ``calibration.answer_space`` reads it: options
    make a choice question, a yes/no gold a yes/no one, anything else a number."""
    named = problem.meta.get("answer_space")
    if named in SPACES:
        return str(named)
    space = answer_space(replace(problem, meta={k: v for k, v in problem.meta.items() if k != "answer_space"}))
    if space == "choice" or space.endswith(" options"):
        return "choice"
    return "yesno" if space == "yes/no" else "number"


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


class SimulatedPolicy:
    """A noisy oracle over synthetic problems; see the module docstring.

    ``wrong_answers``: what a solver holding a wrong value answers to a yes/no or
    four-option question — ``"guess"`` (default) guesses from the answer space (a wrong
    step's continuations reach the gold answer at chance), ``"consistent"`` gives a
    definite wrong answer and guesses only with ``guess_rate`` (they reach it at about
    ``guess_rate`` x chance: a model that took a wrong step is mostly consistently
    wrong). Set it from a config as ``[policy] wrong_answers = "consistent"``.
    """

    name = "simulated"
    #: Arguments that change how fast it answers, never what: free to change on resume.
    operational_args = frozenset({"latency_s", "batch_capacity"})
    accepts_judge_requests = True

    def __init__(
        self,
        error_rate: float = 0.08,
        lucky_rate: float = 0.02,
        noiseless: bool = False,
        latency_s: float = 0.0,
        batch_capacity: int | None = None,
        guess_rate: float = 0.0,
        judge_accuracy: float = 0.8,
        judge_garbage_rate: float = 0.0,
        cancel_errors: bool = True,
        wrong_answers: Literal["guess", "consistent"] = "guess",
    ) -> None:
        for name, flag in (("noiseless", noiseless), ("cancel_errors", cancel_errors)):
            if not isinstance(flag, bool):  # a string "False" would count as true
                raise ValueError(f"{name} must be true or false, got {flag!r}")
        if wrong_answers not in WRONG_ANSWERS:
            raise ValueError(f"wrong_answers must be one of {', '.join(map(repr, WRONG_ANSWERS))}, got {wrong_answers!r}")
        error_rate, lucky_rate, latency_s, guess_rate, judge_accuracy, judge_garbage_rate = (
            _number(name, value) for name, value in
            (("error_rate", error_rate), ("lucky_rate", lucky_rate), ("latency_s", latency_s),
             ("guess_rate", guess_rate), ("judge_accuracy", judge_accuracy), ("judge_garbage_rate", judge_garbage_rate))
        )
        for name, value in (("guess_rate", guess_rate), ("judge_accuracy", judge_accuracy),
                            ("judge_garbage_rate", judge_garbage_rate)):
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if not 0 <= error_rate <= 1:
            raise ValueError(f"error_rate must be in [0, 1], got {error_rate}")
        if not 0 <= lucky_rate <= 1:
            raise ValueError(f"lucky_rate must be in [0, 1], got {lucky_rate}")
        if latency_s < 0:
            raise ValueError(f"latency_s must be >= 0, got {latency_s}")
        self.error_rate = error_rate
        self.lucky_rate = 0.0 if noiseless else lucky_rate
        self.noiseless = noiseless
        self.guess_rate = 0.0 if noiseless else guess_rate
        self.judge_accuracy = judge_accuracy
        self.judge_garbage_rate = judge_garbage_rate
        self.cancel_errors = cancel_errors
        self.wrong_answers = wrong_answers
        self.latency_s = latency_s
        if batch_capacity is not None and batch_capacity < 1:
            raise ValueError(f"batch_capacity must be at least 1, got {batch_capacity}")
        self.batch_capacity = batch_capacity
        self._decoding = 0  # sequences "on the GPU" now (latency model)
        self._room: asyncio.Condition | None = None
        self._solved: OrderedDict[str, _Solved] = OrderedDict()

    # -- understanding --------------------------------------------------------------

    def _understand(self, problem: Problem) -> _Solved:
        solved = self._solved.get(problem.id)
        if solved is None:
            solved = _Solved(problem)
            self._solved[problem.id] = solved
            if len(self._solved) > 4096:
                self._solved.popitem(last=False)
        return solved

    def first_error(self, problem: Problem, steps: list[str] | tuple[str, ...]) -> int | None:
        """Index of the first wrong step of ``steps`` (a solution from the root), or None."""
        solved = self._understand(problem)
        for j, step in enumerate(steps):
            if j >= len(solved.values):
                return j  # steps beyond the program are wrong by construction
            m = _X_VALUE.findall(step)
            if not m or int(m[-1]) != solved.values[j]:
                return j
            if j == len(solved.values) - 1:  # the final step states the answer: a wrong one is an error
                boxed = _BOXED.findall(step)
                if boxed and boxed[-1].strip() != solved.gold:
                    return j
        return None

    # -- writing --------------------------------------------------------------------

    def _prefix_value(self, solved: _Solved, prefix: tuple[str, ...]) -> int:
        """The x a continuation of ``prefix`` starts from: its last step's (the right one if unstated)."""
        if not prefix:
            return 0
        m = _X_VALUE.findall(prefix[-1])
        return int(m[-1]) if m else solved.values[min(len(prefix), len(solved.values)) - 1]

    def _solve_from(self, solved: _Solved, prefix: tuple[str, ...], rng: random.Random, first_only: bool, clean: bool,
                    x: int | None = None) -> list[str]:
        """The steps after ``prefix``, from x (the prefix's value unless given), each wrong with
        ``error_rate`` unless ``clean``. The random draws and their order are the seeded
        stream's (``seq[rng._randbelow(len(seq))]`` is ``rng.choice(seq)`` without its call):
        outputs for a seed are fixed, and this loop is most of the simulated model's CPU."""
        start = len(prefix)
        if x is None:
            x = self._prefix_value(solved, prefix)
        program, operands, heads, values = solved.program, solved.operands, solved.heads, solved.values
        last = len(program) - 1
        error_rate = -1.0 if clean else self.error_rate  # clean: never wrong, and no draw for it
        narrow = self.noiseless or not self.cancel_errors  # a wrong value is never slipped back to the right one
        random_, randbelow = rng.random, rng._randbelow
        steps = []
        for j in range(start, len(program)):
            op = program[j].op
            operand = operands[j]
            wrong = error_rate >= 0 and random_() < error_rate
            if op == "start":
                x = operand + ((-1, 1)[randbelow(2)] if wrong else 0)
                texts = solved.start_texts(j, x)
                text = texts[randbelow(len(texts))]
            else:
                before = x
                if op == "add":
                    x, sign = x + operand, "+"
                elif op == "subtract":
                    x, sign = x - operand, "-"
                else:
                    x, sign = x * operand, "*"
                if wrong:
                    deltas = tuple(d for d in _ERRORS if x + d != values[j]) if narrow else _ERRORS
                    x += deltas[randbelow(len(deltas))]
                step_heads = heads[j]
                text = f"{step_heads[randbelow(len(step_heads))]} x = {before} {sign} {operand} = {x}."
            if j == last:
                text += f" The answer is \\boxed{{{self._final_answer(solved, x, rng)}}}."
            steps.append(text)
            if first_only:
                break
        if not steps:  # the prefix already holds every step: restate its answer
            steps.append(f"The answer is \\boxed{{{self._final_answer(solved, x, rng)}}}.")
        return steps

    def _final_answer(self, solved: _Solved, x: int, rng: random.Random) -> str:
        """What the solver boxes, holding value x: its answer, a lucky gold (number
        questions), or, with ``guess_rate`` or when x leaves it guessing (wrong values
        under ``wrong_answers="guess"``), a guess."""
        answer = solved.answer_for(x)
        if answer is None and self.noiseless:  # a wrong value never lands on the gold answer
            answer = solved.wrong_answer()
        elif answer is None and self.wrong_answers == "consistent":  # a definite wrong answer
            answer = solved.consistent_answer(x)
        if solved.space == "number" and x != solved.values[-1] and rng.random() < self.lucky_rate:
            answer = solved.gold
        if answer is None or (self.guess_rate and rng.random() < self.guess_rate):
            answer = solved.guess(rng, x)
        return answer

    def _judge(self, request: GenerationRequest, rng: random.Random) -> Completion:
        """A judge right with probability ``judge_accuracy`` about the prefix's last step
        (right means: no error up to and including it), garbage at ``judge_garbage_rate``."""
        if rng.random() < self.judge_garbage_rate:
            return Completion("I think the step is probably fine, or maybe not.", 12)
        right = self.first_error(request.problem, request.prefix) is None
        if rng.random() >= self.judge_accuracy:
            right = not right
        return Completion(f"Checked the values. Verdict: {'correct' if right else 'incorrect'}", 6)

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        if self.batch_capacity:
            await self._decode(request.n)
        elif self.latency_s:
            await asyncio.sleep(self.latency_s)
        return self.complete(request)

    @property
    def capacity(self) -> int | None:
        """Sequences served at once, for the driver's sizing (None: unbounded, unknown)."""
        return self.batch_capacity

    async def _decode(self, sequences: int) -> None:
        """A serving engine's latency model: up to ``batch_capacity`` sequences decode
        together in ``latency_s``; the rest wait for room, as in a continuous batcher."""
        if self._room is None:
            self._room = asyncio.Condition()
        need = min(sequences, self.batch_capacity or sequences)
        async with self._room:
            await self._room.wait_for(lambda: self._decoding + need <= (self.batch_capacity or need))
            self._decoding += need
        try:
            await asyncio.sleep(self.latency_s)
        finally:
            async with self._room:
                self._decoding -= need
                self._room.notify_all()

    def complete(self, request: GenerationRequest) -> list[Completion]:
        """The completions for ``request``, synchronously (what ``generate`` returns)."""
        solved = self._understand(request.problem)
        rng = random.Random(request.seed)
        if request.purpose == "judge":
            return [self._judge(request, rng)]
        clean = self.noiseless and bool(request.prefix) and not request.next_step_only
        prefix, first_only, join = request.prefix, request.next_step_only, request.step_format.join
        x0 = self._prefix_value(solved, prefix)  # the same for every completion of the request
        offset, max_tokens = len(prefix), request.max_tokens
        out = []
        for _ in range(request.n):
            text = join(self._solve_from(solved, prefix, rng, first_only, clean, x0), offset)
            n_tokens = text.count(" ") + 1
            if n_tokens > max_tokens:
                words = text.split(" ")[:max_tokens]
                out.append(Completion(" ".join(words), max_tokens, "length"))
            else:
                out.append(Completion(text, n_tokens, "stop"))
        return out
