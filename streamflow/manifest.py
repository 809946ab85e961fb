"""``manifest.json``: how a run's output was made (config, versions, commit, input, counts)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from importlib import metadata
from typing import Any

import msgspec

from streamflow.config import RunConfig
from streamflow.io.source import InputPlan
from streamflow.result import RunResult

__all__ = ["write_manifest"]

_PACKAGES = ("streamflow-rows", "ray", "msgspec", "pyarrow", "polars", "aiohttp", "hydra-core", "vllm", "sglang")


def write_manifest(
    run_dir: str,
    cfg: RunConfig,
    plan: InputPlan,
    result: RunResult,
    *,
    pipeline_source: str,
    started_at: float,
    cluster: msgspec.Struct | None = None,
) -> str:
    """Write the manifest atomically next to ``data/``; returns its path. ``started_at`` is a Unix time.

    ``cluster`` is the Ray cluster's shape when the run started (nodes, CPUs, GPUs).
    """
    events = os.path.join(run_dir, "events")
    manifest: dict[str, Any] = {
        "pipeline": result.pipeline,
        "pipeline_source": pipeline_source,
        "run_id": result.run_id,
        "config": cfg.to_dict(),
        "input": {"files": len(plan.files), "rows": plan.total_rows, "fingerprint": plan.fingerprint},
        "cluster": msgspec.to_builtins(cluster) if cluster is not None else None,
        "summary": result.summary(),
        "statuses": result.statuses,
        "quality": result.quality,
        "usage": {step: {f: getattr(u, f) for f in u.__struct_fields__} for step, u in result.usage.items()},
        "ledger_balanced": result.balanced,
        "files": [os.path.relpath(path, run_dir) for path in result.files],
        "timings": {
            "started_at": _iso(started_at),
            "finished_at": _iso(time.time()),
            "wall_s": round(result.wall_s, 3),
            **{f"{phase}_s": round(seconds, 3) for phase, seconds in result.phases_s.items()},
        },
        "events": {
            "dir": "events" if os.path.isdir(events) else None,
            "sample": cfg.events.sample if cfg.mode == "row" else 0.0,
            "files": len([name for name in os.listdir(events) if name.endswith(".parquet")])
            if os.path.isdir(events)
            else 0,
        },
        "versions": _versions(),
        "git_commit": _git_commit(pipeline_source),
    }
    path = os.path.join(run_dir, "manifest.json")
    temp = os.path.join(run_dir, ".manifest.json.tmp")
    with open(temp, "w") as handle:
        json.dump(manifest, handle, indent=2, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    return path


def _iso(unix: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _git_commit(near: str) -> str | None:
    where = os.path.dirname(os.path.abspath(near)) if near and os.path.exists(near) else os.getcwd()
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
