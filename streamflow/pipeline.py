"""Loading a pipeline: a Python file (or module, or a ready Flow) that builds a Flow.

A pipeline file defines::

    class Params(msgspec.Struct):       # optional: the pipeline's own knobs (params.*)
        min_score: int = 3

    DEFAULTS = {"input": {"path": ...}}  # optional: config defaults (input path, operators...)

    def build(params: Params) -> Flow:   # required
        ...

    def metrics(data: polars.LazyFrame) -> dict[str, float]:  # optional: quality figures of
        ...                                                   # the output, for the summary

Ray workers rebuild the Flow from a ``Recipe``: the file's path and the parameters as
plain data. Shipping the built Flow instead would need cloudpickle to carry the file's
classes by value, which breaks for ``msgspec.Struct`` types defined there; the price is
that the file must be readable at the same path on every node (a shared file system,
as on SLURM clusters). A Flow built in a notebook or test is shipped pickled.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec

from streamflow.errors import ConfigError
from streamflow.flow import Flow

__all__ = ["Pipeline", "Recipe", "load_pipeline"]


@dataclass(frozen=True)
class Pipeline:
    """What the runner needs from a pipeline: how to build its Flow and its defaults."""

    build: Callable[[Any], Flow]
    params_type: type | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    flow: Flow | None = None
    metrics: Callable[[Any], Mapping[str, float]] | None = None
    """Quality figures computed from the output (a ``polars.LazyFrame``) after the run."""

    def default_params(self) -> Any:
        return self.params_type() if self.params_type is not None else {}

    def recipe(self, params: Any) -> Recipe:
        """How a worker rebuilds this pipeline's Flow with ``params``."""
        if self.flow is not None:
            return Recipe(flow=self.flow, params=params)
        return Recipe(path=self.source, params=msgspec.to_builtins(params))

    def params(self, data: Mapping[str, Any]) -> Any:
        """The pipeline's parameters from the config's ``params`` section."""
        if self.params_type is None:
            return dict(data)
        try:
            return msgspec.convert(dict(data), self.params_type)
        except msgspec.ValidationError as exc:
            msg = f"config: params: {exc}"
            raise ConfigError(msg) from exc


def load_pipeline(target: str | Path | Flow | ModuleType) -> Pipeline:
    """A ``Pipeline`` from a file path, an imported module or a Flow."""
    if isinstance(target, Flow):
        flow = target
        return Pipeline(build=lambda _params: flow, source=repr(flow), flow=flow)
    module = target if isinstance(target, ModuleType) else _import_file(Path(target))
    build = getattr(module, "build", None)
    if not callable(build):
        msg = (
            f"pipeline {module.__name__!r} ({getattr(module, '__file__', '?')}) has no build(params) -> Flow function."
        )
        raise ConfigError(msg)
    params_type = getattr(module, "Params", None)
    defaults = getattr(module, "DEFAULTS", {})
    metrics = getattr(module, "metrics", None)
    return Pipeline(
        build=build,
        params_type=params_type,
        defaults=defaults,
        source=getattr(module, "__file__", ""),
        metrics=metrics if callable(metrics) else None,
    )


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        why = "is a folder, not a file" if path.is_dir() else "does not exist"
        msg = f"pipeline file {str(path)!r} {why}; pass a path like pipelines/natural_reasoning.py."
        raise ConfigError(msg)
    name = f"streamflow_pipeline_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path.resolve())
    if spec is None or spec.loader is None:
        msg = f"pipeline file {str(path)!r} is not an importable Python file."
        raise ConfigError(msg)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Recipe:
    """What a worker needs to rebuild the Flow: a pipeline file and its params, or the Flow itself."""

    path: str | None = None
    params: Any = None
    flow: Flow | None = None

    def build(self) -> tuple[Flow, Any]:
        """The Flow and the typed params, built in this process."""
        if self.flow is not None:
            return self.flow, self.params
        spec = load_pipeline(self.path or "")
        params = spec.params(self.params or {})
        return spec.build(params).validate(), params
