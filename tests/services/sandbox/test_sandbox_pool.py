"""Sandboxes keep a tool call inside its own directory, off the network and within its limits."""

import asyncio
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from streamflow.services.sandbox import (
    Apptainer,
    Bubblewrap,
    Interpreter,
    Limits,
    SandboxError,
    SandboxPool,
    SandboxSettings,
)

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap is not installed (apt-get install -y bubblewrap; .ci/run does)"
)
PY = "/usr/bin/python3"


def pool_run(body, **settings):
    """Run ``body(pool)`` against a fresh in-process pool, closing it afterwards."""

    async def go():
        pool = SandboxPool(SandboxSettings(**{"timeout_s": 10.0, **settings}))
        try:
            return await body(pool)
        finally:
            await pool.close()

    return asyncio.run(go())


def python(code):
    return [PY, "-I", "-S", "-c", code]


def test_a_command_runs_in_its_private_directory_and_sees_the_files_given_to_it():
    async def body(pool):
        box = await pool.acquire("row-1", files={"data/in.txt": b"hello"})
        result = await pool.run(box, python("import os; print(os.getcwd(), open('data/in.txt').read())"))
        written = await pool.run(box, python("open('out.txt', 'w').write('made inside')"))
        return result, written, await pool.read(box, "out.txt")

    result, written, out = pool_run(body)
    assert result.ok and result.stdout.split() == ["/work", "hello"]
    assert written.ok and out == b"made inside"


def test_state_persists_between_commands_of_one_sandbox_but_not_across_sandboxes():
    async def body(pool):
        first, second = await pool.acquire("a"), await pool.acquire("b")
        await pool.run(first, python("open('state', 'w').write('1')"))
        again = await pool.run(first, python("print(open('state').read())"))
        other = await pool.run(second, python("import os; print(os.listdir('.'))"))
        return again, other

    again, other = pool_run(body)
    assert again.stdout.strip() == "1"
    assert other.stdout.strip() == "[]"


def test_a_command_cannot_read_or_write_outside_its_sandbox(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    python_home = Interpreter.running().home
    home = [str(entry) for entry in Path.home().iterdir() if not python_home.startswith(str(entry))]
    code = f"""
import os
for path in ({str(secret)!r}, '/etc/passwd', {os.getcwd()!r}, *{home!r}):
    print(path, os.path.exists(path))
for path in ('/usr/evil', '/evil', '../evil'):
    try:
        open(path, 'w').write('x'); print('wrote', path)
    except OSError as exc:
        print('refused', path)
"""

    async def body(pool):
        box = await pool.acquire("row")
        return await pool.run(box, python(code))

    result = pool_run(body)
    assert "True" not in result.stdout, result.stdout
    assert "wrote" not in result.stdout and result.stdout.count("refused") == 3


def test_host_side_file_access_refuses_paths_that_leave_the_sandbox():
    async def body(pool):
        box = await pool.acquire("row")
        await pool.run(box, ["/usr/bin/ln", "-s", "/etc", "link"])
        errors = []
        for path in ("../escape", "/etc/passwd", "a/../../escape", "link/passwd"):
            with pytest.raises(SandboxError, match="outside the sandbox"):
                await pool.read(box, path)
            errors.append(path)
        with pytest.raises(SandboxError, match="outside the sandbox"):
            await pool.write(box, "link/owned", b"x")
        return errors

    assert len(pool_run(body)) == 4


def test_a_command_cannot_reach_the_network_not_even_the_hosts_loopback():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    threading.Thread(target=lambda: server.accept(), daemon=True).start()
    code = f"""
import socket
for host in ('127.0.0.1', '8.8.8.8'):
    try:
        socket.create_connection((host, {port} if host == '127.0.0.1' else 53), timeout=2); print('reached', host)
    except OSError as exc:
        print('blocked', host, exc.errno)
"""

    async def body(pool):
        return await pool.run(await pool.acquire("row"), python(code))

    result = pool_run(body)
    server.close()
    assert "reached" not in result.stdout and result.stdout.count("blocked") == 2


def test_a_command_that_runs_too_long_is_killed_at_its_timeout():
    async def body(pool):
        box = await pool.acquire("row")
        started = time.monotonic()
        result = await pool.run(box, python("import time; time.sleep(60)"), timeout_s=1.0)
        return result, time.monotonic() - started, await pool.run(box, python("print('still usable')"))

    result, took, after = pool_run(body)
    assert result.timed_out and not result.ok and took < 5
    assert after.ok and "still usable" in after.stdout


def test_a_memory_hog_fails_alone_and_the_pool_goes_on():
    async def body(pool):
        box = await pool.acquire("row")
        hog = await pool.run(box, python("x = bytearray(2_000_000_000); print('allocated')"))
        return hog, await pool.run(box, python("print(6 * 7)"))

    hog, after = pool_run(body, memory_mb=256)
    assert not hog.ok and "allocated" not in hog.stdout and "MemoryError" in hog.stderr
    assert after.stdout.strip() == "42"


def test_a_fork_bomb_is_contained_and_another_sandbox_keeps_working():
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"

    async def body(pool):
        bombed, calm = await pool.acquire("bomb"), await pool.acquire("calm")
        bombing = asyncio.ensure_future(pool.run(bombed, python(bomb), timeout_s=3.0))
        await asyncio.sleep(1.0)
        during = await pool.run(calm, python("print('fine')"), timeout_s=5.0)
        result = await bombing
        return result, during, pool.first_uid

    result, during, first_uid = pool_run(body, processes=32)
    assert result.timed_out
    assert during.ok and during.stdout.strip() == "fine"
    assert _processes_gone(first_uid, within_s=3.0)


def _processes_gone(uid, within_s):
    """True once no process runs as ``uid`` (killed processes take a moment to leave /proc)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not any(p.isdigit() and _uid_of(p) == uid for p in os.listdir("/proc")):
            return True
        time.sleep(0.1)
    return False


def _processes_of(uid):
    return sum(1 for p in os.listdir("/proc") if p.isdigit() and _uid_of(p) == uid)


def _uid_of(pid):
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except FileNotFoundError:
        return None


def test_sandboxes_left_idle_are_reclaimed_and_their_slots_reused():
    async def body(pool):
        leaked = await pool.acquire("crashed-row")
        await asyncio.sleep(1.0)
        assert await pool.reclaim() >= 0  # the background task may have done it already
        with pytest.raises(SandboxError, match="unknown sandbox"):
            await pool.run(leaked, ["/usr/bin/true"])
        fresh = await pool.acquire("next-row")  # size 1: only possible if the slot came back
        return pool.stats(), fresh

    stats, fresh = pool_run(body, size=1, idle_s=0.3)
    assert stats["reclaimed"] == 1 and stats["in_use"] == 1 and fresh


def test_a_full_pool_makes_the_row_wait_then_fail_with_a_clear_error():
    async def body(pool):
        await pool.acquire("a")
        with pytest.raises(SandboxError, match="no free sandbox"):
            await pool.acquire("b")

    pool_run(body, size=1, acquire_timeout_s=0.2)


def test_output_is_captured_up_to_a_cap():
    async def body(pool):
        return await pool.run(await pool.acquire("row"), python("import sys; sys.stdout.write('x' * 3_000_000)"))

    result = pool_run(body)
    assert result.ok and len(result.stdout) == 1 << 20


def test_bubblewrap_as_root_mounts_then_drops_to_the_sandbox_user_with_no_capabilities():
    python = Interpreter("/home/ann/.pyenv/versions/3.11.7/bin/python3.11", "/home/ann/.pyenv/versions/3.11.7")
    command = Bubblewrap(python).command("/srv/box/3", [PY, "tool.py"], Limits(memory_mb=128, processes=16), 200_003)
    assert command[0] == "prlimit" and "--as=134217728" in command and "--nproc=16" in command
    bwrap = command[command.index("bwrap") : command.index("setpriv")]
    assert "--unshare-net" in bwrap and "--unshare-pid" in bwrap and "--die-with-parent" in bwrap
    assert bwrap[bwrap.index("--bind") + 1 : bwrap.index("--bind") + 3] == ["/srv/box/3", "/work"]
    assert bwrap[bwrap.index("--ro-bind", bwrap.index("/work")) + 1] == python.home  # read-only, at its own path
    for parent in ("/home", "/home/ann", "/home/ann/.pyenv", "/home/ann/.pyenv/versions"):
        assert bwrap[bwrap.index(parent) - 3 : bwrap.index(parent)] == ["--perms", "0755", "--dir"]
    assert bwrap[bwrap.index("PATH") + 1].startswith("/home/ann/.pyenv/versions/3.11.7/bin:")
    setpriv = command[command.index("setpriv") : -2]
    assert setpriv[1:3] == ["--reuid=200003", "--regid=200003"] and "--bounding-set=-all" in setpriv
    assert command[-2:] == [PY, "tool.py"]


def test_bubblewrap_without_root_runs_as_the_caller_in_a_user_namespace():
    command = Bubblewrap(Interpreter("/usr/bin/python3.11", "/usr")).command("/srv/box/3", ["ls"], Limits(), None)
    assert "--unshare-all" in command and "setpriv" not in command and "--cap-add" not in command
    assert "/usr/bin/python3.11" not in command  # an interpreter under /usr needs no mount of its own


def test_apptainer_command_has_the_same_isolation_with_an_image():
    command = Apptainer("/images/tools.sif").command("/srv/box/3", ["python3", "tool.py"], Limits(), 200_003)
    assert command[:1] == ["setpriv"] and "apptainer" in command
    tail = command[command.index("apptainer") :]
    assert tail[:2] == ["apptainer", "exec"]
    for flag in ("--containall", "--no-home"):
        assert flag in tail
    assert tail[tail.index("--network") + 1] == "none" and "--net" in tail
    assert tail[tail.index("--bind") + 1] == "/srv/box/3:/work" and tail[tail.index("--pwd") + 1] == "/work"
    assert tail[-3:] == ["/images/tools.sif", "python3", "tool.py"]


def test_a_sandboxed_command_has_no_capability_and_cannot_become_root():
    code = """
import os
status = dict(line.split(':', 1) for line in open('/proc/self/status').read().splitlines())
print(os.getuid(), status['CapEff'].strip(), status['CapBnd'].strip(), status['NoNewPrivs'].strip())
try:
    os.setuid(0); print('became root')
except PermissionError:
    print('refused')
"""

    async def body(pool):
        return await pool.run(await pool.acquire("row"), python(code)), pool.first_uid

    result, first_uid = pool_run(body)
    uid, effective, bounding, no_new_privs, setuid = result.stdout.split()
    assert int(uid) == first_uid or os.geteuid() != 0
    assert effective == bounding == "0000000000000000" and no_new_privs == "1" and setuid == "refused"


def test_a_missing_backend_is_named_with_what_to_install(monkeypatch):
    from streamflow import SetupError

    monkeypatch.setattr(shutil, "which", lambda tool: None if tool == "bwrap" else f"/usr/bin/{tool}")
    with pytest.raises(SetupError, match="apt-get install -y bubblewrap"):
        SandboxPool(SandboxSettings())
    assert "/nope.sif' does not exist" in (Apptainer("/nope.sif").missing() or "")
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    assert "needs 'apptainer'" in (Apptainer("/nope.sif").missing() or "")


def test_two_pools_on_one_machine_never_share_user_ids():
    async def body(pool):
        other = SandboxPool(pool.settings, name="other")
        try:
            mine, theirs = await pool.acquire("a"), await other.acquire("b")
            ids = [
                (await p.run(box, python("import os; print(os.getuid())"))).stdout.strip()
                for p, box in ((pool, mine), (other, theirs))
            ]
            return ids, pool.first_uid != other.first_uid
        finally:
            await other.close()

    (uid_a, uid_b), distinct = pool_run(body, size=8)
    assert distinct and uid_a != uid_b


TOOL = b"""
import os
calls = []

def add(a, b):
    calls.append(1)
    print("noise on stdout")
    return {"sum": a + b, "calls": len(calls), "pid": os.getpid()}

def boom():
    raise ValueError("bad input")

def hog():
    return len(bytearray(2_000_000_000))

def die():
    os._exit(3)

def slow():
    import time
    time.sleep(60)

def peek():
    return os.path.exists("/etc/passwd"), os.listdir("/")
"""


def test_python_tool_calls_keep_one_process_per_sandbox_and_return_json():
    async def body(pool):
        box = await pool.acquire("row", files={"tool.py": TOOL})
        first = await pool.call(box, "tool", "add", {"a": 2, "b": 3})
        second = await pool.call(box, "tool", "add", {"a": 1, "b": 1})
        return first, second

    first, second = pool_run(body)
    assert first.ok and first.result["sum"] == 5 and second.result["sum"] == 2
    assert second.result["calls"] == 2 and second.result["pid"] == first.result["pid"]  # the same warm process


def test_a_failing_tool_call_reports_its_exception_and_the_next_call_works():
    async def body(pool):
        box = await pool.acquire("row", files={"tool.py": TOOL})
        return (
            await pool.call(box, "tool", "boom"),
            await pool.call(box, "tool", "missing"),
            await pool.call(box, "tool", "add", {"a": 1}),
            await pool.call(box, "tool", "add", {"a": 1, "b": 2}),
        )

    boom, missing, bad_args, fine = pool_run(body)
    assert boom.error == "ValueError: bad input"
    assert missing.error.startswith("AttributeError") and bad_args.error.startswith("TypeError")
    assert fine.ok and fine.result["sum"] == 3


def test_a_tool_call_that_dies_hogs_or_hangs_costs_only_that_call():
    async def body(pool):
        box = await pool.acquire("row", files={"tool.py": TOOL})
        died = await pool.call(box, "tool", "die")
        hog = await pool.call(box, "tool", "hog")
        hung = await pool.call(box, "tool", "slow", timeout_s=1.0)
        return died, hog, hung, await pool.call(box, "tool", "add", {"a": 1, "b": 2})

    died, hog, hung, after = pool_run(body, memory_mb=256)
    assert "died (exit 3)" in died.error
    assert hog.error.startswith("MemoryError")
    assert hung.timed_out and "timed out" in hung.error
    assert after.ok and after.result["sum"] == 3


DAEMON = b"""
import os, signal, time

def detach():
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                signal.signal(sig, signal.SIG_IGN)
            while True:
                time.sleep(1)
        os._exit(0)
    return os.getuid()
"""


def test_nothing_a_tool_detaches_outlives_its_sandbox():
    async def body(pool):
        box = await pool.acquire("row", files={"tool.py": DAEMON})
        uid = (await pool.call(box, "tool", "detach")).result
        await asyncio.sleep(0.3)
        running = _processes_of(uid)
        await pool.release(box)
        return uid, running

    uid, running = pool_run(body)
    assert running >= 2  # the tool-call server and the detached process that ignores SIGTERM and SIGHUP
    assert _processes_gone(uid, within_s=2.0)


def test_a_command_that_exits_takes_what_it_detached_with_it():
    detach = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint(os.getuid())"

    async def body(pool):
        box = await pool.acquire("row")
        uid = int((await pool.run(box, python(detach))).stdout)
        return _processes_gone(uid, within_s=2.0)  # while the sandbox is still held

    assert pool_run(body)


def test_python_tool_calls_are_as_isolated_as_commands():
    async def body(pool):
        box = await pool.acquire("row", files={"tool.py": TOOL})
        return await pool.call(box, "tool", "peek")

    result = pool_run(body)
    passwd_visible, root = result.result
    assert passwd_visible is False and "etc" not in root


def test_a_sandbox_that_cannot_start_python_is_refused_before_any_row_with_one_line():
    from streamflow import SetupError

    async def body(pool):
        pool.backend = Bubblewrap(Interpreter("/opt/missing-python/bin/python3", "/opt/missing-python"))
        await pool.check()

    with pytest.raises(SetupError) as refused:
        pool_run(body)
    message = str(refused.value)
    assert message.startswith("sandbox backend 'bubblewrap' cannot run a tool call on this machine: bwrap: ")
    assert "/opt/missing-python" in message and "\n" not in message


def test_user_namespaces_switched_off_are_named_with_the_fix():
    from streamflow.services.sandbox.pool import _setup_problem

    said = "the tool process died (exit 1): bwrap: No permissions to creating new namespace, likely because the kernel does not allow non-privileged user namespaces."
    message = _setup_problem(Bubblewrap(), said)
    assert message.startswith("sandbox backend 'bubblewrap' cannot run a tool call on this machine: bwrap: No perm")
    assert "kernel.unprivileged_userns_clone=1" in message and "\n" not in message


def test_a_working_sandbox_passes_the_check_and_leaves_no_sandbox_behind():
    async def body(pool):
        await pool.check()
        return pool.stats()

    stats = pool_run(body)
    assert stats["in_use"] == 0 and stats["acquired"] == stats["released"] == 1
