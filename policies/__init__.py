"""Policies: the models that write solutions. ``Policy.generate(request) -> completions``."""

from prmtree.engine.contracts import Policy
from prmtree.engine.errors import (
    GenerationError,
    PolicyConfigError,
    PolicyContractError,
)
from prmtree.engine.records import Completion, GenerationRequest
from prmtree.policies.base import available_policies, register_policy, resolve_policy

__all__ = [
    "Completion",
    "GenerationRequest",
    "Policy",
    "GenerationError",
    "PolicyConfigError",
    "PolicyContractError",
    "available_policies",
    "register_policy",
    "resolve_policy",
]
