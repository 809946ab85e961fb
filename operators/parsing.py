"""Pulling structured answers out of what real models say: fenced JSON, chatter, boxed answers."""

from __future__ import annotations

import re
from typing import Any

import msgspec

__all__ = ["extract_boxed", "extract_choice", "extract_json", "first_word"]

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_decode = msgspec.json.Decoder().decode


def extract_json(text: str) -> Any:
    """The first JSON object in ``text`` (inside code fences or surrounded by prose), or None."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for candidate in candidates:
        start = candidate.find("{")
        while start != -1:
            end = _matching_brace(candidate, start)
            if end == -1:
                break
            try:
                value = _decode(candidate[start : end + 1])
            except msgspec.DecodeError:
                start = candidate.find("{", start + 1)
                continue
            if isinstance(value, dict):
                return value
            start = candidate.find("{", end + 1)
    return None


def extract_boxed(text: str) -> str | None:
    r"""The content of the last ``\boxed{...}`` in ``text`` (nested braces allowed), or None."""
    start = text.rfind("\\boxed{")
    if start == -1:
        return None
    opening = start + len("\\boxed")
    end = _matching_brace(text, opening, json_strings=False)
    if end == -1:
        return None
    return text[opening + 1 : end].strip()


_CHOICE = re.compile(
    r"(?i:answer\s*(?:is|:))\s*(?:\(\s*([A-Za-z])\s*\)|([A-Z])(?![A-Za-z]))|\\boxed\{\s*\(?([A-Za-z])\)?\s*\}"
)


def extract_choice(text: str, letters: str = "ABCDEFGHIJ") -> str | None:
    r"""The last option letter the text commits to ("Answer: (C)", "the answer is B", "\boxed{D}"), or None."""
    found = [(m.group(1) or m.group(2) or m.group(3)).upper() for m in _CHOICE.finditer(text)]
    found = [letter for letter in found if letter in letters]
    return found[-1] if found else None


def first_word(text: str) -> str:
    """The first word of an answer, lower-cased, without punctuation ("Yes." -> "yes")."""
    match = re.search(r"[A-Za-z]+", text)
    return match.group(0).lower() if match else ""


def _matching_brace(text: str, start: int, *, json_strings: bool = True) -> int:
    """Index of the brace closing the one at ``start`` (skipping braces inside JSON strings), or -1."""
    depth = 0
    in_string = False
    escaped = False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"' and json_strings:
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
    return -1
