"""Row-level streaming vs batch processing on the same work, in one run.

Every system runs the same pipeline over the same rows against a fresh simulated LLM
server with the same profile (equal LLM capacity) and keeps the same number of rows in
flight (equal concurrency):

- plain asyncio loop: one process, no Ray, ``inflight`` rows at a time through the same
  operators; the limit of the workload, every other system is reported as a share of it;
- streamflow row mode: ``max_inflight = inflight``;
- streamflow batch mode (the paper's Algorithm 2 on Ray Data ``map_batches``) for each
  batch size, with actors x batches per actor x batch size = ``inflight``;
- Ray Data's own LLM API (``ray.data.llm`` HTTP processor), as documented, for the
  NaturalReasoning pipeline only.

Each system runs as a command of its own (``bench/systems.py``), in a fresh process, the way
a user runs it, against fresh servers; ``--runs`` rounds of every system, interleaved, give a
median and a spread. Output tokens/s is measured by the servers between their first request
and their last output token (so start-up is excluded for every system); "e2e" counts from the
command to the last row written, Python and Ray start-up included; "start" from the command
to the first LLM request. CPU counts every process of the system (the command and all it
started: Ray's daemons and workers, sandboxes), the simulated servers apart. Run:

    python -m bench.row_vs_batch                                  # NaturalReasoning, 2,000 docs, ~8 min
    python -m bench.row_vs_batch pipeline=coral                   # Coral dialogues, 1,000 problems
    python -m bench.row_vs_batch pipeline=tau2                    # tool-use trajectories, 500 tasks
    python -m bench.row_vs_batch --limit 500 --batch-sizes 16 64 --json out.json --plot out.png

Options may also be given as ``name=value`` (``pipeline=coral`` is ``--pipeline coral``). A
pipeline with a ``metrics`` function (Coral: agreement correctness; Tau2: mean reward) gets its
figures for every system, so output quality can be compared along with speed. For Tau2, rows/s
is trajectories/s; every system runs the tool calls in bubblewrap sandboxes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from bench.cpu import CommandCPU
from bench.simproc import SimProcess
from bench.systems import SystemRun

REPO = Path(__file__).resolve().parents[1]
PIPELINES = {name: REPO / "pipelines" / f"{name}.py" for name in ("natural_reasoning", "coral", "tau2")}


def run_system(
    name: str,
    config: str,
    system: str,
    pipeline: Path,
    sim_args: dict[str, Any],
    args: argparse.Namespace,
    overrides: Sequence[str] = (),
    *,
    limit: int | None = None,
    extra: Sequence[str] = (),
) -> dict[str, Any]:
    """Run one system as its own command against fresh simulated servers; measure it from the outside.

    ``overrides`` are streamflow config overrides, ``extra`` more arguments of ``bench.systems``.
    """
    with tempfile.TemporaryDirectory() as out, SimProcess(**sim_args) as sim:
        summary = os.path.join(out, "run.json")
        command = [sys.executable, "-m", "bench.systems", system, str(pipeline), "--endpoints", *sim.urls,
                   "--inflight", str(args.inflight), "--limit", str(limit or args.limit), "--seed", str(args.seed),
                   "--out", out, "--json", summary, *extra, "--overrides", *overrides]  # fmt: skip
        sim_cpu = sim.cpu_s()
        with CommandCPU() as meter:
            started = time.time()
            subprocess.run(meter.wrap(command), check=True, cwd=REPO, stdout=subprocess.DEVNULL)
            cpu = meter.seconds()
        run = msgspec.json.decode(Path(summary).read_bytes(), type=SystemRun)
        sim_cpu = sim.cpu_s() - sim_cpu
    first, last = sim.busy_window()
    return {
        "system": name,
        "config": config,
        "rows": run.rows,
        "ok": run.ok,
        "quality": run.quality,
        "end_to_end_s": round(run.finished_at - started, 2),
        "start_s": round(first - started, 2),
        "busy_s": round(last - first, 2),
        "rows_per_s": round(run.rows / (last - first), 2),
        "output_tokens": sim.output_tokens(),
        "output_tokens_per_s": round(sim.output_tokens() / (last - first), 1),
        "e2e_output_tokens_per_s": round(sim.output_tokens() / (run.finished_at - started), 1),
        "cpu_s_per_1000_rows": round(cpu / run.rows * 1000, 1),
        "cpu_method": meter.method,
        "sim_cpu_s_per_1000_rows": round(sim_cpu / run.rows * 1000, 1),
        "llm_utilization": round(sim.utilization(), 3),
        "latency_p50_s": round(run.latency.quantile(0.5), 2),
        "latency_p99_s": round(run.latency.quantile(0.99), 2),
        "tokens_series": sim.tokens_per_s_series(),
        "latency_cdf": run.latency.cdf(),
    }


def batch_shape(inflight: int, size: int) -> tuple[int, int]:
    """(actors, batches per actor) so that actors x batches x size = inflight (at least one of each)."""
    actors = max(1, min(4, inflight // size))
    return actors, max(1, inflight // (actors * size))


# -- the run -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default="natural_reasoning", choices=sorted(PIPELINES))
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--inflight", type=int, default=256)
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[16, 32, 64])
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument(
        "--sim-replicas",
        type=int,
        default=4,
        help="simulated servers shared by the rows; with 1 the workload is bound by the server's "
        "prompt processing and every system that keeps it busy ties",
    )
    parser.add_argument(
        "--sim-max-num-seqs",
        type=int,
        default=256,
        help="sequences each simulated server runs at once (a vLLM server's max_num_seqs); raise it with "
        "--sim-replicas to take the LLM out of the way, so that CPU is the limit",
    )
    parser.add_argument(
        "--ray-data-llm-limit",
        type=int,
        default=400,
        help="rows for the ray.data.llm reference (it sends a batch's requests one by one and "
        "is slow; its tokens/s does not depend on the row count)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=3, help="rounds of every system, interleaved")
    parser.add_argument("--skip-ray-data-llm", action="store_true")
    parser.add_argument(
        "--row-overrides",
        nargs="*",
        default=[],
        help="extra streamflow overrides for row mode (e.g. operators.STEP.replicas=2)",
    )
    parser.add_argument(
        "--row-variant",
        action="append",
        default=[],
        metavar="OVERRIDES",
        help="one more row-mode system in every round, with these space-separated overrides "
        "(repeatable), optionally labelled: --row-variant '2 replicas: operators.agent.replicas=2'",
    )
    parser.add_argument("--json", help="write all results (with time series) to this file")
    parser.add_argument("--plot", help="write tokens/s over time and latency CDFs to this PNG")
    args = parser.parse_args(_as_flags(sys.argv[1:]))
    pipeline = PIPELINES[args.pipeline]
    sim_args = {"time_scale": args.time_scale, "seed": args.seed, "replicas": args.sim_replicas,
                "max_num_seqs": args.sim_max_num_seqs}  # fmt: skip
    rounds = [systems(pipeline, sim_args, args) for _ in range(args.runs)]
    report(rounds, args)


def systems(pipeline: Path, sim_args: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """One round: every system once, the plain loop first."""
    results = [
        run_system("plain asyncio loop", f"{args.inflight} rows in flight, 1 process", "plain", pipeline, sim_args,
                   args),
        run_system("streamflow row mode", " ".join([f"max_inflight={args.inflight}", *args.row_overrides]),
                   "streamflow", pipeline, sim_args, args, [f"max_inflight={args.inflight}", *args.row_overrides]),
    ]  # fmt: skip
    for variant in args.row_variant:
        label, _, given = variant.rpartition(": ")
        overrides = [f"max_inflight={args.inflight}", *args.row_overrides, *given.split()]
        results.append(run_system("streamflow row mode", label or " ".join(overrides), "streamflow", pipeline,
                                  sim_args, args, overrides))  # fmt: skip
    for size in args.batch_sizes:
        actors, per_actor = batch_shape(args.inflight, size)
        overrides = [
            "mode=batch",
            f"batch.size={size}",
            f"batch.actors={actors}",
            f"batch.batches_per_actor={per_actor}",
        ]
        results.append(run_system("batch (map_batches)", f"size {size}, {actors} actors x {per_actor} batches",
                                  "streamflow", pipeline, sim_args, args, overrides))  # fmt: skip
    if not args.skip_ray_data_llm and args.pipeline == "natural_reasoning":
        # One URL per processor stage, as its config takes: the first replica. It keeps far
        # fewer requests in flight than one replica can serve, so the others would stay idle.
        limit = min(args.limit, args.ray_data_llm_limit)
        results.append(
            run_system(
                "ray.data.llm HTTP",
                f"batch_size 64, as documented, {limit} rows",
                "ray-data-llm",
                pipeline,
                {**sim_args, "replicas": 1},
                args,
                limit=limit,
            )
        )
    return results


def report(rounds: list[list[dict[str, Any]]], args: argparse.Namespace) -> None:
    """Medians over the rounds, with [min-max]; shares of the plain loop are taken within each round."""
    first = rounds[0]
    plain = first[0]
    print(
        f"{args.pipeline}: {plain['rows']} rows, {args.inflight} in flight, {args.sim_replicas} simulated "
        f"llama-8b-h100 server(s) (max_num_seqs {args.sim_max_num_seqs}, time_scale {args.time_scale}), {os.cpu_count()} cores, "
        f"{len(rounds)} round(s), systems interleaved; median [min-max]"
    )
    print(
        "  out tok/s and share: between the servers' first request and last token; e2e: from the command to the "
        "last row written; start: from the command to the first LLM request; CPU: every process of the system, "
        f"per 1,000 input rows (the simulated servers apart; counted by {first[0]['cpu_method']})"
    )
    print(
        f"{'system':<20} {'config':<32} {'out tok/s':>19} {'share':>15} {'e2e s':>17} {'e2e share':>15} "
        f"{'start s':>7} {'CPU s/1k':>8} {'sim CPU':>7} {'P50 s':>5} {'P99 s':>5} {'ok':>5}"
    )
    for index, r in enumerate(first):
        runs = [round_[index] for round_ in rounds]
        shares = [
            run["output_tokens_per_s"] / round_[0]["output_tokens_per_s"]
            for run, round_ in zip(runs, rounds, strict=True)
        ]
        e2e_shares = [round_[0]["end_to_end_s"] / run["end_to_end_s"] for run, round_ in zip(runs, rounds, strict=True)]
        print(f"{r['system']:<20} {r['config'][:32]:<32} {_spread([x['output_tokens_per_s'] for x in runs], '{:,.0f}'):>19} "
              f"{_spread(shares, '{:.0%}'):>15} {_spread([x['end_to_end_s'] for x in runs], '{:.1f}'):>17} "
              f"{_spread(e2e_shares, '{:.0%}'):>15} {_median([x['start_s'] for x in runs]):>7.1f} "
              f"{_median([x['cpu_s_per_1000_rows'] for x in runs]):>8.1f} "
              f"{_median([x['sim_cpu_s_per_1000_rows'] for x in runs]):>7.1f} "
              f"{_median([x['latency_p50_s'] for x in runs]):>5.1f} {_median([x['latency_p99_s'] for x in runs]):>5.1f} "
              f"{r['ok']:>5}")  # fmt: skip
    rows = [i for i, r in enumerate(first) if r["system"] == "streamflow row mode"]
    batches = [i for i, r in enumerate(first) if r["system"].startswith("batch")]
    for row in rows:
        name = "row mode" if len(rows) == 1 else f"row mode ({first[row]['config']})"
        if batches:
            best = [max((round_[i] for i in batches), key=lambda r: r["output_tokens_per_s"]) for round_ in rounds]
            ratios = [
                round_[row]["output_tokens_per_s"] / b["output_tokens_per_s"]
                for round_, b in zip(rounds, best, strict=True)
            ]
            print(f"{name} / best batch configuration of each round: {_spread(ratios, '{:.2f}x')} output tokens/s")
        cpu = [round_[row]["cpu_s_per_1000_rows"] / round_[0]["cpu_s_per_1000_rows"] for round_ in rounds]
        print(f"{name} CPU per row / plain loop's: {_spread(cpu, '{:.2f}x')}")
    names = list(dict.fromkeys(name for r in first for name in r["quality"]))
    if names:
        widths = [max(len(name), 8) for name in names]
        print(
            f"\n{'output quality (first round)':<53}"
            + "".join(f" {name:>{w}}" for name, w in zip(names, widths, strict=True))
        )
        for r in first:
            print(
                f"{r['system']:<20} {r['config'][:32]:<32}"
                + "".join(f" {_figure(r['quality'].get(name)):>{w}}" for name, w in zip(names, widths, strict=True))
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"config": vars(args), "rounds": rounds}, handle, indent=2)
    if args.plot:
        plot(first, args.plot)


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _spread(values: list[float], form: str) -> str:
    """The median, and [min-max] when there is more than one value."""
    text = form.format(statistics.median(values))
    if len(values) > 1:
        text += f" [{form.format(min(values))}-{form.format(max(values))}]"
    return text


def _figure(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:.3f}"


def _as_flags(argv: list[str]) -> list[str]:
    """``name=value`` arguments as ``--name value`` (so ``pipeline=coral`` works like a streamflow override)."""
    flags: list[str] = []
    for arg in argv:
        name, equals, value = arg.partition("=")
        if equals and not arg.startswith("-") and "." not in name:  # a streamflow override keeps its form
            flags += [f"--{name.replace('_', '-')}", value]
        else:
            flags.append(arg)
    return flags


def plot(results: list[dict[str, Any]], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'streamflow-rows[bench]'); no plot written", file=sys.stderr)
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    for r in results:
        if r["tokens_series"]:
            xs, ys = zip(*r["tokens_series"], strict=False)
            left.plot(xs, ys, label=f"{r['system']} ({r['config']})", linewidth=1)
        if r["latency_cdf"]:
            xs, ys = zip(*r["latency_cdf"], strict=False)
            right.step(
                xs,
                ys,
                where="post",
                label=r["system"] + ("" if "batch" not in r["system"] else f" {r['config'].split(',')[0]}"),
            )
    left.set(title="output tokens/s over time", xlabel="s since first request", ylabel="tokens/s")
    right.set(title="row latency CDF", xlabel="seconds", ylabel="share of rows", xscale="log")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
