"""Stable pseudo-random draws derived from a hash, so simulated replies repeat across runs and Python versions.

Python's ``hash()`` is salted per process and ``random``'s derived methods may change between versions;
counter-mode BLAKE2b has neither problem.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Sequence
from typing import TypeVar

__all__ = ["Draws", "stable_key"]

_T = TypeVar("_T")
_UNIT = 1.0 / (1 << 53)
_WORDS = struct.Struct("<8Q")  # a 64-byte digest gives 8 uniforms of 53 bits


def stable_key(*parts: object) -> bytes:
    """A 32-byte digest of the ``repr`` of ``parts``; callers pass only str, int, float, None and tuples."""
    return hashlib.blake2b(repr(parts).encode(), digest_size=32).digest()


class Draws:
    """Uniform floats in [0, 1) from BLAKE2b(key, counter); ``label`` gives independent streams per purpose."""

    __slots__ = ("_buffer", "_counter", "_key", "_label")

    def __init__(self, key: bytes, label: str) -> None:
        self._key = key
        self._label = hashlib.blake2b(label.encode(), digest_size=16).digest()
        self._counter = 0
        self._buffer: list[float] = []

    def random(self) -> float:
        """Next uniform float in [0, 1)."""
        if not self._buffer:
            digest = hashlib.blake2b(
                self._counter.to_bytes(8, "little"), key=self._key, person=self._label, digest_size=64
            ).digest()
            self._counter += 1
            self._buffer = [(word >> 11) * _UNIT for word in _WORDS.unpack(digest)]
        return self._buffer.pop()

    def chance(self, probability: float) -> bool:
        """True with the given probability."""
        return self.random() < probability

    def integer(self, low: int, high: int) -> int:
        """Uniform integer in [low, high], both inclusive."""
        return low + min(int(self.random() * (high - low + 1)), high - low)

    def choice(self, items: Sequence[_T]) -> _T:
        """One element of a non-empty sequence, uniformly."""
        return items[self.integer(0, len(items) - 1)]

    def lognormal(self, median: float, sigma: float) -> float:
        """Lognormal draw with the given median and log-space standard deviation (Box-Muller)."""
        radius = math.sqrt(-2.0 * math.log(1.0 - self.random()))
        return median * math.exp(sigma * radius * math.cos(2.0 * math.pi * self.random()))
