"""Where a signature is a contract (docs/ARCHITECTURE.md's table), read it: every
implementation has every member of its protocol, with the same parameters."""

from __future__ import annotations

import inspect
from typing import Any

import re

import pytest

from prmtree.engine.contracts import Executor, Policy
from prmtree.engine.deciders import CalibratedDecider, Decider, MCDecider
from prmtree.engine.labelers import CalibratedLabeler, ConsensusLabeler, Labeler, MCLabeler
from prmtree.engine.output import DatasetWriter
from prmtree.engine.search import MCTSSearch, OmegaSearch, ShepherdSearch, TreeSearch
from prmtree.rollout_workers.inline import InlineExecutor
from prmtree.rollout_workers.ray import RayExecutor


def protocol_members(protocol: type) -> dict[str, Any]:
    """The protocol's own methods and attributes (not object's or Protocol's machinery)."""
    own = {name: value for name, value in vars(protocol).items() if not name.startswith("_")}
    for name in getattr(protocol, "__annotations__", {}):
        own.setdefault(name, None)
    return own


def parameters(fn: Any) -> list[tuple[str, Any]]:
    return [(p.name, p.kind) for p in inspect.signature(fn).parameters.values()]


def _source(fn: Any) -> str:
    try:
        return inspect.getsource(fn)
    except (TypeError, OSError):  # object.__init__: no source, sets nothing
        return ""


def differences(impl: type, protocol: type) -> list[str]:
    problems = []
    for name, member in protocol_members(protocol).items():
        if member is None and not hasattr(impl, name):  # an attribute: on the class, or set by __init__
            if f"self.{name} =" not in _source(impl.__init__):
                problems.append(f"{impl.__name__} has no {name}")
        elif not hasattr(impl, name):
            problems.append(f"{impl.__name__} has no {name}")
        elif callable(member):
            got = getattr(impl, name)
            if parameters(got) != parameters(member):
                problems.append(f"{impl.__name__}.{name}{inspect.signature(got)} != protocol's {inspect.signature(member)}")
            if inspect.iscoroutinefunction(member) != inspect.iscoroutinefunction(got):
                problems.append(f"{impl.__name__}.{name}: async differs from the protocol")
    return problems


@pytest.mark.parametrize("impl, protocol", [
    (MCDecider, Decider), (CalibratedDecider, Decider),
    (MCLabeler, Labeler), (CalibratedLabeler, Labeler), (ConsensusLabeler, Labeler),
    (InlineExecutor, Executor), (RayExecutor, Executor),
])
def test_implementations_follow_their_protocol(impl, protocol):
    assert protocol_members(protocol)  # the protocol was read
    assert differences(impl, protocol) == []


def test_a_drifted_signature_is_reported():
    class Drifted:
        source = "x"

        def first_batch(self, k, extra):  # one parameter too many
            return k

    found = differences(Drifted, Decider)
    assert any("Drifted.first_batch" in d for d in found)
    assert any("has no next_to_sample" in d for d in found)


def test_policies_executors_and_searches_keep_their_documented_shapes():
    assert parameters(Policy.generate) == [("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
                                           ("request", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for executor in (InlineExecutor, RayExecutor):
        assert [n for n, _ in parameters(executor.from_config)] == ["config", "policy", "policy_args"]
    for search in (OmegaSearch, ShepherdSearch, MCTSSearch):
        assert issubclass(search, TreeSearch) and not inspect.isabstract(search)
        assert [n for n, _ in parameters(search.__init__)][1:] == ["problem", "config", "decider"]
    # the writer is handed the counters it records: flush(stats), close(stats)
    assert [n for n, _ in parameters(DatasetWriter.flush)][:2] == ["self", "stats"]
    assert [n for n, _ in parameters(DatasetWriter.close)] == ["self", "stats"]


@pytest.mark.parametrize("capacity, said", [
    (float("inf"), "capacity must be the sequences it serves at once (a whole number, at least 1) or None, got inf"),
    ("abc", "capacity must be the sequences it serves at once (a whole number, at least 1) or None, got 'abc'"),
    (-5, "capacity must be the sequences it serves at once (a whole number, at least 1) or None, got -5"),
    # before: accepted though the message asks for a whole number (2.5 as 2, True as none, 0 as 1)
    (2.5, "capacity must be the sequences it serves at once (a whole number, at least 1) or None, got 2.5"),
    (True, "capacity must be the sequences it serves at once (a whole number, at least 1) or None, got True"),
    (0, "capacity must be the sequences it serves at once (a whole number, at least 1) or None, got 0"),
])
def test_a_capacity_that_is_no_count_is_refused_naming_it(capacity, said):
    # Before: OverflowError / "invalid literal for int()" tracebacks and lines that named no capacity.
    from prmtree.engine.contracts import declared_capacity
    from prmtree.engine.errors import ConfigError

    class Policy:
        name = "mine"

    Policy.capacity = capacity
    with pytest.raises(ConfigError, match=re.escape(f"mine.{said}")):
        declared_capacity(Policy())

    class Raising:
        name = "mine"

        def capacity(self):
            raise RuntimeError("no engine yet")

    with pytest.raises(ConfigError, match=r"mine.capacity\(\) raised RuntimeError: no engine yet"):
        declared_capacity(Raising())
    assert declared_capacity(type("P", (), {"capacity": 2.0})()) == 2


def test_a_policy_that_fails_to_load_is_one_line(tmp_path, capsys):
    # Before: a RuntimeError from the constructor (CUDA out of memory) was a 43-line traceback.
    import sys

    from prmtree.cli import main
    from prmtree.engine.synthetic import generate_problems, write_jsonl

    (tmp_path / "oom_policy.py").write_text(
        "from prmtree.policies.simulated import SimulatedPolicy\n"
        "class Oom(SimulatedPolicy):\n"
        "    def __init__(self, **kw):\n"
        "        raise RuntimeError('CUDA out of memory')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(SystemExit) as exit_:
            main(["run", "--input", str(write_jsonl(generate_problems(2, seed=1), tmp_path / "in")), "--out",
                  str(tmp_path / "o"), "--policy", "oom_policy:Oom", "--no-progress"])
    finally:
        sys.path.remove(str(tmp_path))
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == ("prmtree: error: cannot build policy 'oom_policy:Oom': RuntimeError: "
                                               "CUDA out of memory")


@pytest.mark.parametrize("module, source, message", [
    ("env_policy", "import os\nclass P:\n    def __init__(self):\n        os.environ['PRMTREE_NO_SUCH_SETTING']\n"
                   "    async def generate(self, request): ...\n",
     "cannot build policy 'env_policy:P': KeyError: 'PRMTREE_NO_SUCH_SETTING'"),
    ("assert_policy", "class P:\n    def __init__(self, a=1):\n        assert a == 2, 'a must be 2'\n"
                      "    async def generate(self, request): ...\n",
     "cannot build policy 'assert_policy:P': AssertionError: a must be 2"),
    ("boom_policy", "1 / 0\n",
     "cannot import policy 'boom_policy:P': module 'boom_policy' raised ZeroDivisionError: division by zero"),
    ("syntax_policy", "def f(:\n",
     "cannot import policy 'syntax_policy:P': module 'syntax_policy' raised SyntaxError: invalid syntax "
     "(syntax_policy.py, line 1)"),
])
def test_any_exception_building_a_policy_is_one_line_exit_2(tmp_path, capsys, module, source, message):
    # Before: only TypeError, ValueError, MemoryError, RuntimeError, OSError and ImportError
    # were caught: a KeyError or failed assert in the constructor, or any error but an
    # ImportError at import, was a 40-line traceback and exit 1 ("the same command resumes").
    import sys

    from prmtree.cli import main
    from prmtree.engine.synthetic import generate_problems, write_jsonl

    (tmp_path / f"{module}.py").write_text(source)
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(SystemExit) as exit_:
            main(["run", "--input", str(write_jsonl(generate_problems(1, seed=1), tmp_path / "in")), "--out",
                  str(tmp_path / "o"), "--policy", f"{module}:P", "--no-progress"])
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(module, None)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == f"prmtree: error: {message}"


def test_a_capacity_that_goes_odd_mid_run_keeps_the_last_and_fails_no_request(tmp_path):
    # Before: the re-read every 256 requests ran inside the request's retry: its ConfigError
    # threw away finished completions and retried them (failed them, with one attempt).
    import prmtree
    from prmtree.engine.synthetic import generate_problems
    from prmtree.policies.simulated import SimulatedPolicy

    class Odd(SimulatedPolicy):
        name = "simulated"

        def __init__(self):
            super().__init__()
            self._asked = 0

        def capacity(self):
            self._asked += 1
            return 8 if self._asked < 3 else 0

    s = prmtree.run(generate_problems(40, seed=2), policy=Odd(), config={"executor": {"max_attempts": 1}})
    assert s.requests > 256 and s.retries == 0 and s.problems_failed == 0
