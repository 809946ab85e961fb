"""CPU time of a system under test: a command and every process it starts, alive or gone.

Each measured command runs in a cgroup (v2) of its own, whose ``cpu.stat`` counts the CPU of
every process that ever ran in it: Ray's daemons and workers, sandboxed tool calls, processes
killed or re-parented to init. Where no cgroup v2 hierarchy is writable (not root), the CPU of
reaped children (``os.times``) is used instead, which misses processes the command did not wait
for; the benchmarks say which one they used.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["CommandCPU", "ProcessCPU", "cpu_by_process", "tree_cpu_s"]

_TICK = os.sysconf("SC_CLK_TCK")
_CGROUP_MOUNTS = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")


@dataclass(frozen=True)
class ProcessCPU:
    pid: int
    parent: int
    own_s: float
    """User + system seconds of the process itself so far."""
    reaped_s: float
    """User + system seconds of its children that exited and were waited for."""


def cpu_by_process() -> dict[int, ProcessCPU]:
    """Every live process's own CPU seconds so far."""
    processes = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                text = handle.read()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        own, reaped = (int(fields[11]) + int(fields[12])) / _TICK, (int(fields[13]) + int(fields[14])) / _TICK
        processes[int(entry)] = ProcessCPU(int(entry), int(fields[1]), own, reaped)
    return processes


def tree_cpu_s(root: int | None = None) -> float:
    """CPU seconds so far of ``root`` (default: this process), its live descendants and the children they reaped.

    For an in-process Ray runtime: its daemons are this process's children, and the raylet
    reaps the workers it kills, so their CPU stays in the sum after they exit.
    """
    processes = cpu_by_process()
    children: dict[int, list[int]] = {}
    for process in processes.values():
        children.setdefault(process.parent, []).append(process.pid)
    total, stack = 0.0, [os.getpid() if root is None else root]
    while stack:
        process = processes.get(stack.pop())
        if process is not None:
            total += process.own_s + process.reaped_s
            stack.extend(children.get(process.pid, ()))
    return total


class CommandCPU:
    """Counts the CPU of the commands it wraps: ``command = meter.wrap(argv)``, run it, then ``meter.seconds()``."""

    def __init__(self) -> None:
        self.cgroup = _new_cgroup()
        self.method = "cgroup v2" if self.cgroup else "reaped children (os.times; a lower bound)"
        self._start = self._children_s() if self.cgroup is None else 0.0

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``argv`` started inside this meter's cgroup (unchanged without one)."""
        if self.cgroup is None:
            return list(argv)
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', os.path.join(self.cgroup, "cgroup.procs"), *argv]

    def adopt(self, pid: int | None = None) -> bool:
        """Move a process (default: this one) into the cgroup, with everything it starts from now on.

        Returns False when there is no cgroup to move it to.
        """
        if self.cgroup is None:
            return False
        with open(os.path.join(self.cgroup, "cgroup.procs"), "w") as handle:
            handle.write(str(os.getpid() if pid is None else pid))
        return True

    def seconds(self) -> float:
        """CPU seconds of everything that ran under ``wrap``-ped (or ``adopt``-ed) commands so far."""
        if self.cgroup is None:
            return self._children_s() - self._start
        with open(os.path.join(self.cgroup, "cpu.stat")) as handle:
            stats = dict(line.split() for line in handle)
        return int(stats["usage_usec"]) / 1e6

    def leave(self) -> None:
        """Move this process back to the parent cgroup, then ``close`` (after ``adopt`` of this process)."""
        if self.cgroup is not None:
            with open(os.path.join(os.path.dirname(self.cgroup), "cgroup.procs"), "w") as handle:
                handle.write(str(os.getpid()))
        self.close()

    def close(self) -> None:
        """Kill what still runs in the cgroup and remove it."""
        if self.cgroup is None:
            return
        with contextlib.suppress(OSError), open(os.path.join(self.cgroup, "cgroup.kill"), "w") as handle:
            handle.write("1")
        for _ in range(50):
            try:
                os.rmdir(self.cgroup)
                return
            except OSError:
                import time

                time.sleep(0.1)

    def __enter__(self) -> CommandCPU:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _children_s() -> float:
        times = os.times()
        return times.children_user + times.children_system


def _new_cgroup() -> str | None:
    for mount in _CGROUP_MOUNTS:
        if not os.path.exists(os.path.join(mount, "cgroup.procs")) or not os.path.exists(
            os.path.join(mount, "cpu.stat")
        ):
            continue
        path = os.path.join(mount, f"streamflow-bench-{uuid.uuid4().hex[:8]}")
        try:
            os.mkdir(path)
        except OSError:
            continue
        return path
    return None
