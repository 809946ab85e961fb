"""The Tau2 trajectory loop: tools run in the task's sandbox, limits end it, the final database decides the reward."""

import copy
import importlib.util
import json
import os
import shutil
from pathlib import Path

import polars as pl
import pytest

import streamflow
from streamflow.pipeline import load_pipeline
from streamflow.testing import fake_llm, run_local

TAU2 = Path(__file__).resolve().parents[2] / "pipelines" / "tau2.py"
needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap is not installed (.ci/run installs it)"
)


@pytest.fixture(scope="module")
def tau2():
    return load_pipeline(TAU2)


@pytest.fixture(scope="module")
def retail():
    spec = importlib.util.spec_from_file_location("retail_tools", TAU2.parent / "domains" / "retail" / "tools.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def db():
    return json.loads((TAU2.parent / "data" / "retail_db.json").read_text())


def first_order(db, status):
    return next(order_id for order_id, order in sorted(db["orders"].items()) if order["status"] == status)


# -- the domain's tools -----------------------------------------------------------------------


def test_only_pending_orders_can_be_cancelled_and_only_with_a_known_reason(retail, db):
    data = copy.deepcopy(db)
    pending, shipped = first_order(data, "pending"), first_order(data, "shipped")
    assert "error" in retail.call(data, "cancel_order", {"order_id": shipped, "reason": "no longer needed"})
    assert "error" in retail.call(data, "cancel_order", {"order_id": pending, "reason": "too expensive"})
    assert (
        retail.call(data, "cancel_order", {"order_id": pending, "reason": "no longer needed"})["status"] == "cancelled"
    )
    assert data["orders"][pending]["cancel_reason"] == "no longer needed"


def test_refunds_take_one_item_of_a_delivered_order_once(retail, db):
    data = copy.deepcopy(db)
    delivered = first_order(data, "delivered")
    item = data["orders"][delivered]["items"][0]["item"]
    assert retail.call(data, "refund_item", {"order_id": delivered, "item_id": item})["item_id"] == item
    assert "refunded already" in retail.call(data, "refund_item", {"order_id": delivered, "item_id": item})["error"]
    assert "no item" in retail.call(data, "refund_item", {"order_id": delivered, "item_id": "I-0"})["error"]


def test_unknown_tools_and_bad_arguments_are_errors_not_crashes(retail, db):
    assert "unknown tool" in retail.call(copy.deepcopy(db), "drop_tables", {})["error"]
    assert "bad arguments" in retail.call(copy.deepcopy(db), "get_order", {"id": "O-1"})["error"]


def test_diff_names_every_field_that_differs(tau2):
    module = __import__(tau2.build.__module__)
    assert module.diff({"a": {"b": 1, "c": [1, 2]}}, {"a": {"b": 2, "c": [1, 3]}}) == ["a.b", "a.c[1]"]
    assert module.diff({"x": 1}, {"x": 1}) == []
    assert module.diff({"x": 1, "y": [1]}, {"y": [1, 2], "z": None}) == ["x", "y"]  # gone; resized
    assert module.diff([{"a": 1}, {"a": 1}], [{"a": 1}, {"a": 2}]) == ["[1].a"]


# -- the loop, with scripted agents -----------------------------------------------------------


def tool_call(name, **arguments):
    return {"id": f"call_{name}", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def script(agent_turns, customer_turns):
    """An LLM answering the agent's requests from ``agent_turns`` and the customer's from ``customer_turns``."""
    from streamflow.services.llm import Response

    spoken = {"agent": 0, "customer": 0}

    def answer(payload):
        who = "agent" if payload.get("tools") else "customer"
        turns = agent_turns if who == "agent" else customer_turns
        turn = turns[min(spoken[who], len(turns) - 1)]
        spoken[who] += 1
        if isinstance(turn, str):
            return turn
        message = {"role": "assistant", "content": None, "tool_calls": turn}
        body = {"choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5}, "model": "fake"}  # fmt: skip
        return Response(200, json.dumps(body).encode())

    return fake_llm(answer)


def task(expected, instruction="Your situation: You want a refund.\nDetails you know: order O-1"):
    return {"task_id": "T-1", "kind": "refund", "instruction": instruction, "expected_actions": json.dumps(expected)}


@needs_bwrap
def test_a_lookup_then_the_right_action_earns_reward_one(tau2, db):
    order = first_order(db, "delivered")
    item = db["orders"][order]["items"][-1]["item"]
    llm = script(
        [[tool_call("get_order", order_id=order)], [tool_call("refund_item", order_id=order, item_id=item)], "Done."],
        ["My item is broken, refund it please.", "###STOP###"],
    )
    [row] = run_local(tau2.build(tau2.params_type()), [task([["refund_item", {"order_id": order, "item_id": item}]])],
                      llm=llm)  # fmt: skip
    assert row.status == "ok", row.error
    roles = [turn["role"] for turn in row["trajectory"]]
    assert roles == ["user", "assistant", "tool", "assistant", "tool", "assistant", "user"]
    assert [run["name"] for run in row["tool_calls"]] == ["get_order", "refund_item"]
    assert json.loads(row["tool_calls"][1]["output"])["item_id"] == item
    assert (row["reward"], row["db_diff"], row["ended"], row["turns"]) == (1.0, [], "customer_stop", 2)


@needs_bwrap
def test_the_wrong_action_earns_zero_and_names_what_changed(tau2, db):
    order = first_order(db, "delivered")
    items = [item["item"] for item in db["orders"][order]["items"]]
    wrong = items[0] if len(items) == 1 else items[1]
    llm = script([[tool_call("refund_item", order_id=order, item_id=wrong)], "Done."], ["Refund please.", "###STOP###"])
    expected = [] if len(items) == 1 else [["refund_item", {"order_id": order, "item_id": items[0]}]]
    [row] = run_local(tau2.build(tau2.params_type()), [task(expected)], llm=llm)
    assert (
        row["reward"] == 0.0
        and row["db_diff"]
        and all(path.startswith(f"orders.{order}.items") for path in row["db_diff"])
    )


@needs_bwrap
def test_a_customer_who_never_stops_is_cut_at_the_turn_limit(tau2):
    llm = script(["How can I help?"], ["I am not sure what I want."])
    [row] = run_local(tau2.build(tau2.params_type(max_turns=3)), [task([])], llm=llm)
    assert (row["ended"], row["turns"], row["reward"]) == ("turn_limit", 3, 1.0)


@needs_bwrap
def test_an_agent_that_keeps_calling_tools_is_cut_at_the_tool_limit(tau2, db):
    order = first_order(db, "pending")
    llm = script([[tool_call("get_order", order_id=order)]], ["Status of my order?"])
    [row] = run_local(tau2.build(tau2.params_type(max_tool_calls=4)), [task([])], llm=llm)
    assert row["ended"] == "tool_limit" and len(row["tool_calls"]) == 4


@needs_bwrap
def test_a_hostile_tool_call_cannot_break_out_or_break_the_run(tau2):
    calls = [tool_call("get_order", order_id="O-1; cat /etc/passwd"),
             {"id": "c2", "type": "function", "function": {"name": "get_order", "arguments": "{not json"}}]  # fmt: skip
    llm = script([calls, "Sorry."], ["Hi", "###STOP###"])
    [row] = run_local(tau2.build(tau2.params_type()), [task([])], llm=llm)
    outputs = [json.loads(run["output"]) for run in row["tool_calls"]]
    assert "no order" in outputs[0]["error"] and "not JSON" in outputs[1]["error"]
    assert row.status == "ok" and row["reward"] == 1.0


def test_metrics_count_failed_rows_as_reward_zero(tau2):
    data = pl.LazyFrame({
        "reward": [1.0, 0.0, None], "tool_calls": [[{"n": 1}], [], None], "turns": [2, 3, None],
        "ended": ["customer_stop", "turn_limit", None],
    })  # fmt: skip
    figures = tau2.metrics(data)
    assert figures["trajectories"] == 3 and figures["mean reward"] == pytest.approx(1 / 3)
    assert figures["trajectories cut by a limit"] == 1


# -- on Ray, against the simulator ------------------------------------------------------------


@pytest.fixture(scope="module")
def both_modes(ray_runtime, tmp_path_factory, runs):
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (.ci/run installs it)")
    return runs.both_modes(TAU2, tmp_path_factory.mktemp("tau2"), limit=10)


def test_simulated_trajectories_are_written_with_their_tool_calls_and_rewards(both_modes, runs):
    row, _ = both_modes
    frame = runs.read(row)
    assert frame.height == 10 and row.ok == 10 and row.balanced
    assert set(frame["reward"].unique()) <= {0.0, 1.0} and 0 < frame["reward"].mean() < 1
    assert frame["tool_calls"].list.len().sum() > 10 and (frame["ended"] == "customer_stop").mean() > 0.9
    assert frame.schema["tool_calls"] == pl.List(pl.Struct({"name": pl.String, "arguments": pl.String,
                                                            "output": pl.String}))  # fmt: skip
    assert row.quality["mean reward"] == pytest.approx(frame["reward"].mean())


def test_batch_mode_runs_the_same_trajectories(both_modes, runs):
    row, batch = both_modes
    columns = ["row_id", "reward", "db_diff", "ended", "turns"]
    assert runs.read(batch).select(columns).equals(runs.read(row).select(columns))


def test_a_sandbox_opened_on_one_actor_serves_tool_calls_made_on_another(both_modes, runs, tmp_path):
    row, _ = both_modes
    overrides = [f"output.dir={tmp_path}", "llm.sim.time_scale=0.01", "progress=off", "limit=10",
                 "operators.open.fuse=false"]  # fmt: skip
    apart = streamflow.run(str(TAU2), overrides)
    columns = ["row_id", "status", "reward", "db_diff", "ended", "turns"]
    assert runs.read(apart).select(columns).equals(runs.read(row).select(columns))


def test_sandboxes_are_gone_after_the_runs(both_modes):
    import glob
    import tempfile

    left = [p for p in glob.glob(f"{tempfile.gettempdir()}/streamflow-sandbox-*") if not p.endswith("-uids")]
    assert left == []


def test_a_sandbox_backend_that_cannot_run_stops_the_run_before_any_row(ray_runtime, tmp_path):
    from streamflow import SetupError

    overrides = [f"output.dir={tmp_path}", "progress=off", "limit=5", "sandbox.backend=apptainer",
                 "sandbox.image=/nonexistent/tools.sif"]  # fmt: skip
    with pytest.raises(SetupError, match="apptainer") as failure:
        streamflow.run(str(TAU2), overrides)
    assert "\n" not in str(failure.value)


@pytest.mark.slow  # builds a virtualenv and runs the CLI; the sandbox tests above cover tool calls
@needs_bwrap
def test_tool_calls_work_with_the_code_its_python_tmp_and_output_in_a_private_directory(tmp_path):
    """A clone in a 0700 home directory (Debian 12's default, root's home, mktemp -d) with its virtualenv there."""
    import subprocess
    import sys
    import sysconfig
    import tempfile

    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    project = home / "project"
    for folder in ("streamflow", "operators", "pipelines"):
        shutil.copytree(TAU2.parents[1] / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__"))
    venv = home / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    [site_packages] = venv.glob("lib/python*/site-packages")
    (site_packages / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # not our package
    (home / "tmp").mkdir(mode=0o700)
    ray_tmp = tempfile.mkdtemp(prefix="sf-ray-")  # Ray's socket paths must stay short
    command = [str(venv / "bin" / "python"), "-m", "streamflow.run", "pipelines/tau2.py", "limit=6", "progress=off",
               "llm.sim.time_scale=0.01", f"output.dir={home / 'outputs'}", "run_id=private"]  # fmt: skip
    environment = {**os.environ, "TMPDIR": str(home / "tmp"), "RAY_TMPDIR": ray_tmp}
    try:
        done = subprocess.run(
            command, cwd=project, env=environment, capture_output=True, text=True, timeout=240, check=False
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    frame = pl.read_parquet(home / "outputs" / "tau2" / "private" / "data" / "*.parquet")
    assert frame.height == 6 and (frame["status"] == "ok").all()
    assert frame["tool_calls"].list.len().sum() > 6


def test_the_bundled_tasks_and_database_are_what_their_script_builds(tmp_path):
    import subprocess
    import sys

    script = TAU2.parent / "data" / "build_tau2_sample.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True, capture_output=True)
    data = TAU2.parent / "data"
    assert (tmp_path / "retail_db.json").read_bytes() == (data / "retail_db.json").read_bytes()
    assert pl.read_parquet(tmp_path / "tau2_tasks.parquet").equals(pl.read_parquet(data / "tau2_tasks.parquet"))


def test_every_task_can_be_carried_out_on_the_initial_database(retail, db):
    tasks = pl.read_parquet(TAU2.parent / "data" / "tau2_tasks.parquet")
    for expected in tasks["expected_actions"]:
        data = copy.deepcopy(db)
        for name, arguments in json.loads(expected):
            assert "error" not in retail.call(data, name, arguments), (name, arguments)
    refused = tasks.filter(pl.col("kind") == "refused_cancel")
    assert refused.height > 0 and (refused["expected_actions"] == "[]").all()
