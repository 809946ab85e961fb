"""Launching vLLM / SGLang replicas: exact command lines, and the launch, health and stop logic
exercised with a fake server process (no GPU, no vLLM on this machine)."""

import asyncio
import importlib.util
import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest

from streamflow.errors import ConfigError, SetupError
from streamflow.services.engines import (
    EngineReplica,
    ServerSpec,
    sglang_command,
    start_engine_replicas,
    stop_engine_replicas,
    vllm_command,
)
from streamflow.services.llm import LLMClient

FAKE_SERVER = str(Path(__file__).with_name("fake_engine_server.py"))
PY = "/opt/venv/bin/python"


def fake_spec(*extra_args, **fields):
    """A spec that runs the fake server instead of the engine's module, bound to 127.0.0.1."""
    defaults = {"engine": "vllm", "model": "org/tiny-model", "served_model_name": "tiny", "host": "127.0.0.1",
                "entrypoint": [FAKE_SERVER], "extra_args": list(extra_args), "stop_grace_s": 5.0}  # fmt: skip
    return ServerSpec(**{**defaults, **fields})


def proc_stat(pid):
    """(state, ppid, process group) of a process from /proc, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state, ppid, pgrp = stat.read().rsplit(")", 1)[1].split()[:3]
    except (FileNotFoundError, ProcessLookupError):
        return None
    return state, int(ppid), int(pgrp)


def running(pid=None, *, group=None):
    """True while process ``pid``, or any process of ``group``, is alive (zombies count as gone)."""
    pids = [pid] if group is None else [int(name) for name in os.listdir("/proc") if name.isdigit()]
    for candidate in pids:
        stat = proc_stat(candidate)
        if stat and stat[0] != "Z" and (group is None or stat[2] == group):
            return True
    return False


def wait_gone(pid=None, *, group=None, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while running(pid, group=group) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not running(pid, group=group)


def server_pids(pid_dir):
    """Pids the fake servers wrote with ``--fake-pid-dir``."""
    return [int(name) for name in os.listdir(pid_dir)]


async def chat_once(urls, model):
    client = LLMClient(urls, model=model, max_retries=0)
    try:
        return await client.chat([{"role": "user", "content": "Say hello."}], max_tokens=8)
    finally:
        await client.close()


# -- command lines ---------------------------------------------------------------------------


def test_vllm_command_is_the_documented_openai_server_invocation():
    spec = ServerSpec(engine="vllm", model="meta-llama/Llama-3.1-8B-Instruct", served_model_name="llama",
                      max_num_seqs=256, gpu_memory_utilization=0.9, seed=7, python=PY)  # fmt: skip
    assert vllm_command(spec, 8123, "10.0.0.5") == [
        PY, "-m", "vllm.entrypoints.openai.api_server",
        "--model", "meta-llama/Llama-3.1-8B-Instruct",
        "--served-model-name", "llama",
        "--host", "10.0.0.5",
        "--port", "8123",
        "--tensor-parallel-size", "1",
        "--max-num-seqs", "256",
        "--gpu-memory-utilization", "0.9",
        "--seed", "7",
    ]  # fmt: skip


def test_vllm_with_tensor_parallelism_pins_the_multiprocessing_executor():
    spec = ServerSpec(engine="vllm", model="m", tensor_parallel=4, python=PY)
    argv = vllm_command(spec, 8000, "10.0.0.5")
    assert argv[argv.index("--tensor-parallel-size") + 1] == "4"
    assert argv[-2:] == ["--distributed-executor-backend", "mp"]


def test_sglang_command_is_the_documented_launch_server_invocation():
    spec = ServerSpec(engine="sglang", model="Qwen/Qwen2.5-7B-Instruct", tensor_parallel=2, max_num_seqs=128,
                      gpu_memory_utilization=0.85, seed=3, python=PY)  # fmt: skip
    assert sglang_command(spec, 30001, "10.0.0.6") == [
        PY, "-m", "sglang.launch_server",
        "--model-path", "Qwen/Qwen2.5-7B-Instruct",
        "--served-model-name", "Qwen/Qwen2.5-7B-Instruct",
        "--host", "10.0.0.6",
        "--port", "30001",
        "--tp-size", "2",
        "--max-running-requests", "128",
        "--mem-fraction-static", "0.85",
        "--random-seed", "3",
    ]  # fmt: skip


def test_unset_knobs_are_left_to_the_engine_and_extra_args_come_last():
    spec = ServerSpec(engine="vllm", model="m", python=PY, extra_args=["--max-model-len", "8192", "--seed", "1"])
    argv = vllm_command(spec, 8000, "h")
    assert "--max-num-seqs" not in argv and "--gpu-memory-utilization" not in argv
    assert argv[-4:] == ["--max-model-len", "8192", "--seed", "1"]  # argparse: the last --seed wins


def test_entrypoint_replaces_the_engine_module():
    spec = ServerSpec(engine="sglang", model="m", python=PY, entrypoint=["/srv/wrapper.py"])
    assert sglang_command(spec, 1, "h")[:3] == [PY, "/srv/wrapper.py", "--model-path"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"engine": "tgi"}, "ServerSpec: engine 'tgi' is unknown; use one of vllm, sglang, llamacpp."),
        ({"tensor_parallel": 0}, "ServerSpec: tensor_parallel must be >= 1 (GPUs per replica), got 0."),
        ({"health_path": "health"}, "ServerSpec: health_path must start with '/', got 'health'; e.g. '/health'."),
    ],
)
def test_bad_spec_is_a_one_line_config_error(fields, message):
    with pytest.raises(ConfigError) as error:
        ServerSpec(model="m", **fields)
    assert str(error.value) == message


# -- one replica in this process -----------------------------------------------------------


def test_server_that_exits_at_start_raises_setup_error_with_its_log_tail(tmp_path):
    replica = EngineReplica(fake_spec(env={"FAKE_ENGINE_MODE": "crash"}), str(tmp_path), index=0)
    with pytest.raises(SetupError) as error:
        asyncio.run(replica.start())
    text = str(error.value)
    assert text.startswith("vllm replica 0 exited with code 3 before GET http://127.0.0.1:")
    assert "RuntimeError: CUDA out of memory (fake engine crash)" in text
    assert str(tmp_path / "vllm-0.log") in text


@pytest.mark.parametrize("mode", ["unhealthy", "silent"])
def test_server_that_never_becomes_healthy_times_out_and_is_stopped(tmp_path, mode):
    replica = EngineReplica(fake_spec("--fake-mode", mode, startup_timeout_s=2.0), str(tmp_path))
    pids = []

    async def start():
        task = asyncio.ensure_future(replica.start())
        while (pid := await replica.pid()) is None:
            await asyncio.sleep(0.01)
        pids.append(pid)
        await task

    begun = time.monotonic()
    with pytest.raises(SetupError) as error:
        asyncio.run(start())
    assert time.monotonic() - begun < 10
    text = str(error.value)
    assert "did not answer GET http://127.0.0.1:" in text and "with 200 within 2 s" in text
    assert ("HTTP 503" if mode == "unhealthy" else "no answer within") in text
    assert "raise startup_timeout_s" in text
    assert wait_gone(group=pids[0], timeout_s=1.0)


def test_stop_ends_the_server_and_its_process_group(tmp_path):
    (tmp_path / "pids").mkdir()
    replica = EngineReplica(fake_spec("--fake-pid-dir", str(tmp_path / "pids")), str(tmp_path / "logs"))

    async def scenario():
        url = await replica.start()
        group = await replica.pid()
        alive_before = await replica.alive()
        await replica.stop()
        return url, group, alive_before, await replica.alive()

    url, group, alive_before, alive_after = asyncio.run(scenario())
    assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
    assert alive_before and not alive_after
    [server] = server_pids(tmp_path / "pids")
    assert not running(server) and not running(group=group)
    assert "SIGTERM received, shutting down" in (tmp_path / "logs" / "vllm-0.log").read_text()


def test_missing_vllm_package_gives_the_install_hint(tmp_path):
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    spec = ServerSpec(engine="vllm", model="m")
    with pytest.raises(ConfigError) as error:
        asyncio.run(start_engine_replicas(spec, 1, log_dir=str(tmp_path), num_gpus=0))
    assert str(error.value) == "llm.backend=vllm needs vLLM: pip install 'streamflow-rows[gpu]'"


# -- replicas as Ray actors ---------------------------------------------------------------


def test_gpu_check_fails_in_one_line_before_launching(ray_runtime, tmp_path):
    if ray_runtime.cluster_resources().get("GPU", 0):
        pytest.skip("this Ray cluster has GPUs")
    with pytest.raises(ConfigError) as error:
        asyncio.run(start_engine_replicas(ServerSpec(engine="vllm", model="m"), 2, log_dir=str(tmp_path)))
    assert str(error.value) == (
        "llm.backend=vllm needs 2 replicas x 1 GPU = 2 GPUs; this Ray cluster has 0. "
        "Use llm.backend=sim, or llm.base_url=... for a server started elsewhere."
    )


def test_replicas_on_ray_answer_chat_and_stop(ray_runtime, tmp_path):
    (tmp_path / "pids").mkdir()
    spec = fake_spec("--fake-pid-dir", str(tmp_path / "pids"), host=None, served_model_name=None)

    async def scenario():
        urls, handles = await start_engine_replicas(spec, 2, log_dir=str(tmp_path / "logs"), num_gpus=0, num_cpus=0)
        try:
            groups = await asyncio.gather(*(handle.pid.remote() for handle in handles))
            replies = [await chat_once([url], "org/tiny-model") for url in urls]
        finally:
            await stop_engine_replicas(handles)
        return urls, groups, replies

    urls, groups, replies = asyncio.run(scenario())
    node_ip = ray_runtime.util.get_node_ip_address()
    assert len(set(urls)) == 2 and all(url.startswith(f"http://{node_ip}:") for url in urls)
    assert all(reply.text and reply.completion_tokens > 0 for reply in replies)
    assert all(wait_gone(group=group) for group in groups)
    assert all(not running(pid) for pid in server_pids(tmp_path / "pids"))
    assert sorted(os.listdir(tmp_path / "logs")) == ["vllm-0.log", "vllm-1.log"]


@pytest.mark.parametrize("how", [pytest.param("ray.kill", marks=pytest.mark.slow), "SIGKILL"])  # same stop path
def test_server_stops_gracefully_when_its_actor_is_killed(ray_runtime, tmp_path, how):
    """``ray.kill``, or SIGKILL from outside (the OOM killer): the server still gets SIGTERM and exits."""
    (tmp_path / "pids").mkdir()
    spec = fake_spec("--fake-pid-dir", str(tmp_path / "pids"))

    async def scenario():
        _, handles = await start_engine_replicas(spec, 1, log_dir=str(tmp_path / "logs"), num_gpus=0, num_cpus=0)
        return handles[0], await handles[0].pid.remote()

    handle, group = asyncio.run(scenario())
    [server] = server_pids(tmp_path / "pids")
    assert running(server)
    if how == "ray.kill":
        ray_runtime.kill(handle)
    else:
        os.kill(proc_stat(group)[1], signal.SIGKILL)  # the guard's parent is the actor's worker process
    assert wait_gone(group=group), "the server outlived its actor"
    assert "SIGTERM received, shutting down" in (tmp_path / "logs" / "vllm-0.log").read_text()


@pytest.mark.slow  # starts replicas on Ray; test_replicas_on_ray_answer_chat_and_stop covers launch
def test_one_failed_replica_stops_the_others_and_raises(ray_runtime, tmp_path):
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    crash_once = ["--fake-crash-marker", str(tmp_path / "crashed"), "--fake-crash-after-pids", "2"]  # both run first
    spec = fake_spec(*crash_once, "--fake-pid-dir", str(pid_dir))
    with pytest.raises(SetupError) as error:
        asyncio.run(start_engine_replicas(spec, 2, log_dir=str(tmp_path / "logs"), num_gpus=0, num_cpus=0))
    assert "exited with code 3" in str(error.value)
    pids = server_pids(pid_dir)
    assert len(pids) == 2
    assert all(wait_gone(pid) for pid in pids)


def test_replica_that_cannot_be_placed_fails_instead_of_hanging(ray_runtime, tmp_path):
    with pytest.raises(SetupError) as error:
        asyncio.run(start_engine_replicas(fake_spec(), 1, log_dir=str(tmp_path), num_gpus=0, num_cpus=64,
                                          schedule_timeout_s=1.0))  # fmt: skip
    assert re.fullmatch(
        r"vllm replica 0 was not scheduled within 1 s: no Ray node has 64 CPUs free "
        r"\(the cluster has [\d.]+ CPUs, 0 GPUs free now; other jobs may hold the rest\)\.",
        str(error.value),
    )


def test_the_fake_server_accepts_both_engines_flags():
    """The fake stands in for both engines only if it parses both command lines."""
    sys.path.insert(0, str(Path(FAKE_SERVER).parent))
    try:
        import fake_engine_server
    finally:
        sys.path.pop(0)
    spec = fake_spec(engine="sglang", tensor_parallel=2, seed=1)
    args, unknown = fake_engine_server._parser().parse_known_args(sglang_command(spec, 9, "h")[2:])
    assert (args.model, args.served_model_name, args.port, args.tp) == ("org/tiny-model", "tiny", 9, 2)
    assert unknown == ["--random-seed", "1"]
