import os

import msgspec
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import streamflow.io.parts as sink_module
from streamflow.errors import ConfigError, RunError
from streamflow.io import PartWriter
from streamflow.message import Message
from streamflow.schema import output_schema


class Verdict(msgspec.Struct):
    label: str
    confidence: float


INPUT = pa.schema([("text", pa.string())])
SCHEMA = output_schema(INPUT, {"score": int, "tags": list[str], "meta": Verdict})


def row(index, **fields):
    return Message(id=f"0:{index}", fields={"text": f"t{index}", **fields})


def visible(directory):
    return sorted(name for name in os.listdir(directory) if not name.startswith("."))


def test_sink_rolls_parts_every_part_rows(tmp_path):
    writer = PartWriter(str(tmp_path), SCHEMA, prefix="s0", part_rows=3)
    writer.append([row(0), row(1), row(2)])
    assert visible(tmp_path) == ["s0-00000.parquet"]
    for start in range(3, 11, 2):
        writer.append([row(start, score=start), row(start + 1, score=start + 1)])
    assert visible(tmp_path) == ["s0-00000.parquet", "s0-00001.parquet", "s0-00002.parquet"]
    paths = writer.close()
    assert [os.path.basename(p) for p in paths] == [f"s0-{n:05d}.parquet" for n in range(4)]
    assert [pq.read_metadata(p).num_rows for p in paths] == [3, 3, 3, 2]
    ids = pl.read_parquet(f"{tmp_path}/*.parquet")["row_id"].to_list()
    assert ids == [f"0:{i}" for i in range(11)]


def test_flush_writes_buffered_rows_as_one_part_and_nothing_when_empty(tmp_path):
    writer = PartWriter(str(tmp_path), SCHEMA, prefix="s0")
    assert writer.flush() is None
    writer.append([row(0), row(1)])
    path = writer.flush()
    assert pq.read_metadata(path).num_rows == 2
    assert writer.flush() is None
    assert writer.close() == [path]
    assert visible(tmp_path) == ["s0-00000.parquet"]


def test_part_is_written_atomically(tmp_path, monkeypatch):
    real_write = pq.write_table
    seen = {}

    def spying_write(table, where, **kwargs):
        real_write(table, where, **kwargs)
        seen["temporary"] = os.path.basename(where)
        seen["visible_while_writing"] = visible(tmp_path)

    monkeypatch.setattr(sink_module.pq, "write_table", spying_write)
    writer = PartWriter(str(tmp_path), SCHEMA, prefix="s0")
    writer.append([row(0)])
    writer.close()
    assert seen["temporary"].startswith(".")
    assert not seen["temporary"].endswith(".parquet")
    assert seen["visible_while_writing"] == []
    assert os.listdir(tmp_path) == ["s0-00000.parquet"]


def test_crash_while_writing_leaves_no_part_and_no_temporary_file(tmp_path, monkeypatch):
    def failing_write(table, where, **kwargs):
        with open(where, "wb") as handle:
            handle.write(b"PAR1 half a part")
        raise OSError("disk full")

    monkeypatch.setattr(sink_module.pq, "write_table", failing_write)
    writer = PartWriter(str(tmp_path), SCHEMA, prefix="s0")
    writer.append([row(0)])
    with pytest.raises(RunError, match=r"could not write part .*disk full"):
        writer.flush()
    assert os.listdir(tmp_path) == []


def test_nested_dict_is_written_as_struct_and_read_back_by_polars(tmp_path):
    writer = PartWriter(str(tmp_path), SCHEMA, prefix="s0", part_rows=2)
    rows = [
        row(0, score=1, tags=["a", "b"], meta={"label": "yes", "confidence": 0.9}),
        row(1, score=2, tags=[], meta={"label": "no", "confidence": 0.2}),
        row(2, score=3),
    ]
    assert all(r.is_ok for r in writer.append(rows))
    writer.close()
    frame = pl.read_parquet(f"{tmp_path}/*.parquet")
    assert frame.schema["score"] == pl.Int64
    assert frame.schema["tags"] == pl.List(pl.String)
    assert frame.schema["meta"] == pl.Struct({"label": pl.String, "confidence": pl.Float64})
    assert frame.columns == ["row_id", "text", "score", "tags", "meta", "status", "error"]
    assert frame["meta"].to_list() == [{"label": "yes", "confidence": 0.9}, {"label": "no", "confidence": 0.2}, None]


def test_msgspec_struct_values_are_written_as_structs(tmp_path):
    writer = PartWriter(str(tmp_path), SCHEMA, prefix="s0")
    checked = writer.append([row(0, meta=Verdict("yes", 0.5)), row(1)])
    assert all(r.is_ok for r in checked)
    (path,) = writer.close()
    assert pq.read_table(path)["meta"].to_pylist() == [{"label": "yes", "confidence": 0.5}, None]


def test_wrong_type_marks_only_that_row_schema_error(tmp_path):
    writer = PartWriter(str(tmp_path), SCHEMA, prefix="s0")
    checked = writer.append([row(0, score=1), row(1, score="high", tags=["x"]), row(2, score=3)])
    assert [r.status for r in checked] == ["ok", "error:schema", "ok"]
    assert checked[1].error == "column 'score' is str, schema says int64; cast it in the operator."
    assert checked[1].fields == {"text": "t1", "score": None, "tags": ["x"]}
    (path,) = writer.close()
    table = pq.read_table(path)
    assert table["score"].to_pylist() == [1, None, 3]
    assert table["tags"].to_pylist() == [None, ["x"], None]
    assert table["status"].to_pylist() == ["ok", "error:schema", "ok"]


def test_fraction_in_an_integer_column_is_a_schema_error_not_truncated(tmp_path):
    writer = PartWriter(str(tmp_path), SCHEMA, prefix="s0")
    checked = writer.append([row(0, score=2.5), row(1, score=2.0)])
    assert [r.status for r in checked] == ["error:schema", "ok"]
    assert "column 'score' is float" in checked[0].error
    (path,) = writer.close()
    assert pq.read_table(path)["score"].to_pylist() == [None, 2]


def test_undeclared_field_marks_row_schema_error(tmp_path):
    writer = PartWriter(str(tmp_path), SCHEMA, prefix="s0")
    checked = writer.append([row(0, foo=1, score=5), row(1, score=6)])
    assert checked[0].status == "error:schema"
    assert checked[0].error == "field 'foo' is not declared by any step; add it to the operator's fields."
    assert checked[0].fields == {"text": "t0", "score": 5}
    assert checked[1].is_ok
    (path,) = writer.close()
    table = pq.read_table(path)
    assert "foo" not in table.column_names
    assert table["score"].to_pylist() == [5, 6]


def test_existing_error_status_is_kept_and_schema_message_appended(tmp_path):
    writer = PartWriter(str(tmp_path), SCHEMA, prefix="s0")
    failed = Message(id="0:0", fields={"text": "t", "score": "x"}, status="error:value_error", error="Traceback...")
    (checked,) = writer.append([failed])
    assert checked.status == "error:value_error"
    assert checked.error == "Traceback...\ncolumn 'score' is str, schema says int64; cast it in the operator."


def test_numbering_continues_after_parts_already_in_the_directory(tmp_path):
    first = PartWriter(str(tmp_path), SCHEMA, prefix="s0")
    first.append([row(0)])
    first.close()
    second = PartWriter(str(tmp_path), SCHEMA, prefix="s0")
    second.append([row(1)])
    assert [os.path.basename(p) for p in second.close()] == ["s0-00001.parquet"]
    assert visible(tmp_path) == ["s0-00000.parquet", "s0-00001.parquet"]


def test_append_after_close_is_a_run_error(tmp_path):
    writer = PartWriter(str(tmp_path), SCHEMA, prefix="s0")
    writer.close()
    with pytest.raises(RunError, match="is closed"):
        writer.append([row(0)])


@pytest.mark.parametrize(
    ("schema", "knobs", "match"),
    [
        (INPUT, {}, "schema has no column 'row_id'"),
        (SCHEMA, {"part_rows": 0}, "part_rows is 0"),
        (SCHEMA, {"compression": "zip"}, "compression 'zip'"),
        (SCHEMA, {"prefix": "a/b"}, "prefix 'a/b'"),
    ],
)
def test_bad_writer_settings_are_config_errors(tmp_path, schema, knobs, match):
    with pytest.raises(ConfigError, match=match):
        PartWriter(str(tmp_path), schema, **{"prefix": "s0", **knobs})


def test_a_fenced_writer_commits_nothing_once_another_run_claimed_the_directory(tmp_path):
    from streamflow.io.parts import claim_directory

    claim = claim_directory(str(tmp_path), {"host": "node-1", "pid": 11, "attempt": 1})
    writer = PartWriter(str(tmp_path), SCHEMA, prefix="s0", part_rows=1, claim=claim)
    writer.append([row(0)])
    claim_directory(str(tmp_path), {"host": "node-2", "pid": 22, "attempt": 2})  # a resumed run takes over
    with pytest.raises(RunError, match="another run has claimed"):
        writer.append([row(1)])
    assert visible(tmp_path) == ["s0-00000.parquet"]


def test_a_claim_names_its_holder_and_a_bare_id_from_older_runs_still_reads(tmp_path):
    from streamflow.io.parts import OWNER_FILE, claim_directory, claim_id, read_claim

    assert read_claim(str(tmp_path)) is None
    claim = claim_directory(str(tmp_path), {"host": "node-1", "pid": 11, "attempt": 3})
    assert read_claim(str(tmp_path)) == {"host": "node-1", "pid": 11, "attempt": 3, "claim": claim}
    (tmp_path / OWNER_FILE).write_text("0123abcd")
    assert claim_id(str(tmp_path)) == "0123abcd"
