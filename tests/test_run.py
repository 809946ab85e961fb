"""Running pipelines end to end on Ray: output, ledger, and every kind of bad input."""

import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import streamflow
from streamflow import ConfigError, Drop, Flow, Operator, SetupError
from streamflow.testing import read_output

NR_PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "natural_reasoning.py"

STATUS = r"^(ok|filtered:[a-z_]+|error:[a-z_]+)$"


@pytest.fixture(scope="module")
def nr_slice(ray_runtime, tmp_path_factory):
    out = tmp_path_factory.mktemp("nr")
    overrides = [f"output.dir={out}", "llm.sim.time_scale=0.01", "progress=off", "limit=150", "output.sinks=2"]
    return streamflow.run(str(NR_PIPELINE), overrides)


def test_natural_reasoning_writes_one_row_per_input_row(nr_slice):
    frame = read_output(nr_slice)
    assert frame.height == nr_slice.rows_read == 150
    assert frame["row_id"].n_unique() == 150
    assert frame["status"].str.contains(STATUS).all()


def test_counts_per_status_add_up_and_match_the_output(nr_slice):
    frame = read_output(nr_slice)
    counted = dict(frame.group_by("status").len().iter_rows())
    assert counted == nr_slice.statuses
    assert nr_slice.balanced
    assert nr_slice.ok + sum(nr_slice.filtered.values()) + sum(nr_slice.errors.values()) == 150


def test_output_has_input_and_generated_columns_with_real_types(nr_slice):
    frame = read_output(nr_slice)
    schema = frame.schema
    for column in ("doc_id", "text", "lang", "section", "language", "language_score", "reasoning_label"):
        assert column in schema
    assert schema["section"] == pl.Int32  # ints stay ints
    assert schema["language_score"] == pl.Float64
    assert isinstance(schema["scores"], pl.Struct)  # nested JSON is a struct, not a string
    assert {f.name for f in schema["scores"].fields} == {"completeness", "complexity", "correctness", "reasoning"}
    assert schema["status"] == pl.String and schema["error"] == pl.String


def test_ok_rows_carry_a_question_and_a_boxed_answer(nr_slice):
    ok = read_output(nr_slice).filter(pl.col("status") == "ok")
    assert ok.height == nr_slice.ok > 0
    assert (ok["question"].str.len_chars() > 0).all()
    assert (ok["final_answer"].str.len_chars() > 0).all()
    assert ok["solution"].str.contains(r"\\boxed\{").all()


def test_filtered_rows_name_the_step_that_rejected_them(nr_slice):
    assert nr_slice.filtered.get("not_english", 0) > 0
    assert nr_slice.filtered.get("classifier", 0) > 0


def test_llm_tokens_and_manifest_are_recorded(nr_slice):
    import json
    from pathlib import Path

    assert nr_slice.prompt_tokens > 0 and nr_slice.completion_tokens > 0
    manifest = json.loads((Path(nr_slice.run_dir) / "manifest.json").read_text())
    assert manifest["ledger_balanced"] is True
    assert manifest["summary"]["rows_read"] == 150
    assert manifest["input"]["fingerprint"]


# -- bad input: config and path problems fail in one line before any work ------------------


def write(path, table):
    pq.write_table(table, path)
    return str(path)


def test_nonexistent_path_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist") as info:
        streamflow.run(str(NR_PIPELINE), [f"input.path={tmp_path}/nope.parquet"])
    assert "\n" not in str(info.value)


def test_empty_input_is_refused(tmp_path):
    path = write(tmp_path / "empty.parquet", pa.table({"text": pa.array([], pa.string())}))
    with pytest.raises(ConfigError, match="no rows"):
        streamflow.run(str(NR_PIPELINE), [f"input.path={path}"])


def test_missing_text_column_names_the_columns_that_exist(tmp_path):
    path = write(tmp_path / "body.parquet", pa.table({"body": ["a"], "n": [1]}))
    with pytest.raises(ConfigError, match="text") as info:
        streamflow.run(str(NR_PIPELINE), [f"input.path={path}"])
    assert "body" in str(info.value)


def test_corrupt_parquet_is_named(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet at all")
    with pytest.raises(ConfigError, match=r"bad\.parquet"):
        streamflow.run(str(NR_PIPELINE), [f"input.path={bad}"])


def test_unreachable_llm_base_url_fails_before_work_starts(tmp_path):
    with pytest.raises(ConfigError, match="unreachable"):
        streamflow.run(str(NR_PIPELINE), ["llm.base_url=http://127.0.0.1:9/v1", f"output.dir={tmp_path}"])
    assert not (tmp_path / "natural_reasoning").exists()


# -- bad rows: recorded as errors while the run goes on ------------------------------------


def test_bad_rows_become_errors_and_the_run_goes_on(ray_runtime, tmp_path, fast_run):
    huge = "The kernel returns the number of bytes read. " * 120_000  # ~5 MB
    table = pa.table({"text": [None, "A normal English sentence about system calls and errors.", huge, ""]})
    path = write(tmp_path / "rows.parquet", table)
    result = streamflow.run(str(NR_PIPELINE), [f"input.path={path}", *fast_run])
    frame = read_output(result)
    assert frame.height == 4 and result.balanced
    assert frame["status"][0] == "error:bad_input" and "is null" in frame["error"][0]
    assert frame["text"].str.len_chars()[2] == len(huge)  # the 5 MB document is kept whole
    assert frame["status"][2] != "error:llm_context_length"  # prompts are cut to fit


class FailsOnSome(Operator):
    fields = {"n_squared": int}

    async def __call__(self, row, ctx):
        if row["n"] % 10 == 3:
            raise ValueError(f"cannot handle {row['n']}")
        if row["n"] % 10 == 5:
            return Drop("five")
        return row.with_fields(n_squared=row["n"] ** 2)


def test_library_flow_isolates_operator_exceptions(ray_runtime, tmp_path, fast_run):
    path = write(tmp_path / "nums.parquet", pa.table({"n": list(range(100))}))
    flow = Flow("numbers").step("square", FailsOnSome(), replicas=2)
    result = streamflow.run(flow, [f"input.path={path}", *fast_run])
    assert result.statuses == {"ok": 80, "error:value_error": 10, "filtered:five": 10}
    frame = read_output(result)
    errors = frame.filter(pl.col("status") == "error:value_error")
    assert errors["error"].str.contains("cannot handle").all()
    assert frame.filter(pl.col("status") == "ok")["n_squared"].dtype == pl.Int64


class BrokenSetup(Operator):
    async def setup(self, ctx):
        raise RuntimeError("model weights not found")

    async def __call__(self, row, ctx):
        return row


def test_failing_setup_aborts_with_its_message_instead_of_hanging(ray_runtime, tmp_path, fast_run):
    path = write(tmp_path / "nums.parquet", pa.table({"n": [1, 2, 3]}))
    flow = Flow("broken").step("load", BrokenSetup())
    with pytest.raises(SetupError, match="model weights not found"):
        streamflow.run(flow, [f"input.path={path}", *fast_run])


def test_wrongly_typed_value_is_a_schema_error_on_its_row(ray_runtime, tmp_path, fast_run):
    class Liar(Operator):
        fields = {"score": int}

        async def __call__(self, row, ctx):
            return row.with_fields(score="high" if row["n"] == 0 else row["n"])

    path = write(tmp_path / "nums.parquet", pa.table({"n": [0, 1, 2]}))
    result = streamflow.run(Flow("liar").step("score", Liar()), [f"input.path={path}", *fast_run])
    assert result.statuses == {"error:schema": 1, "ok": 2}
    frame = read_output(result)
    assert "column 'score' is str" in frame["error"][0]


class Split(Operator):
    fields = {"part": int}

    async def __call__(self, row, ctx):
        return [row.with_fields(part=k) for k in range(row["n"] % 3 + 1)]


def test_fan_out_rows_complete_when_all_their_pieces_are_written(ray_runtime, tmp_path, fast_run):
    path = write(tmp_path / "nums.parquet", pa.table({"n": list(range(30))}))
    flow = Flow("split").step("split", Split()).step("check", FailsOnSome())
    result = streamflow.run(flow, [f"input.path={path}", *fast_run])
    assert result.rows_read == result.rows_done == 30
    assert result.rows_out == sum(n % 3 + 1 for n in range(30)) == read_output(result).height
    assert result.balanced


def test_row_latency_percentiles_are_reported(nr_slice):
    assert 0 < nr_slice.latency.quantile(0.5) <= nr_slice.latency.quantile(0.99) <= nr_slice.wall_s * 1.05
    assert nr_slice.latency.total == 150


# -- problems in the input data found mid-run: recorded where they are, the run goes on -----

MEASURE_PIPELINE = """
from streamflow import Flow, Operator


class Measure(Operator):
    fields = {"chars": int}

    async def __call__(self, row, ctx):
        return row.with_fields(chars=len(row["text"]))


def build(params):
    return Flow("measure", requires=["text"]).step("measure", Measure())
"""


@pytest.fixture
def measure_pipeline(tmp_path):
    """A pipeline file with one cheap step that reads ``text``, for runs through the command line."""
    path = tmp_path / "measure.py"
    path.write_text(MEASURE_PIPELINE)
    return str(path)


def write_large_jsonl(path, rows, last_line):
    """``rows`` documents of about 400 bytes each, then ``last_line``: the last line is past the first MiB."""
    with open(path, "w") as handle:
        for n in range(rows):
            handle.write(json.dumps({"text": f"document {n}: " + "a few words " * 32, "n": n}) + "\n")
        handle.write(last_line + "\n")
    assert path.stat().st_size > 1 << 20
    return str(path)


def corrupt_last_row_group(path):
    """Flip bytes in the middle of the last row group's first column chunk: its pages no longer decode."""
    meta = pq.ParquetFile(path).metadata
    chunk = meta.row_group(meta.num_row_groups - 1).column(0)
    middle = (chunk.dictionary_page_offset or chunk.data_page_offset) + chunk.total_compressed_size // 2
    data = bytearray(path.read_bytes())
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    path.write_bytes(bytes(data))


def test_a_bad_line_at_the_end_of_a_large_jsonl_file_is_recorded_and_the_run_exits_0(
    ray_runtime, tmp_path, fast_run, measure_pipeline, capsys
):
    import importlib

    path = write_large_jsonl(tmp_path / "docs.jsonl", 3000, '{"text": "cut off in the mid')
    run_module = importlib.import_module("streamflow.run")
    status = run_module.main(
        [measure_pipeline, f"input.path={path}", "llm.backend=none", "output.part_rows=1000", *fast_run]
    )
    assert status == 0
    assert "error: bad_input" in capsys.readouterr().out
    (run_dir,) = (tmp_path / "measure").iterdir()
    frame = read_output(run_dir)
    assert frame.height == 3001 and frame["row_id"].n_unique() == 3001
    assert dict(frame.group_by("status").len().iter_rows()) == {"ok": 3000, "error:bad_input": 1}
    bad = frame.filter(pl.col("status") == "error:bad_input")
    assert bad["row_id"].to_list() == ["0:3000"] and "docs.jsonl' line 3001 is not valid JSON" in bad["error"][0]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["ledger_balanced"] is True and manifest["summary"]["rows_read"] == 3001


@pytest.mark.parametrize("mode", ["row", pytest.param("batch", marks=pytest.mark.slow)])  # 3000 rows through Ray Data
def test_a_value_of_the_wrong_type_late_in_a_jsonl_file_is_a_bad_input_row(ray_runtime, tmp_path, fast_run, mode):
    path = write_large_jsonl(tmp_path / "docs.jsonl", 3000, '{"text": 12345, "n": 3000}')
    flow = Flow("lengths", requires=["text"]).step("measure", Lengths())
    result = streamflow.run(flow, [f"input.path={path}", f"mode={mode}", "llm.backend=none", *fast_run])
    assert result.statuses == {"ok": 3000, "error:bad_input": 1} and result.rows_read == 3001 and result.balanced
    bad = read_output(result).filter(pl.col("status") == "error:bad_input")
    assert bad.select("row_id", "text", "n", "chars").rows() == [("0:3000", None, 3000, None)]
    assert "docs.jsonl' line 3001: column 'text' is int, the input schema says string" in bad["error"][0]


@pytest.mark.parametrize("mode", ["row", pytest.param("batch", marks=pytest.mark.slow)])  # same reader in both
def test_a_corrupt_page_in_the_last_row_group_is_counted_unreadable_and_the_rest_is_done(
    ray_runtime, tmp_path, fast_run, mode
):
    path = tmp_path / "docs.parquet"
    table = pa.table({"text": [f"document {n} " * 8 for n in range(300)], "n": list(range(300))})
    pq.write_table(table, path, row_group_size=100, compression="zstd")
    corrupt_last_row_group(path)
    flow = Flow("lengths", requires=["text"]).step("measure", Lengths())
    result = streamflow.run(flow, [f"input.path={path}", f"mode={mode}", "llm.backend=none", *fast_run])
    assert result.statuses == {"ok": 200} and result.rows_read == 300 and result.balanced
    assert [(part.path, part.where, part.rows) for part in result.unreadable] == [(str(path), "row group 2", 100)]
    assert sorted(read_output(result)["n"].to_list()) == list(range(200))
    manifest = json.loads((Path(result.run_dir) / "manifest.json").read_text())
    assert manifest["summary"]["unreadable_rows"] == 100 and manifest["ledger_balanced"] is True
    assert manifest["summary"]["unreadable"][0]["where"] == "row group 2"


class Lengths(Operator):
    fields = {"chars": int}

    async def __call__(self, row, ctx):
        return row.with_fields(chars=len(row["text"]))
