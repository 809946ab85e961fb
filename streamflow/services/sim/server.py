"""OpenAI-compatible HTTP server that answers like vLLM on a GPU, for tests and benchmarks without one.

Requests are validated and rejected the way vLLM does (400 for bad bodies and context overflows, 404 for
unknown models), answered by the deterministic ``Responder`` and held back for as long as the
``BatchingEngine`` says the modelled server would take.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from streamflow.services.sim.agent import render_tool_call
from streamflow.services.sim.engine import BatchingEngine, EngineStats
from streamflow.services.sim.prefix_cache import prompt_blocks
from streamflow.services.sim.protocol import (
    ChatChoice,
    ChatCompletion,
    ChatMessage,
    ChatRequest,
    Completion,
    CompletionChoice,
    CompletionRequest,
    ErrorBody,
    ErrorResponse,
    FunctionCall,
    ModelCard,
    ModelList,
    RequestMessage,
    StreamOptions,
    ToolCallRecord,
    Usage,
)
from streamflow.services.sim.responder import Reply, Responder
from streamflow.services.sim.server_config import SimConfig
from streamflow.services.sim.sse import ChatChunks, Chunks, CompletionChunks, stream_reply
from streamflow.services.sim.tokens import count_tokens

__all__ = ["SimConfig", "SimServer"]

logger = logging.getLogger(__name__)

LISTEN_BACKLOG = 2048
"""Connections the kernel holds for the server before it accepts them: uvicorn's default, which vLLM
serves with. aiohttp's own 128 drops the connections of a burst of clients (thousands of rows in flight
opening theirs at once), and each dropped one retries its handshake seconds later."""

_T = TypeVar("_T")
_ENCODER = msgspec.json.Encoder()
_MESSAGE_OVERHEAD_TOKENS = 4  # role header and end-of-turn markers a chat template adds per message
_MAX_BODY_BYTES = 64 * 2**20  # large enough that oversized prompts get vLLM's 400, not aiohttp's 413
_ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError"}


class _RequestError(Exception):
    """A request the server rejects; becomes an OpenAI-style JSON error with this status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json(payload: msgspec.Struct, status: int = 200) -> web.Response:
    return web.Response(body=_ENCODER.encode(payload), status=status, content_type="application/json")


@web.middleware
async def _errors_as_json(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except _RequestError as error:
        body = ErrorBody(message=error.message, type=_ERROR_TYPES[error.status], code=error.status)
        return _json(ErrorResponse(error=body), status=error.status)


def _message_text(message: RequestMessage) -> str:
    """A message's text as the simulator reads it: an assistant's tool calls are rendered into it."""
    calls = [render_tool_call(call.function.name, call.function.arguments) for call in message.tool_calls or ()]
    return _with_calls(message.text(), calls)


def _with_calls(text: str, calls: list[str]) -> str:
    return "\n".join([text, *calls]) if calls else text


def _chat_bytes(messages: list[tuple[str, str]], tools: list[Any]) -> bytes:
    """A chat prompt as one byte string, tools first as chat templates put them: what prefix caching hashes."""
    head = _ENCODER.encode(tools) if tools else b""
    return head + "".join(f"<|{role}|>\n{text}\n" for role, text in messages).encode()


def _reply_turn(reply: Reply) -> str:
    """The reply as the client sends it back next turn (``_message_text`` of the assistant message)."""
    calls = [render_tool_call(call.name, call.arguments) for call in reply.tool_calls]
    return _with_calls("", calls) if calls else reply.text  # a reply with tool calls has no content


def _usage(prompt_tokens: int, reply: Reply) -> Usage:
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=reply.completion_tokens,
        total_tokens=prompt_tokens + reply.completion_tokens,
    )


async def _decode(request: web.Request, kind: type[_T]) -> _T:
    try:
        return msgspec.json.decode(await request.read(), type=kind)
    except msgspec.DecodeError as error:  # ValidationError is a subclass
        raise _RequestError(400, f"Invalid request body: {error}") from error


class SimServer:
    """A simulated vLLM server: ``url = await server.start()``, point any OpenAI client at ``url``, then ``stop()``.

    Serves ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``, ``GET /health`` and
    ``GET /stats`` (engine counters). One engine models one GPU server shared by every served model name.
    """

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.profile = self.config.latency_profile()
        self.engine = BatchingEngine(self.profile, self.config.time_scale, prefix_caching=self.config.prefix_caching)
        self.responder = Responder(self.config)
        self._models = tuple(self.config.models)
        self._created = int(time.time())
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self.app = web.Application(middlewares=[_errors_as_json], client_max_size=_MAX_BODY_BYTES)
        self.app.add_routes(
            [
                web.post("/v1/chat/completions", self._chat),
                web.post("/v1/completions", self._completions),
                web.get("/v1/models", self._list_models),
                web.get("/health", self._health),
                web.get("/stats", self._stats),
            ]
        )

    def stats(self) -> EngineStats:
        """The engine's counters (``GET /stats`` serves the same); call from the server's event loop."""
        return self.engine.stats()

    @property
    def url(self) -> str:
        """Base URL of the OpenAI API, e.g. ``http://127.0.0.1:8000/v1``."""
        if self._url is None:
            msg = "SimServer is not running; call `await server.start()` first."
            raise RuntimeError(msg)
        return self._url

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (port 0 picks a free one) and return the base URL ending in ``/v1``."""
        if self._runner is not None:
            msg = f"SimServer is already running at {self._url}; call stop() before starting it again."
            raise RuntimeError(msg)
        # A client that goes away cancels its handler, which aborts its request, as vLLM does: a
        # request of a crashed caller must not keep the simulated GPU busy.
        runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, backlog=LISTEN_BACKLOG).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        netloc = f"[{bound_host}]" if ":" in bound_host else bound_host  # IPv6 literals need brackets
        self._url = f"http://{netloc}:{bound_port}/v1"
        logger.info(
            "simulated LLM server at %s: models %s, time_scale %s, profile %s",
            self._url,
            ", ".join(self._models),
            self.config.time_scale,
            self.config.profile if isinstance(self.config.profile, str) else self.profile,
        )
        return self._url

    async def stop(self) -> None:
        """Stop listening and close open connections; a no-op if the server is not running."""
        if self._runner is None:
            return
        runner, self._runner, self._url = self._runner, None, None
        await runner.cleanup()

    @classmethod
    def run_in_thread(
        cls, config: SimConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> tuple[str, Callable[[], None]]:
        """Run a server on its own event loop in a daemon thread, for sync callers; returns (url, stop)."""
        server = cls(config)
        loop = asyncio.new_event_loop()
        started: concurrent.futures.Future[str] = concurrent.futures.Future()

        def serve() -> None:
            try:
                started.set_result(loop.run_until_complete(server.start(host, port)))
            except BaseException as error:
                started.set_exception(error)
                loop.close()
                return
            loop.run_forever()
            loop.run_until_complete(server.stop())
            loop.close()

        thread = threading.Thread(target=serve, name="streamflow-sim-server", daemon=True)
        thread.start()
        url = started.result()

        def stop() -> None:
            if thread.is_alive():
                loop.call_soon_threadsafe(loop.stop)
                thread.join()

        return url, stop

    # -- request handling ----------------------------------------------------------------------

    def _check_model(self, model: str) -> None:
        if model not in self._models:
            raise _RequestError(404, f"The model `{model}` does not exist.")

    def _check_sampling(self, n: int, temperature: float | None) -> None:
        if n != 1:
            raise _RequestError(400, f"n={n} is not supported by the simulated server; send n=1.")
        if temperature is not None and temperature < 0:
            raise _RequestError(400, f"temperature must be non-negative, got {temperature}.")

    def _max_tokens(self, prompt_tokens: int, requested: int | None) -> int:
        """The generation cap, rejecting requests that do not fit the context window as vLLM does."""
        limit = self.profile.max_model_len
        if requested is None:
            if prompt_tokens >= limit:
                msg = (
                    f"This model's maximum context length is {limit} tokens. However, your request has "
                    f"{prompt_tokens} input tokens. Please reduce the length of the input messages."
                )
                raise _RequestError(400, msg)
            return limit - prompt_tokens
        if requested < 1:
            raise _RequestError(400, f"max_tokens must be at least 1, got {requested}.")
        if prompt_tokens + requested > limit:
            msg = (
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{prompt_tokens + requested} tokens ({prompt_tokens} in the messages, {requested} in the "
                "completion). Please reduce the length of the messages or completion."
            )
            raise _RequestError(400, msg)
        return requested

    async def _deliver(
        self,
        http_request: web.Request,
        reply: Reply,
        usage: Usage,
        stream_options: StreamOptions | None,
        chunks: Chunks | None,
        texts: Callable[[], tuple[bytes, bytes]],
    ) -> web.StreamResponse | None:
        """Hold the reply back for the modelled latency; with ``chunks`` stream it and return the SSE response.

        ``texts`` gives the prompt and what the reply appends to it, as prefix caching sees them.
        """
        blocks, tail = prompt_blocks(*texts()) if self.engine.prefix_cache is not None else ([], [])
        # Even an empty reply costs one decode step (the end-of-sequence token).
        sim = self.engine.submit(usage.prompt_tokens, max(1, reply.completion_tokens), blocks, tail)
        if chunks is not None:
            include_usage = stream_options is not None and stream_options.include_usage
            return await stream_reply(
                http_request,
                sim,
                reply,
                chunks,
                usage=usage if include_usage else None,
                interval_s=self.config.stream_interval_s,
            )
        try:
            await sim.wait()
        except asyncio.CancelledError:
            sim.abort()
            raise
        return None

    async def _chat(self, http_request: web.Request) -> web.StreamResponse:
        body = await _decode(http_request, ChatRequest)
        self._check_model(body.model)
        self._check_sampling(body.n, body.temperature)
        if not body.messages:
            raise _RequestError(400, "messages is empty; send at least one message.")
        if body.stream and body.tools:
            raise _RequestError(400, "streamed tool calls are not simulated; send stream=false with tools.")
        messages = [(message.role, _message_text(message)) for message in body.messages]
        tools = [msgspec.to_builtins(tool) for tool in body.tools or ()]
        prompt_tokens = sum(count_tokens(text) + _MESSAGE_OVERHEAD_TOKENS for _, text in messages)
        prompt_tokens += count_tokens(msgspec.json.encode(tools).decode()) if tools else 0
        requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        max_tokens = self._max_tokens(prompt_tokens, requested)
        reply = self.responder.reply(
            body.model, messages, max_tokens=max_tokens, seed=body.seed, temperature=body.temperature, tools=tools
        )
        response_id = f"chatcmpl-{uuid.uuid4().hex}"
        usage = _usage(prompt_tokens, reply)
        chunks = ChatChunks(response_id, body.model) if body.stream else None

        def texts() -> tuple[bytes, bytes]:
            return _chat_bytes(messages, tools), _chat_bytes([("assistant", _reply_turn(reply))], [])

        streamed = await self._deliver(http_request, reply, usage, body.stream_options, chunks, texts)
        if streamed is not None:
            return streamed
        calls = [ToolCallRecord(id=c.id, function=FunctionCall(c.name, c.arguments)) for c in reply.tool_calls]
        message = ChatMessage(content=None, tool_calls=calls) if calls else ChatMessage(content=reply.text)
        choice = ChatChoice(index=0, message=message, finish_reason=reply.finish_reason)
        completion = ChatCompletion(
            id=response_id, created=int(time.time()), model=body.model, choices=[choice], usage=usage
        )
        return _json(completion)

    async def _completions(self, http_request: web.Request) -> web.StreamResponse:
        body = await _decode(http_request, CompletionRequest)
        self._check_model(body.model)
        self._check_sampling(body.n, body.temperature)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(prompts) != 1 or not prompts[0]:
            raise _RequestError(400, "prompt must be one non-empty string; batched prompts are not simulated.")
        prompt_tokens = count_tokens(prompts[0])
        max_tokens = self._max_tokens(prompt_tokens, body.max_tokens)
        reply = self.responder.reply(
            body.model, [("user", prompts[0])], max_tokens=max_tokens, seed=body.seed, temperature=body.temperature
        )
        response_id = f"cmpl-{uuid.uuid4().hex}"
        usage = _usage(prompt_tokens, reply)
        chunks = CompletionChunks(response_id, body.model) if body.stream else None

        def texts() -> tuple[bytes, bytes]:
            return prompts[0].encode(), reply.text.encode()

        streamed = await self._deliver(http_request, reply, usage, body.stream_options, chunks, texts)
        if streamed is not None:
            return streamed
        choice = CompletionChoice(index=0, text=reply.text, finish_reason=reply.finish_reason)
        completion = Completion(
            id=response_id, created=int(time.time()), model=body.model, choices=[choice], usage=usage
        )
        return _json(completion)

    async def _list_models(self, _: web.Request) -> web.Response:
        cards = [
            ModelCard(id=name, created=self._created, max_model_len=self.profile.max_model_len) for name in self._models
        ]
        return _json(ModelList(data=cards))

    async def _health(self, _: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _stats(self, _: web.Request) -> web.Response:
        return _json(self.stats())
