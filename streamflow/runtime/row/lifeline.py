"""Lifelines: a TCP connection from each wired step replica to the driver, which the kernel closes when the replica dies.

Ray tells a caller that an actor died a second or two after the fact (measured on a 2-core
machine: 1.2-1.8 s after ``ray.kill``, and the census learns it the same way); the socket of
a dead process is closed at once (20-30 ms). So the driver re-admits the rows a dead replica
held, and stops sending it rows, while Ray is still noticing. A replica that cannot connect
(the driver's address is not reachable from its node) runs without one; the census still
finds its death, later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import msgspec

__all__ = ["Address", "Lifelines", "hold_lifeline"]

log = logging.getLogger(__name__)

Address = tuple[str, int]
"""Host and port of the driver's lifeline server."""

CONNECT_TIMEOUT_S = 5.0

DeathHandler = Callable[[tuple[str, int], str], None]
"""Called with the replica (group, index) and the incarnation whose lifeline broke."""


class Lifelines:
    """The driver's end: a server whose connections report, by closing, the death of the replica at the other end."""

    def __init__(self, on_death: DeathHandler) -> None:
        self.on_death = on_death
        self._server: asyncio.Server | None = None
        self._closing = False

    async def start(self, host: str) -> Address:
        """Listen on ``host`` (the driver node's address, which replicas on other nodes reach) and return the address."""
        self._server = await asyncio.start_server(self._serve, host, 0)
        port = self._server.sockets[0].getsockname()[1]
        return host, port

    def close(self) -> None:
        """Stop listening; connections that close from now on (the run is ending) report nothing."""
        self._closing = True
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            group, index, incarnation = msgspec.json.decode(await reader.readline(), type=tuple[str, int, str])
        except (msgspec.DecodeError, ConnectionError):
            writer.close()
            return
        with contextlib.suppress(ConnectionError):
            await reader.read()  # nothing more is sent: this returns when the connection closes
        writer.close()
        if not self._closing:
            self.on_death((group, index), incarnation)


async def hold_lifeline(
    address: Address | None, group: str, index: int, incarnation: str
) -> asyncio.StreamWriter | None:
    """The replica's end: connect and say who it is; the caller keeps the writer for as long as its process lives."""
    if address is None:
        return None
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(*address), CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        log.warning("no lifeline to the driver at %s:%d (%s); its death will be found by the census", *address, exc)
        return None
    writer.write(msgspec.json.encode((group, index, incarnation)) + b"\n")
    await writer.drain()
    return writer
