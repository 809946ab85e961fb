"""The driver's ledger: admission slots, completions, fan-out shares."""

import asyncio

from streamflow.runtime.ledger import Ledger


def test_admission_blocks_at_max_inflight_until_a_row_completes():
    async def go():
        ledger = Ledger(max_inflight=2)
        await ledger.admit()
        await ledger.admit()
        third = asyncio.create_task(ledger.admit())
        await asyncio.sleep(0.01)
        assert not third.done()
        ledger.complete("0:0", 1, 1, "ok")
        await asyncio.wait_for(third, 1)
        return ledger

    ledger = asyncio.run(go())
    assert ledger.admitted == 3 and ledger.completed == 1 and ledger.inflight == 2


def test_fanned_out_row_completes_when_its_shares_add_up():
    async def go():
        ledger = Ledger(max_inflight=1)
        await ledger.admit()
        ledger.complete("0:0", 1, 2, "ok")
        assert ledger.completed == 0
        ledger.complete("0:0", 1, 4, "filtered:x")
        ledger.complete("0:0", 1, 4, "ok")
        return ledger

    ledger = asyncio.run(go())
    assert ledger.completed == 1 and ledger.rows_out == 3
    assert ledger.statuses == {"ok": 2, "filtered:x": 1}


def test_idle_only_after_reading_finished_and_all_rows_completed():
    async def go():
        ledger = Ledger(max_inflight=4)
        await ledger.admit()
        idle = asyncio.create_task(ledger.wait_idle())
        ledger.reading_finished()
        await asyncio.sleep(0.01)
        assert not idle.done()
        ledger.complete("0:0", 1, 1, "ok")
        await asyncio.wait_for(idle, 1)

    asyncio.run(go())


def test_empty_run_is_idle_at_once():
    async def go():
        ledger = Ledger(max_inflight=4)
        ledger.reading_finished()
        await asyncio.wait_for(ledger.wait_idle(), 1)

    asyncio.run(go())
