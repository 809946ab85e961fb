"""A stand-in for vLLM's and SGLang's OpenAI servers in tests: the same flags, simulated answers, no GPU.

Run as ``python fake_engine_server.py --model M --served-model-name S --host H --port P ...``
(``--model-path`` is accepted too); unknown engine flags are ignored. ``/health`` and the
OpenAI API are served by streamflow's simulator with ``time_scale=0``.

``--fake-mode`` (default: ``$FAKE_ENGINE_MODE`` or ``ok``) picks a failure to imitate:

- ``ok``: healthy at once, answers requests until SIGTERM.
- ``crash``: logs a few lines and an error, exits with code 3 (a model that fails to load).
- ``unhealthy``: ``/health`` answers 503 forever (an engine that never finishes warming up).
- ``silent``: accepts connections and never answers (vLLM while it loads: port bound, no HTTP).

``--fake-crash-marker PATH`` crashes only the first server to create PATH, so one replica of
several fails. ``--fake-pid-dir DIR`` records this pid as an empty file ``DIR/<pid>``;
``--fake-crash-after-pids N`` makes a crashing server wait until N servers recorded theirs, so a
test sees every replica started before one fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import time

from aiohttp import web

from streamflow.services.sim import SimConfig, SimServer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", "--model-path", dest="model", required=True)
    parser.add_argument("--served-model-name", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--tensor-parallel-size", "--tp-size", dest="tp", type=int, default=1)
    parser.add_argument("--fake-mode", default=os.environ.get("FAKE_ENGINE_MODE", "ok"),
                        choices=["ok", "crash", "unhealthy", "silent"])  # fmt: skip
    parser.add_argument("--fake-crash-marker", default=None)
    parser.add_argument("--fake-pid-dir", default=None)
    parser.add_argument("--fake-crash-after-pids", type=int, default=0)
    return parser


def _first_to_create(path: str) -> bool:
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


async def _until_sigterm() -> None:
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await stopping.wait()
    print("INFO fake engine: SIGTERM received, shutting down", flush=True)


async def _serve_ok(args: argparse.Namespace, served: str) -> None:
    server = SimServer(SimConfig(time_scale=0, models=[served]))
    await server.start(args.host, args.port)
    print(f"INFO fake engine: serving {served!r} on http://{args.host}:{args.port}", flush=True)
    try:
        await _until_sigterm()
    finally:
        await server.stop()


async def _serve_unhealthy(args: argparse.Namespace) -> None:
    app = web.Application()
    app.router.add_get("/health", lambda _: web.Response(status=503, text="warming up"))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    print("INFO fake engine: /health answers 503 forever", flush=True)
    try:
        await _until_sigterm()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    args, unknown = _parser().parse_known_args(argv)
    served = args.served_model_name or args.model
    if args.fake_pid_dir:
        open(os.path.join(args.fake_pid_dir, str(os.getpid())), "w").close()
    print(f"INFO fake engine: model={args.model} tp={args.tp} ignored flags={unknown}", flush=True)
    mode = args.fake_mode
    if args.fake_crash_marker is not None:
        mode = "crash" if _first_to_create(args.fake_crash_marker) else "ok"
    if mode == "crash":
        deadline = time.monotonic() + 60
        while args.fake_pid_dir and len(os.listdir(args.fake_pid_dir)) < args.fake_crash_after_pids:
            if time.monotonic() > deadline:
                sys.exit(f"fake engine: {args.fake_crash_after_pids} servers did not start within 60 s")
            time.sleep(0.05)
        print("INFO fake engine: loading weights", flush=True)
        print("RuntimeError: CUDA out of memory (fake engine crash)", file=sys.stderr, flush=True)
        sys.exit(3)
    if mode == "silent":
        listener = socket.create_server((args.host, args.port))
        print("INFO fake engine: port bound, never answering", flush=True)
        while listener:
            time.sleep(3600)
    if mode == "unhealthy":
        asyncio.run(_serve_unhealthy(args))
        return
    asyncio.run(_serve_ok(args, served))


if __name__ == "__main__":
    main()
