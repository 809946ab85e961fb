"""How a request reaches an OpenAI-compatible server: one small contract, two implementations.

``HTTPTransport`` talks HTTP through one aiohttp connection pool per process; a test can
pass any object with the same ``post`` method (see ``streamflow.testing.ScriptedTransport``).
A ``CachingTransport`` (the LLM relay's) also takes each request's response-cache key and
writes the answers to the cache itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, cast

import aiohttp
import msgspec

from streamflow.services.llm.failures import LLMConnectionError, LLMTimeout

__all__ = ["CachingTransport", "HTTPTransport", "Response", "Transport", "caching"]


class Response(msgspec.Struct, frozen=True):
    """What came back: status, headers (lower-case names) and the raw body."""

    status: int
    body: bytes
    headers: Mapping[str, str] = {}


class Transport(Protocol):
    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Response:
        """Send one POST; raise ``LLMConnectionError`` or ``LLMTimeout`` when no answer arrives."""
        ...

    async def get(self, url: str, headers: Mapping[str, str], timeout_s: float) -> Response:
        """Send one GET (health checks, model lists)."""
        ...

    async def close(self) -> None: ...


class CachingTransport(Transport, Protocol):
    """A transport that takes each request's response-cache key and keeps the answers itself."""

    keeps_answers: bool
    """True: the client does not write the answers to the cache again."""

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float, key: bytes | None = None
    ) -> Response: ...


def caching(transport: Transport) -> CachingTransport | None:
    """``transport`` if it keeps the answers to the requests whose cache key it is given, else None."""
    return cast("CachingTransport", transport) if getattr(transport, "keeps_answers", False) else None


class HTTPTransport:
    """aiohttp with one pooled session, created lazily inside the running event loop."""

    def __init__(self, *, max_connections: int = 0) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Response:
        return await self._request("POST", url, body, headers, timeout_s)

    async def get(self, url: str, headers: Mapping[str, str], timeout_s: float) -> Response:
        return await self._request("GET", url, None, headers, timeout_s)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str], timeout_s: float
    ) -> Response:
        session = self._ensure_session()
        try:
            async with session.request(
                method, url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as reply:
                payload = await reply.read()
                return Response(reply.status, payload, {k.lower(): v for k, v in reply.headers.items()})
        except TimeoutError as exc:
            msg = f"{method} {url} got no answer within {timeout_s:g} s"
            raise LLMTimeout(msg) from exc
        except aiohttp.ClientError as exc:
            msg = f"{method} {url} failed: {type(exc).__name__}: {exc}"
            raise LLMConnectionError(msg) from exc

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session
