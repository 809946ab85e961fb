"""One inference server replica as the body of a Ray actor: launch, wait for health, report the URL, stop.

The actor holds the replica's GPUs in Ray's accounting; the server runs as a subprocess of
the actor and inherits ``CUDA_VISIBLE_DEVICES``, which Ray sets to exactly those GPUs. The
class is plain (no ``@ray.remote``) so that ``start_engine_replicas`` chooses the resources,
and so that tests can run it in-process.
"""

from __future__ import annotations

import atexit
import logging
import os
from pathlib import Path

import ray

from streamflow.errors import SetupError
from streamflow.services.engines.commands import server_command
from streamflow.services.engines.health import wait_until_healthy
from streamflow.services.engines.process import ServerProcess, free_port
from streamflow.services.engines.spec import ServerSpec

__all__ = ["EngineReplica"]

log = logging.getLogger(__name__)

_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # listen-on-all address -> where to probe it locally


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class EngineReplica:
    """Runs one ``spec.engine`` server on this actor's node.

    ``start()`` returns ``http://<node ip>:<port>/v1`` once ``GET <health_path>`` answers 200;
    ``stop()`` ends the server; ``alive()`` says whether its process still runs. ``index``
    numbers the replica in names and log files (``<log_dir>/<engine>-<index>.log``).
    """

    def __init__(self, spec: ServerSpec, log_dir: str, index: int = 0) -> None:
        self.spec = spec
        self.name = f"{spec.engine} replica {index}"
        self._log_path = Path(log_dir).expanduser() / f"{spec.engine}-{index}.log"
        self._process: ServerProcess | None = None

    async def start(self) -> str:
        """Launch the server and wait until it is healthy; returns its OpenAI base URL."""
        if self._process is not None:
            msg = f"{self.name} is already running (pid {self._process.pid}); call stop() before starting it again."
            raise SetupError(msg)
        spec = self.spec
        host = spec.host or ray.util.get_node_ip_address()
        port = spec.port or free_port(host)
        probe_host = _WILDCARDS.get(host, host)
        url_host = ray.util.get_node_ip_address() if host in _WILDCARDS else host
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **spec.env}
        argv = server_command(spec, port, host)
        process = ServerProcess.launch(argv, env=env, log_path=self._log_path, grace_s=spec.stop_grace_s)
        self._process = process
        atexit.register(process.abandon)
        log.info("%s: process group %d, listening on %s, log %s", self.name, process.pid, _netloc(host, port),
                 self._log_path)  # fmt: skip
        try:
            health = f"http://{_netloc(probe_host, port)}{spec.health_path}"
            await wait_until_healthy(process, health, timeout_s=spec.startup_timeout_s, name=self.name)
        except BaseException:
            await self.stop()
            raise
        url = f"http://{_netloc(url_host, port)}/v1"
        log.info("%s is healthy at %s", self.name, url)
        return url

    async def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL it after ``spec.stop_grace_s``; a no-op if not running."""
        process, self._process = self._process, None
        if process is None:
            return
        await process.terminate(self.spec.stop_grace_s)
        atexit.unregister(process.abandon)
        log.info("%s stopped (%s)", self.name, process.exit_reason())

    async def alive(self) -> bool:
        """True while the server process runs (it may still be loading)."""
        return self._process is not None and self._process.running()

    async def pid(self) -> int | None:
        """The process group id of the server and its workers (its supervisor's pid); None when not started."""
        return None if self._process is None else self._process.pid

    async def log_path(self) -> str:
        return str(self._log_path)
