"""Resuming a stopped run in its own directory, and rerunning only the rows that failed."""

import json
import os
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import streamflow
from streamflow import ConfigError, Drop, Flow, Operator
from streamflow.testing import read_output


class Draw(Operator):
    """Deterministic for a given seed: drops some rows, draws a number per row from ctx.rng."""

    fields = {"draw": float}

    async def __call__(self, row, ctx):
        if row["n"] % 10 == 5:
            return Drop("five")
        return row.with_fields(draw=ctx.rng.random())


class Flaky(Operator):
    """Fails on rows ending in 3 while the marker file exists: a bug that is later fixed."""

    fields = {"n_squared": int}

    def __init__(self, marker: str) -> None:
        self.marker = marker

    async def __call__(self, row, ctx):
        if row["n"] % 10 == 3 and os.path.exists(self.marker):
            raise ValueError(f"flaky on {row['n']}")
        return row.with_fields(n_squared=row["n"] ** 2)


def numbers(tmp_path, count=100, name="nums.parquet"):
    path = tmp_path / name
    pq.write_table(pa.table({"n": list(range(count))}), path)
    return str(path)


def keep_only(run_dir, keep):
    """Simulate a run stopped part way: only rows whose id is in ``keep`` stay committed."""
    for part in Path(run_dir, "data").glob("part-*.parquet"):
        table = pq.read_table(part)
        kept = table.filter(pa.array([row_id in keep for row_id in table.column("row_id").to_pylist()]))
        if kept.num_rows:
            pq.write_table(kept, part)
        else:
            part.unlink()


@pytest.fixture(scope="module")
def earlier(ray_runtime, tmp_path_factory):
    """A finished 20-row run to resume against."""
    tmp = tmp_path_factory.mktemp("earlier")
    path = numbers(tmp, 20)
    overrides = [f"input.path={path}", f"output.dir={tmp}", "llm.sim.time_scale=0.01", "progress=off", "seed=3"]
    return path, streamflow.run(Flow("draws").step("draw", Draw()), overrides)


@pytest.mark.parametrize("mode", ["row", pytest.param("batch", marks=pytest.mark.slow)])  # batch resume: same skip set
def test_resume_completes_a_stopped_run_as_an_undisturbed_run_would(ray_runtime, tmp_path, fast_run, mode):
    flow = Flow("draws").step("draw", Draw(), replicas=2)
    path = numbers(tmp_path)
    full = streamflow.run(flow, [f"input.path={path}", f"mode={mode}", *fast_run])
    undisturbed = read_output(full)
    first_40 = {f"0:{offset}" for offset in range(40)}
    keep_only(full.run_dir, first_40)
    os.remove(f"{full.run_dir}/manifest.json")  # crashed before the manifest: run.json is checked

    resumed = streamflow.run(
        flow, [f"input.path={path}", f"resume={full.run_dir}", f"mode={mode}", "max_inflight=8", *fast_run]
    )
    frame = read_output(full)
    assert frame.height == 100 and frame["row_id"].n_unique() == 100
    assert frame.equals(undisturbed)  # kept rows untouched, the rest as the undisturbed run made them
    assert resumed.run_dir == full.run_dir and resumed.statuses == full.statuses
    assert resumed.rows_read == 100 and resumed.balanced
    manifest = json.loads(Path(full.run_dir, "manifest.json").read_text())
    assert manifest["summary"]["rows_read"] == 100 and manifest["ledger_balanced"] is True


def test_retry_errors_reruns_exactly_the_failed_rows(ray_runtime, tmp_path, fast_run):
    marker = tmp_path / "bug"
    marker.touch()
    flow = Flow("flaky").step("square", Flaky(str(marker)), replicas=2)
    path = numbers(tmp_path)
    first = streamflow.run(flow, [f"input.path={path}", *fast_run])
    assert first.statuses == {"ok": 90, "error:value_error": 10}
    before = read_output(first)

    marker.unlink()  # the bug is fixed
    retried = streamflow.run(flow, [f"input.path={path}", f"resume={first.run_dir}", "retry_errors=true", *fast_run])
    frame = read_output(first)
    assert retried.statuses == {"ok": 100} and retried.rows_read == 100 and retried.balanced
    assert frame.height == 100 and frame["row_id"].n_unique() == 100
    assert frame["n_squared"].to_list() == [n * n for n in frame["n"].to_list()]
    was_ok = before.filter(pl.col("status") == "ok")
    assert frame.join(was_ok, on="row_id", how="semi").equals(was_ok)  # ok rows untouched


@pytest.mark.slow  # the same runs as test_retry_errors_reruns_exactly_the_failed_rows, without its second half
def test_resume_without_retry_errors_keeps_error_rows(ray_runtime, tmp_path, fast_run):
    marker = tmp_path / "bug"
    marker.touch()
    flow = Flow("flaky").step("square", Flaky(str(marker)))
    path = numbers(tmp_path, 30)
    first = streamflow.run(flow, [f"input.path={path}", *fast_run])
    marker.unlink()
    resumed = streamflow.run(flow, [f"input.path={path}", f"resume={first.run_dir}", *fast_run])
    assert resumed.statuses == first.statuses == {"ok": 27, "error:value_error": 3}
    assert read_output(first).height == 30


@pytest.mark.slow  # two more runs; test_resume_completes_a_stopped_run_* covers resuming
def test_resume_auto_starts_a_named_run_and_continues_it_when_run_again(ray_runtime, tmp_path, fast_run):
    """What a SLURM job does: the same command starts the run, and after a requeue finishes it."""
    flow = Flow("draws").step("draw", Draw())
    args = [f"input.path={numbers(tmp_path, 30)}", "run_id=job-7", "resume=auto", *fast_run]
    (tmp_path / "draws" / "job-7" / "data").mkdir(parents=True)  # an attempt killed before it recorded its start
    first = streamflow.run(flow, args)
    undisturbed = read_output(first)
    keep_only(first.run_dir, {f"0:{offset}" for offset in range(10)})
    again = streamflow.run(flow, args)
    assert again.run_dir == first.run_dir == str(tmp_path / "draws" / "job-7")
    assert again.rows_read == 30 and again.balanced
    assert read_output(first).equals(undisturbed)


@pytest.mark.parametrize(
    ("override", "key"),
    [("seed=4", "seed=3"), ("limit=10", "limit=None"), ("+params.tag=b", "params.tag=None")],
)
def test_resume_refuses_a_config_that_changes_results(earlier, fast_run, override, key):
    path, result = earlier
    flow = Flow("draws").step("draw", Draw())
    with pytest.raises(ConfigError, match=f"was run with {key}") as info:
        streamflow.run(flow, [f"input.path={path}", f"resume={result.run_dir}", "seed=3", override, *fast_run])
    assert "\n" not in str(info.value)


def test_resume_refuses_other_input_or_pipeline(earlier, tmp_path, fast_run):
    path, result = earlier
    other = numbers(tmp_path, 20, name="other.parquet")
    with pytest.raises(ConfigError, match="input fingerprint"):
        streamflow.run(
            Flow("draws").step("draw", Draw()), [f"input.path={other}", f"resume={result.run_dir}", "seed=3"]
        )
    with pytest.raises(ConfigError, match="pipeline='draws'"):
        streamflow.run(Flow("other").step("draw", Draw()), [f"input.path={path}", f"resume={result.run_dir}", "seed=3"])


def test_resume_of_a_missing_run_dir_is_one_line(tmp_path):
    path = numbers(tmp_path, 5)
    with pytest.raises(ConfigError, match="is not a run directory") as info:
        streamflow.run(Flow("draws").step("draw", Draw()), [f"input.path={path}", f"resume={tmp_path}/nope"])
    assert "\n" not in str(info.value)


def test_retry_errors_needs_resume(tmp_path):
    path = numbers(tmp_path, 5)
    with pytest.raises(ConfigError, match="add resume="):
        streamflow.run(Flow("draws").step("draw", Draw()), [f"input.path={path}", "retry_errors=true"])
