"""A server subprocess that cannot outlive its owner: own process group, log file, group signals.

On Linux the server runs under ``_guard.py``, a small supervisor that leads the server's
process group; the actor knows only the guard's pid, which is also the group id. How the
server ends in each way its actor can end:

- ``terminate()`` (normal stop): SIGTERM to the group, SIGKILL to what is left after the grace
  period. The group holds the engine's own workers too, so no GPU memory is left behind.
- The actor exits through Python (``ray.shutdown``, ``exit_actor``): an ``atexit`` hook sends
  SIGTERM to the group without waiting; the guard, if still alive, escalates after the grace.
- The actor is killed outright (OOM killer, ``ray.kill``): no Python code runs. The kernel
  sends the guard SIGTERM (``PR_SET_PDEATHSIG``) and it stops the group as above. If Ray
  SIGKILLs the guard first (Ray kills a dead worker's direct children), the server gets
  SIGTERM through its own parent-death signal and stops its workers itself; only a server
  that ignores SIGTERM survives that; the first line of the log names its group for ``kill -- -PGID``.

Elsewhere (macOS) the server is a plain child in its own session: ``terminate()`` and the
``atexit`` hook work, a killed actor leaves it running.

The group leader is never reaped before ``terminate()`` has signalled the group (exits are
observed with ``WNOWAIT``), so the group id cannot be reused by an unrelated process meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["ServerProcess", "free_port"]

_GUARD = Path(__file__).with_name("_guard.py")
_TAIL_BYTES = 64 * 1024


def free_port(host: str) -> int:
    """A TCP port nobody listens on at ``host`` right now (the server binds it moments later)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _supervised(argv: Sequence[str], grace_s: float) -> list[str]:
    """``argv`` run under the guard (Linux), which ties the server's life to this process."""
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-I", "-S", str(_GUARD), str(os.getpid()), f"{grace_s:g}", *argv]


class ServerProcess:
    """One launched server: its process group id, exit status and log file.

    Launch it from a thread that lives as long as the server (an actor's event loop): Linux
    sends the parent-death signal when the *thread* that forked the child ends.
    """

    def __init__(self, popen: subprocess.Popen[bytes], log_path: Path, log_offset: int) -> None:
        self._popen = popen
        self.log_path = log_path
        self._log_offset = log_offset
        self._exit: tuple[int, int] | None = None  # (si_code, si_status) once the leader has exited

    @classmethod
    def launch(cls, argv: Sequence[str], *, env: Mapping[str, str], log_path: Path, grace_s: float) -> ServerProcess:
        """Start ``argv`` in a new session, stdout and stderr appended to ``log_path``.

        ``grace_s`` is how long the guard lets the server shut down when the actor is gone.
        """
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            offset = log.tell()
            popen = subprocess.Popen(
                _supervised(argv, grace_s),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                start_new_session=True,
            )
        return cls(popen, log_path, offset)

    @property
    def pid(self) -> int:
        """The group leader's pid (the guard's on Linux), which is also the process group id."""
        return self._popen.pid

    def running(self) -> bool:
        """True until the server exits (the leader stays unreaped until ``terminate``)."""
        if self._exit is not None or self._popen.returncode is not None:
            return False
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return False
        if info is None:
            return True
        self._exit = (info.si_code, info.si_status)
        return False

    def exit_reason(self) -> str:
        """How the server ended, e.g. ``exited with code 1`` or ``was killed by SIGKILL``."""
        if self._exit is not None:
            code, status = self._exit
            return f"exited with code {status}" if code == os.CLD_EXITED else f"was killed by {_signal_name(status)}"
        returncode = self._popen.returncode
        if returncode is None:
            return "is still running"
        return f"exited with code {returncode}" if returncode >= 0 else f"was killed by {_signal_name(-returncode)}"

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines this launch wrote to its log, each indented by four spaces."""
        try:
            with open(self.log_path, "rb") as log:
                end = log.seek(0, os.SEEK_END)
                log.seek(max(self._log_offset, end - _TAIL_BYTES))
                data = log.read()
        except OSError as exc:
            return f"    (log {self.log_path} unreadable: {exc})"
        text = data.decode("utf-8", errors="replace").splitlines()[-lines:]
        return "\n".join(f"    {line}" for line in text) if text else "    (the log is empty)"

    async def terminate(self, grace_s: float) -> None:
        """SIGTERM the group, wait up to ``grace_s`` for the server to exit, SIGKILL what is left, reap."""
        if self._popen.returncode is not None:
            return
        self._signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while self.running() and time.monotonic() < deadline:  # noqa: ASYNC110 (a child process gives no event to wait on)
            await asyncio.sleep(0.05)
        self._signal_group(signal.SIGKILL)  # a server that ignored SIGTERM, or its leftover workers
        while self._popen.poll() is None:  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    def abandon(self) -> None:
        """SIGTERM the group without waiting (for ``atexit``; the guard escalates if needed)."""
        if self._popen.returncode is None:
            self._signal_group(signal.SIGTERM)

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
