"""Bytes moved between actors with large field values inline or in the object store, on a 3-node cluster.

Runs NaturalReasoning and a multi-turn dialogue whose history grows every turn
(``bench/pipelines/long_dialogue.py``) on a 3-node ``ray.cluster_utils.Cluster`` on this
machine (replicas spread over the nodes), with ``offload_threshold`` 0 (everything inline),
512 and 4096 bytes, and prints per run:

- inline: encoded row batches sent between actors (driver -> steps -> sinks);
- put: offloaded values written to the object store (once per value);
- fetched local / remote: offloaded values read back by actors on the node holding them
  (shared memory) or on another node (Ray copies it over; counted per fetching actor, an
  upper bound on Ray's per-node copies);
- moved = inline + put + fetched remote, and its peak per second over the operator
  replicas (sampled from the run's metrics; the driver's admissions and the sinks' fetches
  are only in the totals);
- rows/s and output tokens/s.

Each run is compared with the threshold-0 run of the same pipeline in the same process.

    python -m bench.offload                  # about 4 minutes on 2 cores
    python -m bench.offload --nr-rows 400 --dialogue-rows 100 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import ray
from prometheus_client.parser import text_string_to_metric_families
from ray.cluster_utils import Cluster

import streamflow

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = {
    "natural_reasoning": ROOT / "pipelines" / "natural_reasoning.py",
    "long_dialogue": ROOT / "bench" / "pipelines" / "long_dialogue.py",
}
MOVED_KINDS = ("inline", "offloaded", "fetched_remote")


class PeakRate(threading.Thread):
    """Scrapes the run's metrics every second; keeps the largest bytes/s the operator replicas moved."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.peak = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        last: tuple[float, float] | None = None
        while not self.done.wait(1.0):
            try:
                text = urllib.request.urlopen(self.url, timeout=2).read().decode()
            except OSError:
                continue
            moved = sum(
                sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "streamflow_transfer_bytes_total" and sample.labels.get("kind") in MOVED_KINDS
            )
            now = time.monotonic()
            if last is not None and now > last[0]:
                self.peak = max(self.peak, (moved - last[1]) / (now - last[0]))
            last = (now, moved)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure(pipeline: str, threshold: int, rows: int, out: str, time_scale: float) -> dict[str, Any]:
    port = free_port()
    peak = PeakRate(port)
    peak.start()
    overrides = [
        f"limit={rows}",
        f"offload_threshold={threshold}",
        f"output.dir={out}",
        f"llm.sim.time_scale={time_scale}",
        "progress=off",
        f"metrics.port={port}",
        "events.sample=0",
        "max_inflight=256",
    ]
    try:
        result = streamflow.run(str(PIPELINES[pipeline]), overrides)
    finally:
        peak.done.set()
        peak.join()
    moved = result.transfer
    fetched_local = moved.fetched_bytes - moved.fetched_remote_bytes
    total = moved.inline_bytes + moved.offloaded_bytes + moved.fetched_remote_bytes
    return {
        "pipeline": pipeline,
        "threshold": threshold,
        "rows": result.rows_read,
        "inline_mb": moved.inline_bytes / 1e6,
        "put_mb": moved.offloaded_bytes / 1e6,
        "fetched_local_mb": fetched_local / 1e6,
        "fetched_remote_mb": moved.fetched_remote_bytes / 1e6,
        "moved_mb": total / 1e6,
        "peak_mb_per_s": peak.peak / 1e6,
        "objects_alive_peak": result.objects_alive_peak,
        "rows_per_s": result.rows_per_s,
        "tokens_per_s": result.tokens_per_s,
        "statuses": result.statuses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nr-rows", type=int, default=1000)
    parser.add_argument("--dialogue-rows", type=int, default=200)
    parser.add_argument("--thresholds", type=int, nargs="+", default=[0, 512, 4096])
    parser.add_argument("--time-scale", type=float, default=0.25, help="simulator speed (1.0 = real time)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="WARNING")
    results = []
    try:
        with tempfile.TemporaryDirectory() as out:
            for pipeline, rows in (("natural_reasoning", args.nr_rows), ("long_dialogue", args.dialogue_rows)):
                for threshold in args.thresholds:
                    results.append(measure(pipeline, threshold, rows, out, args.time_scale))
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(f"3-node local cluster, {os.cpu_count()} cores; MB = 10^6 bytes")
    header = (
        f"{'pipeline':<18} {'threshold':>9} {'rows':>5} {'inline':>8} {'put':>8} {'fetch loc':>9} {'fetch rem':>9} "
        f"{'moved':>8} {'vs 0':>6} {'peak/s':>7} {'rows/s':>7} {'vs 0':>6} {'alive max':>9}"
    )
    print(header)
    for r in results:
        base = next(b for b in results if b["pipeline"] == r["pipeline"] and b["threshold"] == 0)
        print(
            f"{r['pipeline']:<18} {r['threshold']:>9} {r['rows']:>5} {r['inline_mb']:>8.1f} {r['put_mb']:>8.1f} "
            f"{r['fetched_local_mb']:>9.1f} {r['fetched_remote_mb']:>9.1f} {r['moved_mb']:>8.1f} "
            f"{r['moved_mb'] / base['moved_mb']:>6.0%} {r['peak_mb_per_s']:>7.1f} {r['rows_per_s']:>7.1f} "
            f"{r['rows_per_s'] / base['rows_per_s']:>6.0%} {r['objects_alive_peak']:>9,}"
        )
        if r["statuses"] != base["statuses"]:
            print(f"  statuses differ from threshold 0: {r['statuses']} vs {base['statuses']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
