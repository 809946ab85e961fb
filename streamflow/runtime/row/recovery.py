"""Crash recovery of a row-mode run, as a state machine: what happened goes in, what to do comes out.

The driver feeds it census replies, completed censuses, sink incarnations and finished
re-wirings, with the time; it answers with ``Action`` values the driver carries out (send
rows again, re-wire a replica, give up on one). Nothing here talks to Ray or waits: the
rules can be read and tested on their own (``tests/runtime/test_recovery.py``).

The rules:

* A census asks every replica which input rows it holds and *completes* once each one has
  answered or ran out of time; a live answer renews the leases of the rows it lists (in the
  ``Ledger``), and so do the rows still in the driver's own outbox.
* A row that two completed censuses in a row missed and that nobody reported for
  ``lease_s`` is re-admitted (``Ledger.missed``): one census can miss a row in transit
  between two replicas, and a replica slowed down by a backlog delays the census instead of
  causing a false re-admission.
* A replica found restarting, or answering with a new incarnation, lost what it held: the
  rows it reported in its last answer are re-admitted at once, unless they moved on since
  (another replica reported them later, or a sink took them: ``Ledger.held_by_dead``).
* A replica that answers but is not ready (a new incarnation Ray started) is re-wired, once
  at a time. A replica Ray gave up on (``recovery.max_restarts`` used up) ends the run.
* A sink with a new incarnation lost the rows it had accepted but not committed: they are
  re-admitted at once.
* A re-admitted row goes through the flow again (a row finished as bad input goes straight
  to its sink again); after ``max_attempts`` it is written as ``error:lost`` instead.

A failed delivery needs no event of its own: the rows drop out of their sender's held rows
and the censuses find them missing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from streamflow.errors import raised_inside
from streamflow.message import Message
from streamflow.runtime.row.ledger import Entry, Ledger

__all__ = [
    "Action",
    "Answer",
    "GiveUp",
    "Gone",
    "Readmit",
    "Recovery",
    "Replica",
    "Reply",
    "Resend",
    "Restarted",
    "Restarting",
    "Rewire",
    "SinkRestarted",
    "gave_up",
    "lost_row",
]

Replica = tuple[str, int]
"""A step replica: its group name and index."""


# -- what goes in -----------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """A replica's census answer: which incarnation it is, whether it is wired, the input rows it holds."""

    incarnation: str
    ready: bool
    held: Sequence[str]


@dataclass(frozen=True)
class Restarting:
    """The census call failed because Ray is restarting the replica."""


@dataclass(frozen=True)
class Gone:
    """Ray will not restart the replica again; ``why`` says so in words for the user."""

    why: str


Reply = Answer | Restarting | Gone


# -- what comes out ---------------------------------------------------------------------


@dataclass(frozen=True)
class Resend:
    """One row to send again: through the flow's first step, or to the sink that owns ``root``."""

    message: Message
    to_sink: bool
    root: str


@dataclass(frozen=True)
class Readmit:
    """Send these rows again; the ledger already counts their new attempt."""

    rows: tuple[Resend, ...]


@dataclass(frozen=True)
class Rewire:
    """Give the replica its peers, LLM access and operator setup again, then report ``rewired``."""

    replica: Replica


@dataclass(frozen=True)
class Restarted:
    """The replica answered as a new incarnation: keep the usage its previous one reported."""

    replica: Replica


@dataclass(frozen=True)
class SinkRestarted:
    """A sink answered as a new incarnation; ``lost`` rows it had accepted are re-admitted."""

    shard: int
    lost: int


@dataclass(frozen=True)
class GiveUp:
    """Stop the run: the replica is dead for good."""

    replica: Replica
    why: str


Action = Readmit | Rewire | Restarted | SinkRestarted | GiveUp


class Recovery:
    """The recovery state of one run: incarnations, last census answers, re-wirings under way."""

    def __init__(self, ledger: Ledger, *, lease_s: float, max_attempts: int) -> None:
        self.ledger = ledger
        self.lease_s = lease_s
        self.max_attempts = max_attempts
        self.restarts = 0
        """Replicas and sinks that came back as a new incarnation."""
        self._incarnations: dict[Replica, str] = {}
        self._sink_incarnations: dict[int, str] = {}
        self._held_by: dict[Replica, tuple[float, list[str]]] = {}
        """Each replica's last answer: when it was asked and the rows it held."""
        self._rewiring: set[Replica] = set()

    def started(self, replica: Replica, incarnation: str) -> None:
        """The replica started as ``incarnation`` and is wired."""
        self._incarnations[replica] = incarnation

    def census(
        self, asked: float, replies: Sequence[tuple[Replica, Reply]], in_driver: Sequence[str], now: float
    ) -> list[Action]:
        """A census asked at ``asked`` completed with ``replies`` (replicas that ran out of time are absent).

        ``in_driver`` are the rows the driver's own outbox held when the census was asked.
        """
        # Every live replica's rows first: a row that moved on from a replica that died is not lost.
        for _, reply in replies:
            if isinstance(reply, Answer):
                self.ledger.renew(list(reply.held), asked)
        actions: list[Action] = []
        for replica, reply in replies:
            actions.extend(self._reply(replica, reply, asked, now))
        self.ledger.renew(list(in_driver), asked)
        actions.extend(self._readmit(self.ledger.missed(asked, now, self.lease_s), now))
        return actions

    def rewired(self, replica: Replica) -> None:
        """A re-wiring ended, whether it worked or not; the next census may start another one."""
        self._rewiring.discard(replica)

    def sink_answered(self, shard: int, incarnation: str, owns: Callable[[str], bool], now: float) -> list[Action]:
        """A sink answered as ``incarnation``; ``owns`` tells the input rows of its shard.

        The first answer only sets the incarnation: rows a sink lost before it are found by their leases.
        """
        previous = self._sink_incarnations.get(shard)
        self._sink_incarnations[shard] = incarnation
        if previous is None or previous == incarnation:
            return []
        self.restarts += 1
        lost = self.ledger.uncommitted_in(owns)
        return [SinkRestarted(shard, len(lost)), *self._readmit(lost, now)]

    def _reply(self, replica: Replica, reply: Reply, asked: float, now: float) -> list[Action]:
        if isinstance(reply, Gone):
            return [GiveUp(replica, reply.why)]
        if isinstance(reply, Restarting):
            return self._lost_holder(replica, now)
        actions: list[Action] = []
        previous = self._incarnations.get(replica)
        if previous is not None and previous != reply.incarnation:
            actions.extend(self._lost_holder(replica, now))
            self.restarts += 1
            actions.append(Restarted(replica))
        self._incarnations[replica] = reply.incarnation
        self._held_by[replica] = (asked, list(reply.held))
        if not reply.ready and replica not in self._rewiring:
            self._rewiring.add(replica)
            actions.append(Rewire(replica))
        return actions

    def _lost_holder(self, replica: Replica, now: float) -> list[Action]:
        """The replica died or restarted: the rows it reported last are re-admitted, unless they moved on."""
        asked, held = self._held_by.pop(replica, (0.0, []))
        return self._readmit(self.ledger.held_by_dead(held, asked), now)

    def _readmit(self, entries: Sequence[Entry], now: float) -> list[Action]:
        if not entries:
            return []
        rows = []
        for entry in entries:
            if entry.attempts >= self.max_attempts:
                rows.append(Resend(lost_row(entry), to_sink=True, root=entry.message.id))
            else:  # an input row goes through the flow again; a row finished as bad input, to its sink again
                message = entry.message
                rows.append(Resend(message, to_sink=not message.is_ok, root=message.id))
            self.ledger.readmit(entry, now)
        return [Readmit(tuple(rows))]


def lost_row(entry: Entry) -> Message:
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


def gave_up(what: str, max_restarts: int, exc: BaseException) -> str:
    """Why the run stops: ``what`` (a replica or a sink) died and Ray will not restart it."""
    if max_restarts == 0:
        return f"{what} died ({type(raised_inside(exc)).__name__}) and recovery.max_restarts=0; rerun with resume=<run dir>."
    return f"{what} died and Ray could not restart it (recovery.max_restarts={max_restarts}): {raised_inside(exc)}"
