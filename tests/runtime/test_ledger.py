"""The driver's ledger: admission slots, acceptance and commit, fan-out shares, leases."""

import asyncio

from streamflow.message import Message
from streamflow.runtime.row.ledger import Ledger


def row(index):
    return Message(id=f"0:{index}", fields={})


def run(coroutine):
    return asyncio.run(coroutine)


def two_rows_admitted():
    """A ledger holding rows 0:0 and 0:1, admitted and not yet accepted."""

    async def go():
        ledger = Ledger(max_inflight=4)
        await ledger.admit(row(0))
        await ledger.admit(row(1))
        return ledger

    return run(go())


def test_admission_blocks_at_max_inflight_until_a_row_is_accepted():
    async def go():
        ledger = Ledger(max_inflight=2)
        await ledger.admit(row(0))
        await ledger.admit(row(1))
        third = asyncio.create_task(ledger.admit(row(2)))
        await asyncio.sleep(0.01)
        assert not third.done()
        ledger.accept("0:0", "0:0", 1, 1, "ok")
        await asyncio.wait_for(third, 1)
        return ledger

    ledger = run(go())
    assert ledger.admitted == 3 and ledger.accepted == 1 and ledger.inflight == 2
    assert ledger.completed == 0, "accepted is not committed"


def test_a_row_is_counted_in_statuses_only_once_committed():
    async def go():
        ledger = Ledger(max_inflight=2)
        await ledger.admit(row(0))
        ledger.accept("0:0", "0:0", 1, 1, "ok")
        assert ledger.statuses == {} and not ledger.done
        ledger.reading_finished()
        assert ledger.all_accepted and not ledger.done
        assert ledger.commit("0:0", "0:0", 1, 1, "ok", 0.5) is True
        return ledger

    ledger = run(go())
    assert ledger.done and ledger.completed == 1 and ledger.statuses == {"ok": 1}


def test_fanned_out_row_completes_when_its_shares_add_up():
    async def go():
        ledger = Ledger(max_inflight=1)
        await ledger.admit(row(0))
        pieces = [("0:0/0", (1, 2), "ok"), ("0:0/1/0", (1, 4), "filtered:x"), ("0:0/1/1", (1, 4), "ok")]
        for piece, share, status in pieces:
            ledger.accept(piece, "0:0", *share, status)
        assert ledger.inflight == 0
        ledger.commit("0:0/0", "0:0", 1, 2, "ok")
        ledger.commit("0:0/0", "0:0", 1, 2, "ok")  # reported twice, counted once
        assert ledger.completed == 0
        ledger.commit("0:0/1/0", "0:0", 1, 4, "filtered:x")
        ledger.commit("0:0/1/1", "0:0", 1, 4, "ok")
        return ledger

    ledger = run(go())
    assert ledger.completed == 1 and ledger.rows_out == 3
    assert ledger.statuses == {"ok": 2, "filtered:x": 1}


def test_a_row_two_censuses_missed_is_lost_once_its_lease_ran_out():
    ledger = two_rows_admitted()
    start = ledger.entries["0:0"].lease
    ledger.renew(["0:1"], start + 10)
    assert ledger.missed(start + 10, start + 11, lease_s=5) == [], "one census can miss a row in transit"
    ledger.renew(["0:1"], start + 12)
    assert [e.message.id for e in ledger.missed(start + 12, start + 13, lease_s=5)] == ["0:0"]
    ledger.accept("0:0", "0:0", 1, 1, "ok")
    assert ledger.missed(start + 14, start + 15, lease_s=5) == [], "an accepted row is the sink's, not leased"


def test_rows_a_restarted_sink_had_not_committed_come_back_holding_slots():
    async def go():
        ledger = Ledger(max_inflight=2)
        for index in range(2):
            await ledger.admit(row(index))
            ledger.accept(f"0:{index}", f"0:{index}", 1, 1, "ok")
        ledger.commit("0:1", "0:1", 1, 1, "ok")
        lost = ledger.uncommitted_in(lambda root: True)
        assert [e.message.id for e in lost] == ["0:0"]
        assert ledger.accepted_statuses == {"ok": 1}
        ledger.readmit(lost[0], 0.0)
        assert ledger.inflight == 1 and lost[0].attempts == 2
        ledger.accept("0:0", "0:0", 1, 1, "ok")
        retire = ledger.commit("0:0", "0:0", 1, 1, "ok")
        return ledger, retire

    ledger, retire = run(go())
    assert ledger.completed == 2 and ledger.statuses == {"ok": 2} and ledger.inflight == 0
    assert retire is False, "a re-admitted row may still have a copy in flight; its sink keeps its id"


def test_empty_run_is_done_at_once():
    ledger = Ledger(max_inflight=4)
    ledger.reading_finished()
    assert ledger.done and ledger.all_accepted


def test_a_commit_whose_acceptance_was_never_reported_completes_the_row():
    async def go():
        ledger = Ledger(max_inflight=1)
        await ledger.admit(row(0))
        ledger.commit("0:0", "0:0", 1, 1, "ok")  # a restarted sink found it in its parts
        return ledger

    ledger = run(go())
    assert ledger.completed == 1 and ledger.inflight == 0 and ledger.statuses == {"ok": 1}


def test_rows_a_dead_replica_reported_are_lost_unless_they_moved_on_since():
    ledger = two_rows_admitted()
    start = ledger.entries["0:0"].lease
    ledger.renew(["0:0", "0:1"], start + 1)  # the replica's last census answer
    ledger.renew(["0:1"], start + 2)  # 0:1 moved on: a live replica reported it since
    assert [e.message.id for e in ledger.held_by_dead(["0:0", "0:1"], start + 1)] == ["0:0"]
