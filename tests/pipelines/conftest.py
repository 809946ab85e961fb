"""Helpers for pipeline tests: the same rows through row mode and batch mode, and their output."""

import pytest

import streamflow
from streamflow.testing import read_output


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

    read = staticmethod(read_output)


@pytest.fixture(scope="session")
def runs():
    return PipelineRuns()
