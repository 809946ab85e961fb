"""Simulated OpenAI-compatible LLM server with a vLLM continuous-batching latency model (no GPU, no Ray).

Only ``server_actors``, which runs simulators as Ray actors for a run, imports Ray; this package does not.

Example::

    server = SimServer(SimConfig(time_scale=0.01))
    url = await server.start()  # http://127.0.0.1:PORT/v1, serving model "sim-8b"
    ...
    await server.stop()
"""

from streamflow.services.sim.config import SimConfig
from streamflow.services.sim.profile import PROFILES, LatencyProfile
from streamflow.services.sim.server import SimServer

__all__ = ["PROFILES", "LatencyProfile", "SimConfig", "SimServer"]
