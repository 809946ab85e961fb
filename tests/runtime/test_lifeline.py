"""Lifelines: the driver learns that a replica died when the replica's connection closes, not from Ray."""

import asyncio

from streamflow.runtime.row.lifeline import Lifelines, hold_lifeline


def test_a_replica_whose_connection_closes_is_reported_dead_with_its_incarnation():
    deaths = []

    async def go():
        lifelines = Lifelines(lambda replica, incarnation: deaths.append((replica, incarnation)))
        address = await lifelines.start("127.0.0.1")
        writer = await hold_lifeline(address, "ask", 1, "b2")
        await asyncio.sleep(0.05)
        alive = list(deaths)
        writer.close()  # what the kernel does when the replica's process dies
        await asyncio.sleep(0.05)
        lifelines.close()
        return alive

    assert asyncio.run(go()) == []
    assert deaths == [(("ask", 1), "b2")]


def test_connections_that_close_once_the_run_is_ending_report_nothing():
    deaths = []

    async def go():
        lifelines = Lifelines(lambda replica, incarnation: deaths.append(replica))
        writer = await hold_lifeline(await lifelines.start("127.0.0.1"), "ask", 0, "a")
        await asyncio.sleep(0.05)
        lifelines.close()
        writer.close()
        await asyncio.sleep(0.05)

    asyncio.run(go())
    assert deaths == []


def test_a_replica_that_cannot_reach_the_driver_runs_without_a_lifeline():
    async def go():
        lifelines = Lifelines(lambda replica, incarnation: None)
        host, port = await lifelines.start("127.0.0.1")
        lifelines.close()  # nothing listens there any more
        await asyncio.sleep(0.05)
        return await hold_lifeline((host, port), "ask", 0, "a"), await hold_lifeline(None, "ask", 0, "a")

    assert asyncio.run(go()) == (None, None)
