"""Shared fixtures: one Ray runtime per test session, started only by tests that need it."""

import shutil
import tempfile

import pytest


@pytest.fixture(scope="session")
def ray_runtime():
    """A local Ray runtime shared by the whole session (starting one costs seconds)."""
    import ray

    temp_dir = tempfile.mkdtemp(prefix="sf-ray-")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp_dir, logging_level="WARNING")
    yield ray
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def fast_run(tmp_path):
    """Overrides for a quick run: simulator 100x faster than real time, output in tmp_path."""
    return [f"output.dir={tmp_path}", "llm.sim.time_scale=0.01", "progress=off"]
