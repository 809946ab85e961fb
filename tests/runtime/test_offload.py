"""Offloading large field values to the object store: what goes by reference, and how long it lives."""

import asyncio

import pytest
import ray

from streamflow.message import Message
from streamflow.runtime.row.offload import (
    ObjectKeeper,
    Offloaded,
    Offloader,
    ValueLost,
    decode_rows,
    encode_rows,
    keep_references,
    keeper_put,
    local_put,
)

BIG = "word " * 400  # 2,000 characters


class CountingPut:
    """``local_put`` that remembers how many calls and blobs it saw."""

    def __init__(self) -> None:
        self.calls = 0
        self.blobs = 0

    async def __call__(self, blobs):
        self.calls += 1
        self.blobs += len(blobs)
        return await local_put(blobs)


def offloader(put=local_put) -> Offloader:
    return Offloader(512, put, ray.get_runtime_context().get_node_id())


def test_only_values_above_the_threshold_travel_by_reference(ray_runtime):
    put = CountingPut()
    rows = [
        Message(id="1", fields={"text": BIG, "n": 7, "short": "hi", "turns": [{"role": "user", "content": BIG}]}),
        Message(id="2", fields={"text": BIG, "flag": True, "empty": None}),
    ]
    packed = asyncio.run(offloader(put).pack(rows))
    assert put.calls == 1 and put.blobs == 3  # one put call per batch
    assert isinstance(packed[0]["text"], Offloaded) and isinstance(packed[0]["turns"], Offloaded)
    assert packed[0]["n"] == 7 and packed[0]["short"] == "hi" and packed[1]["flag"] is True
    assert rows[0]["text"] == BIG  # the caller's rows are not changed


def test_rows_with_references_round_trip_and_are_fetched_back_to_plain_values(ray_runtime):
    sender = offloader()
    row = Message(id="1", fields={"text": BIG, "turns": [{"role": "user", "content": BIG}], "n": 1})
    payload, refs = encode_rows(asyncio.run(sender.pack([row])))
    assert len(refs) == 2 and len(payload) < 300  # the text is not in the payload
    (received,) = decode_rows(payload, refs)
    fetched, origins = asyncio.run(offloader().fetch(received))
    assert fetched.fields == row.fields
    assert set(origins) == {"text", "turns"}


def test_a_value_passed_on_unchanged_keeps_its_reference_and_a_changed_one_does_not(ray_runtime):
    put = CountingPut()
    node = offloader(put)
    (packed,) = asyncio.run(node.pack([Message(id="1", fields={"text": BIG, "notes": BIG + "!"})]))
    fetched, origins = asyncio.run(node.fetch(packed))
    result = fetched.with_fields(notes=fetched["notes"] + " more")  # the operator changes one field
    forwarded = keep_references(result, origins)
    assert forwarded["text"] is packed["text"]  # the same placeholder, the same object
    assert forwarded["notes"] == BIG + "! more"
    asyncio.run(node.pack([forwarded]))
    assert put.blobs == 3  # text once, notes twice (it changed)


def test_values_put_through_a_keeper_outlive_the_actor_that_offloaded_them(ray_runtime):
    keeper = ray.remote(ObjectKeeper).options(num_cpus=0).remote()

    @ray.remote(num_cpus=0)
    class Operator:
        async def send(self, keeper):
            node = Offloader(512, keeper_put(keeper), ray.get_runtime_context().get_node_id())
            return encode_rows(await node.pack([Message(id="1", fields={"text": BIG})]))

    operator = Operator.remote()
    payload, refs = ray.get(operator.send.remote(keeper))
    ray.kill(operator, no_restart=True)
    (row,) = decode_rows(payload, refs)
    fetched, _ = asyncio.run(offloader().fetch(row))
    assert fetched["text"] == BIG
    assert ray.get(keeper.alive.remote()) >= 1
    del row, refs
    ray.kill(keeper)


def test_a_value_gone_with_its_node_is_reported_lost(ray_runtime):
    class GoneRef:
        """Awaits like an ObjectRef whose only copy was on a node that died."""

        def __await__(self):
            raise ray.exceptions.ObjectLostError("ff" * 28, None, "")
            yield

    row = Message(id="1", fields={"text": Offloaded(GoneRef(), 2_000, b"\x00")})
    with pytest.raises(ValueLost, match="row 1"):
        asyncio.run(offloader().fetch(row))
