"""How one command runs isolated: the command lines of the bubblewrap and Apptainer backends.

Both run the command as a user id of its own (one per sandbox, so a fork bomb exhausts only
that sandbox's process limit), under ``prlimit`` for memory, processes, CPU seconds and file
size, with no network, with the sandbox's private directory as the only writable place
(``/work``), and the host's ``/usr`` read-only so the system Python and tools are there.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Apptainer", "Backend", "Bubblewrap", "Limits", "backend_named"]

WORKDIR = "/work"
PATH = "/usr/local/bin:/usr/bin:/bin"
WORKER = "/opt/streamflow/worker.py"
"""Where the Python tool-call server (``worker.py``) appears inside a sandbox, read-only."""
WORKER_SOURCE = str(Path(__file__).with_name("worker.py"))


@dataclass(frozen=True)
class Limits:
    """Per-command limits; the wall-clock timeout is enforced by the pool, not here."""

    memory_mb: int = 512
    processes: int = 64
    cpu_s: int = 60
    file_mb: int = 64

    def prlimit(self) -> list[str]:
        return [
            "prlimit",
            f"--as={self.memory_mb * 1024 * 1024}",
            f"--nproc={self.processes}",
            f"--cpu={self.cpu_s}",
            f"--fsize={self.file_mb * 1024 * 1024}",
            "--core=0",
            "--",
        ]


def _as_user(uid: int) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]


class Backend:
    """A way to run a command inside a sandbox directory."""

    name = ""
    executable = ""
    package = ""

    def missing(self) -> str | None:
        """Why this backend cannot run here (one line saying what to install), or None."""
        for tool in (self.executable, "prlimit", "setpriv"):
            if shutil.which(tool) is None:
                return (
                    f"sandbox backend {self.name!r} needs {tool!r}, which is not installed; {self.install_hint(tool)}"
                )
        return None

    def install_hint(self, tool: str) -> str:
        if tool == self.executable:
            return self.package
        return "install util-linux (apt-get install -y util-linux)"

    def command(self, directory: str, argv: Sequence[str], uid: int, limits: Limits) -> list[str]:
        raise NotImplementedError


class Bubblewrap(Backend):
    """bubblewrap (``bwrap``): unprivileged namespaces, the local default."""

    name = "bubblewrap"
    executable = "bwrap"
    package = "install it with: apt-get update && apt-get install -y bubblewrap"

    def command(self, directory: str, argv: Sequence[str], uid: int, limits: Limits) -> list[str]:
        # setpriv before bwrap: bwrap then runs unprivileged and cannot be talked out of its namespaces.
        return [
            *_as_user(uid),
            *limits.prlimit(),
            "bwrap",
            "--unshare-all",  # no network, own PID/IPC/UTS/user namespaces
            "--die-with-parent",
            "--new-session",
            "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/lib", "/lib",
            "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/bin", "/bin",
            "--proc", "/proc",
            "--dev", "/dev",
            "--tmpfs", "/tmp",
            "--bind", directory, WORKDIR,
            "--ro-bind", WORKER_SOURCE, WORKER,
            "--remount-ro", "/",  # only /work and /tmp are writable
            "--chdir", WORKDIR,
            "--clearenv",
            "--setenv", "PATH", PATH,
            "--setenv", "HOME", WORKDIR,
            "--setenv", "LANG", "C.UTF-8",
            "--",
            *argv,
        ]  # fmt: skip


class Apptainer(Backend):
    """Apptainer (formerly Singularity) with a container image, for clusters where it is the norm."""

    name = "apptainer"
    executable = "apptainer"
    package = "see https://apptainer.org/docs/admin/main/installation.html"

    def __init__(self, image: str) -> None:
        self.image = image

    def missing(self) -> str | None:
        problem = super().missing()
        if problem is None and not os.path.exists(self.image):
            return f"sandbox.image={self.image!r} does not exist; build or pull a .sif image first."
        return problem

    def command(self, directory: str, argv: Sequence[str], uid: int, limits: Limits) -> list[str]:
        return [
            *_as_user(uid),
            *limits.prlimit(),
            "apptainer", "exec",
            "--containall",  # own PID and IPC namespaces, no host home, /tmp or environment
            "--no-home",
            "--net", "--network", "none",
            "--bind", f"{directory}:{WORKDIR}",
            "--bind", f"{WORKER_SOURCE}:{WORKER}:ro",
            "--pwd", WORKDIR,
            "--env", f"PATH={PATH},HOME={WORKDIR},LANG=C.UTF-8",
            self.image,
            *argv,
        ]  # fmt: skip


def backend_named(name: str, image: str | None = None) -> Backend:
    """The backend for ``sandbox.backend``."""
    if name == "bubblewrap":
        return Bubblewrap()
    if name == "apptainer":
        if not image:
            msg = "sandbox.backend=apptainer needs sandbox.image=PATH.sif"
            raise ValueError(msg)
        return Apptainer(image)
    msg = f"unknown sandbox.backend {name!r}; use bubblewrap or apptainer"
    raise ValueError(msg)
