"""The README quotes what its commands print: each quoted run is run again and compared.

A README block of program output starts with the command (``$ python -m streamflow.run ...``);
``...`` stands for lines left out. The simulator is deterministic for a seed, so statuses, counts,
tokens and the pipeline's own figures must be exactly what the README shows; timing figures
(rows/s, latency, wall time, bytes between actors, which depend on how rows batch) may differ,
but their lines must be there, in the same place. The runs here use the simulator at 100x
speed, which changes the timings only.
"""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TIMING = {"rows/s", "output tokens/s", "row latency P50 / P99", "wall time", "bytes between actors"}
FAST = ["llm.sim.time_scale=0.01", "progress=off", "metrics.enabled=false"]
BLOCK = re.compile(r"^```\n(\$ python -m streamflow\.run [^\n]*)\n(.*?)\n```$", flags=re.MULTILINE | re.DOTALL)


def quoted_runs() -> list[tuple[str, str]]:
    """(command, quoted output) of every README block that quotes what a run printed."""
    return BLOCK.findall((REPO / "README.md").read_text())


def normalized(line: str) -> str:
    """A printed line, comparable across runs: table cells without padding, timings and run ids blanked."""
    line = line.strip()
    if line[:1] in ("│", "┃"):
        cells = [cell.strip() for cell in re.split(r"[│┃]", line)[1:-1]]
        if cells[0] in TIMING:
            cells[1:] = ["<timing>"] * (len(cells) - 1)
        return " | ".join(cells)
    if line and set(line) <= set("─━┏┓┗┛┡┩└┘├┤┼╇┳┻╋┴┬"):
        return {"┏": "top", "┡": "below header", "├": "section", "└": "bottom"}.get(line[0], line)
    return re.sub(r"· run \S+", "· run <run id>", line)


def test_the_readme_quotes_runs():
    assert [shlex.split(command)[4] for command, _ in quoted_runs()] == [
        "pipelines/natural_reasoning.py",
        "pipelines/coral.py",
    ]


@pytest.mark.slow  # full sample runs of two pipelines; tests/test_run.py and tests/pipelines/ run slices of them
@pytest.mark.parametrize(("command", "quoted"), quoted_runs(), ids=lambda value: value.split("/")[-1][:20])
def test_what_the_readme_quotes_is_what_the_command_prints(command, quoted, tmp_path, own_ray_env):
    args = shlex.split(command)[2:]  # $ python [-m streamflow.run PIPELINE overrides...]
    env = {k: v for k, v in own_ray_env.items() if k != "COLUMNS"}  # stdout is a pipe: printed at full width
    done = subprocess.run(
        [sys.executable, *args, *FAST, f"output.dir={tmp_path}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    printed = [normalized(line) for line in done.stdout.splitlines() if line.strip()]
    position = 0
    for segment in re.split(r"^\.\.\.$", quoted, flags=re.MULTILINE):
        lines = [normalized(line) for line in segment.splitlines() if line.strip()]
        if not lines:
            continue
        assert lines[0] in printed[position:], f"README quotes {lines[0]!r}; the run printed:\n" + done.stdout
        start = printed.index(lines[0], position)
        assert printed[start : start + len(lines)] == lines
        position = start + len(lines)
