"""Start-up of a row-mode run: object keepers, step actors, sinks, then wiring and operator setup.

Ray start-up is the largest cost of a short run, so nothing waits for anything it does not
need: actors are created before the LLM service is ready, in the order the first row needs
them, and only ``start`` (wiring, LLM access, operator ``setup``) waits for the service.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ray

from streamflow.config import RunConfig
from streamflow.errors import SetupError, StreamflowError, raised_inside
from streamflow.execution import uses_sandbox
from streamflow.flow import Flow
from streamflow.pipeline import Recipe
from streamflow.runtime.row.actor import ActorStats, StepActor, Wiring
from streamflow.runtime.row.fusion import Group, hosting
from streamflow.runtime.row.offload import ObjectKeeper
from streamflow.runtime.row.recovery import Replica
from streamflow.runtime.row.sink import SinkActor
from streamflow.services.llm.service import LLMAccess

__all__ = ["create_sinks", "create_step_actors", "restart_options", "start_keepers", "start_step_actors"]

log = logging.getLogger(__name__)


def restart_options(cfg: RunConfig) -> dict[str, Any]:
    """Ray options of every step actor and sink: restarted by Ray up to ``recovery.max_restarts`` times.

    SPREAD puts replicas on every node of a cluster, so losing one node loses a share of each step.
    """
    return {"max_restarts": cfg.recovery.max_restarts, "max_task_retries": 0, "scheduling_strategy": "SPREAD"}


def start_keepers(run_id: str) -> dict[str, Any]:
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


def create_step_actors(
    flow: Flow, recipe: Recipe, cfg: RunConfig, groups: Sequence[Group], run_id: str, events_dir: str
) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """The actors of every group, by group name, and those hosting sandbox pools, by pool name.

    They are created in the order the first row needs them: Ray hands its pre-started worker
    processes to the first ones.
    """
    step_cls = ray.remote(StepActor)
    sandbox = cfg.sandbox if uses_sandbox(flow) else None
    actors: dict[str, list[Any]] = {}
    sandboxes: dict[str, Any] = {}
    for group in groups:
        handles = actors[group.name] = [
            step_cls.options(
                num_cpus=group.num_cpus, name=f"streamflow-{run_id}-{group.name}-{replica}", **restart_options(cfg)
            ).remote(
                recipe,
                group.name,
                group.steps,
                replica,
                concurrency={step: cfg.operators[step].concurrency for step in group.steps},
                transport=cfg.transport,
                events_dir=events_dir,
                events=cfg.events,
                offload_threshold=cfg.offload_threshold,
                sandbox=sandbox,
            )
            for replica in range(group.replicas)
        ]
        if any(flow.steps[step].operator.uses_sandbox for step in group.steps):
            sandboxes.update({f"{group.name}[{replica}]": handle for replica, handle in enumerate(handles)})
    return actors, sandboxes


def create_sinks(
    cfg: RunConfig, schema: Any, data_dir: str, run_id: str, events_dir: str, claim: Any | None
) -> list[Any]:
    """The sink actors, one per output shard; they write and commit Parquet parts under ``claim``."""
    sink_cls = ray.remote(SinkActor)
    return [
        sink_cls.options(num_cpus=0, name=f"streamflow-{run_id}-sink-{shard}", **restart_options(cfg)).remote(
            data_dir,
            schema,
            shard,
            cfg.output.part_rows,
            cfg.output.commit_s,
            events_dir=events_dir,
            events=cfg.events,
            claim=claim,
        )
        for shard in range(_sink_count(cfg.output.sinks))
    ]


async def start_step_actors(
    actors: Mapping[str, Sequence[Any]], wiring: Wiring, llm: LLMAccess
) -> dict[Replica, ActorStats]:
    """Wire every replica and run its operators' ``setup``; returns each one's first incarnation.

    A replica whose operator setup fails ends the run with ``SetupError`` (or the
    ``StreamflowError`` the operator raised).
    """
    starts = [
        (name, replica, handle, handle.start.remote(wiring, llm))
        for name, handles in actors.items()
        for replica, handle in enumerate(handles)
    ]
    stats: dict[Replica, ActorStats] = {}
    for name, replica, handle, ref in starts:
        try:
            again = functools.partial(handle.start.remote, wiring, llm)
            incarnation = await _restarting_retried(ref, again)
            stats[(name, replica)] = ActorStats(group=name, replica=replica, incarnation=incarnation)
        except Exception as exc:
            cause = raised_inside(exc)
            if isinstance(cause, StreamflowError):
                raise cause from None
            msg = f"{hosting(name)} replica {replica} failed to start: {type(cause).__name__}: {cause}"
            raise SetupError(msg) from None
    return stats


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


def _sink_count(configured: int | None) -> int:
    """``output.sinks``, or by default one sink per 16 CPUs of the cluster (at least 1, at most 8).

    One sink took about a third of a core at 7,700 rows/s (``bench.orchestration``); on a small
    machine a second one costs a worker process at start-up and buys nothing.
    """
    if configured is not None:
        return configured
    return max(1, min(8, int(ray.cluster_resources().get("CPU", 1)) // 16))
