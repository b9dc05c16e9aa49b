"""Executors: where a policy's ``generate`` runs. One interface, ``await submit(request)``.

* ``inline``: the policy in the driver's event loop (laptops, tests, one GPU);
* ``ray``: a pool of RolloutWorker actors on a Ray cluster (``ray_pool``).
"""

from __future__ import annotations

from typing import Any

from prmtree.rollout_workers.inline import InlineExecutor

__all__ = ["InlineExecutor", "make_executor"]


def make_executor(config: Any, spec: Any, kwargs: dict[str, Any] | None) -> tuple[Any, str]:
    """Build the executor ``config.executor.kind`` names, for the policy ``spec``.

    Returns the executor and the policy's name for the output. Backends are imported in
    their own branch: an inline run never imports Ray.
    """
    from prmtree.policies.base import policy_class, policy_name, resolve_policy

    ex = config.executor
    if ex.kind == "inline":
        policy = resolve_policy(spec, kwargs)
        return InlineExecutor(policy, ex.max_concurrency), policy_name(policy)
    from prmtree.rollout_workers.ray_pool import RayExecutor

    if isinstance(spec, str):
        target = policy_class(spec)  # fails here, with a clear message, before Ray starts
        name = str(getattr(target, "name", None) or getattr(target, "__name__", spec))
    else:
        name = policy_name(spec)
    gpus = ex.num_gpus_per_worker
    if gpus is None:
        gpus = float((kwargs or {}).get("tensor_parallel_size", 1)) if spec == "vllm" else 0.0
    executor = RayExecutor(
        spec,
        kwargs,
        workers=ex.workers,
        address=ex.address,
        num_gpus_per_worker=gpus,
        num_cpus_per_worker=ex.num_cpus_per_worker,
        worker_max_concurrency=ex.worker_max_concurrency,
        queue_limit=ex.queue_limit,
        request_timeout_s=ex.request_timeout_s,
        max_restarts=ex.max_restarts,
    )
    executor.start()
    return executor, name
