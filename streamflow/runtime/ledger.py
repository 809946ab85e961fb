"""The driver's ledger of admitted rows and the global admission semaphore.

Every input row is admitted once and completes once, even after a fan-out: each piece
carries its share of the input row, and the row completes when its shares add up to 1.
The invariant the run ends on is ``read == ok + filtered + error`` over input rows.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from fractions import Fraction

from streamflow.histogram import LatencyHistogram

__all__ = ["Ledger"]


class Ledger:
    """Counts rows in and out and bounds how many are in flight (``max_inflight``)."""

    def __init__(self, max_inflight: int) -> None:
        self.max_inflight = max_inflight
        self.admitted = 0
        self.completed = 0
        self.rows_out = 0
        self.statuses: Counter[str] = Counter()
        self.latency = LatencyHistogram()
        self._slots = asyncio.Semaphore(max_inflight)
        self._partial: dict[str, Fraction] = {}
        self._reading = True
        self._idle = asyncio.Event()

    async def admit(self) -> None:
        """Wait for a free slot and count one more input row."""
        await self._slots.acquire()
        self.admitted += 1
        self._idle.clear()

    def complete(self, root: str, numerator: int, denominator: int, status: str, latency_s: float = 0.0) -> None:
        """Record one finished output row; frees its input row's slot once all of it is done."""
        self.rows_out += 1
        self.statuses[status] += 1
        self.latency.add(latency_s)
        if numerator == denominator:
            self._release()
            return
        done = self._partial.get(root, Fraction(0)) + Fraction(numerator, denominator)
        if done >= 1:
            self._partial.pop(root, None)
            self._release()
        else:
            self._partial[root] = done

    def reading_finished(self) -> None:
        """No more rows will be admitted; ``wait_idle`` returns once the last one completes."""
        self._reading = False
        self._check_idle()

    async def wait_idle(self) -> None:
        """Wait until reading is finished and every admitted row completed."""
        await self._idle.wait()

    @property
    def inflight(self) -> int:
        return self.admitted - self.completed

    def _release(self) -> None:
        self.completed += 1
        self._slots.release()
        self._check_idle()

    def _check_idle(self) -> None:
        if not self._reading and self.completed >= self.admitted:
            self._idle.set()
