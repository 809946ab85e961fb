"""How one step treats one row: call the operator, classify the outcome, address the result.

Row mode, batch mode and ``streamflow.testing`` all call ``run_step``, so a row gets the
same status, error text and next step whichever runtime carries it. Batch mode and
``streamflow.testing`` carry a row's whole path in one process with ``run_row``.
"""

from __future__ import annotations

import asyncio
import time
import traceback
import zlib
from collections.abc import Mapping
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import msgspec

from streamflow.errors import RowError, error_kind
from streamflow.flow import END, Flow
from streamflow.message import Drop, Message, State
from streamflow.operator import Context

if TYPE_CHECKING:
    from streamflow.services.llm import LLMClient
    from streamflow.services.sandbox import SandboxClient

__all__ = [
    "fail",
    "finish",
    "new_row",
    "row_seed",
    "run_row",
    "run_step",
    "settle",
    "step_contexts",
    "step_seed",
    "uses_sandbox",
]

MAX_ERROR_CHARS = 8000


async def run_step(flow: Flow, step: str, row: Message, ctx: Context) -> list[Message]:
    """Run ``step`` on ``row``; return the rows that leave it.

    Each returned row has ``state.step`` set to its next step, or to ``END`` with its
    final status (``ok``, ``filtered:<reason>`` or ``error:<kind>``). Exceptions never
    escape: they become the row's error.
    """
    operator = flow.steps[step].operator
    try:
        result = await operator(row, ctx)
        if isinstance(result, Drop):
            dropped = settle(row, row.with_fields(**result.fields)) if result.fields else row
            return [finish(dropped, f"filtered:{result.reason}")]
        if isinstance(result, Message):
            return [_address(flow, step, settle(row, result))]
        if isinstance(result, list) and all(isinstance(item, Message) for item in result):
            if not result:
                return [finish(row, "filtered:no_output")]
            return [_address(flow, step, child) for child in _fan_out(row, [settle(row, item) for item in result])]
    except Exception as exc:
        return [fail(row, exc)]
    msg = (
        f"Operator {step!r} returned {type(result).__name__} for row {row.id!r}; "
        "return the row, a list of rows or Drop(reason)."
    )
    return [fail(row, RowError(msg, kind="operator_contract"))]


def settle(before: Message, after: Message) -> Message:
    """``after`` with the values a step changed passed through the wire encoding once.

    The next step then sees exactly what it would see after a hop between actors (a tuple
    becomes a list, a ``msgspec.Struct`` a dict), whether it runs in this process or another,
    in row mode, batch mode or ``streamflow.testing``. Only changed values are encoded, and of
    a conversation history only the turns added: a value that crosses no process boundary is
    never encoded whole. A value the wire cannot carry fails here, on its own row.
    """
    fields, state = after.fields, after.state
    if fields is not before.fields:
        old = before.fields
        changed = {name: value for name, value in fields.items() if old.get(name, _ABSENT) is not value}
        if changed:
            fields = {**fields, **_wire(changed)}
    if state is not before.state:
        history, old_history = state.history, before.state.history
        if history is not old_history:
            kept = 0
            for new_turn, old_turn in zip(history, old_history, strict=False):
                if new_turn is not old_turn:
                    break
                kept += 1
            if kept < len(history):
                history = [*history[:kept], *_wire(history[kept:])]
        counters = state.counters if state.counters is before.state.counters else _wire(state.counters)
        if history is not state.history or counters is not state.counters:
            state = msgspec.structs.replace(state, history=history, counters=counters)
    if fields is after.fields and state is after.state:
        return after
    return msgspec.structs.replace(after, fields=fields, state=state)


_ABSENT = object()
_wire_encode = msgspec.msgpack.Encoder().encode
_wire_decode = msgspec.msgpack.Decoder().decode


def _wire(value: Any) -> Any:
    """``value`` as it comes out of the transport's msgpack encoding."""
    return _wire_decode(_wire_encode(value))


async def run_row(flow: Flow, row: Message, contexts: Mapping[str, Context]) -> list[Message]:
    """Carry ``row`` from its current step to ``END``; returns its finished rows, sorted by id.

    ``run_step`` settles what each step changes (``settle``), so each step and the output see
    exactly the values they would see in row mode. The pieces of a fan-out go on
    concurrently, as they would on separate actors.
    """
    current = row
    while current.state.step != END:
        step = current.state.step
        ctx = contexts[step].for_row(step_seed(current, step))
        results = await run_step(flow, step, current, ctx)
        if len(results) != 1:
            pieces = await asyncio.gather(*(run_row(flow, piece, contexts) for piece in results))
            return sorted((done for finished in pieces for done in finished), key=lambda m: m.id)
        current = results[0]
    return [current]


def step_contexts(
    flow: Flow, llm: LLMClient | None = None, params: Any = None, replica: int = 0, sandbox: SandboxClient | None = None
) -> dict[str, Context]:
    """One ``Context`` per step of ``flow``, booking LLM usage under the step's name."""
    return {
        name: Context(
            step=name,
            llm=llm.for_step(name) if llm is not None else None,
            params=params,
            replica=replica,
            sandbox=sandbox,
        )
        for name in flow.steps
    }


def uses_sandbox(flow: Flow) -> bool:
    """Whether any step of ``flow`` runs commands in sandboxes, so the run must start the pools."""
    return any(step.operator.uses_sandbox for step in flow.steps.values())


def new_row(row_id: str, fields: dict[str, Any], first: str, run_seed: int) -> Message:
    """An input row as it is admitted: at ``first``, with its row seed."""
    return Message(
        id=row_id, fields=fields, state=State(step=first, seed=row_seed(run_seed, row_id)), admitted_at=time.time()
    )


def finish(row: Message, status: str, error: str | None = None) -> Message:
    """The row, finished with ``status``: it goes to the sink next."""
    return msgspec.structs.replace(row, status=status, error=error, state=msgspec.structs.replace(row.state, step=END))


def fail(row: Message, exc: BaseException) -> Message:
    """The row, finished as ``error:<kind>`` with the message and traceback as its error text."""
    text = "".join(traceback.format_exception(exc))
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS // 2] + "\n...\n" + text[-MAX_ERROR_CHARS // 2 :]
    return finish(row, f"error:{error_kind(exc)}", f"{type(exc).__name__}: {exc}\n{text}")


def _address(flow: Flow, step: str, row: Message) -> Message:
    hops = row.state.hops + 1
    if hops > flow.max_hops:
        msg = f"row {row.id!r} made {hops} hops (max_hops={flow.max_hops}); a route probably loops forever."
        return fail(row, RowError(msg, kind="too_many_hops"))
    try:
        target = flow.next_step(step, row)
    except RowError as exc:
        return fail(row, exc)
    if target == END:
        return finish(row.with_state(hops=hops), row.status)
    return row.with_state(step=target, hops=hops)


def _fan_out(parent: Message, children: list[Message]) -> list[Message]:
    """Give each child its own id and an equal share of the parent's input row."""
    share = Fraction(*parent.share) / len(children)
    pair = (share.numerator, share.denominator)
    root = parent.root_id
    return [
        msgspec.structs.replace(child, id=f"{parent.id}/{index}", root=root, share=pair)
        for index, child in enumerate(children)
    ]


def row_seed(run_seed: int, row_id: str) -> int:
    """The seed of one input row: stable across runs, modes and partitionings."""
    return zlib.crc32(row_id.encode(), run_seed & 0xFFFFFFFF)


def step_seed(row: Message, step: str) -> int:
    """The seed a step's ``ctx.rng`` starts from for this row at this point of its path."""
    return zlib.crc32(f"{step}#{row.state.hops}".encode(), row.state.seed & 0xFFFFFFFF)
