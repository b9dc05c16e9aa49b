"""The engine host's wire format: length-prefixed pickles over a Unix socket.

Both ends batch: whatever one event-loop turn produced travels as one frame, so the
cost of a frame (a syscall, a pickle header) is shared by many requests. A request
travels without its problem: a problem goes once per connection (with its images,
whatever their size) and requests name it by id, so the bytes per rollout stay those of
the prefix and the sampling settings. Completions travel as plain tuples, which pickle
several times faster than dataclass instances.

Frames (``!Q`` length, then a pickle):

* host -> driver, once: ``{"policy_name": str, "capacity": int | None}``;
* driver -> host: ``(problems, requests, cancelled, released)``: new problems by id (or
  None), :func:`encode_request` tuples, request ids to cancel, problem ids finished;
* host -> driver: ``(capacity, results)``: this driver's share of the engine now, and
  ``(request id, ok, completions or exception)`` tuples.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from collections.abc import Callable
from typing import Any

from prmtree.engine.records import Completion, GenerationRequest, Problem, StepFormat

HEADER = struct.Struct("!Q")
#: A frame longer than this is a corrupt stream, not a message (a frame of problems with
#: their images is the largest thing sent).
MAX_FRAME = 1 << 32

_FORMATS: dict[str, StepFormat] = {}  # one StepFormat per name, not one per request

RequestTuple = tuple[int, str, tuple[str, ...], int, int, float, float, int, bool, str, str]


def frame(message: Any) -> bytes:
    """``message`` as one frame."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


def portable(exc: BaseException) -> BaseException:
    """The exception itself if it pickles, else a RuntimeError carrying its text."""
    try:
        pickle.loads(pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def encode_request(request_id: int, request: GenerationRequest) -> RequestTuple:
    """A request as it travels: its problem by id (sent once per connection beside it)."""
    return (request_id, request.problem.id, request.prefix, request.n, request.max_tokens, request.temperature,
            request.top_p, request.seed, request.next_step_only, request.step_format.name, request.purpose)


def decode_request(item: RequestTuple, problems: dict[str, Problem]) -> tuple[int, GenerationRequest]:
    """The request back, its problem looked up among those this connection sent."""
    rid, pid, prefix, n, max_tokens, temperature, top_p, seed, next_only, step_format, purpose = item
    fmt = _FORMATS.get(step_format)
    if fmt is None:
        fmt = _FORMATS[step_format] = StepFormat(step_format)
    return rid, GenerationRequest(problems[pid], prefix, n, max_tokens, temperature, top_p, seed, next_only,
                                  fmt, purpose)


def encode_completions(completions: list[Completion]) -> list[tuple[str, int, str, int, int]]:
    return [(c.text, c.num_tokens, c.finish_reason, c.cached_tokens, c.prompt_tokens) for c in completions]


def decode_completions(items: list[tuple[str, int, str, int, int]]) -> list[Completion]:
    return [Completion(*item) for item in items]


class FrameProtocol(asyncio.Protocol):
    """One end of a connection: frames in (``on_frame``), frames out (:meth:`send`), and
    ``on_lost(exc or None)`` once when the connection ends."""

    def __init__(self, on_frame: Callable[[Any], None], on_lost: Callable[[BaseException | None], None],
                 on_made: Callable[[FrameProtocol], None] | None = None) -> None:
        self.on_frame = on_frame
        self.on_lost = on_lost
        self.on_made = on_made
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self.bytes_in = 0
        self.bytes_out = 0
        self.frames_out = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.on_made is not None:
            self.on_made(self)

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        buffer = self._buffer
        buffer += data
        start, end = 0, len(buffer)
        size = HEADER.size
        while end - start >= size:
            (length,) = HEADER.unpack_from(buffer, start)
            if length > MAX_FRAME:
                self._buffer = bytearray()
                assert self.transport is not None
                self.transport.abort()  # connection_lost follows
                return
            if end - start - size < length:
                break
            body = bytes(buffer[start + size:start + size + length])
            start += size + length
            self.on_frame(pickle.loads(body))
        if start:
            del buffer[:start]

    def send(self, message: Any) -> None:
        data = frame(message)
        self.bytes_out += len(data)
        self.frames_out += 1
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_lost(exc)
