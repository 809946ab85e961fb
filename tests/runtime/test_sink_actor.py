"""The sink actor (driven directly, without Ray): exactly-once writes, acceptance, commits."""

import asyncio

import polars as pl
import pyarrow as pa

import streamflow.runtime.row.sink as sink_module
from streamflow.message import Message, encode_batch
from streamflow.runtime.row.sink import SinkActor, decode_completions
from streamflow.schema import output_schema

SCHEMA = output_schema(pa.schema([("text", pa.string())]), {})


def rows(*ids, root=""):
    share = (1, len(ids)) if root else (1, 1)
    return encode_batch([Message(id=i, fields={"text": i}, root=root, share=share) for i in ids])


def written(directory):
    return sorted(pl.read_parquet(f"{directory}/*.parquet")["row_id"].to_list())


def test_a_row_id_sent_twice_is_written_once(tmp_path):
    async def go():
        sink = SinkActor(str(tmp_path), SCHEMA, 0, part_rows=100)
        await sink.push(rows("a", "b"))
        await sink.push(rows("b", "c", "c"))
        _, accepted, _ = decode_completions(await sink.completions(0))
        await sink.close()
        return sink, accepted

    sink, accepted = asyncio.run(go())
    assert written(tmp_path) == ["a", "b", "c"]
    assert [c[0] for c in accepted] == ["a", "b", "c"] and sink.duplicates == 2


def test_rows_are_reported_committed_only_once_their_part_is_written(tmp_path):
    async def go():
        sink = SinkActor(str(tmp_path), SCHEMA, 0, part_rows=2)
        await sink.push(rows("a", "b", "c"))
        _, accepted, committed = decode_completions(await sink.completions(0))
        assert len(accepted) == 3 and [c[0] for c in committed] == ["a", "b"]
        await sink.flush()
        _, accepted, committed = decode_completions(await sink.completions(0))
        assert accepted == [] and [c[0] for c in committed] == ["c"]
        await sink.close()

    asyncio.run(go())


def test_a_part_is_committed_once_its_oldest_row_waited_commit_s(tmp_path):
    async def go():
        sink = SinkActor(str(tmp_path), SCHEMA, 0, part_rows=1000, commit_s=0.2)
        await sink.push(rows("a"))
        await asyncio.sleep(0.5)
        _, _, committed = decode_completions(await sink.completions(0))
        await sink.close()
        return committed

    assert [c[0] for c in asyncio.run(go())] == ["a"]


def test_retired_rows_are_forgotten_so_memory_stays_bounded(tmp_path):
    async def go():
        sink = SinkActor(str(tmp_path), SCHEMA, 0, part_rows=1)
        await sink.push(rows("r/0", "r/1", root="r"))
        await sink.push(rows("s"))
        assert await sink.held() == 3
        await sink.completions(0, retire=["r", "s"])
        return await sink.held()

    assert asyncio.run(go()) == 0


def test_a_restarted_sink_drops_rows_already_in_its_parts_and_reports_them_committed(tmp_path, monkeypatch):
    async def go():
        first = SinkActor(str(tmp_path), SCHEMA, 0, part_rows=1)
        await first.push(rows("a"))
        monkeypatch.setattr(sink_module, "was_restarted", lambda: True)
        second = SinkActor(str(tmp_path), SCHEMA, 0, part_rows=1)
        await second.push(rows("a", "b"))
        _, _, committed = decode_completions(await second.completions(0))
        await second.close()
        return committed

    committed = asyncio.run(go())
    assert written(tmp_path) == ["a", "b"]
    assert sorted(c[0] for c in committed) == ["a", "b"], "the driver may never have heard that 'a' was committed"
