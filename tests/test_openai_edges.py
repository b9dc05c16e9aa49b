"""The OpenAI-compatible backend against a small server on 127.0.0.1 that misbehaves on
purpose: a choice with no text, a null entry among the choices, 429 with Retry-After, a
server that serves only a few requests at once, a reply that trickles in."""

from __future__ import annotations

import asyncio
import email.utils
import json
import pickle
import threading
import time
import types
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

import prmtree
from prmtree.engine import driver as driver_module
from prmtree.engine.breaker import RETRY_AFTER_MAX_S, CircuitBreaker
from prmtree.engine.errors import BackendDownError, GenerationError
from prmtree.engine.output import load_manifest, read_table
from prmtree.engine.records import GenerationRequest
from prmtree.engine.synthetic import generate_problems
from prmtree.policies.openai_policy import OpenAIPolicy, retry_after_s, server_error
from prmtree.policies.simulated import SimulatedPolicy

PROBLEM = generate_problems(1, seed=5)[0]
NO_PILOT = {"labels": {"learn_floor": False}}


class Handler(BaseHTTPRequestHandler):
    """Hands each request to its server's ``plan(handler, body, seq)``; counts requests
    and those in flight, and logs (seq, start time, status) and each body."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server = self.server
        with server.lock:
            server.seq += 1
            seq = server.seq
            server.bodies.append(body)
            server.inflight += 1
            inflight = server.inflight
        started = time.perf_counter()
        status = None
        try:
            status = server.plan(self, body, seq, inflight)
        except ConnectionError:  # the client gave up on a slow reply
            status = -1
        finally:
            with server.lock:
                server.inflight -= 1
                server.log.append((seq, started, status, body.get("model")))

    def send(self, status, payload, headers=None, drip=None):
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if drip is None:
            self.wfile.write(raw)
            return status
        size, pause = drip
        for at in range(0, len(raw), size):  # a reply that trickles in: each read is quick
            self.wfile.write(raw[at:at + size])
            self.wfile.flush()
            time.sleep(pause)
        return status

    def log_message(self, *args):
        pass


def text_of(body):
    """A correct two-step answer to the request's question (every choice the same)."""
    user = next(m["content"] for m in body["messages"] if m["role"] == "user")
    question = user if isinstance(user, str) else "".join(p.get("text", "") for p in user if p["type"] == "text")
    problem = QUESTIONS.get(question)
    answer = problem.answer if problem is not None else "1"
    return f"Work it out.\n\n\\boxed{{{answer}}}"


QUESTIONS: dict = {}


def answer(handler, body, choices=None, status=200, headers=None, drip=None):
    if choices is None:
        choices = [{"index": i, "message": {"role": "assistant", "content": text_of(body)}, "finish_reason": "stop"}
                   for i in range(body["n"])]
    return handler.send(status, {"choices": choices, "usage": {"completion_tokens": 5 * len(choices)}}, headers, drip)


@pytest.fixture
def serve():
    servers = []

    def start(plan):
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.plan, server.lock, server.seq, server.inflight, server.log = plan, threading.Lock(), 0, 0, []
        server.bodies = []  # every request's body, as sent
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server, f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def gen(policy, n=2, **kw):
    async def go():
        try:
            return await policy.generate(GenerationRequest(PROBLEM, (), n=n, **kw))
        finally:
            await policy.close()

    return asyncio.run(go())


def run(problems, url, out, **config):
    QUESTIONS.update({p.question: p for p in problems})
    config = {**NO_PILOT, "search": {"k": 2, "budget": 4},
              "policy": {"name": "openai", "base_url": url, "model": "m", "send_images": False}, **config}
    return prmtree.run(problems, out=out, config=config, seed=3)


def steps(out):
    return sorted(repr(r) for r in read_table(out, "steps").drop_columns(["images"]).to_pylist())


# -- 1. a choice with no text ------------------------------------------------------------


def no_text(handler, body, seq, inflight):
    """Chat choices with no text, chosen by the model name; /v1/completions choices too."""
    kind = body["model"]
    if handler.path == "/v1/completions":
        choices = [{"index": i, "text": "x\n\n\\boxed{1}", "finish_reason": "stop"} for i in range(body["n"])]
        del choices[0]["text"]
        return answer(handler, body, choices)
    choices = [{"index": i, "message": {"role": "assistant", "content": "x\n\n\\boxed{1}"}, "finish_reason": "stop"}
               for i in range(body["n"])]
    message = choices[-1]["message"]
    if kind == "null":
        message["content"] = None
    elif kind == "refusal":
        message.update(content=None, refusal="I can't help with that.")
    elif kind == "reasoning":
        message.update(content=None, reasoning_content="Let me think")
    elif kind == "thinking-cut":  # max_tokens ran out while a reasoning model was still thinking
        message.update(content=None, reasoning_content="Let me think about the bars")
        choices[-1]["finish_reason"] = "length"
    elif kind == "nomessage":
        del choices[-1]["message"]
    elif kind == "nomessage-cut":
        del choices[-1]["message"]
        choices[-1]["finish_reason"] = "length"
    elif kind == "empty":
        message["content"] = ""
    elif kind == "imageonly":
        message["content"] = [{"type": "image_url", "image_url": {"url": "data:,"}}]
    return answer(handler, body, choices)


def test_a_choice_with_no_text_is_a_retryable_failure_not_an_empty_rollout(serve):
    # Before: content null, a choice without a message, or without text on /v1/completions
    # became "" (an empty, wrong rollout): step values dropped, exit 0, no warning.
    _, url = serve(no_text)
    for kind, why in (("null", "content null"), ("nomessage", "no message"),
                      ("refusal", "content null; the message has refusal"),
                      ("reasoning", "content null; the message has reasoning_content"),
                      ("imageonly", "content is no text")):
        with pytest.raises(GenerationError) as err:
            gen(OpenAIPolicy(url, kind))
        assert err.value.retryable, kind
        assert str(err.value) == (f"/v1/chat/completions returned no text for 1 of 2 choices ({why}): "
                                  "nothing the model wrote to grade"), kind
    completions = OpenAIPolicy(url, "m")
    completions.endpoint = "completions"  # without a tokenizer: the body is all that needs one
    completions.body = lambda request: ("/v1/completions", {"model": "m", "n": request.n})
    with pytest.raises(GenerationError, match=r"returned no text for 1 of 2 choices \(no text\)") as err:
        gen(completions)
    assert err.value.retryable
    # an empty string is the model's own answer: a wrong rollout, as the README says
    assert [c.text for c in gen(OpenAIPolicy(url, "empty"))] == ["x\n\n\\boxed{1}", ""]
    # cut at max_tokens before any text: a truncated rollout (the same seed would cut it again)
    cut = gen(OpenAIPolicy(url, "thinking-cut"))
    assert [(c.text, c.finish_reason) for c in cut] == [("x\n\n\\boxed{1}", "stop"), ("", "length")]


def test_choices_cut_while_thinking_are_truncated_rollouts_and_the_run_warns(serve, tmp_path):
    from prmtree.summary import label_warnings

    def thinking_cut(handler, body, seq, inflight):  # every request's last choice ran out of tokens thinking
        choices = [{"index": i, "message": {"role": "assistant", "content": text_of(body)}, "finish_reason": "stop"}
                   for i in range(body["n"])]
        choices[-1].update(message={"role": "assistant", "content": None, "reasoning_content": "Let me"},
                           finish_reason="length")
        return answer(handler, body, choices)

    _, url = serve(thinking_cut)
    s = run(generate_problems(3, seed=4), url, tmp_path)
    assert (s.problems_done, s.problems_failed, s.retries) == (3, 0, 0)  # before: every problem failed, by name
    assert s.truncated_by_length == s.rollouts // 2 and s.malformed_rollouts == {"truncated": s.rollouts // 2}
    [warning] = [w for w in label_warnings(s) if "max_tokens" in w]
    assert warning.startswith(f"{s.rollouts // 2:,} of {s.rollouts:,} rollouts (50%) were cut at [search] max_tokens")
    # with no message at all it is still no answer the model wrote: a retryable failure
    with pytest.raises(GenerationError, match=r"no text for 1 of 2 choices \(no message\)") as err:
        gen(OpenAIPolicy(url_of_no_text(serve), "nomessage-cut"))
    assert err.value.retryable


def test_reasoning_split_off_by_the_server_is_said_once_and_the_content_is_graded(serve, caplog):
    # Before: a server started with a reasoning parser moved the model's reasoning into
    # reasoning_content; the run labelled the summaries in `content` and said nothing.
    def split(key):
        def plan(handler, body, seq, inflight):
            choices = [{"index": i, "message": {"role": "assistant", "content": text_of(body),
                                                key: "Let me count the bars first."},
                        "finish_reason": "stop"} for i in range(body["n"])]
            return answer(handler, body, choices)
        return plan

    for key in ("reasoning_content", "reasoning"):
        caplog.clear()
        policy = OpenAIPolicy(serve(split(key))[1], "m")

        async def twice():
            try:
                return [await policy.generate(GenerationRequest(PROBLEM, (), n=2)) for _ in range(2)]
            finally:
                await policy.close()

        first, second = asyncio.run(twice())
        assert [c.text for c in first + second] == ["Work it out.\n\n\\boxed{1}"] * 4
        [warning] = [r.getMessage() for r in caplog.records if "reasoning parser" in r.getMessage()]
        assert warning.startswith(f"prmtree: the server put the model's reasoning in `{key}`, apart from `content`")
        assert "serve the model without --reasoning-parser" in warning
    caplog.clear()
    gen(OpenAIPolicy(serve(lambda handler, body, seq, inflight: answer(handler, body))[1], "m"))
    assert not [r for r in caplog.records if "reasoning parser" in r.getMessage()]  # none without the split


def test_choices_the_servers_context_window_cut_short_are_said_once_naming_it(serve, tmp_path, caplog):
    # Before: vLLM cut max_tokens to what its --max-model-len left after the prompt, every
    # rollout came back truncated, and the run's only word advised raising max_tokens
    # (which changes nothing); the problems were kept as "root all wrong".
    def clamped(handler, body, seq, inflight):
        choices = [{"index": i, "message": {"role": "assistant", "content": "Work it"}, "finish_reason": "length"}
                   for i in range(body["n"])]
        return handler.send(200, {"choices": choices, "usage": {"completion_tokens": 14 * body["n"],
                                                                "prompt_tokens": 86}})

    _, url = serve(clamped)
    policy = OpenAIPolicy(url, "m")

    async def twice():
        try:
            return [await policy.generate(GenerationRequest(PROBLEM, (), n=2, max_tokens=64)) for _ in range(2)]
        finally:
            await policy.close()

    first, second = asyncio.run(twice())
    assert [(c.text, c.finish_reason) for c in first + second] == [("Work it", "length")] * 4  # still truncated
    [said] = [r.getMessage() for r in caplog.records if "context window" in r.getMessage()]
    assert said.startswith("prmtree: the server cut completions at its context window, not at max_tokens (28 tokens "
                           "written for 2 choices where 64 were asked per choice, after a prompt of 86 tokens)")
    assert "--max-model-len" in said and "[labels.judge]" in said and "--force" in said
    caplog.clear()

    def at_max_tokens(handler, body, seq, inflight):  # cut by max_tokens itself (or max_completion_tokens)
        choices = [{"index": 0, "message": {"role": "assistant", "content": "Work it"}, "finish_reason": "length"}]
        asked = min(v for v in (body["max_tokens"], body.get("max_completion_tokens", 10**9)))
        return handler.send(200, {"choices": choices, "usage": {"completion_tokens": asked}})

    url = serve(at_max_tokens)[1]
    [cut] = gen(OpenAIPolicy(url, "m"), n=1, max_tokens=64)
    assert (cut.text, cut.finish_reason, cut.num_tokens) == ("Work it", "length", 64)
    gen(OpenAIPolicy(url, "m", extra_body={"max_completion_tokens": 16}), n=1, max_tokens=64)
    assert not [r for r in caplog.records if "context window" in r.getMessage()]


def test_a_server_that_cannot_be_reached_is_named_with_its_address(tmp_path):
    with pytest.raises(GenerationError, match=r"^http://127\.0\.0\.1:9/v1/chat/completions: ConnectError"):
        gen(OpenAIPolicy("http://127.0.0.1:9/v1", "m"))


def test_requests_neutralise_the_servers_model_sampling_defaults_unless_asked_not_to():
    # Before: vLLM served Qwen2-VL's generation_config.json (top_k = 1, a repetition penalty)
    # as the defaults of what the request left out: k rollouts, one greedy completion k times.
    from prmtree.policies.openai_policy import NEUTRAL_SAMPLING

    request = GenerationRequest(PROBLEM, ("x = 3.",), n=4, temperature=0.7, top_p=0.95)
    _, body = OpenAIPolicy("http://127.0.0.1:9", "m").body(request)
    assert {k: body[k] for k in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")} == {
        "temperature": 0.7, "top_p": 0.95, "top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0}
    _, body = OpenAIPolicy("http://127.0.0.1:9", "m", model_sampling=True).body(request)
    assert not NEUTRAL_SAMPLING.keys() & body.keys() and body["temperature"] == 0.7
    _, body = OpenAIPolicy("http://127.0.0.1:9", "m", extra_body={"top_k": 20}).body(request)
    assert body["top_k"] == 20 and body["min_p"] == 0.0


def test_images_sent_to_no_model_are_said_once(caplog):
    # Before: a text-only model (or send_images = false) answered image problems from their
    # text alone, and nothing said so: the rows kept images the labels never saw.
    from prmtree.policies import prompts

    prompts._images_dropped_said = False
    request = GenerationRequest(PROBLEM, (), n=1)
    assert PROBLEM.images
    for _ in range(3):
        OpenAIPolicy("http://127.0.0.1:9", "m", send_images=False).body(request)
    said = [r.getMessage() for r in caplog.records if "takes no images" in r.getMessage()]
    assert said == ["prmtree: a model here takes no images (a text-only model, send_images = false, or the openai "
                    "policy's completions endpoint): problems with images are answered from their text alone, and "
                    "their rows keep images the labels never saw"]
    prompts._images_dropped_said = False
    caplog.clear()
    OpenAIPolicy("http://127.0.0.1:9", "m").body(request)  # images sent: nothing to say
    assert not [r for r in caplog.records if "takes no images" in r.getMessage()]


def test_a_server_refusing_the_neutral_sampling_fields_is_asked_again_without_them(serve, tmp_path, caplog):
    # the review: transformers serve answers 422 "Unexpected fields in the request: {'top_k', ...}"
    # (OpenAI 400s them): every request failed, not retried
    def strict(handler, body, seq, inflight):
        unexpected = {"top_k", "min_p", "repetition_penalty"} & body.keys()
        if unexpected:
            return handler.send(422, {"detail": f"Unexpected fields in the request: {unexpected}"})
        return answer(handler, body)

    server, url = serve(strict)
    s = run(generate_problems(2, seed=4), url, tmp_path)
    assert (s.problems_done, s.problems_failed) == (2, 0)
    refused = [entry for entry in server.log if entry[2] == 422]
    assert 1 <= len(refused) <= 2  # the requests in flight when the first refusal came (two trees)
    said = [r.getMessage() for r in caplog.records if "the server refuses" in r.getMessage()]
    assert len(said) == 1 and "top_k" in said[0] and "min_p" in said[0]
    _, same = serve(lambda handler, body, seq, inflight: answer(handler, body))
    run(generate_problems(2, seed=4), same, tmp_path / "same")
    assert steps(tmp_path) == steps(tmp_path / "same")  # the rows of a server that takes them


def url_of_no_text(serve):
    return serve(no_text)[1]


def test_a_run_retries_a_reply_with_a_null_content_and_writes_the_clean_runs_rows(serve, tmp_path):
    problems = generate_problems(2, seed=4)
    _, clean = serve(lambda handler, body, seq, inflight: answer(handler, body))

    def first_null(handler, body, seq, inflight):
        choices = [{"index": i, "message": {"role": "assistant", "content": text_of(body)}, "finish_reason": "stop"}
                   for i in range(body["n"])]
        if seq == 1:
            choices[0]["message"]["content"] = None
        return answer(handler, body, choices)

    _, flaky = serve(first_null)
    executor = {"executor": {"retry_backoff_s": 0.01}}
    a = run(problems, clean, tmp_path / "clean", **executor)
    b = run(problems, flaky, tmp_path / "flaky", **executor)
    assert (a.problems_failed, b.problems_failed, a.retries, b.retries) == (0, 0, 0, 1)
    assert "empty" not in load_manifest(tmp_path / "flaky" / "manifest.json").stats.get("malformed_rollouts", {})
    assert steps(tmp_path / "flaky") == steps(tmp_path / "clean")


# -- 2. Retry-After ------------------------------------------------------------------------


def test_retry_after_is_read_in_seconds_as_a_date_or_in_ms():
    headers = httpx.Headers
    assert retry_after_s(headers({"Retry-After": "8"})) == 8.0
    assert retry_after_s(headers({"retry-after": " 1.5 "})) == 1.5
    assert retry_after_s(headers({"retry-after-ms": "250", "Retry-After": "1"})) == 0.25
    soon = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 27 <= retry_after_s(headers({"Retry-After": soon})) <= 30
    assert retry_after_s(headers({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0  # a date past
    for value in ("soon", "", "nan", "inf"):
        assert retry_after_s(headers({"Retry-After": value})) is None, value
    assert retry_after_s(headers({})) is None
    error = server_error("/v1/chat/completions", 429, "slow down", headers({"Retry-After": "3"}))
    assert (error.retry_after, error.retryable, error.overloaded) == (3.0, True, True)
    assert str(error) == "/v1/chat/completions answered HTTP 429 (Retry-After: 3 s): slow down"
    assert pickle.loads(pickle.dumps(error)).retry_after == 3.0  # it crosses a process (Ray)
    assert server_error("/p", 400, "bad", headers({"Retry-After": "3"})).retry_after is None  # 429 / 503 only
    assert server_error("/p", 429, "slow down").retry_after is None


@pytest.mark.parametrize("body", [
    '{"error": {"message": "Request too large for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, '
    'Requested 45000.", "type": "tokens", "code": "rate_limit_exceeded"}}',
    '{"error": {"message": "You exceeded your current quota.", "type": "insufficient_quota", '
    '"code": "insufficient_quota"}}',
])
def test_a_429_that_no_wait_can_pass_is_not_retried(serve, tmp_path, body):
    # Before: read as busy, retried with backoff (and forgiven while other requests passed:
    # minutes per request) to fail the same way
    error = server_error("/v1/chat/completions", 429, body, httpx.Headers({"Retry-After": "3"}))
    assert (error.retryable, error.overloaded, error.retry_after) == (False, False, None)
    assert str(error).startswith("/v1/chat/completions answered HTTP 429 (no retry can pass it): ")
    assert not driver_module.said_busy(error) and not driver_module.overloaded(error)
    assert server_error("/p", 429, "Rate limit reached for requests").retryable  # a plain rate limit waits
    assert driver_module.said_busy(server_error("/p", 529, "overloaded_error"))  # a status of its own, said in words


def test_the_driver_waits_as_long_as_retry_after_says(serve, tmp_path):
    # Before: Retry-After was ignored, the retry came after the driver's own backoff (here 10 ms).
    def once(handler, body, seq, inflight):
        if seq == 1:
            return handler.send(429, {"error": {"message": "rate limited"}}, {"Retry-After": "1"})
        return answer(handler, body)

    server, url = serve(once)
    s = run(generate_problems(1, seed=4), url, tmp_path, executor={"retry_backoff_s": 0.01, "max_attempts": 2})
    assert (s.problems_done, s.problems_failed, s.retries) == (1, 0, 1)
    (_, first, status, _), (_, second, _, _) = sorted(server.log)[:2]
    assert status == 429 and second - first >= 0.95


def test_429s_with_retry_after_do_not_trip_the_breaker(serve, tmp_path):
    # Before: a server rate-limiting for a moment ("429, Retry-After: 1") tripped the breaker
    # (exit 1, "the backend is down") once breaker_window requests were refused.
    began = []

    def window(handler, body, seq, inflight):
        if not began:
            began.append(time.perf_counter())
        if time.perf_counter() - began[0] < 0.5:
            return handler.send(429, {"error": {"message": "rate limit window"}}, {"Retry-After": "1"})
        return answer(handler, body)

    server, url = serve(window)
    config = {"executor": {"retry_backoff_s": 0.01, "max_attempts": 3, "breaker_window": 3}}
    s = run(generate_problems(6, seed=4), url, tmp_path, **config)
    assert (s.problems_done, s.problems_failed) == (6, 0)
    assert Counter(status for *_, status, _ in server.log)[429] >= 3  # a window's worth: more than the breaker's


def test_the_breaker_still_counts_429s_without_retry_after_or_with_too_long_a_wait():
    for error in (GenerationError("HTTP 429: slow down"),
                  GenerationError("HTTP 429", retry_after=RETRY_AFTER_MAX_S + 1),
                  GenerationError("HTTP 429", retry_after=0.0)):
        breaker = CircuitBreaker(3)
        breaker.record(error)
        breaker.record(error)
        with pytest.raises(BackendDownError):
            breaker.record(error)
    breaker = CircuitBreaker(3)
    breaker.record(GenerationError("HTTP 500"))
    breaker.record(GenerationError("HTTP 500"))
    for _ in range(10):  # asked to wait: neither a failure nor a success
        breaker.record(GenerationError("HTTP 429", retry_after=2))
    assert breaker.failures_in_a_row == 2
    with pytest.raises(BackendDownError):
        breaker.record(GenerationError("HTTP 500"))


# -- 3. the adaptive concurrency settles against a small server -------------------------


def settle(monkeypatch, capacity, n, rounds=300, latency_s=0.3):
    """The limit against a server that serves ``capacity`` sequences and refuses the rest,
    round trip by round trip (a clock that moves one latency each): the share of
    requests refused once it settled, and the limits it took."""
    now = [0.0]
    monkeypatch.setattr(driver_module, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    c = driver_module.Concurrency(None)
    sent = refused = 0
    limits = set()
    for round_trip in range(rounds):
        requests = max(1, c.limit // n)
        served = min(requests, max(1, capacity // n))
        for _ in range(requests - served):
            c.overload()
        for _ in range(served):
            c.completed(n, latency_s)
        now[0] += latency_s
        if round_trip >= 50:
            sent, refused = sent + requests, refused + requests - served
            limits.add(c.limit)
    return refused / sent, limits


def test_aimd_settles_against_a_small_server(monkeypatch):
    # Before: the additive step was a fixed 16 sequences, a doubling at 16: the limit went
    # 16 -> 32 -> (429s) -> 16 -> 32 every round trip, and half the requests were refused.
    share, limits = settle(monkeypatch, 16, 4)
    assert share < 0.1 and max(limits) <= 24
    share, _ = settle(monkeypatch, 64, 4)
    assert share < 0.05
    # additive relative to the limit; from 128 sequences up it grows by step (16), as before
    steps = [driver_module.Concurrency(None, start=limit).additive_step() for limit in (4, 16, 64, 128, 1000)]
    assert steps == [1, 2, 8, 16, 16]


def simulated(body):
    """The simulated policy's choices for a chat body (the request rebuilt from it)."""
    chat = body["messages"]
    user = next(m["content"] for m in chat if m["role"] == "user")
    question = user if isinstance(user, str) else "".join(p.get("text", "") for p in user if p["type"] == "text")
    prefix = tuple(chat[-1]["content"][: -len("\n\n")].split("\n\n")) if chat[-1]["role"] == "assistant" else ()
    request = GenerationRequest(QUESTIONS[question], prefix, body["n"], body["max_tokens"], body["temperature"],
                                body["top_p"], body["seed"], "stop" in body)
    return [{"index": i, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason}
            for i, c in enumerate(SimulatedPolicy().complete(request))]


def capped(capacity, latency_s):
    """A server of the simulated policy that serves ``capacity`` requests at once (each
    ``latency_s``) and answers 429 to any beyond (no Retry-After)."""

    def plan(handler, body, seq, inflight):
        if inflight > capacity:
            return handler.send(429, {"error": {"message": "too many requests"}})
        time.sleep(latency_s)
        return answer(handler, body, simulated(body))

    return plan


def test_a_server_at_capacity_sees_few_429s_and_loses_no_problem(serve, tmp_path):
    # Before: ~30% of requests were 429s for the whole run (the limit overshot every other
    # round trip), and problems were lost to "HTTP 429 (after 3 attempts)".
    server, url = serve(capped(4, 0.02))  # 16 sequences at n=4
    s = run(generate_problems(16, seed=4), url, tmp_path,
            search={"k": 4, "budget": 24}, executor={"retry_backoff_s": 0.05})
    assert (s.problems_done, s.problems_failed) == (16, 0)
    log = sorted(server.log)
    later = [status for _, _, status, _ in log[len(log) // 3:]]  # past the first probe (old: 15-19% were 429s)
    assert later.count(429) / len(later) < 0.1, Counter(later)


def refusing_one_question(question, refusals, latency_s):
    """A server that answers 429 (no Retry-After) to ``question``'s first ``refusals``
    requests, each after ``latency_s``, and serves every other request."""
    asked = Counter()

    def plan(handler, body, seq, inflight):
        time.sleep(latency_s)
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        text = user if isinstance(user, str) else "".join(p.get("text", "") for p in user if p["type"] == "text")
        with handler.server.lock:
            asked[text] += 1
            refuse = text == question and asked[text] <= refusals
        if refuse:
            return handler.send(429, {"error": {"message": "too many requests"}})
        return answer(handler, body, simulated(body))

    return plan


@pytest.mark.parametrize("max_attempts, busy_retries, refusals, tries", [
    (3, 8, 5, None), (3, 2, 5, "after 5 attempts"), (1, 8, 1, "1 attempt")])
def test_a_request_refused_as_busy_while_others_are_served_spends_no_attempt(
        serve, tmp_path, monkeypatch, max_attempts, busy_retries, refusals, tries):
    # Before: a problem whose request met three 429s in a row was lost ("HTTP 429 (after 3
    # attempts)") while the server served the rest of the run. A busy answer while others
    # are served is forgiven up to BUSY_RETRIES times; max_attempts = 1 (no retries) stays one.
    monkeypatch.setattr(driver_module, "BUSY_RETRIES", busy_retries)
    problems = generate_problems(6, seed=4)
    server, url = serve(refusing_one_question(problems[0].question, refusals, 0.02))
    s = run(problems, url, tmp_path, search={"k": 2, "budget": 24},
            executor={"retry_backoff_s": 0.01, "retry_backoff_max_s": 0.02, "max_attempts": max_attempts})
    assert (s.problems_done, s.problems_failed) == ((6, 0) if tries is None else (5, 1))
    if tries is not None:
        failed = load_manifest(tmp_path / "manifest.json").failed
        assert list(failed) == [problems[0].id]
        (reason,) = failed.values()
        assert "HTTP 429" in reason and f"({tries})" in reason, reason


def test_a_judge_refused_as_busy_is_not_forgiven_for_the_policys_successes(serve, tmp_path):
    # Before: one count of successes for both backends, so a judge server refusing every
    # request (429) while the policy answered had each judge request tried up to 11 times
    def refuse_all(handler, body, seq, inflight):
        return handler.send(429, {"error": {"message": "Rate limit reached for requests per min"}})

    server, url = serve(refuse_all)
    config = {"seed": 3, "search": {"strategy": "omega", "k": 4, "budget": 16},
              "labels": {"method": "consensus", "learn_floor": False,
                         "judge": {"name": "openai", "base_url": url, "model": "j", "send_images": False}},
              "executor": {"retry_backoff_s": 0.01, "retry_backoff_max_s": 0.02, "breaker_window": 0}}
    s = prmtree.run(generate_problems(20, seed=1), policy="simulated", policy_args={"latency_s": 0.02},
                    out=tmp_path, config=config)
    assert s.problems_done == 20 and s.labelling["judge_failures"] > 0
    per_request = Counter(json.dumps(body) for body in server.bodies)
    assert set(per_request.values()) == {3}, Counter(per_request.values())  # max_attempts, no more


# -- 4. a null entry among the choices ---------------------------------------------------


def test_a_null_entry_among_the_choices_is_retried_not_taken_for_a_server_without_n(serve, tmp_path):
    # Before: "returned 1 choice for n=2: the server may not support n ... rerunning will
    # not help (not retryable)": the problem failed in that run, and the run's last line
    # said to run the same command again.
    def first_null(handler, body, seq, inflight):
        choices = [{"index": i, "message": {"role": "assistant", "content": text_of(body)}, "finish_reason": "stop"}
                   for i in range(body["n"])]
        if seq == 1 or body["model"] == "null":
            choices[0] = None
        return answer(handler, body, choices)

    server, url = serve(first_null)
    with pytest.raises(GenerationError) as err:
        gen(OpenAIPolicy(url, "null"))
    assert err.value.retryable
    assert str(err.value) == "/v1/chat/completions returned 2 choices for n=2, 1 of them null (a malformed reply)"
    server.seq = 0  # the run's first reply has a null entry too: retried
    s = run(generate_problems(1, seed=4), url, tmp_path, executor={"retry_backoff_s": 0.01})
    assert (s.problems_done, s.problems_failed, s.retries) == (1, 0, 1)


# -- 5. timeout_s bounds the whole request -----------------------------------------------


def test_timeout_s_bounds_a_reply_that_trickles_in(serve, tmp_path):
    # Before: httpx's timeout bounds each read, so a reply of 32 bytes every 0.1 s held the
    # request for its whole length (~3 s here), never cut off, never retried.
    def drip(handler, body, seq, inflight):
        return answer(handler, body, drip=(32, 0.1) if seq == 1 else None)

    server, url = serve(drip)
    started = time.perf_counter()
    with pytest.raises(GenerationError) as err:
        gen(OpenAIPolicy(url, "m", timeout_s=0.5))
    assert err.value.retryable
    assert str(err.value) == "/v1/chat/completions: no complete reply within timeout_s = 0.5 s (the request timed out)"
    assert time.perf_counter() - started < 1.5
    assert len(gen(OpenAIPolicy(url, "m", timeout_s=0.5))) == 2  # a prompt reply is unaffected
    server.seq = 0  # the run's first request trickles too: cut off, retried
    config = {"executor": {"retry_backoff_s": 0.01}, "policy": {"name": "openai", "base_url": url, "model": "m",
                                                                "send_images": False, "timeout_s": 0.5}}
    s = run(generate_problems(1, seed=4), url, tmp_path, **config)
    assert (s.problems_done, s.problems_failed, s.retries) == (1, 0, 1)


def test_a_server_that_only_asks_to_wait_trips_the_breaker_after_its_give_up_time():
    """An exhausted quota answers 429 + Retry-After for ever: its waits are not failures for
    RATE_LIMITED_GIVE_UP_S, then they count, and the breaker stops the run (a 1,000-problem run
    would otherwise wait out ~2 hours of Retry-After: 60 before it exits)."""
    from prmtree.engine.breaker import RATE_LIMITED_GIVE_UP_S, CircuitBreaker
    from prmtree.engine.errors import BackendDownError, GenerationError

    wait = GenerationError("HTTP 429 (Retry-After: 60 s)", retry_after=60.0)
    breaker = CircuitBreaker(window=3)
    for i in range(100):  # within the give-up time: never a failure
        breaker.record(wait, now=i * (RATE_LIMITED_GIVE_UP_S / 200))
    assert breaker.failures_in_a_row == 0
    breaker.record(None, now=RATE_LIMITED_GIVE_UP_S / 2)  # a success starts the clock again
    for i in range(100):
        breaker.record(wait, now=RATE_LIMITED_GIVE_UP_S / 2 + i)
    assert breaker.failures_in_a_row == 0
    later = RATE_LIMITED_GIVE_UP_S * 2
    breaker.record(wait, now=later)
    breaker.record(wait, now=later + 1)
    with pytest.raises(BackendDownError, match="circuit breaker"):
        breaker.record(wait, now=later + 2)


@pytest.mark.parametrize("headers, seconds", [
    ({"retry-after-ms": "nan", "retry-after": "2"}, 2.0),  # an unreadable ms header leaves the other
    ({"retry-after-ms": "inf", "retry-after": "2"}, 2.0),
    ({"retry-after": "1, 2"}, 2.0),  # the header sent twice: the longer wait
    ({"retry-after-ms": "1500"}, 1.5),
    ({"retry-after": "-1"}, 0.0),
    ({"retry-after": "junk"}, None),
])
def test_retry_after_headers_are_read_whatever_their_neighbours(headers, seconds):
    import httpx

    from prmtree.policies.openai_policy import retry_after_s

    assert retry_after_s(httpx.Headers(headers)) == seconds
