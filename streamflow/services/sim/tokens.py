"""Cheap token arithmetic for the simulator: about 4 UTF-8 bytes per token.

This is an approximation, not a tokenizer: real BPE vocabularies give roughly 4 bytes per token on
English text and fewer on code, digits or non-Latin scripts. It keeps the simulator free of model files
and costs one ``encode`` per call.
"""

from __future__ import annotations

__all__ = ["BYTES_PER_TOKEN", "count_tokens", "truncate_tokens"]

BYTES_PER_TOKEN = 4


def count_tokens(text: str) -> int:
    """Approximate token count of ``text``: ceil(bytes / 4), so any non-empty text is at least 1 token."""
    return -(-len(text.encode()) // BYTES_PER_TOKEN)


def truncate_tokens(text: str, max_tokens: int) -> str:
    """Longest prefix of ``text`` that counts as at most ``max_tokens`` tokens, cut on a character boundary."""
    return text.encode()[: max(max_tokens, 0) * BYTES_PER_TOKEN].decode(errors="ignore")
