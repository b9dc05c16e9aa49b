"""Run configuration: pydantic models that validate at construction.

A TOML file holds what the command-line flags hold and more; flags override it. A bad
value is reported as one line naming the field (see :func:`describe_error`).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
import re
import sys
import typing
from pathlib import Path
from typing import Any, Literal

from prmtree.engine.errors import ConfigError
from prmtree.engine.registry import EXECUTORS, LABELERS, POLICIES, STRATEGIES
from prmtree.engine.steps import StepFormat
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError, to_jsonable_python

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib



@functools.lru_cache(maxsize=None)
def _step_format(name: str) -> StepFormat:
    """One (frozen) StepFormat per name: the driver reads it for every request."""
    return StepFormat(name)

class _Strict(BaseModel):
    # allow_inf_nan: an infinite timeout or temperature passed validation and failed later
    # (``int(inf // 2)``), or went to a backend that refuses it; NaN compares false with every bound
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_flag_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        """``true`` where a number is due: pydantic reads it as 1, so ``max_tokens = true`` (a
        slip for a number) cut every completion to one token, in silence."""
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            if annotation is not bool and {int, float} & {annotation, *typing.get_args(annotation)}:
                raise ValueError(f"must be a number, not {str(value).lower()}")
        return value


class SearchConfig(_Strict):
    """Which strategy grows the trees, and its knobs (defaults: the papers').

    One flat ``[search]`` table: the fields every strategy reads (``COMMON_SEARCH``)
    and each strategy's own, which it lists in its ``settings`` (see
    ``engine/search/__init__.py``). Defaults live here and nowhere else; a strategy
    takes this config whole. Only the active strategy's fields enter the resume hash.
    """

    strategy: str = "omega"
    k: int = Field(8, ge=1, strict=True, description="rollouts per value estimate")
    budget: int = Field(200, ge=1, strict=True, description="rollouts per problem, at most")
    # omega (OmegaPRM)
    alpha: float = Field(0.5, gt=0, le=1)
    beta: float = Field(0.9, gt=0, le=1)
    length_scale: float = Field(500.0, gt=0, description="L, in tokens")
    c_puct: float = Field(0.125, ge=0)
    search_limit: int = Field(100, ge=1)
    paths_in_flight: int = Field(1, ge=1, le=64, strict=True, description="omega: first-error searches of one "
                                 "tree sampled at once (more requests per tree for an engine that few trees "
                                 "cannot fill; rows depend on it, never on timing)")
    # shepherd
    n_solutions: int = Field(4, ge=1)
    # mcts
    branching: int = Field(3, ge=1)
    c_uct: float = Field(1.0, ge=0)
    max_iterations: int = Field(100, ge=1)
    # sampling
    max_tokens: int = Field(1024, ge=1)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, v: str) -> str:
        return STRATEGIES.require(v)

    @model_validator(mode="after")
    def _budget_covers_k(self) -> SearchConfig:
        if self.k > self.budget:
            raise ValueError(f"k ({self.k}) is larger than the rollout budget ({self.budget}): nothing could be sampled")
        return self


#: Search fields every strategy reads; the rest belong to one strategy each.
COMMON_SEARCH = ("strategy", "k", "budget", "max_tokens", "temperature", "top_p")


class StepsConfig(_Strict):
    """How model text is cut into steps; the format travels to the policy on every request."""

    format: Literal["blank_line", "step_marker", "tags"] = "blank_line"
    max_steps: int | None = Field(None, ge=1)
    custom: str = Field("", description="the Python API's split_steps, as module:qualname: set by prmtree.run, "
                        "so a resume with another splitter is refused")

    @property
    def step_format(self) -> StepFormat:
        return _step_format(self.format)


class JudgeConfig(BaseModel):
    """The second opinion for ``method = "consensus"``: a policy asked "is step j correct?".

    ``name`` empty: the run's own policy, through the run's executor (so the judge runs on
    the same Ray workers). Otherwise a registered policy or ``module:Class`` built for the
    judge alone (inline), with the other keys as its arguments.
    """

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, validate_assignment=True)
    name: str = ""
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0)
    accuracy: float = Field(0.8, gt=0.5, lt=1, description="how often the judge's verdict is right: the weight "
                            "of one verdict when it settles a step the counts left undecided")
    max_settle_calls: int = Field(3, ge=0, description="judge calls per step the counts left undecided "
                                  "(0: the judge settles nothing; at temperature 0, at most one)")

    @model_validator(mode="after")
    def _arguments_need_a_judge(self) -> JudgeConfig:
        # the other keys are a named judge's arguments (its constructor refuses those it
        # does not take); with no name there is no judge to take them, and a misspelt
        # setting would be dropped without a word, as no other section allows
        if not self.name and self.model_extra:
            raise PydanticCustomError("judge_extra", "unknown config field", {"key": next(iter(self.model_extra))})
        return self

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @property
    def settle_calls(self) -> int:
        """Judge calls per undecided step: ``max_settle_calls``, or at most one for a greedy
        judge (temperature 0), whose second answer to the same question is a copy of its
        first; counted as a second verdict, one opinion would settle a step at 0.70 as
        right (0.974) where it is worth 0.903."""
        return self.max_settle_calls if self.temperature > 0 else min(self.max_settle_calls, 1)


class LabelsConfig(_Strict):
    """How search evidence becomes step labels (the labeller stage).

    * ``mc``: the peers' rule, a step is right when some rollout from it reached the
      gold answer (MC > ``output.label_threshold``); one batch of k per node.
    * ``calibrated`` (default): a posterior P(step right) from the counts, the chance
      floor of the answer space, and the parent's success rate, over a whole path at
      once (a step decided right decides the steps before it). Nodes are sampled in
      batches of ``batch`` (the first one too; k is the question's own estimate), each
      where it tells most about a path's first error, until the path is decided, its
      nodes are at ``max_rollouts_per_node``, or no batch is expected to label a step
      per ``max_rollouts_per_step`` rollouts.
    * ``consensus``: calibrated, then a judge checks the first error (and the step before
      it); paths where they disagree are dropped or flagged.
    Custom labellers register with ``@register_labeler("name")``.
    """

    method: str = "calibrated"
    confidence: float = Field(0.96, gt=0.5, lt=1, description="posterior needed to decide a step")
    prior: float = Field(0.7, gt=0, lt=1, description="P(a step is right, given the steps before it are)")
    chance: float | None = Field(None, ge=0, lt=1, description="answer-space floor for every problem")
    free_chance: float = Field(0.02, ge=0, lt=1, description="floor of free numeric/text answers (lucky hits)")
    batch: int = Field(4, ge=1, description="rollouts per round at a node (adaptive methods)")
    max_rollouts_per_node: int = Field(32, ge=1)
    max_rollouts_per_step: float | None = Field(
        25.0, gt=0, allow_inf_nan=True, description="stop sampling a path when its next batches are expected to cost more than "
        "this many rollouts per step they would label (None, or inf in TOML: until decided or capped)",
    )
    undecided: Literal["drop", "keep"] = "drop"
    learn_floor: bool = Field(True, description="learn each answer space's floor (the success rate after a wrong "
                              "step) from a pilot of the run's first problems (engine/pilot.py); false: the chance floor")
    pilot_problems: int = Field(16, ge=1, description="pilot problems per answer space")
    pilot_window: int = Field(2000, ge=1, description="the pilot's members come from the input's first this many problems")
    pool_per_problem: int = Field(100, ge=0, description="most rollouts past its budget a problem still undecided may "
                                  "draw from what the pilot's problems left unspent (0: no pool)")
    min_coverage: float = Field(
        0.85, ge=0, le=1, description="the run's summary warns about an answer space where a smaller share of "
        "problems has a labelled step (0: never); it changes no rows",
    )
    on_disagreement: Literal["drop", "flag"] = "drop"
    judge: JudgeConfig = Field(default_factory=JudgeConfig)

    @field_validator("max_rollouts_per_step")
    @classmethod
    def _no_stopping_rule(cls, v: float | None) -> float | None:
        """``inf`` (TOML has no null) is None: no stopping rule, the same run and config hash."""
        return None if v is not None and math.isinf(v) else v

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        return LABELERS.require(v)


class VerifyConfig(_Strict):
    """Answer checking: cheap paths first, Math-Verify in a process pool with a time bound."""

    rel_tol: float = Field(1e-6, ge=0, allow_inf_nan=False, description="finite: inf would call every answer equal")
    timeout_s: float = Field(5.0, gt=0, description="per Math-Verify check; a check over it runs once more under 3x the bound, over both counts as not equal")
    pool_workers: int = Field(1, ge=1, description="processes running Math-Verify")
    memo_size: int = Field(100_000, ge=0, description="verdicts remembered, shared across problems")
    decimal_comma: bool = Field(False, description="a comma between digits is the decimal point: 3,5 = 3.5 (1,000 = 1)")
    custom: str = Field("", description="the Python API's check_answer, as module:qualname: set by prmtree.run, "
                        "so a resume with another grader is refused")


class PolicyConfig(BaseModel):
    """``name`` is a registered policy or ``module:Class``; other keys are its arguments."""

    model_config = ConfigDict(extra="allow")
    name: str = "simulated"

    @model_validator(mode="after")
    def _plain_data(self) -> PolicyConfig:
        """Arguments are recorded in the run's config (and hashed for resume), so each must be
        data: said here naming it, where a lock or a model object raised pydantic's own
        "Unable to serialize unknown type" at the first write."""
        extra = self.model_extra or {}
        for key, value in list(extra.items()):
            if getattr(value, "shape", None) == () and callable(getattr(value, "item", None)):
                extra[key] = value = value.item()  # a numpy number: the number it holds
            try:
                to_jsonable_python(value)
            except Exception:
                raise PydanticCustomError(
                    "policy_argument",
                    "argument '{key}' (of type {kind}) is not data (numbers, strings, lists, dicts): the run records its "
                    "policy's arguments; build the policy yourself and pass the instance (prmtree.run(policy=...)), "
                    "its own objects in attributes named with a leading underscore",
                    {"key": key, "kind": type(value).__name__},
                ) from None
        return self

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


#: The most drivers one job runs: each writes a slice, and slice names hold 5 digits
#: (``engine/output/layout.py``'s ``MAX_SLICES``; a test holds them equal).
MAX_DRIVERS = 99_999


class ExecutorConfig(_Strict):
    """Where rollouts run: in the driver (inline) or on a pool of Ray actors."""

    kind: str = Field("inline", description="a registered executor (engine/registry.py EXECUTORS)")
    max_concurrency: int = Field(
        4096, ge=1, description="inline: a cap on requests in flight at once (the driver sizes itself below it)"
    )
    trees_in_flight: int = Field(
        4096, ge=1, description="a cap on problems searched at once: below it the driver starts trees until the "
        "backend is full (its capacity, or latency), and fewer under backpressure"
    )
    request_timeout_s: float = Field(600.0, gt=0)
    close_timeout_s: float = Field(
        10.0, gt=0, description="bound on closing the policy at the end (the output is saved before); then given up"
    )
    max_attempts: int = Field(3, ge=1)
    retry_backoff_s: float = Field(0.5, ge=0, description="the wait before the second attempt; it doubles after that")
    retry_backoff_max_s: float = Field(
        30.0, ge=0, description="the longest wait between attempts, so many attempts do not wait for hours"
    )
    breaker_window: int = Field(
        50, ge=0, strict=True, description="stop the run when this many requests in a row failed (0: never)"
    )
    # ray
    address: str | None = Field(None, description="ray address (auto, ray://...); none: start a local Ray")
    workers: int | Literal["auto"] = "auto"
    num_gpus_per_worker: float | None = Field(None, ge=0, description="default: tensor_parallel_size for vllm, else 0")
    num_cpus_per_worker: float = Field(1.0, ge=0)
    worker_max_concurrency: int = Field(1024, ge=1)
    queue_limit: int = Field(256, ge=1, description="requests in flight per worker before spilling")
    max_restarts: int = Field(3, ge=0)
    image_cache_mb: float = Field(
        512.0, gt=0, description="ray: each worker's cache of problem images (sent once per worker, least recently "
                                 "used evicted first)"
    )
    worker_reads_images: Literal["auto", "never"] = Field(
        "auto", description="ray: auto: an image read from a file (or embedded in a Parquet or HF Arrow file) goes "
        "to a worker as its hash and absolute path (or cell), the worker reads and checks it (bytes from the driver where it cannot, and to that worker from then on); "
        "never: the driver sends the bytes"
    )
    drivers: int | Literal["auto"] = Field(
        1, description="drivers, each on a slice of the input: sharing the Ray worker pool (prmtree/multi_driver.py), "
        "or, inline, processes around this one's policy (prmtree/local_drivers.py)"
    )
    num_cpus_per_driver: float = Field(1.0, ge=0, description="--drivers N: CPUs each driver actor reserves")
    attach: str | None = Field(
        None, description="join the running worker pool of this name (set by --drivers for its driver actors), or, "
        "kind host, the engine host's socket (set by --executor inline --drivers N for its driver processes)"
    )
    pool_drivers: int = Field(
        1, ge=1, description="set by --drivers for its driver actors: the drivers sharing the attached pool, so "
        "that each fills its share of it from its first request (the workers then say how many poll them)"
    )

    @field_validator("kind")
    @classmethod
    def _known_executor(cls, v: str) -> str:
        return EXECUTORS.require(v)

    @model_validator(mode="after")
    def _host_needs_its_job(self) -> ExecutorConfig:
        if self.kind == "host" and not self.attach:
            raise ValueError("kind host is what the driver processes of --executor inline --drivers N use; "
                             "ask for that instead")
        return self

    @field_validator("workers")
    @classmethod
    def _positive_workers(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be auto or at least 1")
        return v

    @field_validator("drivers")
    @classmethod
    def _positive_drivers(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be auto or at least 1")
        if isinstance(v, int) and v > MAX_DRIVERS:
            raise ValueError(f"must be at most {MAX_DRIVERS}: each driver writes a slice, and slice names hold 5 digits")
        return v


class OutputConfig(_Strict):
    rows_per_shard: int = Field(50_000, ge=1)
    bytes_per_shard: int = Field(256 << 20, ge=1 << 10, description="rotate shards at about this size")
    flush_interval_s: float = Field(30.0, gt=0, description="bound on what an abrupt stop can lose")
    flush_give_up_s: float = Field(
        300.0, ge=0, description="how long failing flushes (a full disk), the final one too, are tried again "
        "with their rows held in memory before the run stops with the error; 0 means fail at once"
    )
    label_threshold: float = Field(0.0, ge=0, lt=1)
    after_first_error: Literal["truncate", "label-false"] = "truncate"
    max_ci_width: float | None = Field(
        None, gt=0, le=1, description="keep only steps whose MC interval is at most this wide"
    )
    image_mode: Literal["embed", "path"] = "embed"
    chat_format: bool = False


class InputConfig(_Strict):
    """Where the fields of an input row are (for datasets whose columns are named otherwise)."""

    id_field: str = "id"
    question_field: str = "question"
    image_field: str = "image"
    answer_field: str = "answer"
    answer_type: Literal["auto", "math", "choice", "number", "text", "vqa"] = "auto"
    max_pixels: int = Field(40_000_000, ge=1, description="decompression-bomb guard")
    max_image_bytes: int = Field(64 << 20, ge=1, description="larger image files are refused unread")


#: Settings that change how a run goes, not which rows it writes: free to change on resume.
#: Besides these: the inactive strategies' search fields, and each policy's own
#: ``operational_args`` (latency, timeouts, concurrency, memory share).
OPERATIONAL = {
    "executor", "output.rows_per_shard", "output.bytes_per_shard", "output.flush_interval_s",
    "output.flush_give_up_s", "verify.pool_workers", "verify.memo_size", "labels.min_coverage",
}
#: Row-defining settings added after runs were written, left out of the hash at these
#: defaults: a run written before them resumes under the same hash.
ADDED_LATER = {"verify.custom": "", "steps.custom": ""}


class RunConfig(_Strict):
    seed: int = 0
    search: SearchConfig = Field(default_factory=SearchConfig)
    steps: StepsConfig = Field(default_factory=StepsConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    input: InputConfig = Field(default_factory=InputConfig)

    @field_validator("seed")
    @classmethod
    def _seed_range(cls, v: int) -> int:
        if not 0 <= v < 2**63:
            raise ValueError("must be between 0 and 2**63 - 1")
        return v

    @model_validator(mode="after")
    def _greedy_draws_once(self) -> RunConfig:
        """Temperature 0 is greedy decoding: each draw from a prefix is the same completion,
        so k of them make no Monte-Carlo value, and the hf and vllm policies fail every request
        for more than one ("n must be 1 when using greedy sampling"): the run stopped at its
        pilot. Refused at load instead. The judge (``labels.judge.temperature``) asks for one."""
        s, labels = self.search, self.labels
        if s.temperature > 0:
            return self
        draws = {"search.k": s.k}
        if s.strategy == "shepherd":
            draws["search.n_solutions"] = s.n_solutions
        if s.strategy == "mcts":
            draws["search.branching"] = s.branching
        if labels.method != "mc":  # adaptive labels sample a node again, in batches
            draws["labels.batch"] = labels.batch
            draws["labels.max_rollouts_per_node"] = labels.max_rollouts_per_node
        many = [f"{key} = {value}" for key, value in draws.items() if value > 1]
        if many:
            raise PydanticCustomError(
                "greedy_sampling",
                "search.temperature = 0 is greedy decoding: every rollout from a step is the same completion, so "
                "the rollouts drawn per value ({many}) would be copies of one and estimate nothing, and the hf and "
                "vllm policies refuse a request for more than one; set search.temperature above 0 (the default "
                "is 0.7)",
                {"many": ", ".join(many)},
            )
        return self

    @model_validator(mode="after")
    def _mcts_budget_pays_an_expansion(self) -> RunConfig:
        """mcts samples the question's own reference batch (k, under the adaptive methods),
        then expands a leaf only when its ``branching`` new children can all be valued,
        ``branching`` × (1 + the first batch) rollouts: a smaller budget searched nothing,
        every problem, and the run's warning blamed undecided labels. Checked for the
        built-in labelling methods, whose batches are known here."""
        s, labels = self.search, self.labels
        if s.strategy != "mcts" or labels.method not in ("mc", "calibrated", "consensus"):
            return self
        # the root's reference batch comes first where it is affordable (k, under the adaptive
        # methods); then an expansion
        reference, first, named = (0, s.k, "search.k") if labels.method == "mc" else (s.k, labels.batch, "labels.batch")
        need = reference + s.branching * (1 + first)
        if s.budget < need:
            raise PydanticCustomError(
                "mcts_budget",
                "search.budget = {budget} cannot pay for one mcts expansion: {reference}its {branching} new "
                "children (search.branching) at 1 + {first} rollouts each ({named}), {need} in all; raise "
                "search.budget to at least {need}",
                {"budget": s.budget, "need": need, "branching": s.branching, "first": first, "named": named,
                 "reference": f"the question's own {reference} rollouts (search.k), then " if reference else ""},
            )
        return self

    def row_defining(self) -> dict[str, Any]:
        """The config without its operational settings: what decides the output rows."""
        return row_defining(self.model_dump(mode="json"))

    def config_hash(self) -> str:
        """Hash of everything that changes the output rows (resume refuses a change)."""
        blob = json.dumps(self.row_defining(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def row_defining(data: dict[str, Any]) -> dict[str, Any]:
    """The flattened settings of a config dict that can change its output rows."""
    flat = flatten(data)
    strategy = STRATEGIES.find(str(flat.get("search.strategy")))
    active = set(COMMON_SEARCH) | set(strategy.settings if strategy else ())
    # A policy's arguments that change speed, never rows (its ``operational_args``).
    policy = POLICIES.find(str(flat.get("policy.name", "")))
    policy_ops = frozenset(getattr(policy, "operational_args", ()))
    policy_defaults = _arg_defaults(policy)
    out = {}
    for key, value in flat.items():
        section, _, name = key.partition(".")
        if any(key == o or key.startswith(o + ".") for o in OPERATIONAL):
            continue
        if key in ADDED_LATER and value == ADDED_LATER[key]:
            continue
        if section == "search" and strategy is not None and name not in active:
            continue
        if section == "policy" and (name in policy_ops or (name in policy_defaults and value == policy_defaults[name])):
            continue  # an argument given at its default is the default: the same rows, the same hash
        out[key] = value
    return out


def _arg_defaults(policy: Any) -> dict[str, Any]:
    """The keyword defaults of a policy's constructor (or factory); {} where unreadable."""
    if policy is None:
        return {}
    try:
        params = inspect.signature(policy).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


#: Setting names that hold secrets: never recorded from a policy object, never shown in a card.
SECRET_NAME = re.compile(r"api_?key$|secret|password|passwd|credential|auth|(^|_)(access_|hf_|api_)?token$",
                         re.IGNORECASE)


def config_changes(old: dict[str, Any], new: RunConfig) -> list[str]:
    """Human-readable differences in the row-defining settings, e.g. ``search.k: 8 -> 4``.

    When the strategy itself changed, that is the news: the two strategies' own knobs
    are not listed against each other.
    """
    before, after = row_defining(old), new.row_defining()
    # a setting added later that a config written before it lacks: what it was is unknown (a
    # run with a check_answer from before it was recorded), so it is not held against the run
    unknown = {key for key in ADDED_LATER if key not in flatten(old)}
    keys = sorted((set(before) | set(after)) - unknown, key=lambda k: (k != "search.strategy", k))
    if before.get("search.strategy") != after.get("search.strategy"):
        keys = [k for k in keys if not k.startswith("search.") or k.split(".", 1)[1] in COMMON_SEARCH]
    def shown(settings: dict[str, Any], key: str) -> str:
        return repr(settings[key]) if key in settings else "(default)"

    return [f"{k}: {shown(before, k)} -> {shown(after, k)}" for k in keys if before.get(k) != after.get(k)]


def describe_error(exc: ValidationError) -> str:
    """One line: the first failing field, what is wrong, and the value given."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "config"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        return f"unknown config field {where!r}"
    if err["type"] == "judge_extra":
        return (f"unknown config field {where + '.' + err['ctx']['key']!r} (a judge's own arguments need the "
                "judge's policy named: [labels.judge] name = ...)")
    given = err.get("input")
    shown = "" if isinstance(given, dict) else f" (got {given!r})"
    more = len(exc.errors()) - 1
    return f"{where}: {msg}{shown}" + (f"; and {more} more" if more else "")


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a TOML config (optional), apply ``overrides``, validate. Raises ConfigError."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError:
            raise ConfigError(f"config file {str(path)!r} not found") from None
        except IsADirectoryError:
            raise ConfigError(f"config file {str(path)!r} is a directory: name the TOML file in it") from None
        except UnicodeDecodeError as exc:  # TOML is UTF-8 (an editor's UTF-16, Latin-1...)
            raise ConfigError(f"config file {str(path)!r} is not UTF-8 text ({exc.reason} at byte {exc.start}): "
                              "save it as UTF-8") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
        except OSError as exc:  # unreadable: permissions, a broken device
            raise ConfigError(f"config file {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    data = merge(data, overrides or {})
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_error(exc)) from None
