"""Simulated OpenAI-compatible LLM server with a vLLM continuous-batching latency model (no GPU, no Ray).

Only ``server_actors``, which runs simulators as Ray actors for a run, imports Ray; this package does not.

Example::

    server = SimServer(SimConfig(time_scale=0.01))
    url = await server.start()  # http://127.0.0.1:PORT/v1, serving model "sim-8b"
    ...
    await server.stop()
"""

from typing import TYPE_CHECKING, Any

from streamflow.services.sim.profile import PROFILES, LatencyProfile
from streamflow.services.sim.server_config import SimConfig

if TYPE_CHECKING:
    from streamflow.services.sim.server import SimServer

__all__ = ["PROFILES", "LatencyProfile", "SimConfig", "SimServer"]


def __getattr__(name: str) -> Any:
    # The server pulls in aiohttp's web stack (~0.15 s); a run's config and actors only need the profiles.
    if name == "SimServer":
        from streamflow.services.sim.server import SimServer

        return SimServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
