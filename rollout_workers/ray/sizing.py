"""The Ray cluster as the executor sees it: connecting, and how many actors fit.

Ray keeps an actor it cannot place pending forever, without a word, so a job's demand is
checked against the cluster before its actors start, and ``--workers auto`` /
``--drivers auto`` are worked out here from the cluster's resources.
"""

from __future__ import annotations

import math
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any

from prmtree.engine.config import ExecutorConfig
from prmtree.engine.errors import ConfigError, FatalExecutorError

#: Seconds to wait for actors (workers, drivers) to be placed and answer: on a cluster that
#: must grow to fit them, its autoscaler's time.
START_TIMEOUT_S = 600.0

#: ``--drivers auto`` on a fresh output directory: one driver per this many workers.
#: Measured (``benchmarks/ray_scaling.py``): one driver core sustains 10,000-15,000
#: rollouts/s of the simulated policy, i.e. it saturates about 4 latency-bound workers
#: that each serve 2,560 rollouts/s. A real GPU serves far fewer (a 7B VLM about 20
#: rollouts/s, a small fast model about 100), and real completions cost the driver more
#: to split and check than the simulated ones (allow 4x): about 3,000 rollouts/s per
#: driver, i.e. 30 workers at 100 rollouts/s. An extra driver costs one CPU core; a
#: missing one leaves GPUs idle, so the rule errs towards more drivers.
WORKERS_PER_DRIVER = 32

#: Seconds a Ray address has to accept a TCP connection before it is refused: where nothing
#: listens, ``ray.init`` itself retries for many minutes without a word.
ADDRESS_TIMEOUT_S = 5.0


def ray_module() -> Any:
    """The ``ray`` library, imported on first use (``import prmtree`` never imports it)."""
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - ray is a core dependency
        raise FatalExecutorError(f"the ray executor needs ray ({exc}); install with: pip install ray") from None
    return ray


@dataclass(frozen=True)
class Connection:
    """This process's link to Ray, as :func:`connect` left it.

    ``started``: this call connected (its caller shuts Ray down). ``local``: the cluster is
    one started (or found) on this machine, no address given, so it cannot grow.
    """

    started: bool
    local: bool


def check_address(address: str | None) -> None:
    """Refuse at once, in one line, a cluster address (``host:port``, ``ray://host:port``;
    none: ``RAY_ADDRESS``) where nothing accepts a connection. ``auto``, ``local`` and
    anything not of that shape are left to Ray."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address or address in ("auto", "local"):
        return
    host, sep, port = address.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=ADDRESS_TIMEOUT_S):
            pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise ConfigError(f"no Ray cluster answers at {address} ({why}): start one there (ray start --head) "
                          "or leave --address and RAY_ADDRESS out for a local Ray") from None


def is_local(address: str | None) -> bool:
    """Whether ``address`` (none: ``RAY_ADDRESS``) starts a Ray of this machine's own, which
    cannot grow: none at all, or ``local`` (Ray's name for a new local instance)."""
    return (address or os.environ.get("RAY_ADDRESS") or "local") == "local"


def connect(config: ExecutorConfig) -> Connection:
    """Connect to the Ray cluster at ``config.address`` (none: start a local one) unless this
    process already is."""
    ray = ray_module()
    local = is_local(config.address)
    if ray.is_initialized():
        return Connection(started=False, local=local)
    check_address(config.address)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address=config.address, include_dashboard=False, log_to_driver=True)
    return Connection(started=True, local=local)


def check_demand(cpus: float, gpus: float, what: str, *, local: bool) -> None:
    """Refuse, or warn about, a job whose actors need more than the cluster has: Ray keeps
    an actor it cannot place pending forever, without a word. A ``local`` Ray cannot grow,
    so there it is a one-line :class:`ConfigError`; a remote cluster may autoscale, so there
    it is a warning, and the actors' start is bounded by ``START_TIMEOUT_S``."""
    ray = ray_module()
    total = ray.cluster_resources()
    short = [f"{need:g} {kind} (the cluster has {total.get(kind, 0.0):g})"
             for kind, need in (("CPU", cpus), ("GPU", gpus)) if need > total.get(kind, 0.0) + 1e-9]
    if not short:
        return
    message = (f"{what} need {' and '.join(short)}: lower [executor] workers, num_cpus_per_worker, "
               "num_gpus_per_worker, drivers or num_cpus_per_driver")
    if local:
        raise ConfigError(message + " (a local Ray cannot grow)")
    sys.stderr.write(f"prmtree: {message}; waiting up to {START_TIMEOUT_S:g} s for the cluster to grow\n")


def auto_drivers(workers: int) -> int:
    """``--drivers auto`` for a pool of ``workers``: one driver per ``WORKERS_PER_DRIVER``."""
    return max(1, math.ceil(workers / WORKERS_PER_DRIVER))


def driver_actors(config: ExecutorConfig, workers: int) -> int:
    """Driver actors a job of ``workers`` workers starts: none for one driver (the job's
    own process drives)."""
    drivers = config.drivers if isinstance(config.drivers, int) else auto_drivers(workers)
    return drivers if drivers > 1 else 0


def worker_count(config: ExecutorConfig, num_gpus_per_worker: float) -> int:
    """How many rollout workers to start: ``config.workers``, or for ``auto`` as many as the
    cluster's GPUs (or CPUs, leaving room for the driver actors they bring) hold."""
    if config.workers != "auto":
        return int(config.workers)
    resources = ray_module().cluster_resources()
    if num_gpus_per_worker > 0:
        return max(1, int(resources.get("GPU", 0) // num_gpus_per_worker))
    if config.num_cpus_per_worker > 0:  # the most workers that leave their drivers room
        cpus, per = resources.get("CPU", 1), config.num_cpus_per_worker
        n = max(1, int(cpus // per))
        while n > 1 and n * per + driver_actors(config, n) * config.num_cpus_per_driver > cpus + 1e-9:
            n -= 1
        return n
    return 1
