"""LLM usage is counted as it accrues, so the calls of an actor that died stay in the summary; a resumed
run's summary gives this attempt's figures and the whole run's, each labelled."""

import asyncio
import json
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import streamflow
from streamflow import Flow, Operator
from streamflow.summary import output_console, print_summary


class AskThenWait(Operator):
    """One LLM call per row, then a wait while ``gate`` exists: the test kills the actor during the wait."""

    fields = {"answer": str}

    def __init__(self, gate: str) -> None:
        self.gate = gate

    async def __call__(self, row, ctx):
        reply = await ctx.llm.chat([{"role": "user", "content": f"row {row['n']}"}], max_tokens=4)
        while Path(self.gate).exists():
            await asyncio.sleep(0.05)
        return row.with_fields(answer=reply.text)


def numbers(tmp_path, count):
    path = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"n": list(range(count))}), path)
    return str(path)


def answer(prompt):
    return 200, "fine"


def test_the_usage_of_a_killed_actor_is_counted(ray_runtime, tmp_path, openai_server):
    server = openai_server(answer)
    gate = tmp_path / "gate"
    gate.touch()
    flow = Flow("ask").step("ask", AskThenWait(str(gate)))
    overrides = [f"input.path={numbers(tmp_path, 10)}", f"output.dir={tmp_path}", "run_id=kill", "progress=off",
                 f"llm.base_url={server.url}", "max_inflight=10"]  # fmt: skip

    def kill_once_the_calls_are_reported():
        while server.served < 10:
            time.sleep(0.05)
        time.sleep(2.5)  # two censuses (one a second) have shipped the usage of the ten calls
        ray_runtime.kill(ray_runtime.get_actor("streamflow-kill-ask-0"), no_restart=False)
        gate.unlink()  # the re-admitted rows call again and go through

    killer = threading.Thread(target=kill_once_the_calls_are_reported)
    killer.start()
    result = streamflow.run(flow, overrides)
    killer.join()

    # Exactly once each: re-admitted while the only replica restarts, they wait in the driver until it is wired.
    assert result.restarts == 1 and result.readmitted == 10 and result.ok == 10
    # The killed incarnation's ten calls reached the server and count; the restarted one replayed them
    # from the run's response cache (no tokens spent).
    assert server.served == 10
    usage = result.usage["ask"]
    assert (usage.requests, usage.cache_hits, usage.prompt_tokens, usage.completion_tokens) == (20, 10, 10, 10)


@pytest.mark.slow  # two runs and a resume; tests/test_resume.py resumes runs by default
def test_a_resumed_run_reports_this_attempt_and_the_whole_run_apart(ray_runtime, tmp_path, openai_server):
    server = openai_server(answer)
    gate = tmp_path / "no-gate"
    flow = Flow("ask").step("ask", AskThenWait(str(gate)))
    overrides = [f"input.path={numbers(tmp_path, 100)}", f"output.dir={tmp_path}", "progress=off",
                 f"llm.base_url={server.url}"]  # fmt: skip
    first = streamflow.run(flow, overrides)
    for part in Path(first.data_dir).glob("part-*.parquet"):  # as if it had stopped after 40 rows
        table = pq.read_table(part)
        keep = pa.array([int(row_id.split(":")[1]) < 40 for row_id in table.column("row_id").to_pylist()])
        pq.write_table(table.filter(keep), part)

    resumed = streamflow.run(flow, [*overrides, f"resume={first.run_dir}"])

    assert (resumed.attempt, resumed.committed_before, resumed.rows_this_attempt, resumed.rows_read) == (2, 40, 60, 100)
    # The first attempt paid for 100 calls; the resume replays the 60 it needs from the run's response cache.
    assert (resumed.usage["ask"].requests, resumed.usage["ask"].cache_hits) == (60, 60)
    assert (resumed.prompt_tokens, resumed.run_prompt_tokens) == (0, 100) and server.served == 100
    assert resumed.earlier.attempts == 1 and resumed.earlier.rows == 100
    assert resumed.run_wall_s == resumed.wall_s + resumed.earlier.wall_s
    assert resumed.rows_per_s == 60 / resumed.wall_s and resumed.run_rows_per_s == 100 / resumed.run_wall_s
    manifest = json.loads(Path(first.run_dir, "manifest.json").read_text())["summary"]
    assert (manifest["attempts"], manifest["prompt_tokens"], manifest["rows_read"]) == (2, 100, 100)
    assert manifest["this_attempt"]["prompt_tokens"] == 0 and manifest["this_attempt"]["rows_read"] == 60

    console = output_console()
    with console.capture() as captured:
        print_summary(resumed, console)
    text = captured.get()
    for label, value in [
        ("read (whole run)", "100"),
        ("attempt 2: rows read", "60"),
        ("attempt 2: LLM tokens in / out", "0 / 0"),
        ("whole run (2 attempts): LLM tokens in / out", "100 / 100"),
        ("attempt 2: rows/s", f"{resumed.rows_per_s:,.1f}"),
        ("whole run (2 attempts): rows/s", f"{resumed.run_rows_per_s:,.1f}"),
    ]:
        assert any(label in line and value in line for line in text.splitlines()), (label, text)


class Remote:
    """Stands for an actor method: ``.remote()`` returns an awaitable of ``value``."""

    def __init__(self, value):
        self.value = value

    def remote(self, *args):
        async def answer():
            return self.value

        return answer()


def test_an_actor_that_died_after_its_last_census_keeps_what_that_census_reported(tmp_path):
    """When the run ends, ``stop`` answers from the restarted incarnation: the dead one's usage is kept beside it."""
    from streamflow.run import prepare
    from streamflow.runtime.row.actor import ActorStats
    from streamflow.runtime.row.driver import Driver
    from streamflow.services.llm import Usage

    flow, cfg, params, plan, spec = prepare(
        Flow("ask").step("ask", AskThenWait(str(tmp_path / "no-gate"))), [f"input.path={numbers(tmp_path, 1)}"]
    )
    driver = Driver(flow, spec.recipe(params), cfg, plan, str(tmp_path), frozenset())
    dead = ActorStats(group="ask", replica=0, incarnation="first", usage={"ask": Usage(requests=7, prompt_tokens=70)})
    restarted = ActorStats(
        group="ask", replica=0, incarnation="second", usage={"ask": Usage(requests=2, prompt_tokens=20)}
    )
    driver.stats[("ask", 0)] = dead  # the last census heard from the first incarnation
    driver.actors = {"ask": [type("Handle", (), {"stop": Remote(restarted)})()]}
    driver.sinks = [type("Sink", (), {"close": Remote([]), "transfer": Remote(None)})()]

    _, usage, _, _ = asyncio.run(driver.finish())

    assert (usage["ask"].requests, usage["ask"].prompt_tokens) == (9, 90)
