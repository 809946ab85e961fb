"""A sandbox's process, started and awaited without holding up the event loop that serves the rows.

asyncio's own subprocesses (Python 3.11) start the child on the loop's thread, which waits there
until the child has exec'd (milliseconds when both cores are busy), then start a thread per child
to wait for its exit: a step actor running Tau2's tools spent about a sixth of its samples there. Here the
child starts in a worker thread and its exit is a pidfd the loop watches like a socket.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
from collections.abc import Sequence
from typing import IO

__all__ = ["SandboxProcess"]


class _Pipe(asyncio.Protocol):
    """The write end of the child's stdin; only its loss matters (a dead child's pipe is simply closed)."""


class SandboxProcess:
    """A child process with its pipes attached to the running loop; create with ``await SandboxProcess.start(...)``."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        stdin: asyncio.WriteTransport | None,
        stdout: asyncio.StreamReader | None,
        stderr: asyncio.StreamReader | None,
        exited: asyncio.Future[int],
        pipes: list[asyncio.BaseTransport],
    ) -> None:
        self._popen = popen
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self._exited = exited
        self._pipes = pipes

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has been reaped (negative: the signal that killed it), else None."""
        return self._exited.result() if self._exited.done() else None

    async def wait(self) -> int:
        """The exit code, once the process has exited and been reaped."""
        return await asyncio.shield(self._exited)

    def close_pipes(self) -> None:
        """Close our ends of its pipes (a killed process's may otherwise outlive the loop)."""
        for pipe in self._pipes:
            pipe.close()

    @classmethod
    async def start(
        cls,
        argv: Sequence[str],
        *,
        stdin: bool = False,
        stderr: IO[bytes] | None = None,
        limit: int,
    ) -> SandboxProcess:
        """Start ``argv`` in a new session; stdout (and stderr, unless a file is given) become stream readers.

        ``limit`` caps the line ``stdout.readline()`` may return, as asyncio's own ``limit``.
        """
        loop = asyncio.get_running_loop()
        popen = await loop.run_in_executor(
            None,
            lambda: subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE if stderr is None else stderr,
                start_new_session=True,
            ),
        )
        exited: asyncio.Future[int] = loop.create_future()
        _watch_exit(loop, popen, exited)
        pipes: list[asyncio.BaseTransport] = []
        writer = None
        if popen.stdin is not None:
            writer, _ = await loop.connect_write_pipe(_Pipe, popen.stdin)
            pipes.append(writer)
        stdout = await _reader(loop, popen.stdout, limit, pipes)
        return cls(popen, writer, stdout, await _reader(loop, popen.stderr, limit, pipes), exited, pipes)


async def _reader(
    loop: asyncio.AbstractEventLoop, pipe: IO[bytes] | None, limit: int, pipes: list[asyncio.BaseTransport]
) -> asyncio.StreamReader | None:
    if pipe is None:
        return None
    reader = asyncio.StreamReader(limit=limit)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    pipes.append(transport)
    return reader


def _watch_exit(loop: asyncio.AbstractEventLoop, popen: subprocess.Popen[bytes], exited: asyncio.Future[int]) -> None:
    """Resolve ``exited`` with the exit code once the process ends: a pidfd the loop reads, or a thread without one."""

    def reaped(code: int) -> None:
        if not exited.done():
            exited.set_result(code)

    try:
        pidfd = os.pidfd_open(popen.pid)
    except (AttributeError, OSError):  # no pidfds (Linux before 5.3): a thread waits, as asyncio's own would
        threading.Thread(target=lambda: loop.call_soon_threadsafe(reaped, popen.wait()), daemon=True).start()
        return

    def on_exit() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        reaped(popen.wait())  # it has exited: this only reaps it

    loop.add_reader(pidfd, on_exit)
