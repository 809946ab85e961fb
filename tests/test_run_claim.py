"""One run directory, one running attempt: a resume of a run that is still going is refused before Ray
starts, naming who holds it, and a run whose directory was taken over anyway stops at once instead of
hanging. Both with real command-line runs side by side."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamflow.testing import read_output

REPO = Path(__file__).resolve().parents[1]

PIPELINE = textwrap.dedent(
    '''
    """Each row naps for params.nap_s seconds: a run that lasts as long as a test needs, on almost no CPU."""
    import asyncio

    import msgspec

    from streamflow import Flow, Operator


    class Params(msgspec.Struct):
        nap_s: float = 0.5


    class Nap(Operator):
        fields = {"napped": bool}

        def __init__(self, seconds):
            self.seconds = seconds

        async def __call__(self, row, ctx):
            await asyncio.sleep(self.seconds)
            return row.with_fields(napped=True)


    def build(params):
        return Flow("nap").step("nap", Nap(params.nap_s))
    '''
)


@pytest.fixture
def nap(tmp_path):
    pipeline = tmp_path / "nap.py"
    pipeline.write_text(PIPELINE)
    data = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"n": list(range(600))}), data)
    return pipeline, data


def command(pipeline, *overrides):
    return [sys.executable, "-m", "streamflow.run", str(pipeline), "progress=off", "metrics.enabled=false",
            "llm.backend=none", "output.commit_s=1", *overrides]  # fmt: skip


def start(args, env):
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(condition, process, what, limit_s=180):
    deadline = time.monotonic() + limit_s
    while not condition():
        assert process.poll() is None, f"the first run ended before {what}: {process.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} within {limit_s} s"
        time.sleep(0.2)


@pytest.mark.slow  # two command-line runs side by side for ~20 s; every run writes and checks its claim
def test_a_resume_of_a_run_that_is_still_going_is_refused_naming_its_holder(tmp_path, nap, own_ray_env):
    pipeline, data = nap
    run_dir = tmp_path / "nap" / "g"
    args = command(pipeline, f"input.path={data}", f"output.dir={tmp_path}", "run_id=g", "max_inflight=30",
                   "params.nap_s=1")  # fmt: skip
    first = start(args, own_ray_env)
    try:
        wait_for(lambda: any((run_dir / "data").glob("part-*.parquet")), first, "committed part")

        second = subprocess.run(
            [*args, f"resume={run_dir}"],
            cwd=REPO,
            env=own_ray_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

        assert second.returncode == 2, second.stderr[-3000:]
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and re.fullmatch(
            rf"streamflow: error: config: resume={re.escape(str(run_dir))} is still running: attempt 1 on "
            rf"{re.escape(socket.gethostname())} \(pid {first.pid}\) holds it, its heartbeat \d+ s old; let it finish "
            rf"or stop it \(kill -TERM {first.pid} on .*\), then resume\. A holder silent for 15 s "
            r"\(output\.claim_stale_s\) counts as dead\.",
            lines[0],
        ), lines
        assert sorted(p.name for p in (run_dir / "attempts").iterdir()) == ["1.json"]  # the refused one left no trace
        _, err = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0, err[-3000:]
    frame = read_output(run_dir)
    assert frame.height == frame["row_id"].n_unique() == 600


@pytest.mark.chaos
def test_a_run_whose_directory_was_taken_over_stops_at_once_with_one_line(tmp_path, nap, own_ray_env):
    """The first run's driver is suspended until its heartbeat is stale, a resume takes the directory
    over, then the first run comes back: it must stop by itself, and the resumed run finish the rows."""
    pipeline, data = nap
    run_dir = tmp_path / "nap" / "g"
    args = command(pipeline, f"input.path={data}", f"output.dir={tmp_path}", "run_id=g", "max_inflight=30", "params.nap_s=1", "output.claim_stale_s=5")  # fmt: skip
    first = start(args, own_ray_env)
    second = None
    try:
        wait_for(lambda: any((run_dir / "data").glob("part-*.parquet")), first, "committed part")
        os.kill(first.pid, signal.SIGSTOP)
        record = run_dir / "attempts" / "1.json"
        while time.time() - json.loads(record.read_text())["heartbeat"] <= 5:  # the heartbeat goes stale
            time.sleep(0.2)

        second = start([*args, f"resume={run_dir}"], own_ray_env)
        wait_for(lambda: json.loads((run_dir / "data" / ".writer").read_text())["attempt"] == 2, second, "takeover")
        os.kill(first.pid, signal.SIGCONT)
        _, err = first.communicate(timeout=120)  # a first run that hangs fails the test here

        assert first.returncode == 1, err[-3000:]
        assert "Traceback" not in err
        assert re.fullmatch(
            rf"streamflow: run failed: another run took over {re.escape(str(run_dir))} while attempt 1 ran \(attempt 2 "
            rf"on {re.escape(socket.gethostname())} \(pid {second.pid}\) claimed it, taking this one for dead\); this "
            r"attempt stops and commits nothing more, the other one continues the run",
            err.strip().splitlines()[-1],
        ), err[-2000:]
        _, err = second.communicate(timeout=300)
        assert second.returncode == 0, err[-3000:]
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.kill()
    frame = read_output(run_dir)
    assert frame.height == frame["row_id"].n_unique() == 600
    records = sorted(int(p.stem) for p in (run_dir / "attempts").glob("*.json"))
    assert records == [1, 2]
