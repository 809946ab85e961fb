"""How many requests/s one process can drive through streamflow's LLM client, and at what CPU cost.

Starts simulator replicas as separate processes with zero latency (``--time-scale 0``), so
the only costs are HTTP, JSON and the client itself, then drives them from this process
with N requests in flight. The official ``openai`` async client runs the same load in the
same run as a reference. Run:

    python -m bench.llm_client                      # 3 replicas, 10,000 requests, 256 in flight
    python -m bench.llm_client --replicas 1 --inflight 64 --requests 5000 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

from streamflow.services.llm import LLMClient

CHAT = [{"role": "user", "content": "Is this a reasoning problem? Answer Yes or No."}]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_replicas(count: int) -> tuple[list[str], list[subprocess.Popen[bytes]]]:
    urls, procs = [], []
    for _ in range(count):
        port = free_port()
        cmd = [sys.executable, "-m", "streamflow.services.sim", "--port", str(port), "--time-scale", "0"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        urls.append(f"http://127.0.0.1:{port}/v1")
    for url in urls:
        wait_healthy(url)
    return urls, procs


def wait_healthy(url: str, timeout_s: float = 30.0) -> None:
    host, port = url.split("//")[1].split("/")[0].split(":")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"simulator at {url} did not start within {timeout_s} s")


async def drive(call: Callable[[], Awaitable[object]], requests: int, inflight: int) -> float:
    """Send ``requests`` calls keeping ``inflight`` in flight; returns wall seconds."""
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    return time.perf_counter() - started


async def measure(
    name: str,
    make: Callable[[], tuple[Callable[[], Awaitable[object]], Callable[[], Awaitable[None]]]],
    requests: int,
    inflight: int,
    servers: list[subprocess.Popen[bytes]],
) -> dict[str, float | str]:
    call, close = make()
    await drive(call, min(500, requests), inflight)  # warm up connections
    cpu0, servers0 = time.process_time(), sum(cpu_seconds(p.pid) for p in servers)
    wall = await drive(call, requests, inflight)
    client_cpu = time.process_time() - cpu0
    server_cpu = sum(cpu_seconds(p.pid) for p in servers) - servers0
    await close()
    return {
        "client": name,
        "requests_per_s": requests / wall,
        "client_cpu_us_per_request": client_cpu / requests * 1e6,
        "client_cores": client_cpu / wall,
        "client_cpu_share": client_cpu / (client_cpu + server_cpu),
    }


def streamflow_client(
    urls: list[str],
) -> Callable[[], tuple[Callable[[], Awaitable[object]], Callable[[], Awaitable[None]]]]:
    def make() -> tuple[Callable[[], Awaitable[object]], Callable[[], Awaitable[None]]]:
        client = LLMClient(urls, model="sim-8b")
        return (lambda: client.chat(CHAT, max_tokens=8)), client.close

    return make


def openai_client(
    urls: list[str],
) -> Callable[[], tuple[Callable[[], Awaitable[object]], Callable[[], Awaitable[None]]]]:
    def make() -> tuple[Callable[[], Awaitable[object]], Callable[[], Awaitable[None]]]:
        from openai import AsyncOpenAI

        clients = [AsyncOpenAI(base_url=url, api_key="unused", max_retries=0) for url in urls]
        turn = iter(range(10**12))

        async def call() -> object:
            client = clients[next(turn) % len(clients)]  # round robin: the openai client has no balancing
            return await client.chat.completions.create(model="sim-8b", messages=CHAT, max_tokens=8)  # type: ignore[arg-type]

        async def close() -> None:
            for client in clients:
                await client.close()

        return call, close

    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument(
        "--reference-requests",
        type=int,
        default=3_000,
        help="requests for the openai client, which is about 10x slower per request",
    )
    parser.add_argument("--inflight", type=int, default=256)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    urls, servers = start_replicas(args.replicas)
    try:
        results = [
            asyncio.run(
                measure("streamflow LLMClient", streamflow_client(urls), args.requests, args.inflight, servers)
            ),
            asyncio.run(
                measure("openai AsyncOpenAI", openai_client(urls), args.reference_requests, args.inflight, servers)
            ),
        ]
    finally:
        for proc in servers:
            proc.terminate()
    print(
        f"{args.replicas} zero-latency simulator replicas, {args.inflight} in flight, {os.cpu_count()} cores; "
        f"{args.requests:,} requests (openai: {args.reference_requests:,})"
    )
    print(f"{'client':<22} {'req/s':>9} {'CPU us/req':>11} {'client cores':>13} {'client CPU share':>17}")
    for row in results:
        print(
            f"{row['client']:<22} {row['requests_per_s']:>9,.0f} {row['client_cpu_us_per_request']:>11,.0f} "
            f"{row['client_cores']:>13.2f} {row['client_cpu_share']:>17.0%}"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"config": vars(args), "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
