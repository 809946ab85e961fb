"""The LLM service under failure: dead replicas, hanging replicas, and rows that still complete."""

import asyncio
import threading
import time
from pathlib import Path

import pytest
from aiohttp import web

import streamflow
from streamflow.services.llm import LLMClient
from streamflow.services.sim import SimConfig, SimServer
from streamflow.testing import read_output

NR_PIPELINE = Path(__file__).resolve().parents[2] / "pipelines" / "natural_reasoning.py"


@pytest.mark.slow  # 300 rows, a replica killed mid-run; test_hanging_replica_is_timed_out_* covers failover
def test_killing_one_of_three_simulator_replicas_loses_no_row(ray_runtime, tmp_path):
    """A replica dies mid-run: its requests fail over, every row completes once, retries are counted."""
    import ray

    killed = []

    def kill_one_replica_soon():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            names = sorted(n for n in ray.util.list_named_actors() if n.startswith("streamflow-sim-"))
            if len(names) == 3:
                victim = ray.get_actor(names[0])
                try:
                    busy = ray.get(victim.stats.remote(), timeout=1).requests_total > 20
                except Exception:  # still starting
                    busy = False
                if busy:  # requests are in flight on it: kill it now
                    ray.kill(victim)
                    killed.append(names[0])
                    return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_one_replica_soon, daemon=True)
    killer.start()
    overrides = [
        f"output.dir={tmp_path}",
        "progress=off",
        "limit=300",
        "llm.replicas=3",
        "llm.sim.time_scale=0.2",
        "llm.circuit_cooldown_s=60",
    ]
    result = streamflow.run(str(NR_PIPELINE), overrides)
    killer.join()
    assert killed, "the test did not manage to kill a replica"
    frame = read_output(result)
    assert frame.height == 300 and frame["row_id"].n_unique() == 300
    assert result.balanced and not result.errors
    assert sum(u.retries for u in result.usage.values()) > 0
    assert len(result.lost_replicas) == 1


def serve_in_thread(app):
    """Run an aiohttp app on 127.0.0.1 in a background thread; returns its base URL."""
    ready = threading.Event()
    box = {}

    def main():
        async def start():
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            box["port"] = site._server.sockets[0].getsockname()[1]
            ready.set()
            await asyncio.Event().wait()

        asyncio.run(start())

    threading.Thread(target=main, daemon=True).start()
    ready.wait(5)
    return f"http://127.0.0.1:{box['port']}/v1"


def test_hanging_replica_is_timed_out_and_requests_fail_over():
    async def hang(request):
        await asyncio.sleep(3600)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", hang)
    hanging = serve_in_thread(app)
    healthy, stop = SimServer.run_in_thread(SimConfig(time_scale=0))
    client = LLMClient([hanging, healthy], model="sim-8b", timeout_s=0.3, backoff_s=0)

    async def go():
        try:
            return await asyncio.gather(
                *(client.chat([{"role": "user", "content": f"q{i}"}], step="s") for i in range(8))
            )
        finally:
            await client.close()

    try:
        replies = asyncio.run(go())
    finally:
        stop()
    assert all(reply.text for reply in replies)
    per_replica = client.replica_usage()
    assert per_replica[hanging.rstrip("/")].failures > 0
    assert client.usage()["s"].retries == per_replica[hanging.rstrip("/")].failures
