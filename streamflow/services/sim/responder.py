"""Deterministic, prompt-aware reply content for the simulated server.

In order: tool calls or a report when the request offers ``tools`` (``agent``); a role-played customer's
message when the system message explains ``###STOP###`` (``customer``); a bare "Yes"/"No" when the last user message says "Answer Yes or No"; a dialogue turn ending in
``Answer: (L)`` when the conversation lists lettered options and asks for that line (``choices``); a filled
JSON object when the prompt holds a JSON template of ``<...>`` placeholders; otherwise free text about the
prompt.
The same (server seed, model, messages, request seed, temperature) always gives the same reply; the
temperature only perturbs that key, it does not change how random the reply looks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from streamflow.services.sim.agent import ToolCall, agent_reply, render_tool_call
from streamflow.services.sim.choices import asks_for_choice, choice_reply
from streamflow.services.sim.customer import customer_reply, plays_customer
from streamflow.services.sim.draws import Draws, stable_key
from streamflow.services.sim.filler import Vocabulary
from streamflow.services.sim.server_config import SimConfig
from streamflow.services.sim.template import fill_template, find_template
from streamflow.services.sim.tokens import BYTES_PER_TOKEN, count_tokens, truncate_tokens
from streamflow.services.sim.yesno import asks_yes_or_no, yes_probability

__all__ = ["Reply", "Responder"]

_PLACEHOLDER = re.compile(r"<[^<>]*>")  # template placeholders are instructions, not topic words
_FREE_TEXT_MEDIAN_TOKENS = 200.0
_FREE_TEXT_SIGMA = 0.8
_MAX_FREE_TEXT_TOKENS = 8192


class Reply(msgspec.Struct, frozen=True):
    """Reply text after the ``max_tokens`` cut, why generation stopped, and its token count (tool calls included)."""

    text: str
    finish_reason: str
    completion_tokens: int
    tool_calls: tuple[ToolCall, ...] = ()


class Responder:
    """Writes replies for one server configuration; stateless between calls."""

    def __init__(self, config: SimConfig) -> None:
        self._config = config

    def reply(
        self,
        model: str,
        messages: Sequence[tuple[str, str]],
        *,
        max_tokens: int,
        seed: int | None = None,
        temperature: float | None = None,
        tools: Sequence[Mapping[str, Any]] = (),
    ) -> Reply:
        """Reply to (role, text) ``messages``; a reply over ``max_tokens`` is cut, with finish_reason "length"."""
        key = stable_key(self._config.seed, model, tuple(messages), seed, temperature, repr(tools))
        last_user = next((text for role, text in reversed(messages) if role == "user"), "")
        if tools:
            text, calls = agent_reply(messages, tools, Draws(key, "agent"), self._config)
            if calls:
                tokens = sum(count_tokens(render_tool_call(call.name, call.arguments)) for call in calls)
                return Reply(text="", finish_reason="tool_calls", completion_tokens=tokens, tool_calls=tuple(calls))
            return _cut(text or "", max_tokens)
        if plays_customer(messages):
            return _cut(customer_reply(messages, Draws(key, "customer")), max_tokens)
        if asks_yes_or_no(last_user):
            text = "Yes" if Draws(key, "yes-no").chance(yes_probability(last_user, self._config.yes_rate)) else "No"
            return _cut(text, max_tokens)
        if asks_for_choice(messages):
            return _cut(choice_reply(messages, model, key, self._config, max_tokens), max_tokens)
        vocabulary = Vocabulary(_PLACEHOLDER.sub(" ", "\n".join(text for _, text in reversed(messages))))
        for _, content in reversed(messages):
            if (fields := find_template(content)) is not None:
                return _cut(fill_template(fields, vocabulary, key, self._config, max_tokens), max_tokens)
        return _cut(_free_text(vocabulary, Draws(key, "free-text"), max_tokens), max_tokens)


def _free_text(vocabulary: Vocabulary, draws: Draws, max_tokens: int) -> str:
    """A heavy-tailed (lognormal) amount of prose in paragraphs, opening with the prompt's topic."""
    tokens = min(
        max(1, round(draws.lognormal(_FREE_TEXT_MEDIAN_TOKENS, _FREE_TEXT_SIGMA))),
        _MAX_FREE_TEXT_TOKENS,
        max_tokens + 1,
    )
    paragraphs = [f"Regarding {vocabulary.topic()}: {vocabulary.sentence(draws)}"]
    size = len(paragraphs[0])
    while size < tokens * BYTES_PER_TOKEN:
        paragraph = vocabulary.text(draws, draws.integer(40, 120))
        paragraphs.append(paragraph)
        size += len(paragraph) + 2
    return "\n\n".join(paragraphs)


def _cut(text: str, max_tokens: int) -> Reply:
    if count_tokens(text) <= max_tokens:
        return Reply(text=text, finish_reason="stop", completion_tokens=count_tokens(text))
    cut = truncate_tokens(text, max_tokens)
    return Reply(text=cut, finish_reason="length", completion_tokens=count_tokens(cut))
