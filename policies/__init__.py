"""Policies: the models that write solutions. ``Policy.generate(request) -> completions``."""

from prmtree.policies.base import (
    Completion,
    GenerationRequest,
    Policy,
    GenerationError,
    PolicyConfigError,
    PolicyContractError,
    available_policies,
    register_policy,
    resolve_policy,
)

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
