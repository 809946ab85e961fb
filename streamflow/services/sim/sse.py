"""Server-sent-event streaming of a simulated reply, paced by the batching engine's token clock."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

import msgspec
from aiohttp import web

from streamflow.services.sim.engine import SimRequest
from streamflow.services.sim.protocol import (
    ChatChunk,
    ChatChunkChoice,
    CompletionChoice,
    CompletionChunk,
    Delta,
    Usage,
)
from streamflow.services.sim.responder import Reply
from streamflow.services.sim.tokens import truncate_tokens

__all__ = ["ChatChunks", "Chunks", "CompletionChunks", "stream_reply"]

logger = logging.getLogger(__name__)
_ENCODER = msgspec.json.Encoder()


class Chunks(Protocol):
    """Builds the JSON events of one endpoint's stream."""

    def opening(self) -> list[msgspec.Struct]:
        """Events sent with the first token, before any text."""
        ...

    def piece(self, text: str) -> msgspec.Struct:
        """Event carrying newly generated text."""
        ...

    def closing(self, finish_reason: str) -> msgspec.Struct:
        """Event carrying the finish reason."""
        ...

    def usage(self, usage: Usage) -> msgspec.Struct:
        """Usage-only event sent last when the client asked for ``stream_options.include_usage``."""
        ...


class ChatChunks(Chunks):
    """``chat.completion.chunk`` events: a role delta first, then content deltas, then an empty delta."""

    def __init__(self, response_id: str, model: str) -> None:
        self._id, self._model, self._created = response_id, model, int(time.time())

    def _chunk(self, choices: list[ChatChunkChoice], usage: Usage | None = None) -> ChatChunk:
        return ChatChunk(id=self._id, created=self._created, model=self._model, choices=choices, usage=usage)

    def opening(self) -> list[msgspec.Struct]:
        return [self._chunk([ChatChunkChoice(index=0, delta=Delta(role="assistant", content=""))])]

    def piece(self, text: str) -> msgspec.Struct:
        return self._chunk([ChatChunkChoice(index=0, delta=Delta(content=text))])

    def closing(self, finish_reason: str) -> msgspec.Struct:
        return self._chunk([ChatChunkChoice(index=0, delta=Delta(), finish_reason=finish_reason)])

    def usage(self, usage: Usage) -> msgspec.Struct:
        return self._chunk([], usage)


class CompletionChunks(Chunks):
    """``text_completion`` events: text pieces, then an empty piece with the finish reason."""

    def __init__(self, response_id: str, model: str) -> None:
        self._id, self._model, self._created = response_id, model, int(time.time())

    def _chunk(self, choices: list[CompletionChoice], usage: Usage | None = None) -> CompletionChunk:
        return CompletionChunk(id=self._id, created=self._created, model=self._model, choices=choices, usage=usage)

    def opening(self) -> list[msgspec.Struct]:
        return []

    def piece(self, text: str) -> msgspec.Struct:
        return self._chunk([CompletionChoice(index=0, text=text, finish_reason=None)])

    def closing(self, finish_reason: str) -> msgspec.Struct:
        return self._chunk([CompletionChoice(index=0, text="", finish_reason=finish_reason)])

    def usage(self, usage: Usage) -> msgspec.Struct:
        return self._chunk([], usage)


async def _send(response: web.StreamResponse, event: msgspec.Struct) -> None:
    await response.write(b"data: " + _ENCODER.encode(event) + b"\n\n")


async def stream_reply(
    http_request: web.Request,
    sim: SimRequest,
    reply: Reply,
    chunks: Chunks,
    *,
    usage: Usage | None,
    interval_s: float,
) -> web.StreamResponse:
    """Send ``reply`` as SSE: text appears as the engine generates it, polled every ``interval_s`` seconds.

    Tokens generated between polls go out as one chunk, so CPU cost depends on the poll interval, not
    on the token rate. A client that disconnects aborts the request and frees its engine slot.
    """
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(http_request)
    try:
        await sim.first_token()
        for event in chunks.opening():
            await _send(response, event)
        sent = ""
        while True:
            finished = sim.done()
            visible = reply.text if finished else truncate_tokens(reply.text, sim.decoded_tokens())
            if len(visible) > len(sent):
                await _send(response, chunks.piece(visible[len(sent) :]))
                sent = visible
            if finished:
                break
            await sim.poll(interval_s)
        await _send(response, chunks.closing(reply.finish_reason))
        if usage is not None:
            await _send(response, chunks.usage(usage))
        await response.write(b"data: [DONE]\n\n")
    except ConnectionResetError:
        logger.debug("client went away during a streamed reply; aborting it")
        sim.abort()
    except asyncio.CancelledError:
        sim.abort()
        raise
    return response
