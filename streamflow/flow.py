"""The workflow graph: named steps, static edges and conditional routes. No Ray here.

A pipeline file builds a ``Flow`` the way one draws the diagram::

    flow = Flow("qa", requires=["text"])
    flow.step("draft", Draft()).step("critique", Critique())
    flow.route("critique", lambda row: "draft" if row["score"] < 3 else END)

Steps run in the order they are declared unless an ``edge`` or ``route`` says otherwise;
the last step leads to ``END`` (the sink). Routes may point backwards, which gives loops
for multi-turn dialogues. Mistakes in the graph fail while building, with the fix named.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from streamflow.errors import FlowError, RowError
from streamflow.message import Message
from streamflow.operator import Context, FunctionOperator, Operator, StepResult

__all__ = ["END", "Flow", "Router", "Step"]

END = "END"
"""Route target meaning "this row is finished": it goes to the sink with status ``ok``."""

Router = Callable[[Message], str]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class Step:
    """One node: an operator and how many copies of it run.

    ``replicas`` is the number of actors hosting the operator; ``concurrency`` bounds the
    rows one replica works on at once (``None``: bounded only by ``max_inflight``);
    ``num_cpus`` is what each replica reserves from Ray (0 for I/O-bound steps); ``fuse=False``
    gives the step actors of its own even where its neighbours ask for the same resources.
    """

    name: str
    operator: Operator
    replicas: int = 1
    concurrency: int | None = None
    num_cpus: float = 0.0
    fuse: bool = True


class Flow:
    """A directed graph of steps that every row walks from the first step to ``END``."""

    def __init__(self, name: str, *, requires: Iterable[str] = (), max_hops: int = 1000) -> None:
        _check_name("Flow", name)
        self.name = name
        self.requires = tuple(requires)
        self.max_hops = max_hops
        self._steps: dict[str, Step] = {}
        self._edges: dict[str, str] = {}
        self._routes: dict[str, Router] = {}
        self._following: dict[str, str] = {}
        """Each step's successor in declaration order (``_default_next``), kept as steps are added."""

    # -- building ---------------------------------------------------------------------

    def step(
        self,
        name: str,
        operator: Operator | Callable[[Message, Context], Awaitable[StepResult]],
        *,
        replicas: int = 1,
        concurrency: int | None = None,
        num_cpus: float = 0.0,
        fuse: bool = True,
    ) -> Flow:
        """Add a step; returns the flow so steps can be chained in workflow order."""
        _check_name(f"Flow {self.name!r}: step", name)
        if name in self._steps:
            msg = f"Flow {self.name!r}: step {name!r} is declared twice; give each step its own name."
            raise FlowError(msg)
        if not isinstance(operator, Operator):
            if not (inspect.iscoroutinefunction(operator) or inspect.iscoroutinefunction(type(operator).__call__)):
                msg = (
                    f"Flow {self.name!r}: step {name!r} got {operator!r}; pass an Operator instance "
                    "or an `async def step(row, ctx)` function."
                )
                raise FlowError(msg)
            operator = FunctionOperator(operator)
        if replicas < 1:
            msg = f"Flow {self.name!r}: step {name!r} has replicas={replicas}; use 1 or more."
            raise FlowError(msg)
        if concurrency is not None and concurrency < 1:
            msg = f"Flow {self.name!r}: step {name!r} has concurrency={concurrency}; use 1 or more, or None."
            raise FlowError(msg)
        self._steps[name] = Step(name, operator, replicas, concurrency, num_cpus, fuse)
        return self

    def edge(self, after: str, to: str) -> Flow:
        """Send every row leaving ``after`` to ``to`` (a step name or ``END``)."""
        self._require_step(after, "edge from")
        if after in self._routes:
            msg = f"Flow {self.name!r}: step {after!r} already has a route; a step has one edge or one route."
            raise FlowError(msg)
        self._edges[after] = to
        return self

    def route(self, after: str, router: Router) -> Flow:
        """Choose the next step per row: ``router(row)`` returns a step name or ``END``."""
        self._require_step(after, "route from")
        if after in self._edges:
            msg = f"Flow {self.name!r}: step {after!r} already has an edge; a step has one edge or one route."
            raise FlowError(msg)
        if not callable(router):
            msg = f"Flow {self.name!r}: route from {after!r} needs a callable row -> step name, got {router!r}."
            raise FlowError(msg)
        self._routes[after] = router
        return self

    def validate(self) -> Flow:
        """Check the whole graph; the runtimes call this before any work starts."""
        if not self._steps:
            msg = f"Flow {self.name!r} has no steps; add one with flow.step(name, operator)."
            raise FlowError(msg)
        for after, to in self._edges.items():
            if to != END and to not in self._steps:
                msg = f"Flow {self.name!r}: edge from {after!r} goes to unknown step {to!r}; known steps: {self._known()}."
                raise FlowError(msg)
        return self

    # -- reading ----------------------------------------------------------------------

    @property
    def steps(self) -> Mapping[str, Step]:
        """Steps by name, in declaration order."""
        return self._steps

    @property
    def first(self) -> str:
        """The step every row starts at."""
        self.validate()
        return next(iter(self._steps))

    def fields(self) -> dict[str, Any]:
        """Columns the steps declare they add, name -> Python type, in step order."""
        declared: dict[str, Any] = {}
        for step in self._steps.values():
            for name, kind in step.operator.fields.items():
                if name in declared and declared[name] != kind:
                    msg = (
                        f"Flow {self.name!r}: field {name!r} is declared as {declared[name]!r} and, "
                        f"by step {step.name!r}, as {kind!r}; declare one type."
                    )
                    raise FlowError(msg)
                declared[name] = kind
        return declared

    def next_step(self, after: str, row: Message) -> str:
        """Where ``row`` goes after ``after``: a step name or ``END``.

        Raises ``RowError`` (kind ``route``) when a router returns an unknown name or
        fails, so only that row is marked as an error.
        """
        router = self._routes.get(after)
        if router is None:
            edge = self._edges.get(after)
            return edge if edge is not None else self._default_next(after)
        try:
            target = router(row)
        except Exception as exc:
            msg = f"Flow {self.name!r}: route from {after!r} raised {type(exc).__name__}: {exc}"
            raise RowError(msg, kind="route") from exc
        if target != END and target not in self._steps:
            msg = f"Flow {self.name!r}: route from {after!r} returned {target!r}; known steps: {self._known()}."
            raise RowError(msg, kind="route")
        return target

    def __repr__(self) -> str:
        return f"Flow({self.name!r}, steps=[{self._known()}])"

    # -- helpers ----------------------------------------------------------------------

    def _default_next(self, after: str) -> str:
        following = self._following
        if len(following) != len(self._steps):  # steps were added since: declaration order changed
            names = list(self._steps)
            following = self._following = dict(zip(names, [*names[1:], END], strict=True))
        return following[after]

    def _known(self) -> str:
        return ", ".join(self._steps) + (", END" if self._steps else "END")

    def _require_step(self, name: str, what: str) -> None:
        if name not in self._steps:
            msg = f"Flow {self.name!r}: {what} unknown step {name!r}; declare it with flow.step() first. Known steps: {self._known()}."
            raise FlowError(msg)


def _check_name(what: str, name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name) or name == END:
        msg = (
            f"{what} name {name!r} is not valid; use letters, digits, '_' or '-', starting with a letter, not {END!r}."
        )
        raise FlowError(msg)
