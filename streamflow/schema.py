"""Declared Python types of generated fields, turned into the Arrow schema of the output.

Operators declare the columns they add as Python types (``fields = {"score": int}``).
Mapping them to Arrow once, before the run, lets the sink write typed Parquet and catch a
value of the wrong type on its own row, instead of discovering it when a part file is
half written. Every Arrow column is nullable, so ``T | None`` declares the same column
as ``T``; only the reserved ``status`` column is not null.
"""

from __future__ import annotations

import datetime
import types
import typing
from collections.abc import Mapping
from typing import Any

import msgspec
import pyarrow as pa

from streamflow.errors import ConfigError, FlowError

__all__ = ["RESERVED_COLUMNS", "arrow_type", "output_schema"]

RESERVED_COLUMNS = ("row_id", "status", "error")
"""Columns the engine adds to every output row; input and declared fields may not use them."""

_SCALARS: dict[Any, pa.DataType] = {
    bool: pa.bool_(),
    int: pa.int64(),
    float: pa.float64(),
    str: pa.string(),
    bytes: pa.binary(),
    datetime.datetime: pa.timestamp("us"),
    datetime.date: pa.date32(),
}

_KNOWN = "bool, int, float, str, bytes, datetime, date, list[T], dict[str, T], T | None or a msgspec.Struct"


def arrow_type(py_type: Any) -> pa.DataType:
    """The Arrow type of a column declared as ``py_type``.

    >>> arrow_type(dict[str, list[int]])
    MapType(map<string, list<item: int64>>)

    ``Literal`` of strings (or ints) maps to ``string`` (or ``int64``) and ``Annotated``
    constraints are ignored, so msgspec-style declarations can be reused as they are.
    Anything without one Arrow type (``Any``, ``int | str``, a bare ``list``) raises
    ``FlowError``: the type is the contract the sink enforces, so it must be concrete.
    """
    return _convert(py_type, py_type, ())


def output_schema(input_schema: pa.Schema, fields: Mapping[str, Any]) -> pa.Schema:
    """The schema of the output dataset: ``row_id``, input columns, generated fields, ``status``, ``error``.

    A declared field named like an input column replaces that column's type in place, so an
    operator may rewrite an input column (for example parse a JSON string into a struct).
    """
    for name in input_schema.names:
        if name in RESERVED_COLUMNS:
            msg = (
                f"input column {name!r} collides with the reserved output column {name!r} "
                f"(reserved: {', '.join(RESERVED_COLUMNS)}); rename the column in the input."
            )
            raise ConfigError(msg)
    declared: dict[str, pa.DataType] = {}
    for name, py_type in fields.items():
        if name in RESERVED_COLUMNS:
            msg = (
                f"field {name!r} is reserved for the output (reserved: {', '.join(RESERVED_COLUMNS)}); "
                "rename the field in the operator."
            )
            raise FlowError(msg)
        try:
            declared[name] = arrow_type(py_type)
        except FlowError as exc:
            msg = f"field {name!r}: {exc}"
            raise FlowError(msg) from exc
    columns = [pa.field("row_id", pa.string())]
    for field in input_schema:
        columns.append(pa.field(field.name, declared.pop(field.name, field.type)))
    columns.extend(pa.field(name, arrow) for name, arrow in declared.items())
    columns.append(pa.field("status", pa.string(), nullable=False))
    columns.append(pa.field("error", pa.string()))
    return pa.schema(columns)


def _convert(py_type: Any, declared: Any, seen: tuple[type, ...]) -> pa.DataType:
    """Recursive worker of ``arrow_type``; ``declared`` is the whole type, for messages."""
    try:
        scalar = _SCALARS.get(py_type)
    except TypeError:  # unhashable: not a type at all
        scalar = None
    if scalar is not None:
        return scalar
    origin = typing.get_origin(py_type)
    args = typing.get_args(py_type)
    if origin is typing.Annotated:
        return _convert(args[0], declared, seen)
    if origin is typing.Union or origin is types.UnionType:
        present = [arg for arg in args if arg is not type(None)]
        if len(present) == 1:
            return _convert(present[0], declared, seen)
        _fail(py_type, declared, "a column holds one type, so declare one (T | None is fine)")
    if origin is typing.Literal:
        return _literal(py_type, declared, args)
    if origin is list:
        return pa.list_(_convert(args[0], declared, seen))
    if origin is dict:
        if args[0] is not str:
            _fail(py_type, declared, "declare dict[str, T] (Arrow map keys are strings) or a msgspec.Struct")
        return pa.map_(pa.string(), _convert(args[1], declared, seen))
    if py_type is list:
        _fail(py_type, declared, "declare its item type, e.g. list[str]")
    if py_type is dict:
        _fail(py_type, declared, "declare its value type, e.g. dict[str, int], or use a msgspec.Struct")
    if isinstance(py_type, type) and issubclass(py_type, msgspec.Struct):
        return _struct(py_type, declared, seen)
    _fail(py_type, declared, f"declare a concrete type ({_KNOWN})")


def _literal(py_type: Any, declared: Any, values: tuple[Any, ...]) -> pa.DataType:
    kinds = {type(value) for value in values}
    if len(kinds) == 1 and next(iter(kinds)) in (str, int, bool):
        return _SCALARS[kinds.pop()]
    _fail(py_type, declared, "a Literal needs values of one type (all str, all int or all bool)")


def _struct(cls: type[msgspec.Struct], declared: Any, seen: tuple[type, ...]) -> pa.DataType:
    if cls in seen:
        _fail(cls, declared, "a Struct that contains itself has no finite Arrow type, nest a different Struct")
    if cls.__struct_config__.array_like:
        _fail(cls, declared, "an array_like Struct encodes as a list, not a record, so drop array_like=True")
    infos = msgspec.structs.fields(cls)
    if not infos:
        _fail(cls, declared, "Parquet cannot store a Struct without fields, give it a field")
    return pa.struct([pa.field(info.encode_name, _convert(info.type, declared, (*seen, cls))) for info in infos])


def _fail(py_type: Any, declared: Any, fix: str) -> typing.NoReturn:
    where = "" if py_type is declared else f" (in {_name(declared)})"
    msg = f"type {_name(py_type)}{where} has no Arrow column type; {fix}."
    raise FlowError(msg)


def _name(py_type: Any) -> str:
    if isinstance(py_type, type) and not typing.get_args(py_type):
        return py_type.__qualname__
    return repr(py_type)
