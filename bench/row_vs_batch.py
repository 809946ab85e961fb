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

Output tokens/s is measured by the server, over the window from its first request to
its last output token (so Ray start-up is excluded for every system); "end to end" adds
the time from the call to the end of the run. Run:

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
import asyncio
import importlib.util
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray

import streamflow
from bench.simproc import SimProcess
from streamflow.execution import new_row, run_row, step_contexts, uses_sandbox
from streamflow.histogram import LatencyHistogram
from streamflow.io.source import BadInput, Unreadable, plan_input, read_unit
from streamflow.message import Message
from streamflow.pipeline import load_pipeline
from streamflow.services.llm import LLMClient
from streamflow.services.sandbox import SandboxAccess, SandboxPool, SandboxSettings

REPO = Path(__file__).resolve().parents[1]
PIPELINES = {name: REPO / "pipelines" / f"{name}.py" for name in ("natural_reasoning", "coral", "tau2")}


def measure(
    name: str,
    config: str,
    sim: SimProcess,
    wall_s: float,
    rows: int,
    ok: int,
    latency: LatencyHistogram,
    quality: dict[str, float] | None = None,
) -> dict[str, Any]:
    started, ended = sim.busy_window()
    return {
        "system": name,
        "config": config,
        "rows": rows,
        "ok": ok,
        "quality": quality or {},
        "end_to_end_s": round(wall_s, 2),
        "busy_s": round(ended - started, 2),
        "rows_per_s": round(rows / (ended - started), 2),
        "output_tokens": sim.output_tokens(),
        "output_tokens_per_s": round(sim.output_tokens() / (ended - started), 1),
        "llm_utilization": round(sim.utilization(), 3),
        "latency_p50_s": round(latency.quantile(0.5), 2),
        "latency_p99_s": round(latency.quantile(0.99), 2),
        "tokens_series": sim.tokens_per_s_series(),
        "latency_cdf": latency.cdf(),
    }


# -- the systems ---------------------------------------------------------------------------


def plain_loop(
    pipeline: Path, urls: list[str], inflight: int, limit: int, seed: int
) -> tuple[int, int, LatencyHistogram, dict[str, float]]:
    """The same flow in one process: a semaphore of ``inflight`` rows, nothing else."""
    spec = load_pipeline(pipeline)
    params = spec.default_params()
    flow = spec.build(params).validate()
    plan = plan_input(str(spec.defaults["input"]["path"]), limit=limit, requires=flow.requires)
    histogram = LatencyHistogram()

    async def go() -> tuple[int, list[dict[str, Any]]]:
        client = LLMClient(urls, model="sim-8b")
        pool = SandboxPool(SandboxSettings()) if uses_sandbox(flow) else None
        sandbox = SandboxAccess({pool.name: pool}).client() if pool is not None else None
        contexts = step_contexts(flow, client, params, sandbox=sandbox)
        for name, step in flow.steps.items():
            await step.operator.setup(contexts[name])
        slots = asyncio.Semaphore(inflight)
        done: list[dict[str, Any]] = []

        async def one(row: Message) -> None:
            async with slots:
                started = time.monotonic()
                finished = await run_row(flow, row, contexts)
                histogram.add(time.monotonic() - started)
                done.extend({**row.fields, "status": row.status} for row in finished)

        def admitted() -> Iterator[Message]:
            """The input rows as the run modes admit them: bad input already finished, unreadable ranges left out."""
            for unit in (unit for units in plan.partitions for unit in units):
                for read in read_unit(plan, unit):
                    if isinstance(read, BadInput):
                        yield from read.rows
                    elif not isinstance(read, Unreadable):
                        yield from (
                            new_row(row_id, fields, flow.first, seed) for row_id, fields in zip(*read, strict=True)
                        )

        tasks = [one(row) for row in admitted()]
        await asyncio.gather(*tasks)
        await client.close()
        if pool is not None:
            await pool.close()
        return len(tasks), done

    rows, done = asyncio.run(go())
    ok = sum(row["status"] == "ok" for row in done)
    quality = {}
    if spec.metrics is not None:
        import polars as pl

        quality = dict(spec.metrics(pl.from_dicts(done, infer_schema_length=None).lazy()))
    return rows, ok, histogram, quality


def streamflow_run(pipeline: Path, urls: list[str], overrides: list[str], out: str) -> streamflow.RunResult:
    endpoints = "[" + ",".join(urls) + "]"
    return streamflow.run(
        str(pipeline),
        [f"llm.endpoints={endpoints}", "llm.model=sim-8b", f"output.dir={out}", "progress=off", *overrides],
    )


def batch_shape(inflight: int, size: int) -> tuple[int, int]:
    """(actors, batches per actor) so that actors x batches x size = inflight (at least one of each)."""
    actors = max(1, min(4, inflight // size))
    return actors, max(1, inflight // (actors * size))


def ray_data_llm(pipeline: Path, url: str, inflight: int, limit: int) -> tuple[int, int]:
    """NaturalReasoning with ``ray.data.llm`` HTTP processors, one per LLM step, as documented."""
    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    # Imported by name (the pipelines folder is on every worker's path, see main) so that
    # Ray pickles its msgspec Structs by reference.
    sys.path.insert(0, str(pipeline.parent))
    nr = importlib.import_module(pipeline.stem)
    from operators.parsing import extract_json, first_word

    params = nr.Params()
    prompts = {
        name: nr.prompt(name, chars)
        for name, chars in (
            ("classify", params.classifier_doc_chars),
            ("score", params.max_doc_chars),
            ("question", params.max_doc_chars),
        )
    }
    threshold = params.english_min_score
    stages = 3
    config = HttpRequestProcessorConfig(
        url=f"{url}/chat/completions", concurrency=max(1, inflight // (64 * stages)), batch_size=64
    )

    def processor(name: str, max_tokens: int, parse: Any) -> Any:
        from streamflow import Message

        return build_processor(
            config,
            preprocess=lambda row: {
                "payload": {
                    "model": "sim-8b",
                    "max_tokens": max_tokens,
                    "temperature": 0.0,
                    "messages": prompts[name].render(Message(id="x", fields={"text": row["text"]})),
                }
            },
            postprocess=lambda row: {"text": row["text"], "keep": parse(row["http_response"])},
        )

    def answer(response: dict[str, Any]) -> str:
        return response["choices"][0]["message"]["content"] or ""

    def passes(schema: Any, check: Any) -> Any:
        """A postprocess test: the answer parses as ``schema`` and ``check`` finds nothing wrong."""

        def test(response: dict[str, Any]) -> bool:
            data = extract_json(answer(response))
            try:
                return data is not None and check(nr.msgspec.convert(data, schema, strict=False)) is None
            except nr.msgspec.ValidationError:
                return False

        return test

    class English:
        def __init__(self) -> None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            self.identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)

        def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
            keep = [t for t in batch["text"] if t is not None and self._english(t)]
            return {"text": keep}

        def _english(self, text: str) -> bool:
            language, score = self.identifier.classify(text[:2000])
            return language == "en" and score >= threshold

    ds = ray.data.read_parquet(str(nr.DEFAULTS["input"]["path"])).limit(limit).select_columns(["text"])
    ds = ds.map_batches(English, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.25, batch_size=256)
    ds = processor("classify", 8, lambda r: first_word(answer(r)) == "yes")(ds).filter(lambda r: r["keep"])
    ds = processor("score", 128, passes(nr.Scores, nr.low_score))(ds).filter(lambda r: r["keep"])
    ds = processor("question", params.question_max_tokens, passes(nr.Question, nr.unusable_question))(ds)
    ds = ds.filter(lambda r: r["keep"])
    return limit, ds.count()


# -- the run -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default="natural_reasoning", choices=sorted(PIPELINES))
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--inflight", type=int, default=256)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument(
        "--sim-replicas",
        type=int,
        default=4,
        help="simulated servers shared by the rows; with 1 the workload is bound by the server's "
        "prompt processing and every system that keeps it busy ties",
    )
    parser.add_argument(
        "--ray-data-llm-limit",
        type=int,
        default=400,
        help="rows for the ray.data.llm reference (it sends a batch's requests one by one and "
        "is slow; its tokens/s does not depend on the row count)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-ray-data-llm", action="store_true")
    parser.add_argument("--json", help="write all results (with time series) to this file")
    parser.add_argument("--plot", help="write tokens/s over time and latency CDFs to this PNG")
    args = parser.parse_args(_as_flags(sys.argv[1:]))
    pipeline = PIPELINES[args.pipeline]
    pythonpath = os.pathsep.join([str(REPO), str(pipeline.parent), os.environ.get("PYTHONPATH", "")])
    # Logical CPUs above the physical count: Ray Data's LLM stages reserve a CPU per actor and
    # would otherwise wait forever for one on a 2-core machine. Every system here is I/O-bound.
    ray.init(
        num_cpus=max(8, os.cpu_count() or 1),
        include_dashboard=False,
        logging_level="WARNING",
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
    )
    results: list[dict[str, Any]] = []
    sim_args = {"time_scale": args.time_scale, "seed": args.seed, "replicas": args.sim_replicas}
    with tempfile.TemporaryDirectory() as out:
        with SimProcess(**sim_args) as sim:
            started = time.monotonic()
            rows, ok, latency, quality = plain_loop(pipeline, sim.urls, args.inflight, args.limit, args.seed)
            wall = time.monotonic() - started
        results.append(
            measure(
                "plain asyncio loop",
                f"{args.inflight} rows in flight, 1 process",
                sim,
                wall,
                rows,
                ok,
                latency,
                quality,
            )
        )
        with SimProcess(**sim_args) as sim:
            result = streamflow_run(pipeline, sim.urls, [f"max_inflight={args.inflight}", f"limit={args.limit}"], out)
        results.append(
            measure(
                "streamflow row mode",
                f"max_inflight={args.inflight}",
                sim,
                result.wall_s,
                result.rows_read,
                result.ok,
                result.latency,
                result.quality,
            )
        )
        for size in args.batch_sizes:
            actors, per_actor = batch_shape(args.inflight, size)
            overrides = [
                "mode=batch",
                f"batch.size={size}",
                f"batch.actors={actors}",
                f"batch.batches_per_actor={per_actor}",
                f"limit={args.limit}",
            ]
            with SimProcess(**sim_args) as sim:
                result = streamflow_run(pipeline, sim.urls, overrides, out)
            results.append(
                measure(
                    "batch (map_batches)",
                    f"size {size}, {actors} actors x {per_actor} batches",
                    sim,
                    result.wall_s,
                    result.rows_read,
                    result.ok,
                    result.latency,
                    result.quality,
                )
            )
        if not args.skip_ray_data_llm and args.pipeline == "natural_reasoning":
            # One URL per processor stage, as its config takes: the first replica. It keeps far
            # fewer requests in flight than one replica can serve, so the others would stay idle.
            with SimProcess(**{**sim_args, "replicas": 1}) as sim:
                started = time.monotonic()
                rows, ok = ray_data_llm(pipeline, sim.urls[0], args.inflight, min(args.limit, args.ray_data_llm_limit))
                wall = time.monotonic() - started
            results.append(
                measure(
                    "ray.data.llm HTTP",
                    f"batch_size 64, as documented, {rows} rows",
                    sim,
                    wall,
                    rows,
                    ok,
                    LatencyHistogram(),
                )
            )
    ray.shutdown()
    report(results, args)


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    limit = results[0]["output_tokens_per_s"]
    batches = [r for r in results if r["system"].startswith("batch")]
    best = max(batches, key=lambda r: r["output_tokens_per_s"]) if batches else None
    row = next(r for r in results if r["system"] == "streamflow row mode")
    print(
        f"{args.pipeline}: {results[0]['rows']} rows, {args.inflight} in flight, {args.sim_replicas} simulated "
        f"llama-8b-h100 server(s) (max_num_seqs 256, time_scale {args.time_scale}), {os.cpu_count()} cores, "
        "one run per system"
    )
    print(
        f"{'system':<22} {'config':<30} {'rows/s':>7} {'out tok/s':>9} {'share':>6} {'LLM util':>8} "
        f"{'P50 s':>6} {'P99 s':>6} {'ok':>5} {'e2e s':>6}"
    )
    for r in results:
        print(
            f"{r['system']:<22} {r['config']:<30} {r['rows_per_s']:>7.1f} {r['output_tokens_per_s']:>9,.0f} "
            f"{r['output_tokens_per_s'] / limit:>6.0%} {r['llm_utilization']:>8.0%} {r['latency_p50_s']:>6.1f} "
            f"{r['latency_p99_s']:>6.1f} {r['ok']:>5} {r['end_to_end_s']:>6.1f}"
        )
    if best is not None:
        ratio = row["output_tokens_per_s"] / best["output_tokens_per_s"]
        print(
            f"row mode / best batch ({best['config']}): {ratio:.2f}x output tokens/s; "
            f"row mode = {row['output_tokens_per_s'] / limit:.0%} of the plain asyncio loop"
        )
    names = list(dict.fromkeys(name for r in results for name in r["quality"]))
    if names:
        widths = [max(len(name), 8) for name in names]
        print(f"\n{'output quality':<53}" + "".join(f" {name:>{w}}" for name, w in zip(names, widths)))
        for r in results:
            print(
                f"{r['system']:<22} {r['config']:<30}"
                + "".join(f" {_figure(r['quality'].get(name)):>{w}}" for name, w in zip(names, widths))
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"config": vars(args), "results": results}, handle, indent=2)
    if args.plot:
        plot(results, args.plot)


def _figure(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:.3f}"


def _as_flags(argv: list[str]) -> list[str]:
    """``name=value`` arguments as ``--name value`` (so ``pipeline=coral`` works like a streamflow override)."""
    flags: list[str] = []
    for arg in argv:
        name, equals, value = arg.partition("=")
        if equals and not arg.startswith("-"):
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
            xs, ys = zip(*r["tokens_series"])
            left.plot(xs, ys, label=f"{r['system']} ({r['config']})", linewidth=1)
        if r["latency_cdf"]:
            xs, ys = zip(*r["latency_cdf"])
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
