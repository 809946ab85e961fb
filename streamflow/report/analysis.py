"""The numbers of a run's report, computed with polars from its event log and its output.

Every function takes the events as a polars DataFrame (``load_events``) and returns a
DataFrame, so the same numbers can be printed, plotted, tested or explored in a notebook.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from streamflow.events import DUPLICATE, SINK_STEP, read_events

__all__ = [
    "COMPONENTS",
    "breakdown",
    "finish_steps",
    "hop_seconds",
    "inflight_over_time",
    "kept",
    "load_events",
    "operators",
    "row_path",
    "statuses",
    "throughput_over_time",
]

COMPONENTS = ("init", "transport", "queueing", "processing")
"""The parts of a row's time: waiting for admission, between actors, for a slot, in the operator."""


def kept(events: pl.DataFrame) -> pl.DataFrame:
    """Every hop except the copies of re-admitted rows that a sink dropped as duplicates."""
    return events.filter(pl.col("status") != DUPLICATE)


def load_events(run_dir: str | Path) -> pl.DataFrame:
    """A run's events, with the seconds of each component added (see ``hop_seconds``)."""
    return hop_seconds(pl.from_arrow(read_events(str(run_dir))))  # type: ignore[arg-type]


def hop_seconds(events: pl.DataFrame) -> pl.DataFrame:
    """Add ``init_s``, ``transport_s``, ``queueing_s``, ``processing_s`` and their sum ``total_s``.

    ``init`` is non-zero only on a row's first operator hop: the time from being read to
    leaving the driver. Negative spans (clocks of two nodes that disagree) count as 0.
    """

    def span(start: str, end: str) -> pl.Expr:
        return ((pl.col(end) - pl.col(start)).dt.total_microseconds() / 1e6).clip(lower_bound=0.0).fill_null(0.0)

    first_hop = (pl.col("hop") == 0) & (pl.col("step") != SINK_STEP)
    return events.with_columns(
        init_s=pl.when(first_hop).then(span("admitted_at", "sent_at")).otherwise(0.0),
        transport_s=span("sent_at", "received_at"),
        queueing_s=span("received_at", "started_at"),
        processing_s=span("started_at", "ended_at"),
    ).with_columns(total_s=pl.sum_horizontal(*(f"{c}_s" for c in COMPONENTS)))


def breakdown(events: pl.DataFrame) -> pl.DataFrame:
    """Per component: its share of all row time, and the median and P99 of its seconds per row.

    Shares are over the sum of every component of every hop, so they add up to 100%.
    """
    per_row = events.group_by("root_id").agg(pl.col(f"{c}_s").sum() for c in COMPONENTS)
    grand = sum(float(per_row[f"{c}_s"].sum()) for c in COMPONENTS) or 1.0
    return pl.DataFrame(
        {
            "component": list(COMPONENTS),
            "share": [float(per_row[f"{c}_s"].sum()) / grand for c in COMPONENTS],
            "p50_s": [_quantile(per_row[f"{c}_s"], 0.5) for c in COMPONENTS],
            "p99_s": [_quantile(per_row[f"{c}_s"], 0.99) for c in COMPONENTS],
        }
    )


def operators(events: pl.DataFrame, order: list[str] | None = None) -> pl.DataFrame:
    """Per operator (and the sink): hops, rows/s while it was active, tokens, and each component's
    share of its time with the median and P99 seconds per hop."""
    stats = (
        kept(events)
        .group_by("step")
        .agg(
            hops=pl.len(),
            replicas=pl.col("replica").n_unique(),
            span_s=(pl.col("ended_at").max() - pl.col("started_at").min()).dt.total_microseconds() / 1e6,
            llm_calls=pl.col("llm_calls").sum(),
            prompt_tokens=pl.col("prompt_tokens").sum(),
            completion_tokens=pl.col("completion_tokens").sum(),
            total_s=pl.col("total_s").sum(),
            **{f"{c}_sum": pl.col(f"{c}_s").sum() for c in COMPONENTS},
            **{f"{c}_p50_s": pl.col(f"{c}_s").quantile(0.5, "nearest") for c in COMPONENTS},
            **{f"{c}_p99_s": pl.col(f"{c}_s").quantile(0.99, "nearest") for c in COMPONENTS},
        )
        .with_columns(
            rows_per_s=pl.col("hops") / pl.col("span_s").clip(lower_bound=1e-3),
            **{f"{c}_share": pl.col(f"{c}_sum") / pl.col("total_s").clip(lower_bound=1e-12) for c in COMPONENTS},
        )
        .drop(*(f"{c}_sum" for c in COMPONENTS))
    )
    rank = {name: index for index, name in enumerate([*(order or []), SINK_STEP])}
    return stats.sort(pl.col("step").replace_strict(rank, default=len(rank), return_dtype=pl.Int64), "step")


def statuses(run_dir: str | Path, events: pl.DataFrame) -> pl.DataFrame:
    """Output rows per status (exact, from ``data/``) with the step that gave most of them that status."""
    parts = sorted(Path(run_dir, "data").glob("*.parquet"))
    if not parts:
        return pl.DataFrame(schema={"status": pl.String, "rows": pl.UInt32, "share": pl.Float64, "step": pl.String})
    counts = pl.read_parquet(parts, columns=["status"]).group_by("status").agg(rows=pl.len())
    total = int(counts["rows"].sum()) or 1
    where = finish_steps(events).group_by("status").agg(pl.col("step").mode().first())
    order = pl.when(pl.col("status") == "ok").then(0).when(pl.col("status").str.starts_with("filtered:")).then(1)
    return (
        counts.join(where, on="status", how="left")
        .with_columns(share=pl.col("rows") / total)
        .sort(order.otherwise(2), pl.col("rows"), "status", descending=[False, True, False])
        .select("status", "rows", "share", "step")
    )


def finish_steps(events: pl.DataFrame) -> pl.DataFrame:
    """For every output row the event log saw: its status and the step after which it was finished."""
    written = kept(events).filter(pl.col("step") == SINK_STEP).select("row_id", "status")
    last_hops = (
        events.filter((pl.col("step") != SINK_STEP) & (pl.col("next_step") == "END"))
        .sort("ended_at")
        .group_by("row_id")
        .agg(pl.col("step").last())
    )
    return written.join(last_hops, on="row_id", how="left")


def throughput_over_time(events: pl.DataFrame, every_s: float) -> pl.DataFrame:
    """Hops per second of each step (``sink``: rows written) in windows of ``every_s`` since the first event."""
    start = events["started_at"].min()
    return (
        kept(events)
        .with_columns(window=((pl.col("ended_at") - start).dt.total_microseconds() / 1e6 // every_s) * every_s)
        .group_by("step", "window")
        .agg(per_s=pl.len() / every_s)
        .sort("step", "window")
    )


def inflight_over_time(events: pl.DataFrame, every_s: float) -> pl.DataFrame:
    """Input rows admitted and not yet written, sampled every ``every_s`` seconds."""
    rows = events.group_by("root_id").agg(
        start=pl.col("admitted_at").min(),
        end=pl.when(pl.col("step") == SINK_STEP).then(pl.col("ended_at")).max(),
    )
    origin = rows["start"].min()
    seconds = rows.select(
        start=(pl.col("start") - origin).dt.total_microseconds() / 1e6,
        end=(pl.col("end") - origin).dt.total_microseconds() / 1e6,
    )
    last = float(seconds["end"].max() or seconds["start"].max() or 0.0)  # type: ignore[arg-type]
    times = [index * every_s for index in range(int(last / every_s) + 2)]
    starts = seconds["start"].sort()
    ends = seconds["end"].drop_nulls().sort()
    inflight = [int(starts.search_sorted(t, "right")) - int(ends.search_sorted(t, "right")) for t in times]
    return pl.DataFrame({"second": times, "inflight": inflight})


def row_path(events: pl.DataFrame, row_id: str) -> pl.DataFrame:
    """Every hop of one input row (and of its fan-out pieces), in time order."""
    pieces = (pl.col("root_id") == row_id) | (pl.col("row_id") == row_id)
    return events.filter(pieces).sort("received_at", "step")


def _quantile(values: pl.Series, q: float) -> float:
    result = values.quantile(q, "nearest")
    return float(result) if result is not None else 0.0
