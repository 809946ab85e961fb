"""``python -m streamflow.report RUN_DIR [--trace ROW_ID] [--no-plots]``: what happened in a run.

Exit status: 0 printed; 2 refused before printing anything, with one line on stderr naming the
problem (an unknown option, a directory that is no run, a row id the run does not have, a plots
directory that cannot be written).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from streamflow.errors import ConfigError
from streamflow.report import Report, trace_tables
from streamflow.summary import output_console, print_tables


class _Parser(argparse.ArgumentParser):
    """argparse that reports a wrong argument as one ConfigError line instead of usage + error + exit."""

    def error(self, message: str) -> NoReturn:
        usage = " ".join(self.format_usage().split()).removeprefix("usage: ")  # argparse wraps it
        raise ConfigError(f"{message}; usage: {usage}")


def main(argv: Sequence[str] | None = None) -> int:
    """Print the report (or one row's trace); returns 0, or 2 with one line on stderr when refused."""
    parser = _Parser(
        prog="python -m streamflow.report",
        description="Latency breakdown, throughput, tokens and statuses of a finished (or running) run.",
    )
    parser.add_argument("run_dir", help="a run directory: <output.dir>/<pipeline>/<run_id>")
    parser.add_argument("--trace", metavar="ROW_ID", help="show one input row's path through the pipeline")
    parser.add_argument("--no-plots", action="store_true", help="do not draw the PNG plots")
    parser.add_argument("--plots-dir", metavar="DIR", help="where to save the plots (default RUN_DIR/report)")
    try:
        args = parser.parse_args(argv)
        report = Report.load(args.run_dir)
        if args.trace:
            tables = trace_tables(report, args.trace)  # ConfigError for an id the run does not have
            print_tables(output_console(), tables)
            return 0
        plots_dir = None
        if not args.no_plots and report.events.height:
            plots_dir = _writable(args.plots_dir or os.path.join(report.run_dir, "report"))
    except ConfigError as exc:
        print(f"streamflow.report: error: {exc}", file=sys.stderr)
        return 2
    console = output_console()
    print_tables(console, report.tables())
    if plots_dir is not None:
        for path in report.save_plots(plots_dir):
            console.print(f"plot: {path}", soft_wrap=True)
    return 0


def _writable(directory: str) -> str:
    """``directory``, created if needed; ConfigError when the plots could not be written there."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        msg = f"cannot write the plots to {directory}: {exc.strerror}; pass --plots-dir DIR or --no-plots"
        raise ConfigError(msg) from None
    if not os.access(directory, os.W_OK):
        raise ConfigError(f"cannot write the plots to {directory}: not writable; pass --plots-dir DIR or --no-plots")
    return directory


if __name__ == "__main__":
    sys.exit(main())
