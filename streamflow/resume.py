"""Resuming a run: refuse a config that would change its results, read what is committed, retry errors.

A resumed run continues in the same run directory. What is committed is what the visible
``part-*.parquet`` files hold (parts are written under hidden temporary names and renamed
when complete, so a crash never leaves a half part under that pattern); those rows are
skipped at admission and new parts are numbered after them. ``run.json``, written when a run
starts, records what its results depend on, so a run that crashed before writing
``manifest.json`` can still be checked.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from streamflow.config import RunConfig
from streamflow.errors import ConfigError
from streamflow.io.parts import write_part
from streamflow.io.source import InputPlan
from streamflow.result import RunResult

__all__ = [
    "Committed",
    "check_resume",
    "committed_parts",
    "drop_errors",
    "has_record",
    "read_committed",
    "resume_dir",
    "write_run_record",
]

RUN_RECORD = "run.json"
MANIFEST = "manifest.json"
_PART_PREFIX = "part-"
_PART_SUFFIX = ".parquet"


@dataclass
class Committed:
    """The rows a run directory already holds.

    ``ids`` are the input row ids with output (a fanned-out row counts once, by its root id);
    it is O(rows committed) ids, a few tens of bytes each, held once by the driver only.
    """

    ids: frozenset[str] = frozenset()
    statuses: Counter[str] = field(default_factory=Counter)
    files: list[str] = field(default_factory=list)

    def merged(self, result: RunResult) -> RunResult:
        """``result`` of the rows run now, with the committed ones added: counts over the whole run."""
        statuses = Counter(self.statuses)
        statuses.update(result.statuses)
        return msgspec.structs.replace(
            result,
            rows_read=result.rows_read + len(self.ids),
            rows_done=result.rows_done + len(self.ids),
            statuses=dict(statuses),
            files=sorted({*self.files, *result.files}),
            committed_before=len(self.ids),
        )


def resume_dir(path: str) -> str:
    """The absolute run directory ``resume=path`` names; ConfigError if it is not one."""
    run_dir = os.path.abspath(path)
    if not os.path.isdir(os.path.join(run_dir, "data")):
        msg = (
            f"config: resume={path!r} is not a run directory (no data/ folder in it); "
            "pass the directory of an earlier run, <output.dir>/<pipeline>/<run_id>."
        )
        raise ConfigError(msg)
    if not has_record(run_dir):
        msg = f"config: resume={path!r} has neither {MANIFEST} nor {RUN_RECORD}, so its config cannot be checked; start a new run."
        raise ConfigError(msg)
    return run_dir


def has_record(run_dir: str) -> bool:
    """True when ``run_dir`` holds what its config can be checked against (manifest.json or run.json)."""
    return any(os.path.exists(os.path.join(run_dir, name)) for name in (MANIFEST, RUN_RECORD))


def write_run_record(run_dir: str, cfg: RunConfig, plan: InputPlan, pipeline: str) -> str:
    """Write ``run.json`` (pipeline, config, input fingerprint) atomically; returns its path."""
    path = os.path.join(run_dir, RUN_RECORD)
    temp = os.path.join(run_dir, f".{RUN_RECORD}.tmp")
    with open(temp, "w") as handle:
        json.dump(_record(cfg, plan, pipeline), handle, indent=2, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    return path


def check_resume(run_dir: str, cfg: RunConfig, plan: InputPlan, pipeline: str) -> None:
    """Refuse, in one line, a resume whose config would give different results than the run it continues.

    Compared: pipeline, input fingerprint and id column, seed, limit and params. Knobs that only
    change speed (max_inflight, replicas, partitions, part_rows, LLM endpoints...) may change.
    """
    name = MANIFEST if os.path.exists(os.path.join(run_dir, MANIFEST)) else RUN_RECORD
    try:
        with open(os.path.join(run_dir, name)) as handle:
            previous = _determinants(json.load(handle))
    except (OSError, ValueError) as exc:
        msg = f"config: resume={run_dir}: cannot read its {name} ({exc}); start a new run."
        raise ConfigError(msg) from exc
    current = _determinants(json.loads(json.dumps(_record(cfg, plan, pipeline), default=str)))
    for key, old in previous.items():
        new = current[key]
        if old != new:
            key, old, new = _first_difference(key, old, new)
            msg = (
                f"config: resume={run_dir} was run with {key}={old!r}, this run has {key}={new!r}; "
                f"a resumed run must keep {key} (set it back, or start a new run without resume)."
            )
            raise ConfigError(msg)


def read_committed(data_dir: str, id_column: str | None) -> Committed:
    """The ids and statuses held by the visible parts in ``data_dir`` (two columns read per part)."""
    ids: set[str] = set()
    statuses: Counter[str] = Counter()
    parts = committed_parts(data_dir)
    for path in parts:
        table = _read(path, ["row_id", "status"])
        ids.update(_root(row_id, id_column) for row_id in table.column("row_id").to_pylist())
        statuses.update(table.column("status").to_pylist())
    return Committed(ids=frozenset(ids), statuses=statuses, files=parts)


def drop_errors(data_dir: str, id_column: str | None) -> int:
    """Remove the rows whose status is ``error:*`` from the committed parts; returns how many.

    A fanned-out input row with one failed piece loses all its pieces, so rerunning it
    cannot duplicate the others.
    """
    parts = committed_parts(data_dir)
    failed: set[str] = set()
    for path in parts:
        table = _read(path, ["row_id", "status"])
        for row_id, status in zip(table.column("row_id").to_pylist(), table.column("status").to_pylist(), strict=True):
            if status.startswith("error:"):
                failed.add(_root(row_id, id_column))
    if not failed:
        return 0
    removed = 0
    for path in parts:
        table = _read(path, None)
        keep = pa.array([_root(row_id, id_column) not in failed for row_id in table.column("row_id").to_pylist()])
        kept = table.filter(keep)
        if kept.num_rows == table.num_rows:
            continue
        removed += table.num_rows - kept.num_rows
        # The part is replaced under its own name by one atomic rename (or removed, also atomic),
        # rather than written as a new part before the old one is deleted: a crash in between
        # would then leave the kept rows twice. Here a crash leaves either the old part (its error
        # rows still committed, so the next retry_errors drops them again) or the new one (they are
        # gone, so they are not committed and the next resume reruns them). The rows removed are
        # exactly the ones about to be rerun, so no row is duplicated or lost either way.
        if kept.num_rows:
            write_part(kept, path)
        else:
            os.remove(path)
    return removed


def _record(cfg: RunConfig, plan: InputPlan, pipeline: str) -> dict[str, Any]:
    """What ``run.json`` holds; the same keys as ``manifest.json``, so either can be checked."""
    return {
        "pipeline": pipeline,
        "config": cfg.to_dict(),
        "input": {"files": len(plan.files), "rows": plan.total_rows, "fingerprint": plan.fingerprint},
    }


def _determinants(record: Mapping[str, Any]) -> dict[str, Any]:
    """The values a run's output depends on, from a ``manifest.json`` or ``run.json``."""
    config = record.get("config", {})
    return {
        "pipeline": record.get("pipeline"),
        "input fingerprint": record.get("input", {}).get("fingerprint"),
        "input.id_column": config.get("input", {}).get("id_column"),
        "seed": config.get("seed"),
        "limit": config.get("limit"),
        "llm.model": config.get("llm", {}).get("model"),
        "params": config.get("params", {}),
    }


def _first_difference(key: str, old: Any, new: Any) -> tuple[str, Any, Any]:
    """Narrow a difference in ``params`` to the first parameter that differs."""
    if isinstance(old, dict) and isinstance(new, dict):
        for name in sorted({*old, *new}):
            if old.get(name) != new.get(name):
                return f"{key}.{name}", old.get(name), new.get(name)
    return key, old, new


def committed_parts(data_dir: str) -> list[str]:
    """The committed parts: visible ``part-*.parquet`` files only, never temporary ones."""
    return sorted(
        os.path.join(data_dir, name)
        for name in os.listdir(data_dir)
        if name.startswith(_PART_PREFIX) and name.endswith(_PART_SUFFIX)
    )


def _read(path: str, columns: list[str] | None) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowException) as exc:
        msg = f"committed part {path!r} cannot be read ({exc}); move it out of data/ to rerun its rows."
        raise ConfigError(msg) from exc


def _root(row_id: str, id_column: str | None) -> str:
    """The input id a committed row belongs to: fan-out pieces are ``<root>/<index>``.

    Default ids (``<file>:<offset>``) never hold a ``/``; ids from ``input.id_column`` are taken
    whole, since their own ``/`` cannot be told from a fan-out suffix.
    """
    return row_id.split("/", 1)[0] if id_column is None else row_id
