"""Reusable LLM steps: a prompt template, a label classifier and a JSON extractor.

They cope with what real models answer: chatter around the JSON, code fences, a label
with punctuation. An answer that cannot be used filters the row with a reason and keeps
the raw text in ``llm_raw``; a failed call (timeout, refused request) is a row error.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from string import Template
from typing import Any

import msgspec

from operators.parsing import extract_json, first_word
from streamflow import Context, Drop, Message, Operator, RowError

__all__ = ["ChatJSON", "Classify", "Prompt"]

RAW_FIELD = "llm_raw"


class Prompt:
    """A chat prompt with ``$field`` placeholders filled from the row.

    ``$`` placeholders leave JSON braces alone, so templates can show the model the JSON
    it must return. Long values are cut to ``max_field_chars`` so a 5 MB document cannot
    overflow the model's context.

    >>> Prompt("Is this English? $text").render(Message(id="1", fields={"text": "hi"}))
    [{'role': 'user', 'content': 'Is this English? hi'}]
    """

    def __init__(self, user: str, *, system: str | None = None, max_field_chars: int = 6000) -> None:
        self.user = Template(user)
        self.system = Template(system) if system else None
        self.max_field_chars = max_field_chars

    def render(self, row: Message) -> list[dict[str, str]]:
        """The chat messages for ``row``: the system message (if any), then the user message."""
        values = _PromptValues(row, self.max_field_chars)
        messages = [{"role": "user", "content": self.user.substitute(values)}]
        if self.system is not None:
            messages.insert(0, {"role": "system", "content": self.system.substitute(values)})
        return messages

    def text(self, row: Message) -> str:
        """The user message alone, for callers that place it in a conversation themselves."""
        return self.user.substitute(_PromptValues(row, self.max_field_chars))


class _PromptValues(dict[str, str]):
    """Row fields as text for ``Template.substitute``; a missing field is a row error."""

    def __init__(self, row: Message, max_chars: int) -> None:
        super().__init__()
        self.row = row
        self.max_chars = max_chars

    def __missing__(self, name: str) -> str:
        if name not in self.row:
            msg = f"prompt uses ${name} but row {self.row.id!r} has no field {name!r}"
            raise RowError(msg, kind="bad_input")
        value = self.row[name]
        if value is None:
            msg = f"prompt uses ${name} but it is null in row {self.row.id!r}"
            raise RowError(msg, kind="bad_input")
        text = value if isinstance(value, str) else str(value)
        return text[: self.max_chars]


class Classify(Operator):
    """Ask for a one-word label; keep the row if the label is in ``keep``, else drop it.

    The label (lower-cased first word of the answer) is stored in ``into``.
    """

    def __init__(
        self,
        prompt: Prompt,
        *,
        into: str,
        keep: Collection[str],
        reason: str,
        max_tokens: int = 8,
        model: str | None = None,
    ) -> None:
        self.prompt = prompt
        self.into = into
        self.keep = {label.lower() for label in keep}
        self.reason = reason
        self.max_tokens = max_tokens
        self.model = model
        self.fields = {into: str, RAW_FIELD: str}

    async def __call__(self, row: Message, ctx: Context) -> Message | Drop:
        reply = await ctx.llm.chat(
            self.prompt.render(row), model=self.model, max_tokens=self.max_tokens, temperature=0.0, seed=ctx.seed
        )
        label = first_word(reply.text)
        if label not in self.keep:
            return Drop(self.reason, **{self.into: label, RAW_FIELD: reply.text})
        return row.with_fields(**{self.into: label})


class ChatJSON(Operator):
    """Ask for a JSON object, check it against ``schema`` and add it to the row.

    With ``into`` the object is stored as one struct column; without, its fields become
    columns. ``check(value)`` may return a filter reason for answers that parse but are
    not good enough (a zero score, a missing final answer).
    """

    def __init__(
        self,
        prompt: Prompt,
        schema: type[msgspec.Struct],
        *,
        into: str | None = None,
        check: Callable[[Any], str | None] | None = None,
        reason: str = "no_json",
        max_tokens: int = 512,
        temperature: float = 0.0,
        model: str | None = None,
    ) -> None:
        self.prompt = prompt
        self.schema = schema
        self.into = into
        self.check = check
        self.reason = reason
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.model = model
        declared: dict[str, Any] = (
            {into: schema} if into else dict(zip(schema.__struct_fields__, _field_types(schema), strict=False))
        )
        self.fields = {**declared, RAW_FIELD: str}

    async def __call__(self, row: Message, ctx: Context) -> Message | Drop:
        reply = await ctx.llm.chat(
            self.prompt.render(row),
            model=self.model,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            seed=ctx.seed,
        )
        data = extract_json(reply.text)
        if data is None:
            return Drop(self.reason, **{RAW_FIELD: reply.text})
        try:
            value = msgspec.convert(data, self.schema, strict=False)
        except msgspec.ValidationError:
            return Drop(self.reason, **{RAW_FIELD: reply.text})
        plain = msgspec.to_builtins(value)
        found = {self.into: plain} if self.into else plain
        problem = self.check(value) if self.check is not None else None
        if problem is not None:
            return Drop(problem, **found, **{RAW_FIELD: reply.text})
        return row.with_fields(**found)


def _field_types(schema: type[msgspec.Struct]) -> list[Any]:
    return [field.type for field in msgspec.structs.fields(schema)]
