"""Real inference servers (vLLM, SGLang) started by streamflow as Ray actors on GPU nodes.

Example::

    spec = ServerSpec(engine="vllm", model="meta-llama/Llama-3.1-8B-Instruct", tensor_parallel=1)
    urls, handles = await start_engine_replicas(spec, replicas=2, log_dir="outputs/run/logs")
    client = LLMClient(urls, model=spec.served_name)
    ...
    await stop_engine_replicas(handles)

Modules: ``spec`` (what to launch), ``commands`` (each engine's argv, pure), ``process``
(a subprocess that dies with its owner), ``health`` (waiting for ``GET /health``),
``server_actor`` (the body of the Ray actor that runs one server), ``launch`` (checks, then all replicas or none).
"""

from streamflow.services.engines.commands import server_command, sglang_command, vllm_command
from streamflow.services.engines.launch import (
    check_engine_installed,
    check_gpus,
    start_engine_replicas,
    stop_engine_replicas,
)
from streamflow.services.engines.server_actor import EngineReplica
from streamflow.services.engines.spec import ENGINES, ServerSpec

__all__ = [
    "ENGINES",
    "EngineReplica",
    "ServerSpec",
    "check_engine_installed",
    "check_gpus",
    "server_command",
    "sglang_command",
    "start_engine_replicas",
    "stop_engine_replicas",
    "vllm_command",
]
