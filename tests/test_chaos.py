"""Fault injection: killed operator actors, a killed sink, a killed driver and a poison row.

Each disturbed run must write exactly what an undisturbed run with the same seed writes:
the same row ids, each once, with the same content.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import streamflow
from streamflow import Flow, Operator, RunError
from streamflow.chaos import ActorKiller
from streamflow.testing import read_output

pytestmark = pytest.mark.chaos

ROOT = Path(__file__).resolve().parents[1]
NR_PIPELINE = ROOT / "pipelines" / "natural_reasoning.py"
ROWS = 300


def settings(out):
    """A NaturalReasoning run long enough (about 15 s) for several kills to land mid-run."""
    return [
        f"output.dir={out}",
        f"limit={ROWS}",
        "llm.sim.time_scale=0.5",
        "progress=off",
        "seed=7",
        "max_inflight=128",
        "output.part_rows=40",
        "recovery.lease_s=3",
        *(f"operators.{step}.replicas=2" for step in ("english", "classify", "score", "question")),
    ]


@pytest.fixture(scope="module")
def undisturbed(ray_runtime, tmp_path_factory):
    result = streamflow.run(str(NR_PIPELINE), settings(tmp_path_factory.mktemp("calm")))
    return read_output(result)


def run_while_killing(out, run_id, every_s, *, only=(), limit=None, extra=()):
    """Kills start once the run has committed its first part, so they land mid-run."""
    data = Path(out, "natural_reasoning", run_id, "data")
    with ActorKiller(run_id, every_s, only=only, limit=limit, when=lambda: any(data.glob("*.parquet"))) as killer:
        result = streamflow.run(str(NR_PIPELINE), [*settings(out), f"run_id={run_id}", *extra])
    return result, killer.kills


def assert_same_output(frame, undisturbed):
    assert frame["row_id"].n_unique() == frame.height == ROWS, "rows lost or duplicated"
    changed = frame.join(undisturbed, on="row_id", suffix="_calm").filter(
        pl.any_horizontal(pl.col(c).ne_missing(pl.col(f"{c}_calm")) for c in frame.columns if c != "row_id")
    )
    assert changed.is_empty(), changed.select("row_id", "status", "status_calm", "error").to_dicts()[:5]


@pytest.mark.parametrize("relay", [False, True], ids=["direct", "relay"])
def test_killing_operator_actors_every_few_seconds_loses_and_duplicates_nothing(
    ray_runtime, tmp_path, undisturbed, relay
):
    steps = ("english", "classify", "score", "question")
    # The four steps fuse into one group of 2 replicas, so every kill takes half of the rows in
    # flight, and a row can be caught again and again; the give-up rule (recovery.max_attempts)
    # has its own test below, this one is about losing nothing. With the relay, the calls of a
    # killed actor finish and the re-admitted rows take their answers.
    extra = ["recovery.max_attempts=1000", f"llm.relay={str(relay).lower()}"]
    result, kills = run_while_killing(tmp_path, f"ops-{relay}", every_s=3.0, only=steps, extra=extra)
    assert_same_output(read_output(result), undisturbed)
    assert result.balanced and result.restarts >= 1 and result.readmitted >= 1, (kills, result.restarts)


def test_killing_a_sink_mid_run_loses_and_duplicates_nothing(ray_runtime, tmp_path, undisturbed):
    result, kills = run_while_killing(tmp_path, "sink", every_s=1.0, only=("sink",), limit=1)
    assert kills, "the run ended before the sink could be killed"
    assert_same_output(read_output(result), undisturbed)
    assert result.balanced and result.restarts == 1


def test_a_killed_driver_is_resumed_to_the_same_output(ray_runtime, tmp_path, undisturbed):
    run_id = "driver"
    data = tmp_path / "natural_reasoning" / run_id / "data"
    command = [sys.executable, "-m", "streamflow.run", str(NR_PIPELINE), *settings(tmp_path), f"run_id={run_id}"]
    env = {**os.environ, "RAY_ADDRESS": ""}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    record = data.parent / "attempts" / "1.json"

    def recorded_tokens():
        usage = json.loads(record.read_text())["usage"] if record.exists() else {}
        return sum(step["prompt_tokens"] for step in usage.values())

    deadline = time.monotonic() + 120
    try:  # kill it once it committed parts and a heartbeat recorded some of its LLM usage
        while len(list(data.glob("*.parquet"))) < 2 or not recorded_tokens():
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the run committed no part within 2 minutes"
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    committed = pl.read_parquet(f"{data}/*.parquet").height
    assert 0 < committed < ROWS
    killed_attempt_tokens = recorded_tokens()

    resumed = streamflow.run(str(NR_PIPELINE), [*settings(tmp_path), f"resume={data.parent}"])
    assert_same_output(read_output(resumed), undisturbed)
    assert resumed.balanced and resumed.rows_read == ROWS
    # the whole run counts the tokens the killed attempt's last heartbeat recorded beside this attempt's
    assert resumed.attempt == 2 and resumed.earlier.attempts == 1
    assert resumed.run_prompt_tokens == resumed.prompt_tokens + killed_attempt_tokens


class CrashesOn(Operator):
    """Kills its own actor process when it meets one particular row: a poison row."""

    fields = {"seen": bool}

    def __init__(self, poison: int) -> None:
        self.poison = poison

    async def __call__(self, row, ctx):
        if row["n"] == self.poison:
            os._exit(1)
        return row.with_fields(seen=True)


def numbers(tmp_path, count):
    path = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"n": list(range(count))}), path)
    return str(path)


def test_a_row_that_kills_its_actor_every_time_ends_as_error_lost(ray_runtime, tmp_path, fast_run):
    flow = Flow("poison").step("crash", CrashesOn(poison=7))
    overrides = [f"input.path={numbers(tmp_path, 12)}", "max_inflight=1", "recovery.max_attempts=3", *fast_run]
    result = streamflow.run(flow, overrides)
    frame = read_output(result)
    assert frame["row_id"].to_list() == sorted(f"0:{n}" for n in range(12))
    poisoned = frame.filter(pl.col("n") == 7).row(0, named=True)
    assert poisoned["status"] == "error:lost" and "recovery.max_attempts" in poisoned["error"]
    assert frame.filter(pl.col("n") != 7)["status"].unique().to_list() == ["ok"]
    assert result.balanced and result.readmitted == 3 and result.restarts >= 2


def test_with_recovery_off_a_dead_actor_fails_the_run_naming_the_setting(ray_runtime, tmp_path, fast_run):
    flow = Flow("poison").step("crash", CrashesOn(poison=3))
    overrides = [f"input.path={numbers(tmp_path, 8)}", "recovery.max_restarts=0", *fast_run]
    with pytest.raises(RunError, match=r"step 'crash' replica 0 died .*recovery.max_restarts=0"):
        streamflow.run(flow, overrides)


@pytest.mark.parametrize("relay", [False, True], ids=["direct", "relay"])
def test_losing_a_node_of_a_cluster_loses_and_duplicates_nothing(tmp_path, undisturbed, relay):
    script = ROOT / "tests" / "cluster_node_loss.py"
    # Steps in actors of their own (not fused): rows hop between nodes, so offloaded values cross them.
    # With the relay, the lost node's relay goes with it and the other nodes' relays carry on.
    unfused = [f"operators.{step}.fuse=false" for step in ("english", "classify", "score", "question")]
    overrides = [*settings(tmp_path), *unfused, "llm.replicas=2", "output.part_rows=10", "offload_threshold=512"]
    overrides.append(f"llm.relay={str(relay).lower()}")
    command = [sys.executable, "-P", str(script), str(NR_PIPELINE), "node", *overrides]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["removed"] and report["removed"][0]["actors"] > 0, report
    assert_same_output(read_output(report["run_dir"]), undisturbed)
    assert report["restarts"] >= 1 and report["readmitted"] >= 1, report
    if not relay:  # where the replicas land varies; the relay's variant checks the relay, not offloading
        assert report["fetched_remote_bytes"] > 0, report  # offloaded values crossed nodes
