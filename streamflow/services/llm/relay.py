"""LLM calls that outlive the actor making them (``llm.relay``, on by default).

When a step actor dies, the requests it had sent die with it: the server aborts them, and the
rows, re-admitted elsewhere, send them again and wait for the whole answer once more (most of
a kill's cost in ``bench.chaos``). With the relay, a step actor's requests go through one
relay per node (a thread of the driver on the driver's node, a Ray actor on the others), which
sends each request, writes the answer to the run's response cache even when the caller is
gone, and hands it to the re-admitted row, which asks with the same cache key (``CallScope``)
and so joins the request still running or finds its answer.

Step actors reach their node's relay over a local Unix socket: a request and its answer are
two small msgpack frames on one connection that carries many at a time (a Ray actor call per
request cost about a millisecond of CPU). Until the relay listens (while it starts, or
restarts), requests go straight to the server and the step actor keeps their answers in the
cache itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from typing import Any

import msgspec
import ray

from streamflow.cluster import kill_actors
from streamflow.services.llm.cache import ResponseCache
from streamflow.services.llm.client import is_completion
from streamflow.services.llm.failures import LLMConnectionError, LLMError, LLMTimeout
from streamflow.services.llm.transport import HTTPTransport, Response, Transport

__all__ = [
    "LLMRelay",
    "RelayProcess",
    "RelayServer",
    "RelayTransport",
    "Relays",
    "listening_socket",
    "relay_address",
    "relay_addresses",
    "start_relays",
]

log = logging.getLogger(__name__)


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

        Failures come back as values, to be sent back to the caller.
        """
        sending = self._sending.get(key)
        if sending is None:
            cached = self._cache.get(key)
            if cached is not None:
                return Response(200, cached)
            sending = self._sending[key] = asyncio.ensure_future(self._send(key, url, body, headers, timeout_s))
        try:
            return await asyncio.shield(sending)  # a caller that goes away does not cancel the request
        except LLMError as exc:
            return exc

    async def _send(self, key: bytes, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Response:
        try:
            reply = await self._transport.post(url, body, headers, timeout_s)
            _keep_completion(self._cache, key, reply)
            return reply
        finally:
            del self._sending[key]

    async def serve(self, server_socket: socket.socket) -> None:
        """Answer the requests of every connection to ``server_socket`` until cancelled.

        Stopping closes the callers' connections and abandons the requests still running (their
        callers retry them), so it never waits for a caller to hang up.
        """
        answering: set[asyncio.Task[None]] = set()
        connections: set[asyncio.StreamWriter] = set()

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.add(writer)
            try:
                while True:
                    seq, key, url, body, headers, timeout_s = _decode_request(await _read_frame(reader))
                    task = asyncio.ensure_future(self._answer(writer, seq, key, url, body, headers, timeout_s))
                    answering.add(task)
                    task.add_done_callback(answering.discard)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass  # the caller went away; its requests go on and their answers are kept
            except asyncio.CancelledError:
                return  # the relay stops (asyncio 3.11 would log a cancelled connection as an error)
            finally:
                connections.discard(writer)
                writer.close()

        server: asyncio.Server | None = None
        try:
            server = await asyncio.start_unix_server(connection, sock=server_socket)
            await asyncio.Event().wait()  # until cancelled
        finally:
            if server is not None:
                server.close()  # not wait_closed(): from Python 3.12.1 it waits for every caller to hang up
            server_socket.close()
            for writer in list(connections):
                writer.close()
            running: list[asyncio.Future[Any]] = [*answering, *self._sending.values()]
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            await self._transport.close()
            self._cache.close()

    async def _answer(
        self,
        writer: asyncio.StreamWriter,
        seq: int,
        key: bytes,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        timeout_s: float,
    ) -> None:
        try:
            answer = await self.post(key, url, body, headers, timeout_s)
        except Exception as exc:  # a bug here must not leave the caller waiting for ever
            log.exception("the LLM relay failed on a request to %s", url)
            answer = LLMConnectionError(f"the LLM relay failed: {type(exc).__name__}: {exc}")
        if writer.is_closing():
            return
        if isinstance(answer, Response):
            writer.write(_frame(_ENCODER.encode((seq, answer.status, answer.body, answer.headers))))
        else:
            writer.write(_frame(_ENCODER.encode((seq, None, answer.kind, str(answer)))))


class RelayServer:
    """A relay served from a thread of this process: it takes connections once constructed, until ``stop``."""

    def __init__(self, cache_path: str, address: str) -> None:
        self.address = address
        server_socket = listening_socket(address)
        try:
            relay = LLMRelay(cache_path)
        except BaseException:
            server_socket.close()
            raise
        self._serving: tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._serve(relay, server_socket),), name="llm-relay", daemon=True
        )
        self._thread.start()

    async def _serve(self, relay: LLMRelay, server_socket: socket.socket) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._serving = (asyncio.get_running_loop(), task)
        self._started.set()
        with contextlib.suppress(asyncio.CancelledError):
            await relay.serve(server_socket)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop listening, close the relay's connections and wait for its thread."""
        self._started.wait(timeout_s)
        if self._serving is not None:
            loop, task = self._serving
            with contextlib.suppress(RuntimeError):  # its loop has already ended
                loop.call_soon_threadsafe(task.cancel)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("the LLM relay at %r did not stop within %g s", self.address, timeout_s)


class RelayProcess:
    """The Ray actor hosting the relay of a node other than the driver's; Ray restarts it when it dies.

    The socket is bound before the constructor returns, so a relay that Ray reports alive takes
    connections.
    """

    def __init__(self, cache_path: str, address: str) -> None:
        self._server = RelayServer(cache_path, address)

    def ready(self) -> str:
        """The address it listens on (for tests and tools that wait for it)."""
        return self._server.address


class RelayTransport:
    """A step actor's transport when its node has a relay: requests with a cache key go through it."""

    keeps_answers = True
    """Answers are kept in the cache by the relay, or by this transport for requests it sent itself."""

    def __init__(
        self,
        address: str,
        cache: ResponseCache | None,
        *,
        direct: Transport | None = None,
        retry_s: float = 0.5,
    ) -> None:
        self._address = address
        self._cache = cache
        self._direct: Transport = direct or HTTPTransport()
        self._retry_s = retry_s
        self._connection: _RelayConnection | None = None
        self._connecting: asyncio.Future[_RelayConnection | None] | None = None
        self._next_try = 0.0

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float, key: bytes | None = None
    ) -> Response:
        if key is not None:
            connection = await self._connect()
            if connection is not None:
                return await connection.post(key, url, body, headers, timeout_s)
        reply = await self._direct.post(url, body, headers, timeout_s)
        if key is not None and self._cache is not None:
            _keep_completion(self._cache, key, reply)
        return reply

    async def get(self, url: str, headers: Mapping[str, str], timeout_s: float) -> Response:
        return await self._direct.get(url, headers, timeout_s)

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
        await self._direct.close()

    async def _connect(self) -> _RelayConnection | None:
        """The connection to the relay; None while it does not listen (tried again every ``retry_s``)."""
        connection = self._connection
        if connection is not None and not connection.closed:
            return connection
        if self._connecting is None:
            if time.monotonic() < self._next_try:
                return None
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(self._opened)
        return await asyncio.shield(self._connecting)  # callers meanwhile wait for the same attempt

    async def _open(self) -> _RelayConnection | None:
        self._next_try = time.monotonic() + self._retry_s
        try:
            reader, writer = await asyncio.open_unix_connection(self._address)
        except OSError:
            return None
        self._connection = _RelayConnection(reader, writer)
        return self._connection

    def _opened(self, attempt: asyncio.Future[_RelayConnection | None]) -> None:
        self._connecting = None


class _RelayConnection:
    """One step actor's connection to its relay; many requests in flight, answered in any order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._waiting: dict[int, asyncio.Future[Response]] = {}
        self._numbers = itertools.count()
        self.closed = False
        self._reading = asyncio.ensure_future(self._read(reader))

    async def post(self, key: bytes, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Response:
        seq = next(self._numbers)
        loop = asyncio.get_running_loop()
        answer = self._waiting[seq] = loop.create_future()
        expiry = loop.call_later(timeout_s + _GRACE_S, _expire, answer, timeout_s + _GRACE_S)
        try:
            self._writer.write(_frame(_ENCODER.encode((seq, key, url, body, headers, timeout_s))))
            return await answer
        finally:
            expiry.cancel()
            self._waiting.pop(seq, None)

    def close(self) -> None:
        self._reading.cancel()
        self._writer.close()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                seq, status, first, second = _decode_answer(await _read_frame(reader))
                answer = self._waiting.get(seq)
                if answer is None or answer.done():
                    continue  # its caller gave up
                if status is None:
                    answer.set_exception(_ERRORS.get(first, LLMConnectionError)(second))
                else:
                    answer.set_result(Response(status, first, second))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed = True
            self._writer.close()
            for answer in self._waiting.values():
                if not answer.done():  # retried by the client like a lost connection
                    answer.set_exception(LLMConnectionError("the LLM relay of this node went away mid-call"))


def relay_addresses() -> dict[str, str]:
    """Where the relay of each alive node will listen: node id -> address, unique to this run."""
    run_token = secrets.token_hex(4)
    return {node["NodeID"]: relay_address(run_token, node["NodeID"]) for node in ray.nodes() if node["Alive"]}


def relay_address(run_token: str, node_id: str) -> str:
    """An abstract Unix socket on Linux (no file to clean up), else a file in the temporary directory."""
    name = f"streamflow-relay-{run_token}-{node_id[:16]}"
    if sys.platform == "linux":
        return "\0" + name
    return os.path.join(tempfile.gettempdir(), name + ".sock")


class Relays:
    """The relays of a run: the caller's node's in this process, the other nodes' in Ray actors."""

    def __init__(self, here: RelayServer | None, actors: Mapping[str, Any]) -> None:
        self.here = here
        self.actors = dict(actors)
        """Node id -> the ``RelayProcess`` actor of that node."""

    def stop(self) -> None:
        """Stop every relay (the run is over)."""
        if self.here is not None:
            self.here.stop()
        kill_actors(self.actors.values())


def start_relays(cache_path: str, addresses: Mapping[str, str]) -> Relays:
    """Start the relay of every node in ``addresses``: the caller's (the driver's) node's in this process.

    The driver's node needs no process of its own for it: one process fewer to start. The other
    nodes' are Ray actors, not waited for: until one listens, its node's step actors send their
    requests directly.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node_here = ray.get_runtime_context().get_node_id()
    here = RelayServer(cache_path, addresses[node_here]) if node_here in addresses else None
    actor = ray.remote(RelayProcess)
    try:
        actors = {
            node_id: actor.options(
                num_cpus=0,
                max_restarts=-1,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            ).remote(cache_path, address)
            for node_id, address in addresses.items()
            if node_id != node_here
        }
    except BaseException:
        if here is not None:
            here.stop()
        raise
    return Relays(here, actors)


_LENGTH = struct.Struct(">I")
_ENCODER = msgspec.msgpack.Encoder()
_decode_request = msgspec.msgpack.Decoder(tuple[int, bytes, str, bytes, dict[str, str], float]).decode
_decode_answer = msgspec.msgpack.Decoder(tuple[int, int | None, Any, Any]).decode
_ERRORS: dict[str, type[LLMError]] = {error.kind: error for error in (LLMConnectionError, LLMTimeout)}
"""The failures a relay's HTTP transport raises; anything else comes back as a connection error."""


_GRACE_S = 30.0
"""How long past a request's own timeout a step actor waits for its relay's answer before giving up."""


def _expire(answer: asyncio.Future[Response], after_s: float) -> None:
    if not answer.done():  # retried by the client like a timeout
        answer.set_exception(LLMTimeout(f"the LLM relay of this node gave no answer within {after_s:g} s"))


def _keep_completion(cache: ResponseCache, key: bytes, reply: Response) -> None:
    """Keep ``reply`` under ``key`` if it is a completion the client accepts (never an error or a proxy's page)."""
    if reply.status == 200 and is_completion(reply.body):
        cache.put(key, reply.body)


def _frame(payload: bytes) -> bytes:
    return _LENGTH.pack(len(payload)) + payload


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return await reader.readexactly(length)


def listening_socket(address: str) -> socket.socket:
    """A listening Unix socket at ``address`` (a stale file of an earlier incarnation is replaced)."""
    server_socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if not address.startswith("\0") and os.path.exists(address):
        os.unlink(address)
    server_socket.bind(address)
    server_socket.listen(1024)
    server_socket.setblocking(False)
    return server_socket
