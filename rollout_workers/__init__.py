"""Executors: where a policy's ``generate`` runs. Inline here; Ray in ``ray_pool``."""

from prmtree.rollout_workers.inline import InlineExecutor

__all__ = ["InlineExecutor"]
