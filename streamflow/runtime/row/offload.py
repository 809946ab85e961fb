"""Large field values travel through Ray's object store as references, not inline at every hop.

A field value whose msgpack encoding is longer than ``offload_threshold`` bytes is put in the
object store once, by the first process that sends it, and travels as an ``Offloaded``
placeholder: a msgpack extension holding an index into the list of object refs sent beside
the batch (Ray tracks refs passed as arguments, so a value lives exactly as long as some
row in flight still refers to it). Receivers fetch every placeholder before the operator
runs, so operators only see plain values; a value the operator passes on unchanged goes on
as the same reference, without a new upload. Within a node, fetching is a shared-memory read;
across nodes Ray copies an object once per node.

Who owns an object matters: Ray loses an object when its owner dies. Values are put by the
``ObjectKeeper`` actor of the sender's node (one call per batch), which lives as long as the
run, so an operator replica that dies takes none of the values of rows still in flight
with it, and the driver's loop never waits on a put. A row whose value cannot be
fetched any more (its node died) raises ``ValueLost``; the receiving actor drops the row and
the driver re-admits it, as it does for any row a dead actor held.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import msgspec
import ray

from streamflow.message import Message
from streamflow.result import TransferStats

__all__ = [
    "ObjectKeeper",
    "Offloaded",
    "Offloader",
    "ValueLost",
    "decode_rows",
    "encode_rows",
    "keep_references",
    "node_offloader",
]

log = logging.getLogger(__name__)

_EXT = 1
_HEADER = struct.Struct("<IQ")  # index into the refs, size in bytes; then the holder node's id
_encode_value = msgspec.msgpack.Encoder().encode
_decode_value = msgspec.msgpack.Decoder().decode

Put = Callable[[list[bytes]], Awaitable[list[Any]]]


class Offloaded:
    """A field value in the object store: its ref, its size and the node holding it."""

    __slots__ = ("node", "ref", "size")

    def __init__(self, ref: Any, size: int, node: bytes) -> None:
        self.ref = ref
        self.size = size
        self.node = node

    def __repr__(self) -> str:
        return f"Offloaded({self.size} bytes)"


class ValueLost(Exception):
    """An offloaded value of a row cannot be fetched any more (the node holding it died)."""


# -- the codec: placeholders as msgpack extensions, their refs beside the payload ------------

_outgoing: list[Any] = []
_incoming: Sequence[Any] = ()


def _enc_hook(value: Any) -> Any:
    if type(value) is Offloaded:
        _outgoing.append(value.ref)
        return msgspec.msgpack.Ext(_EXT, _HEADER.pack(len(_outgoing) - 1, value.size) + value.node)
    msg = f"cannot send a value of type {type(value).__name__} between actors"
    raise NotImplementedError(msg)


def _ext_hook(code: int, data: memoryview) -> Any:
    if code != _EXT:
        msg = f"unknown msgpack extension {code}"
        raise ValueError(msg)
    index, size = _HEADER.unpack_from(data)
    return Offloaded(_incoming[index], size, bytes(data[_HEADER.size :]))


_encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
_decoder = msgspec.msgpack.Decoder(list[Message], ext_hook=_ext_hook)


def encode_rows(rows: list[Message]) -> tuple[bytes, list[Any]]:
    """Encode rows for one hop; returns the payload and the refs of its placeholders."""
    global _outgoing
    _outgoing = []
    try:
        return _encoder.encode(rows), _outgoing
    finally:
        _outgoing = []


def decode_rows(payload: bytes, refs: Sequence[Any] = ()) -> list[Message]:
    """Decode what ``encode_rows`` produced; placeholders come back holding their refs."""
    global _incoming
    _incoming = refs
    try:
        return _decoder.decode(payload)
    finally:
        _incoming = ()


# -- putting and fetching ----------------------------------------------------------------


class ObjectKeeper:
    """Owns the values the operators of one node offload, for as long as the run lasts."""

    async def put(self, blobs: list[bytes]) -> list[Any]:
        """Store each blob; returns their refs (the caller borrows them, this actor owns them)."""
        return [ray.put(blob) for blob in blobs]

    async def alive(self) -> int:
        """Objects this keeper owns that some row still refers to (Ray frees the others).

        Read from the keeper's reference table in Ray's core worker (no public API gives it).
        """
        return len(ray._private.worker.global_worker.core_worker.get_all_reference_counts())  # type: ignore[attr-defined]


class Offloader:
    """Offloads the large fields of outgoing rows and fetches those of incoming rows, for one process.

    ``put`` stores blobs and returns refs: ``ray.put`` in the driver, an ``ObjectKeeper`` call
    in operator and sink actors.
    """

    def __init__(self, threshold: int, put: Put, node: str) -> None:
        self.threshold = threshold
        self._put = put
        self._node = bytes.fromhex(node)
        self.stats = TransferStats()

    async def pack(self, rows: list[Message]) -> list[Message]:
        """The rows with every field above the threshold replaced by a placeholder (one put for all)."""
        blobs: list[bytes] = []
        places: list[tuple[int, str]] = []
        for index, row in enumerate(rows):
            for name, value in row.fields.items():
                blob = self._blob(value)
                if blob is not None:
                    blobs.append(blob)
                    places.append((index, name))
        if not blobs:
            return rows
        refs = await self._put(blobs)
        changed: dict[int, dict[str, Any]] = {}
        for (index, name), blob, ref in zip(places, blobs, refs, strict=True):
            changed.setdefault(index, dict(rows[index].fields))[name] = Offloaded(ref, len(blob), self._node)
            self.stats.offloaded_bytes += len(blob)
        self.stats.offloaded_objects += len(blobs)
        packed = list(rows)
        for index, fields in changed.items():
            packed[index] = msgspec.structs.replace(rows[index], fields=fields)
        return packed

    async def fetch(self, row: Message) -> tuple[Message, dict[str, tuple[Any, Offloaded]]]:
        """The row with its placeholders replaced by their values, and what each value came from.

        Raises ``ValueLost`` when a value is gone with its node.
        """
        pending = {name: value for name, value in row.fields.items() if type(value) is Offloaded}
        if not pending:
            return row, {}
        try:
            blobs = await asyncio.gather(*(placeholder.ref for placeholder in pending.values()))
        except ray.exceptions.RayError as exc:
            msg = f"row {row.id}: an offloaded value is lost ({type(exc).__name__})"
            raise ValueLost(msg) from exc
        values: dict[str, Any] = {}
        origins: dict[str, tuple[Any, Offloaded]] = {}
        for (name, placeholder), blob in zip(pending.items(), blobs, strict=True):
            value = _decode_value(blob)
            values[name] = value
            origins[name] = (value, placeholder)
            self.stats.fetched_bytes += placeholder.size
            if placeholder.node != self._node:
                self.stats.fetched_remote_bytes += placeholder.size
        return row.with_fields(**values), origins

    def _blob(self, value: Any) -> bytes | None:
        """The value's encoding if it is above the threshold, else None (cheap for the common small cases)."""
        kind = type(value)
        if kind in (int, float, bool, Offloaded) or value is None:
            return None
        if kind is str and len(value) * 4 <= self.threshold:  # at most 4 UTF-8 bytes per character
            return None
        blob = _encode_value(value)
        return blob if len(blob) > self.threshold else None


def keep_references(row: Message, origins: Mapping[str, tuple[Any, Offloaded]]) -> Message:
    """``row`` with each value it still holds unchanged from ``origins`` swapped back for its placeholder."""
    fields = row.fields
    unchanged = {name: placeholder for name, (value, placeholder) in origins.items() if fields.get(name) is value}
    if not unchanged:
        return row
    return msgspec.structs.replace(row, fields={**fields, **unchanged})


def node_offloader(threshold: int, keepers: Mapping[str, Any]) -> Offloader | None:
    """The offloader of an actor: puts through its node's keeper (or itself, on a node that has none)."""
    if threshold <= 0:
        return None
    node = ray.get_runtime_context().get_node_id()
    keeper = keepers.get(node)
    if keeper is None:
        log.warning("no object keeper on node %s: values offloaded here die with this actor", node[:8])
        return Offloader(threshold, local_put, node)
    return Offloader(threshold, keeper_put(keeper), node)


async def local_put(blobs: list[bytes]) -> list[Any]:
    """Put blobs from this process, which then owns them (where a node has no keeper)."""
    return [ray.put(blob) for blob in blobs]


def keeper_put(keeper: Any) -> Put:
    """Put blobs through a node's ``ObjectKeeper``, which then owns them."""

    async def put(blobs: list[bytes]) -> list[Any]:
        return await keeper.put.remote(blobs)

    return put
