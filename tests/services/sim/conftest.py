"""Helpers for the simulator tests: an event loop on virtual time, so engine timing checks are exact and instant."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

_T = TypeVar("_T")


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """Event loop whose clock stands still while callbacks run and jumps to the next timer when idle.

    Requests submitted in one synchronous block therefore arrive at the same instant, and sleeps cost no
    wall time. Only for code without I/O: the clock would also jump over network waits.
    """

    def __init__(self) -> None:
        super().__init__()
        self._virtual_now = 0.0

    def time(self) -> float:
        return self._virtual_now

    def _run_once(self) -> None:
        if not self._ready and self._scheduled:  # type: ignore[attr-defined]
            self._virtual_now = max(self._virtual_now, self._scheduled[0].when())  # type: ignore[attr-defined]
        super()._run_once()  # type: ignore[misc]


def _run_virtual(coro: Coroutine[Any, Any, _T]) -> _T:
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(coro)


@pytest.fixture
def run_virtual() -> Callable[[Coroutine[Any, Any, _T]], _T]:
    """``asyncio.run`` on a ``VirtualTimeLoop``."""
    return _run_virtual
