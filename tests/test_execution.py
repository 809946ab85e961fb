"""One step applied to one row: every outcome ends as a routed row or a final status."""

import asyncio

import pytest

from streamflow import END, Drop, Flow, Message, Operator, RowError
from streamflow.execution import run_step
from streamflow.operator import Context


def run(flow, step, row):
    return asyncio.run(run_step(flow, step, row, Context(step=step)))


def one_step(fn):
    return Flow("demo").step("only", fn).step("next", fn)


ROW = Message(id="0:7", fields={"text": "hello"})


def test_returned_row_goes_to_the_next_step():
    async def keep(row, ctx):
        return row.with_fields(seen=True)

    [out] = run(one_step(keep), "only", ROW)
    assert out.state.step == "next" and out["seen"] is True and out.status == "ok"
    assert out.state.hops == 1


def test_last_step_finishes_the_row_ok():
    async def keep(row, ctx):
        return row

    [out] = run(one_step(keep), "next", ROW)
    assert out.state.step == END and out.status == "ok"


def test_drop_finishes_the_row_filtered_with_its_reason_and_fields():
    async def drop(row, ctx):
        return Drop("too_short", length=5)

    [out] = run(one_step(drop), "only", ROW)
    assert out.status == "filtered:too_short" and out.state.step == END
    assert out["length"] == 5 and out["text"] == "hello"


def test_operator_exception_marks_the_row_error_with_traceback():
    async def boom(row, ctx):
        raise ValueError("bad thing")

    [out] = run(one_step(boom), "only", ROW)
    assert out.status == "error:value_error"
    assert out.error.startswith("ValueError: bad thing")
    assert "Traceback" in out.error and "boom" in out.error


def test_row_error_kind_is_kept():
    async def bad(row, ctx):
        raise RowError("no text", kind="bad_input")

    [out] = run(one_step(bad), "only", ROW)
    assert out.status == "error:bad_input"


def test_returning_none_is_a_contract_error_naming_the_fix():
    async def forgot(row, ctx):
        return None

    [out] = run(one_step(forgot), "only", ROW)
    assert out.status == "error:operator_contract"
    assert "return the row, a list of rows or Drop(reason)" in out.error


def test_fan_out_gives_children_ids_and_shares_of_the_input_row():
    async def split(row, ctx):
        return [row.with_fields(part=i) for i in range(4)]

    outs = run(one_step(split), "only", ROW)
    assert [o.id for o in outs] == ["0:7/0", "0:7/1", "0:7/2", "0:7/3"]
    assert {o.root_id for o in outs} == {"0:7"}
    assert {o.share for o in outs} == {(1, 4)}


def test_nested_fan_out_shares_still_add_up_to_one():
    async def split(row, ctx):
        return [row, row, row]

    flow = one_step(split)
    shares = []
    for child in run(flow, "only", ROW):
        shares.extend(grandchild.share for grandchild in run(flow, "next", child))
    assert sum(n / d for n, d in shares) == pytest.approx(1.0)
    assert len(shares) == 9


def test_empty_fan_out_filters_the_row():
    async def nothing(row, ctx):
        return []

    [out] = run(one_step(nothing), "only", ROW)
    assert out.status == "filtered:no_output"


def test_a_route_that_loops_forever_is_stopped_by_max_hops():
    async def keep(row, ctx):
        return row

    flow = Flow("loop", max_hops=5).step("a", keep).route("a", lambda r: "a")
    row = ROW.with_state(step="a")
    for _ in range(5):
        [row] = run(flow, "a", row)
        assert row.state.step == "a"
    [row] = run(flow, "a", row)
    assert row.status == "error:too_many_hops"


class Counting(Operator):
    async def __call__(self, row, ctx):
        return row.with_fields(draw=ctx.rng.random())


def test_rng_is_the_same_for_the_same_row_and_step():
    flow = one_step(Counting())
    a = asyncio.run(run_step(flow, "only", ROW, Context(step="only").for_row(42)))
    b = asyncio.run(run_step(flow, "only", ROW, Context(step="only").for_row(42)))
    assert a[0]["draw"] == b[0]["draw"]


def test_a_step_hands_on_values_as_the_wire_would_carry_them():
    import msgspec

    class Pair(msgspec.Struct):
        left: int
        right: tuple[int, int]

    async def make(row, ctx):
        said = {"role": "assistant", "content": "hi", "calls": (1, 2)}
        return row.with_fields(pair=Pair(1, (2, 3)), items=(4, 5)).with_state(history=[*row.state.history, said])

    start = ROW.with_state(history=[{"role": "user", "content": "hello"}])
    [out] = run(one_step(make), "only", start)
    assert out["pair"] == {"left": 1, "right": [2, 3]} and out["items"] == [4, 5]
    assert out.state.history[-1]["calls"] == [1, 2]
    assert out.state.history[0] is start.state.history[0]  # turns already settled are not encoded again
    assert out["text"] is ROW["text"]


def test_a_value_the_wire_cannot_carry_fails_only_its_row():
    async def huge(row, ctx):
        return row.with_fields(count=2**70)

    [out] = run(one_step(huge), "only", ROW)
    assert out.status == "error:overflow_error" and out.state.step == END
