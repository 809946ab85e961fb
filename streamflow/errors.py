"""Exceptions raised by streamflow.

    StreamflowError
     ├── ConfigError        a bad knob, path or input schema; reported in one line before work starts
     ├── FlowError          a Flow built wrong (unknown step, duplicate name, bad edge)
     ├── SetupError         an operator's ``setup()`` failed; the run aborts instead of hanging
     ├── RunError           the run itself failed (an actor died, the ledger does not add up)
     │    ├── Interrupted   a signal (SIGTERM: scancel, a time limit) stopped it; resume finishes it
     │    ├── OverErrorBudget  most recent rows failed, so it stopped early; resume with retry_errors finishes it
     │    └── ClaimLost     another run took over its directory, so it stopped
     └── RowError           one row failed; it is written with ``status = error:<kind>``
          └── SchemaError   a generated value does not match the declared column type

Service errors (``streamflow.services.llm.LLMError``) are ``RowError`` subclasses too, so a
failed LLM call marks only its row.
"""

from __future__ import annotations

import re
import signal

__all__ = [
    "ClaimLost",
    "ConfigError",
    "FlowError",
    "Interrupted",
    "OverErrorBudget",
    "RowError",
    "RunError",
    "SchemaError",
    "SetupError",
    "StreamflowError",
    "error_kind",
    "raised_inside",
]


class StreamflowError(Exception):
    """Base class of every error streamflow raises on purpose."""


class ConfigError(StreamflowError):
    """A configuration value, input path or input schema is unusable."""


class FlowError(StreamflowError):
    """A Flow was assembled wrong; raised while building, never mid-run."""


class SetupError(StreamflowError):
    """An operator could not start; the run stops with this message."""


class RunError(StreamflowError):
    """The run could not finish correctly (dead actor, broken ledger)."""


class Interrupted(RunError):
    """A signal stopped the run; the rows committed so far stay, and a resume runs only the others."""

    def __init__(self, signum: int, run_dir: str) -> None:
        self.signum = signum
        self.run_dir = run_dir
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name}; committed rows are kept, continue with resume={run_dir}")


class OverErrorBudget(RunError):
    """Errors dominated the last finished rows (``errors.*``): the run stopped early and kept what it committed."""

    def __init__(self, what: str, run_dir: str) -> None:
        self.run_dir = run_dir
        super().__init__(
            f"stopped early: {what}; committed rows are kept; fix the cause, "
            f"then continue with resume={run_dir} retry_errors=true"
        )


class ClaimLost(RunError):
    """Another run claimed this run's directory (it was resumed while this one ran): this one commits nothing more."""


class RowError(StreamflowError):
    """One row failed; ``kind`` becomes its status ``error:<kind>``.

    Raise it from an operator to choose the kind; any other exception gets a kind
    derived from its class name (``ValueError`` -> ``value_error``).
    """

    kind: str = "row"

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class SchemaError(RowError):
    """A value an operator produced does not fit the output schema."""

    kind = "schema"


_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def error_kind(exc: BaseException) -> str:
    """The ``error:<kind>`` suffix for an exception: its ``kind`` or its snake-cased class name."""
    if isinstance(exc, RowError):
        return exc.kind
    return _CAMEL_BOUNDARY.sub("_", type(exc).__name__).lower()


def raised_inside(exc: BaseException) -> BaseException:
    """The exception an actor or a task raised, taken out of the Ray errors that carry it.

    Ray wraps what an actor raises in a ``RayTaskError`` whose ``cause`` is that exception,
    unpickled with its class and fields (a ``RowError``'s ``kind`` included), and Ray Data wraps
    that again. Re-raise the result (``raise raised_inside(exc) from None``) so a user reads our
    one-line error, not Ray's wrapper. Returns ``exc`` itself when it carries nothing.
    """
    current = exc
    for _ in range(_MAX_WRAPPERS):
        cause = getattr(current, "cause", None)
        if isinstance(cause, BaseException) and cause is not current:
            current = cause
        elif not isinstance(current, StreamflowError) and current.__cause__ is not None:
            current = current.__cause__
        else:
            break
    return current


_MAX_WRAPPERS = 8
