"""Write finished rows as typed Parquet part files that appear atomically.

Rows are converted to Arrow when they are appended, so a value that does not fit its
declared column is caught on its own row (``status = error:schema``, the value set to null)
instead of failing a whole part later; no row is ever lost and the writer never crashes on
data. Parts roll every ``part_rows`` rows and are written to a hidden temporary name, fsynced,
then renamed, so readers and crashes only ever see complete parts.

Local filesystem only for now (atomic rename and fsync are local guarantees); remote storage
via fsspec comes later.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from streamflow.errors import ClaimLost, ConfigError, RunError
from streamflow.message import Message
from streamflow.schema import RESERVED_COLUMNS

__all__ = ["PartWriter", "claim_directory", "claim_id", "part_row_ids", "read_claim", "write_part"]

OWNER_FILE = ".writer"

_SCHEMA_ERROR = "error:schema"
_CONVERT_ERRORS = (pa.ArrowException, OverflowError, TypeError, ValueError)
_PASS_THROUGH = (datetime.datetime, datetime.date, datetime.time, datetime.timedelta, bytes, bytearray)


class PartWriter:
    """Buffer rows and write them as ``{prefix}-{seq:05d}.parquet`` parts in ``directory``.

    Numbering continues after the highest part already in the directory with the same
    prefix, so a second writer (a resumed run, another sink shard with its own prefix)
    never overwrites committed parts. Not thread-safe: one writer per sink. ::

        writer = PartWriter("out/data", schema, prefix="sink0", part_rows=50_000)
        checked = writer.append(rows)   # the rows as they will be written
        paths = writer.close()          # ["out/data/sink0-00000.parquet", ...]
    """

    def __init__(
        self,
        directory: str,
        schema: pa.Schema,
        *,
        prefix: str,
        part_rows: int = 100_000,
        compression: str = "zstd",
        claim: str | None = None,
    ) -> None:
        _check_config(schema, prefix, part_rows, compression)
        os.makedirs(directory, exist_ok=True)
        # With a ``claim``, parts are committed only while the directory's claim is that one
        # (``claim_directory``): a writer left over from a killed run, or from a run whose
        # directory was taken over, cannot add parts behind the back of the run that holds it.
        self._claim = claim
        self.directory = directory
        self.schema = schema
        self.prefix = prefix
        self.part_rows = part_rows
        self.compression = compression
        self._sequence = _next_sequence(directory, prefix)
        self._data_columns = frozenset(name for name in schema.names if name not in RESERVED_COLUMNS)
        self._integer_columns = [f.name for f in schema if f.name in self._data_columns and pa.types.is_integer(f.type)]
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._paths: list[str] = []
        self._closed = False
        self.rows_committed = 0
        """Rows in parts already written; rows are committed in the order they were appended."""

    def append(self, rows: list[Message]) -> list[Message]:
        """Buffer rows, writing a part each time ``part_rows`` are buffered.

        Returns the rows as they will be written: the same objects, except rows whose
        fields did not fit the schema, which come back marked ``error:schema``.
        """
        if self._closed:
            msg = f"PartWriter for {self.directory!r} is closed; create a new writer to write more rows."
            raise RunError(msg)
        if not rows:
            return rows
        checked, table = self._convert(rows)
        self._buffer.append(table)
        self._buffered += table.num_rows
        while self._buffered >= self.part_rows:
            self._write_first(self.part_rows)
        return checked

    def writes_a_part(self, rows: int) -> bool:
        """Whether appending ``rows`` more rows writes a part (file I/O and compression), not just buffers them."""
        return self._buffered + rows >= self.part_rows

    def flush(self) -> str | None:
        """Write everything buffered as one part; its path, or None when nothing was buffered."""
        if self._buffered == 0:
            return None
        return self._write_first(self._buffered)

    def close(self) -> list[str]:
        """Flush and return the paths of every part this writer wrote."""
        if not self._closed:
            self.flush()
            self._closed = True
        return list(self._paths)

    # -- conversion ---------------------------------------------------------------------

    def _convert(self, rows: list[Message]) -> tuple[list[Message], pa.Table]:
        """Rows to an Arrow table; the common path is one ``from_pylist`` for the whole batch."""
        problems: dict[int, list[str]] = {}
        records = []
        declared = self._data_columns
        for index, row in enumerate(rows):
            fields = row.fields
            if not declared.issuperset(fields):
                problems[index] = [
                    f"field {name!r} is not declared by any step; add it to the operator's fields."
                    for name in fields
                    if name not in declared
                ]
                fields = {name: value for name, value in fields.items() if name in declared}
            error = row.error if row.error is None or row.error.__class__ is str else str(row.error)
            records.append({**fields, "row_id": str(row.id), "status": str(row.status), "error": error})
        self._check_integers(records, problems)
        table = None
        try:
            table = pa.Table.from_pylist(records, schema=self.schema)
        except _CONVERT_ERRORS:
            self._isolate(records, problems)
        checked = rows
        if problems:
            checked = list(rows)
            for index, messages in problems.items():
                checked[index] = _mark(rows[index], records[index], messages, declared)
        if table is None or problems:
            table = pa.Table.from_pylist(records, schema=self.schema)
        return checked, table

    def _check_integers(self, records: list[dict], problems: dict[int, list[str]]) -> None:
        """pyarrow silently truncates 2.5 to 2 in an int64 column; catch it before conversion."""
        for name in self._integer_columns:
            for index, record in enumerate(records):
                value = record.get(name)
                if value.__class__ is float and not value.is_integer():
                    record[name] = None
                    problems.setdefault(index, []).append(_type_message(name, value, self.schema.field(name).type))

    def _isolate(self, records: list[dict], problems: dict[int, list[str]]) -> None:
        """Find the values that do not convert, column by column, and null them in ``records``."""
        for target in self.schema:
            name, kind = target.name, target.type
            values = [record.get(name) for record in records]
            if _converts(values, kind):
                continue
            if pa.types.is_nested(kind):
                values = [_builtins(value) for value in values]
                for record, value in zip(records, values, strict=True):
                    if name in record:
                        record[name] = value
                if _converts(values, kind):
                    continue
            for index, value in enumerate(values):
                if not _converts([value], kind):
                    records[index][name] = None
                    problems.setdefault(index, []).append(_type_message(name, value, kind))

    # -- writing ------------------------------------------------------------------------

    def _write_first(self, count: int) -> str:
        """Write the first ``count`` buffered rows as the next part; keep the rest buffered."""
        table = self._buffer[0] if len(self._buffer) == 1 else pa.concat_tables(self._buffer)
        rest = table.slice(count)
        self._buffer = [rest] if rest.num_rows else []
        self._buffered -= count
        return self._write(table.slice(0, count))

    def _check_claim(self) -> None:
        if self._claim is not None and claim_id(self.directory) != self._claim:
            msg = f"another run has claimed {self.directory!r} (it was resumed); this writer commits nothing more."
            raise ClaimLost(msg)

    def _write(self, table: pa.Table) -> str:
        final = os.path.join(self.directory, f"{self.prefix}-{self._sequence:05d}.parquet")
        write_part(table, final, compression=self.compression, before_rename=self._check_claim)
        self.rows_committed += table.num_rows
        self._sequence += 1
        self._paths.append(final)
        return final


def write_part(
    table: pa.Table, final: str, *, compression: str = "zstd", before_rename: Callable[[], None] | None = None
) -> None:
    """Write ``table`` to ``final`` atomically: a hidden temp file, fsync, rename, fsync the folder.

    Readers and crashes see either the file that was there before or the complete new one.
    ``before_rename`` may raise to abandon the part at the last moment.
    """
    directory, name = os.path.split(final)
    temporary = os.path.join(directory, f".{name}.tmp")
    try:
        pq.write_table(table, temporary, compression=compression)
        _fsync(temporary, os.O_RDONLY)
        if before_rename is not None:
            before_rename()
        os.replace(temporary, final)
        _fsync(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except RunError:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        msg = f"could not write part {final!r} ({exc}); check free space and permissions of {directory!r}."
        raise RunError(msg) from exc


def claim_directory(directory: str, holder: Mapping[str, Any] | None = None, *, claim: str | None = None) -> str:
    """Make this run the only one allowed to commit parts in ``directory``; returns its claim id.

    Writers holding an earlier claim (for example sink actors that outlived a killed driver)
    find the claim changed and stop before committing another part. ``holder`` (host, pid,
    attempt) is recorded beside the id, so whoever finds the claim can say who holds it;
    ``claim`` is the id to use (default: a new random one).
    """
    os.makedirs(directory, exist_ok=True)
    claim = claim or uuid.uuid4().hex
    path = os.path.join(directory, OWNER_FILE)
    with open(path + ".tmp", "w") as handle:
        json.dump({**(holder or {}), "claim": claim}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(path + ".tmp", path)
    return claim


def read_claim(directory: str) -> dict[str, Any] | None:
    """The claim on ``directory``: its id under ``claim`` and what its holder recorded; None when unclaimed."""
    try:
        with open(os.path.join(directory, OWNER_FILE)) as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    return record if isinstance(record, dict) and "claim" in record else {"claim": text}  # a bare id: older runs


def claim_id(directory: str) -> str | None:
    """The id of the claim on ``directory`` (None when unclaimed)."""
    claim = read_claim(directory)
    return claim["claim"] if claim is not None else None


def part_row_ids(directory: str, prefix: str) -> dict[str, str]:
    """``row_id`` -> ``status`` of every row in the committed parts ``{prefix}-*.parquet`` of ``directory``."""
    pattern = re.compile(re.escape(prefix) + r"-(\d+)\.parquet")
    ids: dict[str, str] = {}
    if not os.path.isdir(directory):
        return ids
    for name in sorted(os.listdir(directory)):
        if pattern.fullmatch(name):
            table = pq.read_table(os.path.join(directory, name), columns=["row_id", "status"])
            ids.update(zip(table.column("row_id").to_pylist(), table.column("status").to_pylist(), strict=True))
    return ids


def _check_config(schema: pa.Schema, prefix: str, part_rows: int, compression: str) -> None:
    for name in RESERVED_COLUMNS:
        if name not in schema.names:
            msg = f"PartWriter schema has no column {name!r}; build the schema with streamflow.schema.output_schema."
            raise ConfigError(msg)
    if not prefix or "/" in prefix or os.sep in prefix:
        msg = f"PartWriter prefix {prefix!r} is not a plain file name prefix; use something like 'sink0'."
        raise ConfigError(msg)
    if part_rows < 1:
        msg = f"PartWriter part_rows is {part_rows}; set it to 1 or more."
        raise ConfigError(msg)
    if compression.lower() not in ("none", "uncompressed"):
        try:
            available = pa.Codec.is_available(compression)
        except ValueError:
            available = False
        if not available:
            msg = f"PartWriter compression {compression!r} is not available in pyarrow; use zstd, snappy, gzip or none."
            raise ConfigError(msg)


def _next_sequence(directory: str, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"-(\d+)\.parquet")
    numbers = [int(match.group(1)) for name in os.listdir(directory) if (match := pattern.fullmatch(name))]
    return max(numbers, default=-1) + 1


def _fsync(path: str, flags: int) -> None:
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _converts(values: list, kind: pa.DataType) -> bool:
    try:
        pa.array(values, type=kind)
    except _CONVERT_ERRORS:
        return False
    return True


def _builtins(value: object) -> object:
    """msgspec Structs (possibly inside lists and dicts) as plain dicts, other values unchanged."""
    if value is None or value.__class__ in (str, int, float, bool):
        return value
    try:
        return msgspec.to_builtins(value, builtin_types=_PASS_THROUGH)
    except (TypeError, ValueError):
        return value


def _type_message(name: str, value: object, kind: pa.DataType) -> str:
    return f"column {name!r} is {type(value).__name__}, schema says {kind}; cast it in the operator."


def _mark(row: Message, record: dict, messages: list[str], declared: frozenset[str]) -> Message:
    """The row as written: offending fields dropped or nulled, status and error telling why."""
    text = " ".join(messages)
    status = _SCHEMA_ERROR if row.is_ok else row.status
    error = text if row.error is None else f"{record['error']}\n{text}"
    record["status"], record["error"] = status, error
    fields = {name: record.get(name) for name in row.fields if name in declared}
    return msgspec.structs.replace(row, fields=fields, status=status, error=error)
