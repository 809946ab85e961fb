"""Throughput as concurrency grows, with the LLM never the limit: the single-process loop vs row mode.

For each pipeline (Coral dialogues, Tau2 trajectories) and each number of rows in flight,
the plain asyncio loop (one process) and streamflow row mode run the same rows against the
same simulated servers, sized so that they are not the bottleneck (``--sim-replicas`` servers
of ``--sim-max-num-seqs`` sequences each). The loop's one core saturates and its throughput
plateaus; row mode spreads the rows over ``--row-replicas`` actors (every step gets that many
replicas, and the steps fuse into one group of that many actors). The input is the pipeline's sample repeated
until there are ``--rows-per-slot`` rows per slot in flight (at least ``--min-rows``). Each
system runs as a command of its own (``bench/systems.py``); output tokens/s are counted by the
servers between their first request and last token. This is the shape of the Matrix paper's
Figures 4 and 7 on one machine. Run:

    python -m bench.concurrency                                   # Coral and Tau2, about 40 minutes
    python -m bench.concurrency --pipelines coral --inflight 256 4096 --plot sweep.png

Tau2 holds a sandbox per trajectory in flight (a directory, a user id and a warm interpreter);
``--sandboxes`` bounds them in both systems alike (rows beyond it wait for one).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bench.row_vs_batch import PIPELINES, run_system


def repeated_sample(pipeline: str, rows: int, folder: str) -> str:
    """The pipeline's sample repeated until it has ``rows`` rows (their ids differ: file offsets)."""
    from streamflow.pipeline import load_pipeline

    sample = pq.read_table(str(load_pipeline(PIPELINES[pipeline]).defaults["input"]["path"]))
    copies = -(-rows // sample.num_rows)
    path = Path(folder, f"{pipeline}-{rows}.parquet")
    pq.write_table(pa.concat_tables([sample] * copies).slice(0, rows), path)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipelines", nargs="+", default=["coral", "tau2"], choices=["coral", "tau2"])
    parser.add_argument("--inflight", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    parser.add_argument("--rows-per-slot", type=float, default=2.0)
    parser.add_argument("--min-rows", type=int, default=2000)
    parser.add_argument("--sim-replicas", type=int, default=8)
    parser.add_argument("--sim-max-num-seqs", type=int, default=4096)
    parser.add_argument("--sandboxes", type=int, default=1024, help="Tau2: sandboxes in all (per system)")
    parser.add_argument(
        "--row-replicas",
        type=int,
        default=2,
        help="row mode: replicas of every step (they fuse into one group of this many actors)",
    )
    parser.add_argument("--row-overrides", nargs="*", default=[], help="more streamflow overrides for row mode")
    parser.add_argument("--runs", type=int, default=1, help="rounds of every point, interleaved")
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    parser.add_argument("--plot")
    args = parser.parse_args()
    sim_args = {"time_scale": args.time_scale, "seed": args.seed, "replicas": args.sim_replicas,
                "max_num_seqs": args.sim_max_num_seqs}  # fmt: skip
    points: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.runs):
            for pipeline in args.pipelines:
                for inflight in args.inflight:
                    rows = max(args.min_rows, int(inflight * args.rows_per_slot))
                    data = repeated_sample(pipeline, rows, folder)
                    settings = argparse.Namespace(inflight=inflight, limit=rows, seed=args.seed)
                    plain_extra = ["--input", data]
                    row = [f"input.path={data}", f"max_inflight={inflight}", *_replicas(pipeline, args.row_replicas),
                           *args.row_overrides]  # fmt: skip
                    if pipeline == "tau2":
                        plain_extra += ["--sandbox-size", str(args.sandboxes)]
                        row.append(f"sandbox.size={max(1, args.sandboxes // args.row_replicas)}")
                    plain = run_system("plain asyncio loop", "1 process", "plain", PIPELINES[pipeline], sim_args,
                                       settings, extra=plain_extra)  # fmt: skip
                    ours = run_system("streamflow row mode", " ".join(row), "streamflow", PIPELINES[pipeline],
                                      sim_args, settings, row)  # fmt: skip
                    for result in (plain, ours):
                        result.update(pipeline=pipeline, inflight=inflight, round=round_)
                        result.pop("latency_cdf", None)
                        result.pop("tokens_series", None)
                        points.append(result)
                    print(
                        f"{pipeline} {inflight:>6} in flight, {rows} rows: plain {plain['output_tokens_per_s']:,.0f}"
                        f" tok/s, row mode {ours['output_tokens_per_s']:,.0f} tok/s "
                        f"({ours['output_tokens_per_s'] / plain['output_tokens_per_s']:.2f}x)",
                        flush=True,
                    )
    report(points, args)


def _replicas(pipeline: str, replicas: int) -> list[str]:
    """Overrides giving every step of the pipeline ``replicas`` actors."""
    from streamflow.pipeline import load_pipeline

    spec = load_pipeline(PIPELINES[pipeline])
    return [f"operators.{step}.replicas={replicas}" for step in spec.build(spec.default_params()).steps]


def report(points: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\noutput tokens/s by rows in flight ({args.sim_replicas} simulated servers x {args.sim_max_num_seqs} "
          f"sequences, time_scale {args.time_scale}; row mode: {args.row_replicas} replicas per step "
          f"{' '.join(args.row_overrides)}; "
          f"median of {args.runs} round(s)); CPU: all processes per 1,000 rows, servers apart")  # fmt: skip
    print(f"{'pipeline':<9} {'in flight':>9} {'rows':>7} {'plain tok/s':>12} {'row tok/s':>10} {'row/plain':>9} "
          f"{'plain CPU':>9} {'row CPU':>8}")  # fmt: skip
    for pipeline in args.pipelines:
        for inflight in args.inflight:
            mine = [p for p in points if p["pipeline"] == pipeline and p["inflight"] == inflight]
            plain = [p for p in mine if p["system"].startswith("plain")]
            row = [p for p in mine if p["system"].startswith("streamflow")]
            ratio = statistics.median(
                r["output_tokens_per_s"] / p["output_tokens_per_s"] for p, r in zip(plain, row, strict=True)
            )
            print(f"{pipeline:<9} {inflight:>9,} {plain[0]['rows']:>7,} "
                  f"{statistics.median(p['output_tokens_per_s'] for p in plain):>12,.0f} "
                  f"{statistics.median(r['output_tokens_per_s'] for r in row):>10,.0f} {ratio:>8.2f}x "
                  f"{statistics.median(p['cpu_s_per_1000_rows'] for p in plain):>9.1f} "
                  f"{statistics.median(r['cpu_s_per_1000_rows'] for r in row):>8.1f}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"config": vars(args), "points": points}, indent=2))
    if args.plot:
        plot(points, args)


def plot(points: list[dict[str, Any]], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.pipelines), figsize=(6 * len(args.pipelines), 4.2), squeeze=False)
    for axis, pipeline in zip(axes[0], args.pipelines, strict=False):
        for system, style in (("plain asyncio loop", "o--"), ("streamflow row mode", "s-")):
            xs, ys = [], []
            for inflight in args.inflight:
                mine = [p["output_tokens_per_s"] for p in points
                        if p["pipeline"] == pipeline and p["inflight"] == inflight and p["system"] == system]  # fmt: skip
                if mine:
                    xs.append(inflight)
                    ys.append(statistics.median(mine))
            axis.plot(xs, ys, style, label=system)
        axis.set(title=f"{pipeline}: output tokens/s", xlabel="rows in flight", ylabel="tokens/s", xscale="log")
        axis.set_xticks(args.inflight, [f"{n:,}" for n in args.inflight])
        axis.set_xticks([], minor=True)  # the log scale's minor labels would overlap the counts
        axis.set_ylim(bottom=0)
        axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
