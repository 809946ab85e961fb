"""Prometheus metrics of a running row-mode run, served by the driver (default 127.0.0.1:9464).

The driver already polls every replica once a second for its census; it hands each poll's
numbers to ``RunMetrics.update`` as one immutable ``MetricsView``, and a scrape reads the
latest view. Scrapes therefore cost the actors nothing, and the server thread never reads
state the driver's event loop is changing. docs/observability.md lists the metrics and
how to chart them with the Grafana dashboard in ``docs/grafana/``.
"""

from __future__ import annotations

import logging
import socketserver
import threading
from collections.abc import Iterator, Sequence
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import msgspec
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from streamflow.runtime.row.actor import ActorStats
from streamflow.services.llm import Usage, merge_usage
from streamflow.services.llm.usage import LATENCY_BOUNDS_S

__all__ = ["MetricsServer", "MetricsView", "RunMetrics"]

log = logging.getLogger(__name__)


class MetricsView(msgspec.Struct, frozen=True):
    """The driver's numbers at one moment. ``replicas`` are the live incarnations, ``earlier`` dead ones."""

    rows_expected: int = 0
    rows_admitted: int = 0
    rows_inflight: int = 0
    finished: dict[str, int] = {}
    readmitted: int = 0
    restarts: int = 0
    objects_alive: int = 0
    replicas: tuple[ActorStats, ...] = ()
    earlier: tuple[ActorStats, ...] = ()


class RunMetrics:
    """A Prometheus collector over the latest ``MetricsView`` of one run."""

    def __init__(self, pipeline: str, run_id: str) -> None:
        self._labels = {"pipeline": pipeline, "run_id": run_id}
        self._view = MetricsView()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def update(self, view: MetricsView) -> None:
        self._view = view  # one reference swap: a scrape sees either the old or the new view

    def collect(self) -> Iterator[Metric]:
        view = self._view
        yield self._gauge("streamflow_rows_expected", "Input rows this run will admit.", view.rows_expected)
        yield self._counter("streamflow_rows_admitted", "Input rows admitted so far.", view.rows_admitted)
        yield self._gauge("streamflow_rows_inflight", "Rows admitted and not yet written.", view.rows_inflight)
        finished = self._family(CounterMetricFamily, "streamflow_rows_finished", "Rows written, by status.", "status")
        for status, count in sorted(view.finished.items()):
            finished.add_metric([*self._labels.values(), status], count)
        yield finished
        yield self._counter(
            "streamflow_rows_readmitted", "Rows sent through again because their actor died.", view.readmitted
        )
        yield self._counter("streamflow_actor_restarts", "Operator and sink actors Ray restarted.", view.restarts)
        yield self._gauge(
            "streamflow_offloaded_objects_alive", "Offloaded field values still referred to.", view.objects_alive
        )
        yield from self._steps(view)
        yield from self._llm(view)

    def describe(self) -> list[Metric]:
        return []

    # -- families ---------------------------------------------------------------------

    def _steps(self, view: MetricsView) -> Iterator[Metric]:
        queued = self._family(
            GaugeMetricFamily, "streamflow_step_queued_rows", "Rows waiting for a concurrency slot.", "step", "replica"
        )
        running = self._family(
            GaugeMetricFamily, "streamflow_step_running_rows", "Rows an operator works on now.", "step", "replica"
        )
        for actor in view.replicas:
            for step, counts in actor.steps.items():
                labels = [*self._labels.values(), step, str(actor.replica)]
                queued.add_metric(labels, counts.queued)
                running.add_metric(labels, counts.running)
        yield queued
        yield running
        totals: dict[str, list[float]] = {}
        for actor in (*view.replicas, *view.earlier):
            for step, counts in actor.steps.items():
                total = totals.setdefault(step, [0, 0, 0.0])
                total[0] += counts.rows_in
                total[1] += counts.rows_out
                total[2] += counts.busy_s
        names = (
            ("streamflow_step_rows_in", "Rows a step received."),
            ("streamflow_step_rows_out", "Rows a step handed on."),
            ("streamflow_step_busy_seconds", "Seconds a step's operators spent on rows (summed over rows)."),
        )
        for index, (name, text) in enumerate(names):
            family = self._family(CounterMetricFamily, name, text, "step")
            for step, total in sorted(totals.items()):
                family.add_metric([*self._labels.values(), step], total[index])
            yield family
        moved = self._family(
            CounterMetricFamily,
            "streamflow_transfer_bytes",
            "Bytes step actors moved: sent inline, put in the object store, fetched from it (step: the actors'"
            " group of fused steps).",
            "step",
            "kind",
        )
        kinds = ("inline_bytes", "offloaded_bytes", "fetched_bytes", "fetched_remote_bytes")
        per_step: dict[str, list[int]] = {}
        for stats in (*view.replicas, *view.earlier):
            sums = per_step.setdefault(stats.group, [0] * len(kinds))
            for index, kind in enumerate(kinds):
                sums[index] += getattr(stats.transfer, kind)
        for step, sums in sorted(per_step.items()):
            for kind, value in zip(kinds, sums, strict=True):
                moved.add_metric([*self._labels.values(), step, kind.removesuffix("_bytes")], value)
        yield moved

    def _llm(self, view: MetricsView) -> Iterator[Metric]:
        every = (*view.replicas, *view.earlier)
        per_step = merge_usage([s.usage for s in every])
        yield from self._usage("streamflow_llm", "step", per_step)
        per_replica = merge_usage([s.replica_usage for s in every])
        yield from self._usage("streamflow_llm_replica", "replica", per_replica)
        inflight = self._family(
            GaugeMetricFamily,
            "streamflow_llm_replica_inflight_requests",
            "LLM requests waiting for an answer, per replica URL.",
            "replica",
        )
        waiting: dict[str, int] = {}
        for stats in view.replicas:
            for url, count in stats.llm_inflight.items():
                waiting[url] = waiting.get(url, 0) + count
        for url, count in sorted(waiting.items()):
            inflight.add_metric([*self._labels.values(), url], count)
        yield inflight
        yield self._latency(every, per_step)

    def _usage(self, prefix: str, key: str, usage: dict[str, Usage]) -> Iterator[Metric]:
        what = "per step" if key == "step" else "per replica URL"
        requests = self._family(CounterMetricFamily, f"{prefix}_requests", f"LLM requests {what}.", key)
        retries = self._family(CounterMetricFamily, f"{prefix}_retries", f"LLM request retries {what}.", key)
        failures = self._family(CounterMetricFamily, f"{prefix}_failures", f"LLM requests that failed {what}.", key)
        tokens = self._family(CounterMetricFamily, f"{prefix}_tokens", f"LLM tokens {what}.", key, "kind")
        for name, u in sorted(usage.items()):
            labels = [*self._labels.values(), name]
            requests.add_metric(labels, u.requests)
            retries.add_metric(labels, u.retries)
            failures.add_metric(labels, u.failures)
            tokens.add_metric([*labels, "prompt"], u.prompt_tokens)
            tokens.add_metric([*labels, "completion"], u.completion_tokens)
        yield from (requests, retries, failures, tokens)
        if key == "step":
            hits = self._family(CounterMetricFamily, f"{prefix}_cache_hits", "LLM answers from the cache.", key)
            for name, u in sorted(usage.items()):
                hits.add_metric([*self._labels.values(), name], u.cache_hits)
            yield hits

    def _latency(self, every: Sequence[ActorStats], per_step: dict[str, Usage]) -> Metric:
        family = self._family(
            HistogramMetricFamily, "streamflow_llm_request_seconds", "Latency of answered LLM requests.", "step"
        )
        counts: dict[str, list[int]] = {}
        for stats in every:
            for step, buckets in stats.llm_latency.items():
                total = counts.setdefault(step, [0] * len(buckets))
                for index, n in enumerate(buckets):
                    total[index] += n
        for step, buckets in sorted(counts.items()):
            cumulative, running = [], 0
            for bound, n in zip((*map(str, LATENCY_BOUNDS_S), "+Inf"), buckets, strict=True):
                running += n
                cumulative.append((bound, running))
            family.add_metric([*self._labels.values(), step], cumulative, per_step.get(step, Usage()).latency_s)
        return family

    # -- helpers ----------------------------------------------------------------------

    def _family(self, cls: Any, name: str, text: str, *labels: str) -> Any:
        return cls(name, text, labels=[*self._labels, *labels])

    def _gauge(self, name: str, text: str, value: float) -> Metric:
        family = self._family(GaugeMetricFamily, name, text)
        family.add_metric(list(self._labels.values()), value)
        return family

    def _counter(self, name: str, text: str, value: float) -> Metric:
        family = self._family(CounterMetricFamily, name, text)
        family.add_metric(list(self._labels.values()), value)
        return family


class MetricsServer:
    """The HTTP endpoint serving ``RunMetrics`` at ``url``; ``close`` stops it within ``POLL_S``.

    It serves from a thread of its own rather than through ``prometheus_client.start_http_server``,
    whose serving loop polls every 0.5 s: stopping it cost every run that long.
    """

    POLL_S = 0.05

    def __init__(self, metrics: RunMetrics, host: str, port: int) -> None:
        app = make_wsgi_app(metrics.registry)
        try:
            self._server = make_server(host, port, app, _Server, handler_class=_Quiet)
        except OSError as exc:
            if port == 0:
                raise
            log.warning("metrics port %d on %s is taken (%s); serving on a free port instead", port, host, exc)
            self._server = make_server(host, 0, app, _Server, handler_class=_Quiet)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": self.POLL_S}, daemon=True
        )
        self._thread.start()
        self.url = f"http://{host}:{self._server.server_port}/metrics"
        log.info("metrics: %s", self.url)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a line on stderr each."""
