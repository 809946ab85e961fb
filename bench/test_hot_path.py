"""Micro-benchmarks of the per-row hot path, so regressions show up in numbers.

    python -m pytest bench/test_hot_path.py --benchmark-only
    python -m pytest bench/test_hot_path.py --benchmark-only --benchmark-compare   # against the last saved run

They are not part of the default test suite (``testpaths = tests``).
"""

import asyncio

import pyarrow as pa
import pytest

from streamflow import END, Flow, Message, Operator
from streamflow.events import EventRecorder
from streamflow.execution import run_step
from streamflow.io.parts import PartWriter
from streamflow.message import State, decode_batch, encode_batch
from streamflow.operator import Context
from streamflow.runtime.row.outbox import Peer, Peers
from streamflow.schema import output_schema

TEXT = "The read() system call returns the number of bytes read, or -1 on error. " * 20  # ~1.5 KB


def rows(n: int) -> list[Message]:
    return [
        Message(
            id=f"0:{i}",
            fields={
                "doc_id": f"man:en:read.{i}",
                "text": TEXT,
                "section": 2,
                "language_score": 0.98,
                "scores": {"completeness": 3, "complexity": 4, "correctness": 5, "reasoning": 2},
            },
            state=State(step="score", hops=2, seed=i),
        )
        for i in range(n)
    ]


BATCH = rows(64)
PAYLOAD = encode_batch(BATCH)


def test_encode_batch_of_64_rows(benchmark):
    benchmark(encode_batch, BATCH)


def test_decode_batch_of_64_rows(benchmark):
    result = benchmark(decode_batch, PAYLOAD)
    assert len(result) == 64


class Keep(Operator):
    async def __call__(self, row, ctx):
        return row.with_fields(seen=True)


def test_run_step_and_route_one_row(benchmark):
    flow = Flow("bench").step("a", Keep()).step("b", Keep()).route("b", lambda r: END if r["section"] else "a")
    ctx = Context(step="a")
    row = BATCH[0]
    loop = asyncio.new_event_loop()

    def one():
        return loop.run_until_complete(run_step(flow, "a", row, ctx))

    [out] = benchmark(one)
    assert out.state.step == "b"
    loop.close()


def test_pick_least_loaded_of_8_replicas(benchmark):
    peers = Peers([Peer(f"r{i}", None) for i in range(8)])
    for i, peer in enumerate(peers.replicas):
        peer.load = i % 3
    benchmark(peers.pick)


@pytest.fixture
def writer(tmp_path):
    schema = output_schema(
        pa.schema([("doc_id", pa.string()), ("text", pa.string()), ("section", pa.int32())]),
        {"language_score": float, "scores": dict[str, int]},
    )
    return PartWriter(str(tmp_path), schema, prefix="bench", part_rows=10**9)


def test_sink_append_64_rows(benchmark, writer):
    finished = [m.__class__(id=m.id, fields=m.fields, status="ok") for m in BATCH]
    out = benchmark(writer.append, finished)
    assert len(out) == 64


def test_record_one_hop_in_the_event_log(benchmark, tmp_path):
    row = BATCH[0]
    events = EventRecorder(str(tmp_path), "steps", 0)
    benchmark(events.hop, "score", row, 1.0, 2.0, 3.0, 4.0, [row])
    assert len(events) > 0


def test_write_20000_hops_of_the_event_log_as_parquet(benchmark, tmp_path):
    """What a step actor's writer thread does every ``events.flush_rows`` hops."""
    row = BATCH[0]
    events = EventRecorder(str(tmp_path), "steps", 0)

    def buffered():
        for _ in range(20_000):
            events.hop("score", row, 1.0, 2.0, 3.0, 4.0, [row])
        return (events.take(),), {}

    path = benchmark.pedantic(events.write, setup=buffered, rounds=10, warmup_rounds=1)
    assert path is not None
