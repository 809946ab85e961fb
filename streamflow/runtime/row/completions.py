"""Collecting completions: long-poll each sink for the rows it accepted and committed.

An accepted row frees its admission slot and counts toward the error budget; a committed
row is forgotten by the ledger, and its sink is told to forget its ids too (``retire``)
once no second copy of it can arrive. A sink answering as a new incarnation lost what it
had not committed: the recovery state machine decides what to send again.

When rows finish one by one, answering each at once would cost both processes an actor call
per row: after a reply with fewer than ``full`` completions (``transport.flush_rows``), the
next call waits until ``every_s`` (``transport.sink_flush_ms``) passed since the last one. A
fuller reply is followed at once, so a fast pipeline's slots are freed without delay.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import ray

from streamflow.budget import ErrorBudget
from streamflow.errors import RunError
from streamflow.runtime.row.ledger import Ledger
from streamflow.runtime.row.recovery import Action, Recovery, gave_up
from streamflow.runtime.row.sink import decode_completions, sink_shard

__all__ = ["collect_completions"]

POLL_S = 0.5
"""How long a sink holds a completions call open when it has nothing to report."""


async def collect_completions(
    shard: int,
    sink: Any,
    sinks: int,
    ledger: Ledger,
    budget: ErrorBudget,
    recovery: Recovery,
    perform: Callable[[Sequence[Action]], None],
    max_restarts: int,
    clock: Callable[[], float],
    every_s: float,
    full: int,
) -> None:
    """Poll sink ``shard`` (of ``sinks``) for as long as the run streams; raise once Ray gave up on it."""
    owns = functools.partial(_owns, shard=shard, sinks=sinks)
    retire: list[str] = []
    asked, trickling = -math.inf, False
    while True:
        if trickling:
            await asyncio.sleep(max(0.0, asked + every_s - time.monotonic()))
        asked = time.monotonic()
        retiring, retire = retire, []
        try:
            current, accepted, committed = decode_completions(await sink.completions.remote(POLL_S, retiring))
        except ray.exceptions.ActorDiedError as exc:
            raise RunError(gave_up(f"sink {shard}", max_restarts, exc)) from None
        except ray.exceptions.RayActorError:
            await asyncio.sleep(0.2)  # restarting
            continue
        trickling = len(accepted) + len(committed) < full
        perform(recovery.sink_answered(shard, current, owns, clock()))
        for completion in accepted:
            ledger.accept(*completion)
            budget.add(completion[4])
        for completion in committed:
            if ledger.commit(*completion):
                retire.append(completion[1])


def _owns(root: str, *, shard: int, sinks: int) -> bool:
    return sink_shard(root, sinks) == shard
