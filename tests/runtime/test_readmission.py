"""Where the driver sends admitted and re-admitted rows: not to a replica that is restarting, if it can wait."""

import asyncio

import pyarrow as pa
import pyarrow.parquet as pq

from streamflow import Flow, Message, Operator
from streamflow.run import prepare
from streamflow.runtime.row import driver as driver_module
from streamflow.runtime.row.driver import Driver
from streamflow.runtime.row.outbox import Peer, Peers
from streamflow.runtime.row.recovery import Readmit, Resend


class Noop(Operator):
    async def __call__(self, row, ctx):
        return row


def driver_with_two_entry_replicas(tmp_path):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"n": [1, 2, 3]}), path)
    flow, cfg, params, plan, spec = prepare(Flow("t").step("noop", Noop()), [f"input.path={path}"])
    driver = Driver(flow, spec.recipe(params), cfg, plan, str(tmp_path), frozenset())
    driver.entry = Peers([Peer("noop[0]", None), Peer("noop[1]", None)])
    sent = []
    driver.outbox.send = lambda peer, message: sent.append((peer.name, message.id))
    return driver, sent


def readmit(*ids):
    return Readmit(tuple(Resend(Message(id=i, fields={}), to_sink=False, root=i) for i in ids))


def test_rows_readmitted_while_every_first_step_replica_restarts_wait_in_the_driver_until_one_is_wired(tmp_path):
    """Sent at once, Ray could refuse them (the actor is unavailable) and they would be re-admitted and counted again."""
    driver, sent = driver_with_two_entry_replicas(tmp_path)
    first = driver.groups[0].name
    driver._entry_down((first, 0), True)
    driver._entry_down((first, 1), True)
    driver.perform([readmit("a", "b")])
    assert sent == []
    assert [row.id for row in driver.parked] == ["a", "b"]
    driver._entry_down((first, 1), False)
    assert sent == [("noop[1]", "a"), ("noop[1]", "b")]
    assert driver.parked == []


def test_rows_readmitted_while_one_first_step_replica_is_up_go_to_it_at_once(tmp_path):
    driver, sent = driver_with_two_entry_replicas(tmp_path)
    driver._entry_down((driver.groups[0].name, 0), True)
    driver.perform([readmit("a")])
    assert sent == [("noop[1]", "a")]
    assert driver.parked == []


def test_a_census_counts_parked_rows_as_held_by_the_driver(tmp_path, monkeypatch):
    """So their leases are renewed while they wait, and they are not re-admitted once more."""
    driver, _ = driver_with_two_entry_replicas(tmp_path)
    first = driver.groups[0].name
    driver._entry_down((first, 0), True)
    driver._entry_down((first, 1), True)
    driver.perform([readmit("a", "b")])

    async def no_replies(actors, max_restarts):
        return []

    held = []
    monkeypatch.setattr(driver_module, "ask_replicas", no_replies)
    monkeypatch.setattr(driver.recovery, "census", lambda asked, replies, in_driver, now: held.extend(in_driver) or [])
    asyncio.run(driver.census())
    assert held == ["a", "b"]


def test_input_rows_admitted_while_every_first_step_replica_restarts_wait_in_the_driver_too(tmp_path):
    driver, sent = driver_with_two_entry_replicas(tmp_path)
    first = driver.groups[0].name
    driver._entry_down((first, 0), True)
    driver._entry_down((first, 1), True)
    asyncio.run(driver.admission().read(driver.plan.partitions[0]))
    assert sent == []
    assert len(driver.parked) == driver.ledger.admitted == 3
    driver._entry_down((first, 0), False)
    assert [name for name, _ in sent] == ["noop[0]"] * 3
    assert driver.parked == []
