"""``python -m streamflow.serve``: LLM servers apart from any run, found by runs through llm.endpoints_dir."""

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import streamflow
from streamflow import ConfigError
from streamflow.config import compose
from streamflow.serve import gpu_slices, published_endpoints, wait_for_published
from streamflow.testing import read_output

REPO = Path(__file__).resolve().parents[1]


def test_published_endpoints_are_the_url_files_of_a_folder(tmp_path):
    (tmp_path / "n1-10.0.0.1-8000.url").write_text("http://10.0.0.1:8000/v1\n")
    (tmp_path / "n2-10.0.0.2-8000.url").write_text("http://10.0.0.2:8000/v1\n")
    (tmp_path / ".n3-10.0.0.3-8000.url.tmp").write_text("http://10.0.0.3:8000/v1")  # still being written
    (tmp_path / "notes.txt").write_text("not an endpoint")
    assert published_endpoints(str(tmp_path)) == ["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"]
    assert published_endpoints(str(tmp_path / "missing")) == []


def test_a_run_gives_up_on_an_empty_endpoints_folder_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=f"llm.endpoints_dir={tmp_path}: no LLM server published there answered"):
        wait_for_published(str(tmp_path), 0.2, poll_s=0.05)


def test_an_endpoint_left_behind_by_a_dead_server_is_skipped(tmp_path, caplog):
    (tmp_path / "n1-10.0.0.1-8000.url").write_text("http://10.0.0.1:8000/v1\n")  # its node was lost
    (tmp_path / "n2-10.0.0.2-8000.url").write_text("http://10.0.0.2:8000/v1\n")
    alive = {"http://10.0.0.2:8000/v1"}
    assert wait_for_published(str(tmp_path), 1, probe=alive.__contains__) == ["http://10.0.0.2:8000/v1"]
    assert "http://10.0.0.1:8000/v1 is published" in caplog.text and "does not answer" in caplog.text


def test_endpoints_dir_with_a_backend_that_starts_servers_is_refused():
    with pytest.raises(
        ConfigError, match=re.escape("llm.endpoints_dir uses servers started elsewhere, but llm.backend=vllm")
    ):
        compose({"input": {"path": "in.parquet"}}, ["llm.endpoints_dir=/shared/endpoints", "llm.backend=vllm"])


def test_replicas_on_one_node_get_their_own_gpus():
    assert gpu_slices(2, 4, "0,1,2,3,4,5,6,7") == [
        {"CUDA_VISIBLE_DEVICES": "0,1,2,3"},
        {"CUDA_VISIBLE_DEVICES": "4,5,6,7"},
    ]
    assert gpu_slices(2, 1, None) == [{}, {}]  # no GPUs requested from SLURM: the engine decides
    with pytest.raises(ConfigError, match="needs 4 GPUs on this node; it has 2"):
        gpu_slices(2, 2, "0,1")


def test_served_endpoints_feed_a_run_and_vanish_when_the_servers_stop(ray_runtime, tmp_path, fast_run):
    folder = tmp_path / "endpoints"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamflow.serve",
            "llm.replicas=2",
            "llm.sim.time_scale=0.01",
            "--publish",
            str(folder),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        urls = wait_for_published(str(folder), 60, poll_s=0.2)
        while len(urls) < 2:
            time.sleep(0.2)
            urls = published_endpoints(str(folder))
        with urllib.request.urlopen(urls[0] + "/models", timeout=10) as answer:
            assert b"sim-8b" in answer.read()
        result = streamflow.run(
            REPO / "pipelines" / "natural_reasoning.py", ["limit=20", f"llm.endpoints_dir={folder}", *fast_run]
        )
        assert result.rows_read == 20 and result.balanced
        assert not any(status.startswith("error") for status in result.statuses)
        assert read_output(result).height == 20
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=30)
    assert server.returncode == 0, output
    assert os.listdir(folder) == []  # a stopped server is no longer advertised
    assert "runs use them with: llm.endpoints_dir=" in output
