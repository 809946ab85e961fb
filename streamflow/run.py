"""Run a pipeline: ``python -m streamflow.run PIPELINE.py [key=value ...]`` or ``streamflow.run(...)``.

Everything that can be wrong with the config, the pipeline or the input is checked
before Ray starts, and reported in one line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec

from streamflow.attempts import RunAttempt, earlier_totals, refuse_if_running
from streamflow.cluster import connect, wait_for_cluster
from streamflow.config import RunConfig, compose
from streamflow.errors import (
    ClaimLost,
    ConfigError,
    Interrupted,
    OverErrorBudget,
    RunError,
    SetupError,
    StreamflowError,
)
from streamflow.flow import Flow
from streamflow.io.source import InputPlan, plan_input
from streamflow.manifest import write_manifest
from streamflow.pipeline import Pipeline, load_pipeline
from streamflow.quality import measure_quality
from streamflow.result import RunResult
from streamflow.resume import (
    RUN_RECORD,
    Committed,
    check_resume,
    committed_parts,
    drop_errors,
    has_record,
    read_committed,
    resume_dir,
    write_run_record,
)
from streamflow.serve import wait_for_published
from streamflow.services.engines.llamacpp import check_llamacpp
from streamflow.services.llm import LLMClient

__all__ = ["EXIT_OVER_ERROR_BUDGET", "main", "prepare", "run"]

log = logging.getLogger("streamflow")

EXIT_OVER_ERROR_BUDGET = 3
"""The exit status of a run the error budget stopped early (``errors.*``): most of its recent rows failed."""

USAGE = """\
usage: python -m streamflow.run PIPELINE.py [key=value ...]

Runs PIPELINE.py row by row on Ray and writes Parquet under
<output.dir>/<pipeline>/<run_id>/data/, then prints a summary.

Overrides use Hydra's syntax (key=value, lists as [a,b]). The main knobs:
  input.path=URL            input: fsspec URL, directory or glob (Parquet, JSONL)
  input.partitions=N        input readers in parallel (default 4)
  limit=N                   only the first N rows
  max_inflight=N            rows in the system at once (default 1024)
  mode=batch batch.size=N   the Ray Data map_batches baseline instead of row mode
  operators.STEP.replicas=N actors hosting STEP (default: the pipeline's)
  operators.STEP.concurrency=N  rows one replica works on at once
  operators.STEP.fuse=false STEP gets actors of its own (neighbouring steps with equal replicas and
                            CPUs share actors by default)
  llm.base_url=URL llm.model=NAME   use an OpenAI-compatible server instead of the simulator
  llm.sim.time_scale=X      simulator speed (1.0 = real-time latencies)
  output.dir=DIR            where runs are written (default outputs)
  params.NAME=VALUE         the pipeline's own parameters
  run_id=NAME seed=N progress=auto|bar|log|off ray.address=auto
  errors.max_share=X        stop early when more than this share of the last errors.window (200)
                            finished rows failed (exit 3); 1: never
  resume=RUN_DIR            continue a stopped run: skip rows already in RUN_DIR/data, add new parts
                            (also --resume RUN_DIR)
  retry_errors=true         with resume: rerun only the rows whose status is error:* (also --retry-errors)
  resume=auto run_id=NAME   continue NAME's directory if it holds data, else start it
  cluster=slurm             as the driver of a slurm/streamflow.sbatch job (docs/slurm.md)
  llm.endpoints_dir=DIR     LLM servers published by python -m streamflow.serve (slurm/llm.sbatch)

All knobs and their defaults: streamflow/conf/config.yaml and the pipeline's DEFAULTS.
"""


def prepare(
    pipeline: str | Path | Flow | ModuleType, overrides: Sequence[str] | Mapping[str, Any] = ()
) -> tuple[Flow, RunConfig, Any, InputPlan, Pipeline]:
    """Compose the config, build the flow and plan the input, without starting anything."""
    spec = load_pipeline(pipeline)
    draft = spec.build(spec.default_params()).validate()
    defaults: dict[str, Any] = {
        **spec.defaults,
        "pipeline": draft.name,
        "operators": {
            name: {
                "replicas": step.replicas,
                "concurrency": step.concurrency,
                "num_cpus": step.num_cpus,
                "fuse": step.fuse,
            }
            for name, step in draft.steps.items()
        },
        "params": msgspec.to_builtins(spec.default_params()),
    }
    for name, knobs in spec.defaults.get("operators", {}).items():  # knob by knob: the others keep the flow's
        defaults["operators"].setdefault(name, {}).update(knobs)
    cfg = compose(defaults, _as_overrides(overrides))
    params = spec.params(cfg.params)
    flow = spec.build(params).validate()
    unknown = sorted(set(cfg.operators) - set(flow.steps))
    if unknown:
        msg = f"config: operators.{unknown[0]} names no step of {flow.name!r}; its steps: {', '.join(flow.steps)}."
        raise ConfigError(msg)
    plan = plan_input(
        cfg.input.path,
        format=cfg.input.format,
        partitions=cfg.input.partitions,
        limit=cfg.limit,
        requires=flow.requires,
        id_column=cfg.input.id_column,
        storage_options=cfg.input.storage_options,
    )
    return flow, cfg, params, plan, spec


def run(pipeline: str | Path | Flow | ModuleType, overrides: Sequence[str] | Mapping[str, Any] = ()) -> RunResult:
    """Run a pipeline (file path, module or Flow) with config overrides; returns the result.

    >>> from streamflow.testing import read_output  # doctest: +SKIP
    >>> result = run("pipelines/natural_reasoning.py", ["limit=100"])  # doctest: +SKIP
    >>> read_output(result).height  # doctest: +SKIP
    100
    """
    flow, cfg, params, plan, spec = prepare(pipeline, overrides)
    run_dir, resuming = _run_dir(cfg, plan, flow.name)
    location_key = "resume" if resuming and cfg.resume != "auto" else "output.dir"
    _check_writable(run_dir, location_key)
    if resuming:
        refuse_if_running(run_dir, cfg.output.claim_stale_s)
    if cfg.llm.endpoints_dir:
        urls = wait_for_published(cfg.llm.endpoints_dir, cfg.cluster.wait_s)
        log.info("llm.endpoints_dir: %d endpoints: %s", len(urls), ", ".join(urls))
        cfg = msgspec.structs.replace(cfg, llm=msgspec.structs.replace(cfg.llm, endpoints=urls))
    if cfg.llm.uses_external or cfg.llm.models:
        asyncio.run(_check_llm(cfg))
    if cfg.llm.backend == "llamacpp":
        check_llamacpp(cfg.llm.model, cfg.llm.model_path)
    attempt = RunAttempt(run_dir)
    try:
        attempt.begin()  # claims data/ before reading what is committed: writers of a killed run stop here
    except OSError as exc:  # what the checks above cannot see: /proc, a full disk, a file system that refuses
        msg = f"config: {location_key}: cannot write {run_dir}: {exc.strerror or exc}; choose another directory."
        raise ConfigError(msg) from None
    try:
        result = _attempt(flow, cfg, params, plan, spec, run_dir, resuming, attempt)
    except BaseException as exc:
        attempt.end(_ended(exc))
        raise
    attempt.end("finished")
    return result


def _attempt(
    flow: Flow,
    cfg: RunConfig,
    params: Any,
    plan: InputPlan,
    spec: Pipeline,
    run_dir: str,
    resuming: bool,
    attempt: RunAttempt,
) -> RunResult:
    """One attempt at the run in ``run_dir``, which ``attempt`` holds: run the rows not committed yet."""
    data_dir = os.path.join(run_dir, "data")
    if not os.path.exists(os.path.join(run_dir, RUN_RECORD)):  # a resume keeps the record of the first start
        write_run_record(run_dir, cfg, plan, flow.name)
    committed = Committed()
    if resuming:
        if cfg.retry_errors:
            log.info(
                "retry_errors: removed %d error rows from the committed parts", drop_errors(data_dir, plan.id_column)
            )
        committed = read_committed(data_dir, plan.id_column)
        log.info("resume: %d input rows already committed in %s are skipped", len(committed.ids), data_dir)
    started_at = time.time()
    started_ray = connect(cfg)
    try:
        shape = wait_for_cluster(cfg.cluster)
        if cfg.mode == "batch":
            from streamflow.runtime.batch import run_batches as run_mode
        else:
            from streamflow.runtime.row.driver import run_rows as run_mode

        recipe = spec.recipe(params)
        cfg = _with_run_cache(cfg, run_dir)
        result = asyncio.run(run_mode(flow, recipe, cfg, plan, run_dir, skip=committed.ids, attempt=attempt))
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    attempt.report(result.rows_done, result.usage)
    result = committed.merged(result)
    result = msgspec.structs.replace(
        result,
        quality=measure_quality(spec.metrics, result.files),
        attempt=attempt.number,
        earlier=earlier_totals(attempt.earlier),
    )
    write_manifest(run_dir, cfg, plan, result, pipeline_source=spec.source, started_at=started_at, cluster=shape)
    if not result.balanced:
        msg = f"ledger does not add up: read {result.rows_read}, finished {result.rows_out} ({result.statuses})."
        raise RunError(msg)
    return result


def _with_run_cache(cfg: RunConfig, run_dir: str) -> RunConfig:
    """``cfg`` with the LLM response cache in ``run_dir`` (one file per host) unless ``llm.cache.path`` names one."""
    cache = cfg.llm.cache
    if not cache.enabled or cache.path is not None:
        return cfg
    cache = msgspec.structs.replace(cache, path=os.path.join(run_dir, "llm-cache", "{host}.sqlite"))
    return msgspec.structs.replace(cfg, llm=msgspec.structs.replace(cfg.llm, cache=cache))


def _ended(exc: BaseException) -> str:
    """How an attempt that raised ``exc`` ended, for its record."""
    if isinstance(exc, (Interrupted, OverErrorBudget, ClaimLost)):
        return str(exc).split(";", 1)[0]
    if isinstance(exc, KeyboardInterrupt):
        return "stopped by SIGINT"
    return f"failed: {type(exc).__name__}: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status.

    0 finished, 1 run failed, 2 refused before any row, 3 stopped early by the error budget, 128+N signal N.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pipeline = args[0]
    try:
        overrides = _flags_to_overrides(args[1:])
        result = run(pipeline, overrides)
    except (ConfigError, SetupError) as exc:  # both found before any row was admitted
        print(f"streamflow: error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"streamflow: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except OverErrorBudget as exc:
        print(f"streamflow: {exc}", file=sys.stderr)
        return EXIT_OVER_ERROR_BUDGET
    except KeyboardInterrupt:  # Ctrl-C while starting (before any row) or a second one while committing
        print("streamflow: stopped by SIGINT; rows not committed run again on resume", file=sys.stderr)
        return 128 + signal.SIGINT
    except StreamflowError as exc:
        print(f"streamflow: run failed: {exc}", file=sys.stderr)
        return 1
    from streamflow.summary import print_summary

    print_summary(result)
    return 0


def _flags_to_overrides(args: Sequence[str]) -> list[str]:
    """Accept ``--resume DIR``, ``--resume=DIR`` and ``--retry-errors`` beside Hydra's ``key=value``."""
    overrides: list[str] = []
    rest = iter(args)
    for arg in rest:
        if arg == "--resume":
            value = next(rest, None)
            if value is None:
                raise ConfigError("config: --resume needs a run directory: --resume outputs/<pipeline>/<run_id>")
            overrides.append(f"resume={value}")
        elif arg.startswith("--resume="):
            overrides.append(f"resume={arg.removeprefix('--resume=')}")
        elif arg == "--retry-errors":
            overrides.append("retry_errors=true")
        elif arg.startswith("--"):
            raise ConfigError(
                f"config: unknown option {arg!r}; options are --resume DIR and --retry-errors, the rest is key=value"
            )
        else:
            overrides.append(arg)
    return overrides


async def _check_llm(cfg: RunConfig) -> None:
    """Reach every configured external endpoint once, so a wrong URL fails before Ray starts."""
    services = dict(cfg.llm.models)
    if cfg.llm.uses_external:
        services[cfg.llm.model] = cfg.llm.urls()
    for model, urls in services.items():
        client = LLMClient(urls, model=model, api_key=cfg.api_key())
        try:
            await client.check()
        finally:
            await client.close()


def _run_dir(cfg: RunConfig, plan: InputPlan, pipeline: str) -> tuple[str, bool]:
    """The run directory and whether this run continues it (``resume=DIR``, or ``resume=auto`` finding data)."""
    if cfg.resume is not None and cfg.resume != "auto":
        run_dir = resume_dir(cfg.resume)
        check_resume(run_dir, cfg, plan, pipeline)
        return run_dir, True
    run_id = cfg.run_id or time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)
    run_dir = os.path.abspath(os.path.join(cfg.output.dir, pipeline, run_id))
    if not os.path.exists(os.path.join(run_dir, "data")):
        return run_dir, False
    if cfg.resume == "auto":
        if not has_record(run_dir) and not committed_parts(os.path.join(run_dir, "data")):
            return run_dir, False  # an attempt killed before it recorded its start: nothing to continue
        resume_dir(run_dir)
        check_resume(run_dir, cfg, plan, pipeline)
        log.info("resume=auto: continuing run %s", run_dir)
        return run_dir, True
    msg = f"run directory {run_dir} already holds data; choose another run_id or output.dir, or resume={run_dir}."
    raise ConfigError(msg)


def _check_writable(run_dir: str, key: str) -> None:
    """Refuse a run directory this process cannot create or write, before anything starts (nothing is created)."""
    existing = run_dir
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        msg = f"config: {key}: {existing} is a file, not a directory; point {key} at a directory."
        raise ConfigError(msg)
    if not os.access(existing, os.W_OK | os.X_OK):
        read_only = os.statvfs(existing).f_flag & os.ST_RDONLY
        why = "is on a read-only file system" if read_only else "is not writable by this user"
        msg = f"config: {key}: {existing} {why}; choose a directory this user can write to."
        raise ConfigError(msg)


def _as_overrides(overrides: Sequence[str] | Mapping[str, Any]) -> list[str]:
    if isinstance(overrides, Mapping):
        return [f"{key}={_hydra_value(value)}" for key, value in overrides.items()]
    if isinstance(overrides, str):
        return [overrides]
    return list(overrides)


def _hydra_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


class _CallableModule(ModuleType):
    """Makes ``streamflow.run(...)`` call ``run`` while ``python -m streamflow.run`` runs ``main``."""

    def __call__(
        self, pipeline: str | Path | Flow | ModuleType, overrides: Sequence[str] | Mapping[str, Any] = ()
    ) -> RunResult:
        return run(pipeline, overrides)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
