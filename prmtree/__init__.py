"""prmtree: process-reward training data for vision-language reasoning.

The public surface::

    import prmtree
    summary = prmtree.run("problems.jsonl", policy="simulated", strategy="omega", out="out/")

Heavy backends (vLLM, torch, Ray) are imported only when chosen.
"""

from prmtree.api import RunSummary, run
from prmtree.engine.config import (
    ConfigError,
    ExecutorConfig,
    OutputConfig,
    PolicyConfig,
    RunConfig,
    SearchConfig,
    StepsConfig,
)
from prmtree.engine.problem import InputError, Problem, ProblemImage
from prmtree.policies.base import Completion, GenerationRequest, Policy, register_policy

__version__ = "0.1.0"

__all__ = [
    "Completion",
    "ConfigError",
    "ExecutorConfig",
    "GenerationRequest",
    "InputError",
    "OutputConfig",
    "Policy",
    "PolicyConfig",
    "Problem",
    "ProblemImage",
    "RunConfig",
    "RunSummary",
    "SearchConfig",
    "StepsConfig",
    "register_policy",
    "run",
]
