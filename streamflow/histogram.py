"""A fixed-size latency histogram: percentiles of millions of rows in a few kilobytes.

Buckets are spaced logarithmically from 1 ms to about 30 hours with 5% resolution, so
a quantile is off by at most 5% of its value whatever the run's length.
"""

from __future__ import annotations

import math

import msgspec

__all__ = ["LatencyHistogram"]

_LOW_S = 0.001
_GROWTH = 1.05
_BUCKETS = 380  # 1 ms * 1.05**379 ~ 30 h


class LatencyHistogram(msgspec.Struct):
    """Counts of latencies (seconds) per logarithmic bucket."""

    counts: list[int] = msgspec.field(default_factory=lambda: [0] * _BUCKETS)
    total: int = 0

    def add(self, seconds: float) -> None:
        self.counts[_bucket(seconds)] += 1
        self.total += 1

    def merge(self, other: LatencyHistogram) -> None:
        for index, count in enumerate(other.counts):
            self.counts[index] += count
        self.total += other.total

    def quantile(self, q: float) -> float:
        """The latency below which a share ``q`` of rows fall (upper edge of its bucket); 0 if empty."""
        if not self.total:
            return 0.0
        rank = q * self.total
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank and count:
                return _upper(index)
        return _upper(_BUCKETS - 1)

    def cdf(self) -> list[tuple[float, float]]:
        """(latency, share of rows at or below it) at every non-empty bucket."""
        points, seen = [], 0
        for index, count in enumerate(self.counts):
            if count:
                seen += count
                points.append((_upper(index), seen / self.total))
        return points


def _bucket(seconds: float) -> int:
    if seconds <= _LOW_S:
        return 0
    return min(_BUCKETS - 1, 1 + int(math.log(seconds / _LOW_S, _GROWTH)))


def _upper(index: int) -> float:
    return _LOW_S * _GROWTH**index
