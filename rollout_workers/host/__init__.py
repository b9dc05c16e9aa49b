"""The engine host: one policy in one process, several driver processes on one machine
(a local ``--drivers N`` job, ``prmtree/local_drivers.py``).

Modules: ``wire`` (frames and how requests and completions travel), ``server``
(:class:`EngineHost`, in the job's process beside the policy) and ``executor``
(:class:`HostExecutor`, executor kind ``host``, in each driver process).
"""

from __future__ import annotations

from prmtree.rollout_workers.host.executor import HostExecutor, HostLost
from prmtree.rollout_workers.host.server import EngineHost

__all__ = ["EngineHost", "HostExecutor", "HostLost"]
