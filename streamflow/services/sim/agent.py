"""Tool-calling replies: a simulated assistant that picks tools and fills their arguments from the conversation.

When a request carries ``tools`` (OpenAI format), the reply is either tool calls or text:

1. After a tool result it reports back in text (what it did, or the error the tool returned, ending
   with "Is there anything else I can help you with?") when that tool was the one the request is
   about or failed; after a lookup it goes on as in 2.
2. It ranks the tools by how many words of their name and description the customer used
   ("cancel", "refund", "address") and calls the best one if it can fill its required arguments
   and has not called it with those arguments yet; otherwise the best such lookup (a tool whose
   name starts with get, find, list, look, search, show, check or read), never another action. Arguments come from the conversation: an email
   for ``email``, an identifier like ``O-5001`` for a parameter whose description shows one of that
   shape (the one whose surrounding text shares most words with the customer's), an ``enum`` value
   by the same overlap, a quoted string the customer gave for other text. A lookup it can fill comes
   before an action it cannot fill yet, so ids the customer does not know (an item's) are found first.
3. If no tool can be filled, it asks for what is missing.

``tool_error_rate`` of the calls with a choice between several candidates take the wrong one, the
mistakes that make tau2-style trajectories fail their final-state check.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from streamflow.services.sim.draws import Draws
from streamflow.services.sim.server_config import SimConfig

__all__ = ["ToolCall", "agent_reply", "render_tool_call"]

_ID = re.compile(r"\b([A-Z]{1,4})-\d+\b")
_LOOKUP = frozenset({"look", "find", "list", "get", "search", "show", "check", "read"})
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
_QUOTED = re.compile(r"\"([^\"]{3,120})\"")
_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_WORD = re.compile(r"[a-z]{3,}")
_STOP = frozenset(
    [
        "the",
        "and",
        "for",
        "you",
        "your",
        "with",
        "that",
        "this",
        "have",
        "has",
        "from",
        "are",
        "was",
        "can",
        "not",
        "but",
        "all",
        "any",
        "its",
        "our",
        "out",
        "get",
        "one",
        "may",
        "who",
        "how",
        "what",
        "when",
        "would",
        "could",
        "should",
        "will",
        "like",
        "please",
        "want",
    ]
)
_CLOSE = "Is there anything else I can help you with?"


class ToolCall(msgspec.Struct, frozen=True):
    """One call: the tool's name and its arguments as a JSON object string (the OpenAI wire form)."""

    id: str
    name: str
    arguments: str


def render_tool_call(name: str, arguments: str) -> str:
    """How an earlier tool call appears in the message text the simulator reads (and counts tokens of)."""
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def agent_reply(
    messages: Sequence[tuple[str, str]], tools: Sequence[Mapping[str, Any]], draws: Draws, config: SimConfig
) -> tuple[str | None, list[ToolCall]]:
    """The assistant's next turn: (text, []) or (None, tool calls)."""
    wanted = _stems(" ".join(text for role, text in messages if role == "user"))
    made = _calls_made(messages)
    ranked = sorted(tools, key=lambda tool: -len(_stems(_describe(tool)) & wanted))
    after_tool = bool(messages) and messages[-1][0] == "tool"
    if after_tool and (_failed(messages[-1][1]) or (made and ranked and made[-1][0] == ranked[0]["function"]["name"])):
        return _report(made[-1] if made else None, messages[-1][1]), []
    facts = _facts(messages)
    for rank, tool in enumerate(ranked):
        if rank and tool["function"]["name"].split("_", 1)[0] not in _LOOKUP:
            continue
        arguments = _fill(tool, facts, wanted, draws, config)
        if arguments is None:
            continue
        name = tool["function"]["name"]
        encoded = json.dumps(arguments, sort_keys=True)
        if (name, encoded) in made:
            continue
        return None, [ToolCall(id=f"call_{draws.integer(0, 16**12):012x}", name=name, arguments=encoded)]
    if after_tool:
        return _report(made[-1] if made else None, messages[-1][1]), []
    return _ask(ranked[0] if ranked else None), []


def _describe(tool: Mapping[str, Any]) -> str:
    function = tool.get("function", {})
    return f"{function.get('name', '').replace('_', ' ')} {function.get('description', '')}"


def _stems(text: str) -> set[str]:
    """Content words cut to 5 letters, so "cancelled" meets "cancel" and "refunded" meets "refund"."""
    return {word[:5] for word in _WORD.findall(text.lower()) if word not in _STOP}


def _calls_made(messages: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    made = []
    for role, text in messages:
        if role != "assistant":
            continue
        for raw in _CALL.findall(text):
            call = json.loads(raw)
            arguments = call.get("arguments") or "{}"
            made.append((call["name"], json.dumps(json.loads(arguments), sort_keys=True)))
    return made


class _Facts(msgspec.Struct):
    ids: list[tuple[str, str, str]]  # (prefix, id, surrounding text), latest last
    emails: list[str]
    quoted: list[str]


def _facts(messages: Sequence[tuple[str, str]]) -> _Facts:
    facts = _Facts(ids=[], emails=[], quoted=[])
    for role, text in messages:
        if role not in ("user", "tool"):
            continue
        for piece in _pieces(text) if role == "tool" else [text]:
            for match in _ID.finditer(piece):
                facts.ids.append((match.group(1), match.group(0), piece))
        facts.emails += _EMAIL.findall(text)
        if role == "user":
            facts.quoted += _QUOTED.findall(text)
    return facts


def _pieces(text: str) -> list[str]:
    """A tool result cut into its innermost JSON objects, so an id's context is its own record."""
    return re.findall(r"\{[^{}]*\}", text) or [text]


def _fill(
    tool: Mapping[str, Any], facts: _Facts, wanted: set[str], draws: Draws, config: SimConfig
) -> dict[str, Any] | None:
    schema = tool.get("function", {}).get("parameters", {})
    properties: Mapping[str, Any] = schema.get("properties", {})
    arguments: dict[str, Any] = {}
    for name in schema.get("required", list(properties)):
        spec = properties.get(name, {})
        value = _value(name, spec, facts, wanted, draws, config)
        if value is None:
            return None
        arguments[name] = value
    return arguments


def _value(name: str, spec: Mapping[str, Any], facts: _Facts, wanted: set[str], draws: Draws, config: SimConfig) -> Any:
    if spec.get("enum"):
        options = sorted(spec["enum"], key=lambda option: -len(_stems(str(option)) & wanted))
        return options[1] if len(options) > 1 and draws.chance(config.tool_error_rate) else options[0]
    if "email" in name:
        return facts.emails[-1] if facts.emails else None
    shape = _ID.search(str(spec.get("description", "")))
    if shape is not None:
        candidates: dict[str, int] = {}
        for order, (prefix, value, context) in enumerate(facts.ids):
            if prefix == shape.group(1):
                candidates[value] = len(_stems(context) & wanted) * 1000 + order
        if not candidates:
            return None
        ranked = sorted(candidates, key=lambda value: -candidates[value])
        if len(ranked) > 1 and draws.chance(config.tool_error_rate):
            return ranked[1]
        return ranked[0]
    if spec.get("type", "string") == "string" and facts.quoted:
        return facts.quoted[-1]
    return None


def _failed(result: str) -> bool:
    try:
        data = json.loads(result)
    except ValueError:
        return True
    return isinstance(data, dict) and bool(data.get("error"))


def _report(call: tuple[str, str] | None, result: str) -> str:
    what = call[0].replace("_", " ") if call else "that"
    if _failed(result):
        try:
            reason = json.loads(result)["error"]
        except (ValueError, KeyError, TypeError):
            reason = result.strip()[:200]
        return f"I'm sorry, I could not {what}: {reason}. {_CLOSE}"
    return f"Done: {what} went through. Here is what the system says: {result.strip()[:400]}. {_CLOSE}"


def _ask(tool: Mapping[str, Any] | None) -> str:
    if tool is None:
        return f"I can only help with what my tools allow. {_CLOSE}"
    schema = tool.get("function", {}).get("parameters", {})
    missing = [
        str(spec.get("description") or name)
        for name, spec in schema.get("properties", {}).items()
        if name in schema.get("required", [])
    ]
    return "To help you with that I need a few details. Could you tell me: " + "; ".join(missing) + "?"
