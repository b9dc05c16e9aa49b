"""One writer per slice of an output directory, and one slice layout per directory.

Two runs writing the same slice (a re-queued job, a double submit) interleave shards and
manifest updates and silently lose or duplicate rows, so a run holds an exclusive
``flock`` on ``.<manifest name>.lock`` for as long as it writes. The kernel drops a
``flock`` when its process dies (``kill -9``, a lost node's container), so a stale lock
needs no clean-up: the next run simply takes it. The file also records who holds it
(pid, host, start time), for the refusal message only; the lock is the ``flock``.

Lock files stay in place after a run: deleting one would race with a run that has just
opened it. File descriptors are opened non-inheritable, so spawned worker processes
never hold the lock.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from prmtree.engine.output.layout import slice_count

#: The directory-wide lock taken briefly while a run checks the layout and takes its slice.
DIRECTORY_LOCK = ".prmtree.lock"


class LockHeld(Exception):
    """Another live process holds the lock; ``holder`` is what it recorded."""

    def __init__(self, path: Path, holder: dict[str, Any]) -> None:
        super().__init__(describe_holder(holder))
        self.path = path
        self.holder = holder


def describe_holder(holder: dict[str, Any]) -> str:
    """``pid 123 on host gpu-7, started 2025-05-01 12:00:03`` (or what is known of it)."""
    if not holder:
        return "a process that recorded nothing about itself"
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    text = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {when}"
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int) and not _alive(holder["pid"]):
        text += " (that process is gone: a child process it forked still holds the lock)"
    return text


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FileLock:
    """An exclusive ``flock`` on one file, with its holder recorded in the file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: bool = False, note: dict[str, Any] | None = None) -> FileLock:
        """Take the lock, or raise :class:`LockHeld` at once (``wait``: block until free).
        ``note``: more to record beside the holder (read back by :func:`holder_of`)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockHeld(self.path, holder) from None
            raise
        self._fd = fd
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": round(time.time(), 3), **(note or {})}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        return self if self.held else self.acquire(wait=True)

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_locked(path: Path) -> bool:
    """Whether a live process holds the lock at ``path`` now (probed, nothing written)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's own lock
    return False


def holder_of(path: Path) -> dict[str, Any] | None:
    """What the live process holding the lock at ``path`` recorded, or None when no live
    process holds it."""
    if not is_locked(path):
        return None
    try:
        holder = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        holder = {}
    return holder if isinstance(holder, dict) else {}


def live_writer(path: Path) -> str | None:
    """Who is writing through the lock at ``path`` now (``describe_holder``), or None when
    no live process holds it: a manifest that says "running" is then a stopped run's."""
    holder = holder_of(path)
    return None if holder is None else describe_holder(holder)


def live_slice_holders(out: Path) -> dict[str, dict[str, Any]]:
    """The manifest name of each slice a run is writing into ``out`` right now, with what
    that run recorded in its lock (``FileLock.acquire``'s note too), in name order."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(out.glob(".manifest*.json.lock")):  # ``Slice.lock_name``: ``.<manifest name>.lock``
        holder = holder_of(path)
        if holder is not None:
            found[path.name[1:-len(".lock")]] = holder
    return found


def live_slice_counts(out: Path) -> dict[int, str]:
    """Slice counts (1: unsliced) of runs writing into ``out`` right now, each with a
    manifest name of it. Call under the directory lock, so nobody takes a slice lock
    meanwhile."""
    found: dict[int, str] = {}
    for name in live_slice_holders(out):
        count = slice_count(name)
        if count is not None:
            found.setdefault(count, name)
    return found
