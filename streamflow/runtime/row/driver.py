"""The driver of a row-mode run: it composes start-up, admission, completions, recovery and watching.

In order:
1. start the LLM service and every actor at once, wire each step replica to its peers and
   the sinks, and run every operator's ``setup`` (``startup``);
2. read the input partitions and admit rows under the ``max_inflight`` slots, straight to
   the first step's replicas (``admission``);
3. long-poll the sinks for accepted rows (releasing their slots) and committed rows
   (``completions``), while every second the watcher (``watch``) shows progress, checks the
   claim and the error budget, and takes a census of the rows every replica holds
   (``census``), which the recovery state machine (``recovery``) turns into actions this
   driver carries out: send rows again, re-wire a restarted replica, give up;
4. when every admitted row was accepted, ask the sinks to commit; once every row is
   committed: stop the actors, collect usage, stop.

``docs/architecture.md`` follows a row through these parts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import ray

from streamflow.attempts import RunAttempt
from streamflow.budget import ErrorBudget
from streamflow.cluster import kill_actors
from streamflow.config import RunConfig
from streamflow.errors import RunError, raised_inside
from streamflow.events import events_dir
from streamflow.flow import Flow
from streamflow.io.source import InputPlan, Unreadable
from streamflow.message import Message
from streamflow.pipeline import Recipe
from streamflow.progress import Progress
from streamflow.result import RunResult, TransferStats
from streamflow.runtime.row.actor import ActorStats, Wiring
from streamflow.runtime.row.admission import Admission
from streamflow.runtime.row.census import ask_replicas
from streamflow.runtime.row.collector import collecting_less
from streamflow.runtime.row.completions import collect_completions
from streamflow.runtime.row.fusion import Group, fuse_steps, hosting
from streamflow.runtime.row.ledger import Ledger
from streamflow.runtime.row.offload import node_offloader
from streamflow.runtime.row.outbox import Outbox, Peer, Peers, sink_peers
from streamflow.runtime.row.prometheus import MetricsServer, MetricsView, RunMetrics
from streamflow.runtime.row.recovery import (
    Action,
    Answer,
    GiveUp,
    Readmit,
    Recovery,
    Replica,
    Restarted,
    Rewire,
    SinkRestarted,
)
from streamflow.runtime.row.sink import sink_shard
from streamflow.runtime.row.startup import create_sinks, create_step_actors, start_keepers, start_step_actors
from streamflow.runtime.row.watch import over_budget, snapshot, stream_until_stopped, watch, watch_llm
from streamflow.schema import output_schema
from streamflow.services.llm import Usage, merge_usage
from streamflow.services.llm.service import LLMService

__all__ = ["Driver", "run_rows"]

log = logging.getLogger(__name__)


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
    driver = Driver(flow, recipe, cfg, plan, run_dir, skip, attempt)
    finished = False
    try:
        await driver.start()
        streaming = time.monotonic()
        with collecting_less():
            await stream_until_stopped(driver)
            finishing = time.monotonic()
            files, usage, replicas, transfer = await driver.finish()
        finished = True
    finally:
        await driver.shutdown(finished=finished)
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
        restarts=driver.recovery.restarts,
        wall_s=ended - started,
        phases_s={"start": streaming - started, "stream": finishing - streaming, "finish": ended - finishing},
        transfer=transfer,
        objects_alive_peak=driver.objects_alive_peak,
        metrics_url=driver.metrics_server.url if driver.metrics_server is not None else None,
        unreadable=driver.unreadable,
    )


class Driver:
    """One row-mode run: the actors it started, its ledger and recovery state, and what it reports."""

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
        self.recovery = Recovery(self.ledger, lease_s=cfg.recovery.lease_s, max_attempts=cfg.recovery.max_attempts)
        self.outbox = Outbox(flush_rows=cfg.transport.flush_rows, flush_ms=cfg.transport.flush_ms)
        self.keepers: dict[str, Any] = {}
        self.objects_alive = 0
        self.objects_alive_peak = 0
        self.groups: list[Group] = fuse_steps({name: cfg.operators[name] for name in flow.steps})
        self.actors: dict[str, list[Any]] = {}
        """The actors of each group, by group name."""
        self.sinks: list[Any] = []
        self.entry = Peers([])
        self.parked: list[Message] = []
        """Admitted rows waiting for a replica of the first step to be wired again (all were restarting)."""
        self.sink_peers: list[Peer] = []
        self.service: LLMService | None = None
        self.wiring: Wiring | None = None
        self.stats: dict[Replica, ActorStats] = {}
        """Each replica's last census answer (counters, usage)."""
        self.earlier_usage: list[ActorStats] = []
        """The last answers of incarnations that died: their usage still counts."""
        self.unreadable: list[Unreadable] = []
        self.fatal: RunError | None = None
        """Set when recovery gives up; the watcher raises it."""
        self._rewiring: dict[Replica, asyncio.Task[None]] = {}
        self.events_dir = events_dir(run_dir) if cfg.events.sample > 0 else ""
        self.metrics = RunMetrics(flow.name, os.path.basename(run_dir))
        self.metrics_server: MetricsServer | None = None

    async def start(self) -> None:
        """Start keepers, step actors, the LLM service and sinks; return once every replica is wired and set up."""
        cfg = self.cfg
        began = time.monotonic()
        run_id = os.path.basename(self.run_dir)
        if cfg.metrics.enabled:
            self.metrics_server = MetricsServer(self.metrics, cfg.metrics.host, cfg.metrics.port)
            self.metrics.update(self.metrics_view())  # rows expected from the start, not zeros
        if cfg.offload_threshold > 0:
            self.keepers = start_keepers(run_id)
            # Input fields are put by the keeper of the driver's node: off the driver's loop, one call per batch.
            self.outbox.offloader = node_offloader(cfg.offload_threshold, self.keepers)
        self.actors, sandboxes = create_step_actors(self.flow, self.recipe, cfg, self.groups, run_id, self.events_dir)
        service = asyncio.ensure_future(
            LLMService.start(cfg.llm, seed=cfg.seed, api_key=cfg.api_key(), log_dir=f"{self.run_dir}/logs")
        )
        await asyncio.sleep(0)  # the service creates its actors now, before the sinks
        schema = output_schema(self.plan.schema, self.flow.fields())
        claim = self.attempt.claim if self.attempt is not None else None
        self.sinks = create_sinks(cfg, schema, self.data_dir, run_id, self.events_dir, claim)
        self.sink_peers = sink_peers(self.sinks, cfg.transport)
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
        self.service.start_relays()  # asked for after the pipeline's actors, so Ray starts them first
        serving = time.monotonic()
        self.stats = await start_step_actors(self.actors, self.wiring, self.service.access())
        for replica, stats in self.stats.items():
            self.recovery.started(replica, stats.incarnation)
        log.info(
            "started %d step actors in %.1f s (LLM service ready after %.1f s)",
            len(self.stats), time.monotonic() - began, serving - began,
        )  # fmt: skip

    def admission(self) -> Admission:
        """What reads the input and sends each new row in through ``enter``, within ``max_inflight``."""
        return Admission(
            self.plan,
            self.flow.first,
            self.cfg.seed,
            self.skip,
            self.ledger,
            self.outbox,
            self.entry,
            self.enter,
            self.sink_peers,
            self.unreadable,
        )

    async def stream(self) -> None:
        """Admit every input row and return once each one is committed."""
        ledger = self.ledger
        progress = Progress(self.plan.total_rows - len(self.skip), mode=self.cfg.progress)
        admission = self.admission()
        readers = admission.readers()
        background = [
            asyncio.create_task(admission.finish_reading(readers)),
            asyncio.create_task(watch(self, progress)),
            asyncio.create_task(watch_llm(self.service, self.actors)),
            *(asyncio.create_task(self._collect(shard, sink)) for shard, sink in enumerate(self.sinks)),
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
                raise await over_budget(self.sinks, self.budget, self.run_dir)
        finally:
            for leftover in [*readers, *background, *self._rewiring.values()]:
                leftover.cancel()
            progress.update(snapshot(ledger, self.usage()))
            progress.close()

    async def _collect(self, shard: int, sink: Any) -> None:
        """Collect one sink's completions; its restarts go through recovery."""
        await collect_completions(
            shard,
            sink,
            len(self.sinks),
            self.ledger,
            self.budget,
            self.recovery,
            self.perform,
            self.cfg.recovery.max_restarts,
            time.monotonic,
            self.cfg.transport.sink_flush_ms / 1000.0,
            self.cfg.transport.flush_rows,
        )

    async def census(self) -> None:
        """Ask every replica which rows it holds and let recovery decide what to do about the answers.

        The census completes once every replica has answered (an error counts as an answer),
        or after ``CENSUS_TIMEOUT_S``, so a replica slowed down by a backlog delays re-admission
        instead of causing a false one.
        """
        asked = time.monotonic()
        in_driver = [*self.outbox.held_roots(), *(row.root_id for row in self.parked)]
        counting = asyncio.ensure_future(self._count_objects())
        replies = await ask_replicas(self.actors, self.cfg.recovery.max_restarts)
        await counting
        actions = self.recovery.census(
            asked, [(replica, reply) for replica, reply, _ in replies], in_driver, time.monotonic()
        )
        for replica, reply, _ in replies:
            self._entry_down(replica, not isinstance(reply, Answer) or not reply.ready)
        self.perform(actions)  # before the new stats replace the old: a restart keeps the old usage
        for replica, _, stats in replies:
            if stats is not None:
                self.stats[replica] = stats

    def perform(self, actions: Sequence[Action]) -> None:
        """Carry out what recovery decided."""
        for action in actions:
            if isinstance(action, Readmit):
                for row in action.rows:
                    if row.to_sink:
                        self.outbox.send(self.sink_peers[sink_shard(row.root, len(self.sinks))], row.message)
                    else:
                        self.enter(row.message)
                log.warning("re-admitted %d rows whose actor died", len(action.rows))
            elif isinstance(action, Rewire):
                self._rewiring[action.replica] = asyncio.create_task(self._rewire(action.replica))
            elif isinstance(action, Restarted):
                self.earlier_usage.append(self.stats[action.replica])
                name, replica = action.replica
                log.warning("%s replica %d restarted; wiring it again", hosting(name), replica)
            elif isinstance(action, SinkRestarted):
                log.warning("sink %d restarted; re-admitting %d rows it had not committed", action.shard, action.lost)
            elif isinstance(action, GiveUp):
                self.fatal = RunError(action.why)

    async def _rewire(self, key: Replica) -> None:
        """Give a restarted replica its peers, LLM access and operator setup again."""
        assert self.service is not None and self.wiring is not None
        name, replica = key
        handle = self.actors[name][replica]
        try:
            await handle.start.remote(self.wiring, self.service.access())
            self._entry_down(key, False)
        except ray.exceptions.RayActorError:
            pass  # it died again; the next census tries again
        except Exception as exc:
            cause = raised_inside(exc)
            self.fatal = RunError(f"{hosting(name)} replica {replica} restarted but could not start again: {cause}")
        finally:
            self._rewiring.pop(key, None)
            self.recovery.rewired(key)

    def enter(self, message: Message) -> None:
        """Send an admitted row to the least loaded replica of the first step, or park it while all restart.

        Sent to a restarting actor, Ray could refuse the row; it would then wait out its lease
        and be admitted once more.
        """
        peer = self.entry.pick()
        if peer.down:  # pick passes over a restarting replica while another is up
            self.parked.append(message)
        else:
            self.outbox.send(peer, message)

    def _entry_down(self, replica: Replica, down: bool) -> None:
        """Admit no rows to a replica of the first step while it restarts (they would wait for its wiring).

        Once one is up again, the rows parked while every replica was down leave.
        """
        name, index = replica
        if name != self.groups[0].name:
            return
        self.entry.replicas[index].down = down
        if not down and self.parked:
            parked, self.parked = self.parked, []
            for message in parked:
                self.enter(message)
            log.info("%s is wired again: %d parked rows sent on", self.entry.replicas[index].name, len(parked))

    async def _count_objects(self) -> None:
        """Offloaded objects still alive, summed over the keepers (for the metrics and the summary)."""
        if not self.keepers:
            return
        counts = await asyncio.gather(
            *(keeper.alive.remote() for keeper in self.keepers.values()), return_exceptions=True
        )
        self.objects_alive = sum(n for n in counts if isinstance(n, int))
        self.objects_alive_peak = max(self.objects_alive_peak, self.objects_alive)

    def usage(self) -> dict[str, Usage]:
        """LLM usage per step as last reported by every incarnation of every replica, dead ones included."""
        return merge_usage([s.usage for s in [*self.stats.values(), *self.earlier_usage]])

    def metrics_view(self) -> MetricsView:
        """What the Prometheus endpoint serves now."""
        ledger = self.ledger
        return MetricsView(
            rows_expected=self.plan.total_rows - len(self.skip),
            rows_admitted=ledger.admitted,
            rows_inflight=ledger.inflight,
            finished=dict(ledger.accepted_statuses),
            readmitted=ledger.readmitted,
            restarts=self.recovery.restarts,
            objects_alive=self.objects_alive,
            replicas=tuple(self.stats.values()),
            earlier=tuple(self.earlier_usage),
        )

    async def finish(self) -> tuple[list[str], dict[str, Usage], dict[str, Usage], TransferStats]:
        """Stop the actors once every row is committed; an actor dying now costs only its last counters."""
        handles = [((name, i), h) for name, hs in self.actors.items() for i, h in enumerate(hs)]
        stopped = await asyncio.gather(*(h.stop.remote() for _, h in handles), return_exceptions=True)
        for (key, _), result in zip(handles, stopped, strict=True):
            last = self.stats.get(key, ActorStats(group=key[0], replica=key[1]))
            if not isinstance(result, ActorStats):
                result = last
            elif result.incarnation != last.incarnation:  # it died after the last census: keep what it reported
                self.earlier_usage.append(last)
            self.stats[key] = result
        final = list(self.stats.values())
        self.metrics.update(self.metrics_view())  # the run's final figures, for a last scrape
        closed = await asyncio.gather(*(sink.close.remote() for sink in self.sinks), return_exceptions=True)
        fetched = await asyncio.gather(*(sink.transfer.remote() for sink in self.sinks), return_exceptions=True)
        transfer = self._transfer([s for s in fetched if isinstance(s, TransferStats)], final)
        files: list[str] = []
        for shard, paths in enumerate(closed):
            if isinstance(paths, BaseException):  # restarted while closing: its parts are all committed
                paths = [str(p) for p in Path(self.data_dir).glob(f"part-{shard:03d}-*.parquet")]  # noqa: ASYNC240 (once, at the end of a run)
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

    async def shutdown(self, *, finished: bool = False) -> None:
        """Stop the LLM service, every actor and the metrics endpoint, whether the run succeeded or not.

        After a finished run the endpoint stays up ``metrics.linger_s`` more, so a scraper records
        the final figures.
        """
        if self.service is not None:
            await self.service.stop()
        kill_actors([*self.sinks, *(h for hs in self.actors.values() for h in hs), *self.keepers.values()])
        if self.metrics_server is not None:
            if finished and self.cfg.metrics.linger_s > 0:
                log.warning(
                    "run finished; serving its final metrics %g s more (metrics.linger_s)", self.cfg.metrics.linger_s
                )
                await asyncio.sleep(self.cfg.metrics.linger_s)
            self.metrics_server.close()
