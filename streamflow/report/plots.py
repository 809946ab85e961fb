"""The report's PNG plots: throughput and rows in flight over time, hop latency CDF per operator."""

from __future__ import annotations

import os

import polars as pl

from streamflow.events import SINK_STEP
from streamflow.report.analysis import inflight_over_time, kept, throughput_over_time

__all__ = ["save_plots"]


def save_plots(events: pl.DataFrame, out_dir: str, order: list[str]) -> list[str]:
    """Draw the three plots into ``out_dir``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, and no GUI toolkit picked up by accident
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    span = (events["ended_at"].max() - events["started_at"].min()).total_seconds()  # type: ignore[operator, union-attr]
    every_s = max(0.1, round(span / 100, 1))
    paths = []

    figure, axes = plt.subplots(figsize=(9, 4.5))
    rates = throughput_over_time(events, every_s)
    for step in [*order, SINK_STEP]:
        series = rates.filter(pl.col("step") == step)
        if series.height:
            label = "rows written" if step == SINK_STEP else step
            axes.plot(series["window"], series["per_s"], label=label, linewidth=2.5 if step == SINK_STEP else 1.2)
    axes.set(xlabel="seconds since the first row", ylabel="rows per second", title="Throughput per operator")
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    paths.append(_save(figure, out_dir, "throughput.png"))

    figure, axes = plt.subplots(figsize=(9, 4.5))
    inflight = inflight_over_time(events, every_s)
    axes.step(inflight["second"], inflight["inflight"], where="post")
    axes.set(xlabel="seconds since the first row", ylabel="input rows in flight", title="Rows in flight")
    axes.grid(alpha=0.3)
    paths.append(_save(figure, out_dir, "inflight.png"))

    figure, axes = plt.subplots(figsize=(9, 4.5))
    hops = kept(events)
    for step in [*order, SINK_STEP]:
        latency = hops.filter(pl.col("step") == step)["total_s"].sort()
        if latency.len():
            share = [(index + 1) / latency.len() for index in range(latency.len())]
            axes.plot(latency.clip(lower_bound=1e-4), share, label=step)
    axes.set(xscale="log", xlabel="hop latency (s): transport + queueing + processing", ylabel="share of hops")
    axes.set_title("Latency CDF per operator")
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3, which="both")
    paths.append(_save(figure, out_dir, "latency_cdf.png"))
    return paths


def _save(figure: object, out_dir: str, name: str) -> str:
    import matplotlib.pyplot as plt

    path = os.path.join(out_dir, name)
    figure.savefig(path, dpi=110, bbox_inches="tight")  # type: ignore[attr-defined]
    plt.close(figure)  # type: ignore[arg-type]
    return path
