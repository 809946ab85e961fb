"""Run the simulated LLM server in the foreground: ``python -m streamflow.services.sim --port 8000``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

import msgspec

from streamflow.services.sim.profile import DEFAULT_PROFILE, PROFILES
from streamflow.services.sim.server import SimServer
from streamflow.services.sim.server_config import SimConfig

logger = logging.getLogger("streamflow.services.sim")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m streamflow.services.sim",
        description=(
            "OpenAI-compatible LLM server that answers like vLLM on a GPU (continuous-batching latency model, "
            "deterministic prompt-aware replies). Point any OpenAI client at the logged /v1 URL."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port, 0 for any free port (default: %(default)s)")
    parser.add_argument(
        "--profile",
        default=DEFAULT_PROFILE,
        choices=sorted(PROFILES),
        help="latency profile: model and GPU being imitated (default: %(default)s)",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="multiplier on all simulated durations: 1 = real time, 0.01 = 100x faster, 0 = no waiting "
        "(default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the reply content (default: %(default)s)")
    parser.add_argument(
        "--max-num-seqs", type=int, default=None, help="sequences served at once (default: the profile's)"
    )
    parser.add_argument(
        "--model",
        dest="models",
        action="append",
        help="model name to serve; repeat for several (default: sim-8b); other names get 404",
    )
    parser.add_argument(
        "--prefix-caching",
        action="store_true",
        help="skip the prefill of prompt prefixes computed recently, as vLLM V1 does by default",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default: %(default)s)")
    return parser


async def _serve(config: SimConfig, host: str, port: int) -> None:
    server = SimServer(config)
    await server.start(host, port)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    try:
        await stopping.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve until interrupted."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    served = {"models": args.models} if args.models else {}
    profile = PROFILES[args.profile]
    if args.max_num_seqs is not None:
        profile = msgspec.structs.replace(profile, max_num_seqs=args.max_num_seqs)
    config = SimConfig(
        profile=profile, time_scale=args.time_scale, seed=args.seed, prefix_caching=args.prefix_caching, **served
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config, args.host, args.port))
    logger.info("simulated LLM server stopped")


if __name__ == "__main__":
    main()
