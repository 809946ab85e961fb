"""How one command runs isolated: the command lines of the bubblewrap and Apptainer backends.

Both run the command as a user id of its own (one per sandbox, so a fork bomb exhausts only
that sandbox's process limit), under ``prlimit`` for memory, processes, CPU seconds and file
size, with no network, with the sandbox's private directory as the only writable place
(``/work``), and the host's ``/usr`` read-only so the system tools are there.

As root, bubblewrap itself runs as root and the command drops to the sandbox's user id inside
it (``setpriv``, all capabilities gone). The other order, bubblewrap started as the sandbox's
user, cannot mount what that user cannot reach: a project, a virtualenv or a Python installed
in a private home directory (mode 0700, as Debian 12 makes them). The sandbox's user still
sees only what is mounted: the Python installation read-only, its own directory, ``/usr``.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Apptainer", "Backend", "Bubblewrap", "Interpreter", "Limits", "backend_named"]

WORKDIR = "/work"
PATH = "/usr/local/bin:/usr/bin:/bin"
WORKER_CODE = Path(__file__).with_name("worker.py").read_text()
"""The Python tool-call server, handed to the sandbox's interpreter with ``-c``: nothing to mount."""


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


@dataclass(frozen=True)
class Interpreter:
    """The Python that runs inside a bubblewrap sandbox: its executable and the installation it needs."""

    executable: str
    home: str
    """The installation folder (standard library, shared libraries), mounted read-only at its own path."""

    @classmethod
    def running(cls) -> Interpreter:
        """The Python running streamflow (not a virtualenv's link to it), so tools see the same version."""
        home = os.path.realpath(sys.base_prefix)
        versioned = os.path.join(home, "bin", f"python{sys.version_info.major}.{sys.version_info.minor}")
        return cls(versioned if os.path.exists(versioned) else os.path.realpath(sys.executable), home)

    @property
    def folders(self) -> list[str]:
        """What must be mounted for it to run: nothing under ``/usr``, which every sandbox has."""
        wanted = [self.home]
        if not _is_under(self.executable, self.home):
            wanted.append(os.path.dirname(self.executable))
        return [folder for folder in wanted if not _is_under(folder, "/usr")]


def _is_under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _as_user(uid: int) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]


def _as_user_without_privileges(uid: int) -> list[str]:
    """``_as_user`` that also empties the capability bounding set and forbids gaining privileges later."""
    return [*_as_user(uid)[:-1], "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]


class Backend:
    """A way to run a command inside a sandbox directory."""

    name = ""
    executable = ""
    package = ""
    python = "python3"
    """The interpreter command that runs Python tool calls inside the sandbox."""
    contains_processes = False
    """Whether every process a command starts dies with the command's launcher (a PID namespace of its own).

    Where it does not, the pool also kills every process of the sandbox's user id, which means
    reading every entry of ``/proc``: about 3 ms per released sandbox with 800 processes alive.
    """

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

    def command(self, directory: str, argv: Sequence[str], limits: Limits, uid: int | None) -> list[str]:
        """The command line running ``argv`` in ``directory`` as ``uid`` (None: as the caller, who is not root)."""
        raise NotImplementedError


class Bubblewrap(Backend):
    """bubblewrap (``bwrap``): Linux namespaces, the local default."""

    name = "bubblewrap"
    executable = "bwrap"
    package = "install it with: apt-get update && apt-get install -y bubblewrap"
    contains_processes = True
    """The command runs in a PID namespace (``--unshare-pid``, or ``--unshare-all`` without root) whose
    first process bubblewrap kills with itself (``--die-with-parent``); the kernel then kills every
    process left in the namespace and lets none be created, so nothing a tool starts outlives it."""

    def __init__(self, interpreter: Interpreter | None = None) -> None:
        self.interpreter = interpreter or Interpreter.running()
        self.python = self.interpreter.executable

    def command(self, directory: str, argv: Sequence[str], limits: Limits, uid: int | None) -> list[str]:
        if uid is None:  # not root: an unprivileged bubblewrap in a user namespace of its own
            isolation, enter = ["--unshare-all"], []
        else:  # root mounts; the command drops to the sandbox's user with no capability left
            isolation = [
                "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
                "--cap-drop", "ALL",
                "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP",  # for setpriv
                "--cap-add", "CAP_DAC_OVERRIDE",  # to enter /work, which belongs to the sandbox's user
            ]  # fmt: skip
            enter = _as_user_without_privileges(uid)
        python_path = [os.path.dirname(self.interpreter.executable)] if self.interpreter.folders else []
        return [
            *limits.prlimit(),
            "bwrap",
            *isolation,
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
            *_mount_read_only(self.interpreter.folders),
            "--remount-ro", "/",  # only /work and /tmp are writable
            "--chdir", WORKDIR,
            "--clearenv",
            "--setenv", "PATH", ":".join([*python_path, PATH]),
            "--setenv", "HOME", WORKDIR,
            "--setenv", "LANG", "C.UTF-8",
            "--",
            *enter,
            *argv,
        ]  # fmt: skip


def _mount_read_only(folders: Sequence[str]) -> list[str]:
    """Mount each folder read-only at its own path, its parents made traversable (bwrap's default is 0700)."""
    arguments: list[str] = []
    made: set[str] = set()
    for folder in folders:
        parents = Path(folder).parents
        for parent in reversed(parents[:-1]):  # outermost first, without "/"
            if str(parent) not in made:
                made.add(str(parent))
                arguments += ["--perms", "0755", "--dir", str(parent)]
        arguments += ["--ro-bind", folder, folder]
    return arguments


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

    def command(self, directory: str, argv: Sequence[str], limits: Limits, uid: int | None) -> list[str]:
        return [
            *(_as_user(uid) if uid is not None else []),
            *limits.prlimit(),
            "apptainer", "exec",
            "--containall",  # own PID and IPC namespaces, no host home, /tmp or environment
            "--no-home",
            "--net", "--network", "none",
            "--bind", f"{directory}:{WORKDIR}",
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
