"""The command line: help, exit codes, and one-line errors on stderr."""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamflow.testing import read_output

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def main(monkeypatch, capsys):
    """``main(*args)`` runs the command line in this process from the repository root and returns what ``cli``
    returns: the same code as ``python -m streamflow.run`` without a new interpreter, for errors found before
    Ray starts."""
    monkeypatch.chdir(REPO)
    run_module = importlib.import_module("streamflow.run")  # the module: streamflow.run is also the function

    def call(*args: object) -> subprocess.CompletedProcess[str]:
        capsys.readouterr()
        status = run_module.main([str(arg) for arg in args])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), status, out, err)

    return call


def test_help_explains_the_main_knobs(cli):
    done = cli("--help")
    assert done.returncode == 0
    for knob in ("input.path", "max_inflight", "operators.STEP.replicas", "llm.base_url", "limit", "output.dir"):
        assert knob in done.stdout


def test_no_arguments_prints_usage_and_fails(main):
    done = main()
    assert done.returncode == 2 and "usage:" in done.stdout


def test_bad_override_exits_2_with_one_line_on_stderr(main):
    done = main("pipelines/natural_reasoning.py", "max_inflight=lots")
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == ["streamflow: error: config: max_inflight=lots; expected `int`, got `str`."]


def test_a_mistyped_key_exits_2_naming_the_closest_key(main):
    done = main("pipelines/natural_reasoning.py", "max_inflght=10")
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == ["streamflow: error: config: unknown key 'max_inflght'; did you mean 'max_inflight'?"]


def test_missing_pipeline_file_is_named(main):
    done = main("pipelines/nope.py")
    assert done.returncode == 2 and "pipelines/nope.py" in done.stderr and "does not exist" in done.stderr


def test_a_folder_given_as_the_pipeline_is_named_a_folder(main):
    done = main("pipelines")
    assert done.returncode == 2
    assert error_lines(done) == [
        "streamflow: error: pipeline file 'pipelines' is a folder, not a file; "
        "pass a path like pipelines/natural_reasoning.py."
    ]


def test_unknown_step_in_operators_names_the_steps(main):
    done = main("pipelines/natural_reasoning.py", "+operators.nope.replicas=2")
    assert done.returncode == 2
    assert "operators.nope names no step" in done.stderr and "english, classify, score, question" in done.stderr


def test_resume_flag_is_the_same_as_the_override(main, tmp_path):
    missing = tmp_path / "no-such-run"
    flag, override = (
        main("pipelines/natural_reasoning.py", "--resume", str(missing)),
        main("pipelines/natural_reasoning.py", f"resume={missing}"),
    )
    assert flag.returncode == override.returncode == 2
    assert flag.stderr == override.stderr and str(missing) in flag.stderr


def test_unknown_option_is_named(main):
    done = main("pipelines/natural_reasoning.py", "--fast")
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
    assert (
        err
        == "streamflow: error: sandbox backend 'bubblewrap' cannot run a tool call on this machine: ...; enable them\n"
    )


def error_lines(done):
    return [line for line in done.stderr.splitlines() if line.strip()]


def test_an_output_dir_that_is_a_file_exits_2_in_one_line_and_creates_nothing(main, tmp_path):
    target = tmp_path / "runs.txt"
    target.write_text("not a directory")
    done = main("pipelines/natural_reasoning.py", f"output.dir={target}")
    assert done.returncode == 2
    assert error_lines(done) == [
        f"streamflow: error: config: output.dir: {target} is a file, not a directory; point output.dir at a directory."
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.txt"]


def test_an_output_dir_the_file_system_refuses_exits_2_in_one_line(main):
    """/proc takes no new folders, even from root, whom its permissions let write anywhere."""
    done = main("pipelines/natural_reasoning.py", "output.dir=/proc/streamflow-runs", "run_id=r")
    assert done.returncode == 2
    [line] = error_lines(done)
    assert line.startswith("streamflow: error: config: output.dir: ") and "/proc" in line
    if os.geteuid() == 0:
        run_dir = "/proc/streamflow-runs/natural_reasoning/r"
        assert line.endswith(f"cannot write {run_dir}: No such file or directory; choose another directory.")


def test_an_output_dir_on_a_read_only_file_system_exits_2_in_one_line(tmp_path):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    command = (
        f"mount -t tmpfs -o ro tmpfs {read_only} || exit 99; "
        f"exec {sys.executable} -m streamflow.run pipelines/natural_reasoning.py output.dir={read_only}/runs"
    )
    done = subprocess.run(
        ["unshare", "--mount", "sh", "-c", command], check=False, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    if done.returncode == 99 or "unshare:" in done.stderr:
        pytest.skip(f"cannot mount a read-only file system here: {done.stderr.strip()}")
    assert done.returncode == 2
    why = "is on a read-only file system; choose a directory this user can write to."
    assert error_lines(done) == [f"streamflow: error: config: output.dir: {read_only} {why}"]


@pytest.mark.slow  # Ray in a subprocess for ~20 s; test_a_run_stopped_by_a_signal_* covers the exit code
def test_ctrl_c_commits_what_the_sinks_hold_and_exits_130_with_the_resume_line(tmp_path, own_ray_env):
    import signal
    import time

    command = [sys.executable, "-m", "streamflow.run", "pipelines/natural_reasoning.py", "limit=2000", "run_id=cut",
               "llm.sim.time_scale=0.5", "output.commit_s=600", f"output.dir={tmp_path}", "progress=log",
               "metrics.enabled=false"]  # fmt: skip
    running = subprocess.Popen(
        command, cwd=REPO, env=own_ray_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
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
    committed = read_output(tmp_path / "natural_reasoning" / "cut")
    assert 0 < committed.height < 2000  # commit_s=600: only the stop itself committed them
