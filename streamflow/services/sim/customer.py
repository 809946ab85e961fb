"""Role-played customers: replies for a user simulator whose instructions end the chat with ``###STOP###``.

The system message holds the customer's instructions, with a line ``Your situation: ...`` and a line
``Details you know: a; b; c``. The simulated customer opens with the situation (and the details,
usually), gives the details when the agent asks a question, and ends with ``###STOP###`` once the
agent reports the request done or refused (or asks whether there is "anything else"), or after a few
turns without progress. Messages are from the customer's side: the agent's turns have role ``user``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from streamflow.services.sim.draws import Draws

__all__ = ["STOP", "customer_reply", "plays_customer"]

STOP = "###STOP###"
_SITUATION = re.compile(r"your situation:\s*(.+)", re.IGNORECASE)
_DETAILS = re.compile(r"details you know:\s*(.+)", re.IGNORECASE)
_SETTLED = re.compile(
    r"\b(done|went through|has been|cancell?ed|refunded|updated|changed|sorry|cannot|can't|could not|unable|"
    r"not possible|anything else)\b",
    re.IGNORECASE,
)
_DETAILS_AT_ONCE = 0.6
_PATIENCE = 4  # customer turns before giving up on an agent that makes no progress


def plays_customer(messages: Sequence[tuple[str, str]]) -> bool:
    """Whether the request is a user simulator's: a system message that explains ``###STOP###``."""
    return any(role == "system" and STOP in text for role, text in messages)


def customer_reply(messages: Sequence[tuple[str, str]], draws: Draws) -> str:
    """The customer's next message."""
    instructions = "\n".join(text for role, text in messages if role == "system")
    situation = _first_person(_line(_SITUATION, instructions)) or "I need help with my order."
    details = _line(_DETAILS, instructions)
    said = [text for role, text in messages if role == "assistant"]
    heard = [text for role, text in messages if role == "user"]
    if not said:
        if details and draws.chance(_DETAILS_AT_ONCE):
            return f"Hi. {situation} My details: {details}."
        return f"Hi. {situation}"
    last = heard[-1] if heard else ""
    if _SETTLED.search(last):
        return f"Thank you, that is all. {STOP}"
    if len(said) >= _PATIENCE:
        return f"This is taking too long; I will try another time. {STOP}"
    if "?" in last and details:
        return f"Sure. {details}."
    return f"{situation} {('My details: ' + details + '.') if details else ''}".strip()


def _first_person(text: str) -> str:
    """The instruction's "You want to cancel your order" as the customer says it: "I want to cancel my order"."""
    for pattern, replacement in ((r"\bYou\b", "I"), (r"\byou\b", "I"), (r"\byour\b", "my"), (r"\bYour\b", "My")):
        text = re.sub(pattern, replacement, text)
    return text


def _line(pattern: re.Pattern[str], text: str) -> str:
    match = pattern.search(text)
    return match.group(1).strip() if match else ""
