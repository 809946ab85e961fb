"""streamflow: row-level, peer-to-peer dataflow for multi-agent synthetic-data pipelines on Ray.

Build a ``Flow`` of ``Operator`` steps, then ``streamflow.run(flow_or_file, overrides)``
or ``python -m streamflow.run pipelines/natural_reasoning.py key=value ...``.
"""

from typing import TYPE_CHECKING

from streamflow.errors import ConfigError, FlowError, RowError, RunError, SetupError, StreamflowError
from streamflow.flow import END, Flow
from streamflow.message import Drop, Message, State
from streamflow.operator import Context, Operator

if TYPE_CHECKING:
    from streamflow.result import RunResult


def __getattr__(name: str) -> object:
    # ``streamflow.run`` is both the CLI module (``python -m streamflow.run``) and the
    # function ``streamflow.run(pipeline, overrides)``: the module is callable. Importing
    # it lazily keeps ``import streamflow`` light and ``python -m`` free of warnings.
    if name == "run":
        import streamflow.run as module

        return module
    if name == "RunResult":  # it pulls in pyarrow and the LLM client, which a sink or a registry actor never needs
        from streamflow.result import RunResult

        return RunResult
    msg = f"module 'streamflow' has no attribute {name!r}"
    raise AttributeError(msg)


__all__ = [
    "END",
    "ConfigError",
    "Context",
    "Drop",
    "Flow",
    "FlowError",
    "Message",
    "Operator",
    "RowError",
    "RunError",
    "RunResult",
    "SetupError",
    "State",
    "StreamflowError",
    "run",
]
