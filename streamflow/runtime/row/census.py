"""The census: ask every step replica which input rows it holds, as ``recovery.Reply`` values.

The answers go to ``Recovery.census``; this module only does the asking. A replica that
does not answer within ``CENSUS_TIMEOUT_S`` is left out, so one stuck replica cannot stop
the leases of all the others from being renewed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import ray

from streamflow.runtime.row.actor import ActorStats
from streamflow.runtime.row.fusion import hosting
from streamflow.runtime.row.recovery import Answer, Gone, Replica, Reply, Restarting, gave_up

__all__ = ["CENSUS_TIMEOUT_S", "ask_replicas"]

CENSUS_TIMEOUT_S = 30.0


async def ask_replicas(
    actors: Mapping[str, Sequence[Any]], max_restarts: int
) -> list[tuple[Replica, Reply, ActorStats | None]]:
    """Every replica that answered in time: its reply and, when it is alive, its full stats."""
    calls = {
        asyncio.wrap_future(handle.stats.remote().future()): (name, replica)
        for name, handles in actors.items()
        for replica, handle in enumerate(handles)
    }
    answered, late = await asyncio.wait(calls, timeout=CENSUS_TIMEOUT_S)
    for future in late:
        future.cancel()
    replies: list[tuple[Replica, Reply, ActorStats | None]] = []
    for future in answered:
        name, replica = key = calls[future]
        try:
            stats = future.result()
        except ray.exceptions.ActorDiedError as exc:
            replies.append((key, Gone(gave_up(f"{hosting(name)} replica {replica}", max_restarts, exc)), None))
            continue
        except ray.exceptions.RayActorError:
            replies.append((key, Restarting(), None))
            continue
        replies.append((key, Answer(stats.incarnation, stats.ready, stats.held), stats))
    return replies
