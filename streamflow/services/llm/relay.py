"""LLM calls that outlive the actor making them (``llm.relay=true``).

When a step actor dies, the requests it had sent die with it: the server aborts them, and the
rows, re-admitted elsewhere, send them again and wait for the whole answer once more (about
half of a kill's cost in ``bench.chaos``). With the relay, a step actor's requests go through
one relay actor per node, created by the driver, which sends each request, writes the answer
to the run's response cache even when the caller is gone, and hands it to the re-admitted row,
which asks with the same cache key (``CallScope``) and so joins the request still running or
finds its answer. The price: one local Ray call per LLM call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import ray

from streamflow.services.llm.cache import ResponseCache
from streamflow.services.llm.client import is_completion
from streamflow.services.llm.failures import LLMConnectionError, LLMError
from streamflow.services.llm.transport import HTTPTransport, Response, Transport

__all__ = ["LLMRelay", "RelayTransport", "start_relays"]


class LLMRelay:
    """Sends requests for the step actors of its node; one request per cache key at a time."""

    def __init__(self, cache_path: str, transport: Transport | None = None) -> None:
        self._transport: Transport = transport or HTTPTransport()
        self._cache = ResponseCache(cache_path)
        self._sending: dict[bytes, asyncio.Future[Response]] = {}

    async def post(
        self, key: bytes, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> Response | LLMError:
        """The answer to the request ``key`` names: the one running, else the cached one, else a new one.

        Failures come back as values (a Ray call would wrap a raised one).
        """
        sending = self._sending.get(key)
        if sending is None:
            cached = self._cache.get(key)
            if cached is not None:
                return Response(200, cached)
            sending = self._sending[key] = asyncio.ensure_future(self._send(key, url, body, headers, timeout_s))
        try:
            return await asyncio.shield(sending)  # a caller that dies does not cancel the request
        except LLMError as exc:
            return exc

    async def _send(self, key: bytes, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Response:
        try:
            reply = await self._transport.post(url, body, headers, timeout_s)
            if reply.status == 200 and is_completion(reply.body):
                self._cache.put(key, reply.body)
            return reply
        finally:
            del self._sending[key]


class RelayTransport:
    """A step actor's transport when its node has a relay: requests with a cache key go through it."""

    keeps_answers = True
    """The relay writes answers to the response cache itself (the client does not write them again)."""

    def __init__(self, relay: Any) -> None:
        self._relay = relay
        self._direct = HTTPTransport()

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float, key: bytes | None = None
    ) -> Response:
        if key is None:
            return await self._direct.post(url, body, headers, timeout_s)
        try:
            answer = await self._relay.post.remote(key, url, body, dict(headers), timeout_s)
        except ray.exceptions.RayActorError as exc:  # restarting: the call is retried like a lost connection
            msg = f"the LLM relay of this node is unavailable ({type(exc).__name__})"
            raise LLMConnectionError(msg) from exc
        if isinstance(answer, LLMError):
            raise answer
        return answer

    async def get(self, url: str, headers: Mapping[str, str], timeout_s: float) -> Response:
        return await self._direct.get(url, headers, timeout_s)

    async def close(self) -> None:
        await self._direct.close()


def start_relays(cache_path: str) -> dict[str, Any]:
    """One relay actor on every alive node (owned by the caller, the driver); node id -> handle."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    actor = ray.remote(LLMRelay)
    return {
        node["NodeID"]: actor.options(
            num_cpus=0,
            max_restarts=-1,
            max_concurrency=100_000,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
        ).remote(cache_path)
        for node in ray.nodes()
        if node["Alive"]
    }
