"""Waiting for a freshly launched server to answer its health check, or to fail in a way worth reporting.

Loading a large model takes minutes, so the wait is long; a server that crashes meanwhile is
noticed within one poll interval instead of at the deadline. Each probe has its own short
timeout: vLLM binds its port before the engine is ready, so early probes connect and then
get no answer at all.
"""

from __future__ import annotations

import asyncio

import aiohttp

from streamflow.errors import SetupError
from streamflow.services.engines.process import ServerProcess

__all__ = ["wait_until_healthy"]

_PROBE_TIMEOUT_S = 5.0
_POLL_INTERVAL_S = 0.5


async def wait_until_healthy(process: ServerProcess, url: str, *, timeout_s: float, name: str) -> None:
    """Return once ``GET url`` answers 200; raise ``SetupError`` with the log tail if the process
    exits first or ``timeout_s`` passes (the caller stops the process)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = "no answer yet"
    async with aiohttp.ClientSession() as session:
        while True:
            if not process.running():
                msg = (
                    f"{name} {process.exit_reason()} before GET {url} answered 200; "
                    f"last lines of {process.log_path}:\n{process.log_tail()}"
                )
                raise SetupError(msg)
            remaining = deadline - loop.time()
            if remaining <= 0:
                msg = (
                    f"{name} did not answer GET {url} with 200 within {timeout_s:g} s (last: {last}); "
                    f"raise startup_timeout_s if the model loads slowly. Last lines of {process.log_path}:\n"
                    f"{process.log_tail()}"
                )
                raise SetupError(msg)
            try:
                probe = aiohttp.ClientTimeout(total=min(_PROBE_TIMEOUT_S, remaining))
                async with session.get(url, timeout=probe) as reply:
                    if reply.status == 200:
                        return
                    last = f"HTTP {reply.status}"
            except TimeoutError:
                last = f"no answer within {probe.total:g} s"
            except aiohttp.ClientError as exc:
                last = type(exc).__name__
            await asyncio.sleep(max(0.0, min(_POLL_INTERVAL_S, deadline - loop.time())))
