"""The command line: help, exit codes, and one-line errors on stderr."""

import subprocess
import sys
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]


def cli(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "streamflow.run", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_help_explains_the_main_knobs():
    done = cli("--help")
    assert done.returncode == 0
    for knob in ("input.path", "max_inflight", "operators.STEP.replicas", "llm.base_url", "limit", "output.dir"):
        assert knob in done.stdout


def test_no_arguments_prints_usage_and_fails():
    done = cli()
    assert done.returncode == 2 and "usage:" in done.stdout


def test_bad_override_exits_2_with_one_line_on_stderr():
    done = cli("pipelines/natural_reasoning.py", "max_inflight=lots")
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == ["streamflow: error: config: Expected `int`, got `str` - at `$.max_inflight`"]


def test_missing_pipeline_file_is_named():
    done = cli("pipelines/nope.py")
    assert done.returncode == 2 and "pipelines/nope.py" in done.stderr and "does not exist" in done.stderr


def test_unknown_step_in_operators_names_the_steps():
    done = cli("pipelines/natural_reasoning.py", "+operators.nope.replicas=2")
    assert done.returncode == 2
    assert "operators.nope names no step" in done.stderr and "english, classify, score, question" in done.stderr


def test_resume_flag_is_the_same_as_the_override(tmp_path):
    missing = tmp_path / "no-such-run"
    flag, override = (
        cli("pipelines/natural_reasoning.py", "--resume", str(missing)),
        cli("pipelines/natural_reasoning.py", f"resume={missing}"),
    )
    assert flag.returncode == override.returncode == 2
    assert flag.stderr == override.stderr and str(missing) in flag.stderr


def test_unknown_option_is_named():
    done = cli("pipelines/natural_reasoning.py", "--fast")
    assert done.returncode == 2 and "'--fast'" in done.stderr and "--resume" in done.stderr


def test_a_run_stopped_by_a_signal_exits_128_plus_its_number_and_says_how_to_resume(monkeypatch, capsys):
    import importlib
    import signal

    from streamflow.errors import Interrupted

    run_module = importlib.import_module("streamflow.run")

    def stopped(pipeline, overrides):
        raise Interrupted(signal.SIGTERM, "/runs/natural_reasoning/slurm-7")

    monkeypatch.setattr(run_module, "run", stopped)
    assert run_module.main(["pipelines/natural_reasoning.py"]) == 143
    assert "continue with resume=/runs/natural_reasoning/slurm-7" in capsys.readouterr().err


def test_a_setup_that_cannot_work_exits_2_with_its_one_line(monkeypatch, capsys):
    import importlib

    from streamflow.errors import SetupError

    run_module = importlib.import_module("streamflow.run")

    def refused(pipeline, overrides):
        raise SetupError("sandbox backend 'bubblewrap' cannot run a tool call on this machine: ...; enable them")

    monkeypatch.setattr(run_module, "run", refused)
    assert run_module.main(["pipelines/tau2.py"]) == 2
    err = capsys.readouterr().err
    assert err == "streamflow: error: sandbox backend 'bubblewrap' cannot run a tool call on this machine: ...; enable them\n"


def test_ctrl_c_commits_what_the_sinks_hold_and_exits_130_with_the_resume_line(tmp_path):
    import signal
    import time

    command = [sys.executable, "-m", "streamflow.run", "pipelines/natural_reasoning.py", "limit=2000", "run_id=cut",
               "llm.sim.time_scale=0.5", "output.commit_s=600", f"output.dir={tmp_path}", "progress=log",
               "metrics.enabled=false"]  # fmt: skip
    running = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events = tmp_path / "natural_reasoning" / "cut" / "events"
    deadline = time.monotonic() + 120
    while not any(events.glob("*.parquet")) and time.monotonic() < deadline:  # rows are flowing by now
        time.sleep(0.2)
    time.sleep(2)
    running.send_signal(signal.SIGINT)
    _, err = running.communicate(timeout=120)
    assert running.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"streamflow: stopped by SIGINT; committed rows are kept, continue with resume={tmp_path}/natural_reasoning/cut"
    )
    committed = pl.read_parquet(tmp_path / "natural_reasoning" / "cut" / "data" / "*.parquet")
    assert 0 < committed.height < 2000  # commit_s=600: only the stop itself committed them
