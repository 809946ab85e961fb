"""Watching a row-mode run: progress, metrics, the claim, the error budget, and stop signals.

Every second the watcher shows progress, updates the Prometheus view, reports to the run
directory's claim (``streamflow.attempts``), checks the error budget (``streamflow.budget``)
and starts a census unless one is still running. SIGTERM (``scancel``, a SLURM time limit,
``kill``) or SIGINT (Ctrl-C) ends streaming early: the sinks commit what they hold and the
run raises ``Interrupted``; a resume reruns only the rows that were not committed. A second
Ctrl-C stops at once. Going over the error budget ends it the same way with ``OverErrorBudget``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from streamflow.budget import ErrorBudget
from streamflow.errors import Interrupted, OverErrorBudget
from streamflow.progress import Progress, Snapshot
from streamflow.runtime.row.ledger import Ledger
from streamflow.services.llm import Usage
from streamflow.services.llm.service import LLMService

if TYPE_CHECKING:
    from streamflow.runtime.row.driver import Driver

__all__ = ["HEALTH_EVERY_S", "over_budget", "snapshot", "stream_until_stopped", "watch", "watch_llm"]

log = logging.getLogger(__name__)

HEALTH_EVERY_S = 1.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
STOP_COMMIT_TIMEOUT_S = 20.0  # SLURM sends SIGKILL KillWait (default 30 s) after SIGTERM


async def watch(driver: Driver, progress: Progress) -> None:
    """Every second: show progress, report to the claim, check the error budget, and start a census
    of the replicas unless one is still running."""
    census: asyncio.Task[None] | None = None
    try:
        while True:
            await asyncio.sleep(HEALTH_EVERY_S)
            if census is None or census.done():
                if census is not None:
                    census.result()
                census = asyncio.create_task(driver.census())
            if driver.fatal is not None:
                raise driver.fatal
            if driver.attempt is not None:
                driver.attempt.check()
                driver.attempt.report(driver.ledger.completed, driver.usage())
            if driver.budget.over():
                raise await over_budget(driver.sinks, driver.budget, driver.run_dir)
            progress.update(snapshot(driver.ledger, driver.usage()))
            driver.metrics.update(driver.metrics_view())
    finally:
        if census is not None:
            census.cancel()


async def watch_llm(service: LLMService | None, actors: dict[str, list[Any]]) -> None:
    """Every second: find LLM replicas whose server died and tell every step replica to stop using them.

    A replica restarted later gets the endpoints alive then when it is wired again.
    """
    while service is not None:
        await asyncio.sleep(HEALTH_EVERY_S)
        if await service.watch():
            endpoints = service.access().endpoints
            told = [handle.update_endpoints.remote(endpoints) for handles in actors.values() for handle in handles]
            await asyncio.gather(*told, return_exceptions=True)  # a replica that is down hears it when re-wired


def snapshot(ledger: Ledger, usage: dict[str, Usage]) -> Snapshot:
    """What the progress line shows: finished rows by outcome, rows in flight, tokens so far."""
    statuses = ledger.accepted_statuses
    filtered = sum(n for s, n in statuses.items() if s.startswith("filtered:"))
    errors = sum(n for s, n in statuses.items() if s.startswith("error:"))
    used = usage.values()
    return Snapshot(
        done=ledger.accepted,
        ok=statuses.get("ok", 0),
        filtered=filtered,
        errors=errors,
        inflight=ledger.inflight,
        prompt_tokens=sum(u.prompt_tokens for u in used),
        completion_tokens=sum(u.completion_tokens for u in used),
    )


async def over_budget(sinks: Sequence[Any], budget: ErrorBudget, run_dir: str) -> OverErrorBudget:
    """The error that stops a run over its error budget, quoting a message of its dominant error."""
    answers = await asyncio.gather(*(sink.error_samples.remote() for sink in sinks), return_exceptions=True)
    samples = {status: line for answer in answers if isinstance(answer, dict) for status, line in answer.items()}
    return OverErrorBudget(budget.describe(samples), run_dir)


class Streaming(Protocol):
    """What ``stream_until_stopped`` needs of a driver."""

    run_dir: str
    sinks: list[Any]

    async def stream(self) -> None: ...


async def stream_until_stopped(driver: Streaming) -> None:
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
        await _commit_held(driver.sinks)
        raise Interrupted(received[0], driver.run_dir) from None
    except OverErrorBudget:
        log.warning("errors dominate the last finished rows: committing the rows the sinks hold, then stopping")
        await _commit_held(driver.sinks)
        raise
    finally:
        for signum, handler in previous.items():
            loop.remove_signal_handler(signum)
            signal.signal(signum, handler)  # e.g. Ray's own, or asyncio's for Ctrl-C, outside streaming


async def _commit_held(sinks: Sequence[Any]) -> None:
    """Ask every sink to commit the rows it holds now; rows it cannot commit are rerun on resume."""
    flushed = asyncio.gather(*(sink.flush.remote() for sink in sinks), return_exceptions=True)
    try:
        failed = [result for result in await asyncio.wait_for(flushed, STOP_COMMIT_TIMEOUT_S) if result is not None]
    except TimeoutError:
        failed = [f"no answer within {STOP_COMMIT_TIMEOUT_S:g} s"]
    for why in failed:  # e.g. Ray itself was stopped at the same moment (plain scancel)
        log.warning("a sink could not commit what it held (%s); those rows are rerun on resume", why)
