"""Crash recovery rules: census answers, deaths and restarts in, actions out; no Ray involved."""

import asyncio

from streamflow.message import Message
from streamflow.runtime.row.ledger import Ledger
from streamflow.runtime.row.recovery import (
    Answer,
    GiveUp,
    Gone,
    Readmit,
    Recovery,
    Resend,
    Restarted,
    Restarting,
    Rewire,
    SinkRestarted,
)

LEASE_S = 10.0
ASK = ("ask", 0)
JUDGE = ("judge", 0)


def row(index, **kwargs):
    return Message(id=f"0:{index}", fields={}, **kwargs)


def recovery_of(*messages, max_attempts=3):
    """A recovery over a ledger holding ``messages`` in flight, both replicas started as incarnation ``a``."""

    async def admit():
        ledger = Ledger(max_inflight=16)
        for message in messages:
            await ledger.admit(message)
        return ledger

    ledger = asyncio.run(admit())
    for entry in ledger.entries.values():
        entry.lease = 0.0
    recovery = Recovery(ledger, lease_s=LEASE_S, max_attempts=max_attempts)
    recovery.started(ASK, "a")
    recovery.started(JUDGE, "a")
    return recovery


def holding(*indices, incarnation="a", ready=True):
    return Answer(incarnation=incarnation, ready=ready, held=[f"0:{i}" for i in indices])


def readmitted(actions):
    return [send.message.id for action in actions if isinstance(action, Readmit) for send in action.rows]


def test_a_row_two_complete_censuses_missed_is_readmitted_once_its_lease_ran_out():
    recovery = recovery_of(row(0), row(1))
    assert recovery.census(20.0, [(ASK, holding(1)), (JUDGE, holding())], [], now=20.5) == []
    actions = recovery.census(21.0, [(ASK, holding(1)), (JUDGE, holding())], [], now=21.5)
    assert actions == [Readmit((Resend(row(0), to_sink=False, root="0:0"),))]
    assert recovery.ledger.readmitted == 1 and recovery.ledger.entries["0:0"].attempts == 2


def test_a_row_missed_by_one_census_only_is_left_alone():
    recovery = recovery_of(row(0))
    recovery.census(20.0, [(ASK, holding())], [], now=20.5)
    recovery.census(21.0, [(ASK, holding(0))], [], now=21.5)
    assert readmitted(recovery.census(22.0, [(ASK, holding())], [], now=22.5)) == []


def test_a_row_reported_within_its_lease_is_not_readmitted_however_many_censuses_missed_it():
    recovery = recovery_of(row(0))
    recovery.census(1.0, [(ASK, holding(0))], [], now=1.5)
    for asked in (2.0, 3.0, 4.0):
        assert recovery.census(asked, [(ASK, holding())], [], now=asked + 0.5) == []


def test_a_census_with_a_missing_answer_re_admits_nothing_by_itself():
    """A replica that did not answer in time renews nothing: its rows count one miss, not a loss."""
    recovery = recovery_of(row(0))
    assert recovery.census(20.0, [(JUDGE, holding())], [], now=50.0) == []
    assert recovery.ledger.entries["0:0"].misses == 1


def test_rows_the_driver_still_holds_are_not_missed():
    recovery = recovery_of(row(0))
    for asked in (20.0, 21.0, 22.0):
        assert recovery.census(asked, [(ASK, holding())], ["0:0"], now=asked + 0.5) == []


def test_a_row_a_sink_accepted_is_not_readmitted():
    recovery = recovery_of(row(0))
    recovery.ledger.accept("0:0", "0:0", 1, 1, "ok")
    for asked in (20.0, 21.0, 22.0):
        assert recovery.census(asked, [(ASK, holding())], [], now=asked + 0.5) == []


def test_rows_a_restarting_replica_reported_are_readmitted_at_once():
    recovery = recovery_of(row(0), row(1))
    recovery.census(1.0, [(ASK, holding(0)), (JUDGE, holding(1))], [], now=1.5)
    assert readmitted(recovery.census(2.0, [(ASK, Restarting()), (JUDGE, holding(1))], [], now=2.5)) == ["0:0"]


def test_a_row_that_moved_on_from_a_dead_replica_is_not_readmitted():
    recovery = recovery_of(row(0))
    recovery.census(1.0, [(ASK, holding(0)), (JUDGE, holding())], [], now=1.5)
    assert recovery.census(2.0, [(ASK, Restarting()), (JUDGE, holding(0))], [], now=2.5) == []


def test_a_dead_replicas_rows_are_readmitted_only_once():
    recovery = recovery_of(row(0))
    recovery.census(1.0, [(ASK, holding(0))], [], now=1.5)
    assert readmitted(recovery.census(2.0, [(ASK, Restarting())], [], now=2.5)) == ["0:0"]
    assert readmitted(recovery.census(3.0, [(ASK, Restarting())], [], now=3.5)) == []


def test_a_new_incarnation_loses_what_the_old_one_held_and_is_rewired():
    recovery = recovery_of(row(0), row(1))
    recovery.census(1.0, [(ASK, holding(0, 1))], [], now=1.5)
    actions = recovery.census(2.0, [(ASK, holding(1, incarnation="b", ready=False))], [], now=2.5)
    assert actions == [
        Readmit((Resend(row(0), to_sink=False, root="0:0"),)),
        Restarted(ASK),
        Rewire(ASK),
    ]
    assert recovery.restarts == 1


def test_a_replica_is_rewired_once_at_a_time():
    recovery = recovery_of()
    unready = holding(incarnation="b", ready=False)
    assert Rewire(ASK) in recovery.census(1.0, [(ASK, unready)], [], now=1.5)
    assert Rewire(ASK) not in recovery.census(2.0, [(ASK, unready)], [], now=2.5)
    recovery.rewired(ASK)
    assert Rewire(ASK) in recovery.census(3.0, [(ASK, unready)], [], now=3.5)


def test_the_same_incarnation_is_no_restart():
    recovery = recovery_of(row(0))
    assert recovery.census(1.0, [(ASK, holding(0))], [], now=1.5) == []
    assert recovery.restarts == 0


def test_a_replica_ray_gave_up_on_ends_the_run():
    recovery = recovery_of()
    assert recovery.census(1.0, [(ASK, Gone("dead for good"))], [], now=1.5) == [GiveUp(ASK, "dead for good")]


def test_a_row_readmitted_max_attempts_times_is_written_as_error_lost():
    recovery = recovery_of(row(0), max_attempts=2)
    recovery.ledger.entries["0:0"].attempts = 2
    recovery.census(20.0, [(ASK, holding())], [], now=20.5)
    (action,) = recovery.census(21.0, [(ASK, holding())], [], now=21.5)
    (send,) = action.rows
    assert send.to_sink and send.root == "0:0"
    assert send.message.id == "0:0" and send.message.status == "error:lost" and send.message.share == (1, 1)


def test_a_partly_accepted_row_is_lost_for_its_remaining_share_only():
    recovery = recovery_of(row(0), max_attempts=1)
    recovery.ledger.accept("0:0/0", "0:0", 1, 2, "ok")
    recovery.census(20.0, [(ASK, holding())], [], now=20.5)
    (action,) = recovery.census(21.0, [(ASK, holding())], [], now=21.5)
    (send,) = action.rows
    assert send.message.id == "0:0/lost" and send.message.root == "0:0" and send.message.share == (1, 2)


def test_a_row_finished_as_bad_input_goes_to_its_sink_again():
    bad = row(0, status="error:bad_input")
    recovery = recovery_of(bad)
    recovery.census(20.0, [(ASK, holding())], [], now=20.5)
    assert recovery.census(21.0, [(ASK, holding())], [], now=21.5) == [
        Readmit((Resend(bad, to_sink=True, root="0:0"),))
    ]


def test_a_readmitted_row_holds_a_fresh_lease():
    recovery = recovery_of(row(0))
    recovery.census(20.0, [(ASK, holding())], [], now=20.5)
    recovery.census(21.0, [(ASK, holding())], [], now=21.5)
    assert recovery.census(22.0, [(ASK, holding())], [], now=22.5) == []


def test_a_sinks_first_answer_only_sets_its_incarnation():
    recovery = recovery_of(row(0))
    recovery.ledger.accept("0:0", "0:0", 1, 1, "ok")
    assert recovery.sink_answered(0, "s1", lambda root: True, now=1.0) == []
    assert recovery.sink_answered(0, "s1", lambda root: True, now=2.0) == []


def test_a_restarted_sink_loses_the_rows_it_had_not_committed():
    recovery = recovery_of(row(0), row(1))
    recovery.ledger.accept("0:0", "0:0", 1, 1, "ok")
    recovery.ledger.accept("0:1", "0:1", 1, 1, "ok")
    recovery.sink_answered(0, "s1", lambda root: True, now=1.0)
    actions = recovery.sink_answered(0, "s2", lambda root: root == "0:1", now=2.0)
    assert actions == [SinkRestarted(0, 1), Readmit((Resend(row(1), to_sink=False, root="0:1"),))]
    assert recovery.restarts == 1 and recovery.ledger.inflight == 1
