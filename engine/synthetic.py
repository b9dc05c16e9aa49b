"""Synthetic image-question problems with exact answers and step-level ground truth.

Each problem shows a real PNG (coloured shapes to count, or a bar chart to read) and
asks for a short program over what the image shows: "let x be the number of red
shapes; then add the number of blue shapes; multiply by 2; ...". A correct solution has
one step per instruction (4-12 steps), so every step's correctness is known exactly.

The generator stores the drawn scene in ``meta["scene"]``: it is what a perfect
vision model would read off the image, and what the simulated policy "sees".

Three answer spaces, as real VQA has them (``answer_space``):

* ``number``: "What is the final value of x?" (a guess is almost never right);
* ``yesno``: "Is the final value of x greater than T?" (a guess is right half the time);
* ``choice``: four numeric options A-D, the gold answer a letter (a guess: one in four).
"""

from __future__ import annotations

import io
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw
from prmtree.engine.records import Problem, ProblemImage

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "blue": (40, 80, 220),
    "green": (40, 170, 60),
    "yellow": (230, 200, 30),
}
BAR_LABELS = ("A", "B", "C", "D", "E")
IMAGE_SIZE = 160


@dataclass(frozen=True)
class Instruction:
    """One instruction of a problem's program: ``op`` applied with ``operand``."""

    op: str  # "start" | "add" | "subtract" | "multiply"
    operand: int | str  # a constant, or the name of a quantity in the scene


def _quantity_phrase(kind: str, name: str) -> str:
    return f"the number of {name} shapes" if kind == "shapes" else f"the height of bar {name}"


def question_text(kind: str, program: list[Instruction]) -> str:
    intro = (
        "The image shows coloured shapes."
        if kind == "shapes"
        else "The image shows a bar chart with bars labelled A to E."
    )
    first = program[0]
    parts = []
    for ins in program[1:]:
        if isinstance(ins.operand, str):
            operand = _quantity_phrase(kind, ins.operand)
        else:
            operand = str(ins.operand)
        parts.append(f"multiply by {operand}" if ins.op == "multiply" else f"{ins.op} {operand}")
    return (
        f"{intro} Let x be {_quantity_phrase(kind, str(first.operand))}. "
        f"Then, in order: {'; '.join(parts)}. What is the final value of x?"
    )


_START = re.compile(r"Let x be the (?:number of (\w+) shapes|height of bar (\w))\.")
_OPS = re.compile(r"Then, in order: (.*?)\. (?:What is the final value of x\?|Is the final value of x|Which option)")
ANSWER_SPACES = ("number", "yesno", "choice")
_OP = re.compile(r"^(add|subtract|multiply by) (?:the number of (\w+) shapes|the height of bar (\w)|(\d+))$")


def parse_question(question: str) -> tuple[str, list[Instruction]]:
    """Read the kind and program back from a question's text (what a solver must do)."""
    kind = "shapes" if "coloured shapes" in question else "bars"
    start = _START.search(question)
    ops = _OPS.search(question)
    if not start or not ops:
        raise ValueError("not a synthetic prmtree question")
    program = [Instruction("start", start.group(1) or start.group(2))]
    for part in ops.group(1).split("; "):
        m = _OP.match(part.strip())
        if not m:
            raise ValueError(f"cannot read instruction {part!r}")
        op = "multiply" if m.group(1) == "multiply by" else m.group(1)
        operand: int | str = m.group(2) or m.group(3) or int(m.group(4))
        program.append(Instruction(op, operand))
    return kind, program


def run_program(program: list[Instruction], scene: dict[str, int]) -> list[int]:
    """The correct value of x after each instruction."""
    values = []
    x = 0
    for ins in program:
        if ins.op == "start":
            x = scene[ins.operand] if isinstance(ins.operand, str) else ins.operand
        else:
            x = _apply(x, ins, scene)
        values.append(x)
    return values


def _random_program(rng: random.Random, names: list[str], n_steps: int, scene: dict[str, int]) -> list[Instruction]:
    program = [Instruction("start", rng.choice(names))]
    x = scene[program[0].operand]  # type: ignore[index]
    while len(program) < n_steps:
        op = rng.choice(("add", "add", "subtract", "subtract", "multiply"))
        if op == "multiply":
            if abs(x) > 40:
                continue
            ins = Instruction("multiply", rng.choice((2, 3)))
        elif rng.random() < 0.5:
            ins = Instruction(op, rng.choice(names))
        else:
            ins = Instruction(op, rng.randint(1, 9))
        x = _apply(x, ins, scene)
        program.append(ins)
    return program


def _apply(x: int, ins: Instruction, scene: dict[str, int]) -> int:
    operand = scene[ins.operand] if isinstance(ins.operand, str) else ins.operand
    return x + operand if ins.op == "add" else x - operand if ins.op == "subtract" else x * operand


def render_shapes(scene: dict[str, int], rng: random.Random) -> bytes:
    """A PNG with ``scene[colour]`` shapes of each colour at non-overlapping places."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), "white")
    draw = ImageDraw.Draw(image)
    cell = IMAGE_SIZE // 6
    cells = [(i, j) for i in range(6) for j in range(6)]
    rng.shuffle(cells)
    k = 0
    for colour, count in scene.items():
        for _ in range(count):
            i, j = cells[k]
            k += 1
            x0, y0 = i * cell + 3, j * cell + 3
            x1, y1 = x0 + cell - 6, y0 + cell - 6
            shape = rng.choice(("circle", "square", "triangle"))
            fill = COLOURS[colour]
            if shape == "circle":
                draw.ellipse((x0, y0, x1, y1), fill=fill)
            elif shape == "square":
                draw.rectangle((x0, y0, x1, y1), fill=fill)
            else:
                draw.polygon(((x0 + x1) // 2, y0, x1, y1, x0, y1), fill=fill)
    return _png(image)


def render_bars(scene: dict[str, int]) -> bytes:
    """A PNG bar chart: one bar per label, height proportional to its value (1-9)."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), "white")
    draw = ImageDraw.Draw(image)
    base = IMAGE_SIZE - 20
    unit = (base - 10) // 9
    width = IMAGE_SIZE // (len(scene) + 1)
    for idx, (label, value) in enumerate(scene.items()):
        x0 = 10 + idx * width
        draw.rectangle((x0, base - value * unit, x0 + width - 8, base), fill=(70, 110, 190))
        draw.text((x0 + width // 2 - 6, base + 4), label, fill="black")
    for v in range(0, 10, 3):  # gridlines make it a chart one could read
        draw.line((5, base - v * unit, IMAGE_SIZE - 5, base - v * unit), fill=(200, 200, 200))
    return _png(image)


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def make_problem(
    index: int, rng: random.Random, min_steps: int = 4, max_steps: int = 12, answer_space: str = "number"
) -> Problem:
    """One synthetic problem with a solution of ``min_steps``..``max_steps`` steps."""
    kind = rng.choice(("shapes", "bars"))
    if kind == "shapes":
        scene = {c: rng.randint(1, 6) for c in rng.sample(list(COLOURS), 3)}
        png = render_shapes(scene, rng)
    else:
        scene = {label: rng.randint(1, 9) for label in BAR_LABELS}
        png = render_bars(scene)
    n_steps = rng.randint(min_steps, max_steps)
    program = _random_program(rng, list(scene), n_steps, scene)
    final = run_program(program, scene)[-1]
    pid = f"syn-{index:06d}"
    question = question_text(kind, program)
    meta: dict = {"scene": scene, "n_steps": n_steps, "kind": kind}
    if answer_space == "number":
        answer, answer_type = str(final), "number"
    elif answer_space == "yesno":
        threshold = final + rng.choice((-3, -2, -1, 1, 2))  # x > T holds for half of these
        question = question.replace("What is the final value of x?", f"Is the final value of x greater than {threshold}?")
        answer, answer_type = ("yes" if final > threshold else "no"), "text"
        meta["threshold"] = threshold
    elif answer_space == "choice":
        values = [final] + rng.sample([final + d for d in (-6, -4, -3, -2, -1, 1, 2, 3, 4, 6)], 3)
        rng.shuffle(values)
        options = {letter: str(v) for letter, v in zip("ABCD", values)}
        listed = " ".join(f"({k}) {v}" for k, v in options.items())
        question = question.replace("What is the final value of x?", f"Which option is the final value of x? {listed}")
        answer, answer_type = "ABCD"[values.index(final)], "choice"
        meta["options"] = options
    else:
        raise ValueError(f"answer_space must be one of {', '.join(ANSWER_SPACES)}, got {answer_space!r}")
    meta["answer_space"] = answer_space
    return Problem(
        id=pid,
        question=question,
        answer=answer,
        images=(ProblemImage(data=png, path=f"images/{pid}.png"),),
        answer_type=answer_type,
        meta=meta,
    )


def iter_synthetic(
    n: int, seed: int = 0, min_steps: int = 4, max_steps: int = 12, answer_spaces: tuple[str, ...] = ("number",)
) -> Iterator[Problem]:
    """``n`` synthetic problems, made one at a time (for streaming very large runs);
    problem i uses ``answer_spaces[i % len(answer_spaces)]``."""
    if not 2 <= min_steps <= max_steps:  # a start and at least one operation: one step asks nothing
        raise ValueError(f"need 2 <= min_steps <= max_steps (a solution starts and does at least one "
                         f"operation), got {min_steps}, {max_steps}")
    rng = random.Random(seed)
    for i in range(n):
        yield make_problem(i, rng, min_steps, max_steps, answer_spaces[i % len(answer_spaces)])


def generate_problems(
    n: int, seed: int = 0, min_steps: int = 4, max_steps: int = 12, answer_spaces: tuple[str, ...] = ("number",)
) -> list[Problem]:
    return list(iter_synthetic(n, seed, min_steps, max_steps, answer_spaces))


def write_jsonl(problems: list[Problem], directory: str | Path, name: str = "problems.jsonl") -> Path:
    """Write problems as JSONL plus one PNG file per image; returns the JSONL path."""
    directory = Path(directory)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    path = directory / name
    with path.open("w", encoding="utf-8") as handle:
        for problem in problems:
            rels = []
            for i, image in enumerate(problem.images):
                rel = image.path or f"images/{problem.id}-{i}.png"
                (directory / rel).write_bytes(image.data)
                rels.append(rel)
            row = {
                "id": problem.id,
                "question": problem.question,
                "image": rels[0] if len(rels) == 1 else rels,
                "answer": problem.answer,
                "answer_type": problem.answer_type,
                "meta": problem.meta,
            }
            handle.write(json.dumps(row) + "\n")
    return path
