"""Coalesced transport: rows to the same actor leave together, never later than flush_ms."""

import asyncio

from streamflow.message import Message, decode_batch
from streamflow.runtime.row.outbox import Outbox, Peer, Peers


class FakeActor:
    """Stands in for a Ray actor handle: ``handle.push.remote(payload)`` is awaitable."""

    def __init__(self, load=0, fail=False):
        self.batches = []
        self.load = load
        self.fail = fail
        self.push = self

    def remote(self, payload):
        async def deliver():
            if self.fail:
                raise ConnectionError("actor died")
            self.batches.append(decode_batch(payload))
            return self.load

        return deliver()


def rows(n):
    return [Message(id=f"0:{i}", fields={"i": i}) for i in range(n)]


def test_full_batches_leave_at_once_and_the_rest_after_flush_ms():
    async def go():
        actor = FakeActor()
        peer = Peer("a", actor)
        outbox = Outbox(flush_rows=4, flush_ms=20)
        for row in rows(10):
            outbox.send(peer, row)
        await asyncio.sleep(0.005)
        sizes_early = [len(b) for b in actor.batches]
        await asyncio.sleep(0.05)
        return sizes_early, [len(b) for b in actor.batches]

    early, late = asyncio.run(go())
    assert early == [4, 4]
    assert late == [4, 4, 2]


def test_a_lone_row_is_not_held_for_a_barrier():
    async def go():
        actor = FakeActor()
        outbox = Outbox(flush_rows=64, flush_ms=1)
        outbox.send(Peer("a", actor), rows(1)[0])
        await asyncio.sleep(0.02)
        return actor.batches

    assert [len(b) for b in asyncio.run(go())] == [1]


def test_finished_rows_wait_for_their_sink_up_to_its_own_flush_ms_and_leave_together():
    async def go():
        step, sink = FakeActor(), FakeActor()
        step_peer, sink_peer = Peer("step", step), Peer("sink", sink, flush_ms=100)
        outbox = Outbox(flush_rows=64, flush_ms=1)
        for row in rows(3):
            outbox.send(step_peer, row)
            outbox.send(sink_peer, row)
            await asyncio.sleep(0.01)
        early = len(sink.batches)
        await asyncio.sleep(0.2)
        return len(step.batches), early, [len(b) for b in sink.batches]

    to_step, sink_early, sink_batches = asyncio.run(go())
    assert to_step == 3  # each row left on its own after 1 ms
    assert sink_early == 0 and sink_batches == [3]


def test_drain_waits_for_delivery_and_counts_what_was_sent():
    async def go():
        actor = FakeActor()
        peer = Peer("a", actor)
        outbox = Outbox(flush_rows=64, flush_ms=1000)
        for row in rows(3):
            outbox.send(peer, row)
        await outbox.drain([peer])
        return outbox, actor

    outbox, actor = asyncio.run(go())
    assert sum(len(b) for b in actor.batches) == 3 and outbox.rows_sent == 3 and outbox.pending == 0


def test_failed_delivery_is_reported_with_the_rows_it_carried():
    failures = []

    async def go():
        peer = Peer("a", FakeActor(fail=True))
        outbox = Outbox(
            flush_rows=2, flush_ms=1, on_failure=lambda p, batch, exc: failures.append((p.name, len(batch)))
        )
        for row in rows(2):
            outbox.send(peer, row)
        await outbox.drain()

    asyncio.run(go())
    assert failures == [("a", 2)]


def test_reported_load_steers_rows_to_the_least_loaded_replica():
    async def go():
        busy, idle = FakeActor(load=100), FakeActor(load=0)
        peers = Peers([Peer("busy", busy), Peer("idle", idle)])
        outbox = Outbox(flush_rows=1, flush_ms=1)
        for row in rows(2):  # first deliveries teach the outbox each replica's load
            outbox.send(peers.replicas[0], row)
            outbox.send(peers.replicas[1], row)
        await outbox.drain()
        for row in rows(10):
            outbox.send(peers.pick(), row)
        await outbox.drain()
        return len(busy.batches), len(idle.batches)

    busy_batches, idle_batches = asyncio.run(go())
    assert busy_batches == 2 and idle_batches == 12


class SilentActor(FakeActor):
    """A replica that died and is restarting: Ray holds the calls, so pushes are never answered."""

    def remote(self, payload):
        return asyncio.get_running_loop().create_future()


def test_rows_on_their_way_count_as_load_so_a_replica_that_stopped_answering_gets_no_more():
    async def go():
        silent, alive = SilentActor(), FakeActor(load=0)
        peers = Peers([Peer("silent", silent), Peer("alive", alive)])
        outbox = Outbox(flush_rows=1, flush_ms=1)
        for row in rows(20):
            outbox.send(peers.pick(), row)
            await asyncio.sleep(0)  # let deliveries start, as between two admissions
        return peers.replicas[0].unanswered, len(alive.batches)

    unanswered, delivered = asyncio.run(go())
    assert unanswered == 1 and delivered == 19


def test_a_replica_marked_down_gets_rows_only_when_every_replica_is_down():
    async def go():
        restarting, alive = FakeActor(load=0), FakeActor(load=50)
        peers = Peers([Peer("restarting", restarting), Peer("alive", alive)])
        peers.replicas[0].down = True
        picked = [peers.pick().name for _ in range(4)]
        peers.replicas[1].down = True
        picked_when_all_down = {peers.pick().name for _ in range(4)}
        return picked, picked_when_all_down

    picked, picked_when_all_down = asyncio.run(go())
    assert picked == ["alive"] * 4
    assert picked_when_all_down == {"restarting", "alive"}
