"""Policies for the Ray fault tests; importable by the worker processes (on PYTHONPATH)."""

import asyncio

from prmtree.policies.simulated import SimulatedPolicy


class RaisesFor(SimulatedPolicy):
    """The simulated policy, except that it raises for the listed problems."""

    name = "simulated"

    def __init__(self, bad_ids=(), **kw):
        super().__init__(**kw)
        self.bad_ids = set(bad_ids)

    async def generate(self, request):
        if request.problem.id in self.bad_ids:
            raise ValueError(f"model server rejected {request.problem.id}")
        return await super().generate(request)


class Hangs:
    async def generate(self, request):
        await asyncio.sleep(3600)


class DiesAfter(SimulatedPolicy):
    """The simulated policy whose process exits after PRMTREE_TEST_DIE_AFTER requests.

    The environment decides, not the arguments, so a resume has the same config.
    """

    name = "simulated"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.count = 0

    async def generate(self, request):
        import os

        self.count += 1
        limit = int(os.environ.get("PRMTREE_TEST_DIE_AFTER", "0"))
        if limit and self.count > limit:
            os._exit(1)
        return await super().generate(request)


class LoadsAModel(SimulatedPolicy):
    """Writes ``marker`` when built, as loading a model would: tests check it never is
    when the run is refused first."""

    name = "simulated"

    def __init__(self, marker: str, error_rate: float = 0.08):
        from pathlib import Path

        Path(marker).write_text("loaded")
        super().__init__(error_rate=error_rate)


class FailsToBuild(SimulatedPolicy):
    """A constructor that fails where the workers build it (no CUDA there, say); the driver
    only checks its arguments."""

    def __init__(self, error_rate: float = 0.08):
        raise RuntimeError("no CUDA in this worker")


class LoadsForever(SimulatedPolicy):
    """Writes ``marker`` and then loads for an hour: a model load a stop signal must cut short."""

    def __init__(self, marker: str):
        import time
        from pathlib import Path

        Path(marker).write_text("loading")
        time.sleep(3600)


class NamedByProperty(SimulatedPolicy):
    """The simulated policy whose name is a property of the built policy (its model)."""

    def __init__(self, model="tiny-vl", **kw):
        super().__init__(**kw)
        self.model = model

    @property
    def name(self):
        return f"sim:{self.model}"
