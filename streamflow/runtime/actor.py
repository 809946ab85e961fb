"""The Ray actor hosting one replica of one step.

It receives coalesced batches of rows, runs each row as its own asyncio task (so one
slow LLM call never holds up the others), and sends every result straight to a replica
of the next step, or to the sink shard of its input row when it is finished. No driver
or dispatcher sits between two steps.

When the actor dies, Ray restarts it (``recovery.max_restarts``) as a blank incarnation:
it holds rows sent to it until the driver has wired it again with ``start``. Its stats
report the rows it holds; rows no census of the replicas finds any more (they died with an
actor) are re-admitted by the driver.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from streamflow.config import EventsConfig
from streamflow.errors import SetupError
from streamflow.events import recorder, write_when_due
from streamflow.execution import run_step, step_seed
from streamflow.flow import END
from streamflow.message import Message
from streamflow.operator import Context
from streamflow.pipeline import Recipe
from streamflow.result import TransferStats
from streamflow.runtime.offload import ValueLost, decode_rows, keep_references, node_offloader
from streamflow.runtime.sink import sink_shard
from streamflow.runtime.transport import Outbox, Peer, Peers
from streamflow.services.llm import LLMClient, Usage
from streamflow.services.llm.usage import ROW_USAGE
from streamflow.services.llm_service import LLMAccess
from streamflow.services.sandbox import SandboxAccess

__all__ = ["StepActor", "StepStats"]

log = logging.getLogger(__name__)


class StepStats(msgspec.Struct):
    """What one replica has done so far; polled by the driver for progress and health."""

    step: str
    replica: int
    incarnation: str = ""
    ready: bool = False
    held: list[str] = []
    rows_in: int = 0
    rows_out: int = 0
    inflight: int = 0
    """Rows received and not yet handed on: ``queued`` wait for a concurrency slot, the rest run."""
    queued: int = 0
    busy_s: float = 0.0
    delivery_failures: int = 0
    usage: dict[str, Usage] = {}
    replica_usage: dict[str, Usage] = {}
    llm_latency: dict[str, list[int]] = {}
    llm_inflight: dict[str, int] = {}
    transfer: TransferStats = msgspec.field(default_factory=TransferStats)


class StepActor:
    """Hosts one step's operator in one Ray actor process; the Flow is rebuilt here from ``recipe``."""

    def __init__(
        self,
        recipe: Recipe,
        step: str,
        replica: int,
        *,
        concurrency: int | None,
        flush_rows: int,
        flush_ms: float,
        events_dir: str = "",
        events: EventsConfig | None = None,
        offload_threshold: int = 0,
    ) -> None:
        logging.basicConfig(level=logging.WARNING)
        self._offload_threshold = offload_threshold
        flow, params = recipe.build()
        self._flow = flow
        self._step = step
        self._operator = flow.steps[step].operator
        self._params = params
        self._replica = replica
        self._client: LLMClient | None = None
        self._ctx = Context(step=step, params=params, replica=replica)
        self._limit = asyncio.Semaphore(concurrency) if concurrency else None
        self._outbox = Outbox(flush_rows=flush_rows, flush_ms=flush_ms, on_failure=self._delivery_failed)
        self._routes: dict[str, Peers] = {}
        self._sinks: list[Peer] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._holding: Counter[str] = Counter()
        self._active = 0
        self._ready = asyncio.Event()
        self._stats = StepStats(step=step, replica=replica, incarnation=uuid.uuid4().hex)
        self._events = recorder(events_dir, step, replica, events)
        self._writing_events: asyncio.Task[None] | None = None

    async def start(
        self,
        routes: Mapping[str, Sequence[Any]],
        sinks: Sequence[Any],
        llm: LLMAccess,
        keepers: Mapping[str, Any] | None = None,
        sandbox: SandboxAccess | None = None,
    ) -> str:
        """Wire the peers, connect to the services and run the operator's ``setup``; returns the incarnation.

        ``llm`` arrives here rather than in the constructor so actors can start while
        the LLM service is still starting. ``keepers`` are the object keepers per node id,
        ``sandbox`` the sandbox pools (None when no step uses them).
        """
        self._outbox.offloader = node_offloader(self._offload_threshold, keepers or {})
        self._client = llm.client()
        step_llm = self._client.for_step(self._step) if self._client is not None else None
        self._ctx = Context(
            step=self._step,
            llm=step_llm,
            params=self._params,
            replica=self._replica,
            sandbox=sandbox.client() if sandbox is not None else None,
        )
        self._routes = {
            name: Peers([Peer(f"{name}[{i}]", handle) for i, handle in enumerate(handles)])
            for name, handles in routes.items()
        }
        self._sinks = [Peer(f"sink[{i}]", handle) for i, handle in enumerate(sinks)]
        try:
            await self._operator.setup(self._ctx)
        except Exception as exc:
            msg = f"step {self._step!r}: setup() of {type(self._operator).__name__} failed: {type(exc).__name__}: {exc}"
            raise SetupError(msg) from exc
        if self._events is not None and self._writing_events is None:
            self._writing_events = asyncio.create_task(write_when_due(self._events))
        self._ready.set()
        self._stats.ready = True
        return self._stats.incarnation

    async def push(self, payload: bytes, refs: Sequence[Any] = ()) -> int:
        """Accept a batch of rows (``refs``: of their offloaded values); answers with how many rows it holds."""
        received_at = time.time()
        rows = decode_rows(payload, refs)
        holding = self._holding
        for row in rows:
            holding[row.root_id] += 1
        if not self._ready.is_set():  # restarted, not wired again yet
            await self._ready.wait()
        for row in rows:
            task = asyncio.create_task(self._process(row, received_at))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(self._tasks)

    async def stats(self) -> StepStats:
        """Counters, usage and the input rows this replica holds (being processed or being sent)."""
        self._stats.inflight = len(self._tasks)
        self._stats.queued = len(self._tasks) - self._active
        self._stats.held = [*self._holding, *self._outbox.held_roots()]
        offloader = self._outbox.offloader
        transfer = msgspec.structs.replace(offloader.stats) if offloader is not None else TransferStats()
        transfer.inline_bytes = self._outbox.bytes_sent
        self._stats.transfer = transfer
        if self._client is not None:
            self._stats.usage = self._client.usage()
            self._stats.replica_usage = self._client.replica_usage()
            self._stats.llm_latency = self._client.latency_counts()
            self._stats.llm_inflight = self._client.inflight()
        return self._stats

    async def stop(self) -> StepStats:
        """Close the operator and the LLM client after the last row has left."""
        await self._outbox.drain([*self._sinks, *(p for peers in self._routes.values() for p in peers.replicas)])
        try:
            await self._operator.close()
        finally:
            if self._client is not None:
                await self._client.close()
            if self._events is not None:
                if self._writing_events is not None:
                    self._writing_events.cancel()
                await asyncio.to_thread(self._events.flush)
        return await self.stats()

    async def _process(self, row: Message, received_at: float) -> None:
        self._stats.rows_in += 1
        root = row.root_id
        try:
            origins = None
            if self._outbox.offloader is not None:
                try:
                    row, origins = await self._outbox.offloader.fetch(row)
                except ValueLost as exc:
                    log.info("dropping a row the driver will re-admit: %s", exc)
                    return
            ctx = self._ctx.for_row(step_seed(row, self._step))
            events = self._events
            usage = None
            if events is not None and events.wants(row):
                usage = Usage()
                ROW_USAGE.set(usage)  # this task's own context: the LLM client books the row's calls here
            if self._limit is None:
                results, started, ended = await self._run(row, ctx)
            else:
                async with self._limit:
                    results, started, ended = await self._run(row, ctx)
            if usage is not None and events is not None:
                events.hop(row, received_at, started, ended, results, usage)
            for result in results:
                self._forward(keep_references(result, origins) if origins else result)
        finally:
            left = self._holding[root] - 1
            if left:
                self._holding[root] = left
            else:
                del self._holding[root]

    async def _run(self, row: Message, ctx: Context) -> tuple[list[Message], float, float]:
        """The step's results for ``row`` and when it started and ended."""
        self._active += 1
        started = time.time()
        try:
            results = await run_step(self._flow, self._step, row, ctx)
        finally:
            self._active -= 1
        ended = time.time()
        self._stats.busy_s += ended - started
        return results, started, ended

    def _forward(self, row: Message) -> None:
        self._stats.rows_out += 1
        target = row.state.step
        if target == END:
            self._outbox.send(self._sinks[sink_shard(row.root_id, len(self._sinks))], row)
        else:
            self._outbox.send(self._routes[target].pick(), row)

    def _delivery_failed(self, peer: Peer, batch: list[Message], exc: BaseException) -> None:
        """The rows are lost with the dead peer; the driver re-admits them when its censuses miss them."""
        self._stats.delivery_failures += len(batch)
