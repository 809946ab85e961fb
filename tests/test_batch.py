"""Batch mode (the Ray Data baseline): same rows, same ids, same output as row mode."""

from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

import streamflow
from streamflow import ConfigError, Drop, Flow, Operator, SetupError
from streamflow.config import BatchConfig
from streamflow.runtime.batch import rows_in_flight
from streamflow.testing import read_output

NR_PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "natural_reasoning.py"
SMALL_POOL = ["batch.actors=2", "batch.batches_per_actor=2"]


@pytest.fixture(scope="module")
def both_modes(ray_runtime, tmp_path_factory):
    """The same 100 NaturalReasoning rows, with the same seed, in row mode and in batch mode."""
    out = tmp_path_factory.mktemp("modes")
    common = [f"output.dir={out}", "llm.sim.time_scale=0.01", "progress=off", "limit=100", "seed=7"]
    row = streamflow.run(str(NR_PIPELINE), [*common, "run_id=row"])
    batch = streamflow.run(str(NR_PIPELINE), [*common, "run_id=batch", "mode=batch", "batch.size=16", *SMALL_POOL])
    return row, batch


def test_batch_mode_writes_one_row_per_input_row(both_modes):
    _, batch = both_modes
    frame = read_output(batch)
    assert frame.height == batch.rows_read == 100
    assert frame["row_id"].n_unique() == 100
    assert batch.balanced and dict(frame.group_by("status").len().iter_rows()) == batch.statuses


def test_batch_and_row_mode_write_the_same_schema(both_modes):
    row, batch = both_modes
    assert pq.read_schema(batch.files[0]) == pq.read_schema(row.files[0])


def test_batch_and_row_mode_write_identical_rows(both_modes):
    row, batch = both_modes
    expected, got = read_output(row), read_output(batch)
    assert got["row_id"].to_list() == expected["row_id"].to_list()
    assert_frame_equal(got, expected)
    assert row.statuses == batch.statuses
    assert batch.ok > 0 and batch.filtered  # the slice exercises several outcomes


def test_batch_mode_books_the_same_llm_usage_per_step(both_modes):
    row, batch = both_modes
    assert set(batch.usage) == set(row.usage)
    for step, usage in row.usage.items():
        assert (batch.usage[step].requests, batch.usage[step].completion_tokens) == (
            usage.requests,
            usage.completion_tokens,
        )


class FailsOnSome(Operator):
    fields = {"n_squared": int}

    async def __call__(self, row, ctx):
        if row["n"] % 10 == 3:
            raise ValueError(f"cannot handle {row['n']}")
        if row["n"] % 10 == 5:
            return Drop("five")
        return row.with_fields(n_squared=row["n"] ** 2)


def numbers(tmp_path, count):
    path = tmp_path / "nums.parquet"
    pq.write_table(pa.table({"n": list(range(count))}), path)
    return str(path)


def test_operator_exceptions_become_error_rows_in_batch_mode(ray_runtime, tmp_path, fast_run):
    flow = Flow("numbers").step("square", FailsOnSome())
    overrides = [f"input.path={numbers(tmp_path, 100)}", "mode=batch", "batch.size=8", *SMALL_POOL, *fast_run]
    result = streamflow.run(flow, overrides)
    assert result.statuses == {"ok": 80, "error:value_error": 10, "filtered:five": 10}
    errors = read_output(result).filter(pl.col("status") == "error:value_error")
    assert errors["error"].str.contains("cannot handle").all()


def test_batch_larger_than_the_input_runs_as_one_batch(ray_runtime, tmp_path, fast_run):
    flow = Flow("numbers").step("square", FailsOnSome())
    overrides = [f"input.path={numbers(tmp_path, 7)}", "mode=batch", "batch.size=500", *fast_run]
    result = streamflow.run(flow, overrides)
    assert result.rows_read == 7 and result.balanced
    assert read_output(result)["row_id"].to_list() == [f"0:{i}" for i in range(7)]


class BrokenSetup(Operator):
    async def setup(self, ctx):
        raise RuntimeError("model weights not found")

    async def __call__(self, row, ctx):
        return row


@pytest.mark.slow  # the same setup path as tests/test_run.py's failing-setup test, through Ray Data
def test_failing_setup_aborts_batch_mode_with_its_message(ray_runtime, tmp_path, fast_run):
    overrides = [f"input.path={numbers(tmp_path, 3)}", "mode=batch", *fast_run]
    with pytest.raises(SetupError, match="model weights not found") as info:
        streamflow.run(Flow("broken").step("load", BrokenSetup()), overrides)
    assert type(info.value) is SetupError  # not Ray's wrapper around it
    assert str(info.value).startswith("step 'load': setup() of BrokenSetup failed")


def test_pool_that_starves_the_read_tasks_is_refused(ray_runtime, tmp_path, fast_run):
    overrides = [f"input.path={numbers(tmp_path, 400)}", "mode=batch", "batch.num_cpus=0.5", *fast_run]
    with pytest.raises(ConfigError, match=r"batch\.num_cpus"):
        streamflow.run(Flow("numbers").step("square", FailsOnSome()), overrides)


def test_rows_in_flight_is_actors_times_batches_times_size():
    assert rows_in_flight(BatchConfig(size=50, actors=4, batches_per_actor=5)) == 1000
