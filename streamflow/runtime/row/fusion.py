"""Which steps share an actor: consecutive steps with the same resources are fused.

A hop between actors costs an encode, a Ray call and a decode (about a millisecond of CPU
per batch, plus per-row bookkeeping on both sides), while most steps do far less work
than that between their LLM calls. So by default consecutive steps (in declaration order)
that ask for the same replicas and CPUs run in one actor, and a row moves from one to the
next in process. Ray Data fuses its map operators for the same reason. A step that needs
its own actors says so: other replicas or CPUs than its neighbours, or ``fuse=False``.
Rows still cross actors peer to peer between groups, and every step keeps its own
concurrency limit, counters and event-log records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from streamflow.config import OperatorConfig

__all__ = ["Group", "fuse_steps", "hosting"]


@dataclass(frozen=True)
class Group:
    """Steps hosted together: each of the ``replicas`` actors runs all of them."""

    steps: tuple[str, ...]
    replicas: int
    num_cpus: float

    @property
    def name(self) -> str:
        """The actors' name: the steps joined by ``+`` (``open+customer+agent``), or the step's own."""
        return "+".join(self.steps)


def fuse_steps(operators: Mapping[str, OperatorConfig]) -> list[Group]:
    """Groups of consecutive steps, in ``operators``' order (the flow's declaration order).

    >>> from streamflow.config import OperatorConfig as Op
    >>> [g.name for g in fuse_steps({"a": Op(), "b": Op(), "c": Op(replicas=4), "d": Op(fuse=False), "e": Op()})]
    ['a+b', 'c', 'd', 'e']
    """
    groups: list[Group] = []
    for name, op in operators.items():
        last = groups[-1] if groups else None
        if (
            last is not None
            and op.fuse
            and operators[last.steps[-1]].fuse
            and (last.replicas, last.num_cpus) == (op.replicas, op.num_cpus)
        ):
            groups[-1] = Group((*last.steps, name), last.replicas, last.num_cpus)
        else:
            groups.append(Group((name,), op.replicas, op.num_cpus))
    return groups


def hosting(group: str) -> str:
    """How messages name the actor of a group: ``step 'ask'``, or ``steps 'ask+judge'`` when fused."""
    return f"steps {group!r}" if "+" in group else f"step {group!r}"
