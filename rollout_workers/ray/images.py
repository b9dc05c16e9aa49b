"""Images sent once per worker: a request travels with its problem's images as hashes
(:class:`~prmtree.engine.records.ImageRef`), and the bytes go to a worker only when it
lacks them.

A worker keeps an :class:`ImageCache` (hash -> bytes, least recently used first out,
bounded by ``[executor] image_cache_mb``). The driver keeps, per worker, a
:class:`KnownImages` mirror (hash -> size, the same bound) of what it sent, and piggybacks
on a batch the bytes of every hash the worker is not known to hold. Both sides order a
batch's images the same way before evicting (:meth:`ImageCache.settle`), so with one
driver the mirror is the cache while the worker settles batches in the order they were sent
(Ray may start a later batch first, and a batch reading files lets later ones pass it
meanwhile). It is still a belief, not a guarantee: a worker that
restarted (its actor died and Ray made a new one) starts empty, and the driver clears the
mirror when it sees the death; a worker asked for a hash it does not hold (evicted for
another driver's images, restarted unseen) answers the request with a ``miss``, and
the driver forgets those hashes for that worker and sends the request again with the bytes.
A policy therefore always sees the request's own images, never another's.

Images read where they lie (``[executor] worker_reads_images = "auto"``): an image the
driver read from a file is not sent at all. Its reference carries the file's absolute
path, and a worker that lacks the hash reads the file itself (:func:`read_checked`: a
regular file of the expected size whose sha256 matches) and caches it. A changed, missing
or unreachable file (another machine without the shared filesystem) is a ``miss`` as
above, and the driver sends that worker bytes from then on: one failed read per worker,
not one per image. An image embedded in the input (a Parquet or Hugging Face Arrow file's
image struct) is read where it lies the same way: its reference names the cell
(:class:`~prmtree.engine.records.ImageCell`), the worker reads it (``cells.py``) and checks
size and sha256 as for a file.
"""

from __future__ import annotations

import logging
import math
import os
import stat
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from prmtree.engine.records import ImageRef, image_digest
from prmtree.rollout_workers.ray.cells import CellReader, CellReadError

log = logging.getLogger("prmtree")

class ImageReadError(Exception):
    """A worker could not use an image's file or cell: missing, unreadable, or not the bytes
    the driver read (its hash differs)."""


def read_checked(ref: ImageRef, cells: CellReader | None = None) -> bytes:
    """The bytes of ``ref``'s file (or, with ``cells``, of its input cell), if they are
    exactly the image ``ref`` names.

    A file is opened non-blocking and checked with ``fstat`` (only a regular file of
    ``ref.size`` bytes is read, so a FIFO does not hang the worker and a grown file is not
    read past it); then the bytes are hashed: a file or cell changed since the driver read
    it is refused, never used.
    """
    if ref.cell is not None and cells is not None:
        try:
            data = cells.read(ref.cell)
        except CellReadError as exc:
            raise ImageReadError(str(exc)) from None
        return _same_image(data, ref, f"{ref.cell.file} row {ref.cell.row} {ref.cell.column!r}")
    if not ref.file:
        raise ImageReadError("no file")
    try:
        fd = os.open(ref.file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ImageReadError(f"{ref.file}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ImageReadError(f"{ref.file}: not a regular file")
        if info.st_size != ref.size:
            raise ImageReadError(f"{ref.file}: {info.st_size} bytes, the driver read {ref.size}")
        chunks, left = [], ref.size + 1
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    except OSError as exc:
        raise ImageReadError(f"{ref.file}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return _same_image(data, ref, ref.file)


def _same_image(data: bytes, ref: ImageRef, where: str) -> bytes:
    """``data`` if it is the image ``ref`` names (its size, then its sha256), else why not."""
    if len(data) != ref.size:
        raise ImageReadError(f"{where}: {len(data)} bytes, the driver read {ref.size}")
    if image_digest(data) != ref.sha256:
        raise ImageReadError(f"{where}: changed since the driver read it (sha256 differs)")
    return data


def read_all(refs: Iterable[ImageRef], cells: CellReader | None = None
             ) -> tuple[dict[str, bytes], dict[str, str]]:
    """Each ref's checked bytes by hash, and why each one that failed did (by hash)."""
    read: dict[str, bytes] = {}
    failed: dict[str, str] = {}
    # cells grouped by file and row group: a batch spanning more groups than the reader keeps
    # reads each group once, not once per visit
    for ref in sorted(refs, key=_read_order):
        try:
            read[ref.sha256] = read_checked(ref, cells)
        except ImageReadError as exc:
            failed[ref.sha256] = str(exc)
    return read, failed


def _read_order(ref: ImageRef) -> tuple[Any, ...]:
    cell = ref.cell
    return (0, "", -1, -1) if cell is None else (1, cell.file, cell.group if cell.group is not None else -1, cell.row)


class ImageCache:
    """A worker's images by hash, least recently used evicted first once over ``max_bytes``.

    :meth:`settle` orders and trims it after a batch is resolved, so the images a batch
    brought are always there for it even when one of them alone is over the bound.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._data: OrderedDict[str, bytes] = OrderedDict()
        self.bytes = 0
        self.puts = 0  # images received
        self.put_bytes = 0
        self.repeat_puts = 0  # ... of which the cache already held (a wasted send)
        self.hits = 0
        self.misses = 0  # requests answered with a miss (the driver resends)
        self.evictions = 0
        self.reads = 0  # images read from their files or input cells (not sent)
        self.read_bytes = 0
        self.read_failures = 0  # files or cells missing, unreadable or changed (then a miss)
        self.last_read_error = ""

    def put(self, key: str, data: bytes) -> None:
        self.puts += 1
        self.put_bytes += len(data)
        if key in self._data:
            self.repeat_puts += 1
            self._data.move_to_end(key)
            return
        self._data[key] = data
        self.bytes += len(data)

    def add_read(self, key: str, data: bytes) -> None:
        """An image this worker read from its file or input cell (hash checked)."""
        self.reads += 1
        self.read_bytes += len(data)
        if key not in self._data:
            self._data[key] = data
            self.bytes += len(data)
        self._data.move_to_end(key)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __getitem__(self, key: str) -> bytes:
        data = self._data[key]
        self._data.move_to_end(key)
        self.hits += 1
        return data

    def __len__(self) -> int:
        return len(self._data)

    def settle(self, uses: Iterable[Iterable[str]], new: Iterable[str]) -> None:
        """Order a served batch's images as the driver's :class:`KnownImages` mirror orders
        them, then :meth:`trim`: the images held before the batch become the most recent in
        the order its requests use them (each request's images once, a request answered
        ``miss`` too), then the batch's ``new`` ones, as the driver listed them (sent, then
        read). The same order on both sides makes the mirror evict what this cache evicts: the
        driver neither names an image the worker dropped nor resends one it kept."""
        new = list(dict.fromkeys(new))
        fresh = set(new)
        for keys in uses:
            for key in dict.fromkeys(keys):
                if key not in fresh and key in self._data:
                    self._data.move_to_end(key)
        for key in new:
            if key in self._data:
                self._data.move_to_end(key)
        self.trim()

    def trim(self) -> None:
        """Evict the least recently used images until the cache is within its bound."""
        while self.bytes > self.max_bytes and self._data:
            _, data = self._data.popitem(last=False)
            self.bytes -= len(data)
            self.evictions += 1

    def stats(self) -> dict[str, Any]:
        return {"images": len(self._data), "bytes": self.bytes, "max_bytes": self.max_bytes, "puts": self.puts,
                "put_bytes": self.put_bytes, "repeat_puts": self.repeat_puts, "hits": self.hits,
                "misses": self.misses, "evictions": self.evictions, "reads": self.reads,
                "read_bytes": self.read_bytes, "read_failures": self.read_failures,
                "last_read_error": self.last_read_error}


class KnownImages:
    """The driver's belief of which images one worker holds (hash -> size), bounded like the
    worker's cache so it forgets roughly what the worker evicts. ``by_path``: those of them
    the worker was left to read from their files or input cells (not sent)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self.bytes = 0
        self.by_path: set[str] = set()
        self._added: dict[str, int] = {}  # hash -> size, added since the last trim (this batch's)
        self._warned = False  # the cache's bound was found too small (said once)

    def has(self, key: str) -> bool:
        """Whether the worker is believed to hold ``key`` (a use: it becomes most recent)."""
        if key in self._sizes:
            self._sizes.move_to_end(key)
            return True
        return False

    def add(self, key: str, size: int, by_path: bool = False) -> None:
        if by_path:
            self.by_path.add(key)
        else:
            self.by_path.discard(key)
        self._added[key] = size
        if key in self._sizes:
            self._sizes.move_to_end(key)
            return
        self._sizes[key] = size
        self.bytes += size

    def trim(self) -> None:
        """Forget the least recently used images, as the worker's cache evicts them (once a
        batch's images are added). Forgetting one this batch added means its images do not fit
        the bound: said once (:meth:`_warn_too_small`)."""
        overflow = False
        while self.bytes > self.max_bytes and self._sizes:
            key, size = self._sizes.popitem(last=False)
            self.bytes -= size
            self.by_path.discard(key)
            overflow = overflow or key in self._added
        if overflow and not self._warned:
            self._warned = True
            self._warn_too_small()
        self._added.clear()

    def _warn_too_small(self) -> None:
        """Tell the user that a batch's images (one image, or one problem's, or all the batch's
        problems') are more than a worker's cache holds: the worker drops them once the batch
        is served, and every later batch that uses them carries them again."""
        sizes = self._added.values()
        total, largest = sum(sizes), max(sizes)
        bound = self.max_bytes / (1 << 20)
        if largest > self.max_bytes:
            what = f"an image of {largest / (1 << 20):.1f} MB is larger than a worker's image cache"
        else:
            what = (f"the {len(sizes)} images one batch brought a worker ({total / (1 << 20):.1f} MB together) are "
                    "more than its image cache holds")
        log.warning("prmtree: %s ([executor] image_cache_mb = %g): the worker drops what it cannot hold once the batch "
                    "is served, and every later batch that uses those images carries their bytes again (or has the "
                    "worker read them from their files again); set [executor] image_cache_mb to at least %d (this "
                    "batch's images together)", what, bound, math.ceil(total / (1 << 20)))

    def discard(self, key: str) -> bool:
        """Forget ``key``; whether the worker had been left to read it from its file."""
        size = self._sizes.pop(key, None)
        if size is not None:
            self.bytes -= size
        if key in self.by_path:
            self.by_path.discard(key)
            return True
        return False

    def clear(self) -> None:
        """The worker restarted (or may have): it holds nothing."""
        self._sizes.clear()
        self._added.clear()
        self.by_path.clear()
        self.bytes = 0

    def __contains__(self, key: object) -> bool:
        """Whether the worker is believed to hold ``key`` (not a use, unlike :meth:`has`)."""
        return key in self._sizes

    def __len__(self) -> int:
        return len(self._sizes)
