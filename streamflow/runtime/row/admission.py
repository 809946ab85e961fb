"""Admission: read the input partitions and send every row into the flow, at most ``max_inflight`` at once.

Each partition is read by its own task (the reads run in threads), so a slow file does not
hold up the others. A row waits for a slot in the ledger, then goes straight to the least
loaded replica of the first step (``enter``: the driver parks it while every replica restarts);
a row finished as bad input goes straight to its sink.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from streamflow.execution import new_row
from streamflow.io.source import BadInput, InputPlan, Unreadable, read_unit
from streamflow.message import Message
from streamflow.runtime.row.ledger import Ledger
from streamflow.runtime.row.outbox import Outbox, Peer, Peers
from streamflow.runtime.row.sink import sink_shard

__all__ = ["Admission"]


class Admission:
    """Admits the input rows of ``plan`` that are not in ``skip`` (committed by an earlier attempt)."""

    def __init__(
        self,
        plan: InputPlan,
        first: str,
        seed: int,
        skip: AbstractSet[str],
        ledger: Ledger,
        outbox: Outbox,
        entry: Peers,
        enter: Callable[[Message], None],
        sinks: Sequence[Peer],
        unreadable: list[Unreadable],
    ) -> None:
        self.plan = plan
        self.first = first
        self.seed = seed
        self.skip = skip
        self.ledger = ledger
        self.outbox = outbox
        self.entry = entry
        self.enter = enter
        self.sinks = sinks
        self.unreadable = unreadable
        """Input ranges that could not be read, appended as they are found."""

    def readers(self) -> list[asyncio.Task[None]]:
        """One task per input partition, reading and admitting its rows."""
        return [asyncio.create_task(self.read(units)) for units in self.plan.partitions]

    async def finish_reading(self, readers: Sequence[asyncio.Task[None]]) -> None:
        """Once every reader is done and the first hop is delivered, tell the ledger no row will follow."""
        await asyncio.gather(*readers)
        await self.outbox.drain(self.entry.replicas)
        self.ledger.reading_finished()

    async def read(self, units: Sequence[Any]) -> None:
        """Read ``units`` one batch at a time and admit their rows."""
        for unit in units:
            batches = read_unit(self.plan, unit, skip=self.skip)
            while True:
                batch = await asyncio.to_thread(next, batches, None)
                if batch is None:
                    break
                if isinstance(batch, Unreadable):
                    self.unreadable.append(batch)
                    continue
                if isinstance(batch, BadInput):  # rows finished as error:bad_input go straight to their sink
                    for message in batch.rows:
                        await self.ledger.admit(message)
                        self.outbox.send(self.sinks[sink_shard(message.id, len(self.sinks))], message)
                    continue
                ids, rows = batch
                for row_id, fields in zip(ids, rows, strict=True):
                    message = new_row(row_id, fields, self.first, self.seed)
                    await self.ledger.admit(message)
                    self.enter(message)
