"""The run configuration: Hydra composes it, msgspec types and checks it.

Layers, later wins: ``streamflow/conf/config.yaml`` (engine defaults, documented there),
the pipeline's defaults (its input, its steps, its ``Params``), then command-line
overrides. Hydra gives the familiar ``key=value`` grammar; converting the result into
``RunConfig`` turns every type mistake into one line that names the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec

from streamflow.errors import ConfigError
from streamflow.services.sandbox.pool import SandboxSettings
from streamflow.services.sim.profile import PROFILES

__all__ = [
    "CONF_DIR",
    "BatchConfig",
    "ClusterConfig",
    "EventsConfig",
    "InputConfig",
    "LLMConfig",
    "MetricsConfig",
    "OperatorConfig",
    "OutputConfig",
    "RayConfig",
    "RecoveryConfig",
    "RunConfig",
    "SimSettings",
    "TransportConfig",
    "compose",
]

CONF_DIR = Path(__file__).parent / "conf"


class InputConfig(msgspec.Struct, forbid_unknown_fields=True):
    path: str
    format: Literal["auto", "parquet", "jsonl"] = "auto"
    partitions: int = 4
    id_column: str | None = None
    storage_options: dict[str, Any] = {}


class OutputConfig(msgspec.Struct, forbid_unknown_fields=True):
    dir: str = "outputs"
    part_rows: int = 50_000
    sinks: int = 2
    commit_s: float = 30.0


class RecoveryConfig(msgspec.Struct, forbid_unknown_fields=True):
    """How a row-mode run survives dead actors (see docs/reliability.md)."""

    max_restarts: int = -1
    lease_s: float = 5.0
    max_attempts: int = 5


class EventsConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The per-hop event log under ``<run>/events/`` (see docs/observability.md)."""

    sample: float = 1.0
    flush_rows: int = 20_000
    flush_s: float = 10.0


class MetricsConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The Prometheus endpoint the driver serves while a run is going."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9464


class SimSettings(msgspec.Struct, forbid_unknown_fields=True):
    profile: str = "llama-8b-h100"
    time_scale: float = 1.0
    max_num_seqs: int | None = None
    models: list[str] = []  # more model names the simulator answers as, besides llm.model


class CacheConfig(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool = False
    path: str = "~/.cache/streamflow/llm-responses.sqlite"


class LLMConfig(msgspec.Struct, forbid_unknown_fields=True):
    backend: Literal["auto", "sim", "openai", "vllm", "sglang", "llamacpp", "none"] = "auto"
    base_url: str | None = None
    endpoints: list[str] = []
    endpoints_dir: str | None = None  # a folder where streamflow.serve publishes URLs (slurm/llm.sbatch)
    model: str = "sim-8b"
    model_path: str | None = None  # llamacpp: the .gguf file (default: the file of a packaged model, llm.model=smollm2)
    replicas: int = 1
    tensor_parallel: int = 1
    engine_args: list[str] = []
    startup_timeout_s: float = 900.0
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 120.0
    max_retries: int = 4
    circuit_failures: int = 5
    circuit_cooldown_s: float = 2.0
    cache: CacheConfig = msgspec.field(default_factory=CacheConfig)
    sim: SimSettings = msgspec.field(default_factory=SimSettings)
    models: dict[str, list[str]] = {}
    """Other models steps may name, each served elsewhere: model name -> OpenAI-compatible endpoint URLs."""

    @property
    def uses_sim(self) -> bool:
        """True when streamflow must start its simulated server."""
        if self.backend == "auto":
            return not (self.base_url or self.endpoints or self.endpoints_dir)
        return self.backend == "sim"

    @property
    def uses_external(self) -> bool:
        """True when the endpoints are servers started elsewhere (llm.base_url / llm.endpoints)."""
        return self.backend == "openai" or (self.backend == "auto" and bool(self.urls()))

    def urls(self) -> list[str]:
        """The configured endpoint URLs of an external server."""
        return list(self.endpoints) or ([self.base_url] if self.base_url else [])


class OperatorConfig(msgspec.Struct, forbid_unknown_fields=True):
    replicas: int = 1
    concurrency: int | None = None
    num_cpus: float = 0.0
    fuse: bool = True  # row mode: share an actor with neighbouring steps of the same replicas and CPUs


class TransportConfig(msgspec.Struct, forbid_unknown_fields=True):
    flush_rows: int = 64
    flush_ms: float = 1.0


class BatchConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Batch mode (``mode=batch``): at most ``actors * batches_per_actor * size`` rows in flight."""

    size: int = 50
    actors: int = 4
    batches_per_actor: int = 5
    num_cpus: float = 0.25


class RayConfig(msgspec.Struct, forbid_unknown_fields=True):
    address: str | None = None
    num_cpus: int | None = None


class ClusterConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The Ray cluster a run needs before it starts (``cluster=local`` or ``cluster=slurm``, docs/slurm.md)."""

    kind: Literal["local", "slurm"] = "local"
    nodes: int = 1  # alive Ray nodes to wait for
    cpus: float = 0.0  # and at least this many CPUs and GPUs in all
    gpus: float = 0.0
    wait_s: float = 600.0  # then the run stops, naming what is missing


class RunConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Every knob of a run; see ``streamflow/conf/config.yaml`` for what each one does."""

    input: InputConfig
    pipeline: str = ""
    run_id: str | None = None
    seed: int = 0
    limit: int | None = None
    max_inflight: int = 1024
    offload_threshold: int = 0
    mode: Literal["row", "batch"] = "row"
    progress: Literal["auto", "bar", "log", "off"] = "auto"
    resume: str | None = None
    retry_errors: bool = False
    output: OutputConfig = msgspec.field(default_factory=OutputConfig)
    llm: LLMConfig = msgspec.field(default_factory=LLMConfig)
    operators: dict[str, OperatorConfig] = {}
    params: dict[str, Any] = {}
    transport: TransportConfig = msgspec.field(default_factory=TransportConfig)
    recovery: RecoveryConfig = msgspec.field(default_factory=RecoveryConfig)
    events: EventsConfig = msgspec.field(default_factory=EventsConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    batch: BatchConfig = msgspec.field(default_factory=BatchConfig)
    sandbox: SandboxSettings = msgspec.field(default_factory=SandboxSettings)
    ray: RayConfig = msgspec.field(default_factory=RayConfig)
    cluster: ClusterConfig = msgspec.field(default_factory=ClusterConfig)

    def api_key(self) -> str | None:
        """The LLM API key, read from the environment variable named in the config."""
        return os.environ.get(self.llm.api_key_env) or None

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (for the manifest); holds no secret, only the variable's name."""
        return msgspec.to_builtins(self)


def compose(defaults: Mapping[str, Any], overrides: Sequence[str] = ()) -> RunConfig:
    """Compose engine defaults, the pipeline's ``defaults`` and ``overrides`` into a checked config."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    ConfigStore.instance().store(group="pipeline_defaults", name="current", package="_global_", node=dict(defaults))
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            composed = hydra_compose("config", overrides=["+pipeline_defaults=current", *overrides])
        data = OmegaConf.to_container(composed, resolve=True, throw_on_missing=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(_one_line(exc)) from exc
    finally:
        GlobalHydra.instance().clear()
    return check(data)


def check(data: Any) -> RunConfig:
    """Convert plain data into a ``RunConfig`` and check values that types cannot express."""
    try:
        cfg = msgspec.convert(data, RunConfig)
    except msgspec.ValidationError as exc:
        msg = f"config: {exc}"
        raise ConfigError(msg) from exc
    _positive("max_inflight", cfg.max_inflight)
    _positive("input.partitions", cfg.input.partitions)
    if cfg.offload_threshold < 0:
        msg = (
            f"config: offload_threshold={cfg.offload_threshold}; use a size in bytes, or 0 to send every value inline."
        )
        raise ConfigError(msg)
    _positive("output.part_rows", cfg.output.part_rows)
    _positive("output.sinks", cfg.output.sinks)
    _positive("transport.flush_rows", cfg.transport.flush_rows)
    _positive("recovery.max_attempts", cfg.recovery.max_attempts)
    if cfg.output.commit_s <= 0 or cfg.recovery.lease_s <= 0:
        msg = "config: output.commit_s and recovery.lease_s are seconds; use a number above 0."
        raise ConfigError(msg)
    if cfg.recovery.max_restarts < -1:
        msg = f"config: recovery.max_restarts={cfg.recovery.max_restarts}; use -1 (no limit), 0 (off) or more."
        raise ConfigError(msg)
    if not 0.0 <= cfg.events.sample <= 1.0:
        msg = f"config: events.sample={cfg.events.sample}; use a share of rows between 0 (off) and 1 (every row)."
        raise ConfigError(msg)
    _positive("events.flush_rows", cfg.events.flush_rows)
    if not 0 <= cfg.metrics.port <= 65535:
        msg = f"config: metrics.port={cfg.metrics.port}; use a TCP port (0: any free port)."
        raise ConfigError(msg)
    _positive("batch.size", cfg.batch.size)
    _positive("batch.actors", cfg.batch.actors)
    _positive("batch.batches_per_actor", cfg.batch.batches_per_actor)
    if cfg.batch.num_cpus <= 0:
        msg = f"config: batch.num_cpus={cfg.batch.num_cpus}; use a fraction of a CPU such as 0.25."
        raise ConfigError(msg)
    if cfg.resume == "auto" and not cfg.run_id:
        msg = "config: resume=auto continues the run named by run_id if it exists; set run_id=NAME too."
        raise ConfigError(msg)
    _positive("cluster.nodes", cfg.cluster.nodes)
    if cfg.cluster.wait_s <= 0 or min(cfg.cluster.cpus, cfg.cluster.gpus) < 0:
        msg = "config: cluster.wait_s must be above 0 and cluster.cpus / cluster.gpus 0 or more."
        raise ConfigError(msg)
    if cfg.retry_errors and cfg.resume is None:
        msg = "config: retry_errors=true reruns the failed rows of an earlier run; add resume=<its run directory>."
        raise ConfigError(msg)
    if cfg.limit is not None and cfg.limit < 0:
        msg = f"config: limit={cfg.limit}; use a number of rows >= 0 or null."
        raise ConfigError(msg)
    if cfg.llm.sim.time_scale < 0:
        msg = f"config: llm.sim.time_scale={cfg.llm.sim.time_scale}; use 0 or more."
        raise ConfigError(msg)
    if cfg.llm.sim.profile not in PROFILES:
        msg = f"config: llm.sim.profile={cfg.llm.sim.profile!r} is unknown; known profiles: {', '.join(PROFILES)}."
        raise ConfigError(msg)
    _positive("llm.replicas", cfg.llm.replicas)
    _positive("llm.tensor_parallel", cfg.llm.tensor_parallel)
    _positive("llm.circuit_failures", cfg.llm.circuit_failures)
    if cfg.llm.sim.max_num_seqs is not None:
        _positive("llm.sim.max_num_seqs", cfg.llm.sim.max_num_seqs)
    for model, urls in cfg.llm.models.items():
        if not urls or not all(url.startswith(("http://", "https://")) for url in urls):
            msg = f"config: llm.models.{model} needs a list of endpoint URLs like [http://host:8000/v1], got {urls!r}."
            raise ConfigError(msg)
    if cfg.llm.endpoints_dir and cfg.llm.urls():
        msg = "config: llm.endpoints_dir reads the endpoints from a folder; drop llm.base_url / llm.endpoints."
        raise ConfigError(msg)
    if cfg.llm.endpoints_dir and cfg.llm.backend not in ("auto", "openai"):
        msg = (
            f"config: llm.endpoints_dir uses servers started elsewhere, but llm.backend={cfg.llm.backend} "
            "would start its own; drop llm.backend (the LLM job's knobs are its own)."
        )
        raise ConfigError(msg)
    if cfg.llm.backend == "openai" and not (cfg.llm.urls() or cfg.llm.endpoints_dir):
        msg = "config: llm.backend=openai needs llm.base_url=http://host:port/v1 or llm.endpoints=[...]."
        raise ConfigError(msg)
    _positive("sandbox.size", cfg.sandbox.size)
    _positive("sandbox.processes", cfg.sandbox.processes)
    _positive("sandbox.memory_mb", cfg.sandbox.memory_mb)
    if min(cfg.sandbox.timeout_s, cfg.sandbox.idle_s, cfg.sandbox.acquire_timeout_s) <= 0:
        msg = (
            "config: sandbox.timeout_s, sandbox.idle_s and sandbox.acquire_timeout_s are seconds; use a number above 0."
        )
        raise ConfigError(msg)
    if cfg.sandbox.backend == "apptainer" and not cfg.sandbox.image:
        msg = "config: sandbox.backend=apptainer needs sandbox.image=PATH.sif (the image tools run in)."
        raise ConfigError(msg)
    for name, op in cfg.operators.items():
        _positive(f"operators.{name}.replicas", op.replicas)
        if op.concurrency is not None:
            _positive(f"operators.{name}.concurrency", op.concurrency)
    return cfg


def _positive(key: str, value: int) -> None:
    if value < 1:
        msg = f"config: {key}={value}; use 1 or more."
        raise ConfigError(msg)


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.strip().startswith("See ")]
    if "MissingMandatoryValue" in type(exc).__name__ or "Missing mandatory value" in str(exc):
        key = str(exc).split("full_key:")[-1].split()[0] if "full_key:" in str(exc) else "a key"
        return f"config: {key} is required; pass {key}=..."
    return "config: " + "; ".join(lines[:2])
