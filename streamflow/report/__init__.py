"""A run's report from its event log and output: where the time went, per operator and per status.

>>> report = Report.load("outputs/natural_reasoning/20261130-020000-ab12")  # doctest: +SKIP
>>> report.breakdown()  # doctest: +SKIP
(a polars DataFrame: the share of row time per component)
>>> report.operators()  # doctest: +SKIP
(per operator: hops, rows/s, tokens, P50/P99 per component)

``python -m streamflow.report RUN_DIR`` prints the same as tables and saves PNG plots.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import polars as pl
from rich.table import Table

from streamflow.errors import ConfigError
from streamflow.events import SINK_STEP
from streamflow.report import analysis
from streamflow.report.analysis import COMPONENTS

__all__ = ["Report", "trace_tables"]


class Report:
    """A finished (or running) run's events, manifest and output status counts."""

    def __init__(self, run_dir: str, events: pl.DataFrame, manifest: dict[str, Any]) -> None:
        self.run_dir = run_dir
        self.events = events
        self.manifest = manifest
        self.steps = [s for s in manifest.get("config", {}).get("operators", {}) if s != SINK_STEP]

    @classmethod
    def load(cls, run_dir: str | Path) -> Report:
        """Read a run directory; ConfigError in one line when it is not one."""
        path = os.path.abspath(run_dir)
        if not os.path.isdir(os.path.join(path, "data")):
            msg = f"{run_dir} is not a run directory (no data/ in it); pass <output.dir>/<pipeline>/<run_id>."
            raise ConfigError(msg)
        manifest: dict[str, Any] = {}
        for name in ("manifest.json", "run.json"):  # run.json: a run that is still going or was killed
            if os.path.exists(os.path.join(path, name)):
                try:
                    manifest = json.loads(Path(path, name).read_text())
                except ValueError as exc:
                    raise ConfigError(
                        f"{os.path.join(path, name)} is not valid JSON ({exc}); was it cut short?"
                    ) from None
                break
        return cls(path, analysis.load_events(path), manifest)

    def breakdown(self) -> pl.DataFrame:
        return analysis.breakdown(self.events)

    def operators(self) -> pl.DataFrame:
        return analysis.operators(self.events, self.steps)

    def statuses(self) -> pl.DataFrame:
        return analysis.statuses(self.run_dir, self.events)

    def save_plots(self, out_dir: str | None = None) -> list[str]:
        from streamflow.report.plots import save_plots

        return save_plots(self.events, out_dir or os.path.join(self.run_dir, "report"), self.steps)

    def tables(self) -> list[Table]:
        """The report as rich tables: run, statuses, latency breakdown, operators."""
        tables = [self._run_table(), self._status_table()]
        if self.events.height:
            tables += [self._breakdown_table(), self._operator_table()]
        return tables

    def _run_table(self) -> Table:
        summary = self.manifest.get("summary", {})
        timings = self.manifest.get("timings", {})
        title = f"{self.manifest.get('pipeline', '?')} · run {os.path.basename(self.run_dir)}"
        table = Table(title=title, show_header=False)
        table.add_column("")
        table.add_column("", justify="right")
        if summary:
            table.add_row("rows read", f"{summary.get('rows_read', 0):,}")
            table.add_row("rows/s · output tokens/s", f"{summary['rows_per_s']:,.1f} · {summary['tokens_per_s']:,.0f}")
            table.add_row("LLM tokens in / out", f"{summary['prompt_tokens']:,} / {summary['completion_tokens']:,}")
        else:
            table.add_row("manifest", "none yet: the run is going, or it stopped before finishing")
        if timings:
            phases = " · ".join(f"{k.removesuffix('_s')} {v:,.1f} s" for k, v in timings.items() if k.endswith("_s"))
            table.add_row("time", phases)
        sample = self.manifest.get("events", {}).get("sample")  # none yet in run.json
        hops = self.events.height
        table.add_row("event log", f"{hops:,} hop events" + (f" (sample {sample})" if sample is not None else ""))
        if not hops:
            table.add_row("", "no events/: batch mode or events.sample=0, so no latency breakdown")
        return table

    def _status_table(self) -> Table:
        table = Table(title="Rows per status", header_style="bold")
        for column in ("status", "rows", "share", "finished after"):
            table.add_column(column, justify="right" if column in ("rows", "share") else "left")
        for row in self.statuses().iter_rows(named=True):
            style = "red" if row["status"].startswith("error:") else None
            table.add_row(row["status"], f"{row['rows']:,}", f"{row['share']:.2%}", row["step"] or "", style=style)
        return table

    def _breakdown_table(self) -> Table:
        table = Table(title="Where a row's time goes (all rows)", header_style="bold")
        for column in ("component", "share", "P50 per row", "P99 per row"):
            table.add_column(column, justify="left" if column == "component" else "right")
        rows = self.breakdown()
        for row in rows.iter_rows(named=True):
            table.add_row(row["component"], f"{row['share']:.1%}", _s(row["p50_s"]), _s(row["p99_s"]))
        table.add_section()
        table.add_row("total", f"{rows['share'].sum():.1%}", "", "")
        return table

    def _operator_table(self) -> Table:
        table = Table(title="Per operator: share of its time (P50 / P99 per hop)", header_style="bold")
        for column in ("operator", "hops", "rows/s", "tokens in / out", *COMPONENTS):
            table.add_column(column, justify="left" if column == "operator" else "right")
        for row in self.operators().iter_rows(named=True):
            tokens = f"{row['prompt_tokens']:,} / {row['completion_tokens']:,}" if row["llm_calls"] else ""
            cells = [
                f"{row[f'{c}_share']:.0%} ({_s(row[f'{c}_p50_s'])} / {_s(row[f'{c}_p99_s'])})"
                if row[f"{c}_share"] > 0
                else "-"
                for c in COMPONENTS
            ]
            name = f"{row['step']} ×{row['replicas']}" if row["replicas"] > 1 else row["step"]
            table.add_row(name, f"{row['hops']:,}", f"{row['rows_per_s']:,.1f}", tokens, *cells)
        return table


def trace_tables(report: Report, row_id: str) -> list[Table]:
    """One input row's hops (with timings) and its output rows, as tables.

    ConfigError when the run has neither an event nor an output row for ``row_id``: a wrong id
    would otherwise print two empty tables.
    """
    hops = analysis.row_path(report.events, row_id)
    outputs = _output_rows(report.run_dir, row_id)
    if not hops.height and not outputs.height:
        example = _some_row_id(report)
        hint = f"ids look like {example!r} (the row_id column of the output)" if example else "it has no rows yet"
        msg = f"row {row_id!r} is not in {report.run_dir}: no event and no output row has that id; {hint}."
        raise ConfigError(msg)
    path = Table(title=f"Row {row_id}: {hops.height} hops", header_style="bold")
    for column in ("at (s)", "step", "row", "hop", "turn", *COMPONENTS, "status → next", "LLM calls", "tokens in/out"):
        path.add_column(column, justify="left" if column in ("step", "row", "status → next") else "right")
    origin = hops["admitted_at"].min() if hops.height else None
    for hop in hops.iter_rows(named=True):
        at = (hop["received_at"] - origin).total_seconds() if origin is not None else 0.0
        where = f"{hop['step']}[{hop['replica']}] {hop['node']}"
        outcome = hop["status"] if hop["step"] == SINK_STEP else f"{hop['status']} → {hop['next_step']}"
        if hop["error"]:
            outcome += f"\n{hop['error']}"
        path.add_row(
            f"{at:.3f}",
            where,
            hop["row_id"],
            str(hop["hop"]),
            str(hop["turn"]),
            *(_s(hop[f"{c}_s"]) for c in COMPONENTS),
            outcome,
            str(hop["llm_calls"]),
            f"{hop['prompt_tokens']:,} / {hop['completion_tokens']:,}",
        )
    if not hops.height:
        path.add_row(
            "", "no events for this row: not sampled (events.sample < 1), or the event log was off", *[""] * 10
        )
    return [path, _output_table(row_id, outputs)]


def _output_rows(run_dir: str, row_id: str) -> pl.DataFrame:
    """The output rows of one input row (more than one after a fan-out: ``<id>/<piece>``)."""
    parts = sorted(Path(run_dir, "data").glob("*.parquet"))
    if not parts:
        return pl.DataFrame()
    return (
        pl.scan_parquet(parts)
        .filter((pl.col("row_id") == row_id) | pl.col("row_id").str.starts_with(f"{row_id}/"))
        .collect()
    )


def _some_row_id(report: Report) -> str | None:
    """An id the run has, to show what ids look like."""
    parts = sorted(Path(report.run_dir, "data").glob("*.parquet"))
    if parts:
        first = pl.scan_parquet(parts[0]).select("row_id").head(1).collect()
        if first.height:
            return str(first["row_id"][0])
    return str(report.events["root_id"][0]) if report.events.height else None


def _output_table(row_id: str, rows: pl.DataFrame) -> Table:
    table = Table(title=f"Output of row {row_id}", header_style="bold", show_lines=True)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for row in rows.iter_rows(named=True):
        for name, value in row.items():
            if value is not None:
                text = str(value)
                table.add_row(name, text if len(text) <= 300 else text[:300] + f"… ({len(text):,} chars)")
        table.add_section()
    if not rows.height:
        table.add_row("", "not in the output (yet)")
    return table


def _s(seconds: float) -> str:
    if seconds >= 10:
        return f"{seconds:,.0f} s"
    if seconds >= 0.1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.1f} ms"
