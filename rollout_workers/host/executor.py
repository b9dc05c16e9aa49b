"""HostExecutor: ``await submit(request)`` on the engine host of a local ``--drivers N``
job (``prmtree/local_drivers.py``), reached over a Unix socket (``[executor] attach``).

A driver process of such a job runs this instead of its own policy. Requests made in one
event-loop turn leave as one frame; a problem goes with the first request that names it
and is released when its tree finishes. A request the driver cancels (its timeout, a
stop) is cancelled at the host too. When the host goes away (the job's process died),
every request fails with :class:`~prmtree.engine.errors.FatalExecutorError`: the run
stops with everything finished saved, and the same command resumes it.
"""

from __future__ import annotations

import asyncio
import pickle
import socket
from typing import Any

from prmtree.engine.config import ExecutorConfig
from prmtree.engine.errors import FatalExecutorError
from prmtree.engine.records import Completion, GenerationRequest, Problem
from prmtree.rollout_workers.host.wire import HEADER, FrameProtocol, decode_completions, encode_request

#: How long a driver waits for the host to answer its connection.
CONNECT_TIMEOUT_S = 60.0


class HostLost(FatalExecutorError):
    """The engine host closed the connection: nothing more can be generated."""


class HostExecutor:
    """A driver's link to the engine host at ``address`` (a Unix socket path)."""

    def __init__(self, address: str, config: ExecutorConfig | None = None) -> None:
        self.address = address
        self.config = config or ExecutorConfig(kind="host", attach=address)
        self._sock = _connect(address)
        hello = _read_hello(self._sock)
        self.policy_name: str = hello["policy_name"]
        self._capacity: int | None = hello["capacity"]
        self._protocol: FrameProtocol | None = None
        self._opening: asyncio.Future[None] | None = None  # the task handing the socket to the loop
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[tuple[bool, Any]]] = {}
        self._sent: dict[str, Problem] = {}  # problems the host holds for this connection
        # the next frame: problems not sent yet, requests, request ids cancelled, problem ids released
        self._new_problems: dict[str, Problem] = {}
        self._requests: list[tuple[Any, ...]] = []
        self._cancelled: list[int] = []
        self._released: dict[str, None] = {}  # (a dict: ordered, and a re-asked problem is taken out)
        self._flush_armed = False
        self._lost: HostLost | None = None
        self.requests = 0
        self.problems_sent = 0  # problems (with their images) sent to the host

    @classmethod
    def from_config(cls, config: ExecutorConfig, policy: Any, policy_args: dict[str, Any] | None) -> HostExecutor:
        """Connected to the host ``config.attach`` names (the policy lives there, not here)."""
        if not config.attach:
            raise FatalExecutorError("the host executor needs [executor] attach: the engine host's socket path")
        return cls(config.attach, config)

    def capacity(self) -> int | None:
        """This driver's share of the engine's declared capacity, as the host last said."""
        return self._capacity

    async def submit(self, request: GenerationRequest) -> list[Completion]:
        if self._protocol is None:
            await self._open()
        if self._lost is not None:
            raise self._lost
        problem = request.problem
        if self._sent.get(problem.id) is not problem:
            self._sent[problem.id] = self._new_problems[problem.id] = problem
            self.problems_sent += 1
            self._released.pop(problem.id, None)  # released and asked for again before the frame left
        self._next_id += 1
        rid = self._next_id
        future = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        self._requests.append(encode_request(rid, request))
        self.requests += 1
        self._arm()
        try:
            ok, value = await future
        except asyncio.CancelledError:
            if rid in self._pending:
                self._cancelled.append(rid)
                self._arm()
            raise
        finally:
            self._pending.pop(rid, None)
        if ok:
            return decode_completions(value)
        raise value

    def release(self, problem_id: str) -> None:
        """A tree finished: the host may forget its problem (after the requests of this
        frame, which may still name it)."""
        if self._sent.pop(problem_id, None) is not None:
            self._released[problem_id] = None
            self._arm()

    def stats(self) -> dict[str, Any]:
        p = self._protocol
        return {"kind": "host", "requests": self.requests, "problems_sent": self.problems_sent, "in_flight": self.load(),
                "frames_sent": p.frames_out if p else 0, "bytes_sent": p.bytes_out if p else 0,
                "bytes_received": p.bytes_in if p else 0}

    def load(self) -> dict[int, int]:
        return {0: len(self._pending)}

    async def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._flush()
            self._protocol.transport.close()
        elif self._protocol is None:
            self._sock.close()

    # -- the connection -----------------------------------------------------------------

    async def _open(self) -> None:
        """Hand the connected socket to the running loop: once, in a task of its own, so a
        first caller cancelled meanwhile (its timeout) leaves it to finish for the others."""
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._connect_loop())
        await asyncio.shield(self._opening)

    async def _connect_loop(self) -> None:
        loop = asyncio.get_running_loop()
        self._sock.setblocking(False)
        _, protocol = await loop.create_unix_connection(
            lambda: FrameProtocol(self._on_frame, self._on_lost), sock=self._sock)
        self._protocol = protocol

    def _arm(self) -> None:
        if not self._flush_armed:
            self._flush_armed = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_armed = False
        if self._protocol is None or not (self._requests or self._cancelled or self._released):
            return
        message = (self._new_problems or None, self._requests, self._cancelled or None, list(self._released) or None)
        self._new_problems, self._requests, self._cancelled, self._released = {}, [], [], {}
        self._protocol.send(message)

    def _on_frame(self, message: Any) -> None:
        capacity, results = message
        self._capacity = capacity
        pending = self._pending
        for rid, ok, value in results:
            future = pending.get(rid)
            if future is not None and not future.done():
                future.set_result((ok, value))

    def _on_lost(self, exc: BaseException | None) -> None:
        why = f": {exc}" if exc else ""
        self._lost = HostLost(f"the engine host at {self.address} closed the connection{why}; finished "
                              "problems are saved, run the same command again to resume")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(self._lost)


def _connect(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CONNECT_TIMEOUT_S)
    try:
        sock.connect(address)
    except OSError as exc:
        sock.close()
        raise FatalExecutorError(f"cannot reach the engine host at {address}: {exc}") from None
    return sock


def _read_hello(sock: socket.socket) -> dict[str, Any]:
    """The host's first frame, read before the loop takes the socket."""
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise FatalExecutorError("the engine host closed the connection before saying hello")
            data += chunk
        return data

    try:
        (length,) = HEADER.unpack(exactly(HEADER.size))
        hello: dict[str, Any] = pickle.loads(exactly(length))
    except (OSError, pickle.UnpicklingError) as exc:
        sock.close()
        raise FatalExecutorError(f"no hello from the engine host: {exc}") from None
    return hello
