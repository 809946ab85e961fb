"""Agents that take turns in one conversation, kept in the row's orchestrator state.

Each ``Speaker`` sees the conversation from its own side: its earlier turns as ``assistant``
messages, everyone else's as ``user`` messages (consecutive ones merged, since many chat
templates insist that roles alternate), after its own system prompt and the row's opening
message. Its reply is appended to ``row.state.history`` and ``row.state.turn`` counts the turns,
so routers can end the loop and a later step can write the dialogue out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from operators.llm import Prompt
from streamflow import Context, Message, Operator

__all__ = ["Speaker", "conversation_for"]


class Speaker(Operator):
    """One agent of a dialogue: renders the conversation for ``role``, asks the LLM, records the turn.

    ``parse(reply)`` pulls what the agent committed to (an answer letter, a tool call...) out of
    the reply; it is stored with the turn as ``answer`` (None when it finds nothing).
    """

    def __init__(
        self,
        role: str,
        *,
        system: Prompt,
        opening: Prompt,
        parse: Callable[[str], Any] = lambda _text: None,
        model: str | None = None,
        max_tokens: int = 512,
        temperature: float = 0.7,
    ) -> None:
        self.role = role
        self.system = system
        self.opening = opening
        self.parse = parse
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature

    async def __call__(self, row: Message, ctx: Context) -> Message:
        messages = conversation_for(self.role, self.system.text(row), self.opening.text(row), row.state.history)
        reply = await ctx.llm.chat(
            messages, model=self.model, max_tokens=self.max_tokens, temperature=self.temperature, seed=ctx.seed
        )
        turn = {"role": self.role, "content": reply.text, "answer": self.parse(reply.text)}
        return row.with_state(history=[*row.state.history, turn], turn=row.state.turn + 1)


def conversation_for(role: str, system: str, opening: str, history: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Chat messages as ``role`` sees the dialogue: system, opening, then the turns, roles alternating."""
    messages = [{"role": "system", "content": system}, {"role": "user", "content": opening}]
    for turn in history:
        speaker = "assistant" if turn["role"] == role else "user"
        if messages[-1]["role"] == speaker:
            messages[-1] = {"role": speaker, "content": f"{messages[-1]['content']}\n\n{turn['content']}"}
        else:
            messages.append({"role": speaker, "content": turn["content"]})
    return messages
