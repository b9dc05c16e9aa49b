"""Executors: where a policy's ``generate`` runs. One contract (``base.Executor``), two kinds:

* ``inline``: the policy in the driver's event loop (laptops, tests, one GPU);
* ``ray``: a pool of RolloutWorker actors on a Ray cluster (the ``ray`` package).

Each kind is imported in its own branch: an inline run never imports Ray.
"""

from __future__ import annotations

from typing import Any

from prmtree.engine.config import ExecutorConfig
from prmtree.engine.errors import BackendDownError, FatalExecutorError
from prmtree.engine.contracts import Executor

EXECUTORS = ("inline", "ray")

__all__ = ["EXECUTORS", "BackendDownError", "Executor", "FatalExecutorError", "make_executor"]


def make_executor(config: ExecutorConfig, spec: Any, kwargs: dict[str, Any] | None) -> Executor:
    """Build the executor ``config.kind`` names, for the policy ``spec`` (checked already
    with :func:`~prmtree.policies.base.check_policy`)."""
    from prmtree.policies.base import resolve_policy, worker_gpus

    if config.kind == "inline":
        from prmtree.rollout_workers.inline import InlineExecutor

        return InlineExecutor(resolve_policy(spec, kwargs), config.max_concurrency, config.request_timeout_s)
    if config.kind == "ray":
        from prmtree.rollout_workers.ray import RayExecutor

        gpus = config.num_gpus_per_worker
        if gpus is None:
            gpus = worker_gpus(spec, kwargs)
        executor = RayExecutor(spec, kwargs, config, num_gpus_per_worker=gpus)
        executor.start()
        return executor
    raise ValueError(f"unknown executor {config.kind!r}; known: {', '.join(EXECUTORS)}")
