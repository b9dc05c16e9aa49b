"""Edges of the vllm policy, and the sampling settings the hf and vllm policies cannot serve.

* ``search.temperature = 0`` (greedy) with more than one rollout per value: every request
  failed on hf and vllm ("n must be 1 when using greedy sampling"), and the values would
  be meaningless anyway; now refused when the config loads.
* A completion cut by the engine's context window (``max_model_len``) was reported as a
  max_tokens cut (the run advised raising max_tokens); the policy now says why, once.
* An engine that could not start was started again by every retry of every request (six
  starts, two minutes, for a pilot of two problems), and the run's message hid vLLM's
  reason; now the first failure is every request's, not retried, with vLLM's reason.

All but the last test need no running engine (vLLM's own output types and its argument
checks, which fail before an engine starts); the last starts one (``vllm``, slow).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

import prmtree
from prmtree.engine.config import load_config
from prmtree.engine.errors import ConfigError
from prmtree.engine.records import GenerationRequest
from prmtree.engine.synthetic import generate_problems

# -- temperature 0: greedy decoding draws one completion per prefix -----------------------


def _load(tmp_path: Path, toml: str):
    path = tmp_path / "run.toml"
    path.write_text(textwrap.dedent(toml))
    return load_config(path)


@pytest.mark.parametrize("toml, named", [
    ("[search]\ntemperature = 0\n", "search.k = 8"),
    ("[search]\ntemperature = 0\nk = 1\n", "labels.batch = 4"),  # the calibrated labels sample in batches
    ("[search]\ntemperature = 0\nk = 1\nstrategy = 'shepherd'\n[labels]\nmethod = 'mc'\n", "search.n_solutions = 4"),
    ("[search]\ntemperature = 0\nk = 1\nstrategy = 'mcts'\n[labels]\nmethod = 'mc'\n", "search.branching = 3"),
])
def test_greedy_sampling_of_more_than_one_rollout_is_refused_at_load(tmp_path, toml, named):
    with pytest.raises(ConfigError) as refused:
        _load(tmp_path, toml)
    said = str(refused.value)
    assert "search.temperature = 0 is greedy decoding" in said and named in said
    assert "set search.temperature above 0 (the default is 0.7)" in said


def test_greedy_sampling_of_one_rollout_per_node_and_a_greedy_judge_load(tmp_path):
    one = _load(tmp_path, "[search]\ntemperature = 0\nk = 1\n[labels]\nmethod = 'mc'\n")
    assert one.search.temperature == 0 and one.search.k == 1
    judge = _load(tmp_path, "[labels]\nmethod = 'consensus'\n[labels.judge]\ntemperature = 0\n")
    assert judge.labels.judge.temperature == 0  # a judge asks for one completion: greedy is fine


def test_a_greedy_run_stops_before_any_request(tmp_path):
    with pytest.raises(ConfigError, match="greedy decoding"):
        prmtree.run(generate_problems(2, seed=1), policy="simulated", out=tmp_path / "out",
                    config={"search": {"temperature": 0.0, "k": 4}})
    assert not (tmp_path / "out" / "manifest.json").exists()


# -- the engine's context window ----------------------------------------------------------


@pytest.fixture(scope="module")
def policy(tiny_text_model):
    pytest.importorskip("vllm")
    from prmtree.policies.vllm_policy import VLLMPolicy

    return VLLMPolicy(str(tiny_text_model), dtype="float32", max_model_len=240)


class _Answers:
    """Stands in for vLLM's ``AsyncLLM`` (no engine starts): answers each request with
    one ``RequestOutput``, vLLM's own type, holding ``outputs``."""

    def __init__(self, outputs: list, prompt_tokens: int, max_model_len: int) -> None:
        self.outputs, self.prompt_tokens = outputs, prompt_tokens
        self.vllm_config = SimpleNamespace(model_config=SimpleNamespace(max_model_len=max_model_len))

    async def generate(self, prompt, params, request_id):
        from vllm.outputs import RequestOutput

        yield RequestOutput(request_id, prompt["prompt"], list(range(self.prompt_tokens)), None, self.outputs,
                            finished=True)


def _completion(index: int, tokens: int, finish_reason: str):
    from vllm.outputs import CompletionOutput

    return CompletionOutput(index, "x" * tokens, list(range(tokens)), None, None, finish_reason=finish_reason)


def _ask(policy, engine, max_tokens: int):
    import asyncio

    policy._engine = engine
    try:
        request = GenerationRequest(generate_problems(1, seed=2)[0], (), n=len(engine.outputs), max_tokens=max_tokens)
        return asyncio.run(policy.generate(request))
    finally:
        policy._engine = None


def test_a_cut_at_max_model_len_is_said_once_as_the_context_windows(policy, caplog):
    policy._warned_clamp = False
    cut = _Answers([_completion(0, 27, "stop"), _completion(1, 42, "length")], prompt_tokens=198, max_model_len=240)
    with caplog.at_level(logging.WARNING, logger="prmtree"):
        first = _ask(policy, cut, max_tokens=80)
        _ask(policy, cut, max_tokens=80)
    [said] = [r.getMessage() for r in caplog.records if "context window" in r.getMessage()]
    assert said.startswith("prmtree: the engine cut completions at its context window (max_model_len), not at "
                           "max_tokens (42 tokens written where 80 were asked, after a prompt of 198 tokens; "
                           "max_model_len is 240)")
    assert "raise the vllm policy's max_model_len" in said
    assert [(c.num_tokens, c.finish_reason) for c in first] == [(27, "stop"), (42, "length")]  # still truncated


def test_a_cut_at_max_tokens_is_not_blamed_on_the_context_window(policy, caplog):
    policy._warned_clamp = False
    full = _Answers([_completion(0, 80, "length"), _completion(1, 12, "stop")], prompt_tokens=198, max_model_len=4096)
    with caplog.at_level(logging.WARNING, logger="prmtree"):
        _ask(policy, full, max_tokens=80)
    assert not [r for r in caplog.records if "context window" in r.getMessage()]


# -- an engine that cannot start ----------------------------------------------------------


class _Refuses(_Answers):
    """An engine that raises ``error`` for every request, as vLLM's admission does."""

    def __init__(self, error: BaseException) -> None:
        super().__init__([None], 0, 240)  # (one output asked for: n = 1)
        self.error = error

    async def generate(self, prompt, params, request_id):
        raise self.error
        yield  # an async generator, as AsyncLLM.generate is


def test_a_full_engine_queue_is_busy_and_an_invalid_request_is_refused_for_good(policy):
    # Before: vLLM's 503s (its queue full) were ordinary failures, spending attempts with no
    # backing off; an invalid request (a prompt over max_model_len) was retried as they were
    from vllm.exceptions import MaxQueuedTokensError, QueueOverflowError, VLLMValidationError

    from prmtree.engine.driver import overloaded, retryable, said_busy
    from prmtree.engine.errors import GenerationError

    for error in (QueueOverflowError(), MaxQueuedTokensError()):
        with pytest.raises(GenerationError) as busy:
            _ask(policy, _Refuses(error), 8)
        assert retryable(busy.value) and said_busy(busy.value) and overloaded(busy.value)
        assert str(busy.value).startswith("vLLM is overloaded (its queue is full): The engine ")
    with pytest.raises(GenerationError) as refused:
        _ask(policy, _Refuses(VLLMValidationError("The decoder prompt (length 300) is longer than the maximum "
                                                  "model length of 240.")), 8)
    assert not retryable(refused.value) and not said_busy(refused.value)
    assert str(refused.value) == ("vLLM refused the request: The decoder prompt (length 300) is longer than the "
                                  "maximum model length of 240.")


def test_an_engine_that_cannot_start_is_started_once_and_the_run_says_vllms_reason(tiny_text_model, tmp_path,
                                                                                    monkeypatch):
    # max_model_len past the model's own: vLLM refuses it before an engine process starts
    pytest.importorskip("vllm")
    from vllm.v1.engine.async_llm import AsyncLLM

    starts = []
    start = AsyncLLM.from_engine_args.__func__

    def counted(cls, *args, **kwargs):  # vLLM's own start, counted
        starts.append(1)
        return start(cls, *args, **kwargs)

    monkeypatch.setattr(AsyncLLM, "from_engine_args", classmethod(counted))
    summary = prmtree.run(generate_problems(3, seed=1), policy="vllm", out=tmp_path / "out",
                          policy_args={"model": str(tiny_text_model), "dtype": "float32", "max_model_len": 1_000_000},
                          config={"search": {"budget": 16}})
    assert len(starts) == 1  # before: once per attempt of each problem (9 here)
    assert summary.stats["problems_failed"] == 3 and summary.stats["retries"] == 0
    [said] = summary.stats["failure_examples"].values()
    assert said.startswith("GenerationError: vLLM could not start its engine")
    assert "User-specified max_model_len (1000000) is greater than the derived max_model_len" in said


@pytest.mark.vllm
def test_a_real_engine_cut_at_max_model_len_is_said_as_such(tiny_text_model, tmp_path):
    # vLLM stops a sequence at max_model_len with finish reason "length", as at max_tokens;
    # a prompt longer than max_model_len is refused, and the refusal is not retryable
    script = tmp_path / "cut.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, logging
        from prmtree.engine.errors import GenerationError
        from prmtree.engine.records import GenerationRequest
        from prmtree.engine.synthetic import generate_problems
        from prmtree.policies.prompts import PromptStyle, render
        from prmtree.policies.vllm_policy import VLLMPolicy

        async def main():
            model = {str(tiny_text_model)!r}
            request = GenerationRequest(generate_problems(1, seed=2)[0], (), n=4, max_tokens=64, seed=1)
            probe = VLLMPolicy(model, dtype="float32")
            prompt = len(probe.template_owner(render(probe.template_owner, request, PromptStyle(), multimodal=False),
                                              add_special_tokens=False)["input_ids"])
            policy = VLLMPolicy(model, dtype="float32", gpu_memory_utilization=0.2, max_model_len=prompt + 8,
                                engine_kwargs={{"enforce_eager": True}})
            out = await policy.generate(request)
            print("RESULT", [(c.num_tokens, c.finish_reason) for c in out])
            long = GenerationRequest(generate_problems(1, seed=2)[0], ("a longer step " * 8,), n=1, max_tokens=64,
                                     seed=1)
            try:
                await policy.generate(long)
            except GenerationError as refused:
                print("REFUSED", refused.retryable, str(refused))
            policy.close()

        if __name__ == "__main__":
            logging.basicConfig(level=logging.WARNING, format="%(message)s")
            asyncio.run(main())
    """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "(8, 'length')" in r.stdout
    assert r.stderr.count("the engine cut completions at its context window (max_model_len)") == 1
    # a prompt longer than the window: refused by vLLM, not retried (it was, max_attempts times)
    refused = next(line for line in r.stdout.splitlines() if line.startswith("REFUSED"))
    assert refused.startswith("REFUSED False vLLM refused the request: "), refused
    assert "maximum context length is" in refused or "longer than the maximum model length" in refused, refused


def test_a_failed_engine_start_is_tried_again_after_a_while_and_after_close(tiny_text_model, monkeypatch):
    # the review: a transient failure (a restarted Ray worker starting while its predecessor's
    # memory is still being freed) disabled the policy for the life of its process
    import asyncio

    pytest.importorskip("vllm")
    from vllm.v1.engine.async_llm import AsyncLLM

    from prmtree.engine.errors import GenerationError
    from prmtree.policies import vllm_policy
    from prmtree.policies.vllm_policy import VLLMPolicy

    starts = []

    def fails(cls, *args, **kwargs):
        starts.append(1)
        raise RuntimeError("Free memory on device is less than desired")

    monkeypatch.setattr(AsyncLLM, "from_engine_args", classmethod(fails))
    policy = VLLMPolicy(str(tiny_text_model), dtype="float32")

    def attempt():
        with pytest.raises(GenerationError) as err:
            asyncio.run(policy._get_engine())
        assert not err.value.retryable and "Free memory on device" in str(err.value)

    attempt()
    attempt()
    assert len(starts) == 1  # within START_RETRY_S: at once, not started again
    monkeypatch.setattr(vllm_policy, "START_RETRY_S", 0.0)
    attempt()
    assert len(starts) == 2  # past it: tried again
    monkeypatch.setattr(vllm_policy, "START_RETRY_S", 3600.0)
    policy.close()
    attempt()
    assert len(starts) == 3  # closed and opened again: tried again
