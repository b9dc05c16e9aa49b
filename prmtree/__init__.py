"""prmtree: process-reward training data for vision-language reasoning.

The public surface::

    import prmtree
    summary = prmtree.run("problems.jsonl", policy="simulated", strategy="omega", out="out/")

Names are imported on first use, so ``import prmtree`` is cheap and never imports a
backend (vLLM, torch, Ray) or the engine's dependencies before they are needed.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# A checkout keeps engine/, policies/ and rollout_workers/ beside prmtree/ (pyproject.toml
# installs them as prmtree.engine, ...). Where they are found there, this package's search
# path includes the checkout, so ``python -m prmtree``, the tests and an IDE work without
# ``pip install -e .``; an installed prmtree never has them beside it.
_CHECKOUT = Path(__file__).resolve().parent.parent
if (_CHECKOUT / "pyproject.toml").is_file() and all(
    (_CHECKOUT / folder / "__init__.py").is_file() for folder in ("engine", "policies", "rollout_workers")
):
    __path__.append(str(_CHECKOUT))  # type: ignore[name-defined]  # noqa: F821 - the package's own

_EXPORTS = {
    "run": "prmtree.api",
    "grade": "prmtree.engine.answers.grade",
    "Verdict": "prmtree.engine.answers.grade",
    "RunSummary": "prmtree.runner",
    "RunWarning": "prmtree.runner",
    "ConfigError": "prmtree.engine.errors",
    "ExecutorConfig": "prmtree.engine.config",
    "InputConfig": "prmtree.engine.config",
    "OutputConfig": "prmtree.engine.config",
    "PolicyConfig": "prmtree.engine.config",
    "RunConfig": "prmtree.engine.config",
    "SearchConfig": "prmtree.engine.config",
    "StepsConfig": "prmtree.engine.config",
    "InputError": "prmtree.engine.records",
    "Problem": "prmtree.engine.records",
    "ProblemImage": "prmtree.engine.records",
    "Completion": "prmtree.engine.records",
    "GenerationRequest": "prmtree.engine.records",
    "GenerationError": "prmtree.engine.errors",
    "Policy": "prmtree.engine.contracts",
    "register_policy": "prmtree.policies.base",
    "PRM": "prmtree.train.prm",
}

__all__ = [
    "Completion",
    "GenerationError",
    "ConfigError",
    "ExecutorConfig",
    "GenerationRequest",
    "InputConfig",
    "InputError",
    "OutputConfig",
    "PRM",
    "Policy",
    "PolicyConfig",
    "Problem",
    "ProblemImage",
    "RunConfig",
    "RunSummary",
    "RunWarning",
    "SearchConfig",
    "StepsConfig",
    "Verdict",
    "grade",
    "register_policy",
    "run",
]
assert sorted(__all__) == sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'prmtree' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # for type checkers and IDEs
    from prmtree.api import run
    from prmtree.engine.answers.grade import Verdict, grade
    from prmtree.engine.config import (
        ExecutorConfig,
        InputConfig,
        OutputConfig,
        PolicyConfig,
        RunConfig,
        SearchConfig,
        StepsConfig,
    )
    from prmtree.engine.contracts import Policy
    from prmtree.engine.errors import ConfigError
    from prmtree.engine.records import (
        Completion,
        GenerationRequest,
        InputError,
        Problem,
        ProblemImage,
    )
    from prmtree.policies.base import register_policy
    from prmtree.runner import RunSummary
    from prmtree.train.prm import PRM
