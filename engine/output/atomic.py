"""Durable file replacement: a reader sees the old file or the whole new one, never a part.

A file is written under a temporary name beside its target, fsynced, renamed over the
target, and the directory is fsynced, so the rename survives a power loss too.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place (``.name.tmp``)."""
    return path.parent / f".{path.name}.tmp"


def temporary_target(name: str) -> str | None:
    """The file a temporary file name is for, or None if ``name`` is not one."""
    return name[1:-4] if name.startswith(".") and name.endswith(".tmp") else None


def fsync_dir(path: Path) -> None:
    """Make the renames in directory ``path`` durable (best effort: not every system can)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path) -> None:
    """fsync the finished ``tmp``, rename it over ``final``, fsync the directory."""
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    fsync_dir(final.parent)


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (write, fsync, rename, fsync the directory)."""
    tmp = temporary_path(path)
    with removed_on_failure(tmp):
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    fsync_dir(path.parent)


def named(exc: BaseException, path: Path) -> None:
    """Give an I/O error the file it was about when it names none: a write or fsync on an
    open file (``EFBIG`` under ``ulimit -f``, ``EIO``) raises one without, and the user's
    one-line message (``prmtree: error: File too large``) would say nothing of where."""
    if isinstance(exc, OSError) and exc.filename is None:
        exc.filename = str(path)


@contextmanager
def removed_on_failure(tmp: Path) -> Iterator[None]:
    """Delete ``tmp`` when the block fails: a part-written file on a full disk would hold the
    space the retry needs. An I/O error naming no file is given the file ``tmp`` stands for."""
    try:
        yield
    except BaseException as exc:
        target = temporary_target(tmp.name)
        named(exc, tmp.parent / target if target else tmp)
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
