"""Run a pipeline on a 3-node local Ray cluster and remove a worker node mid-run.

Used by ``test_chaos`` in its own process (a test session already holds a Ray runtime):

    python -P tests/cluster_node_loss.py PIPELINE RUN_ID key=value ...   # -P: tests/ must not shadow operators/

Prints one JSON line: the run directory, restarts, rows re-admitted, the node removed, and the
bytes of offloaded values actors fetched from other nodes.
"""

import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

import streamflow


def remove_a_worker_once_rows_are_written(cluster, workers, data, run_id, removed):
    """Once the first part is committed, remove the worker node hosting most of the run's actors."""
    from ray._private import state  # GCS actor table: works without the dashboard

    deadline = time.monotonic() + 120
    while not any(data.glob("*.parquet")):
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)
    hosted = Counter(
        actor["Address"]["NodeID"]
        for actor in state.actors().values()
        if actor["State"] == "ALIVE" and actor.get("Name", "").startswith(f"streamflow-{run_id}-")
    )
    node = max(workers, key=lambda worker: hosted[worker.node_id])
    cluster.remove_node(node)
    removed.append({"node": node.node_id, "actors": hosted[node.node_id]})


def main() -> None:
    pipeline, run_id, *overrides = sys.argv[1:]
    out = next(o.split("=", 1)[1] for o in overrides if o.startswith("output.dir="))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="WARNING")
    data = Path(out, Path(pipeline).stem, run_id, "data")
    removed: list[str] = []
    killer = threading.Thread(
        target=remove_a_worker_once_rows_are_written, args=(cluster, workers, data, run_id, removed), daemon=True
    )
    killer.start()
    try:
        result = streamflow.run(pipeline, [*overrides, f"run_id={run_id}"])
    finally:
        killer.join(timeout=5)
        ray.shutdown()
        cluster.shutdown()
    print(
        json.dumps(
            {
                "run_dir": result.run_dir,
                "restarts": result.restarts,
                "readmitted": result.readmitted,
                "removed": removed,
                "fetched_remote_bytes": result.transfer.fetched_remote_bytes,
            }
        )
    )


if __name__ == "__main__":
    main()
