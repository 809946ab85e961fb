"""Python's garbage collector tuned for processes that hold many rows: fewer, cheaper collections.

Every row allocates a few container objects, so with Python's default thresholds the cyclic
collector runs hundreds of times a second and, every few seconds, walks every object the
process holds, the imported Ray and pyarrow included: 30% of the driver's CPU and 10% of a
step actor's in ``bench.orchestration``'s no-op pipeline. Freezing what start-up allocated
keeps it out of every later collection, and a higher first-generation threshold makes all
collections rarer. Rows rarely form reference cycles; reference counting still frees them.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["YOUNG_THRESHOLD", "collect_less", "collecting_less"]

YOUNG_THRESHOLD = 10_000
"""Allocations between two collections of the youngest generation (Python's default: 700)."""


def collect_less() -> tuple[int, int, int]:
    """Freeze every object alive now and raise the young threshold; returns the thresholds before."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *before[1:])
    return before


@contextlib.contextmanager
def collecting_less() -> Iterator[None]:
    """``collect_less`` for the duration, then the collector as it was (the driver may be a user's own process)."""
    before = collect_less()
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
