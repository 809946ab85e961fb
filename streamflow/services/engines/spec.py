"""What to launch: one inference server (vLLM, SGLang or llama.cpp) described as plain data.

A spec is built once on the driver from the config and shipped to every replica actor, so it
holds only values (no handles, no paths resolved on the driver's node): ``python=None`` means
the interpreter of the actor that runs it, ``host=None`` the IP address of that actor's node.
"""

from __future__ import annotations

import msgspec

from streamflow.errors import ConfigError

__all__ = ["ENGINES", "ServerSpec"]

ENGINES = ("vllm", "sglang", "llamacpp")


class ServerSpec(msgspec.Struct, kw_only=True):
    """One inference server per replica: engine, model, parallelism, and how long it may take to start.

    ``max_num_seqs``, ``gpu_memory_utilization`` and ``seed`` map onto each engine's own flag
    (see ``commands.py``); ``None`` leaves the engine's default. ``extra_args`` are appended
    last, so they can override anything streamflow sets. ``entrypoint`` replaces the engine's
    module (``-m vllm.entrypoints.openai.api_server``) with another program run by ``python``,
    e.g. a wrapper script; it receives the same flags. ``host=None`` binds the node's IP
    address: reachable from operators on other nodes, without listening on every interface.
    """

    model: str
    engine: str = "vllm"
    served_model_name: str | None = None
    tensor_parallel: int = 1
    host: str | None = None
    port: int = 0
    max_num_seqs: int | None = None
    gpu_memory_utilization: float | None = None
    seed: int | None = None
    extra_args: list[str] = []
    env: dict[str, str] = {}
    health_path: str = "/health"
    startup_timeout_s: float = 900.0
    stop_grace_s: float = 30.0
    python: str | None = None
    entrypoint: list[str] = []
    threads: int | None = None  # CPU threads of a llama.cpp server; None: its default

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            msg = f"ServerSpec: engine {self.engine!r} is unknown; use one of {', '.join(ENGINES)}."
            raise ConfigError(msg)
        if not self.model:
            msg = "ServerSpec: model is empty; give a Hugging Face repo id or a local path."
            raise ConfigError(msg)
        if self.tensor_parallel < 1:
            msg = f"ServerSpec: tensor_parallel must be >= 1 (GPUs per replica), got {self.tensor_parallel}."
            raise ConfigError(msg)
        if not 0 <= self.port <= 65535:
            msg = f"ServerSpec: port must be in 0..65535 (0 picks a free one), got {self.port}."
            raise ConfigError(msg)
        if self.max_num_seqs is not None and self.max_num_seqs < 1:
            msg = f"ServerSpec: max_num_seqs must be >= 1, got {self.max_num_seqs}."
            raise ConfigError(msg)
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            msg = f"ServerSpec: gpu_memory_utilization is a fraction in (0, 1], got {self.gpu_memory_utilization}."
            raise ConfigError(msg)
        if not self.health_path.startswith("/"):
            msg = f"ServerSpec: health_path must start with '/', got {self.health_path!r}; e.g. '/health'."
            raise ConfigError(msg)
        if self.startup_timeout_s <= 0 or self.stop_grace_s < 0:
            msg = (
                f"ServerSpec: startup_timeout_s must be > 0 and stop_grace_s >= 0, "
                f"got {self.startup_timeout_s} and {self.stop_grace_s}."
            )
            raise ConfigError(msg)

    @property
    def served_name(self) -> str:
        """The model name clients send: ``served_model_name``, else the model path or repo id."""
        return self.served_model_name or self.model
