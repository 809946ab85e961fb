"""Messages: rows with their workflow state, encoded for the hops between actors."""

from streamflow.message import Message, State, decode_batch, encode_batch


def test_batch_round_trips_fields_and_state():
    rows = [
        Message(id="0:1", fields={"text": "hi", "n": 3, "scores": {"a": 1.5}, "tags": ["x"], "none": None}),
        Message(id="0:2", fields={}, state=State(step="score", turn=2, history=[{"role": "user", "content": "q"}])),
    ]
    assert decode_batch(encode_batch(rows)) == rows


def test_with_fields_returns_a_copy_and_leaves_the_original():
    row = Message(id="0:1", fields={"text": "hi"})
    changed = row.with_fields(text="bye", extra=1)
    assert row["text"] == "hi" and "extra" not in row
    assert changed["text"] == "bye" and changed["extra"] == 1


def test_with_state_changes_only_the_state():
    row = Message(id="0:1", fields={"text": "hi"})
    later = row.with_state(turn=3)
    assert later.state.turn == 3 and row.state.turn == 0 and later.fields == row.fields


def test_root_id_is_the_row_id_until_a_fan_out():
    assert Message(id="0:1", fields={}).root_id == "0:1"
    assert Message(id="0:1/2", fields={}, root="0:1").root_id == "0:1"


def test_get_returns_default_for_missing_field():
    assert Message(id="x", fields={}).get("nope", 5) == 5
