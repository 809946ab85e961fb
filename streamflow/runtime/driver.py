"""The driver loop of a row-mode run.

Phases, in order:
1. start the LLM service (simulator replicas) and every actor at once: Ray start-up is
   the largest cost of a short run, so nothing waits for anything it does not need;
2. wire each step replica to its peers and the sinks, run every operator's ``setup``;
3. read the input partitions in parallel and admit rows under the ``max_inflight``
   semaphore, straight to the first step's replicas;
4. long-poll the sinks for finished rows, releasing slots, while watching actor health;
5. when every admitted row has completed: drain, close the sinks, collect usage, stop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from typing import Any

import ray

from streamflow.config import RunConfig
from streamflow.errors import RunError, SetupError, StreamflowError
from streamflow.execution import row_seed
from streamflow.flow import Flow
from streamflow.io.source import InputPlan, read_unit
from streamflow.message import Message, State
from streamflow.pipeline import Recipe
from streamflow.progress import Progress, Snapshot
from streamflow.result import RunResult
from streamflow.runtime.actor import StepActor, StepStats
from streamflow.runtime.ledger import Ledger
from streamflow.runtime.sink import SinkActor
from streamflow.runtime.transport import Outbox, Peer, Peers
from streamflow.schema import output_schema
from streamflow.services.llm import Usage, merge_usage
from streamflow.services.llm_service import LLMService

__all__ = ["run_rows"]

log = logging.getLogger(__name__)

HEALTH_EVERY_S = 1.0


async def run_rows(
    flow: Flow, recipe: Recipe, cfg: RunConfig, plan: InputPlan, run_dir: str, *, skip: AbstractSet[str] = frozenset()
) -> RunResult:
    """Run ``flow`` over ``plan`` in row mode; returns when every admitted row is written.

    ``recipe`` rebuilds the same flow inside each actor. ``skip`` holds the ids a resumed
    run already committed; they are never admitted. The driver holds that set once: it
    costs O(rows committed) ids, a few tens of bytes each, acceptable for the driver only.
    """
    started = time.monotonic()
    driver = _Driver(flow, recipe, cfg, plan, run_dir, skip)
    try:
        await driver.start()
        await driver.stream()
        files, usage, replicas = await driver.finish()
    finally:
        await driver.shutdown()
    return RunResult(
        pipeline=flow.name,
        run_id=os.path.basename(run_dir),
        run_dir=run_dir,
        files=files,
        rows_read=driver.ledger.admitted,
        rows_done=driver.ledger.completed,
        statuses=dict(driver.ledger.statuses),
        latency=driver.ledger.latency,
        usage=usage,
        replica_usage=replicas,
        lost_replicas=driver.service.lost if driver.service is not None else [],
        wall_s=time.monotonic() - started,
    )


class _Driver:
    def __init__(
        self, flow: Flow, recipe: Recipe, cfg: RunConfig, plan: InputPlan, run_dir: str, skip: AbstractSet[str]
    ) -> None:
        self.flow = flow
        self.skip = skip
        self.recipe = recipe
        self.cfg = cfg
        self.plan = plan
        self.run_dir = run_dir
        self.data_dir = f"{run_dir}/data"
        self.ledger = Ledger(cfg.max_inflight)
        self.outbox = Outbox(flush_rows=cfg.transport.flush_rows, flush_ms=cfg.transport.flush_ms)
        self.steps: dict[str, list[Any]] = {}
        self.sinks: list[Any] = []
        self.service: LLMService | None = None
        self.stats: dict[tuple[str, int], StepStats] = {}

    # -- phase 1 and 2 ----------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.cfg
        schema = output_schema(self.plan.schema, self.flow.fields())
        sink_cls = ray.remote(SinkActor)
        self.sinks = [
            sink_cls.options(num_cpus=0).remote(self.data_dir, schema, shard, cfg.output.part_rows)
            for shard in range(cfg.output.sinks)
        ]
        step_cls = ray.remote(StepActor)
        for name in self.flow.steps:
            op = cfg.operators[name]
            self.steps[name] = [
                step_cls.options(num_cpus=op.num_cpus).remote(
                    self.recipe,
                    name,
                    replica,
                    concurrency=op.concurrency,
                    flush_rows=cfg.transport.flush_rows,
                    flush_ms=cfg.transport.flush_ms,
                )
                for replica in range(op.replicas)
            ]
        self.service = await LLMService.start(
            cfg.llm, seed=cfg.seed, api_key=cfg.api_key(), log_dir=f"{self.run_dir}/logs"
        )
        llm = self.service.access()
        starts = [
            (name, replica, handle.start.remote(self.steps, self.sinks, llm))
            for name, handles in self.steps.items()
            for replica, handle in enumerate(handles)
        ]
        for name, replica, ref in starts:
            try:
                await ref
            except Exception as exc:
                cause = _root_cause(exc)
                if isinstance(cause, StreamflowError):
                    raise type(cause)(str(cause)) from None
                msg = f"step {name!r} replica {replica} failed to start: {type(cause).__name__}: {cause}"
                raise SetupError(msg) from None
        await asyncio.gather(*(sink.ping.remote() for sink in self.sinks))

    # -- phase 3 and 4 ----------------------------------------------------------------

    async def stream(self) -> None:
        first = self.flow.first
        entry = Peers([Peer(f"{first}[{i}]", h) for i, h in enumerate(self.steps[first])])
        progress = Progress(self.plan.total_rows - len(self.skip), mode=self.cfg.progress)
        readers = [asyncio.create_task(self._read(units, first, entry)) for units in self.plan.partitions]
        pollers = [asyncio.create_task(self._poll(sink)) for sink in self.sinks]
        watcher = asyncio.create_task(self._watch(progress))
        finished = asyncio.create_task(self._finish_reading(readers, entry))
        idle = asyncio.create_task(self.ledger.wait_idle())
        background = [watcher, finished, *pollers]
        try:
            while not idle.done():
                done, _ = await asyncio.wait([idle, *background], return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    failure = None if task is idle else task.exception()
                    if failure is not None:
                        raise failure
                background = [task for task in background if not task.done()]
        finally:
            for task in [*readers, *pollers, watcher, finished, idle]:
                task.cancel()
            progress.update(self._snapshot())
            progress.close()

    async def _finish_reading(self, readers: Sequence[asyncio.Task[None]], entry: Peers) -> None:
        await asyncio.gather(*readers)
        await self.outbox.drain(entry.replicas)
        self.ledger.reading_finished()

    async def _read(self, units: Sequence[Any], first: str, entry: Peers) -> None:
        seed = self.cfg.seed
        for unit in units:
            batches = read_unit(self.plan, unit, skip=self.skip)
            while True:
                batch = await asyncio.to_thread(next, batches, None)
                if batch is None:
                    break
                ids, rows = batch
                for row_id, fields in zip(ids, rows):
                    await self.ledger.admit()
                    message = Message(
                        id=row_id,
                        fields=fields,
                        state=State(step=first, seed=row_seed(seed, row_id)),
                        admitted_at=time.time(),
                    )
                    self.outbox.send(entry.pick(), message)

    async def _poll(self, sink: Any) -> None:
        ledger = self.ledger
        while True:
            for completion in await sink.completions.remote(0.5):
                ledger.complete(*completion)

    async def _watch(self, progress: Progress) -> None:
        """Poll every replica's stats: progress numbers, and an error as soon as one dies."""
        while True:
            await asyncio.sleep(HEALTH_EVERY_S)
            if self.service is not None:
                await self.service.watch()
            await self._collect_stats()
            progress.update(self._snapshot())

    async def _collect_stats(self) -> None:
        calls = [(name, i, h.stats.remote()) for name, hs in self.steps.items() for i, h in enumerate(hs)]
        for name, replica, ref in calls:
            try:
                self.stats[(name, replica)] = await ref
            except Exception as exc:
                msg = (
                    f"step {name!r} replica {replica} died ({type(_root_cause(exc)).__name__}); "
                    f"{self.ledger.inflight} rows were in flight. Rerun; crash recovery is not enabled."
                )
                raise RunError(msg) from exc
        lost = sum(s.delivery_failures for s in self.stats.values())
        if lost:
            msg = f"{lost} rows could not be delivered between actors; see the actor logs above."
            raise RunError(msg)

    def _snapshot(self) -> Snapshot:
        statuses = self.ledger.statuses
        filtered = sum(n for s, n in statuses.items() if s.startswith("filtered:"))
        errors = sum(n for s, n in statuses.items() if s.startswith("error:"))
        tokens = sum(u.completion_tokens for s in self.stats.values() for u in s.usage.values())
        return Snapshot(
            done=self.ledger.completed,
            ok=statuses.get("ok", 0),
            filtered=filtered,
            errors=errors,
            inflight=self.ledger.inflight,
            completion_tokens=tokens,
        )

    # -- phase 5 ----------------------------------------------------------------------

    async def finish(self) -> tuple[list[str], dict[str, Usage], dict[str, Usage]]:
        final = await asyncio.gather(*(h.stop.remote() for hs in self.steps.values() for h in hs))
        parts = await asyncio.gather(*(sink.close.remote() for sink in self.sinks))
        usage = merge_usage([s.usage for s in final])
        replicas = merge_usage([s.replica_usage for s in final])
        return sorted(path for paths in parts for path in paths), usage, replicas

    async def shutdown(self) -> None:
        """Stop the LLM service and every actor, whether the run succeeded or not."""
        if self.service is not None:
            await self.service.stop()
        for handle in [*self.sinks, *(h for hs in self.steps.values() for h in hs)]:
            try:
                ray.kill(handle)
            except Exception as exc:  # an actor that is already gone is fine
                log.debug("kill %s: %s", handle, exc)


def _root_cause(exc: BaseException) -> BaseException:
    """The user's exception inside a Ray error, if there is one."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc
