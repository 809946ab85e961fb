"""The Ray cluster a run works on: connect (or start a local one), then wait until it is big enough.

On SLURM the nodes of a job, and worker jobs added later, join the cluster while the driver
is already up; starting before they are there would place every actor on the first node.
So the run waits for ``cluster.nodes`` alive nodes (and ``cluster.cpus`` / ``cluster.gpus``)
and gives up after ``cluster.wait_s`` with a message naming what is missing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import msgspec

from streamflow.config import ClusterConfig, RunConfig
from streamflow.errors import SetupError

__all__ = ["ClusterShape", "connect", "kill_actors", "wait_for_cluster"]

log = logging.getLogger(__name__)

REPORT_EVERY_S = 30.0

ROW_MODE_MODULES = ("streamflow.runtime.row.actor", "streamflow.runtime.row.sink")
"""What every row-mode actor imports: a Ray this run starts imports them in its idle worker
processes while the driver still connects, so actors do not start by importing them."""


class ClusterShape(msgspec.Struct, frozen=True):
    """How big a Ray cluster is right now: alive nodes and the CPUs and GPUs they offer."""

    nodes: int
    cpus: float
    gpus: float

    @classmethod
    def of(cls, nodes: Sequence[dict[str, Any]]) -> ClusterShape:
        """The shape of ``ray.nodes()``'s answer (dead nodes do not count)."""
        alive = [node for node in nodes if node.get("Alive")]
        return cls(
            nodes=len(alive),
            cpus=sum(node.get("Resources", {}).get("CPU", 0.0) for node in alive),
            gpus=sum(node.get("Resources", {}).get("GPU", 0.0) for node in alive),
        )

    def missing(self, want: ClusterConfig) -> str | None:
        """What this shape lacks compared to ``want``, in words; None when it is enough."""
        gaps = [
            f"{have:g} of {need:g} {what}"
            for have, need, what in (
                (self.nodes, want.nodes, "nodes"),
                (self.cpus, want.cpus, "CPUs"),
                (self.gpus, want.gpus, "GPUs"),
            )
            if have < need
        ]
        return ", ".join(gaps) or None


def connect(cfg: RunConfig) -> bool:
    """Connect to ``ray.address``, else to ``$RAY_ADDRESS``, else start a local runtime; True if this call started Ray.

    Ray's own default without an address would join whatever ``ray start`` left running on the
    machine, which a run that was told nothing should not do.
    """
    import ray

    if ray.is_initialized():
        return False
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS") or "local"
    local = address == "local"
    if not local:
        log.info("joining the Ray cluster at %s", address)
    own_row_mode = local and cfg.mode == "row"
    preload = {"preload_python_modules": list(ROW_MODE_MODULES)} if own_row_mode else None
    with (
        _without_autoscaler_monitor() if local else contextlib.nullcontext(),
        _without_api_server() if own_row_mode else contextlib.nullcontext(),
        _prompt_node_registration() if local else contextlib.nullcontext(),
        _quiet_token_auth_notice(),
    ):
        ray.init(
            address=address,
            num_cpus=cfg.ray.num_cpus if local else None,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=True,
            _system_config=preload,
        )
    return True


@contextlib.contextmanager
def _quiet_token_auth_notice() -> Iterator[None]:
    """Within, Ray's notice that it turned on token authentication for a new local runtime is not shown.

    Ray 2.60 prints it at every start; the run keeps the default (``RAY_AUTH_MODE=disabled`` in the
    environment turns it off) and its first line of output is its own.
    """
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")

    def keep(record: logging.LogRecord) -> bool:
        return "Token authentication is enabled" not in record.getMessage()

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


@contextlib.contextmanager
def _without_autoscaler_monitor() -> Iterator[None]:
    """Within, ``ray.init`` starts its head node without Ray's autoscaler monitor (``ray start --no-monitor``).

    Nothing autoscales a Ray that a run started on its own machine, and the monitor outlives
    ``ray.shutdown``'s one-second grace on SIGTERM: every run waited for it (README: Performance, Start-up).
    Ray does not offer the switch to ``ray.init``; if its parameters move, Ray starts as usual.
    """
    try:
        from ray._private import parameter
    except ImportError:
        yield
        return

    class HeadWithoutMonitor(parameter.RayParams):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("no_monitor", True)
            super().__init__(*args, **kwargs)

    with _replaced(parameter, "RayParams", HeadWithoutMonitor):
        yield


@contextlib.contextmanager
def _without_api_server() -> Iterator[None]:
    """Within, ``ray.init`` starts its head node without Ray's API server (the dashboard process).

    ``ray.init`` waits until that process has started and published its address, even with
    ``include_dashboard=False``: a second of CPU on 2 cores, on the way to the first row. Row mode
    uses none of what it serves (the state API, jobs); batch mode keeps it, because Ray Data
    asks it for the state of its tasks. If Ray's internals move, Ray starts as usual.
    """
    try:
        from ray._private import node
    except ImportError:
        yield
        return
    if not hasattr(node.Node, "start_api_server"):
        yield
        return

    def skip(self: Any, **_: Any) -> None:
        self._webui_url = None

    with _replaced(node.Node, "start_api_server", skip):
        yield


@contextlib.contextmanager
def _prompt_node_registration(poll_s: float = 0.02, patience_s: float = 10.0) -> Iterator[None]:
    """Within, ``ray.init`` sees its new node registered within ``poll_s`` of it, not up to a second later.

    ``ray.init`` asks the GCS for the node it started, and while its raylet has not registered,
    Ray asks again a second later (a fixed sleep in its C++ client): ``ray.init`` took about 2.1
    or 3.1 s on 2 cores, depending on whether the raylet made it in time. Here the node table is
    read every ``poll_s`` first, so Ray's own question finds the node at once. If Ray's internals
    move, or the node takes longer than ``patience_s``, Ray waits as usual.
    """
    try:
        from ray._private import services, state
    except ImportError:
        yield
        return
    original = getattr(services, "get_node", None)
    client_options = getattr(services, "_get_gcs_client_options", None)
    if original is None or client_options is None:
        yield
        return

    def get_node(gcs_address: str, node_id: str) -> Any:
        try:
            table = state.GlobalState()
            table._initialize_global_state(client_options(gcs_address))
            deadline = time.monotonic() + patience_s
            while time.monotonic() < deadline and not any(n.get("NodeID") == node_id for n in table.node_table()):
                time.sleep(poll_s)
        except Exception as exc:  # Ray's own wait follows
            log.debug("could not watch the node table: %s: %s", type(exc).__name__, exc)
        return original(gcs_address, node_id)

    with _replaced(services, "get_node", get_node):
        yield


@contextlib.contextmanager
def _replaced(owner: Any, name: str, replacement: Any) -> Iterator[None]:
    """Within, ``owner.name`` is ``replacement`` (how the context managers above reach into Ray's start)."""
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)


def kill_actors(handles: Iterable[Any]) -> None:
    """Kill these actors for good (no restart), passing over those already gone."""
    import ray

    for handle in handles:
        try:
            ray.kill(handle)
        except Exception as exc:  # an actor that is already gone is fine
            log.debug("kill %s: %s", handle, exc)


def wait_for_cluster(
    want: ClusterConfig,
    *,
    nodes: Callable[[], Sequence[dict[str, Any]]] | None = None,
    poll_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ClusterShape:
    """Return the cluster's shape once it has what ``want`` asks for; SetupError after ``want.wait_s``."""
    if nodes is None:
        import ray

        nodes = ray.nodes
    started = clock()
    next_report = started
    while True:
        shape = ClusterShape.of(nodes())
        gap = shape.missing(want)
        if gap is None:
            size = "1 node" if shape.nodes == 1 else f"{shape.nodes} nodes"
            log.info("Ray cluster: %s, %g CPUs, %g GPUs", size, shape.cpus, shape.gpus)
            return shape
        waited = clock() - started
        if waited >= want.wait_s:
            msg = (
                f"the Ray cluster has {gap} after waiting {want.wait_s:g} s (cluster.wait_s); "
                "are the worker jobs still queued (squeue), or did their Ray workers fail to join (their logs)?"
            )
            raise SetupError(msg)
        if clock() >= next_report:
            log.info("waiting for the Ray cluster: %s so far (%.0f s of %g s)", gap, waited, want.wait_s)
            next_report = clock() + REPORT_EVERY_S
        sleep(poll_s)
