"""Tables (the run summary, the report) are readable at any width and off a terminal: full width in a
file or a pipe, never a word cut ("reques…"), one record per row when a terminal is too narrow."""

import io

import pytest
from rich.console import Console
from rich.table import Table

from streamflow.result import RunResult
from streamflow.services.llm import Usage
from streamflow.summary import output_console, print_summary, print_tables, summary_tables

LONG_DIR = "/scratch/a-rather-long-project-directory/outputs/natural_reasoning/20261203-223607-ab12"


def a_result() -> RunResult:
    usage = {
        "classify": Usage(requests=1327, prompt_tokens=752_385, completion_tokens=1327, latency_s=17_800.0),
        "question": Usage(requests=156, prompt_tokens=1_014_187, completion_tokens=77_053, latency_s=2_390.0),
    }
    return RunResult(
        pipeline="natural_reasoning",
        run_id="20261203-223607-ab12",
        run_dir=LONG_DIR,
        files=[f"{LONG_DIR}/data/part-000-00000.parquet"],
        rows_read=2000,
        statuses={"ok": 145, "filtered:classifier": 1159, "filtered:not_english": 673, "error:llm_timeout": 23},
        usage=usage,
        wall_s=62.1,
    )


class NotATerminal(io.StringIO):
    """What a log file, a pipe to ``tee`` or a SLURM job's output is to rich."""

    def isatty(self) -> bool:
        return False


def cell_words(tables: list[Table]) -> list[str]:
    words = []
    for table in tables:
        for column in table.columns:
            for cell in [column.header, *column.cells]:
                words += str(cell).split()
    return words


@pytest.fixture
def no_columns(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)


def test_a_summary_written_to_a_file_is_as_wide_as_its_tables_and_every_word_is_whole(no_columns):
    out = NotATerminal()
    print_summary(a_result(), output_console(out))
    text = out.getvalue()
    assert "…" not in text
    assert "┃ step     ┃ requests ┃ retries ┃ failures ┃ cache hits ┃ tokens in ┃ tokens out ┃ mean latency ┃" in text
    assert "│ question │      156 │       0 │        0 │          0 │ 1,014,187 │     77,053 │      15.32 s │" in text
    for word in cell_words(summary_tables(a_result())):
        assert word in text


def test_lines_naming_paths_are_never_broken_off_a_terminal(no_columns):
    out = NotATerminal()
    print_summary(a_result(), output_console(out))
    lines = out.getvalue().splitlines()
    assert f"output: {LONG_DIR}/data/*.parquet (1 parts)" in lines


def test_columns_in_the_environment_still_set_the_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "50")
    assert output_console(NotATerminal()).width == 50


@pytest.mark.parametrize("width", [30, 50, 80])
def test_a_table_too_wide_for_the_terminal_is_printed_as_records_with_every_word_whole(width):
    console = Console(record=True, width=width, file=io.StringIO())
    print_tables(console, summary_tables(a_result()))
    text = "\n".join(line.rstrip() for line in console.export_text().splitlines())
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    for word in cell_words(summary_tables(a_result())):
        assert word in text
    assert "question\n  requests     156\n" in text  # the usage table as records: a row, then column and value


def test_a_table_that_fits_stays_a_table_and_wraps_only_between_words():
    console = Console(record=True, width=92, file=io.StringIO())  # the usage table needs 98 on one line
    print_tables(console, summary_tables(a_result())[1:])
    text = console.export_text()
    assert "┃ step     ┃ requests ┃" in text and "1,014,187" in text and "…" not in text
