"""The sink actor: writes finished rows as Parquet parts and tells the driver which rows are done.

Several sinks run side by side, each owning the input rows whose id hashes to it, so no
single actor is a hot spot. The driver long-polls ``completions`` to release admission
slots; a row counts as complete only once its writer has accepted it (type-checked).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pyarrow as pa

from streamflow.io.sink import PartWriter
from streamflow.message import decode_batch

__all__ = ["Completion", "SinkActor"]

log = logging.getLogger(__name__)

Completion = tuple[str, int, int, str, float]
"""(input row id, share numerator, share denominator, status, seconds since admission) of one finished row."""


class SinkActor:
    """Owns one shard of the output."""

    def __init__(self, directory: str, schema: pa.Schema, shard: int, part_rows: int) -> None:
        logging.basicConfig(level=logging.WARNING)
        self._writer = PartWriter(directory, schema, prefix=f"part-{shard:03d}", part_rows=part_rows)
        self._lock = asyncio.Lock()
        self._done: list[Completion] = []
        self._arrived = asyncio.Event()
        self.rows = 0

    async def push(self, payload: bytes) -> int:
        """Accept finished rows; answers with the number of completions not yet collected."""
        rows = decode_batch(payload)
        async with self._lock:
            written = await asyncio.to_thread(self._writer.append, rows)
        self.rows += len(written)
        now = time.time()
        self._done.extend((row.root_id, row.share[0], row.share[1], row.status, now - row.admitted_at) for row in written)
        self._arrived.set()
        return len(self._done)

    async def completions(self, wait_s: float = 0.5) -> list[Completion]:
        """Rows finished since the last call; waits up to ``wait_s`` for at least one."""
        if not self._done:
            try:
                await asyncio.wait_for(self._arrived.wait(), wait_s)
            except TimeoutError:
                pass
        done, self._done = self._done, []
        self._arrived.clear()
        return done

    async def close(self) -> list[str]:
        """Write what is buffered; returns the paths of every part this sink wrote."""
        async with self._lock:
            return await asyncio.to_thread(self._writer.close)

    async def ping(self) -> Any:
        return self.rows
