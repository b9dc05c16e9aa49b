"""Problems (image-question-answer triples) and loading them from JSONL.

Loading is *total*: a bad row never stops a run. Each row becomes either a
:class:`Problem` or an :class:`InputError` carrying a reason a person understands,
and the driver routes errors to ``errors/`` while the good rows are searched.

Images are read only from regular files (a FIFO would hang the run, ``/dev/zero`` fill
memory) of at most ``InputConfig.max_image_bytes``, and decoded only for problems that
will run: a resume skips finished problems by id before touching their images.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image
from prmtree.engine.config import InputConfig
from prmtree.engine.errors import ConfigError, ImageError
from prmtree.engine.records import InputError, Problem, ProblemImage, problem_id_for

#: Images above this many pixels are refused (decompression-bomb guard): the config's default.
DEFAULT_MAX_PIXELS: int = InputConfig.model_fields["max_pixels"].default


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
    except Image.DecompressionBombError as exc:  # Pillow's own guard fires first past 2x its limit
        raise ImageError(f"image {name} is over the limit of {max_pixels} pixels (decompression-bomb guard; {exc})") from None
    except Exception as exc:  # Pillow raises many types for corrupt data
        raise ImageError(f"image {name} is corrupt or not an image ({type(exc).__name__}: {exc})") from None


DEFAULT_MAX_IMAGE_BYTES: int = InputConfig.model_fields["max_image_bytes"].default


def read_image_file(path: Path, shown_as: str, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> bytes:
    """The bytes of one image file, undecoded: a regular file of at most ``max_bytes``.

    Opened non-blocking and checked with ``fstat`` on the open file, so a FIFO neither
    hangs the open nor is read, and a device or a growing file is not read past the cap.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ImageError(f"image {shown_as} not found") from None
    except OSError as exc:
        raise ImageError(f"image {shown_as} unreadable ({exc.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
        raise ImageError(f"image {shown_as} unreadable: {kind} (only regular files are read as images)")
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if info.st_size > max_bytes:
            raise ImageError(
                f"image {shown_as} is {info.st_size} bytes, over the limit of {max_bytes} (max_image_bytes)"
            )
        try:
            data = handle.read(max_bytes + 1)
        except OSError as exc:
            raise ImageError(f"image {shown_as} unreadable ({exc.strerror})") from None
    if len(data) > max_bytes:
        raise ImageError(f"image {shown_as} is over the limit of {max_bytes} bytes (max_image_bytes)")
    return data


def load_image(
    path: Path, shown_as: str, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES
) -> ProblemImage:
    """Read and validate one image file."""
    data = read_image_file(path, shown_as, max_bytes)
    validate_image_bytes(data, shown_as, max_pixels)
    return ProblemImage(data=data, path=shown_as)


_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")


def _read_images(value: Any, base_dir: Path | None, max_bytes: int) -> tuple[ProblemImage, ...]:
    """Images from a path, an ``{bytes, path}`` struct, or a list of them: their bytes,
    not yet decoded (see :func:`validate_image_bytes`)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ImageError("image list is empty (leave the field out for a problem without images)")
    images = []
    for item in items:
        if isinstance(item, dict):
            data, path = item.get("bytes"), item.get("path")
            if data is not None and not isinstance(data, (bytes, bytearray, memoryview)):
                raise ImageError(
                    f"image struct 'bytes' must be binary data, got {type(data).__name__} "
                    "(JSON cannot hold bytes: give the image's path instead)"
                )
            if data:
                if len(data) > max_bytes:
                    raise ImageError(
                        f"embedded image is {len(data)} bytes, over the limit of {max_bytes} (max_image_bytes)"
                    )
                images.append(ProblemImage(bytes(data), path))
                continue
            item = path
        if isinstance(item, (bytes, bytearray, memoryview)):
            raise ImageError("image entry is raw bytes: give them as an image struct {'bytes': ..., 'path': name} "
                             "(what datasets' Image feature stores)")
        if not isinstance(item, str) or not item:
            raise ImageError(f"image entry must be a path or an image struct, got {item!r:.80}")
        if item.startswith("data:") or (len(item) > 200 and _BASE64.fullmatch(item[:4096])):
            raise ImageError(f"image entry is image data given as text ({item[:24]}..., {len(item)} characters): "
                             "give the image's file path, or its bytes in an image struct in Parquet")
        full = Path(item) if base_dir is None or os.path.isabs(item) else base_dir / item
        images.append(ProblemImage(read_image_file(full, item, max_bytes), item))
    return tuple(images)


def problem_from_row(
    row: dict[str, Any],
    base_dir: Path | None,
    fmt: InputConfig = InputConfig(),
    where: str = "row",
    skip: Callable[[str], bool] | None = None,
) -> Problem | InputError | None:
    """Turn one input row into a problem, or an error naming what is wrong.

    ``skip(id)`` true (a resume's finished problem, another slice's): None, decided
    before any image is decoded, and before any is read when the row gives its id.
    """
    given_id = row.get(fmt.id_field)
    shown_id = str(given_id) if given_id not in (None, "") else where
    if skip is not None and given_id not in (None, "") and skip(shown_id):
        return None
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
        images = _read_images(image_value, base_dir, fmt.max_image_bytes) if image_value is not None else ()
    except ImageError as exc:
        return InputError(shown_id, str(exc))
    if skip is not None and given_id in (None, "") and skip(problem_id_for(question, images)):
        return None
    try:
        for image in images:
            validate_image_bytes(image.data, image.path or "(embedded)", fmt.max_pixels)
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
#: Files an input directory may hold beside its data without being read or refused.
IGNORED_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".md")


def _is_hf_dataset(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_info.json").exists() or (path / "state.json").exists())


def input_files(path: Path) -> list[Path]:
    """The data files of an input path: itself, or a directory's files in name order.

    A directory's other files are refused (:class:`ConfigError` naming them) rather than
    skipped, so no data (``.csv``, ``.jsonl.gz``) is left out silently; images, READMEs and
    licences, hidden files and subdirectories are ignored.
    """
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    unknown = [
        p.name for p in files
        if p.suffix.lower() not in INPUT_SUFFIXES + IGNORED_SUFFIXES
        and not p.name.upper().startswith(("README", "LICENSE"))
    ]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise ConfigError(
            f"input directory {str(path)!r} holds files prmtree does not read: {shown} "
            f"(it reads {', '.join(INPUT_SUFFIXES)}); convert or move them"
        )
    data = [p for p in files if p.suffix.lower() in INPUT_SUFFIXES]
    if not data:
        raise ConfigError(f"input directory {str(path)!r} holds no {', '.join(INPUT_SUFFIXES)} files")
    return data


def check_input(path: str | os.PathLike[str]) -> None:
    """Refuse an unreadable input path at once (ConfigError), before a model loads."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"input {str(path)!r} not found")
    if not _is_hf_dataset(path):
        input_files(path)


def iter_rows(path: Path) -> Iterator[tuple[Path, str, Any]]:
    """(base directory, where, row-or-error) for every row of a file or directory."""
    if _is_hf_dataset(path):
        for where, row in _arrow_rows(path):
            yield path, where, row
        return
    for file in input_files(path):
        readers = {".jsonl": _jsonl_rows, ".json": _json_rows, ".parquet": _parquet_rows}
        reader = readers.get(file.suffix.lower(), _jsonl_rows)
        for where, row in reader(file):
            yield file.parent, where, row


def iter_input(
    path: str | os.PathLike[str],
    fmt: InputConfig = InputConfig(),
    skip: Callable[[str], bool] | None = None,
) -> Iterator[Problem | InputError]:
    """Stream problems from JSONL, JSON, Parquet, a directory of them, or a saved HF dataset.

    Rows are read lazily, so a million-row input costs memory for one batch at a time
    (plus the set of ids seen, for the duplicate check). Image paths are relative to the
    file that names them. Rows whose id ``skip`` accepts are left out before their
    images are decoded.
    """
    seen: set[str] = set()
    for base_dir, where, row in iter_rows(Path(path)):
        if isinstance(row, str):
            yield InputError(where, row)
            continue
        item = problem_from_row(row, base_dir, fmt, where, skip)
        if item is None:
            continue
        if isinstance(item, Problem):
            if item.id in seen:
                yield InputError(item.id, f"duplicate id {item.id!r} ({where})")
                continue
            seen.add(item.id)
        yield item


def iter_problems(
    items: Any, fmt: InputConfig = InputConfig(), skip: Callable[[str], bool] | None = None
) -> Iterator[Problem | InputError]:
    """Accept an input path or an iterable of problems; stream problems and errors.
    ``skip``: ids to leave out of an input path before decoding their images."""
    if isinstance(items, (str, os.PathLike)):
        yield from iter_input(items, fmt, skip)
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
