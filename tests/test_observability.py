"""Observability of a row-mode run: the event log, the report, the /metrics endpoint, the manifest."""

import contextlib
import json
import socket
import threading
import time
import urllib.request
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

import streamflow
from streamflow.events import EVENT_SCHEMA, SINK_STEP, events_dir, read_events
from streamflow.report import Report, trace_tables
from streamflow.report.__main__ import main as report_main
from streamflow.testing import read_output

NR_PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "natural_reasoning.py"
STEPS = ["english", "classify", "score", "question"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a /metrics page, keyed by (name, sorted labels without pipeline/run_id)."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k not in ("pipeline", "run_id")))
            samples[(sample.name, labels)] = sample.value
    return samples


class Scraper(threading.Thread):
    """Scrapes /metrics every 0.2 s while a run goes; keeps every successful scrape."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.scrapes: list[dict] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(OSError):  # not up yet, or already closed
                self.scrapes.append(scrape(self.url))
            time.sleep(0.2)


@pytest.fixture(scope="module")
def scraped_run(ray_runtime, tmp_path_factory):
    """A NaturalReasoning run slow enough to be scraped a few times (simulator at 0.2x real time)."""
    out = tmp_path_factory.mktemp("observed")
    port = free_port()
    scraper = Scraper(f"http://127.0.0.1:{port}/metrics")
    scraper.start()
    overrides = [
        f"output.dir={out}",
        "llm.sim.time_scale=0.2",
        "progress=off",
        "limit=200",
        f"metrics.port={port}",
        "events.flush_s=1",
    ]
    try:
        result = streamflow.run(str(NR_PIPELINE), overrides)
    finally:
        scraper.stop.set()
        scraper.join()
    return result, scraper.scrapes


@pytest.fixture(scope="module")
def run(scraped_run):
    return scraped_run[0]


@pytest.fixture(scope="module")
def events(run):
    return pl.from_arrow(read_events(run.run_dir))


# -- the event log ---------------------------------------------------------------------


def test_event_files_are_parquet_with_the_documented_schema(run):
    files = sorted(Path(events_dir(run.run_dir)).glob("*.parquet"))
    assert files, "no event files written"
    for path in files:
        assert pq.read_schema(path).equals(EVENT_SCHEMA, check_metadata=False)


def test_every_output_row_reached_its_sink_once_with_its_status(run, events):
    written = events.filter(pl.col("step") == SINK_STEP)
    assert written["row_id"].n_unique() == written.height == run.rows_out
    by_status = dict(written.group_by("status").len().iter_rows())
    assert by_status == run.statuses == dict(read_output(run).group_by("status").len().iter_rows())


def test_each_step_has_one_hop_per_row_it_processed(run, events):
    hops = dict(events.group_by("step").len().iter_rows())
    assert hops["english"] == run.rows_read  # the first step sees every row
    assert set(hops) <= {*STEPS, SINK_STEP}
    finished_after = (
        events.filter((pl.col("step") != SINK_STEP) & (pl.col("next_step") == "END")).group_by("status").len()
    )
    assert dict(finished_after.iter_rows()) == run.statuses


def test_tokens_and_llm_calls_per_step_match_the_run_usage(run, events):
    per_step = events.group_by("step").agg(
        pl.col("llm_calls").sum(), pl.col("prompt_tokens").sum(), pl.col("completion_tokens").sum()
    )
    for step, calls, prompt, completion in per_step.iter_rows():
        usage = run.usage.get(step)
        if usage is None:
            assert calls == prompt == completion == 0
            continue
        assert (calls, prompt, completion) == (usage.requests, usage.prompt_tokens, usage.completion_tokens)


def test_hop_timestamps_are_in_order(events):
    hops = events.filter(pl.col("step") != SINK_STEP)
    assert (hops["admitted_at"] <= hops["sent_at"]).all()
    assert (hops["sent_at"] <= hops["received_at"]).all()
    assert (hops["received_at"] <= hops["started_at"]).all()
    assert (hops["started_at"] <= hops["ended_at"]).all()


def test_sampling_records_all_hops_of_some_rows_and_none_of_the_others(ray_runtime, tmp_path):
    overrides = [
        f"output.dir={tmp_path}",
        "llm.sim.time_scale=0.01",
        "progress=off",
        "limit=200",
        "events.sample=0.3",
        "metrics.enabled=false",
    ]
    result = streamflow.run(str(NR_PIPELINE), overrides)
    events = pl.from_arrow(read_events(result.run_dir))
    roots = events["root_id"].unique()
    assert 20 < roots.len() < 110  # about 60 of 200
    sinks = events.filter(pl.col("step") == SINK_STEP)
    assert set(sinks["root_id"]) == set(roots)  # a sampled row is followed to its end
    first = events.filter(pl.col("step") == "english")
    assert set(first["root_id"]) == set(roots)  # ...and from its start


@pytest.mark.slow  # one more run; test_sampling_records_all_hops_* covers event sampling
def test_sample_zero_writes_no_event_log(ray_runtime, tmp_path):
    overrides = [f"output.dir={tmp_path}", "llm.sim.time_scale=0.01", "progress=off", "limit=20", "events.sample=0"]
    result = streamflow.run(str(NR_PIPELINE), overrides)
    assert not Path(events_dir(result.run_dir)).exists()
    assert report_main([result.run_dir, "--no-plots"]) == 0  # the report still prints the statuses


# -- the report --------------------------------------------------------------------------


def test_report_breakdown_adds_up_to_100_percent(run):
    report = Report.load(run.run_dir)
    breakdown = report.breakdown()
    assert breakdown["component"].to_list() == ["init", "transport", "queueing", "processing"]
    assert breakdown["share"].sum() == pytest.approx(1.0)
    assert (breakdown["p99_s"] >= breakdown["p50_s"]).all()
    operators = report.operators()
    assert operators["step"].to_list() == [*STEPS, SINK_STEP]
    shares = operators.select(pl.sum_horizontal(f"{c}_share" for c in ("init", "transport", "queueing", "processing")))
    assert shares.to_series().to_list() == pytest.approx([1.0] * operators.height)


def test_report_status_table_matches_the_output_and_names_the_filtering_step(run):
    statuses = Report.load(run.run_dir).statuses()
    assert dict(zip(statuses["status"], statuses["rows"], strict=True)) == run.statuses
    assert statuses["share"].sum() == pytest.approx(1.0)
    steps = dict(zip(statuses["status"], statuses["step"], strict=True))
    assert steps["filtered:not_english"] == "english"
    assert steps["filtered:classifier"] == "classify"


def test_report_prints_tables_and_saves_three_plots(run, tmp_path, capsys):
    assert report_main([run.run_dir, "--plots-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for heading in ("Rows per status", "Where a row's time goes", "Per operator", "filtered:classifier"):
        assert heading in printed
    for name in ("throughput.png", "inflight.png", "latency_cdf.png"):
        png = tmp_path / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000


def test_trace_shows_one_rows_path_and_output(run, events):
    ok = read_output(run).filter(pl.col("status") == "ok")["row_id"][0]
    console = Console(record=True, width=200)
    for table in trace_tables(Report.load(run.run_dir), ok):
        console.print(table)
    text = console.export_text()
    for step in STEPS:
        assert f"{step}[0]" in text
    assert "ok → END" in text and "final_answer" in text


def test_report_on_a_directory_that_is_no_run_fails_in_one_line(tmp_path, capsys):
    assert report_main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a run directory" in err and "\n" not in err


def test_report_with_an_unknown_trace_id_exits_2_with_one_line(run, capsys):
    assert report_main([run.run_dir, "--trace", "9:99999"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("streamflow.report: error: row '9:99999' is not in ") and err.count("\n") == 1
    assert "ids look like '" in err


@pytest.mark.parametrize(
    ("argv", "names"),
    [([], "required: run_dir"), (["RUN", "--fast"], "unrecognized arguments: --fast"), (["RUN", "--trace"], "--trace")],
)
def test_report_with_wrong_arguments_exits_2_with_one_line_and_the_usage(argv, names, capsys):
    assert report_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("streamflow.report: error: ") and err.count("\n") == 1
    assert names in err and "usage: python -m streamflow.report [-h] [--trace ROW_ID]" in err


def test_report_refuses_a_plots_directory_it_cannot_write_before_printing(run, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert report_main([run.run_dir, "--plots-dir", str(blocker / "plots")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert f"cannot write the plots to {blocker / 'plots'}" in err and "--no-plots" in err


def test_report_printed_to_a_pipe_keeps_every_column_of_the_trace_whole(run, capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    ok = read_output(run).filter(pl.col("status") == "ok")["row_id"][0]
    assert report_main([run.run_dir, "--trace", ok]) == 0
    printed = capsys.readouterr().out  # captured: not a terminal, as in a log file or a pipe
    hops = printed.split("Output of row")[0]
    assert "…" not in hops  # (output fields longer than 300 characters end in "… (N chars)", on purpose)
    header = next(line for line in printed.splitlines() if "status → next" in line)
    for column in ("at (s)", "step", "init", "transport", "queueing", "processing", "LLM calls", "tokens in/out"):
        assert f" {column} " in header


# -- metrics and manifest ----------------------------------------------------------------


def test_metrics_endpoint_reports_rows_steps_and_llm_during_the_run(run, scraped_run):
    scrapes = scraped_run[1]
    live = [s for s in scrapes if s.get(("streamflow_rows_admitted_total", ()), 0) > 0]
    assert live, f"no scrape saw admitted rows ({len(scrapes)} scrapes)"
    last = live[-1]
    assert last[("streamflow_rows_expected", ())] == 200
    assert ("streamflow_rows_inflight", ()) in last
    assert any(name == "streamflow_step_queued_rows" and dict(labels)["step"] == "classify" for name, labels in last)
    assert any(name == "streamflow_step_rows_in_total" for name, _ in last)
    finished = {dict(k[1])["status"]: v for k, v in last.items() if k[0] == "streamflow_rows_finished_total"}
    assert all(finished[status] <= run.statuses[status] for status in finished)
    # tokens per step and the LLM latency histogram, whose +Inf bucket counts every answered request
    tokens = {dict(k[1])["step"] for k in last if k[0] == "streamflow_llm_tokens_total"}
    assert "classify" in tokens
    counts = [v for k, v in last.items() if k[0] == "streamflow_llm_request_seconds_count"]
    assert counts and all(c > 0 for c in counts)


def test_metrics_listen_on_localhost_only_and_stop_with_the_run(run):
    assert run.metrics_url is not None and run.metrics_url.startswith("http://127.0.0.1:")
    with pytest.raises(OSError):
        urllib.request.urlopen(run.metrics_url, timeout=2)


def test_manifest_records_how_the_output_was_made(run):
    manifest = json.loads(Path(run.run_dir, "manifest.json").read_text())
    assert manifest["statuses"] == run.statuses
    assert manifest["input"]["fingerprint"] and manifest["versions"]["ray"]
    assert set(manifest["timings"]) >= {"started_at", "finished_at", "wall_s", "start_s", "stream_s", "finish_s"}
    assert manifest["events"]["dir"] == "events" and manifest["events"]["files"] > 0
    assert manifest["usage"]["classify"]["prompt_tokens"] == run.usage["classify"].prompt_tokens
