"""The driver's progress display: counts when most rows are filtered, rates and an ETA from the last
minute (rough while it cannot be better), log lines off a terminal, and the line the docs quote."""

import logging
import re
from pathlib import Path

from rich.console import Console

from streamflow.progress import Progress, Snapshot

DOCS = Path(__file__).resolve().parents[1] / "docs" / "observability.md"


class Clock:
    """A clock the test moves by hand: progress lines depend on time, the tests must not."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def snap(done, *, ok=0, filtered=None, errors=0, inflight=0, prompt=0, completion=0):
    filtered = done - ok - errors if filtered is None else filtered
    return Snapshot(
        done=done,
        ok=ok,
        filtered=filtered,
        errors=errors,
        inflight=inflight,
        prompt_tokens=prompt,
        completion_tokens=completion,
    )


def log_lines(caplog, total, timeline):
    """The log lines of a run fed ``(seconds since start, Snapshot)`` pairs, one line per update."""
    clock = Clock()
    progress = Progress(total=total, mode="log", log_every_s=0, clock=clock)
    start = clock.now
    with caplog.at_level(logging.INFO, logger="streamflow.progress"):
        for at, snapshot in timeline:
            clock.now = start + at
            progress.update(snapshot)
    progress.close()
    return [r.getMessage() for r in caplog.records if r.name == "streamflow.progress"]


def eta_of(line):
    return line.rsplit(" · eta ", 1)[1]


def test_log_lines_count_filtered_rows_as_done_and_show_the_ok_share(caplog):
    (line,) = log_lines(caplog, 1000, [(10, snap(400, ok=8, filtered=390, errors=2, inflight=64))])
    assert line.startswith("400/1,000 rows")
    assert "ok 8 (2.0%) · filtered 390 · errors 2 · in flight 64" in line


def test_eta_follows_the_last_minutes_throughput_not_the_average_since_the_start(caplog):
    # 50 rows/s for the first two minutes (cheap filters), then 5 rows/s (rows going through every LLM step)
    timeline = [(t, snap(50 * t, inflight=500)) for t in range(0, 121, 10)]
    timeline += [(120 + t, snap(6000 + 5 * t, inflight=500)) for t in range(10, 61, 10)]
    line = log_lines(caplog, 20_000, timeline)[-1]
    assert line.startswith("6,300/20,000 rows")
    assert "last min: 5.0 rows/s" in line
    assert eta_of(line) == "46 min"  # 13,700 rows at 5 rows/s; the average since the start (35 rows/s) says 7 min


def test_eta_is_rough_in_the_first_minute(caplog):
    lines = log_lines(caplog, 20_000, [(t, snap(100 * t, inflight=500)) for t in (10, 30, 59, 60)])
    assert [eta_of(line) for line in lines] == ["~3 min (rough)", "~3 min (rough)", "~2 min (rough)", "2 min"]


def test_eta_is_rough_while_few_rows_finish_per_minute(caplog):
    lines = log_lines(caplog, 1000, [(t, snap(t // 3, inflight=50)) for t in range(0, 181, 30)])
    assert "last min: 0.3 rows/s" in lines[-1]
    assert eta_of(lines[-1]) == "~47 min (rough)"


def test_eta_is_rough_once_every_remaining_row_is_in_flight(caplog):
    timeline = [(t, snap(20 * t, inflight=1024)) for t in range(0, 91, 10)]  # at 90 s: 1,800 done, 200 left
    lines = log_lines(caplog, 2000, timeline)
    assert eta_of(lines[-1]) == "~10 s (rough)"


def test_eta_without_a_finished_row_in_the_last_minute_is_unknown(caplog):
    timeline = [(0, snap(0, inflight=100)), (30, snap(0, inflight=100)), (90, snap(0, inflight=100))]
    (*_, line) = log_lines(caplog, 100, timeline)
    assert eta_of(line) == "unknown (no row finished in the last minute)"


def test_llm_tokens_per_second_are_those_of_the_last_minute(caplog):
    timeline = [
        (0, snap(0, inflight=100)),
        (60, snap(600, prompt=6_000_000, completion=60_000, inflight=100)),  # a fast first minute
        (120, snap(900, prompt=6_600_000, completion=66_000, inflight=100)),  # then a tenth of it
    ]
    line = log_lines(caplog, 10_000, timeline)[-1]
    assert "last min: 5.0 rows/s, LLM 10,000 in + 100 out tok/s" in line


def test_the_progress_line_in_the_docs_is_what_progress_prints(caplog):
    """docs/observability.md quotes a log line of NaturalReasoning over 20,000 documents; these are its counts."""
    timeline = [
        (180, snap(6_514, ok=475, inflight=1024, prompt=3_632_000, completion=265_600)),
        (240, snap(9_214, ok=672, inflight=1024, prompt=5_132_000, completion=376_000)),
    ]
    line = log_lines(caplog, 20_000, timeline)[-1]
    quoted = re.findall(r"^\d[\d,]*/[\d,]+ rows · .*$", DOCS.read_text(), flags=re.MULTILINE)
    assert quoted == [line]


def test_off_mode_prints_nothing(caplog):
    assert log_lines(caplog, 10, []) == []
    progress = Progress(total=10, mode="off")
    with caplog.at_level(logging.INFO, logger="streamflow.progress"):
        progress.update(snap(5, ok=5))
    progress.close()
    assert not caplog.records


def test_a_run_with_nothing_left_to_do_has_a_zero_eta(caplog):
    lines = log_lines(caplog, 10, [(5, snap(10, ok=10))])
    assert eta_of(lines[-1]) == "0 s"


def test_the_bar_shows_the_eta_and_every_figure_without_cutting_them_on_a_narrow_terminal():
    clock = Clock()
    console = Console(record=True, width=60, force_terminal=True)
    progress = Progress(total=2000, mode="bar", clock=clock, console=console)
    clock.now += 30
    progress.update(snap(900, ok=60, inflight=1000, prompt=600_000, completion=30_000))
    progress.close()
    text = " ".join(console.export_text().split())
    assert "900/2000 eta ~37 s (rough)" in text
    assert "ok 60 (6.7%) · filtered 840 · errors 0 · in flight 1,000 ·" in text
    assert "last min: 30.0 rows/s, LLM 20,000 in + 1,000 out tok/s" in text
