"""What user code implements: an ``Operator`` turns one row into its next version.

Operators never see Ray, transport or batching; the runtime gives them one row and a
``Context`` (services, a per-row random generator, the pipeline's parameters). The same
operator therefore runs unchanged in row mode, in batch mode and in ``streamflow.testing``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from streamflow.errors import SetupError
from streamflow.message import Drop, Message

if TYPE_CHECKING:
    from streamflow.services.llm import StepLLM
    from streamflow.services.sandbox import SandboxClient

__all__ = ["Context", "FunctionOperator", "Operator", "StepResult"]

StepResult = Message | list[Message] | Drop


class Context:
    """Everything a step may use besides the row: services, parameters and randomness.

    ``rng`` is seeded from the run seed, the row and the step, so a rerun (row or batch
    mode alike) draws the same numbers for the same row.
    """

    __slots__ = ("_llm", "_rng", "_row_llm", "_sandbox", "log", "params", "replica", "seed", "step")

    def __init__(
        self,
        *,
        step: str,
        llm: StepLLM | None = None,
        params: Any = None,
        replica: int = 0,
        seed: int = 0,
        sandbox: SandboxClient | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.step = step
        self._llm = llm
        self._row_llm: StepLLM | None = None
        self._sandbox = sandbox
        self.params = params
        self.replica = replica
        self.seed = seed
        self.log = log or logging.getLogger(f"streamflow.step.{step}")
        self._rng: random.Random | None = None

    @property
    def llm(self) -> StepLLM:
        """The LLM service, booking usage under this step; its response cache replays only this row's own calls."""
        if self._row_llm is None:
            if self._llm is None:
                msg = (
                    f"step {self.step!r} uses ctx.llm but no LLM service is configured "
                    "(in tests: run_local(..., llm=...))"
                )
                raise SetupError(msg)
            for_row = getattr(self._llm, "for_row", None)
            self._row_llm = for_row(self.seed) if for_row is not None else self._llm
        return self._row_llm

    @property
    def sandbox(self) -> SandboxClient:
        """The sandbox service (isolated tool execution); only for operators with ``uses_sandbox = True``."""
        if self._sandbox is None:
            msg = (
                f"step {self.step!r} uses ctx.sandbox but no sandbox service is running; "
                "set uses_sandbox = True on its Operator class"
            )
            raise SetupError(msg)
        return self._sandbox

    @property
    def rng(self) -> random.Random:
        """A random generator private to this row and step."""
        if self._rng is None:
            self._rng = random.Random(self.seed)
        return self._rng

    def for_row(self, seed: int) -> Context:
        """A copy bound to one row's seed (cheap: the rng is created on first use)."""
        return Context(
            step=self.step,
            llm=self._llm,
            params=self.params,
            replica=self.replica,
            seed=seed,
            sandbox=self._sandbox,
            log=self.log,
        )


class Operator:
    """Base class of a step. Override ``__call__``; ``setup``/``close`` are optional.

    ``fields`` declares the columns the step adds, as Python types (``int``, ``str``,
    ``list[str]``, a ``msgspec.Struct`` for nested results...). They become the Arrow
    types of the output, so a value of the wrong type is caught and reported on its row.

    >>> class Shout(Operator):
    ...     fields = {"loud": str}
    ...     async def __call__(self, row, ctx):
    ...         return row.with_fields(loud=row["text"].upper())
    """

    fields: Mapping[str, Any] = {}
    uses_sandbox: bool = False
    """True if the step runs commands in sandboxes (``ctx.sandbox``): the run then starts the sandbox pools."""

    async def setup(self, ctx: Context) -> None:
        """Prepare expensive state once per replica (load a model, open a pool)."""

    async def __call__(self, row: Message, ctx: Context) -> StepResult:
        raise NotImplementedError(f"{type(self).__name__} must implement async __call__(row, ctx)")

    async def close(self) -> None:
        """Release what ``setup`` acquired."""


class FunctionOperator(Operator):
    """Wraps a plain ``async def step(row, ctx)`` so small steps need no class."""

    def __init__(
        self, fn: Callable[[Message, Context], Awaitable[StepResult]], fields: Mapping[str, Any] | None = None
    ):
        self.fn = fn
        self.fields = dict(fields or {})

    async def __call__(self, row: Message, ctx: Context) -> StepResult:
        return await self.fn(row, ctx)

    def __repr__(self) -> str:
        code = getattr(self.fn, "__code__", None)
        where = f" at {code.co_filename}:{code.co_firstlineno}" if code else ""
        return f"FunctionOperator({getattr(self.fn, '__qualname__', self.fn)!r}{where})"
