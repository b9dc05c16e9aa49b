"""Any OpenAI-compatible server: ``vllm serve``, SGLang, ``transformers serve``.

Chat completions continue the prefix as an open assistant message
(``continue_final_message: true, add_generation_prompt: false``, which vLLM and SGLang
accept); ``endpoint="completions"`` instead renders the prompt locally with the model's
chat template and calls ``/v1/completions``, for servers without that option. Images
go as base64 data URLs. A pooled client bounds concurrency; ``timeout_s`` bounds each
request as a whole (a reply that trickles in too), not only each read. 429, 5xx and
connection errors, a choice the server cut off (``finish_reason`` ``abort``, ``error``,
``content_filter``: a fragment, never graded), a choice with no text at all (``content``
null, no ``message``: a refusal, or text put elsewhere; an empty string is the model's
own, a wrong rollout; one cut at ``max_tokens`` before any text, as a reasoning model
still thinking is, a truncated one) and a null entry among the choices raise a retryable
GenerationError, which the driver retries with backoff (one retry layer: a persistent
503 costs max_attempts requests, not max_attempts times this backend's own retries); a
429 or 503's ``Retry-After`` (seconds or an HTTP date; OpenAI's ``retry-after-ms``) is
passed on as ``GenerationError.retry_after``, and the driver waits at least that long. The
server's capacity is unknown here: the driver finds how much to send by watching latency
and overload (additive increase, multiplicative decrease), so ``max_concurrency``
(connections) is only a cap. The API key comes from the environment
(``api_key_env``, default ``OPENAI_API_KEY``) and is never logged. A reply reports one
``completion_tokens`` for all its choices: a lone choice gets it, each of n > 1 gets 0
(unknown: the engine estimates its length from its text) and the first carries the total
as ``shared_tokens``, so the run's token count and tokens/s still add up.
"""

from __future__ import annotations

import email.utils
import logging
import math
import os
import re
from datetime import datetime, timezone
from typing import Any

from prmtree.engine.deadlines import Deadlines
from prmtree.engine.errors import GenerationError, PolicyConfigError
from prmtree.engine.records import Completion, GenerationRequest
from prmtree.policies.prompts import (
    PromptStyle,
    continuation_for_parsing,
    messages,
    render,
)

log = logging.getLogger("prmtree")

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}

#: Sent with every request (vLLM's and SGLang's sampling extensions, at no effect): vLLM
#: serves the model's generation_config.json as the defaults of what a request leaves out
#: (its ``--generation-config auto``), and Qwen2-VL's sets ``top_k = 1`` and a repetition
#: penalty: the k rollouts of a step would be one greedy completion k times, and its
#: Monte-Carlo value 0 or 1. A server that refuses them by name (``transformers serve``'s
#: 422, OpenAI's 400) is asked again without them, and then never sent them (said once);
#: ``model_sampling=True`` leaves them out from the start; ``extra_body`` overrides them.
NEUTRAL_SAMPLING = {"top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0}


OVERLOAD_STATUS = {429, 503}

#: finish_reason values of a choice worth grading: the model ended the text itself (None,
#: or no field, is what some servers send then; TGI says ``eos_token`` / ``stop_sequence``)
#: or hit ``max_tokens`` ("length", kept as a truncation). Anything else (vLLM's ``abort``,
#: ``error``, ``content_filter``) means the text is a fragment, not a rollout. A tuple:
#: a server's unhashable value is compared, not hashed.
FINISHED = ("stop", "length", None, "eos_token", "stop_sequence")


def server_error(path: str, status: int, text: str, headers: Any = None) -> GenerationError:
    """An HTTP error as a generation error: overload and outages are worth retrying, a
    4xx about this request is not. A 429 or 503 is marked ``overloaded``: the driver
    sends less (its message says so too, for an error that crossed a process), and its
    ``Retry-After`` becomes ``retry_after``: the driver waits that long before trying
    again, and the circuit breaker does not count it (``engine/breaker.py``)."""
    if status == 429 and _NEVER_PASSES.search(text):  # a 429 about this request or this account, not the load
        error = GenerationError(f"{path} answered HTTP {status} (no retry can pass it): {text[:300]}",
                                retryable=False)
        error.overloaded = False  # type: ignore[attr-defined]
        return error
    wait = retry_after_s(headers) if status in OVERLOAD_STATUS and headers is not None else None
    said = f" (Retry-After: {wait:g} s)" if wait is not None else ""
    error = GenerationError(f"{path} answered HTTP {status}{said}: {text[:300]}", retryable=status in RETRY_STATUS,
                            retry_after=wait)
    error.overloaded = status in OVERLOAD_STATUS  # type: ignore[attr-defined]
    return error


#: What OpenAI's 429s say when waiting cannot help: a request larger than the account's
#: tokens-per-minute limit ("Request too large for gpt-4o ... on tokens per min"), and an
#: exhausted quota ("insufficient_quota"). Read as busy, each was retried with backoff (and,
#: while other requests passed, forgiven: minutes per request) to fail the same way.
_NEVER_PASSES = re.compile(r"request too large|insufficient_quota", re.IGNORECASE)


def retry_after_s(headers: Any) -> float | None:
    """The wait an HTTP answer asks for, in seconds (>= 0): OpenAI's ``retry-after-ms``,
    else ``Retry-After`` as seconds or as an HTTP date (a date past is 0); None where
    neither is there or readable. An unreadable ``retry-after-ms`` (``nan``) leaves the
    ``Retry-After`` beside it to be read; of a header sent twice (``"1, 2"``) the longer wait."""
    try:
        seconds = float(headers.get("retry-after-ms")) / 1000
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds):
        value = headers.get("retry-after")
        if not isinstance(value, str) or not value.strip():
            return None
        waits = [_seconds_or_date(part) for part in value.split(",")] if _NUMBERS_LIST.match(value) else \
            [_seconds_or_date(value)]
        readable = [w for w in waits if w is not None]
        if not readable:
            return None
        seconds = max(readable)
    return max(0.0, seconds)


_NUMBERS_LIST = re.compile(r"^\s*[-+]?\d+(?:\.\d+)?(?:\s*,\s*[-+]?\d+(?:\.\d+)?)+\s*$")


def _seconds_or_date(value: str) -> float | None:
    """``Retry-After``'s value as seconds (a number, or an HTTP date from now), or None."""
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP date is GMT
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    return seconds if math.isfinite(seconds) else None


class OpenAIPolicy:
    name = "openai"
    operational_args = frozenset({"max_concurrency", "timeout_s", "api_key_env", "base_url"})

    def __init__(
        self,
        base_url: str,
        model: str,
        endpoint: str = "chat",
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 1024,
        timeout_s: float = 300.0,
        tokenizer: str | None = None,
        system_prompt: str | None = None,
        send_images: bool = True,
        extra_body: dict[str, Any] | None = None,
        model_sampling: bool = False,
    ) -> None:
        try:
            import httpx
        except ImportError:
            raise PolicyConfigError("the openai policy needs httpx; install with: pip install 'prmtree[openai]'") from None
        if endpoint not in ("chat", "completions"):
            raise ValueError(f"endpoint must be 'chat' or 'completions', got {endpoint!r}")
        check_limits(max_concurrency, timeout_s)
        self.style = PromptStyle(system_prompt)
        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith("/v1"):  # the OpenAI SDK's convention: the paths below carry /v1 already
            self.base_url = self.base_url[: -len("/v1")]
        self.model = model
        self.endpoint = endpoint
        self.send_images = send_images  # False for text-only models
        self.extra_body = dict(extra_body or {})
        self.model_sampling = model_sampling  # True: leave the server's (the model's) other sampling defaults
        self._send_neutral = not model_sampling  # False too once the server refused them (_refuses_neutral)
        self._httpx = httpx
        self._api_key = os.environ.get(api_key_env)
        self._limits = httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency)
        self._timeout = httpx.Timeout(timeout_s)  # each connect / read / write / wait for a connection
        self._timeout_s = float(timeout_s)  # the whole request (_post)
        self._deadlines = Deadlines()
        self._warned_reasoning = False  # reasoning_elsewhere is said once per policy
        self._warned_clamp = False  # clamped_by_server is said once per policy
        self._client: Any = None
        self._template_owner: Any = None
        if endpoint == "completions":
            from transformers import AutoTokenizer

            self._template_owner = AutoTokenizer.from_pretrained(tokenizer or model)

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIPolicy(base_url={self.base_url!r}, model={self.model!r}, endpoint={self.endpoint!r})"

    def _http(self) -> Any:
        if self._client is None:
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            self._client = self._httpx.AsyncClient(
                base_url=self.base_url, headers=headers, limits=self._limits, timeout=self._timeout
            )
        return self._client

    def body(self, request: GenerationRequest) -> tuple[str, dict[str, Any]]:
        """The path and JSON body sent for ``request``."""
        common: dict[str, Any] = {
            "model": self.model,
            "n": request.n,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": request.seed,
        }
        if self._send_neutral:
            common.update(NEUTRAL_SAMPLING)
        if request.next_step_only:
            common["stop"] = list(request.step_format.stop_strings)
        if self.endpoint == "completions":
            prompt = render(self._template_owner, request, self.style, multimodal=False)
            return "/v1/completions", {**common, "prompt": prompt, **self.extra_body}
        parts = "data_url" if self.send_images else "none"
        body = {**common, "messages": messages(request, self.style, image_parts=parts)}
        if request.continues:
            body.update(continue_final_message=True, add_generation_prompt=False)
        return "/v1/chat/completions", {**body, **self.extra_body}

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        path, body = self.body(request)
        try:
            data = await self._post(path, body)
        except GenerationError as exc:
            if not self._refuses_neutral(exc, body):
                raise
            data = await self._post(path, {k: v for k, v in body.items() if k not in NEUTRAL_SAMPLING})
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            raise no_choices(path, data)
        if not all(isinstance(c, dict) for c in choices):
            raise malformed_choices(path, choices, request.n)
        if len(choices) < request.n:
            raise too_few_choices(path, len(choices), request.n)
        choices.sort(key=lambda c: c["index"] if isinstance(c.get("index"), int) else 0)
        check_finished(path, choices)
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        if not self._warned_clamp:
            clamped = clamped_by_server(choices, usage, body)
            if clamped:
                self._warned_clamp = True
                log.warning(
                    "prmtree: the server cut completions at its context window, not at max_tokens (%s): every "
                    "such rollout is truncated and graded wrong, and a problem whose rollouts all are is skipped "
                    "as root all wrong; raise the server's context length (vLLM: --max-model-len) or lower "
                    "max_tokens ([search], or [labels.judge] for the judge), then rerun with --force", clamped)
        texts = [self._choice_text(c) for c in choices]
        check_texts(path, choices, texts, self.endpoint == "completions")
        if not self._warned_reasoning and self.endpoint == "chat":
            key = reasoning_elsewhere(choices)
            if key:
                self._warned_reasoning = True
                log.warning(
                    "prmtree: the server put the model's reasoning in `%s`, apart from `content` (it runs a "
                    "reasoning parser): steps and answers are read from `content` only, the text after the "
                    "reasoning, so the reasoning itself is not labelled; serve the model without "
                    "--reasoning-parser to label it", key)
        # One choice's length is known; n choices share one total, which says nothing about
        # each one's: 0 lets the engine estimate each from its text (OmegaPRM prefers short
        # rollouts, and an even share would make them all the same length).
        total = _count(usage.get("completion_tokens"))
        own_tokens = total if len(choices) == 1 else 0
        details = usage.get("prompt_tokens_details") if isinstance(usage.get("prompt_tokens_details"), dict) else {}
        out = []
        for i, (choice, text) in enumerate(zip(choices, texts)):
            assert text is not None  # check_texts
            out.append(
                Completion(
                    text=continuation_for_parsing(text, request),
                    num_tokens=own_tokens,
                    finish_reason="length" if choice.get("finish_reason") == "length" else "stop",  # checked above
                    cached_tokens=_count(details.get("cached_tokens")) if i == 0 else 0,
                    prompt_tokens=_count(usage.get("prompt_tokens")) if i == 0 else 0,
                    shared_tokens=total if i == 0 and len(choices) > 1 else 0,
                )
            )
        return out

    def _refuses_neutral(self, exc: GenerationError, body: dict[str, Any]) -> bool:
        """Whether ``exc`` is the server refusing :data:`NEUTRAL_SAMPLING`'s fields by name (a
        400 or 422 naming one): from then on they are not sent (said once)."""
        text = str(exc)
        if exc.retryable or not any(f"HTTP {code}" in text for code in (400, 422)):
            return False
        named = [key for key in NEUTRAL_SAMPLING if key in text and key in body and key not in self.extra_body]
        if not named:
            return False  # (requests sent before the first refusal came back carry them too: asked again)
        if not self._send_neutral:
            return True
        self._send_neutral = False
        log.warning("prmtree: the server refuses %s (%s); requests go without them from now on, so it samples "
                    "with its own defaults for them (the model's generation_config.json on some servers)",
                    ", ".join(named), text[:200])
        return True

    def _choice_text(self, choice: dict[str, Any]) -> str | None:
        """A choice's text, or None where it holds none (no ``message``, ``content`` null; "" when that
        null came at the length limit)."""
        if self.endpoint == "completions":
            return choice.get("text") if isinstance(choice.get("text"), str) else None
        message = choice.get("message")
        if not isinstance(message, dict):
            return None
        if "content" in message and message["content"] is None and choice.get("finish_reason") == "length":
            # cut at the length limit before writing any answer (a reasoning model still in its
            # reasoning, which the server puts elsewhere): a truncated rollout, as a cut text is.
            # Asked again, the same seed cuts it again, so failing would lose the problem.
            return ""
        return _text(message.get("content"))

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One attempt. Retrying is the driver's job (one retry layer, with backoff).
        ``timeout_s`` bounds it whole: httpx's own timeout bounds each read only, so a
        reply that trickles in (a byte now and then) would hold the request for as long
        as it takes; past it the attempt fails as a hang does (retryable)."""
        httpx = self._httpx
        limit = self._deadlines.bound(self._timeout_s)
        try:
            async with limit:
                response = await self._http().post(path, json=body)
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            raise GenerationError(f"{self.base_url}{path}: {type(exc).__name__}: {exc}", retryable=True) from None
        except TimeoutError:
            if not limit.expired:
                raise
            raise GenerationError(f"{path}: no complete reply within timeout_s = {self._timeout_s:g} s "
                                  "(the request timed out)", retryable=True) from None
        if response.status_code >= 400:
            raise server_error(f"{self.base_url}{path}" if response.status_code == 404 else path,
                               response.status_code, response.text, response.headers)
        try:
            data = response.json()
        except ValueError:
            raise GenerationError(f"{path} answered with invalid JSON: {response.text[:200]!r}", retryable=True) from None
        if not isinstance(data, dict):
            raise GenerationError(f"{path} answered JSON that is no object: {response.text[:200]!r}", retryable=True)
        return data

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def check_limits(max_concurrency: Any, timeout_s: Any) -> None:
    """Refuse, at load and in one line, connection limits that cannot work: with 0 (or
    fewer) connections, or a timeout of 0 (or less), every request would wait out its
    timeout or fail with a bare ``ConnectTimeout``, one retry after another."""
    if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
        raise ValueError(f"max_concurrency must be a whole number >= 1, got {max_concurrency!r}")
    if (isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not math.isfinite(timeout_s)
            or timeout_s <= 0):
        raise ValueError(f"timeout_s must be a number of seconds > 0, got {timeout_s!r}")


def no_choices(path: str, data: dict[str, Any]) -> GenerationError:
    """A 200 answer without choices: some servers (and proxies) report a failure this way,
    ``{"error": {"message": ...}}`` or ``choices: null``. Retryable, like the HTTP error it
    stands for, and the server's own words are kept: they are the only clue to the cause."""
    error = data.get("error")
    if isinstance(error, dict) and error.get("message") is not None:
        error = error["message"]
    said = f": {str(error)[:300]}" if error not in (None, "", {}) else ""
    return GenerationError(f"{path} returned no choices{said}", retryable=True)


def malformed_choices(path: str, choices: list[Any], n: int) -> GenerationError:
    """Entries of ``choices`` that are no object (``null``): the server answered with
    choices, so it supports ``n``; a glitch in one entry is retried, as a reply with no
    choices is, never read as a server that ignores ``n``."""
    bad = [c for c in choices if not isinstance(c, dict)]
    shown = "null" if all(c is None for c in bad) else "not an object"
    return GenerationError(
        f"{path} returned {len(choices)} choice{'s' if len(choices) != 1 else ''} for n={n}, "
        f"{len(bad)} of them {shown} (a malformed reply)", retryable=True)


def check_texts(path: str, choices: list[dict[str, Any]], texts: list[str | None], completions: bool = False) -> None:
    """Every choice holds text. A choice without (``content`` null or missing, no
    ``message``, no ``text`` on /v1/completions: a refusal, or a server that put the text
    elsewhere, such as ``reasoning_content``) is no answer the model wrote: graded, it
    would be an empty, wrong rollout and lower the step values in silence. The request
    fails, retryably, like a choice cut off; an empty string stays the model's own
    (empty) answer, a wrong rollout. (``content`` null at the length limit never gets
    here: the model ran out of tokens before any text, a truncated rollout, counted and
    warned about by the run.)"""
    missing = [c for c, t in zip(choices, texts) if t is None]
    if not missing:
        return
    why = _why_no_text(missing[0], completions)
    raise GenerationError(f"{path} returned no text for {len(missing)} of {len(choices)} choices ({why}): "
                          "nothing the model wrote to grade", retryable=True)


def _why_no_text(choice: dict[str, Any], completions: bool) -> str:
    """What a choice without text holds instead, in a few words."""
    if completions:
        return "no text" if "text" not in choice else "text null" if choice["text"] is None else "text is no string"
    if "message" not in choice:
        return "no message"
    message = choice["message"]
    if not isinstance(message, dict):
        return "message is no object"
    content = message.get("content", 0)
    why = "no content" if "content" not in message else "content null" if content is None else "content is no text"
    elsewhere = [key for key in ("refusal", "reasoning_content", "reasoning") if message.get(key)]
    return f"{why}; the message has {', '.join(elsewhere)}" if elsewhere else why


def reasoning_elsewhere(choices: list[dict[str, Any]]) -> str | None:
    """The key under which a server's reasoning parser put a choice's reasoning beside its
    ``content`` (vLLM's ``reasoning_content``, newer ``reasoning``), or None. The content is
    what gets labelled; a run over a reasoning model would otherwise label its summaries in
    silence."""
    for choice in choices:
        message = choice.get("message")
        if isinstance(message, dict):
            for key in ("reasoning_content", "reasoning"):
                value = message.get(key)
                if isinstance(value, str) and value.strip():
                    return key
    return None


def too_few_choices(path: str, got: int, n: int) -> GenerationError:
    """Fewer choices than ``n``: a server that ignores ``n`` (one completion per request)
    does it on every request, so the message says so rather than leaving the engine's
    "returned 1 completions for n=8", and it is not retried."""
    return GenerationError(
        f"{path} returned {got} choice{'s' if got != 1 else ''} for n={n}: the server may not support n "
        "(several completions per request); serve the model with one that does (vLLM, SGLang), "
        "rerunning will not help", retryable=False)


def check_finished(path: str, choices: list[dict[str, Any]]) -> None:
    """Every choice ended naturally or at the length limit. A choice the server cut off
    (``abort`` when vLLM drops a request, ``error``, ``content_filter``) holds a fragment
    that would be graded as a wrong answer: the request fails, retryably, naming the
    reason, and the driver's retries (``executor.max_attempts``) decide what happens next."""
    bad = [c.get("finish_reason") for c in choices if c.get("finish_reason") not in FINISHED]
    if bad:
        raise GenerationError(
            f"{path} returned finish_reason {str(bad[0])[:50]!r} for {len(bad)} of {len(choices)} choices "
            "(the text was cut off, not finished)", retryable=True)


#: a choice cut at the length limit after fewer than this share of ``max_tokens`` was cut
#: by the server's context window, not by ``max_tokens`` (servers count the tokens written)
CLAMPED_BELOW = 0.95


def clamped_by_server(choices: list[dict[str, Any]], usage: dict[str, Any], body: dict[str, Any]) -> str | None:
    """How the server cut every choice at the length limit clearly short of the tokens asked
    (``max_tokens``, or ``max_completion_tokens`` where ``extra_body`` sets it), or None: it
    cut them to what its context window leaves after the prompt (vLLM does so in silence).
    Such rollouts stay truncated ones, as the model's text is cut; the run's own warning
    would advise raising max_tokens, which changes nothing, so the policy says why once."""
    asked = [v for v in (body.get("max_tokens"), body.get("max_completion_tokens"))
             if isinstance(v, int) and not isinstance(v, bool) and v > 0]
    if not asked or not choices or any(c.get("finish_reason") != "length" for c in choices):
        return None  # (with n > 1 only the total is known: every choice must have been cut)
    written, n = _count(usage.get("completion_tokens")), len(choices)
    if not written or written >= CLAMPED_BELOW * min(asked) * n:
        return None
    prompt = _count(usage.get("prompt_tokens"))
    return (f"{written:,} tokens written{f' for {n} choices' if n > 1 else ''} where {min(asked):,} were asked"
            f"{' per choice' if n > 1 else ''}{f', after a prompt of {prompt:,} tokens' if prompt else ''}")


def _count(value: Any) -> int:
    """A token count as the server reported it (a number, or a numeric string); 0 for
    anything else: counts are bookkeeping, not a reason to fail a request."""
    try:
        n = float(value)
    except (TypeError, ValueError):
        return 0
    return int(n) if math.isfinite(n) and n > 0 else 0


def _text(content: Any) -> str | None:
    """A message's content: a string, or a list of parts whose text parts are joined;
    None for anything else (null, a number, a list without a text part)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type", "text") == "text"]
        return "".join(t for t in parts if isinstance(t, str)) if parts else None
    return None
