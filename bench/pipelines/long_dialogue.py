"""A two-agent dialogue whose history grows every turn: the offloading benchmark's multi-turn load.

    documents ──► user ──► assistant ──► (turn < turns) ──► user ...
                                     └──► Parquet

``history`` carries the whole conversation (the document first), so the row grows with
every turn and every hop ships it: the case object-store offloading is meant for.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from streamflow import END, Context, Flow, Message, Operator

DEFAULTS = {
    "input": {"path": str(Path(__file__).parents[2] / "pipelines" / "data" / "natural_reasoning_sample.parquet")}
}


class Params(msgspec.Struct, forbid_unknown_fields=True):
    turns: int = 4
    doc_chars: int = 3000
    max_tokens: int = 160


class Turn(msgspec.Struct):
    role: str
    content: str


class Speaker(Operator):
    """Says the next line of the dialogue as ``role``, from the whole history so far."""

    fields = {"history": list[Turn]}

    def __init__(self, role: str, params: Params) -> None:
        self.role = role
        self.params = params

    async def __call__(self, row: Message, ctx: Context) -> Message:
        history = row.get("history") or [{"role": "user", "content": row["text"][: self.params.doc_chars]}]
        asked = [
            {"role": "user" if turn["role"] != self.role else "assistant", "content": turn["content"]}
            for turn in history
        ]
        reply = await ctx.llm.chat(asked, max_tokens=self.params.max_tokens)
        turn = row.state.turn + (self.role == "assistant")
        return row.with_fields(history=[*history, {"role": self.role, "content": reply.text}]).with_state(turn=turn)


def build(params: Params) -> Flow:
    flow = Flow("long_dialogue", requires=["text"])
    flow.step("user", Speaker("user", params))
    flow.step("assistant", Speaker("assistant", params))
    flow.route("assistant", lambda row: "user" if row.state.turn < params.turns else END)
    return flow
