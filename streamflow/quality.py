"""A pipeline's own quality figures (agreement rate, mean reward...), computed from its output after a run."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["measure_quality"]

log = logging.getLogger(__name__)


def measure_quality(metrics: Callable[[Any], Mapping[str, float]] | None, files: Sequence[str]) -> dict[str, float]:
    """``metrics`` applied to the output parts as one ``polars.LazyFrame``; {} when there is nothing to measure.

    A failing metrics function costs the figures, not the run: the output is already written.
    """
    if metrics is None or not files:
        return {}
    import polars as pl

    try:
        figures = metrics(pl.scan_parquet(list(files)))
        return {str(name): float(value) for name, value in figures.items() if value is not None}
    except Exception as exc:
        log.warning("the pipeline's metrics() failed, so the summary has no quality figures: %s: %s",
                    type(exc).__name__, exc)  # fmt: skip
        return {}
