"""Large field values through the object store in a real run: same output, fewer bytes, bounded store."""

from pathlib import Path

import pytest

import streamflow
from streamflow.testing import read_output

NR_PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "natural_reasoning.py"


def run(tmp_path, *overrides):
    base = [f"output.dir={tmp_path}", "llm.sim.time_scale=0.05", "progress=off", "metrics.enabled=false"]
    return streamflow.run(str(NR_PIPELINE), [*base, *overrides])


def test_offloading_changes_the_bytes_sent_inline_and_nothing_in_the_output(ray_runtime, tmp_path):
    inline = run(tmp_path, "limit=60", "offload_threshold=0", "run_id=inline")
    offloaded = run(tmp_path, "limit=60", "offload_threshold=512", "run_id=offloaded")
    assert read_output(offloaded).equals(read_output(inline))
    assert inline.transfer.offloaded_objects == 0
    assert offloaded.transfer.offloaded_objects >= 60  # every input document is above 512 bytes
    assert offloaded.transfer.inline_bytes < inline.transfer.inline_bytes / 5
    assert offloaded.transfer.fetched_bytes > offloaded.transfer.offloaded_bytes  # fetched at several hops


@pytest.mark.slow  # 480 rows at 30x real time; the test above covers offloading with fewer rows
def test_the_object_store_holds_only_the_rows_in_flight(ray_runtime, tmp_path):
    result = run(tmp_path, "limit=480", "max_inflight=16", "offload_threshold=512", "llm.sim.time_scale=0.1")  # 30x
    created = result.transfer.offloaded_objects
    assert created >= 480
    assert 0 < result.objects_alive_peak < 16 * 4 + 60, (result.objects_alive_peak, created)
