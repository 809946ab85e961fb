"""The driver's ledger: every admitted input row from admission until its output is committed.

A row moves through three states, tracked per input row (its *root*):

* **in flight** from admission until a sink has *accepted* all of it. It holds one of the
  ``max_inflight`` admission slots and a *lease* that live actors renew by reporting the
  rows they hold; a row whose lease runs out was on an actor that died, and is re-admitted
  from the input message kept here.
* **accepted** by its sink shard but not yet in a committed Parquet part: its slot is free,
  but a sink crash would lose it, so its input is still kept.
* **committed**: counted in ``statuses`` and forgotten.

After a fan-out each piece carries its share of the root; a root is accepted (committed)
when its accepted (committed) shares add up to 1. Completions name their piece, and a
piece counts once however often it is reported, so a root re-admitted while its first
copy still lived, or whose commit a restarted sink reports again, completes once. The invariant the run ends on
is ``read == ok + filtered + error`` over input rows.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from fractions import Fraction

from streamflow.histogram import LatencyHistogram
from streamflow.message import Message

__all__ = ["Entry", "Ledger"]

Share = int | Fraction


class Entry:
    """One admitted input row that is not committed yet."""

    __slots__ = (
        "accepted",
        "attempts",
        "committed",
        "done_pieces",
        "holds_slot",
        "lease",
        "message",
        "misses",
        "uncommitted",
    )

    def __init__(self, message: Message, now: float) -> None:
        self.message = message
        self.accepted: Share = 0
        self.committed: Share = 0
        self.uncommitted: dict[str, tuple[Share, str]] = {}
        """Pieces accepted but not committed: their share and status."""
        self.done_pieces: set[str] = set()
        self.holds_slot = True
        self.lease = now
        self.misses = 0
        self.attempts = 1


class Ledger:
    """Counts rows in and out, bounds how many are in flight, and finds the ones to re-admit."""

    def __init__(self, max_inflight: int) -> None:
        self.max_inflight = max_inflight
        self.admitted = 0
        self.completed = 0
        self.rows_out = 0
        self.readmitted = 0
        self.statuses: Counter[str] = Counter()
        self.accepted_statuses: Counter[str] = Counter()
        self.latency = LatencyHistogram()
        self.entries: dict[str, Entry] = {}
        self._holding = 0
        self._room = asyncio.Event()
        self._reading = True
        self.changes = asyncio.Event()
        """Set by the end of reading, a commit that finishes a row, a re-admission, the last release;
        the driver clears it before it looks at the ledger and waits on it after."""

    # -- admission ------------------------------------------------------------------------

    async def admit(self, message: Message) -> None:
        """Wait for a free slot, then track ``message`` as a new in-flight input row."""
        while self._holding >= self.max_inflight:
            self._room.clear()
            await self._room.wait()
        self._holding += 1
        self.admitted += 1
        self.entries[message.id] = Entry(message, time.monotonic())

    def reading_finished(self) -> None:
        """No new rows will be admitted; the run can end once every admitted row is committed."""
        self._reading = False
        self.changes.set()

    # -- completions from the sinks -------------------------------------------------------

    def accept(
        self, piece: str, root: str, numerator: int, denominator: int, status: str, latency_s: float = 0.0
    ) -> None:
        """A sink took one output row; frees the root's slot once all of it was taken."""
        entry = self.entries.get(root)
        if entry is None or piece in entry.uncommitted or piece in entry.done_pieces:
            return
        share = _share(numerator, denominator)
        entry.accepted += share
        entry.uncommitted[piece] = (share, status)
        self.accepted_statuses[status] += 1
        if entry.accepted >= 1 and entry.holds_slot:
            entry.holds_slot = False
            self._release()

    def commit(
        self, piece: str, root: str, numerator: int, denominator: int, status: str, latency_s: float = 0.0
    ) -> bool:
        """An output row is in a committed part. True when its root is done and was never re-admitted,
        so its sink may forget the root's ids (no second copy of it can arrive)."""
        entry = self.entries.get(root)
        if entry is None or piece in entry.done_pieces:
            return False
        if piece not in entry.uncommitted:  # its acceptance was never reported (a sink restarted)
            self.accept(piece, root, numerator, denominator, status)
        self.rows_out += 1
        self.statuses[status] += 1
        self.latency.add(latency_s)
        share, _ = entry.uncommitted.pop(piece)
        entry.done_pieces.add(piece)
        entry.committed += share
        if entry.committed < 1:
            return False
        del self.entries[root]
        self.completed += 1
        self.changes.set()
        return entry.attempts == 1

    # -- recovery -------------------------------------------------------------------------

    def renew(self, roots: list[str], now: float) -> None:
        """Live actors reported holding these roots."""
        entries = self.entries
        for root in roots:
            entry = entries.get(root)
            if entry is not None:
                entry.lease = now

    def missed(self, census: float, now: float, lease_s: float, *, misses: int = 2) -> list[Entry]:
        """After a complete census asked at ``census``: in-flight rows it did not find.

        A row is lost once ``misses`` censuses in a row missed it and nobody reported it for
        ``lease_s``: one census can miss a row that was in transit between two replicas.
        """
        lost = []
        deadline = now - lease_s
        for entry in self.entries.values():
            if entry.accepted >= 1 or entry.lease >= census:
                entry.misses = 0
                continue
            entry.misses += 1
            if entry.misses >= misses and entry.lease < deadline:
                lost.append(entry)
        return lost

    def held_by_dead(self, roots: list[str], reported: float) -> list[Entry]:
        """The rows a replica that died reported holding at ``reported``, less those that moved on since.

        A row another replica reported after ``reported``, or that a sink took, has moved on and
        is left alone.
        """
        entries = self.entries
        lost = []
        for root in roots:
            entry = entries.get(root)
            if entry is not None and entry.accepted < 1 and entry.lease <= reported:
                lost.append(entry)
        return lost

    def uncommitted_in(self, owns: Callable[[str], bool]) -> list[Entry]:
        """Accepted rows not yet committed by the sink shard that ``owns`` a root (it restarted)."""
        lost = []
        for root, entry in self.entries.items():
            if entry.uncommitted and owns(root):
                for _, status in entry.uncommitted.values():
                    self.accepted_statuses[status] -= 1
                entry.uncommitted.clear()
                entry.accepted = entry.committed
                lost.append(entry)
        return lost

    def readmit(self, entry: Entry, now: float) -> None:
        """Count another attempt of ``entry``; it takes a slot again without waiting for one."""
        entry.attempts += 1
        entry.lease = now
        entry.misses = 0
        self.readmitted += 1
        if not entry.holds_slot:
            entry.holds_slot = True
            self._holding += 1
        self.changes.set()

    # -- end of run -----------------------------------------------------------------------

    @property
    def inflight(self) -> int:
        """Rows holding an admission slot."""
        return self._holding

    @property
    def accepted(self) -> int:
        """Rows whose output every sink has taken (committed or about to be)."""
        return self.admitted - self._holding

    @property
    def all_accepted(self) -> bool:
        return not self._reading and self._holding == 0

    @property
    def done(self) -> bool:
        return not self._reading and not self.entries

    def _release(self) -> None:
        self._holding -= 1
        self._room.set()
        if self._holding == 0:
            self.changes.set()


def _share(numerator: int, denominator: int) -> Share:
    return 1 if numerator == denominator else Fraction(numerator, denominator)
