"""The Ray executor: a pool of RolloutWorker actors fed by one driver (or several).

Each worker is an async actor hosting one Policy, built inside the actor from a
serialisable spec (a registry name or ``module:Class`` plus keyword arguments), with
many requests in flight. Routing keeps a tree on one worker (rendezvous hashing of the
problem id over live workers) so its prefix, and its image encoding, stay in that
worker's KV cache; a worker over its queue limit spills to the least-loaded one, and
when every worker is full the driver waits (backpressure). A worker that dies has its
requests resubmitted elsewhere (counted); Ray restarts it (``max_restarts``). With no
worker left the executor raises :class:`NoWorkersLeft`, the run stops with everything
finished flushed, and a resume completes it.

Several drivers may share one pool (``--drivers N``, ``prmtree/multi_driver.py``): the
job starts the workers, and each driver's executor *attaches* to them by name
(``ExecutorConfig.attach`` set to the pool's :class:`PoolHandle` name) instead of
starting its own. Each executor is a separate client of the workers: requests and
results are kept per client, so one driver never collects another's results, and a
client that stops polling (its driver died) is forgotten after ``CLIENT_TIMEOUT_S``.

The driver's cost per request is what limits one driver: routing is a dict lookup after
a tree's first request (rendezvous order cached per problem), batches leave on a timer
armed by the first request of a window (no task wakes up while idle), and a freed slot
wakes one waiting request only when someone waits.

Modules: ``sizing`` (connecting, demand, worker and driver counts), ``actor`` (the
RolloutWorker), ``routing`` (rendezvous, spilling, per-worker bookkeeping), ``executor``
(RayExecutor: submitting, resubmission, lifecycle). Ray itself is imported only when
the executor starts: importing this package does not import it.
"""

from __future__ import annotations

from prmtree.rollout_workers.ray.executor import PoolHandle, RayExecutor
from prmtree.rollout_workers.ray.routing import NoWorkersLeft
from prmtree.rollout_workers.ray.sizing import START_TIMEOUT_S, auto_drivers, check_address, connect

__all__ = ["START_TIMEOUT_S", "NoWorkersLeft", "PoolHandle", "RayExecutor", "auto_drivers", "check_address", "connect"]
