"""Throughput under failures: NaturalReasoning undisturbed vs with an operator actor killed every N seconds.

Every configuration runs once per round, rounds interleaved, all in one process on the same
input, seed and embedded simulated LLM; each disturbed run is compared with the undisturbed
run of its own round (throughput ratio, and its output row for row), so the ratios are
measured on the same machine state. A disturbed run kills one random operator replica every
``--every-s`` seconds, the first one half a period in (Ray restarts it; the driver re-admits
the rows it held, which replay the LLM calls they had finished from the run's response cache).
Rows lost and duplicated are counted from the Parquet output. ``--cache-cost`` adds an
undisturbed run with the response cache off to each round, to price the cache itself.
Matrix reports a 5% throughput drop with one kill every 10 minutes; the targets here are at
most 10% with one kill every 10 s and at most 3% with one every 60 s. Run:

    python -m bench.chaos                              # kills every 10 s and every 60 s, 3 rounds, ~15 minutes
    python -m bench.chaos --cache-cost --json chaos.json
    python -m bench.chaos --limit 500 --every-s 5 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import polars as pl
import ray

import streamflow
from streamflow.chaos import ActorKiller
from streamflow.result import RunResult

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "pipelines" / "natural_reasoning.py"
STEPS = ("english", "classify", "score", "question")
CALM = "undisturbed"
NO_CACHE = "undisturbed, cache off"


def run_once(name: str, run_id: str, every_s: float | None, args: argparse.Namespace, out: str) -> dict[str, Any]:
    """One run of the pipeline, killing a replica every ``every_s`` seconds (None: undisturbed)."""
    overrides = [
        f"output.dir={out}",
        f"run_id={run_id}",
        f"limit={args.limit}",
        f"seed={args.seed}",
        f"max_inflight={args.inflight}",
        f"llm.sim.time_scale={args.time_scale}",
        "progress=off",
        "metrics.enabled=false",
        *(f"operators.{step}.replicas={args.replicas}" for step in STEPS),
    ]
    if name == NO_CACHE:
        overrides.append("llm.cache.enabled=false")
    if every_s is None:
        result, kills = streamflow.run(str(PIPELINE), overrides), []
    else:
        with ActorKiller(run_id, every_s, only=STEPS, seed=args.seed, first_s=every_s / 2) as killer:
            result = streamflow.run(str(PIPELINE), overrides)
        kills = killer.kills
    return describe(name, result, kills, args.limit)


def describe(name: str, result: RunResult, kills: list[str], expected: int) -> dict[str, Any]:
    frame = pl.read_parquet(f"{result.data_dir}/*.parquet")
    unique = frame["row_id"].n_unique()
    return {
        "run": name,
        "data_dir": result.data_dir,
        "wall_s": round(result.wall_s, 2),
        "rows_per_s": round(result.rows_per_s, 2),
        "output_tokens_per_s": round(result.tokens_per_s, 1),
        "kills": len(kills),
        "actor_restarts": result.restarts,
        "rows_readmitted": result.readmitted,
        "llm_cache_hits": sum(u.cache_hits for u in result.usage.values()),
        "rows_lost": expected - unique,
        "rows_duplicated": frame.height - unique,
        "ledger_balanced": result.balanced,
        "statuses": result.statuses,
    }


def identical(a: str, b: str) -> bool:
    return pl.read_parquet(f"{a}/*.parquet").sort("row_id").equals(pl.read_parquet(f"{b}/*.parquet").sort("row_id"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--every-s", type=float, nargs="+", default=[10.0, 60.0], help="seconds between two kills")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each configuration, interleaved")
    parser.add_argument("--cache-cost", action="store_true", help="add an undisturbed run with the LLM cache off")
    parser.add_argument("--replicas", type=int, default=2, help="replicas of every step")
    parser.add_argument("--inflight", type=int, default=256)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()

    configs: list[tuple[str, float | None]] = [(CALM, None), *((f"kill every {s:g} s", s) for s in args.every_s)]
    if args.cache_cost:
        configs.append((NO_CACHE, None))
    ray.init(include_dashboard=False, logging_level="WARNING")
    rounds: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="sf-chaos-") as out:
        for index in range(args.rounds):
            runs = {
                name: run_once(name, f"r{index}-{n}", every_s, args, out) for n, (name, every_s) in enumerate(configs)
            }
            calm = runs[CALM]
            for run in runs.values():
                run["ratio"] = round(run["rows_per_s"] / calm["rows_per_s"], 3)
                run["identical_output"] = run is calm or identical(run["data_dir"], calm["data_dir"])
            rounds.append(runs)
            print(
                f"round {index + 1}: "
                + ", ".join(f"{n} {r['rows_per_s']:.1f} rows/s ({r['ratio']:.3f})" for n, r in runs.items()),
                flush=True,
            )
    ray.shutdown()
    results = {"settings": vars(args), "rounds": rounds, "summary": summarize(rounds, [name for name, _ in configs])}
    report(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def summarize(rounds: list[dict[str, dict[str, Any]]], names: list[str]) -> dict[str, dict[str, Any]]:
    """Per configuration: median [min-max] of rows/s and of the ratio to its round's undisturbed run."""
    summary = {}
    for name in names:
        runs = [round_[name] for round_ in rounds]
        summary[name] = {
            "rows_per_s": spread([r["rows_per_s"] for r in runs]),
            "ratio": spread([r["ratio"] for r in runs]),
            "kills": sum(r["kills"] for r in runs),
            "actor_restarts": sum(r["actor_restarts"] for r in runs),
            "rows_readmitted": sum(r["rows_readmitted"] for r in runs),
            "rows_lost": sum(r["rows_lost"] for r in runs),
            "rows_duplicated": sum(r["rows_duplicated"] for r in runs),
            "identical_output": all(r["identical_output"] for r in runs),
        }
    return summary


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    title = f"NaturalReasoning, {args.limit} rows, {args.rounds} rounds: median [min-max]"
    table = Table(title=title, header_style="bold")
    columns = ("run", "rows/s", "ratio", "kills", "restarts", "re-admitted", "lost", "duplicated", "identical")
    for column in columns:
        table.add_column(column, justify="left" if column == "run" else "right")
    for name, s in results["summary"].items():
        rate, ratio = s["rows_per_s"], s["ratio"]
        table.add_row(
            name,
            f"{rate['median']:.1f} [{rate['min']:.1f}-{rate['max']:.1f}]",
            f"{ratio['median']:.3f} [{ratio['min']:.3f}-{ratio['max']:.3f}]",
            str(s["kills"]),
            str(s["actor_restarts"]),
            str(s["rows_readmitted"]),
            str(s["rows_lost"]),
            str(s["rows_duplicated"]),
            "yes" if s["identical_output"] else "no",
        )
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
