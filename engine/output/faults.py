"""A test hook: ``PRMTREE_FAULT=<point>`` kills the process at that point, as ``kill -9``
would, so the crash tests can hit a window too narrow to hit with a signal.

Points: ``after_shard_rename`` (a flush's shards are in place, its manifest is not yet).
Unset in normal runs, where :func:`fault_point` does nothing.
"""

from __future__ import annotations

import os

FAULT_ENV = "PRMTREE_FAULT"


def fault_point(point: str) -> None:
    """Die here, with the status of a ``kill -9``, if the environment names ``point``."""
    if os.environ.get(FAULT_ENV) == point:
        os._exit(137)
