"""Start-up cost: from the command to the first LLM request, beside what ``ray.init`` alone costs.

Every round runs, each in a fresh process against a fresh simulated server: ``import ray;
ray.init()`` alone (the floor any Ray-based run pays), then ``python -m streamflow.run PIPELINE
limit=ROWS`` (row mode), then the same rows in the plain asyncio loop (``bench.systems
plain``, no Ray). The server records when its first request arrived, so "first request" is
measured from the command's start without polling. "e2e" is the whole command, Python start-up
and shutdown included: what a user waits for a small run. Rounds are interleaved; the table
gives median [min-max]. Run:

    python -m bench.startup                          # NaturalReasoning, 100 rows, 5 rounds, ~3 minutes
    python -m bench.startup --pipeline tau2 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.simproc import SimProcess

REPO = Path(__file__).resolve().parents[1]
RAY_INIT = (
    "import time; started = time.time(); import ray; "
    "ray.init(include_dashboard=False, logging_level='WARNING'); print(time.time() - started)"
)


def ray_init_s() -> float:
    """Seconds ``import ray; ray.init()`` takes in a fresh process (as streamflow calls it)."""
    done = subprocess.run([sys.executable, "-c", RAY_INIT], capture_output=True, text=True, check=True, cwd=REPO)
    return float(done.stdout.strip().splitlines()[-1])


def streamflow_run(pipeline: str, rows: int, time_scale: float) -> dict[str, float]:
    """Seconds from the command to the first LLM request, and for the whole command."""
    with tempfile.TemporaryDirectory() as out, SimProcess(time_scale=time_scale) as sim:
        command = [sys.executable, "-m", "streamflow.run", f"pipelines/{pipeline}.py", f"limit={rows}",
                   f"llm.endpoints=[{sim.urls[0]}]", "llm.model=sim-8b", f"output.dir={out}", "progress=off"]  # fmt: skip
        started = time.time()
        subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ended = time.time()
        first = sim.stats()["first_request_at"]
    return {"first_request_s": first - started, "e2e_s": ended - started}


def plain_run(pipeline: str, rows: int, time_scale: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out, SimProcess(time_scale=time_scale) as sim:
        command = [sys.executable, "-m", "bench.systems", "plain", f"pipelines/{pipeline}.py", "--endpoints",
                   sim.urls[0], "--limit", str(rows), "--json", f"{out}/run.json"]  # fmt: skip
        started = time.time()
        subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ended = time.time()
        first = sim.stats()["first_request_at"]
    return {"first_request_s": first - started, "e2e_s": ended - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default="natural_reasoning")
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--json", help="also write the raw figures to this file")
    args = parser.parse_args()
    rounds: list[dict[str, Any]] = []
    for _ in range(args.rounds):
        rounds.append({
            "ray_init_s": ray_init_s(),
            "streamflow": streamflow_run(args.pipeline, args.rows, args.time_scale),
            "plain": plain_run(args.pipeline, args.rows, args.time_scale),
        })  # fmt: skip
    margins = [r["streamflow"]["first_request_s"] - r["ray_init_s"] for r in rounds]
    print(f"{args.pipeline}, {args.rows} rows, simulator time_scale {args.time_scale}, {args.rounds} rounds "
          "interleaved, fresh processes; seconds, median [min-max]")  # fmt: skip
    print(f"{'':<44} {'to the first LLM request':>26} {'whole command':>22}")
    print(f"{'import ray; ray.init()':<44} {_spread([r['ray_init_s'] for r in rounds]):>26}")
    for system, label in (("streamflow", "python -m streamflow.run (row mode)"), ("plain", "plain asyncio loop")):
        first = _spread([r[system]["first_request_s"] for r in rounds])
        e2e = _spread([r[system]["e2e_s"] for r in rounds])
        print(f"{label:<44} {first:>26} {e2e:>22}")
    print(f"streamflow's first request - ray.init: {_spread(margins)} s (target: at most 2 s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": vars(args), "rounds": rounds}, indent=2))


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


if __name__ == "__main__":
    main()
