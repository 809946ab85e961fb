"""A sandbox's process is started off the event loop, its output streamed and its exit code awaited."""

import asyncio
import os
import signal
import sys

import pytest

from streamflow.services.sandbox.process import SandboxProcess


def run(body):
    return asyncio.run(body())


@pytest.fixture(params=["pidfd", "thread"])
def exit_watch(request, monkeypatch):
    """Both ways of learning that a process exited: a pidfd, and a thread where the kernel has no pidfds."""
    if request.param == "thread":
        monkeypatch.delattr(os, "pidfd_open")
    return request.param


def test_exit_codes_and_output_come_back(exit_watch):
    async def body():
        talker = await SandboxProcess.start([sys.executable, "-c", "print('hi'); import sys; sys.exit(3)"], limit=1024)
        line = await talker.stdout.readline()
        code = await talker.wait()
        talker.close_pipes()
        return line, code, talker.returncode

    assert run(body) == (b"hi\n", 3, 3)


def test_a_killed_process_reports_its_signal(exit_watch):
    async def body():
        sleeper = await SandboxProcess.start([sys.executable, "-c", "import time; time.sleep(60)"], limit=1024)
        assert sleeper.returncode is None
        os.killpg(sleeper.pid, signal.SIGKILL)  # it leads a session of its own
        code = await asyncio.wait_for(sleeper.wait(), 10)
        sleeper.close_pipes()
        return code

    assert run(body) == -signal.SIGKILL


def test_requests_on_stdin_get_replies_line_by_line():
    echo = "import sys\nfor line in sys.stdin:\n    print(line.strip().upper(), flush=True)"

    async def body():
        server = await SandboxProcess.start([sys.executable, "-c", echo], stdin=True, limit=1024)
        replies = []
        for word in (b"one\n", b"two\n"):
            server.stdin.write(word)
            replies.append(await server.stdout.readline())
        server.stdin.close()
        code = await server.wait()
        server.close_pipes()
        return replies, code

    assert run(body) == ([b"ONE\n", b"TWO\n"], 0)
