"""Problems (image-question-answer triples) and loading them from JSONL.

Loading is *total*: a bad row never stops a run. Each row becomes either a
:class:`Problem` or an :class:`InputError` carrying a reason a person understands,
and the driver routes errors to ``errors/`` while the good rows are searched.

Images are read only from regular files (a FIFO would hang the run, ``/dev/zero`` fill
memory) of at most ``InputConfig.max_image_bytes``, and decoded only for problems that
will run: a resume skips finished problems by id before touching their images.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import decimal
import io
import itertools
import json
import math
import os
import re
import stat
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy
from PIL import Image
from prmtree.engine.answers.extract import gold_problem
from prmtree.engine.config import InputConfig
from prmtree.engine.errors import ConfigError, ImageError, ImageFileError
from prmtree.engine.records import (
    ImageCell,
    InputError,
    Problem,
    ProblemImage,
    error_fingerprint,
    images_fingerprint,
    problem_fingerprint,
    problem_id_for,
    safe_text,
    stamps_fingerprint,
    text_fingerprint,
    unencodable,
)

#: Images above this many pixels are refused (decompression-bomb guard): the config's default.
DEFAULT_MAX_PIXELS: int = InputConfig.model_fields["max_pixels"].default


def validate_image_bytes(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Check that ``data`` is a decodable image of at most ``max_pixels`` pixels.

    The size is read from the header before any decoding, so a decompression bomb is
    refused without being expanded.
    """
    try:
        with _pillow_allows(max_pixels):
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
        # Pillow names the buffer it read ("<_io.BytesIO object at 0x7f...>"): an address that
        # differs from run to run has no place in a row
        detail = _OBJECT_AT.sub("the image bytes", str(exc))
        raise ImageError(f"image {name} is corrupt or not an image ({type(exc).__name__}: {detail})") from None


_OBJECT_AT = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


@contextlib.contextmanager
def _pillow_allows(max_pixels: int) -> Iterator[None]:
    """Pillow's own bomb guard (``Image.MAX_IMAGE_PIXELS``, ~89M pixels: a warning, an error
    past twice that) raised to ``max_pixels`` while one image is checked, and its warning
    silenced: ours, read from the header, is the guard, so an ``[input] max_pixels`` above
    Pillow's is the limit that holds, as set, and a refused image says so once."""
    before = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        if before is None or max_pixels <= before:
            yield
            return
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = before


DEFAULT_MAX_IMAGE_BYTES: int = InputConfig.model_fields["max_image_bytes"].default


def read_image_file(path: Path, shown_as: str, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> bytes:
    """The bytes of one image file, undecoded: a regular file of at most ``max_bytes``.

    Opened non-blocking and checked with ``fstat`` on the open file, so a FIFO neither
    hangs the open nor is read, and a device or a growing file is not read past the cap.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ImageFileError(f"image {shown_as} not found") from None
    except OSError as exc:
        raise ImageFileError(f"image {shown_as} unreadable ({exc.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
        raise ImageFileError(f"image {shown_as} unreadable: {kind} (only regular files are read as images)")
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
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
#: A ``file://`` URI of a local absolute path (``Path.as_uri()`` writes them): group 1 is the path.
_FILE_URI = re.compile(r"file://(?:localhost)?(/.*)", re.IGNORECASE | re.DOTALL)


def _image_path(item: str, base_dir: Path | None) -> Path:
    """Where an image entry's file is: relative to the input file's folder, absolute, or a
    local ``file://`` URI (its path, percent-escapes decoded), as a local file is read."""
    if uri := _FILE_URI.fullmatch(item):
        return Path(unquote(uri.group(1)))
    return Path(item) if base_dir is None or os.path.isabs(item) else base_dir / item


def _encoded_image(item: str) -> bool:
    """Whether text is base64 whose bytes begin like an image file (PNG, JPEG, GIF, WebP,
    BMP, TIFF): image data given as text, however short, and no file name."""
    if not _BASE64.fullmatch(item):
        return False
    try:
        data = base64.b64decode("".join(item.split()), validate=True)
    except (binascii.Error, ValueError):
        return False
    return data.startswith(_IMAGE_MAGIC)


def _read_images(value: Any, base_dir: Path | None, max_bytes: int,
                 cell: ImageCell | None = None) -> tuple[ProblemImage, ...]:
    """Images from a path, an ``{bytes, path}`` struct, or a list of them: their bytes,
    not yet decoded (see :func:`validate_image_bytes`). ``cell``: the Parquet or Arrow cell
    ``value`` came from, recorded on each embedded image (so a worker can read it there)."""
    is_list = isinstance(value, (list, tuple))
    items = value if is_list else [value]
    if not items:
        raise ImageError("image list is empty (leave the field out for a problem without images)")
    images = []
    for i, item in enumerate(items):
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
                images.append(ProblemImage(bytes(data), path, cell=(
                    replace(cell, index=i if is_list else None) if cell is not None else None)))
                continue
            item = path
        if isinstance(item, (bytes, bytearray, memoryview)):
            raise ImageError("image entry is raw bytes: give them as an image struct {'bytes': ..., 'path': name} "
                             "(what datasets' Image feature stores)")
        if not isinstance(item, str) or not item:
            raise ImageError(f"image entry must be a path or an image struct, got {item!r:.80}")
        if "\x00" in item:  # no file name holds one (the OS refuses it with a ValueError, not an OSError)
            raise ImageError(f"image entry {item!r:.80} holds a NUL character: no file has such a name")
        if item[:7].lower() == "file://" and not _FILE_URI.fullmatch(item):
            raise ImageError(f"image entry {item[:60]} is a file:// URI that names no local absolute path: give "
                             "the file's path without file:// (relative to the input file's folder, or absolute)")
        if _URL.match(item) and not _FILE_URI.fullmatch(item):
            raise ImageError(f"image entry is a URL ({item[:60]}): a run reads local files only; download the "
                             "images and give their paths")
        if item.startswith("data:") or (len(item) > 200 and _BASE64.fullmatch(item[:4096])) or _encoded_image(item):
            raise ImageError(f"image entry is image data given as text ({item[:24]}..., {len(item)} characters): "
                             "give the image's file path, or its bytes in an image struct in Parquet")
        full = _image_path(item, base_dir)
        # ``file``: absolute now (against the driver's cwd), so a worker opens it whatever its own cwd
        images.append(ProblemImage(read_image_file(full, item, max_bytes), item, _file_stamp(full),
                                   os.path.abspath(full)))
    return tuple(images)


def _file_stamp(path: Path) -> str | None:
    """A file's identity as a resume compares it without reading: path, size, time."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return f"{safe_text(os.path.abspath(path))}:{info.st_size}:{info.st_mtime_ns}"


def _stamps(value: Any, base_dir: Path | None) -> str:
    """The stamp part of a fingerprint for an image value, from the files' metadata alone
    ("" where an image is embedded or unreadable: then its bytes are compared)."""
    stamps: list[str | None] = []
    for item in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(item, dict):
            if item.get("bytes"):
                return ""
            item = item.get("path")
        if not isinstance(item, str) or not item:
            return ""
        stamps.append(_file_stamp(_image_path(item, base_dir)))
    return stamps_fingerprint(stamps)


def _reject(row: Any, problem_id: str, reason: str) -> InputError:
    """A bad row, keyed ``problem_id`` (safe to write), with its fingerprint."""
    return InputError(safe_text(problem_id), reason, fingerprint=error_fingerprint(row, reason))


def _missing(what: str, field: str, row: dict[str, Any]) -> str:
    """A missing field's reason, naming the field looked for and the fields the row has."""
    has = ", ".join(repr(safe_text(str(k))) for k in list(row)[:8]) + (", ..." if len(row) > 8 else "")
    return (f"missing {what}: the row has no {field!r} field (its fields: {has or 'none'}); if the data set "
            f"names it otherwise, set [input] {what}_field")


def _bad_gold(answer: str | int | float) -> str | None:
    """Why a gold answer cannot judge anything, or None: a NaN (a missing value, as Parquet
    and pandas write one, or the text ``nan``) would be compared as the word "nan", and a
    hedged gold (``A or B``) would count one of two answers right."""
    if isinstance(answer, float) and math.isnan(answer):
        return "answer is NaN (a missing value): give the gold answer, or drop the row"
    if isinstance(answer, str):
        if answer.strip().lower() in ("nan", "+nan", "-nan"):
            return f"answer {answer.strip()!r} is a missing value (NaN): give the gold answer, or drop the row"
        if (why := gold_problem(answer)) is not None:
            return f"answer {answer.strip()!r} {why}"
    return None


def _image_texts(value: Any) -> Iterator[str]:
    """The text an image value holds (paths), where it goes to the output as-is."""
    for item in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(item, dict):
            item = item.get("path")
        if isinstance(item, str):
            yield item


def _fields(row: dict[str, Any], fmt: InputConfig, shown_id: str) -> tuple[str, str, str, Any, Any] | InputError:
    """A row's question, answer, answer type, meta and image value, checked (images not read)."""
    question = row.get(fmt.question_field)
    if question is not None and not isinstance(question, str):
        return _reject(row, shown_id, f"question must be a string, got {type(question).__name__}")
    if question is None or not question.strip():
        reason = _missing("question", fmt.question_field, row) if fmt.question_field not in row else "missing question"
        return _reject(row, shown_id, reason)
    answer = row.get(fmt.answer_field)
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        reason = _missing("answer", fmt.answer_field, row) if fmt.answer_field not in row else "missing answer"
        return _reject(row, shown_id, reason)
    if isinstance(answer, decimal.Decimal):  # a Parquet decimal column
        answer = str(answer)
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        return _reject(row, shown_id, f"answer must be a string or a number, got {type(answer).__name__}")
    if (why := _bad_gold(answer)) is not None:
        return _reject(row, shown_id, why)
    image_value = row.get(_image_column(row, fmt))
    answer_type = row.get("answer_type") or fmt.answer_type
    texts = [(fmt.question_field, question), (fmt.answer_field, answer), ("answer_type", answer_type)]
    texts += [(fmt.image_field, path) for path in _image_texts(image_value)]
    for name, text in texts:
        if isinstance(text, str) and (why := unencodable(text)) is not None:
            return _reject(row, shown_id, f"{name} holds {why}: UTF-8 cannot store it, so fix the row")
    meta = row.get("meta")
    meta = {} if meta is None else meta  # a false meta ([], 0, "") is no object either
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError:
            return _reject(row, shown_id, "meta must be an object")
        except RecursionError:  # nested past the parser's depth
            return _reject(row, shown_id, "meta is nested too deeply to read")
    if not isinstance(meta, dict):
        return _reject(row, shown_id, f"meta must be an object, got {type(meta).__name__}")
    if (why := bad_meta(meta)) is not None:
        return _reject(row, shown_id, why)
    # graded as text, a float's expansion never matches its right answer; elsewhere it is compared
    # as a number, and its text stays as earlier runs recorded it (their fingerprints hold it)
    text = _answer_text(answer) if answer_type in ("vqa", "text") else str(answer)
    return question, text, answer_type, meta, image_value


def _answer_text(answer: str | int | float) -> str:
    """A gold answer as text, as its data set shows it. A float column's value arrives as a
    double: a float32 column's 0.1 as 0.10000000149011612, and a pandas int column with a
    missing value is float64 (2.0 for 2); graded as text (``vqa``, ``text``) neither would
    match its right answer. So: an integral float without its ".0", a float32's shortest form."""
    if not isinstance(answer, float) or not math.isfinite(answer):
        return str(answer)
    if answer.is_integer() and abs(answer) < 1e16:
        return str(int(answer))
    if not 1e-30 < abs(answer) < 1e16:
        return repr(answer)
    single = numpy.float32(answer)
    if float(single) == answer:  # exactly a float32: the shortest text that reads back to it
        return str(single)
    return repr(answer)


def bad_meta(meta: dict[str, Any]) -> str | None:
    """Why a problem's ``meta`` would be misread, or None: a ``chance`` or ``options`` the
    labels cannot use was ignored without a word, and the floor fell back to a default."""
    chance = meta.get("chance")
    if chance is not None and (isinstance(chance, bool) or not isinstance(chance, (int, float))
                               or not 0 <= chance < 1):
        return (f"meta.chance must be a number from 0 to below 1 (the share of guesses that reach the gold "
                f"answer), got {safe_text(repr(chance))[:40]}")
    options = meta.get("options")
    if options is not None and (not isinstance(options, (list, tuple, dict)) or len(options) < 2):
        return (f"meta.options must be a list of at least two options (or an object: letter -> option), got "
                f"{type(options).__name__} {safe_text(repr(options))[:40]}")
    return None


def _image_column(row: dict[str, Any], fmt: InputConfig) -> str:
    """The column a row's images are in: ``image_field``, or ``images`` where the default
    ``image`` is absent."""
    if row.get(fmt.image_field) is None and fmt.image_field == "image" and "images" in row:
        return "images"
    return fmt.image_field


def _given_id(row: dict[str, Any], fmt: InputConfig) -> str | None:
    """The id a row gives, as the run keys it (text UTF-8 can store), or None."""
    given = row.get(fmt.id_field)
    return None if given in (None, "") else safe_text(str(given))


#: The keys of a duplicate id's later rows (:func:`_duplicate`): a row may not give one as its
#: own id, or the two would share one key in the manifest.
_COPY_KEY = re.compile(r" \(copy \d+\)\Z")


def _bad_id(value: Any, given: str) -> str | None:
    """Why a row's id cannot key it, or None."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return f"id must be a string or a number, got {type(value).__name__} {safe_text(repr(value))[:80]}"
    if isinstance(value, float) and not math.isfinite(value):  # NaN, Infinity, 1e400: "nan", "inf" collide
        return f"id must be a finite number, got {value!r}"
    if _COPY_KEY.search(given):
        return (f"id {given!r} ends like the key prmtree gives a duplicate id's later rows ('<id> (copy N)'); "
                "give this row another id")
    return None


def _load_row(
    row: dict[str, Any],
    base_dir: Path | None,
    fmt: InputConfig,
    where: str,
    skip: Callable[[str], bool] | None = None,
    known_id: str | None = None,
    at: ImageCell | None = None,
) -> tuple[str | None, Problem | InputError | None]:
    """(the problem's id where known, the problem or why the row is bad; None: skipped).
    ``known_id``: the id of a row given without one, already computed (no images read).
    ``at``: the row's place in its Parquet or Arrow file (embedded images remember it)."""
    try:
        return _row_problem(row, base_dir, fmt, where, skip, known_id, at)
    except RecursionError:  # nested too deep for Python to walk (copy, fingerprint): this row's fault
        given = _given_id(row, fmt)
        key = given if given is not None else safe_text(where)
        reason = "the row is nested too deeply to read (hundreds of levels of lists or objects)"
        return given, InputError(key, reason, fingerprint=error_fingerprint(where, reason))


def _row_problem(
    row: dict[str, Any],
    base_dir: Path | None,
    fmt: InputConfig,
    where: str,
    skip: Callable[[str], bool] | None,
    known_id: str | None,
    at: ImageCell | None,
) -> tuple[str | None, Problem | InputError | None]:
    given = _given_id(row, fmt)
    shown_id = given if given is not None else safe_text(where)
    if skip is not None and given is not None and skip(given):
        return given, None
    if given is not None and (why := unencodable(str(row.get(fmt.id_field)))) is not None:
        return given, _reject(row, given, f"{fmt.id_field} holds {why}: UTF-8 cannot store it, so fix the row")
    if skip is not None and known_id is not None and skip(known_id):
        return known_id, None
    fields = _fields(row, fmt, shown_id)
    if isinstance(fields, InputError):
        return given, fields
    question, answer, answer_type, meta, image_value = fields
    try:
        cell = replace(at, column=_image_column(row, fmt)) if at is not None else None
        images = _read_images(image_value, base_dir, fmt.max_image_bytes, cell) if image_value is not None else ()
    except ImageError as exc:
        return given, _reject(row, shown_id, str(exc))
    problem_id = given if given is not None else problem_id_for(question, images)
    if skip is not None and given is None and skip(problem_id):
        return problem_id, None
    try:
        for image in images:
            validate_image_bytes(image.data, image.path or "(embedded)", fmt.max_pixels)
    except ImageError as exc:
        return problem_id, _reject(row, shown_id, str(exc))
    try:
        return problem_id, Problem(id=problem_id, question=question, answer=answer, images=images,
                                   answer_type=answer_type, meta=meta)
    except ValueError as exc:
        return problem_id, _reject(row, problem_id, str(exc))


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
    Text UTF-8 cannot store (a lone surrogate, a valid JSON escape) makes the row bad
    input, and an error's id is always writable (the surrogate written out).
    """
    return _load_row(row, base_dir, fmt, where, skip)[1]


# -- input files ------------------------------------------------------------------------

#: (where, row or an error message, the row's place in a Parquet or Arrow file: a cell whose
#: column is not yet named; None for JSON, whose images are never embedded)
InputRow = tuple[str, Any, ImageCell | None]


def _not_utf8(exc: UnicodeDecodeError) -> str:
    return (f"is not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}): save the file as "
            "UTF-8; its text would be read wrong")


def _jsonl_rows(path: Path) -> Iterator[InputRow]:
    """Each line decoded on its own, strictly: a line that is not UTF-8 is bad input (it was
    decoded with U+FFFD replacements and its text labelled as such), and a BOM that starts
    a line (files joined with ``cat``) is no character. Lines end at LF, as JSON Lines
    says: a CR is whitespace JSON allows anywhere in a row."""
    with path.open("rb") as handle:  # lines end at LF (JSON Lines; a CR before it is whitespace)
        for line_no, raw in enumerate(handle, start=1):
            where = f"{path.name}:{line_no}"
            try:
                line = raw.decode("utf-8").removeprefix("\ufeff")
            except UnicodeDecodeError as exc:
                yield where, f"line {line_no} {_not_utf8(exc)}", None
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield where, f"line {line_no} is not valid JSON ({exc.msg})", None
                continue
            except RecursionError:  # nested past the parser's depth: this line's fault, not the run's
                yield where, f"line {line_no} is nested too deeply to read as JSON", None
                continue
            yield where, row if isinstance(row, dict) else f"line {line_no} is not a JSON object", None


def _json_rows(path: Path) -> Iterator[InputRow]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        yield path.name, f"{path.name} {_not_utf8(exc)}", None
        return
    except json.JSONDecodeError as exc:
        yield path.name, f"{path.name} is not valid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg})", None
        return
    except RecursionError:
        yield path.name, f"{path.name} is nested too deeply to read as JSON", None
        return
    if isinstance(data, dict):
        data = next((data[k] for k in ("data", "rows", "problems") if isinstance(data.get(k), list)), [data])
    if not isinstance(data, list):
        yield path.name, f"{path.name} holds neither a list of rows nor an object", None
        return
    for i, row in enumerate(data):
        where = f"{path.name}[{i}]"
        yield where, row if isinstance(row, dict) else f"item {i} is not a JSON object", None


#: A Parquet row group larger than this (its bytes, uncompressed) is not read by workers:
#: a worker reading one cell reads the whole group's image column and keeps two groups.
#: ``datasets`` writes image Parquet in groups of 100 rows; ``pyarrow.parquet.write_table``
#: by default in one group for the whole file.
MAX_CELL_GROUP_BYTES = 128 << 20


def _parquet_rows(path: Path) -> Iterator[InputRow]:
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(path)
    except Exception as exc:
        yield path.name, f"{path.name} is not a readable Parquet file ({exc})", None
        return
    file = os.path.abspath(path)
    meta = handle.metadata
    ends = list(itertools.accumulate(meta.row_group(g).num_rows for g in range(meta.num_row_groups)))
    # a worker reads a cell's whole row group (and keeps two): rows of a larger group name
    # no cell, and their images go to a worker as bytes, once
    readable = [meta.row_group(g).total_byte_size <= MAX_CELL_GROUP_BYTES for g in range(meta.num_row_groups)]
    for group, end in enumerate(ends):
        i = ends[group - 1] if group else 0
        batches = handle.iter_batches(batch_size=256, row_groups=[group])
        while True:
            try:
                batch = next(batches, None)
            except Exception as exc:  # a damaged row group: its rows not read yet are one bad row
                yield (f"{path.name}[{i}:{end}]", f"{path.name}: rows {i} to {end - 1} cannot be read (a damaged "
                       f"row group: {type(exc).__name__}: {exc})", None)
                break
            if batch is None:
                break
            for row in batch.to_pylist():
                at = ImageCell("parquet", file, i, group=group) if readable[group] else None
                yield f"{path.name}[{i}]", row, at
                i += 1


def _arrow_rows(directory: Path) -> Iterator[InputRow]:
    """A Hugging Face dataset saved with ``save_to_disk``: Arrow IPC files (stream format
    as ``datasets`` writes them, or file format)."""
    import pyarrow as pa

    files = sorted(directory.glob("*.arrow"))
    state = directory / "state.json"
    if state.exists():
        listed = [directory / f["filename"] for f in json.loads(state.read_text()).get("_data_files", [])]
        files = listed or files
    for file in files:
        absolute = os.path.abspath(file)
        try:
            source = pa.memory_map(str(file))
        except OSError as exc:  # listed in state.json, gone (or unreadable): that file's rows are one bad row
            yield file.name, f"{file.name} cannot be read ({exc.strerror or exc})", None
            continue
        with source:
            try:
                table = arrow_table(source)
            except pa.ArrowInvalid as exc:
                yield file.name, f"{file.name} is not a readable Arrow IPC file ({exc})", None
                continue
            i = 0
            for batch in table.to_batches():
                for row in batch.to_pylist():
                    yield f"{file.name}[{i}]", row, ImageCell("arrow", absolute, i)
                    i += 1


def arrow_table(source: Any) -> Any:
    """The table in a memory-mapped Arrow IPC file, on the mapping (no copy): the stream
    format ``datasets`` writes, or the file format (``pyarrow.ipc.new_file``, Feather v2)."""
    import pyarrow as pa

    try:
        return pa.ipc.open_stream(source).read_all()
    except pa.ArrowInvalid:
        source.seek(0)
        return pa.ipc.open_file(source).read_all()


INPUT_SUFFIXES = (".jsonl", ".json", ".parquet")
#: Files an input directory may hold beside its data without being read or refused.
#: A single input file named so is refused, not parsed as JSONL line by line into bad rows
#: (any other name, ``.ndjson`` or a ``mktemp`` one, is read as JSONL).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff")
NOT_INPUT_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zip", ".tar", ".tgz", ".csv", ".tsv", ".xlsx", ".xls",
                      ".arrow", ".txt", *IMAGE_SUFFIXES)
IGNORED_SUFFIXES = (*IMAGE_SUFFIXES, ".md")


def _is_hf_dataset(path: Path) -> bool:
    """A folder ``Dataset.save_to_disk`` wrote: its ``state.json``, or Arrow files beside a
    ``dataset_info.json`` (a folder of JSONL with only a ``dataset_info.json`` is not one)."""
    return path.is_dir() and ((path / "state.json").exists()
                              or ((path / "dataset_info.json").exists() and any(path.glob("*.arrow"))))


#: What ``datasets`` writes beside a data set's files (``save_to_disk``, ``push_to_hub``).
HF_METADATA = frozenset({"dataset_info.json", "state.json", "dataset_dict.json", "dataset_infos.json"})


def input_files(path: Path) -> list[Path]:
    """The data files of an input path: itself, or a directory's files in name order.

    A directory's other files are refused (:class:`ConfigError` naming them) rather than
    skipped, so no data (``.csv``, ``.jsonl.gz``) is left out silently; images, READMEs and
    licences, a data set's metadata (``dataset_info.json``), hidden files and subdirectories
    are ignored.
    """
    if not path.is_dir():
        if path.suffix.lower() in NOT_INPUT_SUFFIXES:
            raise ConfigError(f"input {str(path)!r} is not a file prmtree reads (it reads {', '.join(INPUT_SUFFIXES)}; "
                              "another name is read as JSONL): convert it, or decompress it first")
        return [path]
    entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    odd = [p.name for p in entries if p.suffix.lower() in INPUT_SUFFIXES and not p.is_file() and not p.is_dir()]
    if odd:  # a dangling link or a FIFO named like data: skipped, its rows would be left out without a word
        raise ConfigError(f"input directory {str(path)!r} holds {', '.join(odd[:5])}, named like data but not a "
                          "regular file (a broken link, a pipe): fix or move it")
    files = [p for p in entries if p.is_file()]
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
    # a Hugging Face dataset card's companions describe the data: they hold no problem rows
    data = [p for p in files if p.suffix.lower() in INPUT_SUFFIXES and p.name not in HF_METADATA]
    if not data:
        raise ConfigError(f"input directory {str(path)!r} holds no {', '.join(INPUT_SUFFIXES)} files")
    return data


#: Names data sets give the fields prmtree reads, suggested when a field is missing from every row.
FIELD_NAMES = {
    "question": ("problem", "query", "prompt", "question_text", "instruction", "input", "text"),
    "answer": ("solution", "final_answer", "answer_text", "ground_truth", "gt", "label", "target", "output"),
    "image": ("images", "image_path", "img", "image_file", "file_name", "picture", "figure", "decoded_image"),
}
#: How many rows :func:`check_input` reads to see that a field is missing from every row.
SAMPLE_ROWS = 1000


def check_input(path: str | os.PathLike[str], fmt: InputConfig | None = None) -> None:
    """Refuse an unreadable input path at once (ConfigError), before a model loads; with
    ``fmt``, also an input none of whose first rows has the question or answer field (or
    the image field while rows have another image-like one), naming the fields they have
    and the ``[input]`` setting that maps them."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"input {str(path)!r} not found")
    if not path.is_dir() and not path.is_file():  # a pipe (/dev/stdin, <(zcat ...)) or a device
        raise ConfigError(f"input {str(path)!r} is not a regular file (a pipe or a device): a run reads its input "
                          "more than once (to check its fields, to compare it when resuming), so write it to a file "
                          "first, e.g. zcat data.jsonl.gz > data.jsonl")
    splits = path / "dataset_dict.json"
    if path.is_dir() and splits.is_file():  # DatasetDict.save_to_disk: a folder per split
        try:
            names = [str(n) for n in json.loads(splits.read_text(encoding="utf-8")).get("splits", [])]
        except (OSError, ValueError, AttributeError):
            names = []
        example = names[0] if names else "train"
        raise ConfigError(f"input {str(path)!r} is a saved DatasetDict (splits: {', '.join(names) or 'unknown'}): "
                          f"give one split's folder, e.g. --input {str(path / example)!r}")
    if not _is_hf_dataset(path):
        input_files(path)
    if fmt is not None:
        _check_fields(path, fmt)


def holds_rows(path: str | os.PathLike[str]) -> bool:
    """Whether the input at ``path`` holds any row at all (a bad one counts): read up to the first."""
    return next(iter(iter_rows(Path(path))), None) is not None


def _check_fields(path: Path, fmt: InputConfig) -> None:
    keys: dict[str, None] = {}
    found = {"question": False, "answer": False, "image": False}
    wanted = {"question": (fmt.question_field,), "answer": (fmt.answer_field,),
              "image": (fmt.image_field, "images") if fmt.image_field == "image" else (fmt.image_field,)}
    rows = 0
    images_in: set[str] = set()  # the fields some row holds an image-like value in
    maybe_images: set[str] = set()  # the fields some row holds a value that may name an image
    for _, _, row, _ in iter_rows(path):
        if not isinstance(row, dict):
            continue
        rows += 1
        keys.update(dict.fromkeys(map(str, row)))
        images_in.update(str(k) for k, v in row.items() if _image_like(v))
        maybe_images.update(str(k) for k, v in row.items() if v is not None and not _no_image(v))
        for what, names in wanted.items():
            found[what] = found[what] or any(n in row for n in names)
        if rows >= SAMPLE_ROWS or all(found.values()):
            break
    if not rows:
        return
    has = ", ".join(repr(safe_text(k)) for k in list(keys)[:12]) + (", ..." if len(keys) > 12 else "")
    for what in ("question", "answer", "image"):
        if found[what]:
            continue
        field_name = wanted[what][0]
        guess = next((k for k in FIELD_NAMES[what] if k in keys), None)
        if what == "image":
            if "image_field" in fmt.model_fields_set:
                continue  # named on purpose: rows without it have no images
            # what a field holds first (an image path, struct or bytes), then a name that says
            # image, unless all it holds is no image ("image_caption": text, "num_images": a number)
            named = [k for k in keys if k in FIELD_NAMES[what] or "image" in k.lower() or "img" in k.lower()]
            guess = next((k for k in (*FIELD_NAMES[what], *keys) if k in images_in), None) or next(
                (k for k in named if k in maybe_images), None)
            if guess is None:
                continue  # problems without images are allowed
        shown = f"the first {rows} rows" if rows >= SAMPLE_ROWS else f"all {rows} rows" if rows > 1 else "the row"
        hint = (f'set [input] {what}_field = "{guess}" in the config' if guess
                else f"set [input] {what}_field to the field that holds the {what}")
        raise ConfigError(
            f"no input row has the {what} field {field_name!r} ({shown} of {str(path)!r} "
            f"{'has' if rows == 1 else 'have'}: {has}): {hint}"
        )


_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*")


def _image_like(value: Any) -> bool:
    """Whether a field's value looks like an image entry: a path with an image suffix, image
    bytes, an image struct holding either (``{"bytes", "path"}``), or a list of those."""
    if isinstance(value, (list, tuple)):
        return any(_image_like(v) for v in value[:4])
    if isinstance(value, dict):
        return _image_like(value.get("bytes")) or _image_like(value.get("path"))
    if isinstance(value, (bytes, bytearray)):
        return bytes(value[:4]).startswith(_IMAGE_MAGIC)
    return isinstance(value, str) and len(value) < 4096 and value.lower().endswith(IMAGE_SUFFIXES)


def _no_image(value: Any) -> bool:
    """Whether a value cannot name an image: a number or a flag, text with spaces (a caption),
    an object that is no image struct."""
    if isinstance(value, (list, tuple)):
        return all(_no_image(v) for v in value[:4])
    if isinstance(value, dict):
        return "bytes" not in value and "path" not in value
    return isinstance(value, (bool, int, float)) or (isinstance(value, str) and " " in value.strip())


def iter_rows(path: Path) -> Iterator[tuple[Path, str, Any, ImageCell | None]]:
    """(base directory, where, row-or-error, the row's place) for every row of a file or
    directory (the place: see :data:`InputRow`)."""
    if _is_hf_dataset(path):
        for where, row, at in _arrow_rows(path):
            yield path, where, row, at
        return
    for file in input_files(path):
        readers = {".jsonl": _jsonl_rows, ".json": _json_rows, ".parquet": _parquet_rows}
        reader = readers.get(file.suffix.lower(), _jsonl_rows)
        for where, row, at in reader(file):
            yield file.parent, where, row, at


def _duplicate(key: str, copy: int, where: str, row: Any) -> InputError:
    """A later row with an id an earlier row has: bad input under its own key, so the
    manifest tells it from the problem (which may be done, failed or redone)."""
    return _reject(row, f"{key} (copy {copy})", f"duplicate id {key!r} ({where}): an earlier row has this id, so "
                   "this copy is left out; give it its own id")


def iter_input(
    path: str | os.PathLike[str],
    fmt: InputConfig = InputConfig(),
    skip: Callable[[str], bool] | None = None,
    known_ids: dict[str, str] | None = None,
) -> Iterator[Problem | InputError]:
    """Stream problems from JSONL, JSON, Parquet, a directory of them, or a saved HF dataset.

    Rows are read lazily, so a million-row input costs memory for one batch at a time
    (plus the ids seen, for the duplicate check). Image paths are relative to the file
    that names them. Rows whose id ``skip`` accepts are left out before their images are
    decoded; ``known_ids`` (where -> id, from :func:`scan_input`) are the ids of rows given
    without one, so those are not read again. The second and later rows with one id are
    input errors keyed ``"<id> (copy N)"``.
    """
    counts: dict[str, int] = {}
    for base_dir, where, row, at in iter_rows(Path(path)):
        if isinstance(row, str):
            yield _reject(None, where, row)
            continue
        given = _given_id(row, fmt)
        if given is not None and (why := _bad_id(row[fmt.id_field], given)) is not None:
            yield _reject(row, where, why)
            continue
        if given is not None:
            counts[given] = counts.get(given, 0) + 1
            if counts[given] > 1:
                yield _duplicate(given, counts[given], where, row)
                continue
        key, item = _load_row(row, base_dir, fmt, where, skip, (known_ids or {}).get(where), at)
        if given is None and key is not None:  # an id from the content: a copy has the same
            counts[key] = counts.get(key, 0) + 1
            if counts[key] > 1:
                yield _duplicate(key, counts[key], where, row)
                continue
        if item is not None:
            yield item


def _problem_error(problem: Problem) -> InputError | None:
    """A problem given in Python whose text UTF-8 cannot store, or whose gold answer is NaN or
    hedged: bad input, not a crash at the flush (or a wrong label)."""
    texts = [("id", problem.id), ("question", problem.question), ("answer", problem.answer)]
    texts += [("image path", im.path) for im in problem.images if isinstance(getattr(im, "path", None), str)]
    for name, text in texts:
        if (why := unencodable(text)) is not None:
            reason = f"{name} holds {why}: UTF-8 cannot store it, so fix the problem"
            return InputError(safe_text(problem.id), reason, fingerprint=error_fingerprint(problem.id, reason))
    if (why := _bad_gold(problem.answer)) is not None or (
            isinstance(problem.meta, dict) and (why := bad_meta(problem.meta)) is not None):
        return InputError(safe_text(problem.id), why, fingerprint=error_fingerprint(problem.id, why))
    return None


def iter_problems(
    items: Any,
    fmt: InputConfig = InputConfig(),
    skip: Callable[[str], bool] | None = None,
    known_ids: dict[str, str] | None = None,
) -> Iterator[Problem | InputError]:
    """Accept an input path or an iterable of problems; stream problems and errors.
    ``skip``: ids to leave out of an input path before decoding their images."""
    if isinstance(items, (str, os.PathLike)):
        yield from iter_input(items, fmt, skip, known_ids)
        return
    counts: dict[str, int] = {}
    for i, item in enumerate(items):
        if isinstance(item, Problem) and (why := _bad_id(item.id, safe_text(str(item.id)))) is not None:
            yield _reject(None, f"problems[{i}]", why)
            continue
        if isinstance(item, Problem):
            key = safe_text(item.id)
            counts[key] = counts.get(key, 0) + 1
            if counts[key] > 1:
                yield _duplicate(key, counts[key], "in the problems given", item.id)
                continue
            item = _problem_error(item) or item
        elif not isinstance(item, InputError):
            raise TypeError(f"expected Problem objects, got {type(item).__name__}")
        yield item


# -- what changed since a run -------------------------------------------------------------


@dataclass
class InputScan:
    """What :func:`scan_input` found, comparing the input with what a run recorded."""

    changed: list[str] = field(default_factory=list)  # recorded, and the row now differs
    unseen: set[str] = field(default_factory=set)  # recorded, and no longer in the input
    known_ids: dict[str, str] = field(default_factory=dict)  # where -> id of rows given without one
    # recorded problems whose images cannot be read now (key -> why): not evidence that the
    # row changed (an unmounted share, a moved folder), so their rows are kept
    unreadable: dict[str, str] = field(default_factory=dict)
    added: set[str] = field(default_factory=set)  # keys of this slice's rows no run recorded (new rows)


def same_fingerprint(recorded: str, current: str) -> bool:
    """Whether a row is unchanged: problems compare text and image contents (not stamps)."""
    if recorded.startswith("error:") or current.startswith("error:"):
        return recorded == current
    return recorded.split(".")[:2] == current.split(".")[:2]


#: What :func:`_row_fingerprint` returns, before the reason, for a recorded problem whose
#: images cannot be read now.
UNREADABLE = "unreadable:"


def _row_fingerprint(row: dict[str, Any], base_dir: Path | None, fmt: InputConfig, where: str,
                     recorded: str) -> str:
    """A row's fingerprint as a run would record it. For a recorded problem whose image
    files have the recorded sizes and times, their bytes are not read again; one whose
    images cannot be read gives :data:`UNREADABLE` and the reason."""
    if recorded.startswith("error:"):
        item = problem_from_row(row, base_dir, fmt, where)
        return problem_fingerprint(item) if isinstance(item, Problem) else item.fingerprint  # type: ignore[union-attr]
    fields = _fields(row, fmt, _given_id(row, fmt) or safe_text(where))
    if isinstance(fields, InputError):
        return fields.fingerprint
    question, answer, answer_type, meta, image_value = fields
    text = text_fingerprint(question, answer, answer_type, meta)
    parts = recorded.split(".")
    if image_value is None:
        return f"{text}.{images_fingerprint(())}."
    stamp = _stamps(image_value, base_dir)
    if stamp and len(parts) == 3 and stamp == parts[2]:
        return f"{text}.{parts[1]}.{stamp}"
    try:
        images = _read_images(image_value, base_dir, fmt.max_image_bytes)
    except ImageFileError as exc:
        return UNREADABLE + str(exc)
    except ImageError as exc:  # the field itself is bad now (a URL, a number): the row changed
        return error_fingerprint(row, str(exc))
    return f"{text}.{images_fingerprint(images)}.{stamp}"


def scan_input(
    items: Any,
    fmt: InputConfig,
    recorded: dict[str, str],
    owns: Callable[[str], bool],
    skipped: Callable[[str], bool],
) -> InputScan:
    """Read the input once, keyed as a run keys it, against ``recorded`` (key ->
    fingerprint, "" if unknown, of every problem and bad row an earlier run recorded):
    which rows changed, which recorded keys are gone. Rows ``owns`` refuses are another
    slice's. Images are read only where a recorded fingerprint needs them (a file whose
    size or time differs, a row given without an id); ``skipped(id)`` says which of the
    latter the run will skip, so their ids are kept in ``known_ids`` instead of read again."""
    scan = InputScan(unseen={k for k in recorded})

    def note(key: str, current: Callable[[], str]) -> None:
        if not owns(key):
            return
        if key not in recorded:
            scan.added.add(key)
            return
        scan.unseen.discard(key)
        if not recorded[key]:
            return
        now = current()
        if now.startswith(UNREADABLE):
            scan.unreadable[key] = now[len(UNREADABLE):]
        elif not same_fingerprint(recorded[key], now):
            scan.changed.append(key)

    counts: dict[str, int] = {}
    by_text: dict[str, list[str]] | None = None  # recorded keys by their text's fingerprint
    if not isinstance(items, (str, os.PathLike)):
        for i, item in enumerate(items):
            if isinstance(item, InputError):
                note(safe_text(item.problem_id), lambda item=item: item.fingerprint)
                continue
            if (why := _bad_id(item.id, safe_text(str(item.id)))) is not None:
                error = _reject(None, f"problems[{i}]", why)
                note(error.problem_id, lambda error=error: error.fingerprint)
                continue
            key = safe_text(item.id)
            counts[key] = counts.get(key, 0) + 1
            if counts[key] > 1:
                dup = _duplicate(key, counts[key], "in the problems given", item.id)
                note(dup.problem_id, lambda dup=dup: dup.fingerprint)
            else:
                error = _problem_error(item)
                note(key, lambda item=item, error=error: error.fingerprint if error else problem_fingerprint(item))
        return scan
    for base_dir, where, row, _ in iter_rows(Path(items)):
        if isinstance(row, str):
            error = _reject(None, where, row)
            note(error.problem_id, lambda error=error: error.fingerprint)
            continue
        given = _given_id(row, fmt)
        if given is not None and (why := _bad_id(row[fmt.id_field], given)) is not None:
            error = _reject(row, where, why)
            note(error.problem_id, lambda error=error: error.fingerprint)
            continue
        if given is not None:
            counts[given] = counts.get(given, 0) + 1
            if counts[given] > 1:
                dup = _duplicate(given, counts[given], where, row)
                note(dup.problem_id, lambda dup=dup: dup.fingerprint)
            else:
                note(given, lambda row=row, base_dir=base_dir, where=where, given=given:
                     _row_fingerprint(row, base_dir, fmt, where, recorded.get(given, "")))
            continue
        # no id: the id is a hash of the question and the images, so they are read
        fields = _fields(row, fmt, safe_text(where))
        if isinstance(fields, InputError):
            note(fields.problem_id, lambda fields=fields: fields.fingerprint)
            continue
        question, answer, answer_type, meta, image_value = fields
        try:
            images = _read_images(image_value, base_dir, fmt.max_image_bytes) if image_value is not None else ()
        except ImageError as exc:
            # its key hashes the images, so a labelled problem whose image file is gone is found
            # by its text: the one recorded problem with the same question, answer and meta
            text = text_fingerprint(question, answer, answer_type, meta)
            if by_text is None:  # built once, the first time an image is missing
                by_text = {}
                for k, fingerprint in recorded.items():
                    by_text.setdefault(fingerprint.split(".")[0], []).append(k)
            same = [k for k in by_text.get(text, []) if k in scan.unseen and skipped(k) and owns(k)]
            if isinstance(exc, ImageFileError) and len(same) == 1:
                scan.unseen.discard(same[0])
                scan.unreadable[same[0]] = str(exc)
                scan.known_ids[where] = same[0]  # the run skips the row as done, without its images
                continue
            error = _reject(row, where, str(exc))
            note(error.problem_id, lambda error=error: error.fingerprint)
            continue
        key = problem_id_for(question, images)
        counts[key] = counts.get(key, 0) + 1
        if counts[key] > 1:
            dup = _duplicate(key, counts[key], where, row)
            note(dup.problem_id, lambda dup=dup: dup.fingerprint)
            continue
        if skipped(key):
            scan.known_ids[where] = key
        text = text_fingerprint(question, answer, answer_type, meta)
        note(key, lambda text=text, images=images, image_value=image_value, base_dir=base_dir:
             f"{text}.{images_fingerprint(images)}.{_stamps(image_value, base_dir) if images else ''}")
    return scan
