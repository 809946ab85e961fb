"""The per-hop event log: one record per row per step, written as Parquet under ``<run>/events/``.

Each step actor (hosting one step or several fused ones) and each sink keeps its own
``EventRecorder``: recording a hop appends to flat buffers, and the list becomes a Parquet file every ``flush_rows`` records or
``flush_s`` seconds, written off the event loop. No event goes through the driver.

A hop's timestamps split a row's time into parts that add up:
``sent_at`` (the previous actor handed the row to its outbox) -> ``received_at`` (this actor
decoded it) -> ``started_at`` (the operator began; waits for a concurrency slot before)
-> ``ended_at``. So transport = received - sent, queueing = started - received and
processing = ended - started; a row's first hop also carries the time it waited for
admission (``sent_at - admitted_at``). Sink hops have step ``sink``.

Events are observability, not data: an actor that dies loses the events it had not
written yet, and a re-admitted row's hops appear once per attempt.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import threading
import time
import zlib
from array import array
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streamflow.config import EventsConfig
from streamflow.message import Message
from streamflow.services.llm import Usage

__all__ = [
    "DUPLICATE",
    "EVENT_SCHEMA",
    "SINK_STEP",
    "EventRecorder",
    "events_dir",
    "read_events",
    "recorder",
    "sampled",
    "write_when_due",
]

log = logging.getLogger(__name__)

SINK_STEP = "sink"
DUPLICATE = "duplicate"
"""Status of a sink hop whose row the sink had already taken (a re-admitted copy); it is not written."""

_TIME = pa.timestamp("us", tz="UTC")
EVENT_SCHEMA = pa.schema(
    [
        ("row_id", pa.string()),
        ("root_id", pa.string()),
        ("step", pa.string()),
        ("replica", pa.int32()),
        ("node", pa.string()),
        ("hop", pa.int32()),
        ("turn", pa.int32()),
        ("admitted_at", _TIME),
        ("sent_at", _TIME),
        ("received_at", _TIME),
        ("started_at", _TIME),
        ("ended_at", _TIME),
        ("status", pa.string()),
        ("next_step", pa.string()),
        ("outputs", pa.int32()),
        ("llm_calls", pa.int32()),
        ("llm_retries", pa.int32()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("error", pa.string()),
    ]
)


def events_dir(run_dir: str) -> str:
    return os.path.join(run_dir, "events")


def sampled(root_id: str, rate: float) -> bool:
    """Whether a row's hops are recorded: the same answer for every hop and copy of one input row."""
    if rate >= 1.0:
        return True
    return rate > 0.0 and zlib.crc32(root_id.encode()) < rate * 4294967296.0


class EventRecorder:
    """Buffers the hops one actor saw and writes them as Parquet files in ``directory``.

    A hop costs three ``extend`` calls: its times, counts and strings go to three flat
    buffers (``array.array`` for numbers), which become Arrow columns by reshaping and
    slicing. Tuples per hop cost about 5x more once turned into columns.
    """

    def __init__(
        self,
        directory: str,
        actor: str,
        replica: int,
        *,
        sample: float = 1.0,
        flush_rows: int = 20_000,
        flush_s: float = 10.0,
    ) -> None:
        self.directory = directory
        self.replica = replica
        self.name = f"{actor}-{replica}"
        self.sample = sample
        self.node = _node_name()
        self._flush_rows = flush_rows
        self._flush_s = flush_s
        self._times: array[float] = array("d")
        self._counts: array[int] = array("q")
        self._texts: list[str | None] = []
        self._since = time.monotonic()
        self._files = 0
        self._token = secrets.token_hex(3)  # files of a restarted actor or a resumed run never collide
        self._write_lock = threading.Lock()

    def wants(self, row: Message) -> bool:
        """Whether this row's hops are recorded (``sample`` decides per input row)."""
        return self.sample >= 1.0 or sampled(row.root or row.id, self.sample)

    def hop(
        self,
        step: str,
        row: Message,
        sent_at: float,
        received_at: float,
        started_at: float,
        ended_at: float,
        results: Sequence[Message],
        usage: Usage | None = None,
    ) -> None:
        """Record one row's pass through ``step``; ``results`` are the rows that left it.

        ``sent_at`` is when the row was handed on to this step: by another actor's outbox, or,
        between fused steps, by the previous step in this actor (no transport time then).
        """
        first = results[0] if results else row
        state = row.state
        self._times.extend((row.admitted_at, sent_at, received_at, started_at, ended_at))
        if usage is not None and usage.requests:
            counts = (state.hops, state.turn, len(results), usage.requests, usage.retries)
            self._counts.extend((*counts, usage.prompt_tokens, usage.completion_tokens))
        else:
            self._counts.extend((state.hops, state.turn, len(results), 0, 0, 0, 0))
        error = first.error.split("\n", 1)[0][:500] if first.error else None
        self._texts.extend((step, row.id, row.root or row.id, first.status, first.state.step, error))

    def sink_hops(
        self, rows: Sequence[Message], received_at: float, started_at: float, ended_at: float, *, duplicate: bool
    ) -> None:
        """Record finished rows reaching their sink (``duplicate``: copies the sink had already taken).

        ``started_at`` is when the sink's writer was free; ``ended_at`` when the rows were in its buffer.
        One tight loop: a sink records every row of the run.
        """
        times, counts, texts, sample = self._times, self._counts, self._texts, self.sample
        for row in rows:
            if sample < 1.0 and not sampled(row.root or row.id, sample):
                continue
            state = row.state
            times.extend((row.admitted_at, row.sent_at, received_at, started_at, ended_at))
            counts.extend((state.hops, state.turn, 0, 0, 0, 0, 0))
            texts.extend((SINK_STEP, row.id, row.root or row.id, DUPLICATE if duplicate else row.status, None, None))

    def __len__(self) -> int:
        return len(self._times) // len(_TIMES)

    def due(self) -> bool:
        """True when the buffer should be written now."""
        return len(self) >= self._flush_rows or (len(self) > 0 and time.monotonic() - self._since >= self._flush_s)

    def take(self) -> tuple[array[float], array[int], list[str | None]]:
        """The buffered events, leaving the buffer empty (write them with ``write``)."""
        taken = (self._times, self._counts, self._texts)
        self._times, self._counts, self._texts = array("d"), array("q"), []
        self._since = time.monotonic()
        return taken

    def write(self, taken: tuple[array[float], array[int], list[str | None]]) -> str | None:
        """Write taken events as one Parquet file (atomically: readers never see half a file)."""
        times, counts, texts = taken
        rows = len(times) // len(_TIMES)
        if not rows:
            return None
        # Every column is built in its final type: a cast would import pyarrow.compute in each actor.
        arrays: dict[str, pa.Array] = {}
        seconds = np.frombuffer(times, dtype=np.float64).reshape(rows, len(_TIMES))
        for index, name in enumerate(_TIMES):
            column = seconds[:, index]
            arrays[name] = pa.array((column * 1_000_000).astype(np.int64), type=_TIME, mask=column == 0)
        numbers = np.frombuffer(counts, dtype=np.int64).reshape(rows, len(_COUNTS))
        for index, name in enumerate(_COUNTS):
            kind = EVENT_SCHEMA.field(name).type
            arrays[name] = pa.array(numbers[:, index].astype(np.int32 if kind == pa.int32() else np.int64), type=kind)
        for index, name in enumerate(_TEXTS):
            arrays[name] = pa.array(texts[index :: len(_TEXTS)], type=pa.string())
        arrays["replica"] = pa.array(np.full(rows, self.replica, dtype=np.int32))
        arrays["node"] = pa.repeat(pa.scalar(self.node, pa.string()), rows)
        table = pa.Table.from_arrays([arrays[field.name] for field in EVENT_SCHEMA], schema=EVENT_SCHEMA)
        with self._write_lock:
            self._files += 1
            os.makedirs(self.directory, exist_ok=True)
            path = os.path.join(self.directory, f"{self.name}-{self._token}-{self._files:05d}.parquet")
            temp = os.path.join(self.directory, f".{os.path.basename(path)}.tmp")
            # No column statistics: the report reads whole files and never uses them; they cost CPU to compute.
            pq.write_table(table, temp, compression="zstd", write_statistics=False)
            os.replace(temp, path)
        return path

    def flush(self) -> str | None:
        """Write what is buffered now, in the calling thread."""
        return self.write(self.take())


_TIMES = ("admitted_at", "sent_at", "received_at", "started_at", "ended_at")
_COUNTS = ("hop", "turn", "outputs", "llm_calls", "llm_retries", "prompt_tokens", "completion_tokens")
_TEXTS = ("step", "row_id", "root_id", "status", "next_step", "error")
"""The columns a recorder buffers per hop, in ``hop``'s order; replica and node are the recorder's own."""


def recorder(directory: str, actor: str, replica: int, cfg: EventsConfig | None) -> EventRecorder | None:
    """The recorder of one actor, or None when the event log is off (no directory, or ``sample=0``)."""
    if not directory or cfg is None or cfg.sample <= 0:
        return None
    return EventRecorder(directory, actor, replica, sample=cfg.sample, flush_rows=cfg.flush_rows, flush_s=cfg.flush_s)


async def write_when_due(events: EventRecorder, every_s: float = 0.5) -> None:
    """Write a recorder's buffered events off the event loop whenever they are due (run it as a task)."""
    while True:
        await asyncio.sleep(every_s)
        if events.due():
            try:
                await asyncio.to_thread(events.write, events.take())
            except OSError as exc:
                log.warning("could not write the events of %s: %s", events.name, exc)


def read_events(run_dir: str) -> pa.Table:
    """Every event of a run as one Arrow table (empty, with the schema, when there are none)."""
    files = sorted(Path(events_dir(run_dir)).glob("*.parquet"))
    if not files:
        return EVENT_SCHEMA.empty_table()
    return pa.concat_tables(pq.read_table(path, schema=EVENT_SCHEMA) for path in files)


def _node_name() -> str:
    """The Ray node this process runs on (its IP), or the host name outside Ray."""
    try:
        import ray

        if ray.is_initialized():
            return ray.util.get_node_ip_address()
    except Exception:  # a missing node name must not stop recording
        log.debug("no Ray node address", exc_info=True)
    return os.uname().nodename
