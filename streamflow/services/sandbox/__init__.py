"""Sandboxed execution for tool calls: per-row isolated directories on every node (bubblewrap or Apptainer).

box = await ctx.sandbox.acquire(row.id, files={"db.json": data})
result = await ctx.sandbox.run(box, ["python3", "tool.py", "refund"], timeout_s=10)
await ctx.sandbox.release(box)
"""

from streamflow.services.sandbox.backends import Apptainer, Bubblewrap, Interpreter, Limits
from streamflow.services.sandbox.pool import CallResult, ExecResult, SandboxError, SandboxPool, SandboxSettings
from streamflow.services.sandbox.service import SandboxClient

__all__ = [
    "Apptainer",
    "Bubblewrap",
    "CallResult",
    "ExecResult",
    "Interpreter",
    "Limits",
    "SandboxClient",
    "SandboxError",
    "SandboxPool",
    "SandboxSettings",
]
