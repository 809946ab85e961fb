"""The sink actor: writes finished rows as Parquet parts, exactly once, and reports them to the driver.

Several sinks run side by side, each owning the input rows whose id hashes to it, so every
piece of one row (and every copy of a re-admitted row) reaches the same sink. A sink drops
a piece whose id it has already taken, which makes the output exactly-once even when a row
is re-admitted while its first copy still lives. It only keeps the ids the driver may still
send twice: the driver tells it to forget a row once that row is committed and was never
re-admitted (``retire``).

The driver long-polls ``completions`` for two lists: rows *accepted* (their admission slots
can be reused) and rows *committed* in a part on disk (they can no longer be lost). A part
is committed every ``part_rows`` rows, when its oldest row has waited ``commit_s``, or on
``flush``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import zlib
from collections import deque
from collections.abc import Sequence
from typing import Any

import msgspec
import pyarrow as pa
import ray

from streamflow.budget import first_line
from streamflow.config import EventsConfig
from streamflow.events import SINK_STEP, recorder, write_when_due
from streamflow.io.arrow import skip_pandas_probe
from streamflow.io.parts import PartWriter, part_row_ids
from streamflow.message import Message
from streamflow.result import TransferStats
from streamflow.runtime.row.offload import Offloader, ValueLost, decode_rows, local_put
from streamflow.runtime.row.restart import was_restarted

__all__ = ["Completion", "Completions", "SinkActor", "decode_completions", "sink_shard"]

log = logging.getLogger(__name__)

Completion = tuple[str, str, int, int, str, float]
"""(row id, input row id, share numerator, share denominator, status, seconds since admission) of one output row."""


Completions = tuple[str, list[Completion], list[Completion]]
"""``(incarnation, accepted, committed)``; a new incarnation means the sink restarted."""

_encode_completions = msgspec.msgpack.Encoder().encode
_decode_completions = msgspec.msgpack.Decoder(Completions).decode


def decode_completions(payload: bytes) -> Completions:
    """What ``SinkActor.completions`` answered (msgpack: pickling thousands of tuples costs the driver ~10x more)."""
    return _decode_completions(payload)


def sink_shard(root_id: str, sinks: int) -> int:
    """The sink that owns an input row: every piece of one row lands in the same shard."""
    return zlib.crc32(root_id.encode()) % sinks


class SinkActor:
    """Owns one shard of the output."""

    def __init__(
        self,
        directory: str,
        schema: pa.Schema,
        shard: int,
        part_rows: int,
        commit_s: float = 30.0,
        *,
        events_dir: str = "",
        events: EventsConfig | None = None,
        claim: str | None = None,
    ) -> None:
        logging.basicConfig(level=logging.WARNING)
        skip_pandas_probe()  # its Arrow arrays are built from Python values: no pandas import
        prefix = f"part-{shard:03d}"
        self._events = recorder(events_dir, SINK_STEP, shard, events)
        self._writing_events: asyncio.Task[None] | None = None
        self.incarnation = uuid.uuid4().hex
        # Parts are committed only under the run's claim on the directory, also by an incarnation
        # Ray restarted after another run took the directory over (it reads no claim of its own).
        self._writer = PartWriter(directory, schema, prefix=prefix, part_rows=part_rows, claim=claim)
        self._commit_s = commit_s
        self._lock = asyncio.Lock()
        # After a restart the ids of this shard's committed parts are reloaded: a row the driver
        # re-admits because it never heard of its commit is dropped, and reported as committed.
        self._recovered: dict[str, str] = part_row_ids(directory, prefix) if was_restarted() else {}
        self._seen: set[str] = set(self._recovered)
        self._pieces: dict[str, list[str]] = {}
        self._accepted: list[Completion] = []
        self._committed: list[Completion] = []
        self._buffered: deque[Completion] = deque()
        self._oldest: float | None = None
        self._arrived = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None
        self._moved = 0
        self._fetcher: Offloader | None = None
        self._error_samples: dict[str, str] = {}
        self.rows = 0
        self.duplicates = 0

    async def push(self, payload: bytes, refs: Sequence[Any] = ()) -> int:
        """Accept finished rows (``refs``: of their offloaded values); answers with completions not yet collected."""
        received_at = time.time()
        rows, duplicates = self._new(decode_rows(payload, refs))
        if refs and rows:
            rows = await self._fetch(rows)
        if rows:
            async with self._lock:
                started_at = time.time()
                if self._writer.writes_a_part(len(rows)):  # compressing and writing a part: off the event loop
                    written = await asyncio.to_thread(self._writer.append, rows)
                else:  # converting a batch holds the GIL anyway: a thread would only add a hand-off
                    written = self._writer.append(rows)
                now = time.time()
                done = [(r.id, r.root_id, r.share[0], r.share[1], r.status, now - r.admitted_at) for r in written]
                for row in written:
                    if row.error is not None and row.status.startswith("error:"):
                        self._error_samples[row.status] = row.error
                self._record(written, received_at, started_at, now, duplicate=False)
                self._accepted.extend(done)
                self._buffered.extend(done)
                if self._oldest is None:
                    self._oldest = time.monotonic()
                self._move_committed()
            self.rows += len(written)
            self._arrived.set()
            if self._timer is None:
                self._timer = asyncio.create_task(self._commit_when_old())
        self._record(duplicates, received_at, received_at, received_at, duplicate=True)
        return len(self._accepted)

    async def completions(self, wait_s: float = 0.5, retire: Sequence[str] = ()) -> bytes:
        """Rows accepted and committed since the last call (``decode_completions`` reads them); waits up to ``wait_s``.

        ``retire`` names input rows the driver has seen committed and will never send again.
        """
        for root in retire:
            self._seen.discard(root)
            self._recovered.pop(root, None)
            for piece in self._pieces.pop(root, ()):
                self._seen.discard(piece)
                self._recovered.pop(piece, None)
        if not self._accepted and not self._committed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), wait_s)
        accepted, self._accepted = self._accepted, []
        committed, self._committed = self._committed, []
        self._arrived.clear()
        return _encode_completions((self.incarnation, accepted, committed))

    async def flush(self) -> None:
        """Commit whatever is buffered now (the driver calls this when every row was accepted)."""
        async with self._lock:
            await asyncio.to_thread(self._writer.flush)
            self._move_committed()
        if self._events is not None:
            await asyncio.to_thread(self._events.flush)

    async def close(self) -> list[str]:
        """Write what is buffered; returns the paths of every part this sink wrote."""
        for task in (self._timer, self._writing_events):
            if task is not None:
                task.cancel()
        async with self._lock:
            paths = await asyncio.to_thread(self._writer.close)
            self._move_committed()
        if self._events is not None:
            await asyncio.to_thread(self._events.flush)
        return paths

    async def transfer(self) -> TransferStats:
        """Bytes of offloaded values this sink fetched."""
        return self._fetcher.stats if self._fetcher is not None else TransferStats()

    async def error_samples(self) -> dict[str, str]:
        """The first line of the error of the last row written with each ``error:*`` status (for the stop line)."""
        return {status: first_line(error) for status, error in self._error_samples.items()}

    async def held(self) -> int:
        """How many ids this sink remembers for de-duplication (bounded by rows not yet retired)."""
        return len(self._seen)

    def _new(self, rows: list[Message]) -> tuple[list[Message], list[Message]]:
        """The rows whose id this sink has not taken before (it remembers them), and the others."""
        seen = self._seen
        fresh, duplicates = [], []
        for row in rows:
            if row.id in seen:
                self.duplicates += 1
                duplicates.append(row)
                status = self._recovered.get(row.id)
                if status is not None:  # committed by an earlier incarnation: the driver may not know
                    self._committed.append((row.id, row.root_id, row.share[0], row.share[1], status, 0.0))
                    self._arrived.set()
                continue
            seen.add(row.id)
            if row.root and row.root != row.id:
                self._pieces.setdefault(row.root, []).append(row.id)
            fresh.append(row)
        return fresh, duplicates

    async def _fetch(self, rows: list[Message]) -> list[Message]:
        """The rows with their offloaded values fetched; a row whose value is lost is left for re-admission."""
        if self._fetcher is None:
            self._fetcher = Offloader(0, local_put, ray.get_runtime_context().get_node_id())
        fetched = await asyncio.gather(*(self._fetcher.fetch(row) for row in rows), return_exceptions=True)
        kept = []
        for row, outcome in zip(rows, fetched, strict=True):
            if isinstance(outcome, ValueLost):
                log.info("not writing a row the driver will re-admit: %s", outcome)
                self._seen.discard(row.id)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                kept.append(outcome[0])
        return kept

    def _record(
        self, rows: list[Message], received_at: float, started_at: float, ended_at: float, *, duplicate: bool
    ) -> None:
        events = self._events
        if events is None:
            return
        events.sink_hops(rows, received_at, started_at, ended_at, duplicate=duplicate)
        if self._writing_events is None:
            self._writing_events = asyncio.create_task(write_when_due(events))

    def _move_committed(self) -> None:
        """Completions of rows the writer has put in parts move from buffered to committed."""
        for _ in range(self._writer.rows_committed - self._moved):
            self._committed.append(self._buffered.popleft())
        self._moved = self._writer.rows_committed
        if not self._buffered:
            self._oldest = None
        if self._committed:
            self._arrived.set()

    async def _commit_when_old(self) -> None:
        tick = min(1.0, self._commit_s / 4)
        while True:
            await asyncio.sleep(tick)
            if self._oldest is not None and time.monotonic() - self._oldest >= self._commit_s:
                try:
                    await self.flush()
                except Exception:
                    log.exception("sink could not commit its buffered rows; will try again")
