"""OpenAI/vLLM wire format used by the simulated server: request bodies it accepts, responses it sends.

Only the fields the simulator reads or must send are declared; unknown request fields are ignored,
as vLLM does for most sampling options.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "ChatChoice",
    "ChatChunk",
    "ChatChunkChoice",
    "ChatCompletion",
    "ChatMessage",
    "ChatRequest",
    "Completion",
    "CompletionChoice",
    "CompletionChunk",
    "CompletionRequest",
    "ContentPart",
    "Delta",
    "ErrorBody",
    "ErrorResponse",
    "FunctionCall",
    "ModelCard",
    "ModelList",
    "RequestMessage",
    "StreamOptions",
    "ToolCallRecord",
    "ToolSpec",
    "Usage",
]


# -- requests ------------------------------------------------------------------------------------


class ContentPart(msgspec.Struct):
    """One part of a multi-part message; only text parts carry prompt text."""

    type: str
    text: str | None = None


class FunctionCall(msgspec.Struct):
    """The function of a tool call: its name and its arguments as a JSON string."""

    name: str
    arguments: str = "{}"


class ToolCallRecord(msgspec.Struct):
    """A tool call, as an assistant message carries it (in requests and responses)."""

    id: str
    function: FunctionCall
    type: str = "function"


class RequestMessage(msgspec.Struct):
    """A chat message; ``content`` is a string, a list of parts, or null (assistant tool calls)."""

    role: str
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCallRecord] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        """The message's text, with the text parts of a multi-part message joined."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "\n".join(part.text or "" for part in self.content if part.type == "text")


class ToolSpec(msgspec.Struct):
    """One entry of ``tools``: a function with a JSON-schema ``parameters`` object."""

    function: dict[str, Any]
    type: str = "function"


class StreamOptions(msgspec.Struct):
    """``stream_options``: whether the last chunk reports token usage."""

    include_usage: bool = False


class ChatRequest(msgspec.Struct):
    """Body of ``POST /v1/chat/completions``."""

    model: str
    messages: list[RequestMessage]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[ToolSpec] | None = None
    tool_choice: Any = None


class CompletionRequest(msgspec.Struct):
    """Body of ``POST /v1/completions``; ``max_tokens`` defaults to 16 as in OpenAI and vLLM."""

    model: str
    prompt: str | list[str]
    max_tokens: int | None = 16
    temperature: float | None = None
    seed: int | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None


# -- responses -----------------------------------------------------------------------------------


class Usage(msgspec.Struct):
    """Token accounting of one request."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatMessage(msgspec.Struct):
    """The assistant message of a chat choice: text, or null content and tool calls (vLLM's shape)."""

    content: str | None
    role: str = "assistant"
    tool_calls: list[ToolCallRecord] = msgspec.field(default_factory=list)


class ChatChoice(msgspec.Struct):
    """One choice of a chat completion."""

    index: int
    message: ChatMessage
    finish_reason: str
    logprobs: None = None


class ChatCompletion(msgspec.Struct):
    """Response of a non-streamed chat completion."""

    id: str
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    object: str = "chat.completion"


class CompletionChoice(msgspec.Struct):
    """One choice of a text completion."""

    index: int
    text: str
    finish_reason: str | None
    logprobs: None = None


class Completion(msgspec.Struct):
    """Response of a non-streamed text completion."""

    id: str
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    object: str = "text_completion"


class Delta(msgspec.Struct, omit_defaults=True):
    """Incremental message content of a streamed chat chunk."""

    role: str | None = None
    content: str | None = None


class ChatChunkChoice(msgspec.Struct):
    """One choice of a streamed chat chunk."""

    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: None = None


class ChatChunk(msgspec.Struct):
    """One SSE event of a streamed chat completion; the usage-only last chunk has no choices."""

    id: str
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    object: str = "chat.completion.chunk"


class CompletionChunk(msgspec.Struct):
    """One SSE event of a streamed text completion."""

    id: str
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    object: str = "text_completion"


class ErrorBody(msgspec.Struct):
    """What went wrong, in the OpenAI error shape."""

    message: str
    type: str
    code: int
    param: str | None = None


class ErrorResponse(msgspec.Struct):
    """Error envelope: ``{"error": {...}}``."""

    error: ErrorBody


class ModelCard(msgspec.Struct):
    """One served model, as listed by ``GET /v1/models``."""

    id: str
    created: int
    max_model_len: int
    owned_by: str = "streamflow-sim"
    object: str = "model"


class ModelList(msgspec.Struct):
    """Response of ``GET /v1/models``."""

    data: list[ModelCard]
    object: str = "list"
