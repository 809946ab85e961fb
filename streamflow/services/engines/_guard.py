"""Supervise one server so that it cannot outlive the actor that started it (Linux).

Usage: ``python -I -S _guard.py PARENT_PID GRACE_S PROGRAM [ARG...]``

The actor starts this script in a new session, so it leads a process group that also holds
the server and the server's own workers (vLLM's engine core and tensor-parallel workers,
SGLang's schedulers). Its pid is the group id the actor signals.

- SIGTERM (the actor stops the server, or the actor died: ``PR_SET_PDEATHSIG``): SIGTERM to
  the whole group, then SIGKILL to the group after GRACE_S if the server has not exited.
- The server exits on its own: this script exits the same way, so the actor reads the
  server's exit status from its child.
- This script is SIGKILLed (Ray kills a dead worker's direct children with SIGKILL): the
  server gets SIGTERM through its own ``PR_SET_PDEATHSIG`` and shuts its workers down.

Parent-death signals are set here, in small single-threaded processes, rather than in a
``preexec_fn`` of the actor: the ``subprocess`` docs warn that running Python between
``fork`` and ``exec`` in a process with threads (a Ray worker has many) can deadlock.
Standard library only, run with ``-I -S`` to start fast.
"""

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> None:
    """Get SIGTERM when ``parent`` dies; exit now if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(errno)}")
    if os.getppid() != parent:
        sys.stderr.write(f"streamflow guard: parent {parent} exited before the server started\n")
        os._exit(1)


def _exec_server(guard: int, program: list[str]) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        _die_with(guard)
        os.execvp(program[0], program)
    except OSError as exc:
        sys.stderr.write(f"streamflow guard: cannot run {program[0]!r}: {exc}\n")
    os._exit(127)


def main(argv: list[str]) -> None:
    parent, grace_s, program = int(argv[1]), float(argv[2]), argv[3:]
    _die_with(parent)
    stopping = False

    def kill_group(signum: int, frame: object) -> None:
        os.killpg(0, signal.SIGKILL)

    def stop_group(signum: int, frame: object) -> None:
        nonlocal stopping
        if stopping:  # our own SIGTERM to the group comes back here
            return
        stopping = True
        signal.signal(signal.SIGALRM, kill_group)
        signal.setitimer(signal.ITIMER_REAL, max(grace_s, 0.01))
        os.killpg(0, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop_group)
    guard = os.getpid()
    sys.stderr.write(f"streamflow guard: running {program[0]!r} in process group {guard} (kill -- -{guard})\n")
    sys.stderr.flush()
    server = os.fork()
    if server == 0:
        _exec_server(guard, program)
    _, status = os.waitpid(server, 0)
    if stopping:
        os.killpg(0, signal.SIGKILL)  # leftover workers, and this process
    if os.WIFSIGNALED(status):  # die of the same signal
        number = os.WTERMSIG(status)
        if number not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(number, signal.SIG_DFL)
        os.kill(guard, number)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


if __name__ == "__main__":
    main(sys.argv)
