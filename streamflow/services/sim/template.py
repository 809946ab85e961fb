r"""JSON-template replies: find ``{"key": <placeholder>, ...}`` in a prompt and fill it the way an LLM would.

Placeholders: ``<integer A-B>`` gives an int in [A, B] (0 only through failure injection when A is 0),
``<number>`` a float, ``<one of: X, Y, Z>`` one option, anything else generated text, ending with
``\boxed{...}`` when the placeholder mentions ``\boxed``. Replies are sometimes wrapped in ```json
fences and sometimes broken on purpose (``SimConfig`` rates) so that downstream parsers get exercised.
"""

from __future__ import annotations

import json
import re

import msgspec

from streamflow.services.sim.draws import Draws
from streamflow.services.sim.filler import Vocabulary
from streamflow.services.sim.server_config import SimConfig

__all__ = ["Field", "fill_template", "find_template"]

_PAIR = re.compile(r'\s*"((?:[^"\\]|\\.)+)"\s*:\s*(?:"<(.*?)>"|<([^<>"]*)>)\s*([,}])', re.DOTALL)
_INTEGER = re.compile(r"(?:integer|int)\b", re.IGNORECASE)
_NUMBER = re.compile(r"(?:number|float)\b", re.IGNORECASE)
_ONE_OF = re.compile(r"one\s+of\s*:?\s*(.+)", re.IGNORECASE | re.DOTALL)
_RANGE = re.compile(r"(-?\d+(?:\.\d+)?)\s*(?:-|–|to|\.\.)\s*(-?\d+(?:\.\d+)?)")
_LONG_HINTS = ("solution", "explanation", "reasoning", "answer", "proof", "steps", "derivation", "boxed", "analysis")
_SHORT_HINTS = ("title", "name", "label", "keyword", "topic", "short")
_REFUSALS = (
    "I'm sorry, but I can't help with that request.",
    "I apologize, but I am unable to provide a response in the requested format.",
    "I cannot complete this request as it may violate content guidelines.",
)
_MAX_FIELD_TOKENS = 4096


class Field(msgspec.Struct, frozen=True):
    """One ``"key": <placeholder>`` pair of a template; ``spec`` is the text inside the angle brackets."""

    key: str
    spec: str


def find_template(text: str) -> list[Field] | None:
    """The first JSON object in ``text`` whose values are all ``<...>`` placeholders, or None."""
    for brace in re.finditer(r"\{", text):
        fields: list[Field] = []
        pos = brace.end()
        while match := _PAIR.match(text, pos):
            fields.append(Field(key=_unescape(match.group(1)), spec=(match.group(2) or match.group(3) or "").strip()))
            pos = match.end()
            if match.group(4) == "}":
                return fields
    return None


def _unescape(key: str) -> str:
    try:
        return str(json.loads(f'"{key}"'))
    except json.JSONDecodeError:
        return key


def _bounds(spec: str, default: tuple[float, float]) -> tuple[float, float]:
    found = _RANGE.search(spec)
    if not found:
        return default
    low, high = float(found.group(1)), float(found.group(2))
    return (low, high) if low <= high else (high, low)


def _integer(spec: str, draws: Draws) -> int:
    low, high = (int(bound) for bound in _bounds(spec, (1, 10)))
    if low == 0 and high >= 1:
        low = 1  # models rarely answer 0 on a rating scale; zero_int_rate injects it
    skewed = draws.random() ** 0.6  # ratings lean to the upper half, as LLM judges' do
    return low + min(int(skewed * (high - low + 1)), high - low)


def _length(spec: str, draws: Draws, max_tokens: int) -> int:
    lowered = spec.lower()
    if any(hint in lowered for hint in _LONG_HINTS):
        median, sigma = 150.0, 0.7
    elif "question" in lowered or "problem" in lowered:
        median, sigma = 50.0, 0.5
    elif any(hint in lowered for hint in _SHORT_HINTS):
        median, sigma = 6.0, 0.4
    else:
        median, sigma = 40.0, 0.6
    # Generating past max_tokens is wasted: the reply is cut there anyway.
    return min(max(1, round(draws.lognormal(median, sigma))), _MAX_FIELD_TOKENS, max_tokens + 1)


def _boxed_answer(draws: Draws) -> str:
    if draws.chance(0.7):
        return str(draws.integer(2, 999))
    return f"\\frac{{{draws.integer(1, 9)}}}{{{draws.integer(10, 99)}}}"


def _value(field: Field, draws: Draws, vocabulary: Vocabulary, max_tokens: int, *, boxed: bool) -> object:
    if _INTEGER.match(field.spec):
        return _integer(field.spec, draws)
    if _NUMBER.match(field.spec):
        low, high = _bounds(field.spec, (0.0, 100.0))
        return round(low + (high - low) * draws.random(), 2)
    if one_of := _ONE_OF.match(field.spec):
        options = [option.strip() for option in re.split(r"[,|]", one_of.group(1)) if option.strip()]
        return draws.choice(options) if options else ""
    text = vocabulary.text(draws, _length(field.spec, draws, max_tokens))
    if "boxed" in field.spec and boxed:
        text += f" Therefore the final answer is \\boxed{{{_boxed_answer(draws)}}}."
    return text


def fill_template(fields: list[Field], vocabulary: Vocabulary, key: bytes, config: SimConfig, max_tokens: int) -> str:
    """Reply text for a template: the filled JSON, possibly fenced, possibly broken, or a refusal."""
    faults = Draws(key, "faults")
    if faults.chance(config.refusal_rate):
        return faults.choice(_REFUSALS)
    omit_boxed = faults.chance(config.missing_boxed_rate)
    values = {
        field.key: _value(field, Draws(key, f"field:{field.key}"), vocabulary, max_tokens, boxed=not omit_boxed)
        for field in fields
    }
    integers = [name for name, value in values.items() if isinstance(value, int)]
    if integers and faults.chance(config.zero_int_rate):
        values[faults.choice(integers)] = 0
    texts = [name for name, value in values.items() if isinstance(value, str)]
    if texts and faults.chance(config.empty_field_rate):
        values[faults.choice(texts)] = ""
    body = json.dumps(values, ensure_ascii=False, indent=2 if faults.chance(0.5) else None)
    if faults.chance(config.malformed_json_rate):
        body = body[:-1] if faults.chance(0.5) else body[: len(body) // 2 + faults.integer(0, len(body) // 3)]
    if faults.chance(config.fence_rate):
        body = f"```json\n{body}\n```"
    return body
