"""Batch mode: the Matrix paper's Ray Data baseline (Algorithm 2) running the same Flow.

Phases, in order:
1. start the LLM service exactly as row mode does (``LLMService``), so both modes talk to
   the same servers with the same seeds;
2. build the dataset: one Ray Data task per input partition reads its units with
   ``read_unit`` (so row ids and row seeds are row mode's) and, through a streaming
   repartition fused into the same task, cuts them into blocks of at most ``batch.size``
   rows, so the batches spread over all actors instead of queueing behind one big block;
   rows finished as bad input pass through the actors untouched, and a range that could not
   be read travels as one ``UNREADABLE`` entry for the driver to count, as in row mode;
3. ``map_batches`` on a fixed pool of async actors (``BatchWorker``): a batch runs its rows'
   whole workflows concurrently with ``run_row`` and is done when its slowest row is done;
   that wait is the cost of batch-level scheduling the comparison is about;
4. the driver writes the finished rows with row mode's ``PartWriter`` as batches stream
   out, and sums the last usage report of every actor. It keeps the error budget as row
   mode does (``streamflow.budget``): once errors dominate the last finished rows it stops
   pulling batches, commits what it wrote and raises ``OverErrorBudget``; and it stops with
   ``ClaimLost`` once another run has taken the run directory over.

Rows in flight are at most ``batch.actors × batch.batches_per_actor × batch.size``. Ray Data
alone would not make that exact: it runs up to ``max_concurrent_calls_per_actor`` tasks per
actor and up to ``RAY_DATA_DEFAULT_ASYNC_BATCH_UDF_MAX_CONCURRENCY`` (4) batches of one task
at once, and a task holds as many batches as its input blocks. So a block holds one batch
at most, and every actor also guards its batches with a semaphore of ``batches_per_actor``.
The paper ran one batch per actor; several batches per async actor keep the same batch
semantics without one process per batch, which 2 cores cannot afford.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from typing import cast

import msgspec
import pyarrow as pa
import ray

from streamflow.attempts import RunAttempt
from streamflow.budget import ErrorBudget, first_line
from streamflow.config import BatchConfig, RunConfig
from streamflow.errors import ConfigError, OverErrorBudget, SetupError, StreamflowError, raised_inside
from streamflow.execution import new_row, run_row, step_contexts, uses_sandbox
from streamflow.flow import Flow
from streamflow.histogram import LatencyHistogram
from streamflow.io.parts import PartWriter
from streamflow.io.source import BadInput, InputPlan, Unreadable, read_unit
from streamflow.message import Message
from streamflow.operator import Context
from streamflow.pipeline import Recipe
from streamflow.progress import Progress, Snapshot
from streamflow.result import RunResult
from streamflow.schema import output_schema
from streamflow.services.llm import LLMClient, Usage, merge_usage
from streamflow.services.llm.service import LLMAccess, LLMService
from streamflow.services.sandbox import SandboxClient, SandboxPool, SandboxSettings

__all__ = ["BatchOutput", "BatchWorker", "WorkerReport", "rows_in_flight", "run_batches"]

log = logging.getLogger(__name__)

MESSAGE = "message"
"""A column of the input blocks: a msgpack-encoded ``Message`` per row (null in an ``UNREADABLE`` entry)."""
UNREADABLE = "unreadable"
"""The other column of the input blocks: a msgpack-encoded ``Unreadable`` range, null in a row."""
RESULT = "result"
"""The one column of the output blocks: a msgpack-encoded ``BatchOutput`` per batch."""
WATCH_EVERY_S = 1.0
CLOSE_TIMEOUT_S = 10.0


class WorkerReport(msgspec.Struct):
    """One actor's LLM usage so far; the report with the highest ``sequence`` is its total."""

    worker: str
    sequence: int
    usage: dict[str, Usage]
    replica_usage: dict[str, Usage]


class BatchOutput(msgspec.Struct):
    """What one batch returns: its finished rows, how many input rows it took, and a report.

    A whole batch travels as one binary value, so Ray Data never infers Arrow types from
    the rows; the driver's ``PartWriter`` types them against the output schema, as in row mode.
    """

    rows: list[Message]
    inputs: int
    report: WorkerReport
    latencies: list[float] = []
    unreadable: list[Unreadable] = []


_encode = msgspec.msgpack.Encoder().encode
_decode_message = msgspec.msgpack.Decoder(Message).decode
_decode_output = msgspec.msgpack.Decoder(BatchOutput).decode
_decode_unreadable = msgspec.msgpack.Decoder(Unreadable).decode


def rows_in_flight(batch: BatchConfig) -> int:
    """The most rows batch mode works on at once: set row mode's ``max_inflight`` to this to compare."""
    return batch.actors * batch.batches_per_actor * batch.size


async def run_batches(
    flow: Flow,
    recipe: Recipe,
    cfg: RunConfig,
    plan: InputPlan,
    run_dir: str,
    *,
    skip: AbstractSet[str] = frozenset(),
    attempt: RunAttempt | None = None,
) -> RunResult:
    """Run ``flow`` over ``plan`` with Ray Data ``map_batches``; returns when every batch is written.

    ``recipe`` rebuilds the same flow inside each actor. Output, counts and usage have the
    same form as ``run_rows``'s, so the two modes can be compared row for row. ``skip``
    holds the ids a resumed run already committed (O(rows committed) ids); it travels to
    the read tasks through one object-store copy rather than once per task. ``attempt``
    holds the run directory's claim, as in ``run_rows``.
    """
    started = time.monotonic()
    schema = output_schema(plan.schema, flow.fields())
    batch = msgspec.structs.replace(cfg.batch, actors=min(cfg.batch.actors, _most_batches(plan, cfg.batch.size)))
    _check_cpus(batch)
    log.info(
        "batch mode: %d actors x %d batches x %d rows = %d rows in flight at most (max_inflight=%d in row mode)",
        batch.actors, batch.batches_per_actor, batch.size, rows_in_flight(batch), cfg.max_inflight,
    )  # fmt: skip
    sandbox = cfg.sandbox if uses_sandbox(flow) else None
    if sandbox is not None:  # a setup where sandboxes cannot work is refused here, before any batch
        pool = SandboxPool(sandbox, name="check")
        try:
            await pool.check()
        finally:
            await pool.close()
    service = await LLMService.start(cfg.llm, seed=cfg.seed, api_key=cfg.api_key(), log_dir=f"{run_dir}/logs")
    try:
        service.start_relays()
        claim = attempt.claim if attempt is not None else None
        writer = PartWriter(f"{run_dir}/data", schema, prefix="part-000", part_rows=cfg.output.part_rows, claim=claim)
        progress = Progress(plan.total_rows - len(skip), mode=cfg.progress)
        collector = _Collector(writer, progress, rows_in_flight(batch), ErrorBudget(cfg.errors), attempt)
        services = (service.access(), sandbox)
        dataset = _dataset(flow, recipe, batch, cfg.seed, plan, services, ray.put(skip) if skip else None)
        watcher = asyncio.create_task(_watch(service))
        try:
            await asyncio.to_thread(collector.consume, dataset)
        except Exception as exc:
            explained = _explain(exc)
            if explained is exc:
                raise
            raise explained from None
        finally:
            watcher.cancel()
            collector.progress.close()
        files = writer.close()
    finally:
        await service.stop()
    if collector.budget.over(final=True):
        raise OverErrorBudget(collector.budget.describe(collector.samples), run_dir)
    return RunResult(
        pipeline=flow.name,
        run_id=os.path.basename(run_dir),
        run_dir=run_dir,
        files=files,
        rows_read=collector.rows_read + sum(part.rows for part in collector.unreadable),
        rows_done=collector.rows_read,
        statuses=dict(collector.statuses),
        latency=collector.latency,
        usage=merge_usage([r.usage for r in collector.reports.values()]),
        replica_usage=merge_usage([r.replica_usage for r in collector.reports.values()]),
        lost_replicas=list(service.lost),
        wall_s=time.monotonic() - started,
        unreadable=collector.unreadable,
    )


class BatchWorker:
    """A Ray Data actor: rebuilds the Flow, owns one LLM client, runs whole batches of rows.

    Operators are set up on the first batch rather than in ``__init__`` because Ray Data
    runs async UDFs on an event loop of its own, and whatever ``setup`` opens (connection
    pools, sandboxes) belongs to that loop.
    """

    def __init__(
        self, recipe: Recipe, llm: LLMAccess, batches_per_actor: int, sandbox: SandboxSettings | None = None
    ) -> None:
        logging.basicConfig(level=logging.WARNING)
        self._flow, self._params = recipe.build()
        self._llm = llm
        self._sandbox = sandbox
        self._pool: SandboxPool | None = None
        self._slots = asyncio.Semaphore(batches_per_actor)
        self._starting = asyncio.Lock()
        self._client: LLMClient | None = None  # None with llm.backend=none
        self._contexts: dict[str, Context] = {}
        self._ready = False
        self._failure: SetupError | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker = uuid.uuid4().hex[:12]
        self._reports = 0

    async def __call__(self, batch: pa.Table) -> pa.Table:
        await self._start()
        rows = [_decode_message(raw) for raw in batch.column(MESSAGE).to_pylist() if raw is not None]
        unreadable = [_decode_unreadable(raw) for raw in batch.column(UNREADABLE).to_pylist() if raw is not None]
        async with self._slots:
            started = time.time()
            rows = [msgspec.structs.replace(row, admitted_at=started) for row in rows]
            finished = await asyncio.gather(*(run_row(self._flow, row, self._contexts) for row in rows))
            # A row's result leaves with its batch: its latency ends when the slowest row does.
            latency = time.time() - started
        self._reports += 1
        client = self._client
        usage, replicas = (client.usage(), client.replica_usage()) if client is not None else ({}, {})
        report = WorkerReport(self._worker, self._reports, usage, replicas)
        output = BatchOutput(
            rows=[row for pieces in finished for row in pieces],
            inputs=len(rows),
            report=report,
            latencies=[latency] * len(rows),
            unreadable=unreadable,
        )
        return pa.table({RESULT: pa.array([_encode(output)], pa.binary())})

    async def _start(self) -> None:
        """Connect to the LLM service and set up every step, once per actor."""
        async with self._starting:
            if self._failure is not None:
                raise self._failure
            if self._ready:
                return
            client = self._llm.client()
            if self._sandbox is not None and self._pool is None:  # this actor's own: tool calls stay in process
                self._pool = SandboxPool(self._sandbox, name=f"batch-{self._worker}")
            sandbox = SandboxClient({self._pool.name: self._pool}) if self._pool is not None else None
            contexts = step_contexts(self._flow, client, self._params, sandbox=sandbox)
            for name, step in self._flow.steps.items():
                try:
                    await step.operator.setup(contexts[name])
                except Exception as exc:
                    operator = type(step.operator).__name__
                    msg = f"step {name!r}: setup() of {operator} failed: {type(exc).__name__}: {exc}"
                    self._failure = SetupError(msg)
                    raise self._failure from exc
            self._client, self._contexts, self._loop = client, contexts, asyncio.get_running_loop()
            self._ready = True

    async def _close(self) -> None:
        try:
            for step in self._flow.steps.values():
                await step.operator.close()
        finally:
            if self._pool is not None:
                await self._pool.close()
            if self._client is not None:
                await self._client.close()

    def __del__(self) -> None:
        """Close the operators and the client when Ray Data shuts the actor down gracefully.

        Best effort: Ray Data offers no teardown hook, and when Ray itself stops first
        (the end of a command-line run) the actor process simply exits.
        """
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running():
            return
        if _running_loop() is loop:  # collected on the loop's own thread: waiting there would deadlock
            loop.create_task(self._close())
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close(), loop).result(CLOSE_TIMEOUT_S)
        except Exception as exc:  # an actor going away must not raise; say what was left open
            log.warning("batch worker %s: closing operators failed: %s: %s", self._worker, type(exc).__name__, exc)


class _Collector:
    """The driver's end: writes finished rows, counts statuses, keeps each actor's last report and the error budget."""

    def __init__(
        self, writer: PartWriter, progress: Progress, capacity: int, budget: ErrorBudget, attempt: RunAttempt | None
    ) -> None:
        self.writer = writer
        self.progress = progress
        self.capacity = capacity
        self.budget = budget
        self.samples: dict[str, str] = {}
        """The first line of the error of the last row written with each ``error:*`` status."""
        self.attempt = attempt
        self.rows_read = 0
        self.unreadable: list[Unreadable] = []
        self.statuses: Counter[str] = Counter()
        self.reports: dict[str, WorkerReport] = {}
        self.latency = LatencyHistogram()

    def consume(self, dataset: ray.data.Dataset) -> None:
        """Pull batches until the dataset is exhausted or errors dominate (blocking: run it in a thread)."""
        for block in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            for raw in cast("pa.Table", block).column(RESULT).to_pylist():
                self.add(_decode_output(raw))
            self.progress.update(self.snapshot())
            if self.attempt is not None:
                self.attempt.check()
                self.attempt.report(self.rows_read, merge_usage([r.usage for r in self.reports.values()]))
            if self.budget.over():
                log.warning("errors dominate the last finished rows: committing what was written, then stopping")
                return
        self.progress.update(self.snapshot())

    def add(self, output: BatchOutput) -> None:
        written = self.writer.append(output.rows)
        self.statuses.update(row.status for row in written)
        for row in written:
            self.budget.add(row.status)
            if row.error is not None and row.status.startswith("error:"):
                self.samples[row.status] = first_line(row.error)
        self.rows_read += output.inputs
        self.unreadable.extend(output.unreadable)
        for seconds in output.latencies:
            self.latency.add(seconds)
        report = output.report
        last = self.reports.get(report.worker)
        if last is None or report.sequence > last.sequence:
            self.reports[report.worker] = report

    def snapshot(self) -> Snapshot:
        statuses = self.statuses
        usage = merge_usage([r.usage for r in self.reports.values()])
        return Snapshot(
            done=self.rows_read,
            ok=statuses.get("ok", 0),
            filtered=sum(n for s, n in statuses.items() if s.startswith("filtered:")),
            errors=sum(n for s, n in statuses.items() if s.startswith("error:")),
            inflight=min(self.capacity, self.progress.total - self.rows_read),  # an upper bound: Ray Data does not say
            prompt_tokens=sum(u.prompt_tokens for u in usage.values()),
            completion_tokens=sum(u.completion_tokens for u in usage.values()),
        )


def _dataset(
    flow: Flow,
    recipe: Recipe,
    batch: BatchConfig,
    seed: int,
    plan: InputPlan,
    services: tuple[LLMAccess, SandboxSettings | None],
    skip: ray.ObjectRef | None = None,
) -> ray.data.Dataset:
    partitions = [{"partition": index} for index in range(len(plan.partitions))]
    read = functools.partial(_read_partitions, plan=plan, first=flow.first, seed=seed, batch_rows=batch.size, skip=skip)
    rows = ray.data.from_items(partitions, override_num_blocks=len(partitions)).map_batches(
        read, batch_size=1, batch_format="pyarrow"
    )
    pool = ray.data.ActorPoolStrategy(
        size=batch.actors,
        max_tasks_in_flight_per_actor=batch.batches_per_actor,
        max_concurrent_calls_per_actor=batch.batches_per_actor,
    )
    dataset = rows.repartition(target_num_rows_per_block=batch.size).map_batches(
        BatchWorker,
        batch_size=batch.size,
        batch_format="pyarrow",
        compute=pool,
        num_cpus=batch.num_cpus,
        fn_constructor_kwargs={
            "recipe": recipe,
            "llm": services[0],
            "sandbox": services[1],
            "batches_per_actor": batch.batches_per_actor,
        },
    )
    dataset.context.enable_progress_bars = False  # streamflow's own progress reports rows and tokens
    dataset.context.print_on_execution_start = False
    dataset.context.raise_original_map_exception = True  # so a SetupError reaches the driver as itself
    return dataset


def _read_partitions(
    items: pa.Table, *, plan: InputPlan, first: str, seed: int, batch_rows: int, skip: ray.ObjectRef | None = None
) -> Iterator[pa.Table]:
    """Read the given partitions of ``plan`` as blocks of encoded rows, admitted as row mode admits them."""
    committed: AbstractSet[str] = ray.get(skip) if skip is not None else frozenset()
    for index in items.column("partition").to_pylist():
        for unit in plan.partitions[index]:
            for read in read_unit(plan, unit, batch_rows=batch_rows, skip=committed):
                if isinstance(read, Unreadable):
                    yield _block([None], [_encode(read)])
                    continue
                if isinstance(read, BadInput):  # finished rows: run_row hands them back as they are
                    rows = read.rows
                else:
                    ids, fields = read
                    rows = [new_row(row_id, row, first, seed) for row_id, row in zip(ids, fields, strict=True)]
                yield _block([_encode(row) for row in rows], [None] * len(rows))


def _block(messages: list[bytes | None], unreadable: list[bytes | None]) -> pa.Table:
    return pa.table({MESSAGE: pa.array(messages, pa.binary()), UNREADABLE: pa.array(unreadable, pa.binary())})


def _most_batches(plan: InputPlan, size: int) -> int:
    """How many batches the input can make at most: more actors than that would only idle."""
    return sum(-(-unit.rows // size) for units in plan.partitions for unit in units)


def _check_cpus(batch: BatchConfig) -> None:
    """Refuse a pool that leaves Ray Data no CPU for its read tasks: it would wait forever."""
    total = ray.cluster_resources().get("CPU", 0.0)
    reserved = batch.actors * batch.num_cpus
    if total - reserved < 1:
        msg = (
            f"config: batch.actors x batch.num_cpus = {reserved:g} of the cluster's {total:g} CPUs leaves less than "
            "1 CPU for Ray Data's read tasks, so they would never run; lower batch.num_cpus or batch.actors."
        )
        raise ConfigError(msg)


async def _watch(service: LLMService) -> None:
    """Notice LLM replicas that died, for the summary; workers route around them with their circuit breakers."""
    while True:
        await asyncio.sleep(WATCH_EVERY_S)
        await service.watch()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _explain(exc: BaseException) -> BaseException:
    """The streamflow error a Ray Data failure carries (a failed setup, say), else the failure itself."""
    cause = raised_inside(exc)
    return cause if isinstance(cause, StreamflowError) else exc
