"""An async OpenAI-compatible client shared by every step in a process.

One client per process (one connection pool), several replica URLs per model, least
in-flight balancing with a circuit breaker per replica, retries with exponential backoff
and jitter on connection errors, timeouts, 5xx and 429 (``Retry-After`` respected),
failover to another replica on retry. Errors that retrying cannot fix fail the row at
once. Usage is counted per step and per replica. Whoever watches the replicas (the driver)
calls ``update_endpoints`` when one is gone.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from streamflow.errors import ConfigError
from streamflow.services.llm.balancer import Breaker, Replica, ReplicaSet
from streamflow.services.llm.cache import CallScope, ResponseCache
from streamflow.services.llm.failures import (
    LLMBadRequest,
    LLMBadResponse,
    LLMContextLength,
    LLMError,
    LLMRateLimited,
    LLMServerError,
)
from streamflow.services.llm.transport import HTTPTransport, Response, Transport, caching
from streamflow.services.llm.usage import LATENCY_BOUNDS_S, ROW_USAGE, Usage

log = logging.getLogger(__name__)

__all__ = ["Completion", "LLMClient", "StepLLM", "is_completion"]


class Completion(msgspec.Struct, frozen=True):
    """One answer: its text, why it stopped, and what it cost."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    model: str
    latency_s: float
    tool_calls: list[dict[str, Any]] | None = None


class _ReplyMessage(msgspec.Struct):
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class _Choice(msgspec.Struct):
    message: _ReplyMessage | None = None
    text: str | None = None
    finish_reason: str | None = None


class _ReplyUsage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Reply(msgspec.Struct):
    choices: list[_Choice]
    model: str = ""
    usage: _ReplyUsage | None = None


class _Model(msgspec.Struct):
    id: str


class _ModelList(msgspec.Struct):
    """The answer of ``GET /v1/models``: ``{"object": "list", "data": [{"id": ...}, ...]}``."""

    data: list[_Model]


_encode = msgspec.json.Encoder().encode
_decode_reply = msgspec.json.Decoder(_Reply).decode
_decode_models = msgspec.json.Decoder(_ModelList).decode
_CONTEXT_HINTS = ("context length", "maximum context", "context_length", "too many tokens")


class LLMClient:
    """Sends chat and completion requests to the replicas of one model service.

    ``endpoints`` are base URLs ending in ``/v1``. ``model`` is the default model name;
    a step may ask for another one the same servers serve.
    """

    def __init__(
        self,
        endpoints: Sequence[str] | Mapping[str, Sequence[str]],
        *,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_s: float = 0.25,
        max_backoff_s: float = 10.0,
        breaker: Breaker | None = None,
        cache: ResponseCache | None = None,
        transport: Transport | None = None,
    ) -> None:
        routes = {model: list(endpoints)} if not isinstance(endpoints, Mapping) else dict(endpoints)
        if not any(routes.values()):
            msg = "LLMClient needs at least one endpoint URL (llm.base_url or llm.endpoints)."
            raise ConfigError(msg)
        self.model = model
        self._routes = {name: ReplicaSet(urls) for name, urls in routes.items() if urls}
        self._headers = {"content-type": "application/json"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._breaker = breaker or Breaker()
        self._cache = cache
        self._transport: Transport = transport or HTTPTransport()
        self._caching = caching(self._transport)
        """The transport itself (a relay) when it takes each request's cache key and writes the answers."""
        self._usage: dict[str, Usage] = {}
        self._replica_usage: dict[str, Usage] = {}
        self._latency_counts: dict[str, list[int]] = {}
        self._jitter = random.Random()

    # -- public API -------------------------------------------------------------------

    async def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        model: str | None = None,
        step: str = "",
        scope: CallScope | None = None,
        **params: Any,
    ) -> Completion:
        """A chat completion; ``params`` are OpenAI fields (max_tokens, temperature, seed, tools...).

        ``scope`` names the row making the call, for the response cache (``StepLLM.for_row``).
        """
        payload = {"model": model or self.model, "messages": messages, **_without_none(params)}
        return await self._call("/chat/completions", payload, step, scope)

    async def complete(
        self, prompt: str, *, model: str | None = None, step: str = "", scope: CallScope | None = None, **params: Any
    ) -> Completion:
        """A plain text completion (``/v1/completions``)."""
        payload = {"model": model or self.model, "prompt": prompt, **_without_none(params)}
        return await self._call("/completions", payload, step, scope)

    def for_step(self, step: str) -> StepLLM:
        """A view of this client that books usage under ``step``."""
        return StepLLM(self, step)

    def usage(self) -> dict[str, Usage]:
        """Usage so far, per step (a copy)."""
        return {step: msgspec.structs.replace(usage) for step, usage in self._usage.items()}

    def replica_usage(self) -> dict[str, Usage]:
        """Usage so far, per replica URL (a copy)."""
        return {url: msgspec.structs.replace(usage) for url, usage in self._replica_usage.items()}

    def latency_counts(self) -> dict[str, list[int]]:
        """Answered requests per step, counted per latency bucket (``LATENCY_BOUNDS_S``, then the rest)."""
        return {step: list(counts) for step, counts in self._latency_counts.items()}

    def inflight(self) -> dict[str, int]:
        """Requests waiting for an answer right now, per replica URL."""
        return {r.url: r.inflight for replicas in self._routes.values() for r in replicas.replicas}

    def endpoints(self) -> dict[str, list[str]]:
        """The replica URLs this client currently knows, per model."""
        return {model: replicas.urls for model, replicas in self._routes.items()}

    async def check(self, timeout_s: float = 10.0) -> None:
        """Fail fast, in one line, unless every replica answers ``GET /models`` with a JSON list holding its model.

        A wrong URL often answers something (a web page, an error page, a proxy's 502): only an
        OpenAI-compatible model list shows that rows sent there can succeed.
        """
        for model, replicas in self._routes.items():
            for replica in replicas.replicas:
                served = await self._served(replica.url, timeout_s)
                if model not in served:
                    listed = ", ".join(served) or "no model"
                    msg = f"LLM endpoint {replica.url} does not serve model {model!r}; it serves: {listed}."
                    raise ConfigError(msg)

    async def _served(self, url: str, timeout_s: float) -> list[str]:
        """The model names ``url`` serves, from ``GET {url}/models``; ConfigError for any other answer."""
        fix = "point llm.base_url / llm.endpoints at an OpenAI-compatible server that is up (its URL ends in /v1)"
        try:
            reply = await self._transport.get(f"{url}/models", self._headers, timeout_s)
        except LLMError as exc:
            msg = f"LLM endpoint {url} is unreachable ({exc}); check llm.base_url / llm.endpoints."
            raise ConfigError(msg) from exc
        if reply.status in (401, 403):
            msg = f"LLM endpoint {url} refused the API key (HTTP {reply.status}); set llm.api_key_env."
            raise ConfigError(msg)
        if reply.status != 200:
            msg = f"LLM endpoint {url} answered GET /models with HTTP {reply.status}, not its list of models; {fix}."
            raise ConfigError(msg)
        try:
            return [model.id for model in _decode_models(reply.body).data]
        except msgspec.DecodeError as exc:
            kind = reply.headers.get("content-type", "").split(";")[0] or "a body"
            msg = f"LLM endpoint {url} answered GET /models with {kind} that is not a JSON model list ({exc}); {fix}."
            raise ConfigError(msg) from exc

    async def close(self) -> None:
        await self._transport.close()
        if self._cache is not None:
            self._cache.close()

    # -- internals --------------------------------------------------------------------

    async def _call(self, path: str, payload: dict[str, Any], step: str, scope: CallScope | None = None) -> Completion:
        usage = self._usage.setdefault(step, Usage())
        usage.requests += 1
        row = ROW_USAGE.get()
        if row is not None:
            row.requests += 1
        body = _encode(payload)
        started = time.monotonic()
        cache_key = None
        if self._cache is not None:
            cache_key = scope.key(path, body) if scope is not None else ResponseCache.key(path, body)
            hit = self._cache.get(cache_key)
            if hit is not None:
                usage.cache_hits += 1
                if row is not None:
                    row.cache_hits += 1
                return self._parse(Response(200, hit), "cache", started)
        replicas = self._replicas_for(payload["model"])
        failed: set[Replica] = set()
        attempt = 0
        while True:
            replica = replicas.pick(failed)
            per_replica = self._replica_usage.setdefault(replica.url, Usage())
            per_replica.requests += 1
            replica.inflight += 1
            try:
                if self._caching is not None:
                    reply = await self._caching.post(
                        replica.url + path, body, self._headers, self._timeout_s, key=cache_key
                    )
                else:
                    reply = await self._transport.post(replica.url + path, body, self._headers, self._timeout_s)
                completion = self._parse(reply, replica.url, started)
            except LLMError as exc:
                if exc.retryable:
                    per_replica.failures += 1
                    if replica.failed(self._breaker, time.monotonic()):
                        log.warning(
                            "LLM replica %s failed %d times in a row; pausing it", replica.url, replica.failures
                        )
                else:
                    replica.succeeded()  # it answered; the request was the problem
                if not exc.retryable or attempt >= self._max_retries:
                    usage.failures += 1
                    if row is not None:
                        row.failures += 1
                    if exc.retryable:
                        exc.args = (f"{exc} (gave up after {attempt + 1} attempts)",)
                    raise
                attempt += 1
                usage.retries += 1
                if row is not None:
                    row.retries += 1
                per_replica.retries += 1
                failed.add(replica)
                await asyncio.sleep(self._delay(attempt, exc))
                continue
            finally:
                replica.inflight -= 1
            replica.succeeded()
            for counter in (usage, per_replica) if row is None else (usage, per_replica, row):
                counter.prompt_tokens += completion.prompt_tokens
                counter.completion_tokens += completion.completion_tokens
                counter.latency_s += completion.latency_s
            self._count_latency(step, completion.latency_s)
            if cache_key is not None and self._cache is not None and self._caching is None:
                self._cache.put(cache_key, reply.body)
            return completion

    def _count_latency(self, step: str, seconds: float) -> None:
        counts = self._latency_counts.get(step)
        if counts is None:
            counts = self._latency_counts[step] = [0] * (len(LATENCY_BOUNDS_S) + 1)
        counts[bisect.bisect_left(LATENCY_BOUNDS_S, seconds)] += 1

    def _replicas_for(self, model: str) -> ReplicaSet:
        """The replicas serving ``model``; those of the default model if it has none of its own."""
        return self._routes.get(model) or self._routes.get(self.model) or next(iter(self._routes.values()))

    def update_endpoints(self, endpoints: Mapping[str, Sequence[str]]) -> None:
        """Serve each model from these replica URLs from now on (a replica gone, another one added)."""
        for model, urls in endpoints.items():
            if model in self._routes:
                if self._routes[model].update(urls):
                    log.info("LLM replicas of %s are now %s", model, list(urls))
            elif urls:
                self._routes[model] = ReplicaSet(urls)

    def _delay(self, attempt: int, exc: LLMError) -> float:
        delay = min(self._max_backoff_s, self._backoff_s * 2 ** (attempt - 1)) * self._jitter.uniform(0.5, 1.5)
        if isinstance(exc, LLMRateLimited) and exc.retry_after_s is not None:
            delay = max(delay, exc.retry_after_s)
        return delay

    def _parse(self, reply: Response, url: str, started: float) -> Completion:
        if reply.status == 200:
            try:
                parsed = _decode_reply(reply.body)
                choice = parsed.choices[0]
            except (msgspec.DecodeError, msgspec.ValidationError, IndexError) as exc:
                msg = f"{url} answered 200 with a body that is not a completion: {reply.body[:200]!r}"
                raise LLMBadResponse(msg) from exc
            text = choice.message.content if choice.message is not None else choice.text
            usage = parsed.usage or _ReplyUsage()
            return Completion(
                text=text or "",
                finish_reason=choice.finish_reason,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                model=parsed.model,
                latency_s=time.monotonic() - started,
                tool_calls=choice.message.tool_calls if choice.message is not None else None,
            )
        detail = _error_text(reply.body)
        if reply.status == 429:
            msg = f"{url} is rate limiting (429): {detail}"
            raise LLMRateLimited(msg, retry_after_s=_retry_after(reply.headers))
        if reply.status >= 500:
            msg = f"{url} failed with HTTP {reply.status}: {detail}"
            raise LLMServerError(msg)
        if any(hint in detail.lower() for hint in _CONTEXT_HINTS):
            msg = f"prompt does not fit the model's context: {detail}"
            raise LLMContextLength(msg)
        msg = f"{url} rejected the request (HTTP {reply.status}): {detail}"
        raise LLMBadRequest(msg)


class StepLLM:
    """The LLM as one step sees it (``ctx.llm``): usage is booked under the step's name.

    The view of one row (``for_row``) also scopes the response cache to that row.
    """

    __slots__ = ("_client", "_scope", "step")

    def __init__(self, client: LLMClient, step: str, scope: CallScope | None = None) -> None:
        self._client = client
        self.step = step
        self._scope = scope

    def for_row(self, seed: int) -> StepLLM:
        """This step's LLM as the row whose step seed is ``seed`` uses it: the cache replays only its calls."""
        return StepLLM(self._client, self.step, CallScope(seed))

    @property
    def model(self) -> str:
        return self._client.model

    async def chat(self, messages: list[dict[str, Any]], *, model: str | None = None, **params: Any) -> Completion:
        """See ``LLMClient.chat``."""
        return await self._client.chat(messages, model=model, step=self.step, scope=self._scope, **params)

    async def complete(self, prompt: str, *, model: str | None = None, **params: Any) -> Completion:
        """See ``LLMClient.complete``."""
        return await self._client.complete(prompt, model=model, step=self.step, scope=self._scope, **params)


def is_completion(body: bytes) -> bool:
    """Whether a 200's body is a completion this client accepts: what the response cache may keep."""
    try:
        return bool(_decode_reply(body).choices)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False


def _without_none(params: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in params.items() if value is not None}


def _error_text(body: bytes) -> str:
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body[:300].decode("utf-8", "replace")
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            return str(error.get("message") or error.get("detail") or error)[:500]
        return str(error)[:500]
    return str(data)[:500]


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
