"""``python -m streamflow.report RUN_DIR [--trace ROW_ID] [--no-plots]``: what happened in a run."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console

from streamflow.errors import ConfigError
from streamflow.report import Report, trace_tables


def main(argv: Sequence[str] | None = None) -> int:
    """Print the report (or one row's trace); returns 0, or 2 when the run directory is not usable."""
    parser = argparse.ArgumentParser(
        prog="python -m streamflow.report",
        description="Latency breakdown, throughput, tokens and statuses of a finished (or running) run.",
    )
    parser.add_argument("run_dir", help="a run directory: <output.dir>/<pipeline>/<run_id>")
    parser.add_argument("--trace", metavar="ROW_ID", help="show one input row's path through the pipeline")
    parser.add_argument("--no-plots", action="store_true", help="do not draw the PNG plots")
    parser.add_argument("--plots-dir", help="where to save the plots (default RUN_DIR/report)")
    args = parser.parse_args(argv)
    console = Console()
    try:
        report = Report.load(args.run_dir)
        if args.trace:
            for table in trace_tables(report, args.trace):
                console.print(table)
            return 0
        for table in report.tables():
            console.print(table)
        if not args.no_plots and report.events.height:
            for path in report.save_plots(args.plots_dir):
                console.print(f"plot: {path}")
    except ConfigError as exc:
        print(f"streamflow.report: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
