"""The table printed at the end of a run."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from streamflow.result import RunResult

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
    rows.add_section()
    rows.add_row("LLM tokens in / out", f"{result.prompt_tokens:,} / {result.completion_tokens:,}", "")
    rows.add_row("rows/s", f"{result.rows_per_s:,.1f}", "")
    rows.add_row("output tokens/s", f"{result.tokens_per_s:,.1f}", "")
    rows.add_row("wall time", f"{result.wall_s:,.1f} s", "")

    usage = Table(title="LLM calls per step", show_header=True, header_style="bold")
    for column in ("step", "requests", "retries", "failures", "tokens in", "tokens out", "mean latency"):
        usage.add_column(column, justify="left" if column == "step" else "right")
    for step, u in sorted(result.usage.items()):
        if not u.requests:
            continue
        mean = u.latency_s / max(u.requests - u.failures, 1)
        usage.add_row(
            step, f"{u.requests:,}", f"{u.retries:,}", f"{u.failures:,}",
            f"{u.prompt_tokens:,}", f"{u.completion_tokens:,}", f"{mean:.2f} s",
        )
    return [rows, usage]


def print_summary(result: RunResult, console: Console | None = None) -> None:
    """Print the summary tables and where the output is."""
    console = console or Console()
    for table in summary_tables(result):
        console.print(table)
    console.print(f"output: {result.data_dir}/*.parquet ({len(result.files)} parts)")
