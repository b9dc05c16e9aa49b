"""The engine host: one policy in this process, serving the drivers of a local
``--drivers N`` job over a Unix socket.

Why: one driver is one event loop on one core, and a fast engine (a large batch, short
requests) outruns it (``benchmarks/gpu_utilisation.py``). The Ray executor answers that
with several drivers sharing a pool of workers; on one machine the same split needs no
Ray: the engine stays in this process (a GPU, a model loaded once) and N driver
processes search the input's slices, each connected here.

Each driver is a client: its problems are kept while their trees run (sent once per
connection, images included), its requests run as tasks through an
:class:`~prmtree.rollout_workers.inline.InlineExecutor` (the policy's concurrency cap and
its blocked-loop check, as inline), and finished results go back in one frame per event
loop turn. A driver that disconnects has its requests cancelled. Each answer carries the
driver's share of the engine's declared capacity: the capacity over the drivers still
running (the job says when one ends), so the others grow when one finishes its slice.
"""

from __future__ import annotations

import asyncio
import functools
import math
from typing import Any

from prmtree.engine.errors import GenerationError, PolicyContractError
from prmtree.engine.records import GenerationRequest, Problem, check_completions
from prmtree.rollout_workers.host.wire import FrameProtocol, decode_request, encode_completions, portable
from prmtree.rollout_workers.inline import InlineExecutor


class _Client:
    """One driver's connection and what the host holds for it."""

    __slots__ = ("protocol", "problems", "tasks", "outbox", "flush_armed", "closed")

    def __init__(self) -> None:
        self.protocol: FrameProtocol | None = None
        self.problems: dict[str, Problem] = {}
        self.tasks: dict[int, asyncio.Task[Any]] = {}
        self.outbox: list[tuple[int, bool, Any]] = []
        self.flush_armed = False
        self.closed = False


class EngineHost:
    """Serve ``executor``'s policy to ``drivers`` driver processes on the socket at ``path``."""

    def __init__(self, executor: InlineExecutor, drivers: int) -> None:
        self.executor = executor
        self.drivers = drivers
        self.clients: list[_Client] = []
        self.gone = 0  # drivers that ended (told by the job, which sees their processes)
        self.requests = 0
        self.errors = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self, path: str) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(self._protocol, path)

    async def stop(self) -> None:
        """Stop listening, close every connection and cancel whatever still runs for it."""
        if self._server is not None:
            self._server.close()
        for client in self.clients:
            self._drop(client)

    def capacity_share(self) -> int | None:
        """A driver's share of the engine now (None: the policy does not declare one)."""
        total = self.executor.capacity()
        if total is None:
            return None
        return max(1, math.ceil(total / max(1, self.drivers - self.gone)))

    def driver_gone(self) -> None:
        """A driver ended (its slice done, or its process died, connected or not): the others
        share the engine from now on."""
        self.gone += 1

    def stats(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "clients": len(self.clients),
                "in_flight": sum(len(c.tasks) for c in self.clients)}

    # -- one connection ---------------------------------------------------------------

    def _protocol(self) -> FrameProtocol:
        client = _Client()
        self.clients.append(client)
        made = functools.partial(self._hello, client)
        return FrameProtocol(functools.partial(self._on_frame, client), functools.partial(self._on_lost, client), made)

    def _hello(self, client: _Client, protocol: FrameProtocol) -> None:
        client.protocol = protocol
        protocol.send({"policy_name": self.executor.policy_name, "capacity": self.capacity_share()})

    def _on_frame(self, client: _Client, message: Any) -> None:
        problems, requests, cancelled, released = message
        if problems:
            client.problems.update(problems)
        submit = self.executor.submit
        create = asyncio.get_running_loop().create_task
        tasks = client.tasks
        for item in requests:
            try:
                rid, request = decode_request(item, client.problems)
            except KeyError:  # a driver bug, answered as that request's failure rather than the connection's end
                client.outbox.append((item[0], False, GenerationError(
                    f"the engine host does not hold problem {item[1]!r} for this driver")))
                self._arm(client)
                continue
            task = create(submit(request))
            tasks[rid] = task
            task.add_done_callback(functools.partial(self._finished, client, rid, request))
        self.requests += len(requests)
        for rid in cancelled or ():
            task = tasks.get(rid)
            if task is not None:
                task.cancel()
        for pid in released or ():
            client.problems.pop(pid, None)

    def _finished(self, client: _Client, rid: int, request: GenerationRequest, task: asyncio.Task[Any]) -> None:
        if task.cancelled():  # its driver cancelled it, or left: nobody waits
            return
        exc = task.exception()  # retrieved in every case, so asyncio does not log it as lost
        if client.tasks.pop(rid, None) is None or client.closed:
            return
        if exc is None:
            try:  # the contract first: what is not Completions would not travel, and the driver would wait
                completions = check_completions(request, task.result(), self.executor.policy_name)
            except PolicyContractError as broken:
                exc = broken
            else:
                client.outbox.append((rid, True, encode_completions(completions)))
        if exc is not None:
            self.errors += 1
            if not isinstance(exc, Exception):  # SystemExit & co. from a policy: an error, not the host's exit
                exc = RuntimeError(f"{type(exc).__name__}: {exc}")
            client.outbox.append((rid, False, portable(exc)))
        self._arm(client)

    def _arm(self, client: _Client) -> None:
        """Send the client's finished results at the end of this event-loop turn (one frame)."""
        if not client.flush_armed:
            client.flush_armed = True
            asyncio.get_running_loop().call_soon(self._flush, client)

    def _flush(self, client: _Client) -> None:
        client.flush_armed = False
        if client.outbox and client.protocol is not None and not client.closed:
            out, client.outbox = client.outbox, []
            client.protocol.send((self.capacity_share(), out))

    def _on_lost(self, client: _Client, exc: BaseException | None) -> None:
        self._drop(client)

    def _drop(self, client: _Client) -> None:
        client.closed = True
        if client.protocol is not None and client.protocol.transport is not None:
            client.protocol.transport.close()
        for task in list(client.tasks.values()):
            task.cancel()
        client.tasks.clear()
        client.problems.clear()
        client.outbox.clear()
