"""What a run reports: the ledger invariant over its counts, and the summary table."""

import msgspec
from rich.console import Console

from streamflow.io.source import Unreadable
from streamflow.result import RunResult
from streamflow.summary import print_summary

CORRUPT = Unreadable("/data/docs.parquet", "row group 2", 100, "it does not decode: Corrupt page")


def finished(**changes):
    base = RunResult(
        pipeline="p",
        run_id="r",
        run_dir="/tmp/r",
        files=[],
        rows_read=300,
        rows_done=200,
        statuses={"ok": 150, "error:bad_input": 50},
        usage={},
        wall_s=1.0,
        unreadable=[CORRUPT],
    )
    return msgspec.structs.replace(base, **changes)


def test_rows_of_an_unreadable_range_count_as_read_and_the_ledger_adds_up():
    assert finished().balanced and finished().unreadable_rows == 100
    assert not finished(unreadable=[]).balanced  # 100 rows read would have no outcome
    assert not finished(rows_done=150).balanced


def test_the_summary_names_each_unreadable_range_and_the_manifest_keeps_it():
    console = Console(record=True, width=160)
    print_summary(finished(), console)
    line = next(line for line in console.export_text().splitlines() if "unreadable" in line)
    assert "unreadable: /data/docs.parquet row group 2" in line and "100" in line and "33.3%" in line
    summary = finished().summary()
    assert summary["unreadable_rows"] == 100 and summary["unreadable"][0]["reason"] == CORRUPT.reason
