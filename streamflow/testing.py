"""Run flows in-process, without Ray, fake LLM answers, read what a run wrote: for tests and notebooks.

``run_local`` walks every row through the flow with the same step semantics as the
Ray runtime (``streamflow.execution.run_step``) and encodes each row between steps as
the transport would, so a value that could not travel between actors fails here too.

>>> from streamflow import Flow, Operator
>>> class Ask(Operator):
...     fields = {"answer": str}
...
...     async def __call__(self, row, ctx):
...         reply = await ctx.llm.chat([{"role": "user", "content": row["text"]}])
...         return row.with_fields(answer=reply.text)
>>> [row] = run_local(Flow("ask").step("ask", Ask()), [{"text": "hello"}], llm=fake_llm(lambda request: "Yes"))
>>> row.status, row["answer"]
('ok', 'Yes')
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from streamflow.execution import new_row, run_row, step_contexts, uses_sandbox
from streamflow.flow import Flow
from streamflow.message import Message
from streamflow.services.llm import LLMClient, Response
from streamflow.services.sandbox import SandboxClient, SandboxPool, SandboxSettings

if TYPE_CHECKING:
    import polars as pl

    from streamflow.result import RunResult

__all__ = ["ScriptedTransport", "fake_llm", "read_output", "run_local", "run_local_async"]


def run_local(
    flow: Flow,
    rows: Iterable[Mapping[str, Any] | Message],
    *,
    llm: LLMClient | None = None,
    params: Any = None,
    seed: int = 0,
    concurrency: int = 64,
    sandbox: SandboxSettings | None = None,
) -> list[Message]:
    """Run ``rows`` through ``flow`` in this process; returns the finished rows in input order.

    A flow with sandboxed steps gets an in-process sandbox pool (``sandbox`` settings, or the defaults).
    """
    return asyncio.run(
        run_local_async(flow, rows, llm=llm, params=params, seed=seed, concurrency=concurrency, sandbox=sandbox)
    )


async def run_local_async(
    flow: Flow,
    rows: Iterable[Mapping[str, Any] | Message],
    *,
    llm: LLMClient | None = None,
    params: Any = None,
    seed: int = 0,
    concurrency: int = 64,
    sandbox: SandboxSettings | None = None,
) -> list[Message]:
    """``run_local`` for code that already runs in an event loop."""
    flow.validate()
    pool = SandboxPool(sandbox or SandboxSettings()) if uses_sandbox(flow) else None
    if pool is not None:
        try:
            await pool.check()
        except BaseException:
            await pool.close()
            raise
    client = SandboxClient({pool.name: pool}) if pool is not None else None
    contexts = step_contexts(flow, llm, params, sandbox=client)
    for name, step in flow.steps.items():
        await step.operator.setup(contexts[name])
    limit = asyncio.Semaphore(concurrency)
    first = flow.first

    async def walk(row: Message) -> list[Message]:
        async with limit:
            return await run_row(flow, row, contexts)

    try:
        walks = [walk(_admit(row, index, first, seed)) for index, row in enumerate(rows)]
        done = await asyncio.gather(*walks)
    finally:
        for step in flow.steps.values():
            await step.operator.close()
        if llm is not None:
            await llm.close()
        if pool is not None:
            await pool.close()
    return [message for finished in done for message in finished]


def read_output(run: RunResult | str | os.PathLike[str]) -> pl.DataFrame:
    """The rows a run committed (its ``data/*.parquet``), sorted by row id so two runs compare row for row.

    ``run`` is what ``streamflow.run`` returned, or the run's directory (to read a run after a resume
    or a crash, when there is no result).
    """
    import polars as pl

    from streamflow.result import RunResult

    data_dir = run.data_dir if isinstance(run, RunResult) else os.path.join(run, "data")
    return pl.read_parquet(os.path.join(data_dir, "*.parquet")).sort("row_id")


def _admit(row: Mapping[str, Any] | Message, index: int, first: str, seed: int) -> Message:
    if isinstance(row, Message):
        return msgspec.structs.replace(row, state=msgspec.structs.replace(row.state, step=first))
    return new_row(f"0:{index}", dict(row), first, seed)


Answer = Callable[[dict[str, Any]], "str | Response"]


class ScriptedTransport:
    """A transport whose answers come from a function of the request payload.

    The function returns the reply text (wrapped as a chat or text completion with
    token counts) or a full ``Response`` to script errors (429, 500, bad bodies).
    """

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[dict[str, Any]] = []

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Response:
        payload = msgspec.json.decode(body)
        self.requests.append(payload)
        reply = self.answer(payload)
        if isinstance(reply, Response):
            return reply
        return Response(200, msgspec.json.encode(_completion(payload, reply)))

    async def get(self, url: str, headers: Mapping[str, str], timeout_s: float) -> Response:
        return Response(200, b'{"object": "list", "data": []}')

    async def close(self) -> None:
        return None


def fake_llm(answer: Answer, *, model: str = "fake", **options: Any) -> LLMClient:
    """An ``LLMClient`` answering through ``ScriptedTransport(answer)``; no server needed."""
    options.setdefault("backoff_s", 0.0)
    return LLMClient(["http://fake.invalid/v1"], model=model, transport=ScriptedTransport(answer), **options)


def _completion(payload: Mapping[str, Any], text: str) -> dict[str, Any]:
    prompt = payload.get("messages") or payload.get("prompt") or ""
    usage = {"prompt_tokens": max(1, len(str(prompt)) // 4), "completion_tokens": max(1, len(text) // 4)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    if "messages" in payload:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
        }
    else:
        choice = {"index": 0, "text": text, "finish_reason": "stop"}
    return {
        "id": "fake",
        "object": "chat.completion",
        "model": payload.get("model", ""),
        "choices": [choice],
        "usage": usage,
    }
