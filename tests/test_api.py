"""The public Python API: prmtree.run with names, classes, functions and instances."""

import re
import sys
import textwrap

import pytest

import prmtree
from prmtree.engine.output import read_table
from prmtree.policies import Completion, PolicyConfigError, register_policy, resolve_policy
from prmtree.policies.simulated import SimulatedPolicy


def test_public_surface():
    for name in ("run", "Problem", "Policy", "register_policy", "RunConfig", "SearchConfig", "GenerationRequest"):
        assert name in prmtree.__all__ and hasattr(prmtree, name)


def test_registered_custom_policy_by_name_with_arguments(tmp_path, problems):
    @register_policy("always-right-test")
    class AlwaysRight:
        def __init__(self, suffix: str):
            self.suffix = suffix

        async def generate(self, request):
            text = f"I see it{self.suffix}\n\n\\boxed{{{request.problem.answer}}}"
            return [Completion(text, 5) for _ in range(request.n)]

    s = prmtree.run(problems[:3], policy="always-right-test", policy_args={"suffix": "!"}, out=tmp_path)
    assert s.problems_done == 3 and s.problems_skipped == 3  # all-correct roots carry no step signal
    assert read_table(tmp_path, "nodes").column("n_correct").to_pylist()[0] == 8


def test_module_colon_class_and_plain_async_function(tmp_path, problems, monkeypatch):
    mod = tmp_path / "my_policies.py"
    mod.write_text(textwrap.dedent('''
        from prmtree.policies import Completion

        class Echo:
            name = "echo"
            async def generate(self, request):
                return [Completion("step\\n\\n\\\\boxed{0}", 2) for _ in range(request.n)]

        async def generate(request):
            return [Completion("\\\\boxed{1}", 1) for _ in range(request.n)]
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert type(resolve_policy("my_policies:Echo")).__name__ == "Echo"
    fn_policy = resolve_policy("my_policies:generate")
    s = prmtree.run(problems[:2], policy="my_policies:generate", out=tmp_path / "o")
    assert s.rollouts == 16 and fn_policy.name == "generate"
    with pytest.raises(PolicyConfigError, match="takes no keyword arguments"):
        resolve_policy("my_policies:generate", {"x": 1})
    sys.modules.pop("my_policies", None)


def test_an_async_function_is_a_policy_given_itself_as_by_name(tmp_path, problems):
    # Before: prmtree.run(policy=generate) was refused, "policy 'function' has no
    # generate(request) method", though --policy module:generate takes the same function.
    solver = SimulatedPolicy()

    async def generate(request):
        return solver.complete(request)

    s = prmtree.run(problems[:4], policy=generate, out=tmp_path / "o")
    assert s.problems_done == 4 and s.rollouts > 0
    assert set(read_table(tmp_path / "o", "steps").column("policy").to_pylist()) == {"generate"}
    manifest = __import__("json").loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["config"]["policy"]["name"] == f"{__name__}:{generate.__qualname__}"
    assert type(resolve_policy(generate)).__name__ == "FunctionPolicy"

    class Engine:  # a bound method: recorded with its object's settings
        def __init__(self, temperature):
            self.temperature = temperature

        async def sample(self, request):
            return solver.complete(request)

    prmtree.run(problems[:2], policy=Engine(0.5).sample, out=tmp_path / "m")
    recorded = __import__("json").loads((tmp_path / "m" / "manifest.json").read_text())["config"]["policy"]
    assert recorded["name"].endswith("Engine.sample") and recorded["temperature"] == 0.5
    with pytest.raises(Exception, match="written with a different config"):
        prmtree.run(problems[:2], policy=Engine(0.9).sample, out=tmp_path / "m")

    def plain(request):  # no async: said in one line, naming it
        return []

    with pytest.raises(PolicyConfigError, match=r"policy function '.*plain' must be 'async def plain\(request\)'"):
        prmtree.run(problems[:1], policy=plain)
    # before: "policy 'type' has no generate(request) method", of a class that has one
    with pytest.raises(PolicyConfigError, match=r"policy 'SimulatedPolicy' is a class: pass an instance "
                                                r"\(SimulatedPolicy\(\.\.\.\)\), or its name "
                                                r"'prmtree.policies.simulated:SimulatedPolicy' with its arguments"):
        prmtree.run(problems[:1], policy=SimulatedPolicy)


def test_a_policy_argument_that_is_no_data_is_refused_naming_it(tmp_path, problems):
    # Before: pydantic's "Unable to serialize unknown type: <class '_thread.lock'>" at the
    # first write, naming no argument.
    import threading

    from prmtree.engine.errors import ConfigError

    with pytest.raises(ConfigError) as refused:
        prmtree.run(problems[:1], policy="simulated", policy_args={"guess_rate": threading.Lock()}, out=tmp_path)
    assert str(refused.value).startswith("policy: argument 'guess_rate' (of type lock) is not data (numbers, "
                                         "strings, lists, dicts)")
    assert not (tmp_path / "manifest.json").exists()
    np = pytest.importorskip("numpy")
    s = prmtree.run(problems[:1], policy="simulated", policy_args={"error_rate": np.float32(0.25)}, out=tmp_path / "n")
    assert s.problems_done == 1  # a numpy number is the number it holds
    assert __import__("json").loads((tmp_path / "n" / "manifest.json").read_text())["config"]["policy"][
        "error_rate"] == 0.25


def test_run_accepts_a_jsonl_path_and_a_config_file(tmp_path, problems_file):
    cfg = tmp_path / "c.toml"
    cfg.write_text("seed = 5\n[search]\nstrategy = 'shepherd'\nk = 2\n")
    s = prmtree.run(problems_file, config=cfg, out=tmp_path / "o")
    assert s.problems_done == 24
    assert set(read_table(tmp_path / "o", "steps").column("strategy").to_pylist()) == {"shepherd"}


def test_run_without_out_still_counts():
    from prmtree.engine.synthetic import generate_problems

    s = prmtree.run(generate_problems(3), policy=SimulatedPolicy())
    assert s.out is None and s.rollouts > 0


def test_bad_config_raises_config_error():
    with pytest.raises(prmtree.ConfigError, match="search.budget"):
        prmtree.run([], config={"search": {"budget": -1}})
    with pytest.raises(prmtree.ConfigError, match="strategy"):
        prmtree.run([], strategy="beam")
    # before: an infinite timeout passed validation and the run died on int(inf // 2) in a
    # message naming no field, its --out left with empty folders
    for section, key in (("verify", "timeout_s"), ("search", "temperature"), ("search", "c_puct"),
                         ("labels", "confidence")):
        with pytest.raises(prmtree.ConfigError, match=rf"{section}.{key}: Input should be a finite number \(got inf\)"):
            prmtree.run([], config={section: {key: float("inf")}})
    with pytest.raises(prmtree.ConfigError, match=r"labels.judge.temperature: Input should be a finite number"):
        prmtree.run([], config={"labels": {"judge": {"temperature": float("nan")}}})


def test_entry_point_group_registers_policies(tmp_path, monkeypatch, problems):
    """A package that declares [project.entry-points."prmtree.policies"] is found by name."""
    (tmp_path / "ep_policy_mod.py").write_text(textwrap.dedent('''
        from prmtree.policies import Completion

        class EPPolicy:
            name = "from-entry-point"
            def __init__(self, answer="0"):
                self.answer = answer
            async def generate(self, request):  # every other completion answers "no"
                return [Completion(f"s\\n\\n\\\\boxed{{{self.answer if i % 2 else 'no'}}}", 3)
                        for i in range(request.n)]
    '''))
    dist = tmp_path / "ep_policy_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-policy-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[prmtree.policies]\nep-test = ep_policy_mod:EPPolicy\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from prmtree.policies import available_policies

    assert "ep-test" in available_policies()
    answer = problems[1].answer  # half right for problems[1]; problems[0] (another answer) all wrong
    assert problems[0].answer != answer
    s = prmtree.run(problems[:2], policy="ep-test", policy_args={"answer": answer}, out=tmp_path / "o")
    assert s.problems_done == 2 and s.problems_skipped == 1
    steps = read_table(tmp_path / "o", "steps")
    assert set(steps.column("policy").to_pylist()) == {"from-entry-point"}
    assert set(steps.column("problem_id").to_pylist()) == {problems[1].id}
    assert set(read_table(tmp_path / "o", "nodes").column("problem_id").to_pylist()) == {p.id for p in problems[:2]}
    sys.modules.pop("ep_policy_mod", None)


def test_custom_answer_check_and_step_splitter(tmp_path, problems):
    class Pipes:
        name = "pipes"

        async def generate(self, request):
            return [Completion(f"one | two | ANSWER-{i % 2}", 5) for i in range(request.n)]

    seen = []

    def check(gold, predicted):
        seen.append(predicted)
        return predicted.endswith("1")

    s = prmtree.run(problems[:2], policy=Pipes(), strategy="shepherd", out=tmp_path, check_answer=check,
                    split_steps=lambda text: text.split("|"), config={"search": {"k": 2, "n_solutions": 2}, "labels": {"method": "mc"}})
    assert s.problems_done == 2  # mc: with 2 rollouts a step, calibrated labels would stay undecided
    steps = read_table(tmp_path, "steps").to_pylist()
    assert steps and all(r["completions"][:2] == ["one", "two"] for r in steps)
    assert set(seen) == {"ANSWER-0", "ANSWER-1"}
    roots = [n for n in read_table(tmp_path, "nodes").to_pylist() if n["depth"] == 0]
    assert all(r["n_correct"] == 1 and r["n_rollouts"] == 2 for r in roots)


def test_a_policy_objects_secrets_are_not_written_and_a_changing_attribute_is_named(tmp_path, problems):
    # Before: a public api_key attribute was written into manifest.json in plain text, and
    # an attribute that changes per process (a start time) refused the resume without a hint.
    from prmtree.engine.errors import ConfigError

    class Keyed(SimulatedPolicy):
        def __init__(self, started_at):
            super().__init__()
            self.api_key, self.hf_token, self.password = "sk-SECRET-1", "hf_SECRET_2", "SECRET-3"
            self.started_at = started_at

    prmtree.run(problems[:3], policy=Keyed(1.0), out=tmp_path, seed=0)
    written = "".join(p.read_text() for p in tmp_path.glob("manifest*"))
    assert "SECRET" not in written and '"started_at": 1.0' in written
    assert prmtree.run(problems[:3], policy=Keyed(1.0), out=tmp_path, seed=0).rollouts_this_session == 0
    with pytest.raises(ConfigError, match=r"policy\.started_at: 1\.0 -> 2\.0 - the policy's arguments are part of "
                                          r"the config \(--policy-arg values, \[policy\] keys, and a policy object's "
                                          r"public attributes: name an attribute that does not change the rows with "
                                          r"a leading underscore\)"):
        prmtree.run(problems[:3], policy=Keyed(2.0), out=tmp_path, seed=0)


@pytest.mark.parametrize("broken, why", [
    (lambda gold, predicted: 1 / 0 if predicted.endswith("1") else False, "raised ZeroDivisionError: division by zero"),
    (lambda gold, predicted: "no", "returned str 'no', not a bool"),
])
def test_a_check_answer_that_fails_grades_wrong_and_says_so(tmp_path, problems, broken, why):
    # Before: it was graded wrong (or "no" read as True) without a word: 0 labels, exit 0.
    from prmtree.summary import label_warnings

    class Pipes:
        name = "pipes"

        async def generate(self, request):
            return [Completion(f"one | two | ANSWER-{i % 2}", 5) for i in range(request.n)]

    s = prmtree.run(problems[:2], policy=Pipes(), strategy="shepherd", out=tmp_path, check_answer=broken,
                    config={"search": {"k": 2, "n_solutions": 2}, "labels": {"method": "mc"}})
    checks = s.stats["verifier"]
    assert checks["custom_errors"] >= 1 and why in checks["custom_error"]
    said = [w for w in label_warnings(s) if w.startswith("check_answer failed on")]
    assert len(said) == 1 and why in said[0] and "graded wrong" in said[0]
    roots = [n for n in read_table(tmp_path, "nodes").to_pylist() if n["depth"] == 0]
    assert all(r["n_correct"] == 0 for r in roots)  # a failed check is a wrong answer, "no" included


def test_a_check_of_prmtrees_own_that_raises_grades_wrong_and_says_so(tmp_path, problems, monkeypatch):
    # Before: an exception in the cheap checks (a bug of prmtree's, on some answer) was caught
    # and graded wrong without a word, on both the driver's path and the synchronous one.
    import asyncio

    from prmtree.engine.answers import Verifier
    from prmtree.engine.answers import verifier as verifier_module
    from prmtree.summary import label_warnings

    plain = verifier_module.cheap_check

    def buggy(kind, gold, predicted, *args, **kwargs):
        if predicted == "ANSWER-1":
            raise IndexError("list index out of range")
        return plain(kind, gold, predicted, *args, **kwargs)

    monkeypatch.setattr(verifier_module, "cheap_check", buggy)

    class Pipes:
        name = "pipes"

        async def generate(self, request):
            return [Completion(f"one | two | \\boxed{{ANSWER-{i % 2}}}", 5) for i in range(request.n)]

    s = prmtree.run(problems[:2], policy=Pipes(), strategy="shepherd", out=tmp_path,
                    config={"search": {"k": 2, "n_solutions": 2}, "labels": {"method": "mc"}})
    checks = s.stats["verifier"]
    assert checks["check_errors"] >= 2 and "custom_errors" not in checks
    assert checks["check_error"].startswith("IndexError: list index out of range at test_api.py:")
    assert "checking 'ANSWER-1' against" in checks["check_error"]
    said = [w for w in label_warnings(s) if w.startswith("prmtree's answer checks raised on")]
    assert len(said) == 1 and "graded wrong" in said[0] and "IndexError" in said[0]

    verify = Verifier()
    try:
        one = problems[0]
        assert verify(one, "ANSWER-1") is False and verify(one, one.answer) is True
        assert asyncio.run(verify.check(one, ["ANSWER-1", one.answer, None])) == [False, True, False]
        assert verify.stats()["check_errors"] == 2
    finally:
        verify.close()
    assert "check_errors" not in Verifier().stats()  # a clean run's manifest holds no such key


def test_policy_args_with_an_instance_or_named_name_are_refused(tmp_path, problems):
    # Before: an instance's policy_args were recorded as its arguments but never used (a later
    # run with another instance and the same arguments resumed in silence), and an argument
    # called "name" replaced the policy named: --policy mine:Named --policy-arg name=simulated
    # ran the simulated policy.
    from prmtree.engine.errors import ConfigError

    with pytest.raises(ConfigError, match=r"policy_args \(error_rate\) are for a policy prmtree builds .* this "
                                          r"policy is an instance, already built: give them to its constructor"):
        prmtree.run(problems[:2], policy=SimulatedPolicy(), policy_args={"error_rate": 0.5}, out=tmp_path / "a")
    with pytest.raises(ConfigError, match="a policy argument may not be called 'name'"):
        prmtree.run(problems[:2], policy="simulated", policy_args={"name": "x"}, out=tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_split_steps_that_returns_no_list_of_strings_is_refused_or_named(tmp_path, problems):
    # Before: one returning the stripped text (a str) split every solution into characters,
    # one step each, exit 0; one returning None failed every problem as "internal error:
    # TypeError: 'NoneType' object is not iterable".
    from prmtree.engine.errors import ConfigError

    with pytest.raises(ConfigError, match=r"split_steps must return a list of strings, but returned str 'First"):
        prmtree.run(problems[:2], policy="simulated", out=tmp_path / "a", split_steps=lambda text: text.strip())
    with pytest.raises(ConfigError, match=r"but its list holds int 1"):
        prmtree.run(problems[:2], policy="simulated", out=tmp_path / "b", split_steps=lambda text: [1, 2])
    assert not (tmp_path / "a").exists()

    def sometimes(text):  # right on the sample, wrong on the policy's texts
        return text.split("\n\n") if text.startswith("First, the first step.") else None

    s = prmtree.run(problems[:2], policy="simulated", out=tmp_path / "c", split_steps=sometimes)
    assert s.problems_failed == 2
    assert "split_steps must return a list of strings, but returned NoneType None" in str(s.stats["failure_examples"])
    generators = prmtree.run(problems[:2], policy="simulated", out=tmp_path / "d",
                             split_steps=lambda text: (part for part in text.split("\n\n")))
    assert generators.problems_failed == 0 and generators.problems_done == 2  # any iterable of strings
    from prmtree.engine.steps import custom_steps

    # re.split with a group puts None where it did not match: dropped, as empty steps are
    assert custom_steps(lambda text: re.split(r"\n\n|(Then, )", text), "One.\n\nThen, two.") == [
        "One.", "", "Then, ", "two."]


def test_a_policy_whose_getattr_raises_keyerror_is_refused_in_one_line(tmp_path, problems):
    # Before: a wrapper forwarding unknown attributes to a settings dict crashed the run with a
    # traceback (KeyError: 'name'), exit 1, where prmtree first read an optional attribute.
    from prmtree.policies import PolicyConfigError as Refused

    class Forwarding(SimulatedPolicy):
        def __getattr__(self, key):
            return self.__dict__["_settings"][key]

    policy = Forwarding()
    policy._settings = {"model": "tiny"}
    assert policy.model == "tiny"
    with pytest.raises(Refused, match=r"policy Forwarding: its __getattr__ raised KeyError for 'policy_name', a name it "
                                      r"does not have; it must raise AttributeError there"):
        prmtree.run(problems[:2], policy=policy, out=tmp_path)

    class Complete(Forwarding):  # defines every optional attribute itself: its __getattr__ is never asked
        policy_name = "complete"

        async def close(self):
            pass

    whole = Complete()
    whole._settings = {}
    assert prmtree.run(problems[:2], policy=whole, out=tmp_path / "whole").problems_done == 2

    class Proper(Forwarding):
        def __getattr__(self, key):
            try:
                return self.__dict__["_settings"][key]
            except KeyError:
                raise AttributeError(key) from None

    fine = Proper()
    fine._settings = {}
    assert prmtree.run(problems[:2], policy=fine, out=tmp_path / "fine").problems_done == 2
