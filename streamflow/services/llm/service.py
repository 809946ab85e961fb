"""The LLM service of one run: replicas started here (simulator, vLLM, SGLang) or listed in
the config, which of them are alive, and how a worker process connects.

Row mode and batch mode both start it the same way, so a comparison of the two uses the
same service.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import msgspec
import ray

from streamflow.cluster import kill_actors
from streamflow.config import LLMConfig
from streamflow.services.engines import ServerSpec, start_engine_replicas, stop_engine_replicas
from streamflow.services.engines.llamacpp import gguf_path
from streamflow.services.llm import LLMClient
from streamflow.services.llm.balancer import Breaker
from streamflow.services.llm.cache import ResponseCache
from streamflow.services.llm.relay import Relays, RelayTransport, relay_addresses, start_relays
from streamflow.services.sim import PROFILES, SimConfig

__all__ = ["LLMAccess", "LLMService", "engine_spec", "sim_config"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LLMAccess:
    """What a worker needs to build its client: settings and the current endpoints."""

    config: LLMConfig
    endpoints: dict[str, list[str]]
    api_key: str | None = field(default=None, repr=False)
    relays: dict[str, str] = field(default_factory=dict)
    """Node id -> where the relay of that node listens (``llm.relay``)."""

    def client(self) -> LLMClient | None:
        """One client for this process; None with ``llm.backend=none``."""
        cfg = self.config
        if cfg.backend == "none":
            return None
        cache = ResponseCache(cfg.cache.path) if cfg.cache.enabled and cfg.cache.path else None
        relay = self.relays.get(ray.get_runtime_context().get_node_id()) if self.relays else None
        return LLMClient(
            self.endpoints,
            model=cfg.model,
            api_key=self.api_key,
            timeout_s=cfg.timeout_s,
            max_retries=cfg.max_retries,
            breaker=Breaker(cfg.circuit_failures, cfg.circuit_cooldown_s),
            cache=cache,
            transport=RelayTransport(relay, cache) if relay is not None else None,
        )


def sim_config(config: LLMConfig, seed: int) -> SimConfig:
    """The simulated server ``config`` describes (``llm.sim.*``), answering as ``llm.model`` and ``llm.sim.models``."""
    profile = PROFILES[config.sim.profile]
    if config.sim.max_num_seqs is not None:
        profile = msgspec.structs.replace(profile, max_num_seqs=config.sim.max_num_seqs)
    models = list(dict.fromkeys([config.model, *config.sim.models]))
    return SimConfig(
        profile=profile,
        time_scale=config.sim.time_scale,
        seed=seed,
        models=models,
        prefix_caching=config.sim.prefix_caching,
    )


def engine_spec(config: LLMConfig, seed: int, *, host: str | None = None) -> ServerSpec:
    """The vLLM / SGLang / llama.cpp server ``config`` describes; ``host=None`` binds the node's IP address."""
    if config.backend == "llamacpp":
        return ServerSpec(
            engine="llamacpp",
            model=gguf_path(config.model, config.model_path),
            served_model_name=config.model,
            host=host,
            threads=max(1, (os.cpu_count() or 1) // config.replicas),
            extra_args=list(config.engine_args),
            seed=seed,
            health_path="/v1/models",  # llama-cpp-python's server has no /health
            startup_timeout_s=config.startup_timeout_s,
        )
    return ServerSpec(
        engine=config.backend,
        model=config.model,
        tensor_parallel=config.tensor_parallel,
        host=host,
        extra_args=list(config.engine_args),
        seed=seed,
        startup_timeout_s=config.startup_timeout_s,
    )


class LLMService:
    """Starts, tracks and stops the replicas behind ``llm.model``."""

    def __init__(
        self,
        config: LLMConfig,
        replicas: dict[str, Any],
        api_key: str | None,
        *,
        engines: bool = False,
        relays_at: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.replicas = replicas  # url -> actor handle, for replicas started by this run
        self.api_key = api_key
        self.engines = engines  # vLLM / SGLang servers, which deserve a graceful stop
        self.relays_at = relays_at or {}  # node id -> where its relay listens (once started)
        self.relays: Relays | None = None
        self.lost: list[str] = []

    @classmethod
    async def start(cls, config: LLMConfig, *, seed: int, api_key: str | None, log_dir: str) -> LLMService:
        """Start the configured replicas (if streamflow runs them).

        ``log_dir`` receives the logs of vLLM / SGLang servers (on each GPU node).
        """
        handles: dict[str, Any] = {}
        if config.uses_sim:
            from streamflow.services.sim.server_actors import start_sim_replicas  # aiohttp's server only here

            urls, started = await start_sim_replicas(sim_config(config, seed), config.replicas)
            handles = dict(zip(urls, started, strict=True))
        elif config.backend in ("vllm", "sglang"):
            spec = engine_spec(config, seed)
            urls, started = await start_engine_replicas(spec, config.replicas, log_dir=log_dir)
            handles = dict(zip(urls, started, strict=True))
        elif config.backend == "llamacpp":
            spec = engine_spec(config, seed, host="127.0.0.1")
            # No CPU reserved: the servers would otherwise take the cores Ray gives the pipeline's actors.
            urls, started = await start_engine_replicas(spec, config.replicas, log_dir=log_dir, num_gpus=0, num_cpus=0)
            handles = dict(zip(urls, started, strict=True))
        addresses = relay_addresses() if config.uses_relay else None
        engines = config.backend in ("vllm", "sglang", "llamacpp")
        return cls(config, handles, api_key, engines=engines, relays_at=addresses)

    def start_relays(self) -> None:
        """Start the relays (``llm.relay``): this node's in this process, listening at once; the others' as actors.

        Called once the pipeline's actors have been asked for, so that Ray starts theirs first; until
        a node's relay listens, its requests go straight to the servers.
        """
        cache_path = self.config.cache.path
        if self.relays_at and self.relays is None and cache_path:
            self.relays = start_relays(cache_path, self.relays_at)

    def access(self) -> LLMAccess:
        """Connection details for workers, with the endpoints alive now."""
        endpoints = {**{model: list(urls) for model, urls in self.config.models.items()}, self.config.model: self.urls}
        return LLMAccess(self.config, endpoints, self.api_key, self.relays_at)

    @property
    def urls(self) -> list[str]:
        started = self.replicas or self.lost  # replicas of this run, alive or not; else the config's URLs
        return list(self.replicas) if started else self.config.urls()

    async def watch(self) -> list[str]:
        """Forget replicas whose process died; returns the URLs forgotten now (workers must be told)."""
        removed = []
        for url, handle in list(self.replicas.items()):
            try:
                alive = await handle.alive.remote()
            except Exception as exc:  # a dead actor answers with a Ray error of some kind
                alive, why = False, type(exc).__name__
            else:
                why = "its server process exited"
            if not alive:
                log.warning("LLM replica %s died (%s); no more requests go to it", url, why)
                del self.replicas[url]
                self.lost.append(url)
                removed.append(url)
        return removed

    async def stop(self) -> None:
        """Stop the relays, then the replicas this run started (engines gracefully)."""
        if self.relays is not None:  # first: an engine's graceful stop may take a minute, or be interrupted
            relays, self.relays = self.relays, None
            await asyncio.to_thread(relays.stop)
        if self.engines and self.replicas:
            await stop_engine_replicas(list(self.replicas.values()))
        kill_actors(self.replicas.values())
