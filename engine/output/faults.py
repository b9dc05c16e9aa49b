"""A test hook: ``PRMTREE_FAULT=<point>`` kills the process at that point, as ``kill -9``
would, or stops it there (``SIGSTOP``, until a ``SIGCONT``), so the crash and concurrency
tests can hit a window too narrow to hit with a signal.

Points: ``after_shard_rename`` (kill: a flush's shards are in place, its manifest is not
yet); ``image_repair_files_removed``, ``image_repair_shards_written`` and
``image_repair_manifest_written`` (kill: a resume repairing rows whose image files are
missing or altered, ``engine/resume.py``, between its steps); ``export_written`` (stop:
an ``hf`` export holds its target's lock and has written its data, not yet its card nor
renamed its folder into place).
Unset in normal runs, where :func:`fault_point` and :func:`pause_point` do nothing.
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "PRMTREE_FAULT"


def fault_point(point: str) -> None:
    """Die here, with the status of a ``kill -9``, if the environment names ``point``."""
    if os.environ.get(FAULT_ENV) == point:
        os._exit(137)


def pause_point(point: str) -> None:
    """Stop here (``SIGSTOP``) until continued, if the environment names ``point``."""
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGSTOP)
