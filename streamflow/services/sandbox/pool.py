"""A process's pool of sandboxes: private directories, each with its own user id, where commands run isolated.

A sandbox is cheap while idle (a directory and a reserved uid); a process exists only while a
command runs, and at most ``running`` commands run at once per pool. A row acquires a sandbox,
runs commands and reads or writes its files over several steps, and releases it; a sandbox
nobody touched for ``idle_s`` is reclaimed, which is how sandboxes of rows that crashed or were
re-admitted elsewhere come back. Each actor running sandboxed steps (and ``run_local``) has a
pool of its own, so a tool call never leaves the process that asks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Annotated, Any, Literal

import msgspec
from msgspec import Meta

from streamflow.errors import RowError, SetupError
from streamflow.services.sandbox.backends import WORKER_CODE, Backend, Limits, backend_named
from streamflow.services.sandbox.process import SandboxProcess

__all__ = ["CallResult", "ExecResult", "SandboxError", "SandboxPool", "SandboxSettings"]

log = logging.getLogger(__name__)

MAX_OUTPUT_BYTES = 1 << 20
"""stdout and stderr are each cut to this much (a command printing gigabytes must not sink the pool)."""


class SandboxError(RowError):
    """A sandbox operation failed for a reason of the row's (unknown sandbox, bad path, pool full)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, kind="sandbox")


class SandboxSettings(msgspec.Struct, forbid_unknown_fields=True):
    """The ``sandbox:`` section of the run config; its constraints are checked when the config is converted."""

    backend: Literal["bubblewrap", "apptainer"] = "bubblewrap"
    image: str | None = None  # apptainer: the .sif image
    size: Annotated[int, Meta(ge=1)] = 1024  # sandboxes per pool (a directory and a uid each; no process while idle)
    running: int = 0  # commands running at once per pool (per actor with sandboxed steps); 0: twice the CPUs
    timeout_s: Annotated[float, Meta(gt=0)] = 30.0  # per command, wall clock
    memory_mb: Annotated[int, Meta(ge=1)] = 512  # address space per command
    processes: Annotated[int, Meta(ge=1)] = 64  # processes per sandbox
    cpu_s: int = 60
    file_mb: int = 64  # largest file a command may write
    idle_s: Annotated[float, Meta(gt=0)] = 600.0  # a sandbox untouched this long is reclaimed
    acquire_timeout_s: Annotated[float, Meta(gt=0)] = 300.0  # how long a row waits for a free sandbox before it fails
    first_uid: int = 200_000  # as root, sandboxes run as user ids from here, a block of `size` per pool

    def limits(self) -> Limits:
        return Limits(memory_mb=self.memory_mb, processes=self.processes, cpu_s=self.cpu_s, file_mb=self.file_mb)


class CallResult(msgspec.Struct, frozen=True):
    """What a Python tool call returned (JSON data), or why it failed."""

    result: Any = None
    error: str | None = None
    timed_out: bool = False
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


class ExecResult(msgspec.Struct, frozen=True):
    """What a command did: its exit code (negative: killed by that signal), output, and whether it timed out."""

    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool = False
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


@dataclass
class _Sandbox:
    id: str
    slot: int
    uid: int
    directory: str
    owner: str
    touched: float
    worker: SandboxProcess | None = None
    """The sandbox's Python tool-call server, started by its first ``call``."""
    calling: asyncio.Lock = field(default_factory=asyncio.Lock)


class SandboxPool:
    """Sandboxes of one node; every method is safe to call concurrently."""

    def __init__(self, settings: SandboxSettings, *, name: str = "local") -> None:
        self.settings = settings
        self.name = name
        self.backend = backend_named(settings.backend, settings.image)
        problem = self.backend.missing()
        if problem is not None:
            raise SetupError(problem)
        self.as_root = os.geteuid() == 0
        self._uid_block: IO[str] | None = None
        self.first_uid = os.geteuid()
        if self.as_root:
            self._uid_block, block = _claim_uid_block(settings)
            self.first_uid = settings.first_uid + block * settings.size
            # Named by its uid block: a pool whose process was killed left this folder behind,
            # and the next pool to hold the block removes it.
            self.root = os.path.join(tempfile.gettempdir(), f"streamflow-sandbox-{block}")
            shutil.rmtree(self.root, ignore_errors=True)
            os.mkdir(self.root, 0o711)
        else:
            self.root = tempfile.mkdtemp(prefix="streamflow-sandbox-")
        os.chmod(self.root, 0o711)  # sandbox users may enter their own directory, not list the others
        self._free = list(range(settings.size))[::-1]
        self._slots = asyncio.Semaphore(settings.size)
        self._running = asyncio.Semaphore(settings.running or 2 * (os.cpu_count() or 1))
        self._boxes: dict[str, _Sandbox] = {}
        self._serial = 0
        self.counts = {"acquired": 0, "released": 0, "reclaimed": 0, "runs": 0, "timeouts": 0}
        self._reclaiming: asyncio.Task[None] | None = None

    # -- life cycle of a sandbox ---------------------------------------------------------------

    async def acquire(self, owner: str, files: Mapping[str, bytes] | None = None) -> str:
        """A fresh sandbox for ``owner`` (a row id), with ``files`` written into it; returns its id."""
        self._start_reclaiming()
        try:
            await asyncio.wait_for(self._slots.acquire(), self.settings.acquire_timeout_s)
        except TimeoutError:
            msg = f"no free sandbox on {self.name} after {self.settings.acquire_timeout_s:.0f} s (sandbox.size={self.settings.size})"
            raise SandboxError(msg) from None
        slot = self._free.pop()
        self._serial += 1
        box_id = f"{self.name}/{slot}/{self._serial}"
        uid = self.first_uid + slot if self.as_root else os.geteuid()
        directory = os.path.join(self.root, str(slot))
        os.mkdir(directory, 0o700)
        if self.as_root:
            os.chown(directory, uid, uid)
        box = _Sandbox(box_id, slot, uid, directory, owner, time.monotonic())
        self._boxes[box_id] = box
        self.counts["acquired"] += 1
        for path, data in (files or {}).items():
            self._write(box, path, data)
        return box_id

    async def release(self, box_id: str) -> bool:
        """Kill what still runs in the sandbox and delete it; False if it was already gone."""
        box = self._boxes.pop(box_id, None)
        if box is None:
            return False
        await self._destroy(box)
        self.counts["released"] += 1
        return True

    async def reclaim(self) -> int:
        """Release every sandbox idle for longer than ``idle_s``; returns how many."""
        deadline = time.monotonic() - self.settings.idle_s
        stale = [box for box in self._boxes.values() if box.touched < deadline]
        for box in stale:
            log.warning("reclaiming sandbox %s of row %s: idle for %.0f s", box.id, box.owner, self.settings.idle_s)
            del self._boxes[box.id]
            await self._destroy(box)
        self.counts["reclaimed"] += len(stale)
        return len(stale)

    async def close(self) -> None:
        """Release every sandbox and remove the pool's directory."""
        if self._reclaiming is not None:
            self._reclaiming.cancel()
        for box_id in list(self._boxes):
            await self.release(box_id)
        shutil.rmtree(self.root, ignore_errors=True)
        if self._uid_block is not None:
            self._uid_block.close()  # lets another pool take these user ids

    async def check(self) -> None:
        """Make one tool call in a fresh sandbox: a setup where sandboxes cannot work fails here, before any row.

        Raises ``SetupError`` with one line naming the problem and the fix (user namespaces disabled,
        an interpreter the sandbox cannot reach), instead of every row failing with "tool process died".
        """
        box = await self.acquire("streamflow-check", files={"streamflow_check.py": b"def ping():\n    return 'pong'\n"})
        try:
            reply = await self.call(box, "streamflow_check", "ping", timeout_s=max(self.settings.timeout_s, 30.0))
        finally:
            await self.release(box)
        if reply.result != "pong":
            raise SetupError(_setup_problem(self.backend, reply.error or f"the check answered {reply.result!r}"))

    def stats(self) -> dict[str, int]:
        return {**self.counts, "in_use": len(self._boxes)}

    # -- using one -----------------------------------------------------------------------------

    async def run(
        self, box_id: str, argv: Sequence[str], *, timeout_s: float | None = None, stdin: bytes | None = None
    ) -> ExecResult:
        """Run ``argv`` in the sandbox (cwd ``/work``, no network, the configured limits)."""
        box = self._box(box_id)
        timeout = self.settings.timeout_s if timeout_s is None else timeout_s
        command = self._command(box, argv)
        async with self._running:
            started = time.monotonic()
            process = await SandboxProcess.start(command, stdin=stdin is not None, limit=MAX_OUTPUT_BYTES)
            reading = asyncio.gather(_read_capped(process.stdout), _read_capped(process.stderr))
            if stdin is not None and process.stdin is not None:
                process.stdin.write(stdin)
                process.stdin.close()  # after what is buffered is written
            timed_out = False
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                timed_out = True
                self.counts["timeouts"] += 1
                _kill_group(process.pid)
                self._kill_user(box)
                await process.wait()
            stdout, stderr = await reading
        box.touched = time.monotonic()
        self.counts["runs"] += 1
        return ExecResult(
            exit_code=process.returncode if process.returncode is not None else -9,
            stdout=stdout.decode("utf-8", "replace"),
            stderr=stderr.decode("utf-8", "replace"),
            timed_out=timed_out,
            duration_s=round(time.monotonic() - started, 4),
        )

    async def call(
        self,
        box_id: str,
        module: str,
        function: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> CallResult:
        """Call ``function(**arguments)`` of ``module`` (a ``.py`` file in the sandbox's ``/work``), isolated.

        The call runs in the sandbox's tool-call server, a sandboxed Python process started on the
        first call and kept until the sandbox is released (so later calls cost a pipe round trip, not
        an interpreter start). One call runs at a time per sandbox. Arguments and result are JSON.
        A call that times out or kills its process (memory limit, a crash) gets an error, and the
        next call starts a fresh process.
        """
        box = self._box(box_id)
        timeout = self.settings.timeout_s if timeout_s is None else timeout_s
        request = json.dumps({"module": module, "function": function, "arguments": dict(arguments or {})}) + "\n"
        async with box.calling, self._running:
            started = time.monotonic()
            worker = box.worker
            if worker is None or worker.returncode is not None:
                worker = box.worker = await self._start_worker(box)
            assert worker.stdin is not None and worker.stdout is not None
            try:
                worker.stdin.write(request.encode())  # a dead worker's closed pipe drops it: its reply is EOF
                line = await asyncio.wait_for(worker.stdout.readline(), timeout)
            except TimeoutError:
                self.counts["timeouts"] += 1
                await self._stop_worker(box)
                return CallResult(error=f"timed out after {timeout:g} s", timed_out=True, duration_s=timeout)
            except ValueError:  # a reply line over the output cap
                await self._stop_worker(box)
                return CallResult(error=f"the reply is larger than {MAX_OUTPUT_BYTES} bytes")
            self.counts["runs"] += 1
            box.touched = time.monotonic()
            took = round(time.monotonic() - started, 4)
            if not line:
                code = await worker.wait()
                worker.close_pipes()
                box.worker = None
                return CallResult(
                    error=f"the tool process died (exit {code}): {self._stderr_tail(box)}", duration_s=took
                )
            reply = json.loads(line)
            return CallResult(result=reply.get("result"), error=reply.get("error"), duration_s=took)

    async def read(self, box_id: str, path: str) -> bytes:
        """A file of the sandbox (``path`` relative to its ``/work``)."""
        box = self._box(box_id)
        target = self._inside(box, path)
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise SandboxError(f"sandbox {box_id}: cannot read {path!r}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as handle:
            return handle.read()

    async def write(self, box_id: str, path: str, data: bytes) -> None:
        """Write a file into the sandbox (``path`` relative to its ``/work``; folders are created)."""
        self._write(self._box(box_id), path, data)

    # -- internals -----------------------------------------------------------------------------

    def _box(self, box_id: str) -> _Sandbox:
        box = self._boxes.get(box_id)
        if box is None:
            raise SandboxError(f"unknown sandbox {box_id!r} (released, reclaimed after {self.settings.idle_s:.0f} s idle, "
                               "or its pool restarted)")  # fmt: skip
        box.touched = time.monotonic()
        return box

    def _inside(self, box: _Sandbox, path: str) -> str:
        """The host path of ``path`` in the sandbox; refuses anything that would lead outside it."""
        relative = os.path.normpath(path.removeprefix("/work/"))
        if os.path.isabs(relative) or relative == ".." or relative.startswith("../"):
            raise SandboxError(f"sandbox {box.id}: path {path!r} leads outside the sandbox")
        target = os.path.join(box.directory, relative)
        parent = os.path.realpath(os.path.dirname(target))
        if parent != box.directory and not parent.startswith(box.directory + os.sep):
            raise SandboxError(f"sandbox {box.id}: path {path!r} leads outside the sandbox (through a link)")
        return target

    def _write(self, box: _Sandbox, path: str, data: bytes) -> None:
        target = self._inside(box, path)
        created: list[str] = []  # folders this write makes, outermost first: they must belong to the sandbox's user
        folder = os.path.dirname(target)
        while folder != box.directory and not os.path.exists(folder):
            created.insert(0, folder)
            folder = os.path.dirname(folder)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise SandboxError(f"sandbox {box.id}: cannot write {path!r}: {exc.strerror}") from None
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        if self.as_root:
            for made in [*created, target]:
                os.chown(made, box.uid, box.uid, follow_symlinks=False)

    def _command(self, box: _Sandbox, argv: Sequence[str]) -> list[str]:
        """The backend's command line for ``argv`` in ``box``; without root, as our own user (changing it needs root)."""
        return self.backend.command(box.directory, argv, self.settings.limits(), box.uid if self.as_root else None)

    async def _start_worker(self, box: _Sandbox) -> SandboxProcess:
        command = self._command(box, [self.backend.python, "-I", "-S", "-c", WORKER_CODE])
        with open(self._stderr_path(box), "ab") as log_file:  # noqa: ASYNC230 (opened once per sandbox, for the child to inherit)
            return await SandboxProcess.start(command, stdin=True, stderr=log_file, limit=MAX_OUTPUT_BYTES)

    async def _stop_worker(self, box: _Sandbox) -> None:
        worker, box.worker = box.worker, None
        if worker is not None:
            _kill_group(worker.pid)
        self._kill_user(box)
        if worker is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.wait(), 5)
            worker.close_pipes()

    def _stderr_path(self, box: _Sandbox) -> str:
        return os.path.join(self.root, f"{box.slot}.stderr")  # outside the sandbox: the tool cannot forge it

    def _stderr_tail(self, box: _Sandbox) -> str:
        try:
            with open(self._stderr_path(box), "rb") as handle:
                handle.seek(max(0, os.path.getsize(handle.name) - 300))
                return handle.read().decode("utf-8", "replace").strip().splitlines()[-1]
        except (OSError, IndexError):
            return ""

    async def _destroy(self, box: _Sandbox) -> None:
        await self._stop_worker(box)
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._stderr_path(box))
        shutil.rmtree(box.directory, ignore_errors=True)
        self._free.append(box.slot)
        self._slots.release()

    def _kill_user(self, box: _Sandbox) -> None:
        """Kill every process running as the sandbox's uid, unless the backend already did.

        Root only (otherwise the uid is ours); a backend that contains its processes needs no scan.
        """
        if not self.as_root or self.backend.contains_processes:
            return
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.stat(f"/proc/{entry}").st_uid == box.uid:
                    os.kill(int(entry), signal.SIGKILL)
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue

    def _start_reclaiming(self) -> None:
        if self._reclaiming is None:
            self._reclaiming = asyncio.get_running_loop().create_task(self._reclaim_forever())

    async def _reclaim_forever(self) -> None:
        every = max(0.1, min(self.settings.idle_s / 4, 30.0))
        while True:
            await asyncio.sleep(every)
            await self.reclaim()


UID_LOCKS = os.path.join(tempfile.gettempdir(), "streamflow-sandbox-uids")
_UID_BLOCKS = 4096


def _claim_uid_block(settings: SandboxSettings) -> tuple[IO[str], int]:
    """A block of ``size`` user ids no other pool on this machine uses (its lock and number), held while the pool lives.

    Pools of concurrent runs (or of one run's nodes on one machine) must not share ids: releasing a
    sandbox kills every process of its id, and the process limit counts per id.
    """
    os.makedirs(UID_LOCKS, exist_ok=True)
    for block in range(_UID_BLOCKS):
        handle = open(os.path.join(UID_LOCKS, str(block)), "a")  # noqa: SIM115 - held open for the pool's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return handle, block
    msg = f"all {_UID_BLOCKS} blocks of sandbox user ids are taken by other pools on this machine"
    raise SetupError(msg)


def _setup_problem(backend: Backend, error: str) -> str:
    """One line for a sandbox that cannot run a tool call here: what went wrong and how to fix it."""
    said = error.split("): ", 1)[1] if error.startswith("the tool process died") and "): " in error else error
    if "namespace" in said or "uid map" in said:
        fix = ("user namespaces are off for users other than root: enable them (sysctl -w "
               "kernel.unprivileged_userns_clone=1 user.max_user_namespaces=15000), run as root, "
               "or use sandbox.backend=apptainer")  # fmt: skip
    elif "Permission denied" in said:
        fix = (f"the sandbox's user cannot reach the Python at {backend.python!r}, its installation or the "
               "pool's folder under $TMPDIR; make them readable by other users (chmod o+rx on each folder "
               "above them) or point $TMPDIR at a folder that is")  # fmt: skip
    elif "No such file" in said:
        fix = f"the sandbox's Python {backend.python!r} or its installation is not there"
    else:
        fix = "see docs/sandbox.md"
    return f"sandbox backend {backend.name!r} cannot run a tool call on this machine: {said.strip()}; {fix}"


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def _read_capped(stream: asyncio.StreamReader | None) -> bytes:
    """Everything from ``stream``, keeping at most ``MAX_OUTPUT_BYTES`` (the rest is read and dropped)."""
    if stream is None:
        return b""
    kept = bytearray()
    while chunk := await stream.read(65536):
        if len(kept) < MAX_OUTPUT_BYTES:
            kept += chunk[: MAX_OUTPUT_BYTES - len(kept)]
    return bytes(kept)
