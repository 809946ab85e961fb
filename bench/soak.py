"""Memory at scale: 1,000,000 generated rows through a cheap two-step pipeline with 50,000 rows in flight.

The pipeline does no LLM call (``llm.backend=none``): one step counts a row's characters, the
next tags it, each in actors of its own (so every row crosses driver -> step -> step -> sink).
Every ``--sample-s`` seconds the script reads the resident memory (VmRSS in /proc) of the
driver (this process) and of every step and sink actor (found by their process titles), the
run's rows admitted and in flight from its Prometheus endpoint, and the rows committed from
the parts' footers. Per process it prints the memory at start, its peak, its median over the
second quarter of the rows and over the last quarter (the sinks' memory saws up and down with
every part they buffer, so medians, not single samples), the growth between those two medians
per row committed in between (a leak shows there), and what holding a row costs: the driver
per row it keeps (in flight, or accepted and waiting for its part), the step actors per row in
flight, the sinks per row buffered. At the end it reads the output back: every row id once,
1,000,000 rows. Run:

    python -m bench.soak                       # 1,000,000 rows, about a minute on 2 cores
    python -m bench.soak --rows 3000000        # past the step actors' warm-up, about 3 minutes
    python -m bench.soak --rows 100000 --inflight 5000 --json soak.json
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import re
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import ray

import streamflow
from streamflow import Context, Flow, Message, Operator

PROCESS_TITLES = {b"ray::StepActor": "step", b"ray::SinkActor": "sink"}
_METRIC = re.compile(r"^(streamflow_rows_inflight|streamflow_rows_admitted_total)\{[^}]*\} ([0-9.e+]+)$", re.MULTILINE)


class Measure(Operator):
    """Counts the characters of the row's text."""

    fields = {"chars": int}

    async def __call__(self, row: Message, ctx: Context) -> Message:
        return row.with_fields(chars=len(row["text"]))


class Tag(Operator):
    """Tags rows with an even character count."""

    fields = {"even": bool}

    async def __call__(self, row: Message, ctx: Context) -> Message:
        return row.with_fields(even=row["chars"] % 2 == 0)


def soak_flow() -> Flow:
    return Flow("soak").step("measure", Measure()).step("tag", Tag(), fuse=False)


def write_input(path: str, rows: int, text_bytes: int) -> None:
    """``rows`` rows of about ``text_bytes`` characters each, in row groups of 50,000 (run in a child process)."""
    filler = "x" * max(0, text_bytes - 16)
    schema = pa.schema([("text", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, 50_000):
            texts = [f"row {n:>10} {filler}" for n in range(start, min(rows, start + 50_000))]
            writer.write_table(pa.table({"text": texts}, schema=schema))


def rss(pid: int | str) -> int | None:
    """Resident memory of a process in bytes (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def actor_processes() -> dict[int, str]:
    """This run's step and sink actor processes, by pid: by their process titles, among this process's
    descendants (the Ray runtime it started), so the actors of other runs on the machine are left out."""
    parents = {}
    titles = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                titles[int(entry)] = handle.read()
        except (OSError, IndexError, ValueError):
            continue
    me = os.getpid()

    def ours(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == me:
                return True
        return False

    found = {}
    for pid, title in titles.items():
        for prefix, kind in PROCESS_TITLES.items():
            if title.startswith(prefix) and ours(pid):
                found[pid] = kind
    return found


class MetricsURL(logging.Handler):
    """Catches the run's metrics URL from the driver's log line (the port is chosen free)."""

    def __init__(self) -> None:
        super().__init__()
        self.url: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        found = re.search(r"metrics: (http://\S+)", record.getMessage())
        if found:
            self.url = found.group(1)


class Sampler(threading.Thread):
    """Every ``every_s`` seconds: RSS of the driver and of each actor, rows in flight and finished."""

    def __init__(self, every_s: float, metrics: MetricsURL, data_dir: str) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.every_s = every_s
        self.metrics = metrics
        self.data_dir = data_dir
        self._part_rows: dict[str, int] = {}
        self.samples: list[dict[str, Any]] = []
        self.started = time.monotonic()
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.every_s):
            self.samples.append(self.sample())

    def stop(self) -> None:
        self._stopped.set()
        self.join()

    def sample(self) -> dict[str, Any]:
        memory = {"driver": rss("self")}
        for pid, kind in sorted(actor_processes().items()):
            memory[f"{kind} {pid}"] = rss(pid)
        inflight = admitted = None
        if self.metrics.url is not None:
            try:
                with urllib.request.urlopen(self.metrics.url, timeout=2) as answer:
                    text = answer.read().decode()
                values = _METRIC.findall(text)
                inflight = sum(float(v) for name, v in values if name == "streamflow_rows_inflight")
                admitted = sum(float(v) for name, v in values if name == "streamflow_rows_admitted_total")
            except OSError:
                pass
        return {
            "t": round(time.monotonic() - self.started, 1),
            "rss": {name: value for name, value in memory.items() if value is not None},
            "inflight": inflight,
            "admitted": admitted,
            "committed": self.committed(),
        }

    def committed(self) -> int:
        """Rows in the parts committed so far (each part's footer is read once)."""
        if os.path.isdir(self.data_dir):
            for name in os.listdir(self.data_dir):
                if name.startswith("part-") and name.endswith(".parquet") and name not in self._part_rows:
                    self._part_rows[name] = pq.read_metadata(os.path.join(self.data_dir, name)).num_rows
        return sum(self._part_rows.values())


def analyse(samples: list[dict[str, Any]], baseline: int, rows: int) -> dict[str, Any]:
    """Per process: start, peak, medians over the second and the last quarter of the rows, and what they say."""
    live = [s for s in samples if s["admitted"] is not None]
    second = [s for s in live if rows / 4 <= s["committed"] < rows / 2]
    last = [s for s in live if s["committed"] >= rows * 3 / 4 and s["inflight"]] or live[-2:]
    committed_between = max(median([s["committed"] for s in last]) - median([s["committed"] for s in second]), 1)
    names = sorted({name for s in live for name in s["rss"]}, key=lambda n: (n != "driver", n))
    processes = {}
    for name in names:
        series = [s["rss"][name] for s in live if name in s["rss"]]
        level = median([s["rss"][name] for s in last if name in s["rss"]])
        growth = level - median([s["rss"][name] for s in second if name in s["rss"]])
        processes[name] = {
            "start": baseline if name == "driver" else series[0],
            "peak": max(series),
            "second_quarter": level - growth,
            "last_quarter": level,
            "growth": growth,
            "growth_per_committed_row": growth / committed_between,
            "flat": abs(growth) < 0.05 * level,
        }
    held = median([s["admitted"] - s["committed"] for s in last])
    inflight = median([s["inflight"] for s in last])
    added = {
        kind: sum(p["last_quarter"] - p["start"] for n, p in processes.items() if n.startswith(kind))
        for kind in ("driver", "step", "sink")
    }
    return {
        "processes": processes,
        "flat": all(p["flat"] for p in processes.values()),
        "rows_held_by_driver": held,
        "rows_in_flight": inflight,
        "bytes_per_row_held_by_driver": added["driver"] / max(held, 1),
        "bytes_per_row_in_flight_in_steps": added["step"] / max(inflight, 1),
        # None when the samples caught too few rows waiting for their part to say (fast runs).
        "bytes_per_row_buffered_in_sinks": added["sink"] / (held - inflight) if held - inflight >= 1_000 else None,
        "bytes_per_committed_row_in_second_half": sum(p["growth"] for p in processes.values()) / committed_between,
    }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--inflight", type=int, default=50_000)
    parser.add_argument("--text-bytes", type=int, default=100, help="size of each row's text")
    parser.add_argument(
        "--sample-s",
        type=float,
        default=1.0,
        help="seconds between two memory samples (each quarter of the rows needs several: a 1,000,000-row run "
        "can be over in under a minute)",
    )
    parser.add_argument("--json", help="write the samples and the analysis to this file")
    args = parser.parse_args()

    logging.basicConfig(level=logging.WARNING)
    metrics = MetricsURL()
    logging.getLogger("streamflow.runtime.row.prometheus").addHandler(metrics)
    logging.getLogger("streamflow.runtime.row.prometheus").setLevel(logging.INFO)
    with tempfile.TemporaryDirectory(prefix="sf-soak-") as out:
        data = os.path.join(out, "rows.parquet")
        child = multiprocessing.get_context("spawn").Process(
            target=write_input, args=(data, args.rows, args.text_bytes)
        )
        child.start()
        child.join()
        ray.init(include_dashboard=False, logging_level="WARNING")
        baseline = rss("self") or 0
        sampler = Sampler(args.sample_s, metrics, os.path.join(out, "soak", "soak", "data"))
        sampler.start()
        overrides = [f"input.path={data}", f"output.dir={out}", f"max_inflight={args.inflight}", "llm.backend=none",
                     "events.sample=0", "metrics.port=0", "progress=off", "run_id=soak"]  # fmt: skip
        started = time.monotonic()
        try:
            result = streamflow.run(soak_flow(), overrides)
        finally:
            sampler.stop()
        wall_s = time.monotonic() - started
        frame = pl.scan_parquet(f"{result.data_dir}/*.parquet").select(pl.len(), pl.col("row_id").n_unique()).collect()
        ray.shutdown()
    rows_out, unique = frame.row(0)
    analysis = analyse(sampler.samples, baseline, args.rows)
    report = {
        "settings": vars(args),
        "wall_s": round(wall_s, 1),
        "rows_per_s": round(args.rows / wall_s, 1),
        "rows_out": rows_out,
        "unique_ids": unique,
        "lost": args.rows - unique,
        "duplicated": rows_out - unique,
        "analysis": analysis,
        "samples": sampler.samples,
    }
    show(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


def show(report: dict[str, Any]) -> None:
    analysis = report["analysis"]
    mib = 1 << 20
    print(
        f"{report['rows_out']:,} rows out, {report['unique_ids']:,} unique ids (lost {report['lost']}, "
        f"duplicated {report['duplicated']}) in {report['wall_s']:.0f} s ({report['rows_per_s']:,.0f} rows/s)"
    )
    print("RSS in MiB; quarters: medians over the samples taken while the 2nd / last quarter of the rows was committed")
    print(f"{'process':<12} {'start':>7} {'peak':>7} {'2nd q.':>7} {'last q.':>7} {'growth':>7} {'B/row':>6}  flat")
    for name, p in analysis["processes"].items():
        print(
            f"{name:<12} {p['start'] / mib:>7.0f} {p['peak'] / mib:>7.0f} {p['second_quarter'] / mib:>7.0f} "
            f"{p['last_quarter'] / mib:>7.0f} {p['growth'] / mib:>+7.1f} {p['growth_per_committed_row']:>6.1f}  "
            f"{'yes' if p['flat'] else 'no'}"
        )
    buffered = analysis["bytes_per_row_buffered_in_sinks"]
    sinks = "too few rows buffered to say" if buffered is None else f"{buffered:,.0f} B per row buffered"
    print(
        f"driver: {analysis['bytes_per_row_held_by_driver']:,.0f} B per row it holds "
        f"({analysis['rows_held_by_driver']:,.0f} rows in flight or waiting for their part); "
        f"step actors: {analysis['bytes_per_row_in_flight_in_steps']:,.0f} B per row in flight "
        f"({analysis['rows_in_flight']:,.0f}); sinks: {sinks}; all processes: "
        f"{analysis['bytes_per_committed_row_in_second_half']:+,.1f} B per row committed in the second half of the run"
    )


if __name__ == "__main__":
    main()
