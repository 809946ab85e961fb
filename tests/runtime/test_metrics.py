"""The Prometheus view of a run: what one driver poll turns into on /metrics."""

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamflow.runtime.row.actor import ActorStats, StepCounts
from streamflow.runtime.row.prometheus import MetricsView, RunMetrics
from streamflow.services.llm import Usage
from streamflow.services.llm.usage import LATENCY_BOUNDS_S


def samples(metrics: RunMetrics) -> dict:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("pipeline", "run_id")))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def stats(replica: int, *, rows_in: int, latency: list[int], tokens: int, queued: int = 0) -> ActorStats:
    return ActorStats(
        group="ask",
        replica=replica,
        steps={"ask": StepCounts(rows_in=rows_in, running=2, queued=queued)},
        usage={"ask": Usage(requests=sum(latency), completion_tokens=tokens, latency_s=1.5)},
        replica_usage={"http://127.0.0.1:1/v1": Usage(requests=sum(latency), completion_tokens=tokens)},
        llm_latency={"ask": latency},
        llm_inflight={"http://127.0.0.1:1/v1": 3},
    )


def buckets(*pairs: tuple[int, int]) -> list[int]:
    counts = [0] * (len(LATENCY_BOUNDS_S) + 1)
    for index, n in pairs:
        counts[index] = n
    return counts


def test_a_scrape_before_the_first_poll_shows_zeros():
    got = samples(RunMetrics("p", "r1"))
    assert got[("streamflow_rows_admitted_total", ())] == 0
    assert got[("streamflow_rows_inflight", ())] == 0


def test_counts_sum_over_live_and_dead_incarnations_and_gauges_only_over_live_ones():
    metrics = RunMetrics("p", "r1")
    live = stats(0, rows_in=10, latency=buckets((0, 2), (4, 1)), tokens=30, queued=5)
    dead = stats(0, rows_in=4, latency=buckets((len(LATENCY_BOUNDS_S), 1)), tokens=7)
    metrics.update(
        MetricsView(
            rows_expected=100,
            rows_admitted=20,
            rows_inflight=6,
            finished={"ok": 9, "filtered:x": 5},
            readmitted=1,
            restarts=1,
            replicas=(live,),
            earlier=(dead,),
        )
    )
    got = samples(metrics)
    assert got[("streamflow_rows_finished_total", (("status", "filtered:x"),))] == 5
    assert got[("streamflow_step_rows_in_total", (("step", "ask"),))] == 14
    assert got[("streamflow_step_queued_rows", (("replica", "0"), ("step", "ask")))] == 5
    assert got[("streamflow_step_running_rows", (("replica", "0"), ("step", "ask")))] == 2
    assert got[("streamflow_llm_tokens_total", (("kind", "completion"), ("step", "ask")))] == 37
    assert got[("streamflow_llm_replica_inflight_requests", (("replica", "http://127.0.0.1:1/v1"),))] == 3
    # the histogram is cumulative: le=0.05 holds 2, le=1.0 holds 3, +Inf holds all 4
    assert got[("streamflow_llm_request_seconds_bucket", (("le", "0.05"), ("step", "ask")))] == 2
    assert got[("streamflow_llm_request_seconds_bucket", (("le", "1.0"), ("step", "ask")))] == 3
    assert got[("streamflow_llm_request_seconds_bucket", (("le", "+Inf"), ("step", "ask")))] == 4
    assert got[("streamflow_llm_request_seconds_count", (("step", "ask"),))] == 4
    assert got[("streamflow_llm_request_seconds_sum", (("step", "ask"),))] == 3.0


def test_every_metric_the_grafana_dashboard_charts_is_served():
    import json
    import re
    from pathlib import Path

    dashboard = json.loads((Path(__file__).parents[2] / "docs" / "grafana" / "streamflow.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    charted = {name for expr in exprs for name in re.findall(r"\bstreamflow_[a-z_]+", expr)}
    metrics = RunMetrics("p", "r1")
    metrics.update(MetricsView(finished={"ok": 1}, replicas=(stats(0, rows_in=1, latency=buckets((0, 1)), tokens=1),)))
    served = {name for name, _ in samples(metrics)}
    assert charted and charted <= served, charted - served
