"""Policies that fail on purpose, for ``fault_injection.py`` (``--policy fault_policies:...``).

Each is the simulated policy with a fault added. Faults change how a run goes, never its
text, so their arguments are ``operational_args`` and ``name`` is the simulated policy's:
a run that recovers must end with exactly a clean simulated run's rows.

A fault is *armed* while ``armed_file`` exists: the benchmark deletes the file after the
first launch, as an operator fixes a backend, so re-running the same command can finish.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import zlib
from typing import Any

from prmtree.engine.errors import GenerationError
from prmtree.policies.simulated import SimulatedPolicy


class FlakyPolicy(SimulatedPolicy):
    """The simulated policy, failing ``fail_rate`` of calls transiently, and every call
    while ``outage_file`` exists. Counts go to ``log`` (one JSON line per process)."""

    name = "simulated"
    operational_args = SimulatedPolicy.operational_args | {"fail_rate", "outage_file", "log"}

    def __init__(self, fail_rate: float = 0.1, outage_file: str = "", log: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fail_rate, self.outage_file, self.log = fail_rate, outage_file, log
        self._rng = random.Random()
        self._counts = {"calls": 0, "transient": 0, "outage": 0}

    async def generate(self, request):  # type: ignore[no-untyped-def]
        self._counts["calls"] += 1
        if self.outage_file and os.path.exists(self.outage_file):
            self._counts["outage"] += 1
            raise GenerationError("backend down: connection refused")
        if self._rng.random() < self.fail_rate:
            self._counts["transient"] += 1
            raise GenerationError("503 Service Unavailable (injected)")
        return await super().generate(request)

    async def close(self) -> None:
        if self.log:
            with open(self.log, "a", encoding="utf-8") as handle:  # noqa: ASYNC230 - one line, at the end
                handle.write(json.dumps(self._counts) + "\n")


#: What ``generate_fault`` raises: exceptions a policy (or a library under it) can let out
#: that are not ``Exception`` subclasses.
GENERATE_FAULTS = {
    "cancelled": lambda: asyncio.CancelledError("injected by fault_policies"),
    "systemexit": lambda: SystemExit(0),
    "baseexception": lambda: BaseException("injected by fault_policies"),
    "generatorexit": lambda: GeneratorExit(),
}
#: What a faulty ``close`` does: raise, or block (a synchronous close that sleeps, as the
#: vLLM backend's ``close`` calls a synchronous ``engine.shutdown()``).
CLOSE_FAULTS = ("raise", "hang")
CLOSE_ERROR = "close failed: engine shutdown error (injected by fault_policies)"


class FaultPolicy(SimulatedPolicy):
    """The simulated policy with one armed fault:

    * ``generate_fault`` (a key of :data:`GENERATE_FAULTS`): raised by every call for the
      problems picked by ``fault_every`` (crc32 of the id modulo it is 0);
    * ``close_fault`` (``raise`` or ``hang``): what ``close`` does;
    * ``mark_file``: created once requests for ``mark_after_problems`` distinct problems
      have arrived (the benchmark's cue to fill the disk and signal the run).
    """

    name = "simulated"
    operational_args = SimulatedPolicy.operational_args | {
        "armed_file", "generate_fault", "fault_every", "close_fault", "mark_file", "mark_after_problems",
    }

    def __init__(self, armed_file: str = "", generate_fault: str = "", fault_every: int = 10,
                 close_fault: str = "", mark_file: str = "", mark_after_problems: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if generate_fault and generate_fault not in GENERATE_FAULTS:
            raise ValueError(f"generate_fault must be one of {sorted(GENERATE_FAULTS)}, got {generate_fault!r}")
        if close_fault and close_fault not in CLOSE_FAULTS:
            raise ValueError(f"close_fault must be one of {CLOSE_FAULTS}, got {close_fault!r}")
        self.armed_file, self.generate_fault, self.fault_every = armed_file, generate_fault, int(fault_every)
        self.close_fault, self.mark_file, self.mark_after = close_fault, mark_file, int(mark_after_problems)
        self._seen: set[str] = set()

    def _armed(self) -> bool:
        return bool(self.armed_file) and os.path.exists(self.armed_file)

    async def generate(self, request):  # type: ignore[no-untyped-def]
        pid = request.problem.id
        if self.mark_file and pid not in self._seen:
            self._seen.add(pid)
            if len(self._seen) == self.mark_after:
                open(self.mark_file, "w").close()  # noqa: ASYNC230 - an empty file, once
        if self.generate_fault and zlib.crc32(pid.encode()) % self.fault_every == 0 and self._armed():
            raise GENERATE_FAULTS[self.generate_fault]()
        return await super().generate(request)

    def close(self) -> None:
        """Synchronous on purpose: a blocking close holds the event loop, the hard case."""
        if not self._armed():
            return
        if self.close_fault == "raise":
            raise RuntimeError(CLOSE_ERROR)
        if self.close_fault == "hang":
            time.sleep(3600)
