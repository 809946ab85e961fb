"""Peer-to-peer hops between actors, coalesced per destination.

One Ray actor call costs about 1 ms of CPU back to back, and 2-4 ms (both processes) when
calls trickle in, so sending each row on its own caps a 3-hop pipeline at a few hundred
rows/s. An ``Outbox`` instead buffers the rows bound for the same actor and ships them as
one encoded batch when ``flush_rows`` are waiting or ``flush_ms`` after the first one
arrived, whichever comes first. It never waits for a barrier: a lone row leaves after at
most ``flush_ms``. Finished rows bound for a sink may wait longer (the peer's own
``flush_ms``): their latency only delays when their admission slot is freed.

Each ``push`` answers with the receiver's current load, which ``Peers.pick`` uses to
send the next row to the least-loaded replica; rows sent and not answered yet count too,
so a replica that stopped answering (it died, and Ray holds the calls until it is back)
stops getting rows at once. A replica whose delivery failed is avoided for
``AVOID_FAILED_S``, and one the driver knows to be restarting (``Peer.down``) until it is
wired again; the rows of a failed batch are reported to ``on_failure`` and recovered by
the driver.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from streamflow.config import TransportConfig
from streamflow.message import Message
from streamflow.runtime.row.offload import Offloader, encode_rows

__all__ = ["Outbox", "Peer", "Peers", "sink_peers"]

log = logging.getLogger(__name__)

FailureHandler = Callable[["Peer", list[Message], BaseException], None]

AVOID_FAILED_S = 2.0
FAILED_LOAD = 1 << 30


class Peer:
    """A destination actor, its outgoing buffer, its last reported load and the rows it has not answered for."""

    __slots__ = ("buffer", "down", "flush_s", "handle", "load", "name", "timer", "unanswered")

    def __init__(self, name: str, handle: Any, *, flush_ms: float | None = None) -> None:
        self.name = name
        self.handle = handle
        self.flush_s = None if flush_ms is None else max(0.0, flush_ms) / 1000.0
        """How long rows for this peer may wait to leave together; None: the outbox's ``flush_ms``."""
        self.buffer: list[Message] = []
        self.load = 0
        self.unanswered = 0
        """Rows of batches on their way to the peer: not in its reported load yet."""
        self.down = False
        """Set by the driver while the replica restarts: ``pick`` passes it over while another is up."""
        self.timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"Peer({self.name})"


class Peers:
    """The replicas of one step, picked by least known load (reported load + rows buffered or on their way)."""

    __slots__ = ("_next", "replicas")

    def __init__(self, replicas: Sequence[Peer]) -> None:
        self.replicas = list(replicas)
        self._next = 0

    def pick(self) -> Peer:
        replicas = self.replicas
        if len(replicas) == 1:
            return replicas[0]
        # Start the scan at a rotating offset so ties spread evenly.
        self._next = (self._next + 1) % len(replicas)
        best = replicas[self._next]
        best_load = _known_load(best)
        for peer in replicas:
            load = _known_load(peer)
            if load < best_load:
                best, best_load = peer, load
        return best


def _known_load(peer: Peer) -> float:
    if peer.down:
        return math.inf
    return peer.load + len(peer.buffer) + peer.unanswered


def sink_peers(sinks: Sequence[Any], transport: TransportConfig) -> list[Peer]:
    """The sinks as peers: finished rows wait up to ``transport.sink_flush_ms`` to leave together."""
    return [Peer(f"sink[{i}]", handle, flush_ms=transport.sink_flush_ms) for i, handle in enumerate(sinks)]


class Outbox:
    """Coalesces rows per destination and ships them with ``handle.push.remote(payload[, refs])``.

    With an ``offloader``, large field values of a batch are put in the object store (one put
    call per batch) just before it leaves, and travel as refs beside the payload.
    """

    def __init__(
        self,
        *,
        flush_rows: int = 64,
        flush_ms: float = 1.0,
        on_failure: FailureHandler | None = None,
        offloader: Offloader | None = None,
    ) -> None:
        self.flush_rows = max(1, flush_rows)
        self.flush_s = max(0.0, flush_ms) / 1000.0
        self.on_failure = on_failure
        self.offloader = offloader
        self.batches_sent = 0
        self.rows_sent = 0
        self.bytes_sent = 0
        self._pending: dict[asyncio.Future[Any], list[Message]] = {}
        self._buffering: set[Peer] = set()

    def send(self, peer: Peer, message: Message) -> None:
        """Queue ``message`` for ``peer``; it leaves within ``flush_ms`` (or the peer's own)."""
        message.sent_at = time.time()
        if not peer.buffer:
            self._buffering.add(peer)
        peer.buffer.append(message)
        if len(peer.buffer) >= self.flush_rows:
            self.flush(peer)
        elif peer.timer is None:
            delay = self.flush_s if peer.flush_s is None else peer.flush_s
            peer.timer = asyncio.get_running_loop().call_later(delay, self.flush, peer)

    def flush(self, peer: Peer) -> None:
        """Ship what is buffered for ``peer`` now."""
        if peer.timer is not None:
            peer.timer.cancel()
            peer.timer = None
        self._buffering.discard(peer)
        if not peer.buffer:
            return
        batch, peer.buffer = peer.buffer, []
        self.batches_sent += 1
        self.rows_sent += len(batch)
        future = asyncio.ensure_future(self._deliver(peer, batch))
        self._pending[future] = batch
        future.add_done_callback(self._delivered)

    async def drain(self, peers: Sequence[Peer] = ()) -> None:
        """Flush ``peers`` and wait until every batch sent so far was delivered."""
        for peer in peers:
            self.flush(peer)
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    def held_roots(self) -> list[str]:
        """Input row ids of every row buffered or being delivered (the driver renews their leases)."""
        held = [row.root_id for peer in self._buffering for row in peer.buffer]
        held.extend(row.root_id for batch in self._pending.values() for row in batch)
        return held

    @property
    def pending(self) -> int:
        """Batches sent whose delivery is not confirmed yet."""
        return len(self._pending)

    async def _deliver(self, peer: Peer, batch: list[Message]) -> None:
        peer.unanswered += len(batch)
        try:
            rows = batch if self.offloader is None else await self.offloader.pack(batch)
            payload, refs = encode_rows(rows)
            self.bytes_sent += len(payload)
            if refs:
                peer.load = await peer.handle.push.remote(payload, refs)
            else:
                peer.load = await peer.handle.push.remote(payload)
        except Exception as exc:
            log.info("delivery of %d rows to %s failed: %s", len(batch), peer.name, type(exc).__name__)
            peer.load = FAILED_LOAD
            asyncio.get_running_loop().call_later(AVOID_FAILED_S, _forgive, peer)
            if self.on_failure is not None:
                self.on_failure(peer, batch, exc)
        finally:
            peer.unanswered -= len(batch)

    def _delivered(self, future: asyncio.Future[Any]) -> None:
        self._pending.pop(future, None)


def _forgive(peer: Peer) -> None:
    """Let ``pick`` try a failed replica again (Ray has restarted it by now, or it fails again)."""
    if peer.load == FAILED_LOAD:
        peer.load = 0
