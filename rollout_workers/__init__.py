"""Executors: where a policy's ``generate`` runs. One contract
(:class:`~prmtree.engine.contracts.Executor`), two built-in kinds:

* ``inline``: the policy in the driver's event loop (laptops, tests, one GPU);
* ``ray``: a pool of RolloutWorker actors on a Ray cluster (the ``ray`` package).

Each kind is a class registered in ``engine/registry.py`` (``EXECUTORS``) and imported
only when chosen: an inline run never imports Ray. A kind is built by its
``from_config(executor_config, policy, policy_args)`` class method.
"""

from __future__ import annotations

from typing import Any

from prmtree.engine.config import ExecutorConfig
from prmtree.engine.contracts import Executor
from prmtree.engine.errors import BackendDownError, FatalExecutorError
from prmtree.engine.registry import EXECUTORS

__all__ = ["EXECUTORS", "BackendDownError", "Executor", "FatalExecutorError", "make_executor"]


def make_executor(config: ExecutorConfig, spec: Any, kwargs: dict[str, Any] | None) -> Executor:
    """Build the executor ``config.kind`` names, for the policy ``spec`` (checked already
    with :func:`~prmtree.policies.base.check_policy`)."""
    executor: Executor = EXECUTORS.get(config.kind).from_config(config, spec, kwargs)
    return executor
