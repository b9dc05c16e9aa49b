"""Images sent once per worker: a request travels with its problem's images as hashes
(:class:`~prmtree.engine.records.ImageRef`), and the bytes go to a worker only when it
lacks them.

A worker keeps an :class:`ImageCache` (hash -> bytes, least recently used first out,
bounded by ``[executor] image_cache_mb``). The driver keeps, per worker, a
:class:`KnownImages` mirror (hash -> size, the same bound) of what it sent, and piggybacks
on a batch the bytes of every hash the worker is not known to hold. The mirror is a
belief, not a guarantee: a worker that restarted (its actor died and Ray made a new one)
starts empty, and the driver clears the mirror when it sees the death; a worker asked for a
hash it does not hold (evicted, restarted unseen) answers the request with a ``miss``, and
the driver forgets those hashes for that worker and sends the request again with the bytes.
A policy therefore always sees the request's own images, never another's.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class ImageCache:
    """A worker's images by hash, least recently used evicted first once over ``max_bytes``.

    :meth:`trim` runs after a batch is resolved, so the images a batch brought are always
    there for it even when one of them alone is over the bound.
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

    def put(self, key: str, data: bytes) -> None:
        self.puts += 1
        self.put_bytes += len(data)
        if key in self._data:
            self.repeat_puts += 1
            self._data.move_to_end(key)
            return
        self._data[key] = data
        self.bytes += len(data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __getitem__(self, key: str) -> bytes:
        data = self._data[key]
        self._data.move_to_end(key)
        self.hits += 1
        return data

    def __len__(self) -> int:
        return len(self._data)

    def trim(self) -> None:
        """Evict the least recently used images until the cache is within its bound."""
        while self.bytes > self.max_bytes and self._data:
            _, data = self._data.popitem(last=False)
            self.bytes -= len(data)
            self.evictions += 1

    def stats(self) -> dict[str, Any]:
        return {"images": len(self._data), "bytes": self.bytes, "max_bytes": self.max_bytes, "puts": self.puts,
                "put_bytes": self.put_bytes, "repeat_puts": self.repeat_puts, "hits": self.hits,
                "misses": self.misses, "evictions": self.evictions}


class KnownImages:
    """The driver's belief of which images one worker holds (hash -> size), bounded like the
    worker's cache so it forgets roughly what the worker evicts."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self.bytes = 0

    def has(self, key: str) -> bool:
        """Whether the worker is believed to hold ``key`` (a use: it becomes most recent)."""
        if key in self._sizes:
            self._sizes.move_to_end(key)
            return True
        return False

    def add(self, key: str, size: int) -> None:
        if key in self._sizes:
            self._sizes.move_to_end(key)
            return
        self._sizes[key] = size
        self.bytes += size

    def trim(self) -> None:
        while self.bytes > self.max_bytes and self._sizes:
            _, size = self._sizes.popitem(last=False)
            self.bytes -= size

    def discard(self, key: str) -> None:
        size = self._sizes.pop(key, None)
        if size is not None:
            self.bytes -= size

    def clear(self) -> None:
        """The worker restarted (or may have): it holds nothing."""
        self._sizes.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._sizes)
