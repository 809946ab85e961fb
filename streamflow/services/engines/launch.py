"""Start N engine replicas as Ray actors, all or none: checks first, then launch concurrently.

The checks run on the driver before any actor exists, because the failures they catch (no
GPUs, engine not installed) would otherwise surface minutes later as an actor that never gets
scheduled or a server that dies at import. If any replica fails to come up, the others are
stopped at once rather than left loading a model nobody will use.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import sys
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import ray
from ray.exceptions import RayActorError, RayTaskError

from streamflow.errors import ConfigError, SetupError, StreamflowError, raised_inside
from streamflow.services.engines.server_actor import EngineReplica
from streamflow.services.engines.spec import ServerSpec

__all__ = ["check_engine_installed", "check_gpus", "start_engine_replicas", "stop_engine_replicas"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_PACKAGES = {  # module, name, extra
    "vllm": ("vllm", "vLLM", "gpu"),
    "sglang": ("sglang", "SGLang", "sglang"),
    "llamacpp": ("llama_cpp", "llama-cpp-python", "cpu-llm"),
}


def _plural(count: float, word: str) -> str:
    return f"{count:g} {word}" if count == 1 else f"{count:g} {word}s"


def check_gpus(engine: str, replicas: int, gpus_per_replica: float) -> None:
    """Raise ``ConfigError`` unless the Ray cluster has the GPUs, with each replica's on one node."""
    needed = replicas * gpus_per_replica
    have = ray.cluster_resources().get("GPU", 0.0)
    if have < needed:
        msg = (
            f"llm.backend={engine} needs {_plural(replicas, 'replica')} x {_plural(gpus_per_replica, 'GPU')} = "
            f"{_plural(needed, 'GPU')}; this Ray cluster has {have:g}. "
            "Use llm.backend=sim, or llm.base_url=... for a server started elsewhere."
        )
        raise ConfigError(msg)
    largest = max((node["Resources"].get("GPU", 0.0) for node in ray.nodes() if node.get("Alive")), default=0.0)
    if largest < gpus_per_replica:
        msg = (
            f"llm.backend={engine} needs {_plural(gpus_per_replica, 'GPU')} on one node per replica "
            f"(tensor parallelism); the largest node of this Ray cluster has {largest:g}. "
            "Lower llm.tensor_parallel or add a node with more GPUs."
        )
        raise ConfigError(msg)


def _is_this_interpreter(python: str | None) -> bool:
    if python is None:
        return True
    try:
        return os.path.samefile(python, sys.executable)
    except OSError:
        return False


def check_engine_installed(spec: ServerSpec) -> None:
    """Raise ``ConfigError`` if the engine's package is missing from this interpreter.

    Checked only when the replicas will run this interpreter and the engine's own module;
    another interpreter or a custom entrypoint cannot be judged from the driver.
    """
    if spec.entrypoint or not _is_this_interpreter(spec.python):
        return
    module, name, extra = _PACKAGES[spec.engine]
    if importlib.util.find_spec(module) is None:
        msg = f"llm.backend={spec.engine} needs {name}: pip install 'streamflow-rows[{extra}]'"
        raise ConfigError(msg)


async def _wait(ref: Awaitable[_T], timeout_s: float) -> _T:
    async def wait() -> _T:
        return await ref

    return await asyncio.wait_for(wait(), timeout_s)


def _free_now() -> str:
    """The CPUs and GPUs free in the whole Ray cluster, in words (``ray status`` needs an autoscaler monitor)."""
    free = ray.available_resources()
    return f"{free.get('CPU', 0):g} CPUs, {free.get('GPU', 0):g} GPUs"


async def _start_one(
    handle: Any, index: int, spec: ServerSpec, log_dir: str, resources: str, schedule_timeout_s: float, placed: set[int]
) -> str:
    name = f"{spec.engine} replica {index}"
    try:
        await _wait(handle.__ray_ready__.remote(), schedule_timeout_s)
        placed.add(index)
    except TimeoutError:
        msg = (
            f"{name} was not scheduled within {schedule_timeout_s:g} s: no Ray node has {resources} free "
            f"(the cluster has {_free_now()} free now; other jobs may hold the rest)."
        )
        raise SetupError(msg) from None
    try:
        url: str = await handle.start.remote()
    except RayTaskError as exc:
        cause = raised_inside(exc)
        if isinstance(cause, StreamflowError):
            raise cause from None
        msg = f"{name} failed to start: {type(cause).__name__}: {cause}"
        raise SetupError(msg) from exc
    except RayActorError as exc:
        log_path = os.path.join(log_dir, f"{spec.engine}-{index}.log")
        msg = f"{name}: its actor died while starting the server ({type(exc).__name__}); see {log_path} on its node."
        raise SetupError(msg) from exc
    return url


async def start_engine_replicas(
    spec: ServerSpec,
    replicas: int,
    *,
    log_dir: str,
    num_gpus: float | None = None,
    num_cpus: float = 1.0,
    schedule_timeout_s: float = 300.0,
) -> tuple[list[str], list[Any]]:
    """Start ``replicas`` servers as ``EngineReplica`` actors; returns their base URLs and actor handles.

    ``num_gpus`` is what each actor reserves from Ray; it defaults to ``spec.tensor_parallel``.
    ``num_gpus=0`` skips the GPU check and reserves none: for engines on CPU and for tests that
    launch a fake server. ``num_cpus`` reserves CPU for the server process (it tokenizes and
    schedules on the CPU). ``log_dir`` is a directory on each replica's node. Raises
    ``ConfigError`` before launching anything if the cluster cannot host the replicas, and
    ``SetupError`` if one does not come up (all are stopped then).
    """
    if replicas < 1:
        msg = f"start_engine_replicas: replicas must be >= 1, got {replicas}."
        raise ConfigError(msg)
    gpus = float(spec.tensor_parallel) if num_gpus is None else num_gpus
    if gpus > 0:
        check_gpus(spec.engine, replicas, gpus)
    check_engine_installed(spec)
    actor = ray.remote(EngineReplica).options(num_gpus=gpus, num_cpus=num_cpus)
    handles: list[Any] = [actor.remote(spec, log_dir, index) for index in range(replicas)]
    resources = " and ".join(_plural(n, unit) for n, unit in ((gpus, "GPU"), (num_cpus, "CPU")) if n) or "room"
    placed: set[int] = set()  # replicas whose actor exists; the others are killed without a graceful stop
    tasks = [
        asyncio.ensure_future(_start_one(handle, index, spec, log_dir, resources, schedule_timeout_s, placed))
        for index, handle in enumerate(handles)
    ]

    async def abort() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await stop_engine_replicas([handles[index] for index in sorted(placed)], timeout_s=spec.stop_grace_s + 10)
        for handle in handles:
            ray.kill(handle)

    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except BaseException:
        await abort()
        raise
    error = next((task.exception() for task in tasks if task.done() and task.exception() is not None), None)
    if error is not None:
        await abort()
        raise error
    urls = [task.result() for task in tasks]
    log.info("%s started: %s", _plural(replicas, f"{spec.engine} replica"), ", ".join(urls))
    return urls, handles


async def stop_engine_replicas(handles: Sequence[Any], *, timeout_s: float = 60.0) -> None:
    """Stop each replica's server gracefully (bounded by ``timeout_s``), then end the actors.

    Ending the actor alone would also stop the server (it gets SIGTERM when its actor dies),
    but without waiting for it or escalating to SIGKILL.
    """
    stops = [handle.stop.remote() for handle in handles]
    try:
        await asyncio.wait_for(asyncio.gather(*stops, return_exceptions=True), timeout_s)
    except TimeoutError:
        log.warning("engine replicas did not stop within %g s; killing their actors", timeout_s)
    for handle in handles:
        ray.kill(handle)  # a no-op for an actor that is already gone
