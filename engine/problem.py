"""Problems (image-question-answer triples) and loading them from JSONL.

Loading is *total*: a bad row never stops a run. Each row becomes either a
:class:`Problem` or an :class:`InputError` carrying a reason a person understands,
and the driver routes errors to ``errors/`` while the good rows are searched.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image

AnswerType = Literal["auto", "math", "choice", "number", "text"]
ANSWER_TYPES: tuple[str, ...] = ("auto", "math", "choice", "number", "text")

#: Images above this many pixels are refused (decompression-bomb guard).
DEFAULT_MAX_PIXELS = 40_000_000


@dataclass(frozen=True)
class ProblemImage:
    """One image of a problem: its encoded bytes and where it came from."""

    data: bytes
    path: str | None = None


@dataclass(frozen=True)
class Problem:
    """An image-question pair with its gold answer.

    ``id`` is stable: given by the input, or a hash of the question and image bytes.
    """

    id: str
    question: str
    answer: str
    images: tuple[ProblemImage, ...] = ()
    answer_type: AnswerType = "auto"
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"Problem.id must be a non-empty string, got {self.id!r}")
        if not isinstance(self.question, str) or not self.question.strip():
            raise ValueError(f"Problem.question must be a non-empty string (problem {self.id!r})")
        if not isinstance(self.answer, str) or not self.answer.strip():
            raise ValueError(f"Problem.answer must be a non-empty string (problem {self.id!r})")
        if self.answer_type not in ANSWER_TYPES:
            raise ValueError(
                f"Problem.answer_type must be one of {', '.join(ANSWER_TYPES)}, got {self.answer_type!r}"
            )


@dataclass(frozen=True)
class InputError:
    """A row that could not become a problem; it goes to ``errors/``."""

    problem_id: str
    reason: str
    stage: str = "input"


def problem_id_for(question: str, images: tuple[ProblemImage, ...]) -> str:
    """The stable id of a problem given without one."""
    digest = hashlib.blake2b(question.encode("utf-8"), digest_size=8)
    for image in images:
        digest.update(image.data)
    return digest.hexdigest()


class ImageError(ValueError):
    """An image that cannot be used: missing, unreadable, corrupt or too large."""


def validate_image_bytes(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Check that ``data`` is a decodable image of at most ``max_pixels`` pixels.

    The size is read from the header before any decoding, so a decompression bomb is
    refused without being expanded.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    f"image {name} is {width}x{height} = {width * height} pixels, over the "
                    f"limit of {max_pixels} (decompression-bomb guard)"
                )
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image.verify()
        with Image.open(io.BytesIO(data)) as image:  # verify() leaves the image unusable
            image.load()
    except ImageError:
        raise
    except Exception as exc:  # Pillow raises many types for corrupt data
        raise ImageError(f"image {name} is corrupt or not an image ({type(exc).__name__}: {exc})") from None


def load_image(path: Path, shown_as: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> ProblemImage:
    """Read and validate one image file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"image {shown_as} not found") from None
    except OSError as exc:
        raise ImageError(f"image {shown_as} unreadable ({exc.strerror})") from None
    validate_image_bytes(data, shown_as, max_pixels)
    return ProblemImage(data=data, path=shown_as)


def problem_from_row(
    row: dict[str, Any],
    base_dir: Path,
    *,
    default_answer_type: AnswerType = "auto",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    where: str = "row",
) -> Problem | InputError:
    """Turn one input row into a problem, or an error naming what is wrong."""
    given_id = row.get("id")
    shown_id = str(given_id) if given_id not in (None, "") else where
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        return InputError(shown_id, "missing question")
    answer = row.get("answer")
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        return InputError(shown_id, "missing answer")
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        return InputError(shown_id, f"answer must be a string or a number, got {type(answer).__name__}")
    image_field = row.get("images", row.get("image"))
    if image_field is None:
        image_paths: list[Any] = []
    elif isinstance(image_field, list):
        image_paths = image_field
    else:
        image_paths = [image_field]
    images = []
    for rel in image_paths:
        if not isinstance(rel, str) or not rel:
            return InputError(shown_id, f"image entry must be a path string, got {rel!r}")
        try:
            images.append(load_image(base_dir / rel, rel, max_pixels))
        except ImageError as exc:
            return InputError(shown_id, str(exc))
    answer_type = row.get("answer_type", default_answer_type)
    meta = row.get("meta") or {}
    if not isinstance(meta, dict):
        return InputError(shown_id, f"meta must be an object, got {type(meta).__name__}")
    images_t = tuple(images)
    problem_id = str(given_id) if given_id not in (None, "") else problem_id_for(question, images_t)
    try:
        return Problem(
            id=problem_id,
            question=question,
            answer=str(answer),
            images=images_t,
            answer_type=answer_type,
            meta=meta,
        )
    except ValueError as exc:
        return InputError(problem_id, str(exc))


def iter_jsonl(
    path: str | os.PathLike[str],
    *,
    default_answer_type: AnswerType = "auto",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[Problem | InputError]:
    """Stream problems from a JSONL file; image paths are relative to the file.

    Rows are read lazily, so a million-row input costs memory for one row at a time
    (plus the set of ids seen, for the duplicate check).
    """
    path = Path(path)
    base_dir = path.parent
    seen: set[str] = set()
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path.name}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield InputError(where, f"line {line_no} is not valid JSON ({exc.msg})")
                continue
            if not isinstance(row, dict):
                yield InputError(where, f"line {line_no} is not a JSON object")
                continue
            item = problem_from_row(
                row, base_dir, default_answer_type=default_answer_type, max_pixels=max_pixels, where=where
            )
            if isinstance(item, Problem):
                if item.id in seen:
                    yield InputError(item.id, f"duplicate id {item.id!r} (line {line_no})")
                    continue
                seen.add(item.id)
            yield item


def iter_problems(items: Any) -> Iterator[Problem | InputError]:
    """Accept a path to a JSONL file or an iterable of problems; stream problems and errors."""
    if isinstance(items, (str, os.PathLike)):
        yield from iter_jsonl(items)
        return
    seen: set[str] = set()
    for item in items:
        if isinstance(item, Problem):
            if item.id in seen:
                yield InputError(item.id, f"duplicate id {item.id!r}")
                continue
            seen.add(item.id)
        elif not isinstance(item, InputError):
            raise TypeError(f"expected Problem objects, got {type(item).__name__}")
        yield item
