"""Capacity of the runtime itself: rows/s and inter-actor messages/s with operators that do nothing.

A 3-step pipeline of no-op operators (and one of operators that sleep 10 ms) runs over
generated rows at several ``max_inflight`` values. In the same run, a bare Ray chain of the
same shape (3 async actors and a sink, batches coalesced the same way, no streamflow code)
gives the reference for what Ray itself can carry on this machine.

streamflow runs the pipeline two ways: with each step in actors of its own
(``operators.STEP.fuse=false``, the bare chain's shape: driver -> step 1 -> step 2 -> step 3 ->
sink, 4 messages per row), which measures the cost of a hop; and as it runs by default, the
three steps fused in one actor (driver -> steps -> sink, 2 messages per row). Runs without
coalescing show what coalescing is worth (one actor call per row).

CPU counts the bench process and everything it starts (the Ray runtime, its workers, alive
or gone: a cgroup of its own), per message. Times cover streaming and finishing; starting the
actors is left out for both systems (``bench.startup`` measures start-up). Run:

    python -m bench.orchestration                    # about 5 minutes on 2 cores
    python -m bench.orchestration --rows 20000 --inflight 1000 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import statistics
import tempfile
import time
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import ray

import streamflow
from bench.cpu import CommandCPU
from streamflow import Flow, Message, Operator

STEPS = 3
HOPS = STEPS + 1  # driver -> steps -> sink
METER = CommandCPU()
"""Counts this process and the Ray runtime it starts (``adopt``-ed in ``main``)."""


class Noop(Operator):
    """Passes the row on untouched: all that remains is the runtime's cost."""

    async def __call__(self, row: Message, ctx: Any) -> Message:
        return row


class Sleep(Operator):
    """Waits 10 ms, like a very fast tool call."""

    async def __call__(self, row: Message, ctx: Any) -> Message:
        await asyncio.sleep(0.01)
        return row


def flow_of(operator: type[Operator]) -> Flow:
    flow = Flow(f"bench_{operator.__name__.lower()}")
    for index in range(STEPS):
        flow.step(f"s{index}", operator())
    return flow


def run_streamflow(
    data: str,
    out: str,
    operator: type[Operator],
    inflight: int,
    coalesce: bool,
    events: float = 1.0,
    *,
    fused: bool = False,
) -> dict[str, Any]:
    overrides = [
        f"input.path={data}", f"output.dir={out}", f"max_inflight={inflight}", "progress=off", "llm.backend=none",
        "output.sinks=1", "transport.flush_rows=" + ("64" if coalesce else "1"), f"events.sample={events}",
        "metrics.enabled=false", *([] if fused else [f"operators.s{index}.fuse=false" for index in range(STEPS)]),
    ]  # fmt: skip
    cpu0 = METER.seconds()
    result = streamflow.run(flow_of(operator), overrides)
    cpu = METER.seconds() - cpu0
    # Streaming and finishing only: the bare chain's figures leave out its actors' start-up too.
    wall = result.phases_s["stream"] + result.phases_s["finish"]
    return {"rows": result.rows_read, "wall_s": wall, "cpu_s": cpu, "fused": fused}


# -- the bare Ray reference --------------------------------------------------------------

# Module-level functions, not Encoder objects: this module runs as __main__, and codec
# objects defined there cannot be pickled into the actors.
_encode = msgspec.msgpack.encode
_decode = msgspec.msgpack.decode


class _Hop:
    """A bare async actor forwarding coalesced batches to the next one (or counting at the end)."""

    def __init__(self, flush_rows: int) -> None:
        self.next: Any = None
        self.buffer: list[dict[str, Any]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.flush_rows = flush_rows
        self.done = 0
        self.arrived = asyncio.Event()

    def wire(self, next_hop: Any) -> None:
        self.next = next_hop

    async def push(self, payload: bytes) -> int:
        rows = _decode(payload)
        if self.next is None:
            self.done += len(rows)
            self.arrived.set()
            return self.done
        for row in rows:
            await asyncio.sleep(0)  # each row is its own unit of work, as in streamflow
            self.buffer.append(row)
            if len(self.buffer) >= self.flush_rows:
                self.flush()
            elif self.timer is None:
                self.timer = asyncio.get_running_loop().call_later(0.001, self.flush)
        return 0

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.buffer:
            batch, self.buffer = self.buffer, []
            self.next.push.remote(_encode(batch))

    async def completed(self, at_least: int) -> int:
        while self.done < at_least:
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), 0.5)
        return self.done


def run_bare_ray(rows: int, inflight: int, flush_rows: int) -> dict[str, Any]:
    hop = ray.remote(_Hop).options(num_cpus=0)
    actors = [hop.remote(flush_rows) for _ in range(STEPS + 1)]
    ray.get([a.wire.remote(b) for a, b in itertools.pairwise(actors)])
    first, sink = actors[0], actors[-1]
    cpu0 = METER.seconds()
    started = time.perf_counter()
    sent = 0
    while sent < rows:
        window = min(inflight, rows - sent)
        for start in range(0, window, flush_rows):
            count = min(flush_rows, window - start)
            first.push.remote(_encode([{"i": sent + start + k} for k in range(count)]))
        sent += window
        ray.get(sink.completed.remote(sent))
    wall = time.perf_counter() - started
    cpu = METER.seconds() - cpu0
    for actor in actors:
        ray.kill(actor)
    return {"rows": rows, "wall_s": wall, "cpu_s": cpu}


def row(
    system: str, operator: str, inflight: int, coalesce: bool, measured: dict[str, Any], events: bool = True
) -> dict[str, Any]:
    fused = measured.get("fused", False)
    hops = 2 if fused else HOPS  # actor boundaries a row crosses: driver -> steps (one actor) -> sink when fused
    messages = measured["rows"] * hops
    return {
        "system": system + (" (fused)" if fused else ""),
        "event_log": events and system == "streamflow",
        "operators": operator,
        "max_inflight": inflight,
        "coalescing": coalesce,
        "rows": measured["rows"],
        "wall_s": round(measured["wall_s"], 3),
        "rows_per_s": round(measured["rows"] / measured["wall_s"], 1),
        "messages_per_s": round(messages / measured["wall_s"], 1),
        "cpu_us_per_message": round(measured["cpu_s"] / messages * 1e6, 1),
        "cpu_us_per_row": round(measured["cpu_s"] / measured["rows"] * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--rows",
        type=int,
        default=100_000,
        help="rows per coalesced no-op run (enough to amortize actor start-up, which the run's "
        "wall time includes); runs without coalescing and with 10 ms operators use 5,000",
    )
    parser.add_argument("--inflight", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument(
        "--event-pairs",
        type=int,
        default=1,
        help="extra no-op runs with the event log off and on, alternating, per max_inflight",
    )
    parser.add_argument("--event-sample", type=float, default=1.0, help="events.sample of the event-log-on runs")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if not METER.adopt():
        raise SystemExit("bench.orchestration counts CPU with a cgroup v2 of its own: run it as root")
    ray.init(include_dashboard=False, logging_level="WARNING")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "rows.parquet")
        pq.write_table(pa.table({"i": list(range(args.rows))}), data, row_group_size=max(1, args.rows // 8))
        small = os.path.join(tmp, "small.parquet")
        pq.write_table(pa.table({"i": list(range(min(args.rows, 5_000)))}), small)
        for inflight in args.inflight:
            results.append(row("bare Ray chain", "noop", inflight, True, run_bare_ray(args.rows, inflight, 64)))
            results.append(row("streamflow", "noop", inflight, True, run_streamflow(data, tmp, Noop, inflight, True)))
            fused = run_streamflow(data, tmp, Noop, inflight, True, fused=True)
            results.append(row("streamflow", "noop", inflight, True, fused))
            results.append(
                row("streamflow", "noop", inflight, False, run_streamflow(small, tmp, Noop, inflight, False))
            )
            sleeping = run_streamflow(small, tmp, Sleep, inflight, True, fused=True)
            results.append(row("streamflow", "sleep 10 ms", inflight, True, sleeping))
            # The event log's cost: the same unfused no-op runs with events.sample=0, alternating with the default.
            for _ in range(args.event_pairs):
                off = run_streamflow(data, tmp, Noop, inflight, True, events=0.0)
                results.append(row("streamflow", "noop", inflight, True, off, events=False))
                on = run_streamflow(data, tmp, Noop, inflight, True, events=args.event_sample)
                results.append(row("streamflow", "noop", inflight, True, on))
    ray.shutdown()
    METER.leave()
    header = (
        f"{'system':<20} {'operators':<12} {'events':>6} {'inflight':>8} {'coalesce':>8} {'rows':>7} "
        f"{'rows/s':>9} {'msgs/s':>9} {'CPU us/msg':>10} {'CPU us/row':>10}"
    )
    print(header)
    for r in results:
        print(
            f"{r['system']:<20} {r['operators']:<12} {'on' if r['event_log'] else 'off':>6} "
            f"{r['max_inflight']:>8,} {r['coalescing']!s:>8} {r['rows']:>7,} {r['rows_per_s']:>9,.0f} "
            f"{r['messages_per_s']:>9,.0f} {r['cpu_us_per_message']:>10,.1f} {r['cpu_us_per_row']:>10,.1f}"
        )
    for inflight in args.inflight:
        bare = next(r for r in results if r["system"] == "bare Ray chain" and r["max_inflight"] == inflight)
        noop = [
            r
            for r in results
            if r["system"] == "streamflow"
            and r["operators"] == "noop"
            and r["coalescing"]
            and r["max_inflight"] == inflight
        ]
        fused = next(
            r
            for r in results
            if r["system"] == "streamflow (fused)" and r["operators"] == "noop" and r["max_inflight"] == inflight
        )
        on = [r["messages_per_s"] for r in noop if r["event_log"]]
        off = [r["messages_per_s"] for r in noop if not r["event_log"]]
        print(
            f"max_inflight {inflight:,}: streamflow, steps apart = {statistics.median(on) / bare['messages_per_s']:.0%}"
            f" of the bare Ray chain's messages/s (median of {len(on)}); fused = "
            f"{fused['rows_per_s'] / bare['rows_per_s']:.0%} of its rows/s"
        )
        if on and off:
            on_cpu = statistics.median(r["cpu_us_per_message"] for r in noop if r["event_log"])
            off_cpu = statistics.median(r["cpu_us_per_message"] for r in noop if not r["event_log"])
            print(
                f"max_inflight {inflight:,}: event log on / off = {statistics.median(on) / statistics.median(off):.1%}"
                f" of messages/s, {on_cpu / off_cpu:.1%} of CPU per message (medians of {len(on)} / {len(off)} runs)"
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"config": vars(args), "cores": os.cpu_count(), "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
