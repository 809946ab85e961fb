"""The driver loop of a row-mode run.

Phases, in order:
1. start the LLM service (simulator replicas) and every actor at once: Ray start-up is
   the largest cost of a short run, so nothing waits for anything it does not need;
2. wire each step replica to its peers and the sinks, run every operator's ``setup``;
3. read the input partitions in parallel and admit rows under the ``max_inflight``
   semaphore, straight to the first step's replicas;
4. long-poll the sinks for accepted rows (releasing their slots) and committed rows, while
   taking censuses of the rows every replica holds, re-wiring actors Ray restarted, and
   re-admitting rows the censuses no longer find (their actor died);
5. when every admitted row was accepted, ask the sinks to commit; once every row is
   committed: stop the actors, collect usage, stop.

SIGTERM (``scancel``, a SLURM time limit, ``kill``) or SIGINT (Ctrl-C) ends phase 4 early:
the sinks commit what they hold, the actors stop, and the run raises ``Interrupted``; a
resume reruns only the rows that were not committed. A second Ctrl-C stops at once. The
error budget (``streamflow.budget``) ends it the same way, raising ``OverErrorBudget``, and
another run taking the directory over (``streamflow.attempts``) ends it at once with ``ClaimLost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from fractions import Fraction
from pathlib import Path
from typing import Any

import ray

from streamflow.attempts import RunAttempt
from streamflow.budget import ErrorBudget
from streamflow.config import RunConfig
from streamflow.errors import Interrupted, OverErrorBudget, RunError, SetupError, StreamflowError, raised_inside
from streamflow.events import events_dir
from streamflow.execution import row_seed, uses_sandbox
from streamflow.flow import Flow
from streamflow.io.source import BadInput, InputPlan, Unreadable, read_unit
from streamflow.message import Message, State
from streamflow.pipeline import Recipe
from streamflow.progress import Progress, Snapshot
from streamflow.result import RunResult, TransferStats
from streamflow.runtime.actor import ActorStats, StepActor, Wiring
from streamflow.runtime.fusion import Group, fuse_steps
from streamflow.runtime.ledger import Entry, Ledger
from streamflow.runtime.metrics import MetricsServer, MetricsView, RunMetrics
from streamflow.runtime.offload import ObjectKeeper, node_offloader
from streamflow.runtime.sink import SinkActor, decode_completions, sink_shard
from streamflow.runtime.transport import Outbox, Peer, Peers
from streamflow.schema import output_schema
from streamflow.services.llm import Usage, merge_usage
from streamflow.services.llm.service import LLMService

__all__ = ["run_rows"]

log = logging.getLogger(__name__)

HEALTH_EVERY_S = 1.0
CENSUS_TIMEOUT_S = 30.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
STOP_COMMIT_TIMEOUT_S = 20.0  # SLURM sends SIGKILL KillWait (default 30 s) after SIGTERM


async def run_rows(
    flow: Flow,
    recipe: Recipe,
    cfg: RunConfig,
    plan: InputPlan,
    run_dir: str,
    *,
    skip: AbstractSet[str] = frozenset(),
    attempt: RunAttempt | None = None,
) -> RunResult:
    """Run ``flow`` over ``plan`` in row mode; returns when every admitted row is written.

    ``recipe`` rebuilds the same flow inside each actor. ``skip`` holds the ids a resumed
    run already committed; they are never admitted. The driver holds that set once: it
    costs O(rows committed) ids, a few tens of bytes each, acceptable for the driver only.
    ``attempt`` holds the run directory's claim: the sinks commit under it, the driver reports
    its figures to it every second and stops once another run has taken the claim.
    """
    started = time.monotonic()
    driver = _Driver(flow, recipe, cfg, plan, run_dir, skip, attempt)
    try:
        await driver.start()
        streaming = time.monotonic()
        await _stream_until_stopped(driver)
        finishing = time.monotonic()
        files, usage, replicas, transfer = await driver.finish()
    finally:
        await driver.shutdown()
    ended = time.monotonic()
    return RunResult(
        pipeline=flow.name,
        run_id=os.path.basename(run_dir),
        run_dir=run_dir,
        files=files,
        rows_read=driver.ledger.admitted + sum(part.rows for part in driver.unreadable),
        rows_done=driver.ledger.completed,
        statuses=dict(driver.ledger.statuses),
        latency=driver.ledger.latency,
        usage=usage,
        replica_usage=replicas,
        lost_replicas=driver.service.lost if driver.service is not None else [],
        readmitted=driver.ledger.readmitted,
        restarts=driver.restarts,
        wall_s=ended - started,
        phases_s={"start": streaming - started, "stream": finishing - streaming, "finish": ended - finishing},
        transfer=transfer,
        objects_alive_peak=driver.objects_alive_peak,
        metrics_url=driver.metrics_server.url if driver.metrics_server is not None else None,
        unreadable=driver.unreadable,
    )


class _Driver:
    def __init__(
        self,
        flow: Flow,
        recipe: Recipe,
        cfg: RunConfig,
        plan: InputPlan,
        run_dir: str,
        skip: AbstractSet[str],
        attempt: RunAttempt | None = None,
    ) -> None:
        self.flow = flow
        self.attempt = attempt
        self.budget = ErrorBudget(cfg.errors)
        self.skip = skip
        self.recipe = recipe
        self.cfg = cfg
        self.plan = plan
        self.run_dir = run_dir
        self.data_dir = f"{run_dir}/data"
        self.ledger = Ledger(cfg.max_inflight)
        self.outbox = Outbox(flush_rows=cfg.transport.flush_rows, flush_ms=cfg.transport.flush_ms)
        self.keepers: dict[str, Any] = {}
        self.objects_alive = 0
        self.objects_alive_peak = 0
        self.groups: list[Group] = fuse_steps({name: cfg.operators[name] for name in flow.steps})
        self.actors: dict[str, list[Any]] = {}
        """The actors of each group, by group name."""
        self.sinks: list[Any] = []
        self.entry = Peers([])
        self.sink_peers: list[Peer] = []
        self.service: LLMService | None = None
        self.wiring: Wiring | None = None
        self.stats: dict[tuple[str, int], ActorStats] = {}
        self.earlier_usage: list[ActorStats] = []
        self.restarts = 0
        self.unreadable: list[Unreadable] = []
        self._retire: list[list[str]] = []
        self._rewiring: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._fatal: RunError | None = None
        self._held_by: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self.events_dir = events_dir(run_dir) if cfg.events.sample > 0 else ""
        self.metrics = RunMetrics(flow.name, os.path.basename(run_dir))
        self.metrics_server: MetricsServer | None = None

    # -- phase 1 and 2 ----------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.cfg
        began = time.monotonic()
        run_id = os.path.basename(self.run_dir)
        if cfg.metrics.enabled:
            self.metrics_server = MetricsServer(self.metrics, cfg.metrics.host, cfg.metrics.port)
        if cfg.offload_threshold > 0:
            self.keepers = _start_keepers(run_id)
            # Input fields are put by the keeper of the driver's node: off the driver's loop, one call per batch.
            self.outbox.offloader = node_offloader(cfg.offload_threshold, self.keepers)
        # SPREAD puts replicas on every node of a cluster, so losing one node loses a share of each step.
        restarts = {"max_restarts": cfg.recovery.max_restarts, "max_task_retries": 0, "scheduling_strategy": "SPREAD"}
        step_cls = ray.remote(StepActor)
        sandbox = cfg.sandbox if uses_sandbox(self.flow) else None
        sandboxes: dict[str, Any] = {}
        # Actors are created in the order the first row needs them: Ray hands its pre-started worker
        # processes to the first ones, and the sinks are not needed until rows finish.
        for group in self.groups:
            handles = self.actors[group.name] = [
                step_cls.options(
                    num_cpus=group.num_cpus, name=f"streamflow-{run_id}-{group.name}-{replica}", **restarts
                ).remote(
                    self.recipe,
                    group.name,
                    group.steps,
                    replica,
                    concurrency={step: cfg.operators[step].concurrency for step in group.steps},
                    flush_rows=cfg.transport.flush_rows,
                    flush_ms=cfg.transport.flush_ms,
                    events_dir=self.events_dir,
                    events=cfg.events,
                    offload_threshold=cfg.offload_threshold,
                    sandbox=sandbox,
                )
                for replica in range(group.replicas)
            ]
            if any(self.flow.steps[step].operator.uses_sandbox for step in group.steps):
                sandboxes.update({f"{group.name}[{replica}]": handle for replica, handle in enumerate(handles)})
        service = asyncio.ensure_future(
            LLMService.start(cfg.llm, seed=cfg.seed, api_key=cfg.api_key(), log_dir=f"{self.run_dir}/logs")
        )
        await asyncio.sleep(0)  # the service creates its actors now, before the sinks
        schema = output_schema(self.plan.schema, self.flow.fields())
        sink_cls = ray.remote(SinkActor)
        self.sinks = [
            sink_cls.options(num_cpus=0, name=f"streamflow-{run_id}-sink-{shard}", **restarts).remote(
                self.data_dir,
                schema,
                shard,
                cfg.output.part_rows,
                cfg.output.commit_s,
                events_dir=self.events_dir,
                events=cfg.events,
                claim=self.attempt.claim if self.attempt is not None else None,
            )
            for shard in range(_sink_count(cfg.output.sinks))
        ]
        self.sink_peers = [Peer(f"sink[{i}]", handle) for i, handle in enumerate(self.sinks)]
        self._retire = [[] for _ in self.sinks]
        self.wiring = Wiring(
            groups=self.actors,
            step_group={step: group.name for group in self.groups for step in group.steps},
            sinks=self.sinks,
            keepers=self.keepers,
            sandboxes=sandboxes,
        )
        first = self.groups[0].name
        self.entry = Peers([Peer(f"{first}[{i}]", h) for i, h in enumerate(self.actors[first])])
        self.service = await service
        serving = time.monotonic()
        llm = self.service.access()
        starts = [
            (name, replica, handle, handle.start.remote(self.wiring, llm))
            for name, handles in self.actors.items()
            for replica, handle in enumerate(handles)
        ]
        for name, replica, handle, ref in starts:
            try:
                again = functools.partial(handle.start.remote, self.wiring, llm)
                incarnation = await _restarting_retried(ref, again)
                self.stats[(name, replica)] = ActorStats(group=name, replica=replica, incarnation=incarnation)
            except Exception as exc:
                cause = raised_inside(exc)
                if isinstance(cause, StreamflowError):
                    raise cause from None
                msg = f"{_hosting(name)} replica {replica} failed to start: {type(cause).__name__}: {cause}"
                raise SetupError(msg) from None
        log.info(
            "started %d step actors in %.1f s (LLM service ready after %.1f s)",
            len(starts), time.monotonic() - began, serving - began,
        )  # fmt: skip

    # -- phase 3 and 4 ----------------------------------------------------------------

    async def stream(self) -> None:
        """Admit every input row and return once each one is committed."""
        ledger = self.ledger
        progress = Progress(self.plan.total_rows - len(self.skip), mode=self.cfg.progress)
        readers = [asyncio.create_task(self._read(units)) for units in self.plan.partitions]
        background = [
            asyncio.create_task(self._finish_reading(readers)),
            asyncio.create_task(self._watch(progress)),
            asyncio.create_task(self._watch_llm()),
            *(asyncio.create_task(self._poll(shard, sink)) for shard, sink in enumerate(self.sinks)),
        ]
        try:
            while not ledger.done:
                ledger.changes.clear()
                if ledger.all_accepted:
                    # Nothing is in flight: commit what the sinks buffer instead of waiting commit_s.
                    await asyncio.gather(*(sink.flush.remote() for sink in self.sinks), return_exceptions=True)
                changed = asyncio.ensure_future(ledger.changes.wait())
                done, _ = await asyncio.wait([changed, *background], return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
                for task in done:
                    if task is not changed and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                background = [task for task in background if not task.done()]
            if self.budget.over(final=True):  # a run shorter than the window is judged on all its rows
                raise await self._over_budget()
        finally:
            for leftover in [*readers, *background, *self._rewiring.values()]:
                leftover.cancel()
            progress.update(self._snapshot())
            progress.close()

    async def _finish_reading(self, readers: Sequence[asyncio.Task[None]]) -> None:
        await asyncio.gather(*readers)
        await self.outbox.drain(self.entry.replicas)
        self.ledger.reading_finished()

    async def _read(self, units: Sequence[Any]) -> None:
        seed, first = self.cfg.seed, self.flow.first
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
                        self.outbox.send(self.sink_peers[sink_shard(message.id, len(self.sinks))], message)
                    continue
                ids, rows = batch
                for row_id, fields in zip(ids, rows):
                    message = Message(
                        id=row_id,
                        fields=fields,
                        state=State(step=first, seed=row_seed(seed, row_id)),
                        admitted_at=time.time(),
                    )
                    await self.ledger.admit(message)
                    self.outbox.send(self.entry.pick(), message)

    async def _poll(self, shard: int, sink: Any) -> None:
        """Collect one sink's accepted and committed rows; notice when it restarted."""
        ledger = self.ledger
        incarnation = None  # the first answer tells; rows a sink lost before it are found by their leases
        while True:
            retire, self._retire[shard] = self._retire[shard], []
            try:
                current, accepted, committed = decode_completions(await sink.completions.remote(0.5, retire))
            except ray.exceptions.ActorDiedError as exc:
                raise RunError(_dead(f"sink {shard}", self.cfg.recovery.max_restarts, exc)) from None
            except ray.exceptions.RayActorError:
                await asyncio.sleep(0.2)  # restarting
                continue
            if incarnation is not None and current != incarnation:
                self.restarts += 1
                lost = ledger.uncommitted_in(lambda root: sink_shard(root, len(self.sinks)) == shard)
                log.warning("sink %d restarted; re-admitting %d rows it had not committed", shard, len(lost))
                self._readmit(lost)
            incarnation = current
            for completion in accepted:
                ledger.accept(*completion)
                self.budget.add(completion[4])
            for completion in committed:
                if ledger.commit(*completion):
                    self._retire[shard].append(completion[1])

    async def _watch(self, progress: Progress) -> None:
        """Every second: show progress, report to the claim, check the error budget, and start a census
        of the replicas unless one is still running."""
        census: asyncio.Task[None] | None = None
        try:
            while True:
                await asyncio.sleep(HEALTH_EVERY_S)
                if census is None or census.done():
                    if census is not None:
                        census.result()
                    census = asyncio.create_task(self._census())
                if self._fatal is not None:
                    raise self._fatal
                if self.attempt is not None:
                    self.attempt.check()
                    self.attempt.report(self.ledger.completed, self._usage())
                if self.budget.over():
                    raise await self._over_budget()
                progress.update(self._snapshot())
                self.metrics.update(self._metrics_view())
        finally:
            if census is not None:
                census.cancel()

    async def _watch_llm(self) -> None:
        """Every second: drop LLM replicas whose server died from the registry."""
        while self.service is not None:
            await asyncio.sleep(HEALTH_EVERY_S)
            await self.service.watch()

    async def _census(self) -> None:
        """Ask every replica which rows it holds; re-admit rows that two complete censuses missed.

        A census completes only when every replica has answered (an error counts as an answer
        with no rows), so a replica slowed down by a backlog delays re-admission instead of
        causing a false one. Rows a replica reported last are re-admitted at once when it turns
        out dead or restarted (``_lost_holder``).
        """
        asked = time.monotonic()
        in_driver = self.outbox.held_roots()
        calls = {
            asyncio.wrap_future(handle.stats.remote().future()): ((name, replica), handle)
            for name, handles in self.actors.items()
            for replica, handle in enumerate(handles)
        }
        counting = asyncio.ensure_future(self._count_objects())
        answered, late = await asyncio.wait(calls, timeout=CENSUS_TIMEOUT_S)
        await counting
        for future in late:
            future.cancel()
        # Every live replica's rows first: a row that moved on from a replica that died is not lost.
        for future in answered:
            if future.exception() is None:
                self.ledger.renew(future.result().held, asked)
        for future in answered:
            key, handle = calls[future]
            self._on_stats(key, handle, asked, future)
        self.ledger.renew(in_driver, asked)
        self._readmit(self.ledger.missed(asked, time.monotonic(), self.cfg.recovery.lease_s))

    async def _over_budget(self) -> OverErrorBudget:
        """The error that stops a run over its error budget, quoting a message of its dominant error."""
        answers = await asyncio.gather(*(sink.error_samples.remote() for sink in self.sinks), return_exceptions=True)
        samples = {status: line for answer in answers if isinstance(answer, dict) for status, line in answer.items()}
        return OverErrorBudget(self.budget.describe(samples), self.run_dir)

    async def _count_objects(self) -> None:
        """Offloaded objects still alive, summed over the keepers (for the metrics and the summary)."""
        if not self.keepers:
            return
        counts = await asyncio.gather(
            *(keeper.alive.remote() for keeper in self.keepers.values()), return_exceptions=True
        )
        self.objects_alive = sum(n for n in counts if isinstance(n, int))
        self.objects_alive_peak = max(self.objects_alive_peak, self.objects_alive)

    def _on_stats(self, key: tuple[str, int], handle: Any, asked: float, future: asyncio.Future[ActorStats]) -> None:
        """Note the rows a replica holds (the census renewed their leases); re-wire it if it is a new incarnation."""
        name, replica = key
        try:
            stats = future.result()
        except ray.exceptions.ActorDiedError as exc:
            self._fatal = RunError(_dead(f"{_hosting(name)} replica {replica}", self.cfg.recovery.max_restarts, exc))
            return
        except ray.exceptions.RayActorError:
            self._lost_holder(key)  # restarting: what it held is lost
            return
        previous = self.stats.get(key)
        if previous is not None and previous.incarnation != stats.incarnation:
            self._lost_holder(key)
            self.restarts += 1
            self.earlier_usage.append(previous)
            log.warning("%s replica %d restarted; wiring it again", _hosting(name), replica)
        self.stats[key] = stats
        self._held_by[key] = (asked, stats.held)
        if not stats.ready and key not in self._rewiring:
            self._rewiring[key] = asyncio.create_task(self._rewire(name, replica, handle))

    def _lost_holder(self, key: tuple[str, int]) -> None:
        """A replica died or restarted: the rows it reported last are re-admitted at once, unless they moved on."""
        asked, held = self._held_by.pop(key, (0.0, []))
        self._readmit(self.ledger.held_by_dead(held, asked))

    async def _rewire(self, name: str, replica: int, handle: Any) -> None:
        """Give a restarted replica its peers, LLM access and operator setup again."""
        assert self.service is not None and self.wiring is not None
        try:
            await handle.start.remote(self.wiring, self.service.access())
        except ray.exceptions.RayActorError:
            pass  # it died again; the next poll tries again
        except Exception as exc:
            cause = raised_inside(exc)
            self._fatal = RunError(f"{_hosting(name)} replica {replica} restarted but could not start again: {cause}")
        finally:
            self._rewiring.pop((name, replica), None)

    def _readmit(self, entries: Sequence[Entry]) -> None:
        """Send lost rows through the pipeline again, or write them as ``error:lost`` after too many tries."""
        now = time.monotonic()
        for entry in entries:
            if entry.attempts >= self.cfg.recovery.max_attempts:
                message = _lost(entry)
                self.outbox.send(self.sink_peers[sink_shard(entry.message.id, len(self.sinks))], message)
            else:  # an input row goes through the flow again; a row finished as bad input, to its sink again
                message = entry.message
                peer = self.entry.pick() if message.is_ok else self.sink_peers[sink_shard(message.id, len(self.sinks))]
                self.outbox.send(peer, message)
            self.ledger.readmit(entry, now)
        if entries:
            log.warning("re-admitted %d rows whose actor died", len(entries))

    def _usage(self) -> dict[str, Usage]:
        """LLM usage per step as last reported by every incarnation of every replica, dead ones included."""
        return merge_usage([s.usage for s in [*self.stats.values(), *self.earlier_usage]])

    def _snapshot(self) -> Snapshot:
        statuses = self.ledger.accepted_statuses
        filtered = sum(n for s, n in statuses.items() if s.startswith("filtered:"))
        errors = sum(n for s, n in statuses.items() if s.startswith("error:"))
        usage = self._usage().values()
        return Snapshot(
            done=self.ledger.accepted,
            ok=statuses.get("ok", 0),
            filtered=filtered,
            errors=errors,
            inflight=self.ledger.inflight,
            prompt_tokens=sum(u.prompt_tokens for u in usage),
            completion_tokens=sum(u.completion_tokens for u in usage),
        )

    def _metrics_view(self) -> MetricsView:
        ledger = self.ledger
        return MetricsView(
            rows_expected=self.plan.total_rows - len(self.skip),
            rows_admitted=ledger.admitted,
            rows_inflight=ledger.inflight,
            finished=dict(ledger.accepted_statuses),
            readmitted=ledger.readmitted,
            restarts=self.restarts,
            objects_alive=self.objects_alive,
            replicas=tuple(self.stats.values()),
            earlier=tuple(self.earlier_usage),
        )

    # -- phase 5 ----------------------------------------------------------------------

    async def finish(self) -> tuple[list[str], dict[str, Usage], dict[str, Usage], TransferStats]:
        """Stop the actors once every row is committed; an actor dying now costs only its last counters."""
        handles = [((name, i), h) for name, hs in self.actors.items() for i, h in enumerate(hs)]
        stopped = await asyncio.gather(*(h.stop.remote() for _, h in handles), return_exceptions=True)
        final = []
        for (key, _), result in zip(handles, stopped, strict=True):
            last = self.stats.get(key, ActorStats(group=key[0], replica=key[1]))
            if not isinstance(result, ActorStats):
                result = last
            elif result.incarnation != last.incarnation:  # it died after the last census: keep what it reported
                self.earlier_usage.append(last)
            final.append(result)
        closed = await asyncio.gather(*(sink.close.remote() for sink in self.sinks), return_exceptions=True)
        fetched = await asyncio.gather(*(sink.transfer.remote() for sink in self.sinks), return_exceptions=True)
        transfer = self._transfer([s for s in fetched if isinstance(s, TransferStats)], final)
        files: list[str] = []
        for shard, paths in enumerate(closed):
            if isinstance(paths, BaseException):  # restarted while closing: its parts are all committed
                paths = [str(p) for p in Path(self.data_dir).glob(f"part-{shard:03d}-*.parquet")]
            files.extend(paths)
        usage = merge_usage([s.usage for s in [*final, *self.earlier_usage]])
        replicas = merge_usage([s.replica_usage for s in [*final, *self.earlier_usage]])
        return sorted(files), usage, replicas, transfer

    def _transfer(self, sinks: Sequence[TransferStats], replicas: Sequence[ActorStats]) -> TransferStats:
        """Bytes moved by the driver, every replica (dead incarnations included) and the sinks."""
        total = TransferStats(inline_bytes=self.outbox.bytes_sent)
        if self.outbox.offloader is not None:
            total.add(self.outbox.offloader.stats)
        for stats in [*sinks, *(s.transfer for s in [*replicas, *self.earlier_usage])]:
            total.add(stats)
        return total

    async def shutdown(self) -> None:
        """Stop the LLM service, every actor and the metrics endpoint, whether the run succeeded or not."""
        if self.metrics_server is not None:
            self.metrics_server.close()
        if self.service is not None:
            await self.service.stop()
        for handle in [*self.sinks, *(h for hs in self.actors.values() for h in hs), *self.keepers.values()]:
            try:
                ray.kill(handle, no_restart=True)
            except Exception as exc:  # an actor that is already gone is fine
                log.debug("kill %s: %s", handle, exc)


async def _stream_until_stopped(driver: _Driver) -> None:
    """``driver.stream()``, unless a stop signal comes first: then commit what the sinks hold and raise."""
    loop = asyncio.get_running_loop()
    streaming = asyncio.ensure_future(driver.stream())
    received: list[signal.Signals] = []

    def stop(signum: signal.Signals) -> None:
        received.append(signum)
        streaming.cancel()
        # A second Ctrl-C while the sinks commit means "now": Python's own handler interrupts the wait.
        with contextlib.suppress(ValueError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
            signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = {}
    for signum in STOP_SIGNALS:
        try:
            previous[signum] = signal.getsignal(signum)
            loop.add_signal_handler(signum, stop, signum)
        except (ValueError, RuntimeError):  # not the main thread: the process keeps its own handling
            previous.pop(signum, None)
            log.debug("cannot handle %s outside the main thread", signum.name)
    try:
        await streaming
    except asyncio.CancelledError:
        if not received:
            raise
        log.warning("%s received: committing the rows the sinks hold, then stopping", received[0].name)
        await _commit_held(driver)
        raise Interrupted(received[0], driver.run_dir) from None
    except OverErrorBudget:
        log.warning("errors dominate the last finished rows: committing the rows the sinks hold, then stopping")
        await _commit_held(driver)
        raise
    finally:
        for signum, handler in previous.items():
            loop.remove_signal_handler(signum)
            signal.signal(signum, handler)  # e.g. Ray's own, or asyncio's for Ctrl-C, outside streaming


async def _commit_held(driver: _Driver) -> None:
    """Ask every sink to commit the rows it holds now; rows it cannot commit are rerun on resume."""
    flushed = asyncio.gather(*(sink.flush.remote() for sink in driver.sinks), return_exceptions=True)
    try:
        failed = [result for result in await asyncio.wait_for(flushed, STOP_COMMIT_TIMEOUT_S) if result is not None]
    except TimeoutError:
        failed = [f"no answer within {STOP_COMMIT_TIMEOUT_S:g} s"]
    for why in failed:  # e.g. Ray itself was stopped at the same moment (plain scancel)
        log.warning("a sink could not commit what it held (%s); those rows are rerun on resume", why)


def _start_keepers(run_id: str) -> dict[str, Any]:
    """One ``ObjectKeeper`` per alive node: it owns what that node's operators offload."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    keeper_cls = ray.remote(ObjectKeeper)
    keepers = {}
    for index, node in enumerate(n for n in ray.nodes() if n["Alive"]):
        keepers[node["NodeID"]] = keeper_cls.options(
            num_cpus=0,
            name=f"streamflow-{run_id}-keeper-{index}",
            max_restarts=-1,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
        ).remote()
    return keepers


async def _restarting_retried(first: Any, again: Callable[[], Any], attempts: int = 30) -> Any:
    """Await an actor call; while the actor is restarting (it died during start-up), call it ``again``."""
    ref = first
    for _ in range(attempts):
        try:
            return await ref
        except ray.exceptions.ActorUnavailableError:
            await asyncio.sleep(1.0)
            ref = again()
    return await ref


def _lost(entry: Entry) -> Message:
    """The row written in place of one whose actors died ``attempts`` times: its input, ``error:lost``."""
    original = entry.message
    remaining = 1 - Fraction(entry.accepted)
    error = (
        f"the actors holding this row died {entry.attempts} times (recovery.max_attempts); "
        "it was not retried again. Rerun it with resume=<run dir> retry_errors=true."
    )
    whole = remaining == 1
    return Message(
        id=original.id if whole else f"{original.id}/lost",
        fields=original.fields,
        status="error:lost",
        error=error,
        root="" if whole else original.id,
        share=(remaining.numerator, remaining.denominator),
        admitted_at=original.admitted_at,
    )


def _sink_count(configured: int | None) -> int:
    """``output.sinks``, or by default one sink per 16 CPUs of the cluster (at least 1, at most 8).

    One sink took about a third of a core at 7,700 rows/s (``bench.orchestration``); on a small
    machine a second one costs a worker process at start-up and buys nothing.
    """
    if configured is not None:
        return configured
    return max(1, min(8, int(ray.cluster_resources().get("CPU", 1)) // 16))


def _hosting(group: str) -> str:
    """How messages name the actor of a group: ``step 'ask'``, or ``steps 'ask+judge'`` when fused."""
    return f"steps {group!r}" if "+" in group else f"step {group!r}"


def _dead(what: str, max_restarts: int, exc: BaseException) -> str:
    if max_restarts == 0:
        return (
            f"{what} died ({type(raised_inside(exc)).__name__}) and recovery.max_restarts=0; rerun with resume=<run dir>."
        )
    return f"{what} died and Ray could not restart it (recovery.max_restarts={max_restarts}): {raised_inside(exc)}"

