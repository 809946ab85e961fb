"""The driver's progress display: correct counts when most rows are filtered, log lines off a terminal."""

import logging

from streamflow.progress import Progress, Snapshot


def test_log_lines_count_filtered_rows_as_done_and_give_an_eta(caplog):
    progress = Progress(total=1000, mode="log", log_every_s=0)
    with caplog.at_level(logging.INFO, logger="streamflow.progress"):
        progress.update(Snapshot(done=400, ok=8, filtered=390, errors=2, inflight=64, completion_tokens=5000))
    progress.close()
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("400/1000 rows")
    assert "ok 8 · filtered 390 · errors 2 · in flight 64" in line
    assert "eta" in line and "nan" not in line


def test_off_mode_prints_nothing(caplog):
    progress = Progress(total=10, mode="off")
    with caplog.at_level(logging.INFO, logger="streamflow.progress"):
        progress.update(Snapshot(done=5, ok=5, filtered=0, errors=0, inflight=0, completion_tokens=0))
    progress.close()
    assert not caplog.records
