"""Helpers for pipeline tests: the same rows through row mode and batch mode, and their output."""

import polars as pl
import pytest

import streamflow


class PipelineRuns:
    @staticmethod
    def both_modes(pipeline, out, *, limit):
        """(row mode result, batch mode result) of ``limit`` sample rows against a fast simulator."""
        common = [f"output.dir={out}", "llm.sim.time_scale=0.01", "progress=off", f"limit={limit}"]
        row = streamflow.run(str(pipeline), common)
        batch = streamflow.run(str(pipeline), [*common, "mode=batch", "batch.size=8", "batch.actors=2"])
        return row, batch

    @staticmethod
    def read(result):
        """A run's output rows, sorted by row id so two runs compare row for row."""
        return pl.read_parquet(f"{result.data_dir}/*.parquet").sort("row_id")


@pytest.fixture(scope="session")
def runs():
    return PipelineRuns()
