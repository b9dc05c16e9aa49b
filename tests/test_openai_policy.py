"""The OpenAI-compatible backend against vLLM's real server on 127.0.0.1, plus fault cases
against a small local HTTP server that misbehaves on purpose."""

import asyncio
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from conftest import free_port, starts_processes

import prmtree
from prmtree.engine.output import load_manifest, read_table
from prmtree.engine.synthetic import generate_problems
from prmtree.engine.errors import GenerationError
from prmtree.engine.records import GenerationRequest
from prmtree.policies.openai_policy import OpenAIPolicy
from prmtree.policies.simulated import SimulatedPolicy

PROBLEM = generate_problems(1, seed=5)[0]


@pytest.fixture(scope="module")
@starts_processes("vllm")
def vllm_server(tmp_path_factory, tiny_text_model):
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_text_model),
             "--served-model-name", "tiny", "--dtype", "float32", "--gpu-memory-utilization", "0.2",
             "--max-model-len", "1024", "--enforce-eager", "--no-enable-chunked-prefill", "--enable-prompt-tokens-details",
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=handle, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 240
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"vLLM server exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(1)
    else:
        proc.kill()
        pytest.fail(f"vLLM server not ready: {log.read_text()[-3000:]}")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def gen(policy, **kw):
    async def go():
        try:
            return await policy.generate(GenerationRequest(PROBLEM, **kw))
        finally:
            await policy.close()

    return asyncio.run(go())


@pytest.mark.vllm
def test_chat_continues_the_prefix_with_n_and_seed(vllm_server):
    policy = lambda: OpenAIPolicy(vllm_server, "tiny", send_images=False)
    a = gen(policy(), prefix=("x = 3.",), n=3, max_tokens=12, seed=7)
    b = gen(policy(), prefix=("x = 3.",), n=3, max_tokens=12, seed=7)
    c = gen(policy(), prefix=("x = 3.",), n=3, max_tokens=12, seed=8)
    assert len(a) == 3
    assert [x.text for x in a] == [x.text for x in b] != [x.text for x in c]
    assert [x.num_tokens for x in a] == [0, 0, 0]  # one total for 3 choices: each one's length is unknown
    assert a[0].prompt_tokens > 0
    assert 0 < gen(policy(), prefix=("x = 3.",), n=1, max_tokens=12, seed=7)[0].num_tokens <= 12
    step = gen(policy(), prefix=(), n=4, max_tokens=64, seed=1, next_step_only=True)
    assert all("\n\n" not in x.text for x in step)


@pytest.mark.vllm
def test_chat_and_local_completions_render_the_same_prompt(vllm_server, tiny_text_model):
    """The server renders the chat template itself; its prompt token count must match ours."""
    chat = gen(OpenAIPolicy(vllm_server, "tiny", send_images=False), prefix=("x = 3.", "x = 5."), n=1, max_tokens=4, seed=1)
    local = OpenAIPolicy(vllm_server, "tiny", endpoint="completions", tokenizer=str(tiny_text_model))
    path, body = local.body(GenerationRequest(PROBLEM, ("x = 3.", "x = 5."), n=1))
    assert path == "/v1/completions" and body["prompt"].endswith("x = 3.\n\nx = 5.\n\n")
    done = gen(local, prefix=("x = 3.", "x = 5."), n=2, max_tokens=4, seed=1)
    assert len(done) == 2
    assert done[0].prompt_tokens == chat[0].prompt_tokens


@pytest.mark.vllm
def test_prmtree_run_through_the_server(tmp_path, vllm_server):
    config = {"search": {"strategy": "mcts", "k": 2, "branching": 2, "budget": 12, "max_tokens": 12},
              "policy": {"name": "openai", "base_url": vllm_server, "model": "tiny", "send_images": False}}
    s = prmtree.run(generate_problems(2, seed=1), out=tmp_path, config=config)
    assert s.problems_done == 2 and s.problems_failed == 0 and s.rollouts > 0
    assert read_table(tmp_path, "nodes").num_rows >= 4


class Flaky(BaseHTTPRequestHandler):
    """Answers 429, then 503, then a valid chat completion; records what it saw."""

    seen: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Flaky.seen.append((self.headers.get("Authorization"), body))
        count = len(Flaky.seen)
        if count == 1:
            self.send_response(429)
            self.end_headers()
            self.wfile.write(b"slow down")
            return
        if count == 2:
            self.send_response(503)
            self.end_headers()
            return
        if body.get("model") == "bad":
            self.send_response(400)
            self.end_headers()
            self.wfile.write(b'{"error": "no such model"}')
            return
        choices = [{"index": i, "message": {"role": "assistant", "content": f"step {i}\n\n\\boxed{{1}}"},
                    "finish_reason": "length" if i == 1 else "stop"} for i in range(body["n"])]
        payload = json.dumps({"choices": choices, "usage": {"completion_tokens": 7, "prompt_tokens": 30,
                                                            "prompt_tokens_details": {"cached_tokens": 16}}})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky_server():
    Flaky.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_429_and_5xx_are_retryable_errors_then_it_succeeds(flaky_server, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-secret-123")
    policy = OpenAIPolicy(flaky_server, "m", api_key_env="MY_KEY")
    for status in (429, 503):  # one attempt per call: retrying is the driver's job
        with pytest.raises(GenerationError, match=f"HTTP {status}") as err:
            gen(policy, prefix=("a",), n=3, max_tokens=5, seed=9)
        assert err.value.retryable
    out = gen(policy, prefix=("a",), n=3, max_tokens=5, seed=9)
    assert len(Flaky.seen) == 3
    assert [c.finish_reason for c in out] == ["stop", "length", "stop"]
    assert [c.num_tokens for c in out] == [0, 0, 0]  # 7 tokens for 3 choices: each one's is unknown
    assert (out[0].cached_tokens, out[0].prompt_tokens, out[1].cached_tokens) == (16, 30, 0)
    auth, body = Flaky.seen[-1]
    assert auth == "Bearer sk-secret-123"
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["messages"][-1] == {"role": "assistant", "content": "a\n\n"}
    assert body["messages"][1]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert (body["n"], body["seed"], body["max_tokens"]) == (3, 9, 5)
    assert "sk-secret" not in repr(policy) and "sk-secret" not in str(vars(policy).get("base_url"))


def test_one_retry_layer_a_flaky_server_costs_the_drivers_attempts_only(flaky_server, tmp_path):
    config = {"policy": {"name": "openai", "base_url": flaky_server, "model": "m"},
              "search": {"k": 2, "budget": 2}, "executor": {"max_attempts": 3, "retry_backoff_s": 0.01}}
    s = prmtree.run(generate_problems(1), out=tmp_path, config=config)
    assert len(Flaky.seen) == 3  # 429, 503, then the answer: no retries stacked inside the backend
    assert (s.retries, s.problems_failed) == (2, 0)


def test_client_errors_are_not_retried(flaky_server, tmp_path):
    Flaky.seen = [None, None]  # skip the 429 and 503
    with pytest.raises(GenerationError, match="HTTP 400") as err:
        gen(OpenAIPolicy(flaky_server, "bad"), prefix=(), n=1)
    assert not err.value.retryable
    config = {"policy": {"name": "openai", "base_url": flaky_server, "model": "bad"},
              "executor": {"max_attempts": 5, "retry_backoff_s": 0.01}}
    s = prmtree.run(generate_problems(1), out=tmp_path, config=config)
    assert len(Flaky.seen) == 4  # one more request, not five
    assert s.problems_failed == 1 and s.retries == 0
    assert "HTTP 400" in next(iter(load_manifest(tmp_path / "manifest.json").failed.values()))


def test_connection_errors_are_retryable():
    port = free_port()  # nothing listens here
    t = time.perf_counter()
    with pytest.raises(GenerationError, match="ConnectError") as err:
        gen(OpenAIPolicy(f"http://127.0.0.1:{port}", "m"), prefix=(), n=1)
    assert err.value.retryable
    assert time.perf_counter() - t < 5


def test_unreachable_server_fails_problems_for_a_later_retry(tmp_path):
    config = {"policy": {"name": "openai", "base_url": f"http://127.0.0.1:{free_port()}", "model": "m"},
              "executor": {"max_attempts": 2, "retry_backoff_s": 0.01}}
    s = prmtree.run(generate_problems(2), out=tmp_path, config=config)
    assert s.problems_failed == 2 and s.retry_pending == 2
    reasons = list(load_manifest(tmp_path / "manifest.json").failed.values())
    assert len(reasons) == 2 and all("ConnectError" in r and "after 2 attempts" in r for r in reasons)
    assert dict(s.failure_reasons) == {"GenerationError": 2}


class Odd(BaseHTTPRequestHandler):
    """Valid but unusual replies, chosen by the request's model name; paths are recorded."""

    paths: list[str] = []
    finish = {"abort": "abort", "eos": "eos_token", "nofinish": None, "length": "length"}  # finish_reason by model

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Odd.paths.append(self.path)
        if self.path != "/v1/chat/completions":
            self.send_response(404)
            self.end_headers()
            return
        text = "step\n\n\\boxed{1}"
        kind = body["model"]
        content = [{"type": "text", "text": "step\n\n"}, {"type": "text", "text": "\\boxed{1}"}] if kind == "parts" else text
        choices = [{"index": None if kind == "noindex" else i, "message": {"role": "assistant", "content": content},
                    "finish_reason": Odd.finish.get(kind, "stop")} for i in range(body["n"])]
        if kind == "one":  # a server that ignores n
            choices = choices[:1]
        if kind == "nofinish":
            del choices[0]["finish_reason"]
        if kind == "filtered":
            choices[-1]["finish_reason"] = "content_filter"
        usage = {"completion_tokens": "12.5" if kind == "strtokens" else -3 if kind == "negative" else 4}
        if kind == "length":  # each choice wrote max_tokens (fewer: the server's context cut it, refused)
            usage["completion_tokens"] = body["max_tokens"] * body["n"]
        payload = [choices] if kind == "list" else {"choices": choices, "usage": usage}
        if kind == "errorbody":  # a failure reported with HTTP 200
            payload = {"error": {"message": "engine overloaded " + "x" * 500, "code": 503}}
        if kind == "nullchoices":
            payload = {"choices": None, "error": "upstream timed out"}
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(payload).encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def odd_server():
    Odd.paths = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Odd)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_unusual_but_valid_replies_and_a_base_url_ending_in_v1(odd_server):
    # Before: content as parts broke the contract, index null / a count as a string raised
    # TypeError / ValueError, a JSON list an AttributeError; base_url=".../v1" (the SDK's
    # convention) posted to /v1/v1/... and every request failed with HTTP 404.
    url = odd_server
    for kind, tokens in (("parts", 4), ("noindex", 4), ("strtokens", 12), ("negative", 0)):
        out = gen(OpenAIPolicy(url + "/v1/", kind), prefix=(), n=2)
        assert [c.text for c in out] == ["step\n\n\\boxed{1}"] * 2, kind
        assert gen(OpenAIPolicy(url, kind), prefix=(), n=1)[0].num_tokens == tokens, kind
    with pytest.raises(GenerationError, match="answered JSON that is no object") as err:
        gen(OpenAIPolicy(url, "list"), prefix=(), n=1)
    assert err.value.retryable
    assert set(Odd.paths) == {"/v1/chat/completions"}
    Odd.paths = []
    with pytest.raises(GenerationError, match=rf"{url}/v2/v1/chat/completions answered HTTP 404"):
        gen(OpenAIPolicy(url + "/v2", "m"), prefix=(), n=1)  # a 404 names the whole URL


def test_a_choice_the_server_cut_off_is_a_retryable_failure_not_a_wrong_answer(odd_server, tmp_path):
    # Before: every finish_reason but "length" became "stop", so vLLM's "abort" (and
    # "error", "content_filter") fragments were graded as wrong answers, counted nowhere.
    for kind, shown, count in (("abort", "abort", "2 of 2"), ("filtered", "content_filter", "1 of 2")):
        with pytest.raises(GenerationError, match=f"finish_reason '{shown}' for {count} choices") as err:
            gen(OpenAIPolicy(odd_server, kind), prefix=(), n=2)
        assert err.value.retryable
    for kind, reason in (("eos", "stop"), ("nofinish", "stop"), ("length", "length")):  # natural ends, as before
        assert [c.finish_reason for c in gen(OpenAIPolicy(odd_server, kind), prefix=(), n=2)] == [reason] * 2, kind
    config = {"policy": {"name": "openai", "base_url": odd_server, "model": "abort"},
              "search": {"k": 2, "budget": 2}, "executor": {"max_attempts": 3, "retry_backoff_s": 0.01}}
    s = prmtree.run(generate_problems(1), out=tmp_path, config=config)
    assert (s.problems_done, s.problems_failed, s.retries, s.rollouts) == (0, 1, 2, 0)
    reason = next(iter(load_manifest(tmp_path / "manifest.json").failed.values()))
    assert "finish_reason 'abort'" in reason and "after 3 attempts" in reason


def test_a_200_answer_without_choices_is_retryable_and_keeps_the_servers_message(odd_server):
    # Before: "returned no choices", not retryable, the server's message dropped.
    with pytest.raises(GenerationError) as err:
        gen(OpenAIPolicy(odd_server, "errorbody"), prefix=(), n=2)
    assert err.value.retryable
    assert str(err.value) == "/v1/chat/completions returned no choices: engine overloaded " + "x" * 282
    with pytest.raises(GenerationError) as err:
        gen(OpenAIPolicy(odd_server, "nullchoices"), prefix=(), n=2)
    assert err.value.retryable
    assert str(err.value) == "/v1/chat/completions returned no choices: upstream timed out"


class Simulating(BaseHTTPRequestHandler):
    """A chat server whose model is the simulated policy: it rebuilds the request from the
    body and answers the simulated texts with one total ``completion_tokens`` for all
    choices, as OpenAI-compatible servers do: the true total, ten times it, or ``"lots"``,
    chosen by the model name."""

    problems: dict = {}
    policy = SimulatedPolicy()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        chat = body["messages"]
        user = next(m["content"] for m in chat if m["role"] == "user")
        question = user if isinstance(user, str) else "".join(p.get("text", "") for p in user if p["type"] == "text")
        prefix = tuple(chat[-1]["content"][: -len("\n\n")].split("\n\n")) if chat[-1]["role"] == "assistant" else ()
        request = GenerationRequest(Simulating.problems[question], prefix, body["n"], body["max_tokens"],
                                    body["temperature"], body["top_p"], body["seed"], "stop" in body)
        out = Simulating.policy.complete(request)
        choices = [{"index": i, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason}
                   for i, c in enumerate(out)]
        total = sum(c.num_tokens for c in out)
        total = {"true": total, "tenfold": 10 * total, "lots": "lots"}[body["model"]]
        payload = json.dumps({"choices": choices, "usage": {"completion_tokens": total}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


class SimulatedWithoutLengths(SimulatedPolicy):
    """The simulated policy as a server reports it: one choice's length is known, n
    choices' lengths are not (0: the engine estimates each from its text)."""

    async def generate(self, request):
        out = await super().generate(request)
        if request.n > 1:
            out[0].shared_tokens = sum(c.num_tokens for c in out)  # the total, counted once
            for c in out:
                c.num_tokens = 0
        return out


def test_rows_through_the_server_do_not_depend_on_a_shared_token_total(tmp_path):
    # Before: one completion_tokens total for n choices was shared evenly, so every choice
    # had the same made-up length and OmegaPRM's preference for short rollouts was lost:
    # the rows changed with the total the server reported ("lots" changed them again).
    problems = generate_problems(4, seed=3)
    Simulating.problems = {p.question: p for p in problems}
    server = ThreadingHTTPServer(("127.0.0.1", 0), Simulating)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    columns = ["problem_id", "path_id", "completions", "labels", "values", "final_correct"]

    def rows(out, policy):
        s = prmtree.run(problems, policy=policy, out=out, config={"search": {"strategy": "omega", "budget": 24}}, seed=11)
        assert s.problems_done == 4 and s.problems_failed == 0
        got = sorted(read_table(out, "steps").select(columns).to_pylist(), key=lambda r: (r["problem_id"], r["path_id"]))
        return got, s.tokens

    try:
        expected, tokens = rows(tmp_path / "simulated", SimulatedWithoutLengths())
        assert tokens > 0
        counted = {}
        for model in ("true", "tenfold", "lots"):
            got, counted[model] = rows(tmp_path / model, OpenAIPolicy(url, model))
            assert got == expected, model
        # the server's totals still add up in the run's token count (counted once per request)
        assert counted == {"true": tokens, "tenfold": 10 * tokens, "lots": 0}
    finally:
        server.shutdown()


def test_connection_limits_that_cannot_work_are_refused_at_load_in_one_line(tmp_path, capsys):
    # Before: max_concurrency=0 / -1 and timeout_s=0 / -1 were accepted, then every request
    # waited out its timeout or failed with a bare "ConnectTimeout: ".
    from prmtree.cli import main
    from prmtree.engine.synthetic import write_jsonl

    data = write_jsonl(generate_problems(1, seed=1), tmp_path / "in")
    for arg, value, rule in (("timeout_s", "0", "a number of seconds > 0"), ("timeout_s", "-1", "a number of seconds > 0"),
                             ("max_concurrency", "0", "a whole number >= 1"), ("max_concurrency", "-1", "a whole number >= 1")):
        with pytest.raises(SystemExit) as exit_:
            main(["run", "--input", str(data), "--out", str(tmp_path / f"o{arg}{value}"), "--policy", "openai",
                  "--policy-arg", f"base_url=http://127.0.0.1:{free_port()}", "--policy-arg", "model=m",
                  "--policy-arg", f"{arg}={value}", "--no-progress"])
        assert exit_.value.code == 2
        assert capsys.readouterr().err.strip() == f"prmtree: error: cannot build policy 'openai': {arg} must be {rule}, got {value}"
    OpenAIPolicy("http://127.0.0.1:1", "m", max_concurrency=1, timeout_s=0.5)  # the smallest that work


def test_a_server_that_ignores_n_is_named_as_such(odd_server, tmp_path):
    # Before: the engine's contract check said "openai.generate returned 1 completions for
    # n=3" and the run's advice was to run the same command again, which cannot help.
    with pytest.raises(GenerationError) as err:
        gen(OpenAIPolicy(odd_server, "one"), prefix=(), n=3)
    assert not err.value.retryable
    assert str(err.value) == ("/v1/chat/completions returned 1 choice for n=3: the server may not support n (several "
                              "completions per request); serve the model with one that does (vLLM, SGLang), "
                              "rerunning will not help")
    config = {"policy": {"name": "openai", "base_url": odd_server, "model": "one"},
              "search": {"k": 3, "budget": 3}, "executor": {"max_attempts": 3, "retry_backoff_s": 0.01}}
    s = prmtree.run(generate_problems(1), out=tmp_path, config=config)
    assert (s.problems_failed, s.retries) == (1, 0)
    assert "the server may not support n" in next(iter(load_manifest(tmp_path / "manifest.json").failed.values()))
