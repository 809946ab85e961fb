"""The event recorder on its own: what one hop becomes in Parquet, and how rows are sampled."""

import time

import polars as pl

from streamflow.events import EVENT_SCHEMA, EventRecorder, read_events, sampled
from streamflow.message import Message, State
from streamflow.services.llm import Usage


def test_a_hop_and_a_sink_hop_round_trip_through_parquet(tmp_path):
    recorder = EventRecorder(str(tmp_path / "events"), "ask+judge", 2)  # an actor of two fused steps
    now = time.time()
    row = Message(id="7/1", root="7", fields={}, state=State(step="ask", hops=3, turn=1), admitted_at=now - 2)
    row.sent_at = now - 1
    out = row.with_state(step="judge")
    usage = Usage(requests=2, retries=1, prompt_tokens=50, completion_tokens=9)
    recorder.hop("ask", row, row.sent_at, now - 0.5, now - 0.25, now, [out], usage)
    recorder.sink_hops([row], now, now, now, duplicate=True)
    assert len(recorder) == 2
    recorder.flush()
    table = read_events(str(tmp_path))
    assert table.schema.equals(EVENT_SCHEMA, check_metadata=False)
    hop, sink = pl.from_arrow(table).iter_rows(named=True)
    assert (hop["row_id"], hop["root_id"], hop["step"], hop["replica"], hop["hop"], hop["turn"]) == (
        "7/1",
        "7",
        "ask",
        2,
        3,
        1,
    )
    assert (hop["status"], hop["next_step"], hop["outputs"]) == ("ok", "judge", 1)
    assert (hop["llm_calls"], hop["llm_retries"], hop["prompt_tokens"], hop["completion_tokens"]) == (2, 1, 50, 9)
    assert abs(hop["started_at"].timestamp() - (now - 0.25)) < 1e-5
    assert abs(hop["sent_at"].timestamp() - (now - 1)) < 1e-5
    assert (sink["step"], sink["status"], sink["next_step"], sink["llm_calls"]) == ("sink", "duplicate", None, 0)


def test_unset_times_are_null_not_1970(tmp_path):
    recorder = EventRecorder(str(tmp_path / "events"), "ask", 0)
    row = Message(id="1", fields={})  # never admitted nor sent: admitted_at = sent_at = 0
    recorder.hop("ask", row, row.sent_at, 1.0, 2.0, 3.0, [row])
    recorder.flush()
    hop = pl.from_arrow(read_events(str(tmp_path))).row(0, named=True)
    assert hop["admitted_at"] is None and hop["sent_at"] is None and hop["ended_at"] is not None


def test_sampling_is_decided_per_input_row_and_keeps_about_the_asked_share():
    roots = [f"0:{i}" for i in range(20_000)]
    kept = [root for root in roots if sampled(root, 0.1)]
    assert 1_700 < len(kept) < 2_300
    assert kept == [root for root in roots if sampled(root, 0.1)]  # the same answer every time
    assert all(sampled(root, 1.0) for root in roots[:100]) and not any(sampled(root, 0.0) for root in roots[:100])


def test_nothing_buffered_writes_no_file(tmp_path):
    recorder = EventRecorder(str(tmp_path / "events"), "ask", 0)
    assert recorder.flush() is None
    assert not (tmp_path / "events").exists()
