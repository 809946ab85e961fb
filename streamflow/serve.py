"""Serve the configured LLM on this node, apart from any run: ``python -m streamflow.serve [key=value ...]``.

Starts ``llm.replicas`` servers of ``llm.backend`` (sim, vllm, sglang, llamacpp) from the same
config knobs a run uses, and once each one is healthy publishes its URL as a file in
``--publish DIR``; runs read them with ``llm.endpoints_dir=DIR``. On SIGTERM or Ctrl-C it
removes its files and stops the servers. ``slurm/llm.sbatch`` runs it on every node of a job,
so models load once and outlive the runs (and the requeues) that use them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from streamflow.config import LLMConfig, compose
from streamflow.errors import ConfigError, StreamflowError
from streamflow.services.engines import EngineReplica
from streamflow.services.llm.service import engine_spec, sim_config

__all__ = ["ENDPOINT_SUFFIX", "answers", "gpu_slices", "main", "published_endpoints", "serve", "wait_for_published"]

log = logging.getLogger("streamflow.serve")

ENDPOINT_SUFFIX = ".url"


def published_endpoints(directory: str) -> list[str]:
    """The endpoint URLs published in ``directory`` (one ``*.url`` file each), sorted."""
    try:
        names = sorted(name for name in os.listdir(directory) if name.endswith(ENDPOINT_SUFFIX))
    except FileNotFoundError:
        return []
    urls = []
    for name in names:
        try:
            urls.append(Path(directory, name).read_text().strip())
        except FileNotFoundError:  # its server stopped between listing and reading
            continue
    return [url for url in urls if url]


def answers(url: str, timeout_s: float = 5.0) -> bool:
    """True when the OpenAI-compatible server at ``url`` lists its models."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/models", timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (OSError, ValueError):
        return False


def wait_for_published(
    directory: str, wait_s: float, *, poll_s: float = 2.0, probe: Callable[[str], bool] = answers
) -> list[str]:
    """The published URLs that answer, once there is at least one; ConfigError after ``wait_s``.

    A file left behind by a server that died without removing it (SIGKILL, a lost node) is
    skipped with a warning rather than failing the run.
    """
    deadline = time.monotonic() + wait_s
    warned: set[str] = set()
    while True:
        published = published_endpoints(directory)
        urls = [url for url in published if probe(url)]
        for url in sorted(set(published) - set(urls) - warned):
            log.warning("llm.endpoints_dir: %s is published in %s but does not answer; skipped", url, directory)
            warned.add(url)
        if urls:
            return urls
        if time.monotonic() >= deadline:
            msg = (
                f"llm.endpoints_dir={directory}: no LLM server published there answered within {wait_s:g} s; "
                "is the job of slurm/llm.sbatch running, and its log free of errors?"
            )
            raise ConfigError(msg)
        log.info("waiting for LLM endpoints in %s", directory)
        time.sleep(poll_s)


def gpu_slices(replicas: int, per_replica: int, visible: str | None) -> list[dict[str, str]]:
    """The ``CUDA_VISIBLE_DEVICES`` of each replica: consecutive groups of ``per_replica`` visible GPUs."""
    if visible is None:
        return [{} for _ in range(replicas)]
    devices = [device for device in visible.split(",") if device.strip()]
    if replicas * per_replica > len(devices):
        msg = (
            f"llm.replicas={replicas} x llm.tensor_parallel={per_replica} needs {replicas * per_replica} GPUs on this "
            f"node; it has {len(devices)} (CUDA_VISIBLE_DEVICES={visible!r}). Ask SLURM for more (--gres=gpu:N)."
        )
        raise ConfigError(msg)
    return [
        {"CUDA_VISIBLE_DEVICES": ",".join(devices[i * per_replica : (i + 1) * per_replica])} for i in range(replicas)
    ]


class _Published:
    """The endpoint files this process wrote; removed again when it stops."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        self.paths: list[Path] = []

    def add(self, url: str) -> None:
        if self.directory is None:
            return
        os.makedirs(self.directory, exist_ok=True)
        netloc = url.split("://", 1)[-1].split("/", 1)[0].replace(":", "-").strip("[]")
        path = Path(self.directory, f"{socket.gethostname()}-{netloc}{ENDPOINT_SUFFIX}")
        temp = path.with_name(f".{path.name}.tmp")
        temp.write_text(url + "\n")
        temp.replace(path)  # readers never see a half-written URL
        self.paths.append(path)

    def remove(self) -> None:
        for path in self.paths:
            path.unlink(missing_ok=True)


async def serve(llm: LLMConfig, *, seed: int, publish: str | None, log_dir: str) -> None:
    """Start the servers, publish their URLs, and keep them up until SIGTERM or SIGINT."""
    from streamflow.services.sim import SimServer  # aiohttp's server stack: only when serving

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    published = _Published(publish)
    sims: list[SimServer] = []
    engines: list[EngineReplica] = []
    try:
        if llm.uses_sim:
            import ray  # only for the node's IP address

            host = ray.util.get_node_ip_address()
            sims = [SimServer(sim_config(llm, seed)) for _ in range(llm.replicas)]
            starting: asyncio.Future[list[str]] = asyncio.gather(*(server.start(host=host, port=0) for server in sims))
        elif llm.backend in ("vllm", "sglang", "llamacpp"):
            spec = engine_spec(llm, seed)
            visible = None if llm.backend == "llamacpp" else os.environ.get("CUDA_VISIBLE_DEVICES")
            envs = gpu_slices(llm.replicas, llm.tensor_parallel, visible)
            logs = os.path.join(log_dir, socket.gethostname())  # one folder per node: log_dir may be shared
            engines = [
                EngineReplica(msgspec.structs.replace(spec, env={**spec.env, **env}), logs, index)
                for index, env in enumerate(envs)
            ]
            starting = asyncio.gather(*(engine.start() for engine in engines))
        else:
            msg = f"streamflow.serve starts sim, vllm, sglang or llamacpp servers; llm.backend={llm.backend} is none of them."
            raise ConfigError(msg)
        stop: asyncio.Future[Any] = asyncio.ensure_future(stopping.wait())
        await asyncio.wait({starting, stop}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # stopped while models load: do not wait for them
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting  # each replica stops the server it was starting
            log.info("stopped while the servers were starting")
            return
        urls = list(starting.result())
        for url in urls:
            published.add(url)
            print(f"serving {llm.model} at {url}", flush=True)
        if publish:
            print(f"runs use them with: llm.endpoints_dir={os.path.abspath(publish)} llm.model={llm.model}", flush=True)  # noqa: ASYNC240 (no disk I/O)
        await stop
        log.info("stopping %d servers", len(urls))
    finally:
        published.remove()
        for server in sims:
            await server.stop()
        await asyncio.gather(*(engine.stop() for engine in engines), return_exceptions=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m streamflow.serve",
        description="Serve llm.backend's model on this node (llm.* knobs as in a run) until SIGTERM.",
    )
    parser.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. llm.backend=vllm llm.replicas=2")
    parser.add_argument("--publish", metavar="DIR", help="write one <host>-<port>.url file per healthy server here")
    parser.add_argument("--log-dir", default="logs", help="engine server logs, per host (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns 0 after a clean stop, 2 for a bad config, 1 when a server fails."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        # A run's config needs an input; serving does not read one.
        cfg = compose({"input": {"path": "unused"}}, args.overrides)
        if cfg.llm.uses_external:
            raise ConfigError(
                "streamflow.serve starts servers; llm.base_url / llm.endpoints name servers started elsewhere."
            )
        asyncio.run(serve(cfg.llm, seed=cfg.seed, publish=args.publish, log_dir=args.log_dir))
    except ConfigError as exc:
        print(f"streamflow.serve: error: {exc}", file=sys.stderr)
        return 2
    except StreamflowError as exc:
        print(f"streamflow.serve: failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
