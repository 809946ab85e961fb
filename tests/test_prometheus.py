"""A real Prometheus scrapes a NaturalReasoning run; every query of the Grafana dashboard has data that
agrees with the run's summary.

Prometheus is Debian's package (scripts/install-prometheus.sh), started here on 127.0.0.1 with the
configuration docs/observability.md gives for clusters: the run's target comes from a file
(``file_sd_configs``), as a SLURM job writes it. The run is the default one (2,000 rows, simulator
in real time), so rates have a minute of data.

The driver publishes its counts once a second while the run streams, publishes the final ones
when it finishes, and serves them ``metrics.linger_s`` (here 3 s, three scrapes) before it exits:
the last scrape agrees with the summary exactly. While the run streams, a counter lies between
what the event log shows done ``LAG_S`` seconds before a scrape and what it shows done at it.
"""

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import polars as pl
import pytest

from streamflow.events import SINK_STEP, read_events

pytestmark = pytest.mark.prometheus

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "docs" / "grafana" / "streamflow.json"
RUN_ID = "prometheus-test"
STEPS = {"english", "classify", "score", "question"}
LAG_S = 5.0
"""The most a scrape may trail the run: the driver's 1 s update, the 1 s scrape interval, a slow census."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query in the dashboard, panels inside rows included."""

    def walk(panels):
        for panel in panels:
            yield from ((panel.get("title", ""), t["expr"]) for t in panel.get("targets", []) if t.get("expr"))
            yield from walk(panel.get("panels", []))

    return list(walk(json.loads(DASHBOARD.read_text())["panels"]))


class Prometheus:
    """A Prometheus server on 127.0.0.1 and its HTTP API."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.targets = workdir / "targets"
        self.targets.mkdir()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "streamflow",
                    "scrape_timeout": "1s",
                    "file_sd_configs": [{"files": [f"{self.targets}/*.json"], "refresh_interval": "1s"}],
                }
            ],
        }
        (workdir / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = workdir / "prometheus.log"
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
            ],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while not self._ready():
            assert self.process.poll() is None, f"prometheus exited:\n{self.log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"prometheus not ready after 60 s:\n{self.log.read_text()[-2000:]}"
            time.sleep(0.5)

    def _ready(self) -> bool:
        try:
            return urllib.request.urlopen(f"{self.url}/-/ready", timeout=2).status == 200
        except OSError:
            return False

    def api(self, path: str, **params: object) -> object:
        query = urllib.parse.urlencode(params, doseq=True)
        reply = json.loads(urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30).read())
        assert reply["status"] == "success", reply
        return reply["data"]

    def series(self, expr: str, start: float, end: float) -> list[tuple[dict, list[tuple[float, float]]]]:
        """``expr`` evaluated every second from ``start`` to ``end``: (labels, [(time, value)]) per series."""
        data = self.api("query_range", query=expr, start=start, end=end, step=1)
        return [(s["metric"], [(float(t), float(v)) for t, v in s["values"]]) for s in data["result"]]

    def samples(self, selector: str, at: float) -> dict[tuple, list[tuple[float, float]]]:
        """The raw samples of ``selector`` up to ``at``, with their scrape times, keyed by sorted labels."""
        data = self.api("query", query=f"{selector}[30m]", time=at)
        return {
            tuple(sorted((k, v) for k, v in s["metric"].items() if k not in ("instance", "job"))): [
                (float(t), float(v)) for t, v in s["values"]
            ]
            for s in data["result"]
        }

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    binary = shutil.which("prometheus")
    if binary is None:
        if os.geteuid() != 0:
            pytest.skip("prometheus is not installed, and installing it needs root: bash scripts/install-prometheus.sh")
        installed = subprocess.run(
            ["bash", "scripts/install-prometheus.sh"], cwd=REPO, capture_output=True, text=True, check=False
        )
        binary = shutil.which("prometheus")
        if binary is None:
            why = (installed.stdout + installed.stderr).strip()[-400:]
            pytest.skip(f"could not install Debian's prometheus (scripts/install-prometheus.sh): {why}")
    server = Prometheus(binary, tmp_path_factory.mktemp("prometheus"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def scraped(prometheus, tmp_path_factory):
    """The default NaturalReasoning run, its target in a file Prometheus watches; (run dir, manifest, start, end)."""
    out = tmp_path_factory.mktemp("runs")
    port = free_port()
    target = [{"targets": [f"127.0.0.1:{port}"], "labels": {"cluster": "test"}}]
    (prometheus.targets / f"{RUN_ID}.json").write_text(json.dumps(target))
    started = time.time()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamflow.run",
            "pipelines/natural_reasoning.py",
            f"output.dir={out}",
            f"run_id={RUN_ID}",
            f"metrics.port={port}",
            "metrics.linger_s=3",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    ended = time.time()
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"metrics: http://127.0.0.1:{port}/metrics" in done.stderr  # not a fallback port the target misses
    run_dir = out / "natural_reasoning" / RUN_ID
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return run_dir, manifest, started, ended + 2


@pytest.fixture(scope="module")
def events(scraped):
    frame = pl.from_arrow(read_events(str(scraped[0])))
    return frame.with_columns(
        **{name: pl.col(name).dt.epoch("us") / 1e6 for name in ("received_at", "started_at", "ended_at")}
    )


def written_by(events: pl.DataFrame, at: float) -> dict[str, int]:
    """Rows per status the sinks had written by ``at`` (unix seconds)."""
    rows = events.filter((pl.col("step") == SINK_STEP) & (pl.col("ended_at") <= at))
    return dict(rows.group_by("status").len().iter_rows())


def last(points):
    finite = [(t, v) for t, v in points if math.isfinite(v)]
    assert finite, "no finite value"
    return finite[-1]


def test_prometheus_scraped_the_run_every_second_until_it_ended(prometheus, scraped, events):
    _, manifest, _, end = scraped
    expected = prometheus.samples(f'streamflow_rows_expected{{run_id="{RUN_ID}"}}', end)
    ((labels, points),) = expected.items()
    assert dict(labels)["pipeline"] == "natural_reasoning" and dict(labels)["cluster"] == "test"
    values = [v for _, v in points]
    assert set(values) == {manifest["summary"]["rows_read"]}  # published from the driver's start
    stream_s = manifest["timings"]["stream_s"]
    assert len(points) >= 0.8 * stream_s, f"{len(points)} scrapes in a {stream_s:.0f} s stream"
    last_written = float(events.filter(pl.col("step") == SINK_STEP)["ended_at"].max())
    assert points[-1][0] >= last_written  # scraped after the run ended


def test_rows_by_status_in_prometheus_agree_with_the_summary(prometheus, scraped, events):
    _, manifest, _, end = scraped
    finished = prometheus.samples(f'streamflow_rows_finished_total{{run_id="{RUN_ID}"}}', end)
    scraped_at = max(points[-1][0] for points in finished.values())
    last_values = {dict(labels)["status"]: points[-1][1] for labels, points in finished.items()}
    assert sum(written_by(events, end).values()) == manifest["summary"]["rows_read"]
    assert last_values == manifest["statuses"]  # the final figures, served after the run
    assert scraped_at >= float(events.filter(pl.col("step") == SINK_STEP)["ended_at"].max())


def test_llm_tokens_in_prometheus_agree_with_the_summary(prometheus, scraped, events):
    _, manifest, _, end = scraped
    per_series = prometheus.samples(f'streamflow_llm_tokens_total{{run_id="{RUN_ID}"}}', end)
    scraped_at = max(points[-1][0] for points in per_series.values())
    by_kind: dict[str, float] = {}
    for labels, points in per_series.items():
        kind = dict(labels)["kind"]
        by_kind[kind] = by_kind.get(kind, 0.0) + points[-1][1]
    summary = {"prompt": manifest["summary"]["prompt_tokens"], "completion": manifest["summary"]["completion_tokens"]}
    assert by_kind == summary  # the final figures, served after the run
    assert scraped_at >= float(events["ended_at"].max())
    steps = {dict(labels)["step"] for labels in per_series}
    assert steps == set(manifest["usage"])


def test_the_dashboards_run_variable_lists_the_run(prometheus, scraped):
    variable = json.loads(DASHBOARD.read_text())["templating"]["list"][1]
    assert variable["definition"] == "label_values(streamflow_rows_expected, run_id)"
    values = prometheus.api("label/run_id/values", **{"match[]": "streamflow_rows_expected"})
    assert RUN_ID in values


@pytest.mark.parametrize(("title", "expr"), dashboard_queries(), ids=lambda value: value[:40])
def test_every_dashboard_query_has_data_that_agrees_with_the_run(prometheus, scraped, events, title, expr):
    _, manifest, start, end = scraped
    series = prometheus.series(expr.replace("$run", RUN_ID), start, end)
    assert series, f"{title}: no data for {expr}"
    values = [v for _, points in series for _, v in points if math.isfinite(v)]
    assert values, f"{title}: only NaN or infinite values"
    labels = [labels for labels, _ in series]
    summary = manifest["summary"]
    rows = summary["rows_read"]
    llm_steps = set(manifest["usage"])

    def done_bounds() -> tuple[float, int, int]:
        """The last value, the rows surely published by then and the rows written by then (event log).
        An evaluation trails its scrape by less than the 1 s step."""
        evaluated_at, value = last(series[0][1])
        return (
            value,
            sum(written_by(events, evaluated_at - LAG_S - 1).values()),
            sum(written_by(events, evaluated_at).values()),
        )

    if title == "Rows done":
        value, surely, written = done_bounds()
        assert surely <= value <= written <= rows
    elif title == "Rows expected":
        assert set(values) == {rows}
    elif title == "Done":
        value, surely, written = done_bounds()
        assert max(values) <= 1 and surely / rows <= value <= written / rows
    elif title == "ETA":
        assert min(values) >= 0
    elif title.startswith("Rows finished per second"):
        assert {item["status"] for item in labels} <= set(manifest["statuses"])
        assert {"filtered:not_english", "filtered:classifier", "ok"} <= {item["status"] for item in labels}
    elif title == "Rows in flight":
        assert 0 < max(values) <= manifest["config"]["max_inflight"]
    elif title.startswith(("Rows waiting", "Rows being processed")):
        assert {item["step"] for item in labels} == STEPS
        assert min(values) >= 0
    elif title.startswith(("Step throughput", "Operator busy")):
        assert {item["step"] for item in labels} == STEPS and max(values) > 0
    elif title == "Output tokens per second, per step":
        assert {item["step"] for item in labels} == llm_steps and max(values) > 0
    elif title.startswith(("Output tokens per second, per LLM replica", "LLM requests in flight")):
        assert len({item["replica"] for item in labels}) == manifest["config"]["llm"]["replicas"]
        assert max(values) > 0
    elif title.startswith("LLM request latency"):
        assert {item["step"] for item in labels} == llm_steps and min(values) > 0
    elif title.startswith("LLM retries and failures"):
        usage = manifest["usage"].values()
        assert sum(u["retries"] + u["failures"] for u in usage) == 0 and set(values) == {0.0}  # none, as in the summary
    elif title.startswith("Recovery"):
        assert summary["actor_restarts"] == summary["rows_readmitted"] == 0 and set(values) == {0.0}
    else:
        pytest.fail(f"a dashboard panel this test does not know how to check: {title!r}: {expr}")
