"""Rows that never wait finish in the call that received them; rows that wait go on in a task."""

import asyncio

import pytest

from streamflow.runtime.row.eager import start_eagerly


def test_a_coroutine_that_never_waits_finishes_at_once_without_a_task():
    done = []

    async def quick():
        done.append("now")

    async def scenario():
        return start_eagerly(quick())

    assert asyncio.run(scenario()) is None and done == ["now"]


def test_a_coroutine_that_waits_goes_on_in_a_task_and_sees_what_it_waited_for():
    steps = []

    async def waits():
        steps.append("before")
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        loop.call_later(0.01, answer.set_result, 42)
        steps.append(await answer)
        await asyncio.sleep(0)
        steps.append("after")

    async def scenario():
        task = start_eagerly(waits())
        assert steps == ["before"]  # ran up to its first wait in the caller
        await task

    asyncio.run(scenario())
    assert steps == ["before", 42, "after"]


def test_cancelling_the_task_cancels_the_coroutine():
    seen = []

    async def sleeps():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def scenario():
        task = start_eagerly(sleeps())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert seen == ["cancelled"]


def test_an_exception_before_the_first_wait_is_logged_not_raised_to_the_caller(caplog):
    async def broken():
        raise RuntimeError("bug")

    async def scenario():
        return start_eagerly(broken())

    assert asyncio.run(scenario()) is None
    assert "a row's coroutine failed" in caplog.text
