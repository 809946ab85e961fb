"""The run configuration: Hydra composes it, msgspec types and checks it.

Layers, later wins: ``streamflow/conf/config.yaml`` (engine defaults, documented there),
the pipeline's defaults (its input, its steps, its ``Params``), then command-line
overrides. Hydra gives the familiar ``key=value`` grammar; converting the result into
``RunConfig`` checks it. Each field declares its own constraints (``Annotated[int, Meta(ge=1)]``),
so every range and every set of values is written once, next to the field; ``check`` keeps
only the rules that join several fields. Every mistake becomes one line that names a real
key and what it accepts, and a mistyped key gets the closest real one.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from streamflow.errors import ConfigError
from streamflow.services.sandbox.pool import SandboxSettings
from streamflow.services.sim.profile import ProfileName

__all__ = [
    "CONF_DIR",
    "BatchConfig",
    "ClusterConfig",
    "ErrorsConfig",
    "EventsConfig",
    "InputConfig",
    "LLMConfig",
    "MetricsConfig",
    "OperatorConfig",
    "OutputConfig",
    "RayConfig",
    "RecoveryConfig",
    "RunConfig",
    "SandboxSettings",
    "SimSettings",
    "TransportConfig",
    "compose",
]

CONF_DIR = Path(__file__).parent / "conf"

Count = Annotated[int, Meta(ge=1)]
"""A number of things (rows, actors, replicas): 1 or more."""
Seconds = Annotated[float, Meta(gt=0)]
"""A duration in seconds, above 0."""
Url = Annotated[str, Meta(pattern=r"^https?://")]
"""An endpoint URL: http:// or https://."""


class InputConfig(msgspec.Struct, forbid_unknown_fields=True):
    path: str
    format: Literal["auto", "parquet", "jsonl"] = "auto"
    partitions: Count = 4
    id_column: str | None = None
    storage_options: dict[str, Any] = {}


class OutputConfig(msgspec.Struct, forbid_unknown_fields=True):
    dir: str = "outputs"
    part_rows: Count = 50_000
    sinks: Count | None = None  # None: one per 16 CPUs of the cluster (at least 1, at most 8)
    commit_s: Seconds = 30.0
    claim_stale_s: Annotated[
        float, Meta(ge=5, description="seconds, at least 5: a running attempt beats every 2 s")
    ] = 15.0
    """A resume takes over a run directory whose holder's heartbeat is older than this (see ``streamflow.attempts``)."""


class RecoveryConfig(msgspec.Struct, forbid_unknown_fields=True):
    """How a row-mode run survives dead actors (see docs/reliability.md)."""

    max_restarts: Annotated[int, Meta(ge=-1, description="-1: no limit, 0: a death fails the run")] = -1
    lease_s: Seconds = 5.0
    max_attempts: Count = 5


class ErrorsConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The error budget: a run whose recent rows mostly fail stops early instead of failing every row."""

    window: Count = 200
    """The last this many finished rows are looked at (all of them, at the end of a shorter run)."""
    max_share: Annotated[
        float, Meta(ge=0, le=1, description="a share of the window such as 0.5; 1: never stop early")
    ] = 0.5
    """The run stops once more than this share of the window failed (``error:*``)."""


class EventsConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The per-hop event log under ``<run>/events/`` (see docs/observability.md)."""

    sample: Annotated[float, Meta(ge=0, le=1, description="the share of rows recorded, 0: off, 1: every row")] = 1.0
    flush_rows: Count = 20_000
    flush_s: float = 10.0


class MetricsConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The Prometheus endpoint the driver serves while a run is going."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535, description="a TCP port, 0: any free port")] = 9464
    linger_s: Annotated[float, Meta(ge=0, description="seconds, 0 or more")] = 0.0
    """After a finished run, serve its final figures this long (a scraper's interval) before exiting."""


class SimSettings(msgspec.Struct, forbid_unknown_fields=True):
    profile: ProfileName = "llama-8b-h100"
    time_scale: Annotated[float, Meta(ge=0)] = 1.0
    max_num_seqs: Count | None = None
    models: list[str] = []  # more model names the simulator answers as, besides llm.model
    prefix_caching: bool = False  # skip the prefill of recently computed prompt prefixes, as vLLM V1 does


class CacheConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The LLM response cache (``streamflow.services.llm.cache``)."""

    enabled: bool = True
    path: str | None = None
    """None: the run's own, ``<run dir>/llm-cache/{host}.sqlite``; a path: a file shared by runs."""


class LLMConfig(msgspec.Struct, forbid_unknown_fields=True):
    backend: Literal["auto", "sim", "openai", "vllm", "sglang", "llamacpp", "none"] = "auto"
    base_url: str | None = None
    endpoints: list[str] = []
    endpoints_dir: str | None = None  # a folder where streamflow.serve publishes URLs (slurm/llm.sbatch)
    model: str = "sim-8b"
    model_path: str | None = None  # llamacpp: the .gguf file (default: the file of a packaged model, llm.model=smollm2)
    replicas: Count = 1
    tensor_parallel: Count = 1
    engine_args: list[str] = []
    startup_timeout_s: float = 900.0
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 120.0
    max_retries: int = 4
    circuit_failures: Count = 5
    circuit_cooldown_s: float = 2.0
    cache: CacheConfig = msgspec.field(default_factory=CacheConfig)
    relay: bool = True
    """Send LLM requests through a relay process per node, so the calls of an actor that dies finish."""
    sim: SimSettings = msgspec.field(default_factory=SimSettings)
    models: dict[
        str, Annotated[list[Url], Meta(min_length=1, description="endpoint URLs like [http://host:8000/v1]")]
    ] = {}
    """Other models steps may name, each served elsewhere: model name -> OpenAI-compatible endpoint URLs."""

    @property
    def uses_sim(self) -> bool:
        """True when streamflow must start its simulated server."""
        if self.backend == "auto":
            return not (self.base_url or self.endpoints or self.endpoints_dir)
        return self.backend == "sim"

    @property
    def uses_relay(self) -> bool:
        """True when requests go through relays: they hand answers on through the response cache, so not without it.

        With ``llm.backend=none`` there are no requests, and no relay to start."""
        return self.relay and self.backend != "none" and self.cache.enabled and bool(self.cache.path)

    @property
    def uses_external(self) -> bool:
        """True when the endpoints are servers started elsewhere (llm.base_url / llm.endpoints)."""
        return self.backend == "openai" or (self.backend == "auto" and bool(self.urls()))

    def urls(self) -> list[str]:
        """The configured endpoint URLs of an external server."""
        return list(self.endpoints) or ([self.base_url] if self.base_url else [])


class OperatorConfig(msgspec.Struct, forbid_unknown_fields=True):
    replicas: Count = 1
    concurrency: Count | None = None
    num_cpus: float = 0.0
    fuse: bool = True  # row mode: share an actor with neighbouring steps of the same replicas and CPUs


class TransportConfig(msgspec.Struct, forbid_unknown_fields=True):
    flush_rows: Count = 64
    flush_ms: float = 1.0
    sink_flush_ms: float = 100.0
    """How long finished rows wait to travel to their sink together, and, while they trickle in, how often the driver collects a sink's completions."""


class BatchConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Batch mode (``mode=batch``): at most ``actors * batches_per_actor * size`` rows in flight."""

    size: Count = 50
    actors: Count = 4
    batches_per_actor: Count = 5
    num_cpus: Annotated[float, Meta(gt=0, description="a share of a CPU such as 0.25")] = 0.25


class RayConfig(msgspec.Struct, forbid_unknown_fields=True):
    address: str | None = None
    num_cpus: int | None = None


class ClusterConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The Ray cluster a run needs before it starts (``cluster=local`` or ``cluster=slurm``, docs/slurm.md)."""

    kind: Literal["local", "slurm"] = "local"
    nodes: Count = 1  # alive Ray nodes to wait for
    cpus: Annotated[float, Meta(ge=0)] = 0.0  # and at least this many CPUs and GPUs in all
    gpus: Annotated[float, Meta(ge=0)] = 0.0
    wait_s: Seconds = 600.0  # then the run stops, naming what is missing


class RunConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Every knob of a run; see ``streamflow/conf/config.yaml`` for what each one does."""

    input: InputConfig
    pipeline: str = ""
    run_id: str | None = None
    seed: int = 0
    limit: Annotated[int, Meta(ge=1, description="a number of rows, or null for all")] | None = None
    max_inflight: Count = 1024
    offload_threshold: Annotated[int, Meta(ge=0, description="a size in bytes, 0: every value inline")] = 0
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
    errors: ErrorsConfig = msgspec.field(default_factory=ErrorsConfig)
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
        raise ConfigError(_one_line(exc, defaults)) from exc
    finally:
        GlobalHydra.instance().clear()
    return check(data)


def check(data: Any) -> RunConfig:
    """Convert plain data into a ``RunConfig``: the fields check their own values, this the rules that join fields."""
    try:
        cfg = msgspec.convert(data, RunConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(_invalid(str(exc), data)) from exc
    if cfg.resume == "auto" and not cfg.run_id:
        msg = "config: resume=auto continues the run named by run_id if it exists; set run_id=NAME too."
        raise ConfigError(msg)
    if cfg.retry_errors and cfg.resume is None:
        msg = "config: retry_errors=true reruns the failed rows of an earlier run; add resume=<its run directory>."
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
    if cfg.sandbox.backend == "apptainer" and not cfg.sandbox.image:
        msg = "config: sandbox.backend=apptainer needs sandbox.image=PATH.sif (the image tools run in)."
        raise ConfigError(msg)
    return cfg


# -- one line per mistake -----------------------------------------------------------------

_LOCATED = re.compile(r"(?P<what>.*?)(?: - at `\$(?P<path>.*)`)?", re.DOTALL)
_PATH_STEP = re.compile(r"\.(?P<name>[^.\[]+)|\[(?P<index>\.\.\.|\d+)\]")
_NOT_IN_CONFIG = re.compile(r"Could not override '(?P<key>[^']+)'\.\nTo append to your config use (?P<append>\S+)")


def _invalid(text: str, data: Any) -> str:
    """One line for a ``msgspec.ValidationError``: the real key, its value and what the field accepts."""
    located = _LOCATED.fullmatch(text)
    assert located is not None  # the pattern matches any text
    what, path = located["what"], located["path"] or ""
    keys, value, declared, kind = _follow(path, data)
    if what.startswith("Object contains unknown field"):
        name = what.split("`")[1]
        return _unknown([*keys, name], len(keys), list(_fields(_bare(kind))))
    if what.startswith("Object missing required field"):
        key = ".".join([*keys, what.split("`")[1]])
        return f"config: {key} is required; pass {key}=..."
    shown = f"{'.'.join(keys)}={_shown(value)}"
    if what.startswith("Invalid enum value"):
        return f"config: {shown}; use one of: {', '.join(map(str, typing.get_args(_bare(kind))))}."
    hint = _description(declared)
    return f"config: {shown}; {what[:1].lower()}{what[1:]}{f' ({hint})' if hint else ''}."


def _follow(path: str, data: Any) -> tuple[list[str], Any, Any, Any]:
    """Walk a msgspec error path (``$.operators[...].replicas``) through the data and the declared types.

    Returns the real key as parts (msgspec writes ``[...]`` for any mapping entry: the entry is the
    first one that does not convert), the value the key holds, the key's declared type, and the
    declared type at the end of the path (a list item's, say).
    """
    keys: list[str] = []
    value: Any = data
    declared: Any = RunConfig
    kind: Any = RunConfig
    for step in _PATH_STEP.finditer(path):
        bare = _bare(kind)
        if step["name"] is not None:
            keys.append(step["name"])
            kind = _fields(bare).get(step["name"])
            value = value.get(step["name"]) if isinstance(value, Mapping) else None
            declared = kind
        elif step["index"] == "...":
            kind = typing.get_args(bare)[1] if typing.get_origin(bare) is dict else None
            entries = value.items() if isinstance(value, Mapping) else []
            name, value = next(((k, v) for k, v in entries if not _fits(v, kind)), ("?", None))
            keys.append(str(name))
            declared = kind
        else:
            kind = typing.get_args(bare)[0] if typing.get_origin(bare) is list else None
    return keys, value, declared, kind


def _one_line(exc: BaseException, defaults: Mapping[str, Any]) -> str:
    """One line for an error of Hydra's: a key that is not in the config, a group choice, a missing value."""
    text = str(exc)
    unknown = _NOT_IN_CONFIG.search(text)
    if unknown:
        return _not_in_config(unknown["key"], unknown["append"], defaults)
    options, missing = getattr(exc, "options", None), getattr(exc, "missing_cfg_file", None)
    if options is not None and missing:
        group, _, choice = str(missing).rpartition("/")
        return f"config: {group}={choice}; use one of: {', '.join(options)}."
    if "MissingMandatoryValue" in type(exc).__name__ or "Missing mandatory value" in text:
        key = text.split("full_key:")[-1].split()[0] if "full_key:" in text else "a key"
        return f"config: {key} is required; pass {key}=..."
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("See ")]
    return "config: " + "; ".join(lines[:2])


def _not_in_config(key: str, append: str, defaults: Mapping[str, Any]) -> str:
    """A ``key=value`` override Hydra refused: the closest real key, or how to add an entry to a mapping.

    The keys of the config's sections come from ``RunConfig``; the entries of its mappings
    (``operators``, ``params``) from the pipeline's ``defaults``.
    """
    parts = key.split(".")
    kind: Any = RunConfig
    given: Any = defaults
    for depth, part in enumerate(parts):
        bare = _bare(kind)
        fields = _fields(bare)
        entries = given if isinstance(given, Mapping) else {}
        children = list(fields) or list(entries)
        if not children and typing.get_origin(bare) is dict:
            return f"config: {key} is not in the config yet; add it with {append}."
        if part not in children:
            return _unknown(parts, depth, children)
        kind = fields[part] if fields else typing.get_args(bare)[1] if typing.get_origin(bare) is dict else None
        given = entries.get(part)
    return f"config: {key} cannot be set; add it with {append}."


def _unknown(parts: Sequence[str], depth: int, children: Sequence[str]) -> str:
    """One line for a key whose ``parts[depth]`` is none of ``children``: the closest one, or all of them."""
    key = ".".join(parts)
    parent = ".".join(parts[:depth])
    close = difflib.get_close_matches(parts[depth], children, n=1)
    if close:
        return (
            f"config: unknown key {key!r}; did you mean {'.'.join([*parts[:depth], close[0], *parts[depth + 1 :]])!r}?"
        )
    if not children:
        return f"config: unknown key {key!r}; {parent} is a value, it has no keys under it."
    under = f"the keys under {parent}" if parent else "the top-level keys"
    return f"config: unknown key {key!r}; {under} are: {', '.join(children)}."


def _bare(kind: Any) -> Any:
    """A declared type without its constraints (``Annotated``) and without ``| None``."""
    while True:
        origin = typing.get_origin(kind)
        if origin is Annotated:
            kind = typing.get_args(kind)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [member for member in typing.get_args(kind) if member is not type(None)]
            if len(members) != 1:
                return kind
            kind = members[0]
        else:
            return kind


def _description(kind: Any) -> str | None:
    """What a field's declared constraints say about its values (``Meta(description=...)``), if anything."""
    while True:
        origin = typing.get_origin(kind)
        if origin is Annotated:
            for meta in typing.get_args(kind)[1:]:
                if isinstance(meta, Meta) and meta.description:
                    return meta.description
            kind = typing.get_args(kind)[0]
        elif origin in (typing.Union, types.UnionType):
            kind = next((m for m in typing.get_args(kind) if m is not type(None)), None)
        else:
            return None


def _fields(kind: Any) -> dict[str, Any]:
    """The declared field types of a config section; empty for anything else."""
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        return {field.name: field.type for field in msgspec.structs.fields(kind)}
    return {}


def _fits(value: Any, kind: Any) -> bool:
    try:
        msgspec.convert(value, kind)
    except msgspec.ValidationError:
        return False
    return True


def _shown(value: Any) -> str:
    """A value as it is written on the command line."""
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()
