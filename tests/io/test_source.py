import gzip
import json
import os
import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamflow.errors import ConfigError
from streamflow.io import InputPlan, plan_input, read_unit
from streamflow.io.source import BAD_INPUT, BadInput, Unreadable


def write_jsonl(path, rows, *, trailing=""):
    with open(path, "w") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
        handle.write(trailing)


def write_parquet(path, rows, *, row_group_size=None):
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)


def read_everything(plan: InputPlan, batch_rows=1024, skip=frozenset()):
    """What reading the plan gives, in file order whatever the partitioning: (id, row) pairs of the
    rows to process, the rows finished as bad input, and the ranges that could not be read."""
    units = sorted((u for part in plan.partitions for u in part), key=lambda u: (u.file_index, u.offset))
    good, bad, unreadable = [], [], []
    for unit in units:
        for item in read_unit(plan, unit, batch_rows, skip=skip):
            if isinstance(item, BadInput):
                bad.extend(item.rows)
            elif isinstance(item, Unreadable):
                unreadable.append(item)
            else:
                ids, rows = item
                assert len(ids) == len(rows) > 0
                good.extend(zip(ids, rows, strict=True))
    return good, bad, unreadable


def read_all(plan: InputPlan, batch_rows=1024):
    """Every (id, row) of a plan whose data holds no problem."""
    good, bad, unreadable = read_everything(plan, batch_rows)
    assert not bad and not unreadable
    return good


def one_line_config_error(call, match):
    with pytest.raises(ConfigError, match=match) as caught:
        call()
    assert "\n" not in str(caught.value)
    return str(caught.value)


@pytest.fixture
def mixed_dir(tmp_path):
    """a.parquet (5 rows, row groups of 2), b.jsonl (3 rows), sub/c.jsonl (2 rows)."""
    write_parquet(tmp_path / "a.parquet", [{"text": f"a{i}", "n": i} for i in range(5)], row_group_size=2)
    write_jsonl(tmp_path / "b.jsonl", [{"text": f"b{i}", "n": 10 + i} for i in range(3)])
    (tmp_path / "sub").mkdir()
    write_jsonl(tmp_path / "sub" / "c.jsonl", [{"text": f"c{i}", "n": 20 + i} for i in range(2)])
    return tmp_path


@pytest.fixture
def memory_root():
    root = f"memory://streamflow-test-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_missing_path_is_a_one_line_config_error(tmp_path):
    missing = str(tmp_path / "nope")
    message = one_line_config_error(lambda: plan_input(missing), "does not exist")
    assert missing in message


def test_directory_of_jsonl_and_parquet_is_read_in_file_order(mixed_dir):
    plan = plan_input(str(mixed_dir), partitions=3)
    assert [os.path.relpath(f, mixed_dir) for f in plan.files] == ["a.parquet", "b.jsonl", "sub/c.jsonl"]
    assert plan.total_rows == 10
    assert plan.schema == pa.schema([("text", pa.string()), ("n", pa.int64())])
    rows = read_all(plan)
    assert [row["text"] for _, row in rows] == ["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2", "c0", "c1"]
    assert [row_id for row_id, _ in rows][:7] == ["0:0", "0:1", "0:2", "0:3", "0:4", "1:0", "1:1"]


def test_units_are_row_groups_and_jsonl_files_assigned_round_robin(mixed_dir):
    plan = plan_input(str(mixed_dir), partitions=2)
    described = [[(u.file_index, u.row_group, u.offset, u.rows) for u in part] for part in plan.partitions]
    assert described == [
        [(0, 0, 0, 2), (0, 2, 4, 1), (2, None, 0, 2)],
        [(0, 1, 2, 2), (1, None, 0, 3)],
    ]


def test_fewer_units_than_partitions_gives_no_empty_partition(tmp_path):
    write_jsonl(tmp_path / "x.jsonl", [{"a": 1}])
    plan = plan_input(str(tmp_path), partitions=8)
    assert len(plan.partitions) == 1
    assert all(plan.partitions)


def test_limit_takes_the_first_rows_in_file_order(mixed_dir):
    plan = plan_input(str(mixed_dir), partitions=3, limit=6)
    assert plan.total_rows == 6
    assert [row["text"] for _, row in read_all(plan)] == ["a0", "a1", "a2", "a3", "a4", "b0"]
    assert sum(u.rows for part in plan.partitions for u in part) == 6


def test_limit_cuts_inside_a_row_group(mixed_dir):
    plan = plan_input(str(mixed_dir), limit=3)
    assert [(u.row_group, u.offset, u.rows) for part in plan.partitions for u in part] == [(0, 0, 2), (1, 2, 1)]
    assert [row_id for row_id, _ in read_all(plan)] == ["0:0", "0:1", "0:2"]


def test_files_after_the_limit_are_not_opened(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"a": i} for i in range(3)])
    (tmp_path / "b.parquet").write_bytes(b"not parquet at all")
    assert plan_input(str(tmp_path), limit=2).total_rows == 2
    with pytest.raises(ConfigError, match=r"b\.parquet"):
        plan_input(str(tmp_path))


def test_rows_after_the_limit_are_not_parsed(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"a": 1}\n{"a": 2}\nnot json\n')
    assert plan_input(str(tmp_path), limit=2).total_rows == 2


def test_row_ids_are_stable_across_partition_counts(mixed_dir):
    def ids_by_text(partitions):
        return {row["text"]: row_id for row_id, row in read_all(plan_input(str(mixed_dir), partitions=partitions))}

    reference = ids_by_text(1)
    assert len(set(reference.values())) == 10
    for partitions in (2, 3, 7):
        assert ids_by_text(partitions) == reference


def test_batches_hold_at_most_batch_rows(mixed_dir):
    plan = plan_input(str(mixed_dir), partitions=1)
    unit = next(u for u in plan.partitions[0] if u.format == "jsonl")
    assert [len(rows) for _, rows in read_unit(plan, unit, batch_rows=2)] == [2, 1]
    assert [len(rows) for _, rows in read_unit(plan, plan.partitions[0][0], batch_rows=1)] == [1, 1]


def test_memory_filesystem_urls_are_read(memory_root):
    fs = fsspec.filesystem("memory")
    with fs.open(f"{memory_root}/data/part.jsonl", "wb") as handle:
        handle.write(b'{"text": "hello"}\n{"text": "world"}\n')
    with fs.open(f"{memory_root}/data/more.parquet", "wb") as handle:
        pq.write_table(pa.table({"text": ["parquet"]}), handle)
    plan = plan_input(f"{memory_root}/data")
    assert all(f.startswith("memory://") for f in plan.files)
    assert sorted(row["text"] for _, row in read_all(plan)) == ["hello", "parquet", "world"]


def test_glob_selects_only_matching_files(mixed_dir):
    plan = plan_input(str(mixed_dir / "*.jsonl"))
    assert [os.path.basename(f) for f in plan.files] == ["b.jsonl"]
    assert plan.total_rows == 3


def test_glob_matching_nothing_is_a_config_error(tmp_path):
    one_line_config_error(lambda: plan_input(str(tmp_path / "*.parquet")), "matched no files")


def test_directory_without_input_files_matched_no_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    one_line_config_error(lambda: plan_input(str(tmp_path)), "matched no files")


def test_unsupported_extension_of_a_named_file_is_reported(tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    one_line_config_error(lambda: plan_input(str(tmp_path / "data.csv")), "unsupported extension")


def test_explicit_format_reads_any_extension(tmp_path):
    write_jsonl(tmp_path / "data.txt", [{"a": 1}])
    assert plan_input(str(tmp_path / "data.txt"), format="jsonl").total_rows == 1


def test_hidden_and_underscore_files_are_skipped(mixed_dir):
    (mixed_dir / "_SUCCESS").write_text("")
    (mixed_dir / ".a.parquet.tmp").write_bytes(b"partial")
    write_jsonl(mixed_dir / ".hidden.jsonl", [{"text": "hidden", "n": 0}])
    assert plan_input(str(mixed_dir)).total_rows == 10


def test_gzip_jsonl_is_read(tmp_path):
    with gzip.open(tmp_path / "rows.jsonl.gz", "wt") as handle:
        handle.write('{"a": 1}\n{"a": 2}\n')
    plan = plan_input(str(tmp_path))
    assert [row["a"] for _, row in read_all(plan)] == [1, 2]


def test_blank_lines_are_not_rows(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"a": 1}\n\n  \n{"a": 2}\r\n\n')
    plan = plan_input(str(tmp_path))
    assert plan.total_rows == 2
    assert read_all(plan) == [("0:0", {"a": 1}), ("0:1", {"a": 2})]


def test_corrupt_parquet_is_reported_before_reading(mixed_dir):
    (mixed_dir / "broken.parquet").write_bytes(b"PAR1 this is not really parquet")
    message = one_line_config_error(lambda: plan_input(str(mixed_dir)), "is not a readable Parquet file")
    assert "broken.parquet" in message


def test_corrupt_gzip_is_reported_before_reading(tmp_path):
    (tmp_path / "x.jsonl.gz").write_bytes(b"\x1f\x8b garbage")
    one_line_config_error(lambda: plan_input(str(tmp_path)), "is not a readable JSONL file")


def test_input_without_rows_is_a_config_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    write_parquet(tmp_path / "empty.parquet", [])
    one_line_config_error(lambda: plan_input(str(tmp_path)), "has no rows")


def test_missing_required_column_names_the_existing_columns(mixed_dir):
    message = one_line_config_error(lambda: plan_input(str(mixed_dir), requires=["text", "question"]), "'question'")
    assert "columns: text, n" in message


def test_missing_id_column_is_a_config_error(mixed_dir):
    one_line_config_error(lambda: plan_input(str(mixed_dir), id_column="uid"), "input.id_column 'uid'")


@pytest.mark.parametrize(
    ("knobs", "match"),
    [
        ({"partitions": 0}, "input.partitions is 0"),
        ({"limit": -1}, "^limit is -1"),
        ({"limit": 0}, "^limit is 0"),
        ({"format": "csv"}, "input.format 'csv'"),
    ],
)
def test_bad_knobs_are_config_errors_before_touching_files(tmp_path, knobs, match):
    one_line_config_error(lambda: plan_input(str(tmp_path / "missing"), **knobs), match)


def test_id_column_values_become_row_ids_and_stay_columns(tmp_path):
    write_jsonl(tmp_path / "x.jsonl", [{"uid": 7, "text": "a"}, {"uid": 9, "text": "b"}])
    plan = plan_input(str(tmp_path), id_column="uid")
    assert read_all(plan) == [("7", {"uid": 7, "text": "a"}), ("9", {"uid": 9, "text": "b"})]


def test_columns_missing_from_a_file_are_null_and_types_are_unified(tmp_path):
    write_parquet(tmp_path / "a.parquet", [{"text": "a", "score": 1.5}])
    write_jsonl(tmp_path / "b.jsonl", [{"text": "b", "score": 2, "lang": "en"}])
    plan = plan_input(str(tmp_path))
    assert plan.schema == pa.schema([("text", pa.string()), ("score", pa.float64()), ("lang", pa.string())])
    assert [row for _, row in read_all(plan)] == [
        {"text": "a", "score": 1.5, "lang": None},
        {"text": "b", "score": 2.0, "lang": "en"},
    ]


def test_jsonl_schema_includes_keys_missing_from_the_first_row(tmp_path):
    write_jsonl(tmp_path / "x.jsonl", [{"a": 1}, {"a": 2, "b": {"k": "v"}}])
    plan = plan_input(str(tmp_path))
    assert plan.schema.names == ["a", "b"]
    assert [row for _, row in read_all(plan)] == [{"a": 1, "b": None}, {"a": 2, "b": {"k": "v"}}]


def test_files_that_disagree_on_a_column_type_are_reported(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"x": 1}])
    write_jsonl(tmp_path / "b.jsonl", [{"x": "one"}])
    one_line_config_error(lambda: plan_input(str(tmp_path)), "files disagree on column types")


def test_fingerprint_changes_when_a_file_changes(mixed_dir):
    before = plan_input(str(mixed_dir)).fingerprint
    assert plan_input(str(mixed_dir)).fingerprint == before
    write_jsonl(mixed_dir / "b.jsonl", [{"text": "changed", "n": 1}])
    os.utime(mixed_dir / "b.jsonl", (1, 1))
    assert plan_input(str(mixed_dir)).fingerprint != before


# -- problems in the data: recorded where they are, reading goes on --------------------------


def test_a_malformed_json_line_becomes_a_bad_row_naming_file_and_line(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"a": 1}\n\n{"a": \n{"a": 3}\n')
    good, bad, unreadable = read_everything(plan_input(str(tmp_path)))
    assert good == [("0:0", {"a": 1}), ("0:2", {"a": 3})]
    assert [(row.id, row.status, row.fields) for row in bad] == [("0:1", BAD_INPUT, {"a": None})]
    assert "x.jsonl' line 3 is not valid JSON" in bad[0].error and "\n" not in bad[0].error
    assert not unreadable


def test_a_bad_line_at_the_end_of_a_large_file_is_a_bad_row_and_every_other_row_is_read(tmp_path):
    rows = [{"text": f"document {i} " + "words " * 60, "n": i} for i in range(4000)]
    write_jsonl(tmp_path / "big.jsonl", rows, trailing='{"text": "cut off in the mid\n')
    assert (tmp_path / "big.jsonl").stat().st_size > 1 << 20
    plan = plan_input(str(tmp_path), partitions=2)
    assert plan.total_rows == 4001
    good, bad, _ = read_everything(plan)
    assert [row["n"] for _, row in good] == list(range(4000))
    assert [(row.id, row.status) for row in bad] == [("0:4000", BAD_INPUT)]
    assert "big.jsonl' line 4001 is not valid JSON" in bad[0].error


def test_a_line_that_is_not_an_object_becomes_a_bad_row(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"a": 1}\n[1, 2]\n')
    good, bad, _ = read_everything(plan_input(str(tmp_path)))
    assert good == [("0:0", {"a": 1})]
    assert "line 2 is a JSON list, not an object" in bad[0].error


def test_a_file_without_a_json_object_in_its_first_mib_is_refused_before_reading(tmp_path):
    (tmp_path / "x.json").write_text('[{"a": 1}, {"a": 2}]\n')
    message = one_line_config_error(lambda: plan_input(str(tmp_path)), "holds no JSON object in its first MiB")
    assert "line 1 is a JSON list" in message


def test_a_value_of_another_type_late_in_a_file_is_a_bad_row_keeping_its_other_fields(tmp_path, monkeypatch):
    monkeypatch.setattr("streamflow.io.source._SCHEMA_SAMPLE_BYTES", 1)
    write_jsonl(tmp_path / "x.jsonl", [{"n": 1, "t": "a"}, {"n": 2, "t": "b"}, {"n": "three", "t": "c"}])
    good, bad, _ = read_everything(plan_input(str(tmp_path)))
    assert good == [("0:0", {"n": 1, "t": "a"}), ("0:1", {"n": 2, "t": "b"})]
    assert [(row.id, row.fields) for row in bad] == [("0:2", {"n": None, "t": "c"})]
    assert "x.jsonl' line 3: column 'n' is str, the input schema says int64" in bad[0].error


def test_a_value_of_another_type_in_the_first_rows_is_a_bad_row_too(tmp_path):
    write_jsonl(tmp_path / "x.jsonl", [{"text": "a"}, {"text": 5}, {"text": "c"}])
    plan = plan_input(str(tmp_path))
    assert plan.schema == pa.schema([("text", pa.string())])  # the type most of its values have
    good, bad, _ = read_everything(plan)
    assert good == [("0:0", {"text": "a"}), ("0:2", {"text": "c"})]
    assert [(row.id, row.fields) for row in bad] == [("0:1", {"text": None})]
    assert "line 2: column 'text' is int, the input schema says string" in bad[0].error


def test_a_value_that_does_not_cast_in_parquet_is_a_bad_row(tmp_path):
    pq.write_table(pa.table({"n": pa.array([1, 2**63 + 5, 3], pa.uint64())}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"n": pa.array([4], pa.int64())}), tmp_path / "b.parquet")
    plan = plan_input(str(tmp_path))
    assert plan.schema == pa.schema([("n", pa.int64())])
    good, bad, _ = read_everything(plan)
    assert good == [("0:0", {"n": 1}), ("0:2", {"n": 3}), ("1:0", {"n": 4})]
    assert [(row.id, row.fields) for row in bad] == [("0:1", {"n": None})]
    assert "a.parquet' row group 0 row 1: column 'n' is int" in bad[0].error


def test_a_fraction_in_an_integer_column_is_a_bad_row_not_truncated(tmp_path, monkeypatch):
    monkeypatch.setattr("streamflow.io.source._SCHEMA_SAMPLE_BYTES", 1)
    write_jsonl(tmp_path / "x.jsonl", [{"n": 1}, {"n": 2.0}, {"n": 2.5}])
    good, bad, _ = read_everything(plan_input(str(tmp_path)))
    assert good == [("0:0", {"n": 1}), ("0:1", {"n": 2})]
    assert [(row.id, row.fields) for row in bad] == [("0:2", {"n": None})]
    assert "line 3: column 'n' is 2.5 but holds integers" in bad[0].error


def test_a_row_without_an_id_is_a_bad_row_keeping_the_id_of_its_position(tmp_path):
    write_parquet(tmp_path / "x.parquet", [{"uid": "a", "v": 1}, {"uid": None, "v": 2}])
    good, bad, _ = read_everything(plan_input(str(tmp_path), id_column="uid"))
    assert good == [("a", {"uid": "a", "v": 1})]
    assert [(row.id, row.fields) for row in bad] == [("0:1", {"uid": None, "v": 2})]
    assert "x.parquet' row group 0 row 1 has no value in id column 'uid'" in bad[0].error


def test_bad_rows_already_committed_are_not_read_again(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"a": 1}\nnot json\n{"a": 3}\n')
    good, bad, _ = read_everything(plan_input(str(tmp_path)), skip={"0:0", "0:1"})
    assert good == [("0:2", {"a": 3})] and bad == []


def corrupt_row_group(path, group):
    """Flip bytes in the middle of the first column chunk of ``group``: its pages no longer decode."""
    chunk = pq.ParquetFile(path).metadata.row_group(group).column(0)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    middle = start + chunk.total_compressed_size // 2
    data = bytearray(path.read_bytes())
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    path.write_bytes(bytes(data))


def test_a_row_group_that_does_not_decode_is_counted_unreadable_and_the_others_are_read(tmp_path):
    path = tmp_path / "x.parquet"
    rows = [{"text": f"document {i} " * 5, "n": i} for i in range(300)]
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=100, compression="zstd")
    corrupt_row_group(path, 2)
    plan = plan_input(str(tmp_path))  # the footer is intact: planning cannot tell
    good, bad, unreadable = read_everything(plan)
    assert [row["n"] for _, row in good] == list(range(200)) and bad == []
    assert [(u.path, u.where, u.rows) for u in unreadable] == [(str(path), "row group 2", 100)]
    assert unreadable[0].reason.startswith("it does not decode: ") and "\n" not in unreadable[0].reason


def test_rows_missing_from_a_file_that_shrank_after_planning_are_counted_unreadable(tmp_path):
    write_jsonl(tmp_path / "x.jsonl", [{"a": i} for i in range(3)])
    plan = plan_input(str(tmp_path))
    write_jsonl(tmp_path / "x.jsonl", [{"a": 0}])
    good, _, unreadable = read_everything(plan)
    assert good == [("0:0", {"a": 0})]
    assert [(u.where, u.rows) for u in unreadable] == [("rows 1-2", 2)]
    assert "changed after planning" in unreadable[0].reason
