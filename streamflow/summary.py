"""The table printed at the end of a run, and how streamflow prints tables anywhere.

Off a terminal (a log file, CI, ``tee``, a SLURM job's output) rich would squeeze tables to 80
columns, or to the width of whatever terminal stdin or stderr happens to be, and cut words
("reques…"). ``output_console`` prints there at the tables' own width instead; on a terminal
``print_tables`` never lets rich cut a word: a table too wide for the terminal is printed as
one record per row.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from streamflow.result import RunResult
from streamflow.services.llm import Usage

__all__ = ["output_console", "print_summary", "print_tables", "summary_tables"]

UNBOUNDED_WIDTH = 1_000
"""Columns of an output that is not a terminal: tables take their natural width, lines are not wrapped."""


def summary_tables(result: RunResult) -> list[Table]:
    """The run summary (rows per status, tokens, throughput) and LLM usage per step."""
    rows = Table(title=f"{result.pipeline} · run {result.run_id}", show_header=True, header_style="bold")
    rows.add_column("")
    rows.add_column("rows", justify="right")
    rows.add_column("share", justify="right")
    read = max(result.rows_read, 1)
    rows.add_row("read (whole run)" if result.resumed else "read", f"{result.rows_read:,}", "")
    rows.add_row("ok", f"{result.ok:,}", f"{result.ok / read:.1%}")
    for reason, n in result.filtered.items():
        rows.add_row(f"filtered: {reason}", f"{n:,}", f"{n / read:.1%}")
    for kind, n in result.errors.items():
        rows.add_row(f"error: {kind}", f"{n:,}", f"{n / read:.1%}", style="red")
    for part in result.unreadable:
        rows.add_row(f"unreadable: {part.path} {part.where}", f"{part.rows:,}", f"{part.rows / read:.1%}", style="red")
    rows.add_section()
    if result.resumed:
        _add_attempt_rows(rows, result)
    else:
        rows.add_row("LLM tokens in / out", f"{result.prompt_tokens:,} / {result.completion_tokens:,}", "")
        rows.add_row("rows/s", f"{result.rows_per_s:,.1f}", "")
        rows.add_row("output tokens/s", f"{result.tokens_per_s:,.1f}", "")
        rows.add_row(
            "row latency P50 / P99",
            f"{result.latency.quantile(0.5):,.1f} s / {result.latency.quantile(0.99):,.1f} s",
            "",
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

    of_attempt = f", attempt {result.attempt}" if result.resumed else ""
    tables = [rows, _usage_table(f"LLM calls per step{of_attempt}", "step", result.usage)]
    if len(result.replica_usage) > 1 or result.lost_replicas:
        tables.append(
            _usage_table(f"LLM calls per replica{of_attempt}", "replica", result.replica_usage, result.lost_replicas)
        )
    return tables


def _add_attempt_rows(rows: Table, result: RunResult) -> None:
    """A resumed run's figures, each labelled: this attempt's, and the whole run's over every recorded attempt."""
    earlier = result.earlier
    whole = f"whole run ({earlier.attempts + 1} attempts)" if earlier.attempts else "whole run"
    run_tokens_per_s = result.run_completion_tokens / result.run_wall_s if result.run_wall_s > 0 else 0.0
    rows.add_row(f"attempt {result.attempt}: rows read", f"{result.rows_this_attempt:,}", "")
    rows.add_row(
        f"attempt {result.attempt}: LLM tokens in / out", f"{result.prompt_tokens:,} / {result.completion_tokens:,}", ""
    )
    rows.add_row(f"attempt {result.attempt}: rows/s", f"{result.rows_per_s:,.1f}", "")
    rows.add_row(f"attempt {result.attempt}: output tokens/s", f"{result.tokens_per_s:,.1f}", "")
    rows.add_row(
        f"attempt {result.attempt}: row latency P50 / P99",
        f"{result.latency.quantile(0.5):,.1f} s / {result.latency.quantile(0.99):,.1f} s",
        "",
    )
    rows.add_row(f"attempt {result.attempt}: wall time", f"{result.wall_s:,.1f} s", "")
    rows.add_row(
        f"{whole}: LLM tokens in / out", f"{result.run_prompt_tokens:,} / {result.run_completion_tokens:,}", ""
    )
    rows.add_row(f"{whole}: rows/s", f"{result.run_rows_per_s:,.1f}", "")
    rows.add_row(f"{whole}: output tokens/s", f"{run_tokens_per_s:,.1f}", "")
    rows.add_row(f"{whole}: wall time", f"{result.run_wall_s:,.1f} s", "")


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


def output_console(file: TextIO | None = None) -> Console:
    """A console on ``file`` (stdout): the terminal's width on a terminal, else as wide as the content.

    ``COLUMNS`` in the environment still sets the width, as it does for rich.
    """
    file = file or sys.stdout
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() or file.isatty():
        return Console(file=file)
    return Console(file=file, width=UNBOUNDED_WIDTH)


def print_tables(console: Console, tables: Iterable[Table]) -> None:
    """Print each table whole: as a table if it fits the console without cutting a word, else as records."""
    for table in tables:
        _keep_words_whole(table)
        if _rendered_width(console, table) <= console.width:
            console.print(table)
        else:
            console.print(_records(table))


def _keep_words_whole(table: Table) -> None:
    """Let a column shrink only down to its longest word, so rich wraps cells between words."""
    for column in table.columns:
        cells = [column.header, *column.cells]
        words = [len(word) for cell in cells for word in _plain(cell).split()]
        column.min_width = max(words, default=1)


def _rendered_width(console: Console, table: Table) -> int:
    """The width ``table`` takes on ``console``: more than its width when the columns cannot shrink enough."""
    lines = Segment.split_lines(console.render(table, console.options))
    return max((Segment.get_line_length(line) for line in lines), default=0)


def _records(table: Table) -> Group:
    """The rows of ``table`` as records: the first cell as a heading, then "column  value" lines."""
    columns = table.columns
    labels = [_plain(column.header) for column in columns[1:]]
    label_width = max((len(label) for label in labels), default=0) + 2
    parts: list[RenderableType] = []
    if table.title:
        parts.append(Text(_plain(table.title), style="bold"))
    for index, row in enumerate(zip(*(column.cells for column in columns), strict=True)):
        parts.append(Text(_plain(row[0]), style=table.rows[index].style or ""))
        fields = Table.grid(padding=(0, 1))
        fields.add_column(min_width=label_width)
        fields.add_column(overflow="fold")
        for label, cell in zip(labels, row[1:], strict=True):
            if _plain(cell):
                fields.add_row(f"  {label}", cell)
        parts.append(fields)
    return Group(*parts)


def _plain(cell: object) -> str:
    return cell.plain if isinstance(cell, Text) else str(cell)


def print_summary(result: RunResult, console: Console | None = None) -> None:
    """Print the summary tables and where the output is."""
    console = console or output_console()
    print_tables(console, summary_tables(result))
    # soft_wrap: a path is never broken across lines, so it can be copied
    console.print(f"output: {result.data_dir}/*.parquet ({len(result.files)} parts)", soft_wrap=True)
    if os.path.isdir(os.path.join(result.run_dir, "events")):
        console.print(f"where the time went: python -m streamflow.report {result.run_dir}", soft_wrap=True)
