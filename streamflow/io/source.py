"""Plan the input into units and partitions, then read a unit's rows in batches.

Planning touches only metadata (Parquet footers) and streams each JSONL file once to count
its rows, so every problem with the input (a missing path, a corrupt file, a missing column,
no rows at all) is reported in one line before any actor starts. A unit is a Parquet row
group or a whole JSONL file; units go to partitions round-robin. A row's id depends only on
its file and its offset in that file, never on the partition count, so ids stay the same
when the parallelism changes, which is what resuming a run relies on.

Paths are fsspec URLs (local paths, ``s3://``, ``gs://``, ``hf://``, ``memory://``...).
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections.abc import Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import fsspec
import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from streamflow.errors import ConfigError

__all__ = ["InputPlan", "InputUnit", "plan_input", "read_unit"]

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
) -> Iterator[tuple[list[str], list[dict]]]:
    """Yield ``(row ids, rows)`` batches of one unit, aligned to ``plan.schema``.

    Synchronous on purpose: the driver runs it in a thread so that reading overlaps with
    admitting rows, and no event loop is needed to test it. Ids are ``"<file index>:<offset>"``
    unless the plan has an ``id_column``, whose value (as ``str``) is then the id. Rows whose
    id is in ``skip`` (already committed by the run being resumed) are left out, so both run
    modes skip them in this one place; a batch may then come out shorter, never empty.
    """
    if batch_rows < 1:
        msg = f"read_unit batch_rows is {batch_rows}; set it to 1 or more."
        raise ConfigError(msg)
    batches = _parquet_batches if unit.format == "parquet" else _jsonl_batches
    for first, rows in batches(plan, unit, batch_rows):
        ids = _row_ids(plan, unit, first, rows)
        if skip:
            kept = [index for index, row_id in enumerate(ids) if row_id not in skip]
            if len(kept) < len(ids):
                ids, rows = [ids[i] for i in kept], [rows[i] for i in kept]
            if not ids:
                continue
        yield ids, rows


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
    sample: list[bytes] = []
    sampled = 0
    rows = 0
    try:
        with _open_jsonl(fs, name) as handle:
            for line in _lines(handle):
                if sampled < _SCHEMA_SAMPLE_BYTES:
                    sample.append(line)
                    sampled += len(line)
                rows += 1
                if rows == stop_after:
                    break
    except _READ_ERRORS as exc:
        msg = f"input file {name!r} is not a readable JSONL file ({exc}); replace or remove it."
        raise ConfigError(msg) from exc
    return _infer_schema(name, _decode(name, sample, 0)), [(None, rows)]


def _infer_schema(name: str, rows: list[dict]) -> pa.Schema:
    """Column types of JSONL rows: every key seen, each typed from all its sampled values."""
    columns = dict.fromkeys(key for row in rows for key in row)
    fields = []
    for key in columns:
        try:
            fields.append(pa.field(key, pa.array([row.get(key) for row in rows]).type))
        except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
            msg = (
                f"input file {name!r}: column {key!r} mixes types in its first rows ({exc}); "
                "make each column one JSON type."
            )
            raise ConfigError(msg) from exc
    return pa.schema(fields)


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


def _parquet_batches(plan: InputPlan, unit: InputUnit, batch_rows: int) -> Iterator[tuple[int, list[dict]]]:
    try:
        with plan.filesystem.open(unit.path, "rb") as handle:
            table = pq.ParquetFile(handle).read_row_group(unit.row_group)
    except _READ_ERRORS as exc:
        msg = (
            f"input file {unit.path!r} row group {unit.row_group} could not be read ({exc}); "
            "replace or remove the file."
        )
        raise ConfigError(msg) from exc
    if table.num_rows < unit.rows:
        _changed(unit, f"row group {unit.row_group}", table.num_rows)
    table = _align(table.slice(0, unit.rows), plan.schema, unit.path)
    for start in range(0, unit.rows, batch_rows):
        yield unit.offset + start, table.slice(start, batch_rows).to_pylist()


def _align(table: pa.Table, schema: pa.Schema, path: str) -> pa.Table:
    """The table with exactly the plan's columns: missing ones null, others cast."""
    columns = []
    for target in schema:
        index = table.schema.get_field_index(target.name)
        if index < 0:
            columns.append(pa.nulls(table.num_rows, target.type))
            continue
        column = table.column(index)
        if column.type != target.type:
            try:
                column = column.cast(target.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                msg = (
                    f"input file {path!r}: column {target.name!r} cannot be cast from {column.type} to {target.type} "
                    f"({exc}); make the files agree on its type."
                )
                raise ConfigError(msg) from exc
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def _jsonl_batches(plan: InputPlan, unit: InputUnit, batch_rows: int) -> Iterator[tuple[int, list[dict]]]:
    reader = _JsonlBatcher(plan.schema, unit.path)
    lines: list[bytes] = []
    first = 0
    read = 0
    try:
        with _open_jsonl(plan.filesystem, unit.path) as handle:
            for line in _lines(handle):
                if read == unit.rows:
                    break
                lines.append(line)
                read += 1
                if len(lines) == batch_rows:
                    yield first, reader.rows(lines, first)
                    first, lines = read, []
    except _READ_ERRORS as exc:
        msg = f"input file {unit.path!r} could not be read after row {read} ({exc}); replace or remove the file."
        raise ConfigError(msg) from exc
    if read < unit.rows:
        _changed(unit, "the file", read)
    if lines:
        yield first, reader.rows(lines, first)


class _JsonlBatcher:
    """Turns JSONL lines into rows typed like the plan's schema, naming the row that does not fit."""

    def __init__(self, schema: pa.Schema, path: str) -> None:
        self.schema = schema
        self.path = path
        self.names = frozenset(schema.names)
        self.integer_columns = [f.name for f in schema if pa.types.is_integer(f.type)]
        self.warned = False

    def rows(self, lines: list[bytes], first: int) -> list[dict]:
        rows = _decode(self.path, lines, first)
        if not self.warned:
            self._warn_unknown_keys(rows, first)
        self._check_integers(rows, first)
        try:
            table = pa.Table.from_pylist(rows, schema=self.schema)
        except (pa.ArrowException, OverflowError, TypeError, ValueError):
            self._raise_first_bad_row(rows, first)
            raise
        return table.to_pylist()

    def _warn_unknown_keys(self, rows: list[dict], first: int) -> None:
        for number, row in enumerate(rows, first):
            if not self.names.issuperset(row):
                extra = ", ".join(sorted(set(row) - self.names))
                log.warning(
                    "input file %r row %d has keys the first rows of the input lack (%s); they are dropped. "
                    "Put such a key in the first rows or convert the file to Parquet to keep it.",
                    self.path, number, extra,
                )  # fmt: skip
                self.warned = True
                return

    def _check_integers(self, rows: list[dict], first: int) -> None:
        """pyarrow truncates 2.5 to 2 in an int64 column; refuse instead of losing data."""
        for name in self.integer_columns:
            for number, row in enumerate(rows, first):
                value = row.get(name)
                if value.__class__ is float and not value.is_integer():
                    msg = (
                        f"input file {self.path!r} row {number}: column {name!r} is {value!r} but holds integers in "
                        "the first rows; write those as floats (1.0) or convert the file to Parquet."
                    )
                    raise ConfigError(msg)

    def _raise_first_bad_row(self, rows: list[dict], first: int) -> None:
        for number, row in enumerate(rows, first):
            for target in self.schema:
                value = row.get(target.name)
                try:
                    pa.array([value], type=target.type)
                except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
                    msg = (
                        f"input file {self.path!r} row {number}: column {target.name!r} is {type(value).__name__}, "
                        f"the input schema says {target.type} ({exc}); make the column one type in every row."
                    )
                    raise ConfigError(msg) from exc


def _decode(path: str, lines: list[bytes], first: int) -> list[dict]:
    """Parse lines in one call; only when that fails, parse them one by one to name the bad row."""
    try:
        rows = msgspec.json.decode(b"[" + b",".join(lines) + b"]")
    except msgspec.DecodeError:
        rows = None
    if rows is None or len(rows) != len(lines):
        rows = []
        for number, line in enumerate(lines, first):
            try:
                rows.append(msgspec.json.decode(line))
            except msgspec.DecodeError as exc:
                msg = f"input file {path!r} row {number} is not valid JSON ({exc}); fix or remove that line."
                raise ConfigError(msg) from exc
    for number, row in enumerate(rows, first):
        if row.__class__ is not dict:
            kind = type(row).__name__
            msg = f"input file {path!r} row {number} is a JSON {kind}, not an object; write one object per line."
            raise ConfigError(msg)
    return rows


def _open_jsonl(fs: fsspec.AbstractFileSystem, name: str) -> IO[bytes]:
    return fs.open(name, "rb", compression="gzip" if name.lower().endswith(".gz") else None)


def _lines(handle: IO[bytes]) -> Iterator[bytes]:
    """The non-blank lines of a file, read in large chunks so remote files stream quickly."""
    rest = b""
    while chunk := handle.read(_READ_CHUNK):
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        for line in parts:
            if line and not line.isspace():
                yield line
    if rest and not rest.isspace():
        yield rest


def _changed(unit: InputUnit, where: str, found: int) -> None:
    msg = (
        f"input file {unit.path!r}: {where} has {found} rows where {unit.rows} were planned; "
        "the file changed after planning, so restart the run on a stable copy."
    )
    raise ConfigError(msg)


def _row_ids(plan: InputPlan, unit: InputUnit, first: int, rows: list[dict]) -> list[str]:
    if plan.id_column is None:
        prefix = f"{unit.file_index}:"
        return [f"{prefix}{offset}" for offset in range(first, first + len(rows))]
    ids = []
    for number, row in enumerate(rows, first):
        value = row[plan.id_column]
        if value is None:
            msg = (
                f"input file {unit.path!r} row {number} has no value in id column {plan.id_column!r}; "
                "fill it or leave input.id_column unset for file:offset ids."
            )
            raise ConfigError(msg)
        ids.append(value if value.__class__ is str else str(value))
    return ids
