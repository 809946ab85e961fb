"""Helpers for pipeline tests: the same rows through row mode and batch mode, and their output."""

import polars as pl
import pytest

import streamflow


class PipelineRuns:
    @staticmethod
    def row_mode(pipeline, out, *, limit):
        """The row mode result of ``limit`` sample rows against a fast simulator."""
        return streamflow.run(str(pipeline), PipelineRuns._common(out, limit))

    @staticmethod
    def batch_mode(pipeline, out, *, limit):
        """``row_mode``'s rows through batch mode (Ray Data), for a row-for-row comparison."""
        return streamflow.run(str(pipeline), [*PipelineRuns._common(out, limit), "mode=batch", "batch.size=8",
                                              "batch.actors=2"])  # fmt: skip

    @staticmethod
    def both_modes(pipeline, out, *, limit):
        """(row mode result, batch mode result) of the same ``limit`` sample rows."""
        return PipelineRuns.row_mode(pipeline, out, limit=limit), PipelineRuns.batch_mode(pipeline, out, limit=limit)

    @staticmethod
    def _common(out, limit):
        return [f"output.dir={out}", "llm.sim.time_scale=0.01", "progress=off", f"limit={limit}"]

    @staticmethod
    def read(result):
        """A run's output rows, sorted by row id so two runs compare row for row."""
        return pl.read_parquet(f"{result.data_dir}/*.parquet").sort("row_id")


@pytest.fixture(scope="session")
def runs():
    return PipelineRuns()
