"""Automatic prefix caching as vLLM and SGLang do it: a prompt whose leading blocks were computed recently skips their prefill.

vLLM (V1, on by default) keeps the KV cache of finished and aborted requests until the memory is
needed, keyed by a hash chained over fixed-size token blocks, so a prompt that starts like an
earlier one (a shared system prompt, the previous turn of a dialogue, a request sent again after
its client died) only prefills what follows the longest cached prefix. The simulator has no
tokenizer: it chains the hashes over blocks of ``BLOCK_TOKENS`` tokens' worth of bytes of the
rendered prompt (``tokens.BYTES_PER_TOKEN`` bytes per token), which matches wherever the text does.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from streamflow.services.sim.tokens import BYTES_PER_TOKEN

__all__ = ["BLOCK_TOKENS", "PrefixCache", "block_hashes", "prompt_blocks"]

BLOCK_TOKENS = 16
"""vLLM's default KV-cache block size; only whole blocks are cached."""

_BLOCK_BYTES = BLOCK_TOKENS * BYTES_PER_TOKEN


def block_hashes(data: bytes) -> list[int]:
    """One hash per whole block of ``data``, each chained to every byte before it (a prefix's hashes are a prefix)."""
    hashes: list[int] = []
    chained = 0
    for start in range(0, len(data) - _BLOCK_BYTES + 1, _BLOCK_BYTES):
        chained = hash((chained, data[start : start + _BLOCK_BYTES]))
        hashes.append(chained)
    return hashes


def prompt_blocks(prompt: bytes, appended: bytes) -> tuple[list[int], list[int]]:
    """The prompt's whole blocks, and those its continuation by ``appended`` (the reply) adds after them."""
    hashes = block_hashes(prompt + appended)
    cut = len(prompt) // _BLOCK_BYTES
    return hashes[:cut], hashes[cut:]


class PrefixCache:
    """The blocks the KV cache holds, least recently used first; at most ``capacity_tokens`` tokens of them.

    Blocks of running requests share the capacity with those kept after their request ended, as
    in vLLM's block pool; the least recently used block is evicted first.
    """

    def __init__(self, capacity_tokens: int) -> None:
        if capacity_tokens < BLOCK_TOKENS:
            msg = f"PrefixCache: capacity_tokens must hold at least one block of {BLOCK_TOKENS}, got {capacity_tokens}."
            raise ValueError(msg)
        self.capacity_blocks = capacity_tokens // BLOCK_TOKENS
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def match(self, blocks: Sequence[int]) -> int:
        """Tokens of the longest cached prefix of ``blocks``; the blocks found count as used now."""
        found = 0
        for block in blocks:
            if block not in self._blocks:
                break
            self._blocks.move_to_end(block)
            found += 1
        return found * BLOCK_TOKENS

    def insert(self, blocks: Sequence[int]) -> None:
        """Keep ``blocks`` (computed just now), evicting the least recently used ones beyond the capacity."""
        cached = self._blocks
        for block in blocks:
            cached[block] = None
            cached.move_to_end(block)
        while len(cached) > self.capacity_blocks:
            cached.popitem(last=False)
