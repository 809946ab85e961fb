"""Token and request accounting, kept per step so the summary can say who spent what."""

from __future__ import annotations

from contextvars import ContextVar

import msgspec

__all__ = ["LATENCY_BOUNDS_S", "ROW_USAGE", "Usage", "merge_usage"]

LATENCY_BOUNDS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
"""Upper bounds of the LLM request latency histogram buckets (the last bucket is everything above)."""


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


ROW_USAGE: ContextVar[Usage | None] = ContextVar("streamflow_row_usage", default=None)
"""The usage of the row being processed in this asyncio task, when the runtime records its hop."""
