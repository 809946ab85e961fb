"""Token and request accounting, kept per step so the summary can say who spent what."""

from __future__ import annotations

import msgspec

__all__ = ["Usage", "merge_usage"]


class Usage(msgspec.Struct):
    """Counters of one step's (or one replica's) LLM calls."""

    requests: int = 0
    failures: int = 0
    retries: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0

    def add(self, other: Usage) -> None:
        """Add ``other``'s counters into this one."""
        self.requests += other.requests
        self.failures += other.failures
        self.retries += other.retries
        self.cache_hits += other.cache_hits
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.latency_s += other.latency_s


def merge_usage(parts: list[dict[str, Usage]]) -> dict[str, Usage]:
    """Sum per-key usage reported by several processes."""
    total: dict[str, Usage] = {}
    for part in parts:
        for key, usage in part.items():
            total.setdefault(key, Usage()).add(usage)
    return total
