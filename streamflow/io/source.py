"""Plan the input into units and partitions, then read a unit's rows in batches.

Planning touches only metadata (Parquet footers) and streams each JSONL file once to count
its rows, so every problem that would make every row unusable (a missing path, an unreadable
footer, a missing column, no rows at all) is reported in one line before any actor starts.
A unit is a Parquet row group or a whole JSONL file; units go to partitions round-robin. A
row's id depends only on its file and its offset in that file, never on the partition count,
so ids stay the same when the parallelism changes, which is what resuming a run relies on.

Problems in the data itself are recorded where they are, whenever reading finds them, and
the run goes on: a row that cannot be processed (a malformed JSON line, a value of another
type than its column's, no id) becomes an ``error:bad_input`` row with the fields that could
be read; a range that cannot be read at all (a Parquet row group that does not decode) is
counted as ``Unreadable``. A JSONL column's type is the one most of its values have in the
first MiB of the file; a value of another type, there or later, makes its row bad.

Paths are fsspec URLs (local paths, ``s3://``, ``gs://``, ``hf://``, ``memory://``...).
"""

from __future__ import annotations

import hashlib
import logging
import time
import zlib
from collections.abc import Callable, Container, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import fsspec
import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from streamflow.errors import ConfigError
from streamflow.flow import END
from streamflow.message import Message, State

__all__ = ["BAD_INPUT", "BadInput", "InputPlan", "InputUnit", "Unreadable", "plan_input", "read_unit"]

log = logging.getLogger(__name__)

_PARQUET_EXTENSIONS = (".parquet", ".pq")
_JSONL_EXTENSIONS = (".jsonl", ".json", ".ndjson")
_FORMATS = ("auto", "parquet", "jsonl")
_EXTENSIONS_HINT = ".parquet, .pq, .jsonl, .json or .ndjson (JSON optionally .gz)"
_GLOB_CHARS = frozenset("*?[")
_SCHEMA_SAMPLE_BYTES = 1 << 20
"""JSONL column types are inferred from the rows in the first MiB of each file."""
_READ_CHUNK = 1 << 22
_VERSION_KEYS = (
    "ETag", "etag", "md5Hash", "crc32c", "checksum", "generation", "VersionId",
    "mtime", "LastModified", "last_modified", "updated",
)  # fmt: skip
_READ_ERRORS = (OSError, EOFError, zlib.error, pa.ArrowException)
_CONVERT_ERRORS = (pa.ArrowException, OverflowError, TypeError, ValueError)

BAD_INPUT = "error:bad_input"
"""The status of an input row that cannot be processed: malformed, a value of another type, no id."""


@dataclass(frozen=True, slots=True)
class InputUnit:
    """The smallest piece of input one reader handles: a Parquet row group or a JSONL file.

    ``offset`` is the unit's first row within its file (rows count from 0) and ``rows``
    how many rows of it are read, already cut by ``limit``.
    """

    file_index: int
    path: str
    format: str
    row_group: int | None
    offset: int
    rows: int


@dataclass(frozen=True)
class InputPlan:
    """What will be read, decided before the run starts.

    ``files`` lists every matched file in sorted order (a row id's file index points into
    it); ``schema`` is the unified Arrow schema of the files that are read (all columns
    nullable); ``fingerprint`` identifies the input's content so a resumed run can tell
    whether the input changed.
    """

    files: tuple[str, ...]
    schema: pa.Schema
    total_rows: int
    fingerprint: str
    partitions: list[list[InputUnit]]
    filesystem: fsspec.AbstractFileSystem = field(repr=False, compare=False)
    id_column: str | None = None


class Unreadable(msgspec.Struct, frozen=True):
    """Input rows that could not be read at all, such as a Parquet row group that does not decode.

    ``where`` is ``"row group 3"`` or ``"rows 1200-1999"`` (offsets in the file). The rows count
    in the run's ``rows_read`` and the summary names the range; the run goes on without them.
    """

    path: str
    where: str
    rows: int
    reason: str


@dataclass(frozen=True, slots=True)
class BadInput:
    """Input rows that cannot be processed, already finished with status ``error:bad_input``.

    Each keeps the fields that could be read (the others are null) and says in its ``error``
    what is wrong, naming the file and the line or row group; it goes straight to the output.
    """

    rows: list[Message]


def plan_input(
    path: str,
    *,
    format: str = "auto",
    partitions: int = 4,
    limit: int | None = None,
    requires: Sequence[str] = (),
    id_column: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> InputPlan:
    """Resolve ``path`` (a file, a directory read recursively, or a glob) into an ``InputPlan``.

    ``limit`` keeps the first ``limit`` rows in file order, so a trial run always sees the
    same rows; files after the limit are listed but never opened. Raises ``ConfigError``
    for anything that would make the run fail later.
    """
    _check_knobs(format, partitions, limit)
    fs, root = _filesystem(path, storage_options)
    listing = _list_files(fs, root, path, format)
    names = tuple(_display_name(fs, name) for name, _ in listing)
    schemas: list[pa.Schema] = []
    units: list[InputUnit] = []
    remaining = limit
    for index, name in enumerate(names):
        if remaining == 0:
            break
        file_format = _known_format(name, format)
        schema, groups = _inspect(fs, name, file_format, remaining)
        schemas.append(schema)
        offset = 0
        for group, rows in groups:
            take = rows if remaining is None else min(rows, remaining)
            if take:
                units.append(InputUnit(index, name, file_format, group, offset, take))
            offset += rows
            if remaining is not None:
                remaining -= take
    schema = _unify(schemas, path)
    total_rows = sum(unit.rows for unit in units)
    if total_rows == 0:
        msg = f"input.path {path!r} has no rows; point it at files that contain data."
        raise ConfigError(msg)
    _check_columns(schema, path, requires, id_column)
    count = min(partitions, len(units))
    return InputPlan(
        files=names,
        schema=schema,
        total_rows=total_rows,
        fingerprint=_fingerprint(names, [info for _, info in listing]),
        partitions=[units[start::count] for start in range(count)],
        filesystem=fs,
        id_column=id_column,
    )


def read_unit(
    plan: InputPlan, unit: InputUnit, batch_rows: int = 1024, *, skip: Container[str] = frozenset()
) -> Iterator[tuple[list[str], list[dict]] | BadInput | Unreadable]:
    """Yield ``(row ids, rows)`` batches of one unit, aligned to ``plan.schema``, and what could not be used.

    Rows that cannot be processed come as ``BadInput`` (finished ``error:bad_input`` rows that
    go straight to the output) and a range that cannot be read at all as ``Unreadable`` (for
    the caller to count), so no problem in the data stops a run. Synchronous on purpose: the
    driver runs it in a thread so that reading overlaps with admitting rows, and no event loop
    is needed to test it. Ids are ``"<file index>:<offset>"`` unless the plan has an
    ``id_column``, whose value (as ``str``) is then the id. Rows whose id is in ``skip``
    (already committed by the run being resumed) are left out, so both run modes skip them in
    this one place; a batch may then come out shorter, never empty.
    """
    if batch_rows < 1:
        msg = f"read_unit batch_rows is {batch_rows}; set it to 1 or more."
        raise ConfigError(msg)
    batches = _parquet_batches if unit.format == "parquet" else _jsonl_batches
    for read in batches(plan, unit, batch_rows):
        if isinstance(read, Unreadable):
            log.warning(
                "input file %r %s could not be read (%s); its %d rows are counted as unreadable and the run goes on",
                read.path, read.where, read.reason, read.rows,
            )  # fmt: skip
            yield read
            continue
        ids = _row_ids(plan, unit, read)
        if not read.problems and not skip:
            yield ids, read.rows
            continue
        good = [index for index, row_id in enumerate(ids) if index not in read.problems and row_id not in skip]
        if good:
            yield [ids[index] for index in good], [read.rows[index] for index in good]
        bad = [
            _bad_row(ids[index], read.rows[index], problem)
            for index, problem in sorted(read.problems.items())
            if ids[index] not in skip
        ]
        if bad:
            yield BadInput(bad)


# -- planning ---------------------------------------------------------------------------


def _check_knobs(wanted: str, partitions: int, limit: int | None) -> None:
    if wanted not in _FORMATS:
        msg = f"input.format {wanted!r} is not one of {', '.join(_FORMATS)}; pick one of them."
        raise ConfigError(msg)
    if partitions < 1:
        msg = f"input.partitions is {partitions}; set it to 1 or more."
        raise ConfigError(msg)
    if limit is not None and limit < 1:
        msg = f"limit is {limit}, so no row would be read; set it to 1 or more rows, or leave it unset to read all."
        raise ConfigError(msg)


def _filesystem(path: str, storage_options: dict[str, Any] | None) -> tuple[fsspec.AbstractFileSystem, str]:
    try:
        return fsspec.core.url_to_fs(path, **(storage_options or {}))
    except (ImportError, ValueError, TypeError) as exc:
        msg = f"input.path {path!r} cannot be opened ({exc}); check the URL scheme and input.storage_options."
        raise ConfigError(msg) from exc


def _list_files(fs: fsspec.AbstractFileSystem, root: str, path: str, wanted: str) -> list[tuple[str, dict]]:
    """The matched files as (fs path, info), sorted; hidden names (``.x``, ``_x``) are skipped."""
    try:
        if _GLOB_CHARS.intersection(root):
            found = fs.glob(root, detail=True)
            files = {
                p: i for p, i in found.items() if i.get("type") != "directory" and not _hidden(p.rsplit("/", 1)[-1])
            }
            explicit = True
        elif not fs.exists(root):
            msg = f"input.path {path!r} does not exist; check the path (and credentials for remote storage)."
            raise ConfigError(msg)
        elif fs.isdir(root):
            prefix = root.rstrip("/") + "/"
            found = fs.find(root, detail=True)
            files = {
                p: i
                for p, i in found.items()
                if not any(_hidden(part) for part in p[len(prefix) :].split("/"))
                and _format_of(p, "auto") in (("parquet", "jsonl") if wanted == "auto" else (wanted,))
            }
            explicit = False
        else:
            files = {root: fs.info(root)}
            explicit = True
    except OSError as exc:
        msg = f"input.path {path!r} could not be listed ({exc}); check the path and its permissions."
        raise ConfigError(msg) from exc
    if not files:
        msg = f"input.path {path!r} matched no files; expected files ending in {_EXTENSIONS_HINT}."
        raise ConfigError(msg)
    if explicit:
        for name in files:
            _known_format(name, wanted)
    return sorted(files.items())


def _known_format(name: str, wanted: str) -> str:
    """The format of a file, or a ConfigError naming the file and the fix."""
    found = _format_of(name, wanted)
    if found is None:
        msg = (
            f"input file {name!r} has an unsupported extension; use {_EXTENSIONS_HINT}, "
            "or set input.format to parquet or jsonl."
        )
        raise ConfigError(msg)
    return found


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def _format_of(name: str, wanted: str) -> str | None:
    if wanted != "auto":
        return wanted
    lower = name.lower()
    if lower.endswith(_PARQUET_EXTENSIONS):
        return "parquet"
    if lower.removesuffix(".gz").endswith(_JSONL_EXTENSIONS):
        return "jsonl"
    return None


def _display_name(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """Local paths stay plain; remote ones keep their scheme, so messages name them fully."""
    return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)


def _inspect(
    fs: fsspec.AbstractFileSystem, name: str, file_format: str, stop_after: int | None
) -> tuple[pa.Schema, list[tuple[int | None, int]]]:
    """A file's schema and its units as (row group or None, rows)."""
    if file_format == "parquet":
        try:
            with fs.open(name, "rb") as handle:
                meta = pq.ParquetFile(handle).metadata
                schema = meta.schema.to_arrow_schema()
                groups: list[tuple[int | None, int]] = [
                    (index, meta.row_group(index).num_rows) for index in range(meta.num_row_groups)
                ]
        except _READ_ERRORS as exc:
            msg = f"input file {name!r} is not a readable Parquet file ({exc}); replace or remove it."
            raise ConfigError(msg) from exc
        return schema, groups
    sample: list[tuple[int, bytes]] = []
    sampled = 0
    rows = 0
    try:
        with _open_jsonl(fs, name) as handle:
            for number, line in _lines(handle):
                if sampled < _SCHEMA_SAMPLE_BYTES:
                    sample.append((number, line))
                    sampled += len(line)
                rows += 1
                if rows == stop_after:
                    break
    except _READ_ERRORS as exc:
        msg = f"input file {name!r} is not a readable JSONL file ({exc}); replace or remove it."
        raise ConfigError(msg) from exc
    decoded, problems = _decode(name, sample)
    objects = [row for index, row in enumerate(decoded) if index not in problems]
    if sample and not objects:
        msg = (
            f"input file {name!r} holds no JSON object in its first MiB ({problems[0]}); "
            "write one JSON object per line, or set input.format to match the file."
        )
        raise ConfigError(msg)
    return _infer_schema(name, objects), [(None, rows)]


def _infer_schema(name: str, rows: list[dict]) -> pa.Schema:
    """Column types of JSONL rows: every key seen, each typed from its sampled values (see ``_column_type``)."""
    columns = dict.fromkeys(key for row in rows for key in row)
    return pa.schema([pa.field(key, _column_type(name, key, [row.get(key) for row in rows])) for key in columns])


def _column_type(name: str, key: str, values: list[Any]) -> pa.DataType:
    """The Arrow type of a column's values; when they mix types, the type most of them have.

    Rows holding a value of another type become ``error:bad_input`` rows when they are read,
    as rows further down the file do: one rule wherever the value is.
    """
    try:
        return pa.array(values).type
    except _CONVERT_ERRORS:
        pass
    by_type: dict[type, list[Any]] = {}
    for value in values:
        if value is not None:
            by_type.setdefault(type(value), []).append(value)
    try:
        return pa.array(max(by_type.values(), key=len)).type
    except _CONVERT_ERRORS as exc:
        msg = (
            f"input file {name!r}: the values of column {key!r} in its first rows have no common type ({exc}); "
            "make each column one JSON type."
        )
        raise ConfigError(msg) from exc


def _unify(schemas: list[pa.Schema], path: str) -> pa.Schema:
    """One schema for all files: types promoted, metadata dropped, every column nullable."""
    plain = [pa.schema([_plain_field(f) for f in schema]) for schema in schemas]
    try:
        return pa.unify_schemas(plain, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        msg = (
            f"input.path {path!r}: files disagree on column types ({exc}); make the files agree on each column's type."
        )
        raise ConfigError(msg) from exc


def _plain_field(column: pa.Field) -> pa.Field:
    kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    return pa.field(column.name, kind)


def _check_columns(schema: pa.Schema, path: str, requires: Iterable[str], id_column: str | None) -> None:
    columns = ", ".join(schema.names) or "(none)"
    for name in requires:
        if name not in schema.names:
            msg = (
                f"input.path {path!r} has no column {name!r}, which the flow requires; columns: {columns}; "
                "rename the column in the input or change the flow's requires."
            )
            raise ConfigError(msg)
    if id_column is not None and id_column not in schema.names:
        msg = (
            f"input.id_column {id_column!r} is not a column of input.path {path!r}; columns: {columns}; "
            "name one of them or leave input.id_column unset for file:offset ids."
        )
        raise ConfigError(msg)


def _fingerprint(names: Sequence[str], infos: Sequence[dict]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for name, info in zip(names, infos, strict=True):
        versions = "\0".join(f"{key}={info[key]}" for key in _VERSION_KEYS if key in info)
        digest.update(f"{name}\0{info.get('size')}\0{versions}\n".encode())
    return digest.hexdigest()


# -- reading ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Read:
    """A batch of a unit's rows as read: typed like the plan's schema, a bad value set to null.

    ``first`` is the offset of the first row in its file, ``problems`` says why a row (by index
    in ``rows``) cannot be processed, and ``place`` names a row's position for messages.
    """

    first: int
    rows: list[dict]
    problems: dict[int, str]
    place: Callable[[int], str]


def _parquet_batches(plan: InputPlan, unit: InputUnit, batch_rows: int) -> Iterator[_Read | Unreadable]:
    group = f"row group {unit.row_group}"
    try:
        with plan.filesystem.open(unit.path, "rb") as handle:
            table = pq.ParquetFile(handle).read_row_group(unit.row_group)
    except _READ_ERRORS as exc:
        yield Unreadable(unit.path, group, unit.rows, f"it does not decode: {_flat(exc)}; replace or remove the file")
        return
    present = min(table.num_rows, unit.rows)
    table = table.slice(0, present)
    typer = None
    try:
        table = _align(table, plan.schema)
    except _CONVERT_ERRORS:
        typer = _Typer(plan.schema, unit.path)  # a value does not cast to the column's type: find its row
    for start in range(0, present, batch_rows):
        first = unit.offset + start
        rows = table.slice(start, batch_rows).to_pylist()

        def place(index: int, first: int = first) -> str:
            return f"{group} row {first + index}"

        problems: dict[int, str] = {}
        if typer is not None:
            rows, problems = typer.fit(rows, place)
        yield _Read(first, rows, problems, place)
    if present < unit.rows:
        where = f"{group} {_row_range(unit.offset + present, unit.offset + unit.rows)}"
        yield Unreadable(unit.path, where, unit.rows - present, _changed(present, unit.rows))


def _align(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The table with exactly the plan's columns: missing ones null, others cast (raises when a value does not cast)."""
    columns = []
    for target in schema:
        index = table.schema.get_field_index(target.name)
        if index < 0:
            columns.append(pa.nulls(table.num_rows, target.type))
            continue
        column = table.column(index)
        columns.append(column if column.type == target.type else column.cast(target.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _jsonl_batches(plan: InputPlan, unit: InputUnit, batch_rows: int) -> Iterator[_Read | Unreadable]:
    typer = _Typer(plan.schema, unit.path)
    lines = _file_lines(plan.filesystem, unit.path)
    batch: list[tuple[int, bytes]] = []
    first = read = 0
    failure = None
    try:
        while read < unit.rows:
            try:
                line = next(lines, None)
            except _READ_ERRORS as exc:
                failure = f"reading stopped after row {read}: {_flat(exc)}; replace or repair the file"
                break
            if line is None:
                break
            batch.append(line)
            read += 1
            if len(batch) == batch_rows:
                yield typer.read_lines(batch, first)
                first, batch = read, []
    finally:
        lines.close()
    if batch:
        yield typer.read_lines(batch, first)
    if read < unit.rows:
        yield Unreadable(unit.path, _row_range(read, unit.rows), unit.rows - read, failure or _changed(read, unit.rows))


class _Typer:
    """Types rows like the plan's schema; a value that does not fit is set to null and its row marked bad.

    The same rule for every format and every position in a file: the row becomes an
    ``error:bad_input`` row naming the column, and the other rows go on.
    """

    def __init__(self, schema: pa.Schema, path: str) -> None:
        self.schema = schema
        self.path = path
        self.names = frozenset(schema.names)
        self.integer_columns = [f.name for f in schema if pa.types.is_integer(f.type)]
        self.warned = False

    def read_lines(self, lines: list[tuple[int, bytes]], first: int) -> _Read:
        """JSONL lines (with their line numbers) as typed rows."""

        def place(index: int) -> str:
            return f"line {lines[index][0]}"

        rows, problems = _decode(self.path, lines)
        if not self.warned:
            self._warn_unknown_keys(rows, place)
        typed, unfit = self.fit(rows, place)
        for index, problem in unfit.items():
            problems.setdefault(index, problem)
        return _Read(first, typed, problems, place)

    def fit(self, rows: list[dict], place: Callable[[int], str]) -> tuple[list[dict], dict[int, str]]:
        """The rows typed like the schema, and why each row that did not fit (by index) is bad."""
        problems = self._fractions(rows, place)
        try:
            return pa.Table.from_pylist(rows, schema=self.schema).to_pylist(), problems
        except _CONVERT_ERRORS:
            pass
        typed = []
        for index, row in enumerate(rows):
            fitted, problem = self._fit_row(row)
            if problem is not None:
                problems.setdefault(index, f"input file {self.path!r} {place(index)}: {problem}")
            typed.append(fitted)
        return typed, problems

    def _fit_row(self, row: dict) -> tuple[dict, str | None]:
        fitted: dict[str, Any] = {}
        problem = None
        for target in self.schema:
            value = row.get(target.name)
            try:
                fitted[target.name] = pa.array([value], type=target.type).to_pylist()[0]
            except _CONVERT_ERRORS as exc:
                fitted[target.name] = None
                problem = problem or (
                    f"column {target.name!r} is {type(value).__name__}, the input schema says {target.type} "
                    f"({_flat(exc)}); make the column one type in every row"
                )
        return fitted, problem

    def _fractions(self, rows: list[dict], place: Callable[[int], str]) -> dict[int, str]:
        """pyarrow truncates 2.5 to 2 in an int64 column: set such a value to null and mark its row instead."""
        problems: dict[int, str] = {}
        for name in self.integer_columns:
            for index, row in enumerate(rows):
                value = row.get(name)
                if value.__class__ is float and not value.is_integer():
                    rows[index] = {**row, name: None}
                    problems.setdefault(
                        index,
                        f"input file {self.path!r} {place(index)}: column {name!r} is {value!r} but holds integers; "
                        "write its numbers as floats (1.0) in every row, or convert the file to Parquet",
                    )
        return problems

    def _warn_unknown_keys(self, rows: list[dict], place: Callable[[int], str]) -> None:
        for index, row in enumerate(rows):
            if not self.names.issuperset(row):
                extra = ", ".join(sorted(set(row) - self.names))
                log.warning(
                    "input file %r %s has keys the first rows of the input lack (%s); they are dropped. "
                    "Put such a key in the first rows or convert the file to Parquet to keep it.",
                    self.path, place(index), extra,
                )  # fmt: skip
                self.warned = True
                return


def _decode(path: str, lines: list[tuple[int, bytes]]) -> tuple[list[dict], dict[int, str]]:
    """Parse lines in one call; only when that fails, one by one. A line that is no JSON object becomes
    an empty row, with why (by index) in the second value."""
    problems: dict[int, str] = {}
    try:
        rows = msgspec.json.decode(b"[" + b",".join(line for _, line in lines) + b"]")
    except msgspec.DecodeError:
        rows = None
    if rows is None or len(rows) != len(lines):
        rows = []
        for index, (number, line) in enumerate(lines):
            try:
                rows.append(msgspec.json.decode(line))
            except msgspec.DecodeError as exc:
                problems[index] = f"input file {path!r} line {number} is not valid JSON ({exc}); fix or remove it"
                rows.append({})
    for index, row in enumerate(rows):
        if row.__class__ is not dict:
            kind = type(row).__name__
            number = lines[index][0]
            problems[index] = f"input file {path!r} line {number} is a JSON {kind}, not an object; write one per line"
            rows[index] = {}
    return rows, problems


def _open_jsonl(fs: fsspec.AbstractFileSystem, name: str) -> IO[bytes]:
    return fs.open(name, "rb", compression="gzip" if name.lower().endswith(".gz") else None)


def _file_lines(fs: fsspec.AbstractFileSystem, name: str) -> Generator[tuple[int, bytes], None, None]:
    with _open_jsonl(fs, name) as handle:
        yield from _lines(handle)


def _lines(handle: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of a file with their line numbers (from 1), read in large chunks so remote
    files stream quickly."""
    rest = b""
    number = 0
    while chunk := handle.read(_READ_CHUNK):
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        for line in parts:
            number += 1
            if line and not line.isspace():
                yield number, line
    if rest and not rest.isspace():
        yield number + 1, rest


def _changed(found: int, planned: int) -> str:
    return f"it has {found} rows where {planned} were planned: the file changed after planning; use a stable copy"


def _row_range(start: int, stop: int) -> str:
    return f"row {start}" if stop - start == 1 else f"rows {start}-{stop - 1}"


def _flat(exc: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(exc).split())


def _row_ids(plan: InputPlan, unit: InputUnit, read: _Read) -> list[str]:
    """The rows' ids; a row without an id value is marked bad and keeps the id of its position."""
    first = read.first
    if plan.id_column is None:
        prefix = f"{unit.file_index}:"
        return [f"{prefix}{offset}" for offset in range(first, first + len(read.rows))]
    ids = []
    for index, row in enumerate(read.rows):
        value = row.get(plan.id_column)
        if value is None:
            read.problems.setdefault(
                index,
                f"input file {unit.path!r} {read.place(index)} has no value in id column {plan.id_column!r}; "
                "fill it or leave input.id_column unset for file:offset ids",
            )
            value = f"{unit.file_index}:{first + index}"
        ids.append(value if value.__class__ is str else str(value))
    return ids


def _bad_row(row_id: str, fields: dict, problem: str) -> Message:
    """An input row finished as ``error:bad_input``: it goes straight to the output."""
    return Message(
        id=row_id, fields=fields, state=State(step=END), status=BAD_INPUT, error=problem, admitted_at=time.time()
    )
