"""The client operators use to reach sandboxes (``ctx.sandbox``), wherever their pool lives.

Every process that runs sandboxed steps has a pool of its own (``SandboxPool``): a row
acquires its sandboxes there, and its tool calls cost no Ray hop. A sandbox id names its
pool, so a row whose later step runs in another actor still reaches its sandbox: the call
goes to the actor holding that pool (its ``sandbox`` method).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from streamflow.errors import SetupError, raised_inside
from streamflow.services.sandbox.pool import CallResult, ExecResult, SandboxError, SandboxPool

__all__ = ["SandboxClient"]


class SandboxClient:
    """Acquire, use and release sandboxes by id.

    ``pools`` maps pool names to in-process ``SandboxPool``s or to Ray actor handles with a
    ``sandbox(method, *args, **kwargs)`` method; ``local`` names the pool ``acquire`` uses.
    """

    REMOTE_METHODS = frozenset({"run", "call", "read", "write", "release"})
    """What a row may do with a sandbox held by another process."""

    def __init__(self, pools: Mapping[str, Any], *, local: str | None = None) -> None:
        if local is None and len(pools) == 1:
            local = next(iter(pools))
        if not pools:
            msg = "no sandbox pool is running"
            raise SetupError(msg)
        self._pools = dict(pools)
        self._local = local

    async def acquire(self, owner: str, files: Mapping[str, bytes] | None = None) -> str:
        """A fresh sandbox in this process's pool, with ``files`` written into it; returns its id."""
        pool = self._pools.get(self._local) if self._local is not None else None
        if not isinstance(pool, SandboxPool):
            msg = "this process has no sandbox pool: only steps with uses_sandbox = True may acquire sandboxes"
            raise SetupError(msg)
        return await pool.acquire(owner, dict(files or {}))

    async def run(
        self, box_id: str, argv: Sequence[str], *, timeout_s: float | None = None, stdin: bytes | None = None
    ) -> ExecResult:
        """Run a command in the sandbox; see ``SandboxPool.run``."""
        return await self._call(box_id, "run", box_id, list(argv), timeout_s=timeout_s, stdin=stdin)

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
        return await self._call(box_id, "call", box_id, module, function, dict(arguments or {}), timeout_s=timeout_s)

    async def read(self, box_id: str, path: str) -> bytes:
        return await self._call(box_id, "read", box_id, path)

    async def write(self, box_id: str, path: str, data: bytes) -> None:
        await self._call(box_id, "write", box_id, path, data)

    async def release(self, box_id: str) -> bool:
        """Delete the sandbox; False if it was gone already (released or reclaimed)."""
        return await self._call(box_id, "release", box_id)

    async def _call(self, box_id: str, method: str, *args: Any, **kwargs: Any) -> Any:
        name = box_id.split("/", 1)[0]
        pool = self._pools.get(name)
        if pool is None:
            raise SandboxError(f"sandbox {box_id!r} names no known pool (known: {', '.join(self._pools)})")
        if isinstance(pool, SandboxPool):
            return await getattr(pool, method)(*args, **kwargs)
        import ray

        try:
            return await pool.sandbox.remote(method, *args, **kwargs)
        except ray.exceptions.RayTaskError as exc:
            cause = raised_inside(exc)
            if isinstance(cause, SandboxError):
                raise cause from None
            raise SandboxError(f"sandbox {box_id!r}: {type(cause).__name__}: {cause}") from None
        except ray.exceptions.RayActorError as exc:
            raise SandboxError(f"the actor holding sandbox pool {name!r} died: {exc}") from None
