"""A pipeline's own quality figures: measured over the whole output, shown in the summary, never fatal."""

import logging

import polars as pl
from rich.console import Console

from streamflow.quality import measure_quality
from streamflow.result import RunResult
from streamflow.summary import print_summary


def write_parts(tmp_path):
    paths = []
    for index, scores in enumerate(([1.0, 0.0], [1.0])):
        path = tmp_path / f"part-{index}.parquet"
        pl.DataFrame({"status": ["ok"] * len(scores), "score": scores}).write_parquet(path)
        paths.append(str(path))
    return paths


def test_figures_cover_every_output_part(tmp_path):
    figures = measure_quality(
        lambda data: {"mean score": data.select(pl.col("score").mean()).collect().item(), "missing": None},
        write_parts(tmp_path),
    )
    assert figures == {"mean score": 2 / 3}


def test_no_metrics_function_or_no_output_means_no_figures(tmp_path):
    assert measure_quality(None, write_parts(tmp_path)) == {}
    assert measure_quality(lambda data: {"n": 1.0}, []) == {}


def test_a_failing_metrics_function_is_a_warning_not_a_failed_run(tmp_path, caplog):
    def broken(data):
        return {"x": data.select(pl.col("no_such_column")).collect().item()}

    with caplog.at_level(logging.WARNING):
        assert measure_quality(broken, write_parts(tmp_path)) == {}
    assert "metrics() failed" in caplog.text and "no_such_column" in caplog.text


def test_summary_lists_the_figures():
    result = RunResult(
        pipeline="p",
        run_id="r",
        run_dir="/tmp/r",
        files=[],
        rows_read=2,
        statuses={"ok": 2},
        usage={},
        wall_s=1.0,
        quality={"dialogues": 2.0, "agreement correctness": 0.4567},
    )
    console = Console(record=True, width=120)
    print_summary(result, console)
    text = console.export_text()
    assert "agreement correctness" in text and "0.457" in text
    assert "dialogues" in text
