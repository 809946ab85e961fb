"""The Ray actor hosting one replica of a group of steps (one step, or several fused ones).

It receives coalesced batches of rows and runs each row on its own (so one slow LLM call
never holds up the others): at once, in the call that received it, and in a task of its own
from its first wait on (``eager.py``). A row walks the group's steps in this process,
from one step to the next without encoding (``fusion.py`` says which steps share an
actor); when it leaves the group it goes straight to a replica of its next step's group,
or to the sink shard of its input row when it is finished. No driver or dispatcher sits
between two actors.

Steps that use sandboxes get a sandbox pool in this process, so a tool call costs no Ray
hop; a row holding a sandbox of another actor reaches it through that actor.

When the actor dies, Ray restarts it (``recovery.max_restarts``) as a blank incarnation:
it holds rows sent to it until the driver has wired it again with ``start``. Its census
(``stats``) reports every input row it holds; rows no census finds any more (they died with an
actor) are re-admitted by the driver.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from streamflow.config import EventsConfig, TransportConfig
from streamflow.errors import SetupError
from streamflow.events import recorder, write_when_due
from streamflow.execution import run_step, step_seed
from streamflow.flow import END
from streamflow.io.arrow import skip_pandas_probe
from streamflow.message import Message
from streamflow.operator import Context
from streamflow.pipeline import Recipe
from streamflow.result import TransferStats
from streamflow.runtime.row.collector import collect_less
from streamflow.runtime.row.eager import start_eagerly
from streamflow.runtime.row.offload import Offloaded, ValueLost, decode_rows, keep_references, node_offloader
from streamflow.runtime.row.outbox import Outbox, Peer, Peers, sink_peers
from streamflow.runtime.row.sink import sink_shard
from streamflow.services.llm import LLMClient, Usage
from streamflow.services.llm.service import LLMAccess
from streamflow.services.llm.usage import ROW_USAGE
from streamflow.services.sandbox import SandboxClient, SandboxPool, SandboxSettings

__all__ = ["ActorStats", "StepActor", "StepCounts", "Wiring"]

log = logging.getLogger(__name__)

Origins = dict[str, tuple[Any, Offloaded]]


@dataclass(frozen=True)
class Wiring:
    """Where a step actor sends rows and finds services; the driver hands it to ``start``."""

    groups: Mapping[str, Sequence[Any]]
    """The actors of each group, by group name."""
    step_group: Mapping[str, str]
    """The group hosting each step."""
    sinks: Sequence[Any]
    keepers: Mapping[str, Any] = field(default_factory=dict)
    """Object keepers by node id (``offload_threshold`` > 0)."""
    sandboxes: Mapping[str, Any] = field(default_factory=dict)
    """Actors holding sandbox pools, by pool name (empty when no step uses sandboxes)."""


class StepCounts(msgspec.Struct):
    """What one step did in one actor."""

    rows_in: int = 0
    rows_out: int = 0
    running: int = 0
    """Rows the operator works on now."""
    queued: int = 0
    """Rows waiting for one of the step's concurrency slots."""
    busy_s: float = 0.0


class ActorStats(msgspec.Struct):
    """A census answer of one actor: its counters, usage and the input rows it holds."""

    group: str
    replica: int
    incarnation: str = ""
    ready: bool = False
    held: list[str] = []
    """Input rows this actor holds: being processed, buffered for the next hop, or being delivered."""
    steps: dict[str, StepCounts] = {}
    delivery_failures: int = 0
    usage: dict[str, Usage] = {}
    replica_usage: dict[str, Usage] = {}
    llm_latency: dict[str, list[int]] = {}
    llm_inflight: dict[str, int] = {}
    transfer: TransferStats = msgspec.field(default_factory=TransferStats)


class StepActor:
    """Hosts the operators of one group of steps in one Ray actor process; the Flow is rebuilt from ``recipe``."""

    def __init__(
        self,
        recipe: Recipe,
        group: str,
        steps: Sequence[str],
        replica: int,
        *,
        concurrency: Mapping[str, int | None],
        transport: TransportConfig,
        events_dir: str = "",
        events: EventsConfig | None = None,
        offload_threshold: int = 0,
        sandbox: SandboxSettings | None = None,
    ) -> None:
        logging.basicConfig(level=logging.WARNING)
        skip_pandas_probe()  # its Arrow arrays are built from Python values: no pandas import
        self._offload_threshold = offload_threshold
        flow, params = recipe.build()
        self._flow = flow
        self._group = group
        self._steps = tuple(steps)
        self._params = params
        self._replica = replica
        self._client: LLMClient | None = None
        self._contexts = {step: Context(step=step, params=params, replica=replica) for step in self._steps}
        self._limits = {step: asyncio.Semaphore(n) for step in self._steps if (n := concurrency.get(step))}
        self._sandbox_settings = sandbox
        self._pool: SandboxPool | None = None
        self._transport = transport
        self._outbox = Outbox(
            flush_rows=transport.flush_rows, flush_ms=transport.flush_ms, on_failure=self._delivery_failed
        )
        self._routes: dict[str, Peers] = {}
        self._sinks: list[Peer] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._holding: Counter[str] = Counter()
        self._ready = asyncio.Event()
        self._counts = {step: StepCounts() for step in self._steps}
        self._stats = ActorStats(group=group, replica=replica, incarnation=uuid.uuid4().hex, steps=self._counts)
        self._events = recorder(events_dir, group, replica, events)
        self._writing_events: asyncio.Task[None] | None = None

    @property
    def pool_name(self) -> str:
        """The name of this actor's sandbox pool: sandbox ids start with it."""
        return f"{self._group}[{self._replica}]"

    async def start(self, wiring: Wiring, llm: LLMAccess) -> str:
        """Wire the peers, connect to the services and run each operator's ``setup``; returns the incarnation.

        ``llm`` arrives here rather than in the constructor so actors can start while the LLM
        service is still starting.
        """
        self._outbox.offloader = node_offloader(self._offload_threshold, wiring.keepers)
        self._client = llm.client()
        sandbox = await self._sandbox_client(wiring.sandboxes)
        for step in self._steps:
            self._contexts[step] = Context(
                step=step,
                llm=self._client.for_step(step) if self._client is not None else None,
                params=self._params,
                replica=self._replica,
                sandbox=sandbox,
            )
        groups = {  # one Peers per group, shared by its steps: one view of each replica's load
            group: Peers([Peer(f"{group}[{i}]", handle) for i, handle in enumerate(handles)])
            for group, handles in wiring.groups.items()
        }
        self._routes = {step: groups[group] for step, group in wiring.step_group.items()}
        self._sinks = sink_peers(wiring.sinks, self._transport)
        for step in self._steps:
            operator = self._flow.steps[step].operator
            try:
                await operator.setup(self._contexts[step])
            except Exception as exc:
                msg = f"step {step!r}: setup() of {type(operator).__name__} failed: {type(exc).__name__}: {exc}"
                raise SetupError(msg) from exc
        if self._events is not None and self._writing_events is None:
            self._writing_events = asyncio.create_task(write_when_due(self._events))
        collect_less()  # start-up's objects (Ray, pyarrow, the operators' models) are never scanned again
        self._ready.set()
        self._stats.ready = True
        return self._stats.incarnation

    async def push(self, payload: bytes, refs: Sequence[Any] = ()) -> int:
        """Accept a batch of rows (``refs``: of their offloaded values); answers with how many rows it holds."""
        received_at = time.time()
        rows = decode_rows(payload, refs)
        for row in rows:
            self._hold(row)
        if not self._ready.is_set():  # restarted, not wired again yet
            await self._ready.wait()
        for row in rows:
            self._spawn(row, row.sent_at, received_at, None)
        return len(self._tasks)

    async def update_endpoints(self, endpoints: dict[str, list[str]]) -> None:
        """Send LLM requests to these replicas from now on (the driver saw one die)."""
        if self._client is not None:
            self._client.update_endpoints(endpoints)

    async def stats(self) -> ActorStats:
        """Counters, usage, and every input row this actor holds (the driver renews their leases).

        Young rows are listed too: when this actor dies, the driver knows all the rows it held.
        """
        held = list(self._holding)
        held.extend(self._outbox.held_roots())
        self._stats.held = held
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

    async def sandbox(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Use this actor's sandbox pool on behalf of a row that is on another actor."""
        if self._pool is None or method not in SandboxClient.REMOTE_METHODS:
            msg = f"actor {self.pool_name} has no sandbox pool (or no method {method!r})"
            raise SetupError(msg)
        return await getattr(self._pool, method)(*args, **kwargs)

    async def stop(self) -> ActorStats:
        """Close the operators, the sandboxes and the LLM client after the last row has left."""
        peers = {id(peer): peer for group in self._routes.values() for peer in group.replicas}
        await self._outbox.drain([*self._sinks, *peers.values()])
        try:
            for step in self._steps:
                await self._flow.steps[step].operator.close()
        finally:
            if self._pool is not None:
                await self._pool.close()
            if self._client is not None:
                await self._client.close()
            if self._events is not None:
                if self._writing_events is not None:
                    self._writing_events.cancel()
                await asyncio.to_thread(self._events.flush)
        return await self.stats()

    # -- a row's walk through the group ------------------------------------------------

    def _hold(self, row: Message) -> None:
        self._holding[row.root_id] += 1

    def _release(self, root: str) -> None:
        left = self._holding[root] - 1
        if left:
            self._holding[root] = left
        else:
            del self._holding[root]

    def _spawn(self, row: Message, sent_at: float, received_at: float, origins: Origins | None) -> None:
        """Walk ``row`` now; it becomes a task only when a step has to wait (an LLM call, a tool)."""
        task = start_eagerly(self._walk(row, sent_at, received_at, origins))
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _walk(self, row: Message, sent_at: float, received_at: float, origins: Origins | None) -> None:
        """Run ``row`` through this group's steps until it leaves the group (or is lost)."""
        root = row.root_id
        try:
            if origins is None and self._outbox.offloader is not None:
                try:
                    row, origins = await self._outbox.offloader.fetch(row)
                except ValueLost as exc:
                    log.info("dropping a row the driver will re-admit: %s", exc)
                    return
            while True:
                step = row.state.step
                results, ended = await self._step(step, row, sent_at, received_at)
                staying = []
                for result in results:
                    if result.state.step in self._contexts:
                        staying.append(result)
                    else:
                        self._forward(keep_references(result, origins) if origins else result)
                if not staying:
                    return
                for piece in staying[1:]:  # a fan-out: the other pieces go on side by side
                    self._hold(piece)
                    self._spawn(piece, ended, ended, origins or {})
                row, sent_at, received_at = staying[0], ended, ended
        finally:
            self._release(root)

    async def _step(self, step: str, row: Message, sent_at: float, received_at: float) -> tuple[list[Message], float]:
        """The step's results for ``row``, and when it ended; records its counters and event."""
        counts = self._counts[step]
        counts.rows_in += 1
        ctx = self._contexts[step].for_row(step_seed(row, step))
        events = self._events
        usage = None
        if events is not None and events.wants(row):
            usage = Usage()
            ROW_USAGE.set(usage)  # this task's own context: the LLM client books the row's calls here
        limit = self._limits.get(step)
        if limit is None:
            results, started, ended = await self._run(step, row, ctx, counts)
        else:
            counts.queued += 1
            try:
                await limit.acquire()
            finally:
                counts.queued -= 1
            try:
                results, started, ended = await self._run(step, row, ctx, counts)
            finally:
                limit.release()
        if usage is not None and events is not None:
            events.hop(step, row, sent_at, received_at, started, ended, results, usage)
            ROW_USAGE.set(None)
        counts.rows_out += len(results)
        return results, ended

    async def _run(
        self, step: str, row: Message, ctx: Context, counts: StepCounts
    ) -> tuple[list[Message], float, float]:
        counts.running += 1
        started = time.time()
        try:
            results = await run_step(self._flow, step, row, ctx)
        finally:
            counts.running -= 1
        ended = time.time()
        counts.busy_s += ended - started
        return results, started, ended

    def _forward(self, row: Message) -> None:
        target = row.state.step
        if target == END:
            self._outbox.send(self._sinks[sink_shard(row.root_id, len(self._sinks))], row)
        else:
            self._outbox.send(self._routes[target].pick(), row)

    def _delivery_failed(self, peer: Peer, batch: list[Message], exc: BaseException) -> None:
        """The rows are lost with the dead peer; the driver re-admits them when its censuses miss them."""
        self._stats.delivery_failures += len(batch)

    # -- sandboxes -----------------------------------------------------------------------

    async def _sandbox_client(self, sandboxes: Mapping[str, Any]) -> SandboxClient | None:
        """A client over this actor's own pool (started and checked here) and the other actors' pools."""
        if not sandboxes:
            return None
        if self.pool_name in sandboxes and self._pool is None:
            assert self._sandbox_settings is not None
            pool = SandboxPool(self._sandbox_settings, name=self.pool_name)
            try:
                await pool.check()
            except BaseException:
                await pool.close()
                raise
            self._pool = pool
        pools: dict[str, Any] = {name: handle for name, handle in sandboxes.items() if name != self.pool_name}
        if self._pool is not None:
            pools[self.pool_name] = self._pool
        return SandboxClient(pools, local=self.pool_name if self._pool is not None else None)
