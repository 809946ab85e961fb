"""Simulated LLM replicas as Ray actors: each one a real HTTP server in its own process.

A separate process keeps the simulator's event loop off the driver's and the operators'
CPU time, as a real inference server would be.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import ray

from streamflow.services.placement import on_this_node
from streamflow.services.sim import SimConfig, SimServer

__all__ = ["SimReplica", "start_sim_replicas"]


class SimReplica:
    """Hosts one ``SimServer`` bound to 127.0.0.1 on a free port (on the driver's node, see ``start_sim_replicas``)."""

    def __init__(self, config: SimConfig) -> None:
        self._server = SimServer(config)

    async def start(self) -> str:
        """Start serving; returns the base URL (``http://127.0.0.1:PORT/v1``)."""
        return await self._server.start(host="127.0.0.1", port=0)

    async def stats(self) -> Any:
        return self._server.stats()

    async def alive(self) -> bool:
        """Answering at all means alive: the server runs in this actor's event loop."""
        return True

    async def stop(self) -> None:
        await self._server.stop()


async def start_sim_replicas(config: SimConfig, replicas: int = 1) -> tuple[list[str], list[Any]]:
    """Start ``replicas`` simulator actors; returns their URLs and actor handles.

    The actors are named ``streamflow-sim-<run>-<index>`` so an operator (or a chaos
    test) can find one with ``ray.util.list_named_actors()``. They run on the driver's
    node: they listen on 127.0.0.1, and the simulator stands in for a GPU service that
    does not go away with a worker node.
    """
    remote = ray.remote(SimReplica)
    run = secrets.token_hex(3)
    handles: list[Any] = [
        remote.options(
            num_cpus=0, max_concurrency=10_000, name=f"streamflow-sim-{run}-{index}", scheduling_strategy=on_this_node()
        ).remote(config)
        for index in range(replicas)
    ]
    urls = await asyncio.gather(*(handle.start.remote() for handle in handles))
    return list(urls), handles
