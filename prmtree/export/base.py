"""What every export format is: a class that knows its name, its options and how to write.

A format subclasses :class:`ExportFormat` and registers itself with
``@EXPORT_FORMATS.register(name)``; :func:`prmtree.export.export` checks the options
against the class and the target against the run, then calls its ``write``.
"""

from __future__ import annotations

import abc
import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from prmtree.export.empty import why_empty
from prmtree.export.rows import WORD_JOINER, in_step_number

PLACEHOLDER = "ки"  # Math-Shepherd's step tag; OpenRLHF's example --placeholder_token

#: Field metadata of the options that only their formats read: given to another format, they are refused.
_REFUSED_ELSEWHERE = {"refused_elsewhere": True}


class ExportError(ValueError):
    """An export that cannot be done; the message is one line saying why."""


class NothingToExport(ExportError):
    """An export that would hold no record (the run labelled no step, or the format's own
    filter left none): nothing is written, and the message says why in one line. With
    ``allow_empty=True`` the empty export is written instead (``prmtree export`` exits 4
    without ``--allow-empty``, as ``prmtree run`` does when it labelled nothing)."""


@dataclass(frozen=True)
class ExportOptions:
    """How to export (``prmtree export``'s flags); each format reads the fields it knows.

    ``soft``: MC values instead of hard labels (``openrlhf``, ``qwen-prm``). ``placeholder``:
    the step tag of ``openrlhf``. ``system_prompt``: the system turn of ``visualprm`` and
    ``qwen-prm`` (their models' own prompt by default; ``""`` for none: written empty, since
    InternVL and Qwen's chat templates read a missing one as their default). ``tokenizer``: a
    local tokenizer directory whose chat template renders ``qwen-prm``'s ``text``.
    ``test_size``, ``license``, ``pretty_name``: the ``hf`` dataset's held-out share of
    problems, card licence and title. ``task``: Math-Shepherd's ``task`` column.
    ``keep_flagged``: every format but ``hf`` and ``jsonl`` (which carry the ``flagged``
    column) leaves out the paths a ``consensus`` run kept although MC and the judge
    disagreed, unless this is set: a trainer would take their labels as sure.
    ``allow_partial``: export a run that is not whole (still running, stopped before its
    end, or with slices not run) with a warning, instead of refusing it. ``allow_empty``:
    write an export that holds no record (files with no row: a Parquet file with the
    columns and no row group, an empty JSONL file) with a warning saying why, instead of
    refusing it with :class:`NothingToExport`.
    """

    overwrite: bool = False
    soft: bool = False
    placeholder: str = field(default=PLACEHOLDER, metadata=_REFUSED_ELSEWHERE)
    system_prompt: str | None = field(default=None, metadata=_REFUSED_ELSEWHERE)
    tokenizer: str | Path | None = field(default=None, metadata=_REFUSED_ELSEWHERE)
    test_size: float = field(default=0.0, metadata=_REFUSED_ELSEWHERE)
    license: str = "unknown"
    pretty_name: str | None = None
    task: str = "prmtree"
    keep_flagged: bool = False
    allow_partial: bool = False
    allow_empty: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.test_size < 1.0:
            raise ExportError(f"test_size must be in [0, 1), got {self.test_size}")
        if not self.placeholder or self.placeholder.strip() != self.placeholder:
            raise ExportError(
                f"placeholder must be a non-empty token without surrounding spaces, got {self.placeholder!r}"
            )
        if len(self.placeholder) < 2 or WORD_JOINER in self.placeholder:
            # a step's own text is defused by a word joiner after the marker's first character:
            # one character cannot be broken that way, so the step text's copies would be read
            # as placeholders and the labels would pair with the wrong steps
            raise ExportError(
                f"placeholder must be at least 2 characters, without U+2060, got {self.placeholder!r}: the same "
                "text inside a step is broken by a word joiner (U+2060) after its first character, which cannot "
                "break a one-character placeholder, so its labels would pair with the wrong steps"
            )
        if any(c.isspace() for c in self.placeholder) or in_step_number(self.placeholder):
            # the text openrlhf writes around the (defused) question and steps is whitespace and
            # "Step k: ": a placeholder found in "Step k:" is read there too, and one with a space
            # can straddle a step's edge ("n Step" after a question ending in n)
            raise ExportError(
                f"placeholder must hold no whitespace and no part of the \"Step k: \" numbering put before each "
                f"step, got {self.placeholder!r}: its copies there would be read as placeholders, so its labels "
                "would pair with the wrong steps"
            )

    def given(self) -> list[str]:
        """The format-specific options set away from their defaults (those a format must read)."""
        return [f.name for f in fields(self)
                if f.metadata.get("refused_elsewhere") and getattr(self, f.name) != f.default]


class ExportFormat(abc.ABC):
    """One export format. Subclasses set the class attributes and implement :meth:`write`."""

    name: ClassVar[str]
    description: ClassVar[str]  # one line, for ``prmtree export --help``
    aliases: ClassVar[dict[str, str]] = {}  # another name of the format -> that name's line in --help
    writes_directory: ClassVar[bool] = False
    soft_labels: ClassVar[bool] = False  # reads ``soft``
    values_column: ClassVar[bool] = False  # always carries every MC value in ``values`` (said when soft is refused)
    options: ClassVar[frozenset[str]] = frozenset()  # the format-specific ExportOptions fields it reads

    def outputs(self, target: Path) -> list[Path]:
        """The files it writes besides images; each is checked before anything is written."""
        return [target]

    def check_target_name(self, given: str | os.PathLike[str]) -> None:
        """Refuse a target written as a directory (``NEW/``, ``NEW/.``) when this format writes
        a file: ``Path`` drops the slash, and a new target would become a file named ``NEW``."""
        text = os.fspath(given)
        if not self.writes_directory and isinstance(text, str) and os.path.basename(text) in ("", ".", ".."):
            raise ExportError(f"{text!r} names a directory; --format {self.name} writes a file (give a file name)")

    def check_target(self, target: Path, overwrite: bool) -> None:
        """Refuse a target this format cannot write (a directory; an existing file without ``overwrite``)."""
        for path in self.outputs(target):
            if path.is_dir():
                raise ExportError(
                    f"{str(path)!r} is a directory; --format {self.name} writes a file (give a file name)"
                )
            if path.exists() and not overwrite:
                raise ExportError(f"{str(path)!r} exists; pass --overwrite (overwrite=True) to replace it")

    @abc.abstractmethod
    def write(self, out: Path, target: Path, options: ExportOptions) -> int:
        """Write the run in ``out`` to ``target``; returns the number of records written.

        A format calls :meth:`check_records` with its record count before it puts anything
        in place, so an export of no record is refused with the target untouched."""

    def check_records(self, out: Path, options: ExportOptions, records: int, table: str = "steps",
                      skips_flagged: bool = False) -> None:
        """Refuse an export of no record (:class:`NothingToExport`, saying why), or with
        ``allow_empty`` warn why it is empty. ``table`` is what the records come from
        (``steps`` or ``pairs``); ``skips_flagged``: this export leaves flagged paths out."""
        if records:
            return
        reason = why_empty(out, self.name, table=table, skips_flagged=skips_flagged)
        if not options.allow_empty:
            raise NothingToExport(f"nothing to export as {self.name} (0 records; nothing written): {reason}; pass "
                                  "--allow-empty (allow_empty=True) to write an empty export")
        warnings.warn(f"the {self.name} export holds no record: {reason}", stacklevel=3)


def write_parquet(table: pa.Table, handle: Any, row_group_size: int = 100) -> None:
    """``table`` as zstd Parquet. A table of no row is written with no row group (as
    ``datasets``' own ``to_parquet`` writes one): pyarrow's ``write_table`` would write one
    row group of 0 rows, which ``datasets``' Parquet reader fails on (``BatchSize must be
    greater than 0``)."""
    with pq.ParquetWriter(handle, table.schema, compression="zstd") as writer:
        if table.num_rows:
            writer.write_table(table, row_group_size=row_group_size)


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w") -> Iterator[Any]:
    """Write ``path`` under a temporary name, then rename: a failed export leaves nothing half-written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as handle:
            yield handle
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
