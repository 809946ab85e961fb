"""Shared fixtures: one Ray runtime per test session, started only by tests that need it; quick-run overrides;
the command line in a subprocess; an OpenAI-compatible test server. ``streamflow.testing.read_output`` reads
what a run wrote."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Self

import pytest
from aiohttp import web


@pytest.fixture(scope="session")
def ray_runtime():
    """A local Ray runtime shared by the whole session (starting one costs seconds)."""
    import ray

    temp_dir = tempfile.mkdtemp(prefix="sf-ray-")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp_dir, logging_level="WARNING")
    yield ray
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def fast_run(tmp_path):
    """Overrides for a quick run: simulator 100x faster than real time, output in tmp_path."""
    return [f"output.dir={tmp_path}", "llm.sim.time_scale=0.01", "progress=off"]


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def own_ray_env():
    """The environment of a subprocess that runs a pipeline on a Ray runtime of its own.

    ``ray.init()`` without an address joins the Ray instance last started on this machine by ``ray start`` or
    a test cluster (tests/test_cluster.py, another checkout's tests); ``RAY_ADDRESS=local`` starts a new one.
    """
    return {**os.environ, "RAY_ADDRESS": "local"}


@pytest.fixture(scope="session")
def cli(own_ray_env):
    """``cli(*args, timeout=120)`` runs ``python -m streamflow.run ARGS`` from the repository root and returns
    the finished process (exit code, stdout, stderr), as a user at a shell would see it."""

    def run(*args: object, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "streamflow.run", *map(str, args)]
        return subprocess.run(
            command, cwd=REPO, env=own_ray_env, capture_output=True, text=True, timeout=timeout, check=False
        )

    return run


@pytest.fixture
def openai_server():
    """``openai_server(answer, delay_s=0)`` starts an ``OpenAIServer`` that runs until the test ends."""
    started: list[OpenAIServer] = []

    def start(answer: Callable[[str], tuple[int, str]], delay_s: float = 0.0) -> OpenAIServer:
        server = OpenAIServer(answer, delay_s).__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__()


MODEL = "sim-8b"


class OpenAIServer:
    """A real OpenAI-compatible aiohttp server on 127.0.0.1, in a thread of its own.

    It lists ``sim-8b`` at ``/v1/models`` (so the pre-run check passes) and answers chat
    completions as the test says: ``answer(prompt)`` returns the HTTP status and the text. It
    counts the completions it answered with 200, each billed as one prompt and one completion token.
    """

    def __init__(self, answer: Callable[[str], tuple[int, str]], delay_s: float = 0.0) -> None:
        self.answer = answer
        self.delay_s = delay_s
        self.served = 0
        """Completions answered with 200."""
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> Self:
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> int:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        status, text = self.answer(prompt)
        if status != 200:
            return web.json_response({"error": {"message": text}}, status=status)
        self.served += 1
        return web.json_response(
            {
                "object": "chat.completion",
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )
