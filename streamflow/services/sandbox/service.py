"""The sandbox service of a run: one pool per node as a Ray actor, and the client operators use.

A sandbox id names its pool, so a row can acquire a sandbox on one node and run its next tool
call from an actor on another: the call goes to the pool that holds the sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streamflow.errors import SetupError
from streamflow.services.sandbox.pool import CallResult, ExecResult, SandboxError, SandboxPool, SandboxSettings

__all__ = ["SandboxAccess", "SandboxClient", "start_pools", "stop_pools"]


@dataclass(frozen=True)
class SandboxAccess:
    """Where the pools are: pool name -> Ray actor handle (or an in-process ``SandboxPool``)."""

    pools: Mapping[str, Any]

    def client(self) -> SandboxClient:
        return SandboxClient(self.pools)


class SandboxClient:
    """Acquire, use and release sandboxes by id, wherever their pool is."""

    def __init__(self, pools: Mapping[str, Any]) -> None:
        if not pools:
            msg = "no sandbox pool is running"
            raise SetupError(msg)
        self._pools = dict(pools)
        self._local = _local_pool_name(self._pools)

    async def acquire(self, owner: str, files: Mapping[str, bytes] | None = None) -> str:
        """A fresh sandbox on this node's pool, with ``files`` written into it; returns its id."""
        return await self._call(self._local, "acquire", owner, dict(files or {}))

    async def run(
        self, box_id: str, argv: Sequence[str], *, timeout_s: float | None = None, stdin: bytes | None = None
    ) -> ExecResult:
        """Run a command in the sandbox; see ``SandboxPool.run``."""
        return await self._call(_pool_of(box_id), "run", box_id, list(argv), timeout_s=timeout_s, stdin=stdin)

    async def call(
        self,
        box_id: str,
        module: str,
        function: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> CallResult:
        """Call a Python function of a module in the sandbox; see ``SandboxPool.call``."""
        return await self._call(
            _pool_of(box_id), "call", box_id, module, function, dict(arguments or {}), timeout_s=timeout_s
        )

    async def read(self, box_id: str, path: str) -> bytes:
        return await self._call(_pool_of(box_id), "read", box_id, path)

    async def write(self, box_id: str, path: str, data: bytes) -> None:
        await self._call(_pool_of(box_id), "write", box_id, path, data)

    async def release(self, box_id: str) -> bool:
        """Delete the sandbox; False if it was gone already (released or reclaimed)."""
        return await self._call(_pool_of(box_id), "release", box_id)

    async def _call(self, pool_name: str, method: str, *args: Any, **kwargs: Any) -> Any:
        pool = self._pools.get(pool_name)
        if pool is None:
            raise SandboxError(f"no sandbox pool named {pool_name!r} (known: {', '.join(self._pools)})")
        if isinstance(pool, SandboxPool):
            return await getattr(pool, method)(*args, **kwargs)
        import ray

        try:
            return await getattr(pool, method).remote(*args, **kwargs)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, Exception) else exc
            raise SandboxError(str(cause).strip().splitlines()[-1]) from None
        except ray.exceptions.RayActorError as exc:
            raise SandboxError(f"the sandbox pool {pool_name!r} died: {exc}") from None


def _pool_of(box_id: str) -> str:
    return box_id.split("/", 1)[0]


def _local_pool_name(pools: Mapping[str, Any]) -> str:
    """This node's pool if there is one (pools are named by node id prefix), else the first."""
    try:
        import ray

        node = ray.get_runtime_context().get_node_id()[:12] if ray.is_initialized() else ""
    except Exception:  # noqa: BLE001 - outside a Ray worker any pool will do
        node = ""
    return node if node in pools else next(iter(pools))


async def start_pools(settings: SandboxSettings) -> SandboxAccess:
    """One pool actor per alive node, each checked with a tool call; fails with a one-line reason if one cannot run."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    actor: Any = ray.remote(SandboxPool)
    pools: dict[str, Any] = {}
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        name = node["NodeID"][:12]
        pools[name] = actor.options(
            num_cpus=0,
            max_concurrency=10_000,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
        ).remote(settings, name=name)
    try:
        await asyncio.gather(*(pool.check.remote() for pool in pools.values()))
    except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
        await stop_pools(SandboxAccess(pools))
        lines = str(getattr(exc, "error_msg", exc)).splitlines()
        reason = next((line.split("SetupError: ", 1)[1] for line in lines if "SetupError: " in line), lines[-1])
        raise SetupError(reason.strip()) from None
    return SandboxAccess(pools)


async def stop_pools(access: SandboxAccess | None) -> None:
    """Release every sandbox (killing what still runs) and stop the pool actors."""
    if access is None:
        return
    import ray

    for pool in access.pools.values():
        if isinstance(pool, SandboxPool):
            await pool.close()
            continue
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.close.remote(), 10)
        with contextlib.suppress(Exception):
            ray.kill(pool)
