"""The Coral dialogue loop: who speaks when, how it ends, what it writes, and both runtimes on the sample."""

import re
from pathlib import Path

import polars as pl
import pytest

import streamflow
from streamflow.pipeline import load_pipeline
from streamflow.testing import fake_llm, run_local

CORAL = Path(__file__).resolve().parents[2] / "pipelines" / "coral.py"
PROBLEM = {"question": "What is 6 x 7?", "options": ["36", "42", "48", "13"], "answer": "B"}


@pytest.fixture(scope="module")
def coral():
    return load_pipeline(CORAL)


def dialogue(coral, replies, *, rows=(PROBLEM,), **params):
    """Run rows through the flow with scripted agents: ``replies[role]`` lists each agent's turns in order."""
    spoken = dict.fromkeys(replies, 0)
    requests = []

    def answer(payload):
        requests.append(payload)
        role = "teacher" if "patient teacher" in payload["messages"][0]["content"] else "student"
        turn = replies[role][min(spoken[role], len(replies[role]) - 1)]
        spoken[role] += 1
        return turn

    flow = coral.build(coral.params_type(**params))
    return run_local(flow, list(rows), llm=fake_llm(answer)), requests


def test_agents_that_agree_at_once_end_after_two_turns(coral):
    [row], requests = dialogue(coral, {"teacher": ["6 x 7 = 42. Answer: (B)"], "student": ["Same. Answer: (B)"]})
    assert row.status == "ok"
    assert [turn["role"] for turn in row["dialogue"]] == ["teacher", "student"]
    assert (row["turns"], row["agreed"], row["agreed_answer"], row["correct"]) == (2, True, "B", True)
    assert len(requests) == 2


def test_disagreement_runs_into_the_turn_limit(coral):
    [row], _ = dialogue(coral, {"teacher": ["Answer: (A)"], "student": ["Answer: (C)"]}, max_turns=5)
    assert row["turns"] == 5
    assert [turn["role"] for turn in row["dialogue"]] == ["teacher", "student", "teacher", "student", "teacher"]
    assert (row["agreed"], row["agreed_answer"], row["correct"]) == (False, None, False)
    assert (row["teacher_answer"], row["student_answer"]) == ("A", "C")


def test_a_teacher_who_changes_its_mind_ends_the_dialogue_on_its_own_turn(coral):
    [row], _ = dialogue(coral, {"teacher": ["Answer: (A)", "You are right. Answer: (C)"], "student": ["Answer: (C)"]})
    assert row["turns"] == 3 and row["dialogue"][-1]["role"] == "teacher"
    assert (row["agreed_answer"], row["correct"]) == ("C", False)


def test_a_turn_without_an_answer_never_counts_as_agreement(coral):
    [row], _ = dialogue(coral, {"teacher": ["Answer: (B)"], "student": ["Hmm, let me think.", "Answer: (B)"]})
    assert [turn["answer"] for turn in row["dialogue"]] == ["B", None, "B", "B"]
    assert row["turns"] == 4 and row["agreed"]


def test_each_agent_sees_its_own_turns_as_assistant_and_the_others_as_user(coral):
    _, requests = dialogue(coral, {"teacher": ["T1 Answer: (A)", "T2 Answer: (C)"], "student": ["S1 Answer: (C)"]})
    student = requests[1]["messages"]
    assert [m["role"] for m in student] == ["system", "user"]
    assert "6 x 7" in student[1]["content"] and student[1]["content"].endswith("T1 Answer: (A)")
    teacher = requests[2]["messages"]
    assert [m["role"] for m in teacher] == ["system", "user", "assistant", "user"]
    assert (teacher[2]["content"], teacher[3]["content"]) == ("T1 Answer: (A)", "S1 Answer: (C)")
    assert "(B) 42" in teacher[1]["content"]


def test_each_role_asks_its_own_model(coral):
    replies = {"teacher": ["Answer: (A)"], "student": ["Answer: (C)"]}
    _, requests = dialogue(coral, replies, max_turns=3, teacher_model="big", student_model="small")
    assert [r["model"] for r in requests] == ["big", "small", "big"]


def test_a_problem_without_options_is_a_row_error_and_the_others_go_on(coral):
    rows = [PROBLEM, {**PROBLEM, "options": []}, {**PROBLEM, "question": "  "}]
    done, _ = dialogue(coral, {"teacher": ["Answer: (B)"], "student": ["Answer: (B)"]}, rows=rows)
    assert [row.status for row in done] == ["ok", "error:bad_input", "error:bad_input"]
    assert "options must be a list" in done[1].error


def test_correctness_is_null_without_a_reference_answer(coral):
    [row], _ = dialogue(
        coral, {"teacher": ["Answer: (B)"], "student": ["Answer: (B)"]}, rows=[{**PROBLEM, "answer": None}]
    )
    assert row["agreed"] and row["correct"] is None


def test_metrics_count_unagreed_dialogues_as_incorrect(coral):
    data = pl.LazyFrame({
        "status": ["ok", "ok", "ok", "error:bad_input"],
        "agreed": [True, True, False, None],
        "correct": [True, False, False, None],
        "turns": [2, 3, 6, None],
    })  # fmt: skip
    figures = coral.metrics(data)
    assert figures["dialogues"] == 3
    assert figures["agreement rate"] == pytest.approx(2 / 3)
    assert figures["agreement correctness"] == pytest.approx(1 / 3)
    assert figures["mean turns"] == pytest.approx(11 / 3)
    assert figures["dialogues at the turn limit"] == 1


# -- on Ray, against the simulator -------------------------------------------------------------


@pytest.fixture(scope="module")
def row_run(ray_runtime, tmp_path_factory, runs):
    return runs.row_mode(CORAL, tmp_path_factory.mktemp("coral"), limit=30)


def test_sample_dialogues_have_the_documented_schema(row_run, runs):
    row = row_run
    frame = runs.read(row)
    assert frame.height == 30 and row.balanced and row.ok == 30
    assert frame.schema["dialogue"] == pl.List(
        pl.Struct({"role": pl.String, "content": pl.String, "answer": pl.String})
    )
    assert (frame.schema["turns"], frame.schema["agreed"], frame.schema["correct"]) == (
        pl.Int64,
        pl.Boolean,
        pl.Boolean,
    )
    assert frame["agreed_answer"].drop_nulls().str.contains(r"^[A-J]$").all()
    assert (frame["turns"] == frame["dialogue"].list.len()).all()
    assert frame.filter(pl.col("agreed"))["agreed_answer"].null_count() == 0


def test_simulated_dialogues_take_both_exits_and_several_lengths(row_run, runs):
    frame = runs.read(row_run)
    assert frame["turns"].min() == 2 and frame["turns"].n_unique() >= 4
    unagreed = frame.filter(~pl.col("agreed"))
    assert 0 < unagreed.height < frame.height / 4
    assert (unagreed["turns"] == 6).all()


def test_quality_figures_are_in_the_result_and_the_manifest(row_run, runs):
    row = row_run
    frame = runs.read(row)
    assert row.quality["dialogues"] == 30
    assert row.quality["agreement correctness"] == pytest.approx(frame["correct"].mean())
    manifest = (Path(row.run_dir) / "manifest.json").read_text()
    assert re.search(r'"agreement correctness": 0\.\d+', manifest)


@pytest.mark.slow  # one more run; tests/pipelines/test_tau2.py compares multi-turn loops in batch mode by default
def test_batch_mode_runs_whole_dialogues_and_writes_the_same_ones(row_run, runs, tmp_path):
    row, batch = row_run, runs.batch_mode(CORAL, tmp_path, limit=30)
    columns = ["row_id", "dialogue", "turns", "agreed_answer", "correct", "status"]
    assert runs.read(batch).select(columns).equals(runs.read(row).select(columns))
    assert batch.quality == row.quality


def test_the_bundled_sample_is_what_its_script_builds():
    import importlib.util

    import pyarrow.parquet as pq

    script = CORAL.parent / "data" / "build_coral_sample.py"
    spec = importlib.util.spec_from_file_location("build_coral_sample", script)
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    committed = pq.read_table(CORAL.parent / "data" / "coral_sample.parquet")
    assert committed.equals(builder.build(1000, 0))
    frame = pl.from_arrow(committed)
    assert (frame["options"].list.len() == 10).all() and (frame["options"].list.n_unique() == 10).all()
    assert (frame["answer"] == frame["answer_index"].map_elements(lambda i: "ABCDEFGHIJ"[i], pl.String)).all()


def simulator_in_thread(model):
    """A simulated LLM server answering as ``model``, on a daemon thread; returns its URL."""
    import asyncio
    import threading

    from streamflow.services.sim import SimConfig
    from streamflow.services.sim.server import SimServer

    started = threading.Event()
    server = SimServer(SimConfig(time_scale=0, models=[model]))

    async def serve():
        await server.start()
        started.set()
        await asyncio.Event().wait()

    threading.Thread(target=asyncio.run, args=(serve(),), daemon=True).start()
    assert started.wait(10)
    return server.url


def test_agents_can_use_different_llm_services(ray_runtime, tmp_path):
    """The teacher on its own server (llm.models), the student on the run's simulator."""
    teacher_server = simulator_in_thread("sim-70b")
    result = streamflow.run(str(CORAL), [
        f"output.dir={tmp_path}", "llm.sim.time_scale=0.01", "progress=off", "limit=10",
        "params.teacher_model=sim-70b", f"+llm.models.sim-70b=[{teacher_server}]",
    ])  # fmt: skip
    assert result.ok == 10
    assert result.replica_usage[teacher_server].requests == result.usage["teacher"].requests > 0
    others = [u.requests for url, u in result.replica_usage.items() if url != teacher_server]
    assert sum(others) == result.usage["student"].requests


def test_the_built_in_simulator_can_answer_as_a_second_model(ray_runtime, tmp_path):
    result = streamflow.run(str(CORAL), [
        f"output.dir={tmp_path}", "llm.sim.time_scale=0.01", "progress=off", "limit=10",
        "params.student_model=sim-70b", "llm.sim.models=[sim-70b]",
    ])  # fmt: skip
    assert result.ok == 10 and not result.errors
