"""The table printed at the end of a run."""

from __future__ import annotations

import os
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from streamflow.result import RunResult
from streamflow.services.llm import Usage

__all__ = ["print_summary", "summary_tables"]


def summary_tables(result: RunResult) -> list[Table]:
    """The run summary (rows per status, tokens, throughput) and LLM usage per step."""
    rows = Table(title=f"{result.pipeline} · run {result.run_id}", show_header=True, header_style="bold")
    rows.add_column("")
    rows.add_column("rows", justify="right")
    rows.add_column("share", justify="right")
    read = max(result.rows_read, 1)
    rows.add_row("read", f"{result.rows_read:,}", "")
    rows.add_row("ok", f"{result.ok:,}", f"{result.ok / read:.1%}")
    for reason, n in result.filtered.items():
        rows.add_row(f"filtered: {reason}", f"{n:,}", f"{n / read:.1%}")
    for kind, n in result.errors.items():
        rows.add_row(f"error: {kind}", f"{n:,}", f"{n / read:.1%}", style="red")
    for part in result.unreadable:
        rows.add_row(f"unreadable: {part.path} {part.where}", f"{part.rows:,}", f"{part.rows / read:.1%}", style="red")
    rows.add_section()
    rows.add_row("LLM tokens in / out", f"{result.prompt_tokens:,} / {result.completion_tokens:,}", "")
    rows.add_row("rows/s", f"{result.rows_per_s:,.1f}", "")
    rows.add_row("output tokens/s", f"{result.tokens_per_s:,.1f}", "")
    rows.add_row(
        "row latency P50 / P99", f"{result.latency.quantile(0.5):,.1f} s / {result.latency.quantile(0.99):,.1f} s", ""
    )
    rows.add_row("wall time", f"{result.wall_s:,.1f} s", "")
    moved = result.transfer
    if moved.offloaded_objects:
        rows.add_row(
            "bytes between actors: inline / via object store",
            f"{_mb(moved.inline_bytes)} / {_mb(moved.offloaded_bytes)} ({moved.offloaded_objects:,} values, "
            f"at most {result.objects_alive_peak:,} alive)",
            "",
        )
    elif moved.inline_bytes:
        rows.add_row("bytes between actors", _mb(moved.inline_bytes), "")
    if result.restarts or result.readmitted:
        rows.add_row("actors restarted / rows re-admitted", f"{result.restarts:,} / {result.readmitted:,}", "")
    if result.quality:
        rows.add_section()
        for name, value in result.quality.items():
            rows.add_row(name, f"{value:,.0f}" if value.is_integer() else f"{value:,.3f}", "")

    tables = [rows, _usage_table("LLM calls per step", "step", result.usage)]
    if len(result.replica_usage) > 1 or result.lost_replicas:
        tables.append(_usage_table("LLM calls per replica", "replica", result.replica_usage, result.lost_replicas))
    return tables


def _usage_table(title: str, key: str, usage: dict[str, Usage], lost: Sequence[str] = ()) -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    for column in (key, "requests", "retries", "failures", "cache hits", "tokens in", "tokens out", "mean latency"):
        table.add_column(column, justify="left" if column == key else "right")
    for name, u in sorted(usage.items()):
        if not u.requests:
            continue
        mean = u.latency_s / max(u.requests - u.failures - u.cache_hits, 1)
        label = f"{name} (died)" if name in lost else name
        table.add_row(
            label,
            f"{u.requests:,}",
            f"{u.retries:,}",
            f"{u.failures:,}",
            f"{u.cache_hits:,}",
            f"{u.prompt_tokens:,}",
            f"{u.completion_tokens:,}",
            f"{mean:.2f} s",
        )
    return table


def _mb(count: int) -> str:
    return f"{count / 1e6:,.1f} MB"


def print_summary(result: RunResult, console: Console | None = None) -> None:
    """Print the summary tables and where the output is."""
    console = console or Console()
    for table in summary_tables(result):
        console.print(table)
    console.print(f"output: {result.data_dir}/*.parquet ({len(result.files)} parts)")
    if os.path.isdir(os.path.join(result.run_dir, "events")):
        console.print(f"where the time went: python -m streamflow.report {result.run_dir}")
