import datetime
from typing import Annotated, Any, Literal, Optional

import msgspec
import pyarrow as pa
import pytest

from streamflow.errors import ConfigError, FlowError
from streamflow.schema import arrow_type, output_schema


class Inner(msgspec.Struct):
    score: float
    tags: list[str] = []


class Outer(msgspec.Struct, rename="camel"):
    inner_result: Inner | None
    seen_at: datetime.datetime
    count: int | None = None


class Pair(msgspec.Struct, array_like=True):
    a: int


class Empty(msgspec.Struct):
    pass


@pytest.mark.parametrize(
    ("py_type", "expected"),
    [
        (bool, pa.bool_()),
        (int, pa.int64()),
        (float, pa.float64()),
        (str, pa.string()),
        (bytes, pa.binary()),
        (datetime.datetime, pa.timestamp("us")),
        (datetime.date, pa.date32()),
    ],
)
def test_scalars_map_to_their_arrow_types(py_type, expected):
    assert arrow_type(py_type) == expected


@pytest.mark.parametrize("py_type", [int | None, Optional[int], None | int])  # noqa: UP045 (Optional is what is tested)
def test_optional_declares_the_same_nullable_column(py_type):
    assert arrow_type(py_type) == pa.int64()


def test_lists_and_string_keyed_dicts_nest():
    assert arrow_type(list[list[str]]) == pa.list_(pa.list_(pa.string()))
    assert arrow_type(dict[str, list[int]]) == pa.map_(pa.string(), pa.list_(pa.int64()))


def test_struct_becomes_arrow_struct_of_its_encoded_field_names():
    inner = pa.struct([("score", pa.float64()), ("tags", pa.list_(pa.string()))])
    expected = pa.struct([("innerResult", inner), ("seenAt", pa.timestamp("us")), ("count", pa.int64())])
    assert arrow_type(Outer) == expected
    assert arrow_type(list[Outer]) == pa.list_(expected)


def test_literal_and_annotated_use_their_underlying_type():
    assert arrow_type(Literal["yes", "no"]) == pa.string()
    assert arrow_type(Annotated[int, msgspec.Meta(ge=0)]) == pa.int64()


@pytest.mark.parametrize(
    "py_type",
    [Any, int | str, list, dict, list[Any], dict[int, str], tuple[int, ...], Literal[1, "a"], Pair, Empty, None, 3],
)
def test_types_without_one_arrow_type_are_one_line_flow_errors(py_type):
    with pytest.raises(FlowError, match="has no Arrow column type") as caught:
        arrow_type(py_type)
    assert "\n" not in str(caught.value)


def test_nested_bad_type_names_the_whole_declaration():
    with pytest.raises(FlowError, match=r"type Any \(in list\[typing.Any\]\)"):
        arrow_type(list[Any])


def test_output_schema_orders_row_id_inputs_fields_status_error():
    inputs = pa.schema([("text", pa.string()), ("n", pa.int64())])
    schema = output_schema(inputs, {"score": float, "tags": list[str]})
    assert schema.names == ["row_id", "text", "n", "score", "tags", "status", "error"]
    assert schema.field("row_id").type == pa.string()
    assert schema.field("tags").type == pa.list_(pa.string())
    assert not schema.field("status").nullable
    assert schema.field("error").nullable


def test_declared_field_replaces_input_column_type_in_place():
    inputs = pa.schema([("text", pa.string()), ("n", pa.int64())])
    schema = output_schema(inputs, {"n": str})
    assert schema.names == ["row_id", "text", "n", "status", "error"]
    assert schema.field("n").type == pa.string()


@pytest.mark.parametrize("column", ["row_id", "status", "error"])
def test_reserved_input_column_is_a_config_error_asking_to_rename(column):
    with pytest.raises(ConfigError, match=f"input column '{column}' collides.*rename the column in the input"):
        output_schema(pa.schema([(column, pa.string())]), {})


def test_reserved_declared_field_is_a_flow_error():
    with pytest.raises(FlowError, match="field 'status' is reserved"):
        output_schema(pa.schema([("text", pa.string())]), {"status": str})


def test_bad_declared_field_names_the_field():
    with pytest.raises(FlowError, match=r"^field 'answer': type Any"):
        output_schema(pa.schema([("text", pa.string())]), {"answer": Any})
