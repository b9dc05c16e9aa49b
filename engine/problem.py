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

from prmtree.engine.config import InputConfig

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


def _row_images(value: Any, base_dir: Path | None, max_pixels: int) -> tuple[ProblemImage, ...]:
    """Images from a path, an ``{bytes, path}`` struct, or a list of them."""
    items = value if isinstance(value, (list, tuple)) else [value]
    images = []
    for item in items:
        if isinstance(item, dict):
            data, path = item.get("bytes"), item.get("path")
            if data:
                name = path or "(embedded)"
                validate_image_bytes(bytes(data), name, max_pixels)
                images.append(ProblemImage(bytes(data), path))
                continue
            item = path
        if not isinstance(item, str) or not item:
            raise ImageError(f"image entry must be a path or an image struct, got {item!r}")
        full = Path(item) if base_dir is None or os.path.isabs(item) else base_dir / item
        images.append(load_image(full, item, max_pixels))
    return tuple(images)


def problem_from_row(
    row: dict[str, Any],
    base_dir: Path | None,
    fmt: InputConfig = InputConfig(),
    where: str = "row",
) -> Problem | InputError:
    """Turn one input row into a problem, or an error naming what is wrong."""
    given_id = row.get(fmt.id_field)
    shown_id = str(given_id) if given_id not in (None, "") else where
    question = row.get(fmt.question_field)
    if not isinstance(question, str) or not question.strip():
        return InputError(shown_id, "missing question")
    answer = row.get(fmt.answer_field)
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        return InputError(shown_id, "missing answer")
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        return InputError(shown_id, f"answer must be a string or a number, got {type(answer).__name__}")
    image_value = row.get(fmt.image_field)
    if image_value is None and fmt.image_field == "image":
        image_value = row.get("images")
    try:
        images = _row_images(image_value, base_dir, fmt.max_pixels) if image_value not in (None, []) else ()
    except ImageError as exc:
        return InputError(shown_id, str(exc))
    answer_type = row.get("answer_type") or fmt.answer_type
    meta = row.get("meta") or {}
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError:
            return InputError(shown_id, "meta must be an object")
    if not isinstance(meta, dict):
        return InputError(shown_id, f"meta must be an object, got {type(meta).__name__}")
    problem_id = str(given_id) if given_id not in (None, "") else problem_id_for(question, images)
    try:
        return Problem(
            id=problem_id,
            question=question,
            answer=str(answer),
            images=images,
            answer_type=answer_type,
            meta=meta,
        )
    except ValueError as exc:
        return InputError(problem_id, str(exc))


# -- input files ------------------------------------------------------------------------

InputRow = tuple[str, Any]  # (where, row or an error message)


def _jsonl_rows(path: Path) -> Iterator[InputRow]:
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path.name}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield where, f"line {line_no} is not valid JSON ({exc.msg})"
                continue
            yield where, row if isinstance(row, dict) else f"line {line_no} is not a JSON object"


def _json_rows(path: Path) -> Iterator[InputRow]:
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as exc:
        yield path.name, f"{path.name} is not valid JSON ({exc.msg})"
        return
    if isinstance(data, dict):
        data = next((data[k] for k in ("data", "rows", "problems") if isinstance(data.get(k), list)), [data])
    if not isinstance(data, list):
        yield path.name, f"{path.name} holds neither a list of rows nor an object"
        return
    for i, row in enumerate(data):
        where = f"{path.name}[{i}]"
        yield where, row if isinstance(row, dict) else f"item {i} is not a JSON object"


def _parquet_rows(path: Path) -> Iterator[InputRow]:
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(path)
    except Exception as exc:
        yield path.name, f"{path.name} is not a readable Parquet file ({exc})"
        return
    i = 0
    for batch in handle.iter_batches(batch_size=256):
        for row in batch.to_pylist():
            yield f"{path.name}[{i}]", row
            i += 1


def _arrow_rows(directory: Path) -> Iterator[InputRow]:
    """A Hugging Face dataset saved with ``save_to_disk``: Arrow IPC stream files."""
    import pyarrow as pa

    files = sorted(directory.glob("*.arrow"))
    state = directory / "state.json"
    if state.exists():
        listed = [directory / f["filename"] for f in json.loads(state.read_text()).get("_data_files", [])]
        files = listed or files
    for file in files:
        with pa.memory_map(str(file)) as source:
            reader = pa.ipc.open_stream(source)
            i = 0
            for batch in reader:
                for row in batch.to_pylist():
                    yield f"{file.name}[{i}]", row
                    i += 1


INPUT_SUFFIXES = (".jsonl", ".json", ".parquet")


def input_files(path: Path) -> list[Path]:
    """The data files of an input path: itself, or a directory's files in name order."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in INPUT_SUFFIXES and p.is_file())
    return [path]


def iter_rows(path: Path) -> Iterator[tuple[Path, str, Any]]:
    """(base directory, where, row-or-error) for every row of a file or directory."""
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "state.json").exists()):
        for where, row in _arrow_rows(path):
            yield path, where, row
        return
    for file in input_files(path):
        reader = {".jsonl": _jsonl_rows, ".json": _json_rows, ".parquet": _parquet_rows}.get(file.suffix, _jsonl_rows)
        for where, row in reader(file):
            yield file.parent, where, row


def iter_input(path: str | os.PathLike[str], fmt: InputConfig = InputConfig()) -> Iterator[Problem | InputError]:
    """Stream problems from JSONL, JSON, Parquet, a directory of them, or a saved HF dataset.

    Rows are read lazily, so a million-row input costs memory for one batch at a time
    (plus the set of ids seen, for the duplicate check). Image paths are relative to the
    file that names them.
    """
    seen: set[str] = set()
    for base_dir, where, row in iter_rows(Path(path)):
        if isinstance(row, str):
            yield InputError(where, row)
            continue
        item = problem_from_row(row, base_dir, fmt, where)
        if isinstance(item, Problem):
            if item.id in seen:
                yield InputError(item.id, f"duplicate id {item.id!r} ({where})")
                continue
            seen.add(item.id)
        yield item


def iter_problems(items: Any, fmt: InputConfig = InputConfig()) -> Iterator[Problem | InputError]:
    """Accept an input path or an iterable of problems; stream problems and errors."""
    if isinstance(items, (str, os.PathLike)):
        yield from iter_input(items, fmt)
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
