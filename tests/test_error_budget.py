"""The error budget: a run whose recent rows mostly fail stops early, keeps what it committed and exits 3;
``resume=<run dir> retry_errors=true`` finishes it once the cause is fixed. A run within budget exits 0."""

import re
import textwrap

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import streamflow
from streamflow.budget import ErrorBudget
from streamflow.config import ErrorsConfig
from streamflow.errors import OverErrorBudget
from streamflow.testing import read_output

ROWS = 1000

PIPELINE = textwrap.dedent(
    '''
    """One LLM call per row: the prompt names the row's number."""
    from streamflow import Flow, Operator


    class Ask(Operator):
        fields = {"answer": str}

        async def __call__(self, row, ctx):
            reply = await ctx.llm.chat([{"role": "user", "content": f"row {row['n']}"}], max_tokens=4)
            return row.with_fields(answer=reply.text)


    def build(params):
        return Flow("ask").step("ask", Ask())
    '''
)


@pytest.fixture
def ask(tmp_path):
    """The pipeline file and a Parquet input of ROWS numbered rows."""
    pipeline = tmp_path / "ask.py"
    pipeline.write_text(PIPELINE)
    data = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"n": list(range(ROWS))}), data)
    return pipeline, data


QUIET = ["progress=off", "metrics.enabled=false", "llm.max_retries=0"]
"""Command-line overrides: no progress display, no metrics endpoint, no retries (each failure is a row's error)."""


def fail_everything(prompt):
    return 500, "the GPU is on fire"


def answer_everything(prompt):
    return 200, "fine"


@pytest.mark.slow  # two command-line runs; test_batch_mode_stops_early_too stops a run on the budget in-process
def test_a_server_failing_every_request_stops_the_run_early_naming_the_error(cli, tmp_path, ask, openai_server):
    pipeline, data = ask
    failing = openai_server(fail_everything, delay_s=0.05)
    run_dir = tmp_path / "ask" / "fire"
    args = [f"input.path={data}", f"output.dir={tmp_path}", "run_id=fire", "max_inflight=4", "errors.window=20"]

    done = cli(pipeline, *QUIET, f"llm.base_url={failing.url}", *args, timeout=300)

    assert done.returncode == 3, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        r"streamflow: stopped early: (\d+) of the last 20 finished rows failed \(errors\.max_share=0\.5\), "
        r"\1 of them as error:llm_server_error \(.LLMServerError: http://127\.0\.0\.1:\d+/v1 "
        r"failed with HTTP 500: the GPU is on fire \(gave up after 1 attempts\)'\); committed rows are kept; "
        rf"fix the cause, then continue with resume={re.escape(str(run_dir))} retry_errors=true",
        last,
    ), last
    committed = read_output(run_dir)
    assert 20 <= committed.height < ROWS // 2  # it stopped early, and what finished was kept
    assert committed["status"].unique().to_list() == ["error:llm_server_error"]

    healthy = openai_server(answer_everything)
    resumed = cli(pipeline, *QUIET, f"llm.base_url={healthy.url}", f"resume={run_dir}", "retry_errors=true", *args,
                  timeout=300)  # fmt: skip

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    frame = read_output(run_dir)
    assert frame.height == frame["row_id"].n_unique() == ROWS
    assert frame["status"].unique().to_list() == ["ok"]


@pytest.mark.slow  # a command-line run; the ErrorBudget tests below say when a run goes on
def test_a_run_with_a_few_errors_finishes_and_exits_0(cli, tmp_path, ask, openai_server):
    pipeline, data = ask

    def fail_some(prompt):
        return (500, "out of memory") if prompt.endswith("3") else (200, "fine")

    server = openai_server(fail_some)
    done = cli(pipeline, *QUIET, f"llm.base_url={server.url}", f"input.path={data}", f"output.dir={tmp_path}",
               "run_id=few", timeout=300)  # fmt: skip

    assert done.returncode == 0, done.stderr[-3000:]
    frame = read_output(tmp_path / "ask" / "few")
    assert frame.height == ROWS
    assert dict(frame.group_by("status").len().iter_rows()) == {"ok": 900, "error:llm_server_error": 100}


def test_batch_mode_stops_early_too(ray_runtime, tmp_path, ask, openai_server):
    pipeline, data = ask
    failing = openai_server(fail_everything, delay_s=0.05)
    overrides = [f"input.path={data}", f"output.dir={tmp_path}", "progress=off", "mode=batch", "batch.size=10",
                 "batch.actors=1", "batch.batches_per_actor=1", "errors.window=20", "llm.max_retries=0",
                 f"llm.base_url={failing.url}"]  # fmt: skip
    with pytest.raises(OverErrorBudget, match=r"as error:llm_server_error \('LLMServerError: .*the GPU is on fire"):
        streamflow.run(str(pipeline), overrides)
    committed = pl.read_parquet(tmp_path / "ask" / "*" / "data" / "*.parquet")
    assert 20 <= committed.height < ROWS // 2


def test_the_budget_judges_the_last_window_of_rows_once_it_is_full():
    budget = ErrorBudget(ErrorsConfig(window=4, max_share=0.5))
    for status in ("error:a", "error:a", "error:b"):
        budget.add(status)
    assert not budget.over()  # three rows: the window is not full yet
    assert budget.over(final=True)  # a run that ends here is judged on the rows it has
    budget.add("ok")
    assert budget.over()  # 3 of the last 4 failed
    budget.add("ok")
    assert not budget.over()  # 2 of the last 4: not more than half
    assert budget.describe({"error:a": "ValueError: bad"}).startswith("2 of the last 4 finished rows failed")


def test_max_share_1_turns_the_budget_off():
    budget = ErrorBudget(ErrorsConfig(window=2, max_share=1))
    for _ in range(10):
        budget.add("error:a")
    assert not budget.over() and not budget.over(final=True)


def test_the_stop_line_names_the_dominant_error_and_quotes_one_message():
    budget = ErrorBudget(ErrorsConfig(window=10, max_share=0.5))
    for status in ["error:timeout"] * 2 + ["error:llm_server_error"] * 5 + ["ok"] * 3:
        budget.add(status)
    line = budget.describe({"error:llm_server_error": "LLMServerError: HTTP 500", "error:timeout": "slow"})
    assert line == (
        "7 of the last 10 finished rows failed (errors.max_share=0.5), 5 of them as error:llm_server_error "
        "('LLMServerError: HTTP 500')"
    )
