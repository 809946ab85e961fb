"""Run a coroutine at once, and give it a task only if it has to wait.

A row whose steps never wait (a filter, a parser, a no-op) finishes inside the call that
received it; creating, scheduling and running an asyncio task for it cost ~10 µs, about as
much as the rest of its hop. A row that waits (an LLM call) continues in a task from where it
stopped. Python 3.12's ``asyncio.eager_task_factory`` does the same for every task of a loop;
this does it for the rows of one actor, on 3.11 too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Generator
from typing import Any

__all__ = ["start_eagerly"]

log = logging.getLogger(__name__)


def start_eagerly(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run ``coro`` until it first waits; returns the task carrying it on, or None if it finished."""
    try:
        waiting_on = coro.send(None)
    except StopIteration:
        return None
    except Exception:  # what an unawaited task would log; the caller is not the one to fail
        log.exception("a row's coroutine failed")
        return None
    return asyncio.ensure_future(_carry_on(coro, waiting_on))


async def _carry_on(coro: Coroutine[Any, Any, None], waiting_on: Any) -> None:
    await _Resumed(coro, waiting_on)


class _Resumed:
    """An awaitable that hands the task what ``coro`` is waiting on, then forwards every resumption to it."""

    __slots__ = ("coro", "waiting_on")

    def __init__(self, coro: Coroutine[Any, Any, None], waiting_on: Any) -> None:
        self.coro = coro
        self.waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, None]:
        coro, waiting_on = self.coro, self.waiting_on
        while True:
            try:
                sent = yield waiting_on
            except BaseException as exc:  # cancellation included: it belongs to the coroutine
                try:
                    waiting_on = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    waiting_on = coro.send(sent)
                except StopIteration:
                    return
