"""Custom policies at their edges: what a factory returns, a name that is no name, absurd
token counts, and the refusals for objects that are, or are not, policies."""

import re
import sys
import textwrap

import pytest

import prmtree
from prmtree.engine.errors import PolicyContractError
from prmtree.engine.output import read_table
from prmtree.engine.records import MAX_TOKEN_COUNT, Completion, GenerationRequest, check_completions
from prmtree.policies import PolicyConfigError, resolve_policy
from prmtree.policies.base import FunctionPolicy, check_policy
from prmtree.policies.simulated import SimulatedPolicy

SOURCE = '''
from prmtree.policies import Completion
from prmtree.policies.simulated import SimulatedPolicy

class SyncGen:
    def generate(self, request):
        return [Completion("x", 1)] * request.n

async def plain_fn(request):
    return SimulatedPolicy().complete(request)

def make_good(latency_s: float = 0.0):
    return SimulatedPolicy(latency_s=latency_s)

def make_sync():
    return SyncGen()

def make_none():
    return None

def make_class():
    return SimulatedPolicy

def make_fn():
    return plain_fn

instance = SimulatedPolicy()
sync_instance = SyncGen()
NUMBER = 3

class CallableObj:
    async def __call__(self, request):
        return SimulatedPolicy().complete(request)

callable_obj = CallableObj()

class NameMethod(SimulatedPolicy):
    def name(self):
        return "mine"

class Quit(BaseException):
    pass

class RaisesBase(SimulatedPolicy):
    def __init__(self):
        raise Quit("the library gave up")

class Interrupted(SimulatedPolicy):
    def __init__(self):
        raise KeyboardInterrupt
'''


@pytest.fixture
def module(tmp_path, monkeypatch):
    """A module of odd policies, importable as ``edge_policies``."""
    (tmp_path / "edge_policies.py").write_text(textwrap.dedent(SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "edge_policies"
    sys.modules.pop("edge_policies", None)


def refused(spec, kwargs=None) -> str:
    with pytest.raises(PolicyConfigError) as exc:
        resolve_policy(spec, kwargs)
    return str(exc.value)


@pytest.mark.parametrize("factory, said", [
    # before: built without a check, every problem failed at run time:
    # "AttributeError: 'list' object has no attribute '__await__'"
    ("make_sync", "policy 'edge_policies:make_sync': generate must be 'async def generate(self, request)'"),
    ("make_none", "policy 'edge_policies:make_none' returned None, not a policy: make_none(...) must return an "
                  "object with 'async def generate(self, request)'"),
    ("make_class", "policy 'edge_policies:make_class' returned the class SimulatedPolicy, not a policy: "
                   "make_class(...) must return an object with 'async def generate(self, request)'"),
])
def test_what_a_factory_returns_is_checked_as_a_policy_at_load(module, problems_file, tmp_path, capsys, factory,
                                                                said):
    from prmtree.cli import main

    assert refused(f"{module}:{factory}") == said
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--input", str(problems_file), "--out", str(tmp_path / "o"), "--policy",
              f"{module}:{factory}", "--no-progress"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"prmtree: error: {said}"]


def test_a_factory_returning_a_policy_or_an_async_function_is_used(module):
    built = resolve_policy(f"{module}:make_good", {"latency_s": 0.5})
    assert type(built) is SimulatedPolicy and built.latency_s == 0.5
    assert type(resolve_policy(f"{module}:make_fn")) is FunctionPolicy


@pytest.mark.parametrize("name, said", [
    # before: '<bound method ...>' in the policy column, and 0 silently the class's name
    (lambda self: "mine", "got a method: make it an attribute"),
    (0, "got 0 (int)"),
    (b"mine", "got b'mine' (bytes)"),
])
def test_a_name_that_is_no_str_is_refused_before_the_run(problems, tmp_path, name, said):
    policy = type("Odd", (SimulatedPolicy,), {"name": name})()
    with pytest.raises(PolicyConfigError, match=re.escape(f"policy Odd: name must be a non-empty str (the output's "
                                                          f"policy column), {said}")):
        prmtree.run(problems[:1], policy=policy, out=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_a_name_that_raises_when_read_is_refused_in_one_line(problems, tmp_path):
    # before: the RuntimeError's traceback from the executor, mid-start
    class Late(SimulatedPolicy):
        @property
        def name(self):
            raise RuntimeError("no name yet")

    with pytest.raises(PolicyConfigError, match=r"^policy Late: reading its name raised RuntimeError: no name yet; "
                                                r"name must be a non-empty str$"):
        prmtree.run(problems[:1], policy=Late(), out=tmp_path / "o")


def test_a_name_method_of_a_class_named_is_refused_before_it_is_built(module):
    with pytest.raises(PolicyConfigError, match=r"policy edge_policies:NameMethod: name must be a non-empty str .* "
                                                r"got a method"):
        check_policy(f"{module}:NameMethod")


def test_a_name_with_a_lone_surrogate_is_written_out(problems, tmp_path):
    # before: every problem finished, then the flush died with pyarrow's UnicodeEncodeError
    policy = type("Odd", (SimulatedPolicy,), {"name": "mine\udcff"})()
    summary = prmtree.run(problems[:2], policy=policy, out=tmp_path / "o", config_overrides={"search": {"budget": 16}})
    assert summary.problems_done == 2
    assert set(read_table(tmp_path / "o", "steps").column("policy").to_pylist()) == {"mine\\udcff"}


def request(n: int = 2) -> GenerationRequest:
    return GenerationRequest(problem=prmtree.Problem("p", "What is 1+1?", "2"), prefix=(), n=n, seed=0)


@pytest.mark.parametrize("field, value, shown", [
    # before: accepted, then every problem failed as "search: internal error: OverflowError"
    ("num_tokens", 10**400, "about 10**400"),
    ("cached_tokens", 2**53 + 1, str(2**53 + 1)),
    ("prompt_tokens", 10**25, str(10**25)),
    ("shared_tokens", 2**63 + 5, str(2**63 + 5)),
], ids=["10**400", "2**53+1", "10**25", "2**63+5"])
def test_a_token_count_of_absurd_size_breaks_the_contract_naming_it(field, value, shown):
    completion = Completion("\\boxed{2}", **{"num_tokens": 1, field: value})
    with pytest.raises(PolicyContractError, match=re.escape(f"mine: Completion.{field} must be at most 2**53 (a "
                                                            f"count of tokens), got {shown}")):
        check_completions(request(), [Completion("\\boxed{2}", 1), completion], "mine")
    tops = [Completion("\\boxed{2}", MAX_TOKEN_COUNT, cached_tokens=MAX_TOKEN_COUNT),
            Completion("\\boxed{2}", MAX_TOKEN_COUNT, cached_tokens=1)]  # together over it: each is a count
    assert check_completions(request(2), tops, "mine") == tops


def test_an_instance_holding_its_own_async_generate_is_a_policy(problems, tmp_path):
    # before: "policy 'Delegating' has no generate(request) method", though it has one
    class Delegating:
        def __init__(self):
            self.generate = SimulatedPolicy().generate

    summary = prmtree.run(problems[:2], policy=Delegating(), out=tmp_path / "o",
                          config_overrides={"search": {"budget": 16}})
    assert summary.problems_done == 2

    class DelegatingSync:
        def __init__(self):
            self.generate = lambda request: []

    with pytest.raises(PolicyConfigError, match=r"policy 'DelegatingSync': the generate it holds \(.*<lambda>\) "
                                                r"must be an async function of the request"):
        check_policy(DelegatingSync())


def test_a_module_level_instance_named_is_the_policy(module):
    # before: "policy 'edge_policies:instance' is not a class or an async function"
    from edge_policies import instance

    assert resolve_policy(f"{module}:instance") is instance
    assert refused(f"{module}:instance", {"seed": 1}) == ("policy 'edge_policies:instance' is a SimulatedPolicy "
                                                          "object, built already: it takes no arguments, got ['seed']")
    assert refused(f"{module}:sync_instance") == ("policy 'edge_policies:sync_instance': generate must be "
                                                  "'async def generate(self, request)'")
    assert refused(f"{module}:NUMBER") == (
        "policy 'edge_policies:NUMBER' is a int, not a policy: name a policy class, an object with 'async def "
        "generate(self, request)', a function returning such an object, or an 'async def generate(request)' function")


def test_a_callable_object_named_is_told_it_needs_a_generate(module):
    # before: "needs the argument 'request': give it with --policy-arg request=..."
    assert refused(f"{module}:callable_obj") == (
        "policy 'edge_policies:callable_obj' is a callable CallableObj object, not a policy: give it 'async def "
        "generate(self, request)' (prmtree calls generate, never __call__), or name an 'async def "
        "generate(request)' function")


def test_any_base_exception_building_a_policy_is_one_line_but_an_interrupt(module):
    # before: a BaseException subclass from the constructor was a raw traceback, exit 1
    assert refused(f"{module}:RaisesBase") == "cannot build policy 'edge_policies:RaisesBase': Quit: the library gave up"
    with pytest.raises(KeyboardInterrupt):
        resolve_policy(f"{module}:Interrupted")


def test_a_class_default_name_the_instance_replaces_and_a_path_name_are_used(problems, tmp_path):
    # the review: a class default name = "" (a dataclass field) was refused before the build
    # though every instance sets its own; "" itself is the class's name, as before
    from dataclasses import dataclass
    from pathlib import Path

    from prmtree.policies.base import policy_name

    @dataclass
    class Named(SimulatedPolicy):
        name: str = ""

        def __post_init__(self):
            SimulatedPolicy.__init__(self)

    assert policy_name(Named(name="echo-v2")) == "echo-v2" and policy_name(Named()) == "Named"
    from prmtree.policies.base import _check_class_name

    _check_class_name(Named, "Named")  # a class named unbuilt: its default is no verdict on the instances
    s = prmtree.run(problems[:1], policy=Named(name="echo-v2"), out=tmp_path / "o")
    assert set(read_table(tmp_path / "o", "steps").column("policy").to_pylist()) == {"echo-v2"} and s.problems_done
    pathed = type("Pathed", (SimulatedPolicy,), {"name": Path("/models/qwen2-vl")})()
    assert policy_name(pathed) == "/models/qwen2-vl"
