"""One system of a comparison as a command of its own: ``python -m bench.systems SYSTEM PIPELINE ...``.

Each system runs in a fresh process, the way a user runs it, so its end-to-end time includes
Python and Ray start-up, and the benchmark counts the CPU of the process and of everything it
started (Ray's daemons and workers, sandboxes) from ``os.times`` of its reaped children. The
result goes to ``--json`` as one ``SystemRun``.

- ``plain``: the same operators in one process, a semaphore of ``--inflight`` rows, no Ray;
- ``streamflow``: ``streamflow.run`` with ``--overrides`` (row or batch mode);
- ``ray-data-llm``: NaturalReasoning with ``ray.data.llm`` HTTP processors, as documented.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

import streamflow
from streamflow.execution import new_row, run_row, step_contexts, uses_sandbox
from streamflow.histogram import LatencyHistogram
from streamflow.io.source import BadInput, Unreadable, plan_input, read_unit
from streamflow.message import Message
from streamflow.pipeline import load_pipeline
from streamflow.services.llm import LLMClient
from streamflow.services.sandbox import SandboxClient, SandboxPool, SandboxSettings

__all__ = ["SystemRun", "main"]

REPO = Path(__file__).resolve().parents[1]


class SystemRun(msgspec.Struct):
    """What one system did: rows, their latency, the pipeline's quality figures, when it finished."""

    rows: int
    ok: int
    latency: LatencyHistogram
    quality: dict[str, float] = {}
    finished_at: float = 0.0
    """Epoch seconds when the last row was written (or, for the plain loop, done)."""
    phases_s: dict[str, float] = {}


def plain_loop(
    pipeline: Path,
    urls: list[str],
    inflight: int,
    limit: int,
    seed: int,
    *,
    input_path: str | None = None,
    sandbox: SandboxSettings | None = None,
) -> tuple[int, int, LatencyHistogram, dict[str, float]]:
    """The same flow in one process: a semaphore of ``inflight`` rows, nothing else."""
    spec = load_pipeline(pipeline)
    params = spec.default_params()
    flow = spec.build(params).validate()
    plan = plan_input(input_path or str(spec.defaults["input"]["path"]), limit=limit, requires=flow.requires)
    histogram = LatencyHistogram()

    async def go() -> tuple[int, list[dict[str, Any]]]:
        client = LLMClient(urls, model="sim-8b")
        pool = SandboxPool(sandbox or SandboxSettings()) if uses_sandbox(flow) else None
        sandboxes = SandboxClient({pool.name: pool}) if pool is not None else None
        contexts = step_contexts(flow, client, params, sandbox=sandboxes)
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


def ray_data_llm(pipeline: Path, url: str, inflight: int, limit: int) -> tuple[int, int]:
    """NaturalReasoning with ``ray.data.llm`` HTTP processors, one per LLM step, as documented."""
    import ray
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("system", choices=["plain", "streamflow", "ray-data-llm"])
    parser.add_argument("pipeline", type=Path)
    parser.add_argument("--endpoints", nargs="+", required=True, help="simulated server URLs (…/v1)")
    parser.add_argument("--inflight", type=int, default=256)
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs", help="streamflow: output.dir")
    parser.add_argument("--input", help="plain: the input (default: the pipeline's sample); streamflow: use input.path")
    parser.add_argument("--sandbox-size", type=int, help="plain: sandboxes in its pool (default: sandbox.size's)")
    parser.add_argument("--json", required=True)
    parser.add_argument("--overrides", nargs="*", default=[], help="streamflow: config overrides (key=value)")
    args = parser.parse_args(argv)
    if args.system == "plain":
        sandbox = SandboxSettings(size=args.sandbox_size) if args.sandbox_size else None
        rows, ok, latency, quality = plain_loop(args.pipeline, args.endpoints, args.inflight, args.limit, args.seed,
                                                input_path=args.input, sandbox=sandbox)  # fmt: skip
        run = SystemRun(rows, ok, latency, quality, finished_at=time.time())
    elif args.system == "ray-data-llm":
        import ray

        pythonpath = os.pathsep.join([str(REPO), str(args.pipeline.parent), os.environ.get("PYTHONPATH", "")])
        # Logical CPUs above the physical count: Ray Data's LLM stages reserve a CPU per actor and
        # would otherwise wait forever for one on a 2-core machine. The workload is I/O-bound.
        ray.init(num_cpus=max(8, os.cpu_count() or 1), include_dashboard=False, logging_level="WARNING",
                 runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})  # fmt: skip
        rows, ok = ray_data_llm(args.pipeline, args.endpoints[0], args.inflight, args.limit)
        run = SystemRun(rows, ok, LatencyHistogram(), finished_at=time.time())
    else:
        endpoints = "[" + ",".join(args.endpoints) + "]"
        overrides = [f"llm.endpoints={endpoints}", "llm.model=sim-8b", f"output.dir={args.out}", "progress=off",
                     f"seed={args.seed}", *args.overrides]  # fmt: skip
        result = streamflow.run(str(args.pipeline), overrides)
        run = SystemRun(result.rows_read, result.ok, result.latency, result.quality, time.time(), result.phases_s)
    Path(args.json).write_bytes(msgspec.json.encode(run))


if __name__ == "__main__":
    main()
