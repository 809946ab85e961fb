"""The command line of each engine's OpenAI-compatible server, as pure functions of a spec.

Flags follow the engines' own documentation:

- vLLM: ``python -m vllm.entrypoints.openai.api_server`` with the engine arguments of
  https://docs.vllm.ai/en/latest/configuration/engine_args/ (``--model``, ``--served-model-name``,
  ``--host``, ``--port``, ``--tensor-parallel-size``, ``--max-num-seqs``,
  ``--gpu-memory-utilization``, ``--seed``, ``--distributed-executor-backend``).
- SGLang: ``python -m sglang.launch_server`` with the server arguments of
  https://docs.sglang.io/advanced_features/server_arguments.html (``--model-path``,
  ``--served-model-name``, ``--host``, ``--port``, ``--tp-size``, ``--max-running-requests``,
  ``--mem-fraction-static``, ``--random-seed``).
- llama.cpp: ``python -m llama_cpp.server`` of llama-cpp-python
  (https://llama-cpp-python.readthedocs.io/en/latest/server/: ``--model``, ``--model_alias``,
  ``--host``, ``--port``, ``--n_ctx``, ``--n_threads``, ``--seed``).

The module form (``python -m ...``) rather than the ``vllm serve`` script pins the server to a
known interpreter: the one whose packages were checked, or the one the spec names.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from streamflow.services.engines.spec import ServerSpec

__all__ = ["ENGINE_MODULES", "llamacpp_command", "server_command", "sglang_command", "vllm_command"]

ENGINE_MODULES = {
    "vllm": "vllm.entrypoints.openai.api_server",
    "sglang": "sglang.launch_server",
    "llamacpp": "llama_cpp.server",
}
LLAMACPP_CONTEXT = 4096
"""Context window of a llama.cpp server unless ``engine_args`` say otherwise (the NaturalReasoning prompts
reach ~2k tokens with their answer); its own default, 2048, is too small."""


def _program(spec: ServerSpec) -> list[str]:
    python = spec.python or sys.executable
    return [python, *(spec.entrypoint or ["-m", ENGINE_MODULES[spec.engine]])]


def _optional(flag: str, value: object | None) -> list[str]:
    return [] if value is None else [flag, str(value)]


def vllm_command(spec: ServerSpec, port: int, host: str) -> list[str]:
    """argv of a vLLM OpenAI-compatible server for ``spec`` listening on ``host:port``.

    With tensor parallelism the executor is pinned to ``mp`` (one process per GPU on this
    node): vLLM would otherwise pick Ray when it finds a Ray cluster, and ask it for GPUs
    this replica's actor already holds.
    """
    argv = [
        *_program(spec),
        "--model", spec.model,
        "--served-model-name", spec.served_name,
        "--host", host,
        "--port", str(port),
        "--tensor-parallel-size", str(spec.tensor_parallel),
    ]  # fmt: skip
    if spec.tensor_parallel > 1:
        argv += ["--distributed-executor-backend", "mp"]
    argv += _optional("--max-num-seqs", spec.max_num_seqs)
    argv += _optional("--gpu-memory-utilization", spec.gpu_memory_utilization)
    argv += _optional("--seed", spec.seed)
    return argv + list(spec.extra_args)


def sglang_command(spec: ServerSpec, port: int, host: str) -> list[str]:
    """argv of an SGLang server for ``spec`` listening on ``host:port``.

    SGLang has no ``gpu_memory_utilization``; its closest knob, ``--mem-fraction-static``, is
    the share of GPU memory for weights and KV cache, so the same number is passed there.
    """
    argv = [
        *_program(spec),
        "--model-path", spec.model,
        "--served-model-name", spec.served_name,
        "--host", host,
        "--port", str(port),
        "--tp-size", str(spec.tensor_parallel),
    ]  # fmt: skip
    argv += _optional("--max-running-requests", spec.max_num_seqs)
    argv += _optional("--mem-fraction-static", spec.gpu_memory_utilization)
    argv += _optional("--random-seed", spec.seed)
    return argv + list(spec.extra_args)


def llamacpp_command(spec: ServerSpec, port: int, host: str) -> list[str]:
    """argv of a llama.cpp server (llama-cpp-python) for ``spec``; ``spec.model`` is the GGUF file.

    It serves one request at a time, so ``max_num_seqs`` has no flag; ``threads`` become
    ``--n_threads`` (and the batch threads), since several replicas on one machine must share its cores.
    """
    argv = [
        *_program(spec),
        "--model", spec.model,
        "--model_alias", spec.served_name,
        "--host", host,
        "--port", str(port),
        "--n_ctx", str(LLAMACPP_CONTEXT),
        "--verbose", "False",
    ]  # fmt: skip
    if spec.threads is not None:
        argv += ["--n_threads", str(spec.threads), "--n_threads_batch", str(spec.threads)]
    argv += _optional("--seed", spec.seed)
    return argv + list(spec.extra_args)


_BUILDERS: dict[str, Callable[[ServerSpec, int, str], list[str]]] = {
    "vllm": vllm_command,
    "sglang": sglang_command,
    "llamacpp": llamacpp_command,
}


def server_command(spec: ServerSpec, port: int, host: str) -> list[str]:
    """argv of ``spec.engine``'s server (``vllm_command``, ``sglang_command`` or ``llamacpp_command``)."""
    return _BUILDERS[spec.engine](spec, port, host)
