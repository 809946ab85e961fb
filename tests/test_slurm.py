"""slurm/ under a real SLURM: Debian's slurm-wlm and munge on this machine, two slurmd as two nodes.

Each test submits the scripts with sbatch exactly as a user would and reads the output with
polars. The simulated LLM runs in real time, so a run lasts long enough to be cancelled mid-way.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
BASE = "/tmp/streamflow-slurm-test"  # fixed: SLURM's ports are fixed too, so a leftover is found and stopped
PIPELINE = "pipelines/natural_reasoning.py"
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A 2-node SLURM on localhost; yields the environment sbatch is called with."""
    if os.geteuid() != 0:
        pytest.skip("SLURM's daemons are started as root (scripts/slurm-localhost.sh)")
    installed = subprocess.run(
        ["bash", "scripts/install-slurm.sh"], cwd=REPO, capture_output=True, text=True, check=False
    )
    if installed.returncode != 0 and not shutil.which("slurmctld"):
        pytest.skip(f"could not install slurm-wlm and munge: {installed.stderr.strip()[-300:]}")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RAY_", "SLURM_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}:{env['PATH']}",  # jobs inherit the environment streamflow is in
        STREAMFLOW_SLURM_BASE=BASE,
        SLURM_CONF=f"{BASE}/slurm.conf",
        STREAMFLOW_SLURM_STATE=str(tmp_path_factory.mktemp("slurm-state")),
        STREAMFLOW_OBJECT_STORE_BYTES=str(300 * 2**20),  # three Ray runtimes may share this machine
        STREAMFLOW_RAY_TMP=tempfile.mkdtemp(prefix="sft-", dir="/tmp"),  # short: Ray's socket paths live in it
    )
    started = subprocess.run(
        ["bash", "scripts/slurm-localhost.sh", "start", "2"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    yield env
    subprocess.run(["scancel", "--user=root"], env=env, check=False)
    for _ in range(90):  # let the jobs' processes (Ray drains) end before the daemons go
        queue = subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True, check=False)
        if not queue.stdout.strip():
            break
        time.sleep(1)
    subprocess.run(["bash", "scripts/slurm-localhost.sh", "stop"], cwd=REPO, env=env, check=False)
    shutil.rmtree(env["STREAMFLOW_RAY_TMP"], ignore_errors=True)


class Jobs:
    """sbatch, scancel and scontrol as a test uses them; every job logs to ``logs/<job>.log``."""

    def __init__(self, env, tmp_path):
        self.env = env
        self.logs = tmp_path / "logs"
        self.logs.mkdir()

    def submit(self, script, *args, nodes=1):
        done = subprocess.run(
            ["sbatch", "--parsable", f"--nodes={nodes}", f"--output={self.logs}/%j.log", f"slurm/{script}", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    def show(self, job):
        done = subprocess.run(
            ["scontrol", "show", "job", job], env=self.env, capture_output=True, text=True, check=False
        )
        return dict(field.split("=", 1) for field in done.stdout.split() if "=" in field)

    def wait(self, job, timeout=240):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.show(job)
            if info.get("JobState") in ENDED:
                return info
            time.sleep(1)
        pytest.fail(f"job {job} still {self.show(job).get('JobState')} after {timeout} s\n{self.log(job)}")

    def cancel(self, job, *options):
        subprocess.run(["scancel", *options, job], env=self.env, check=True)

    def wait_until(self, job, reached, what, timeout=120):
        """Poll ``reached()`` while the job runs; fail with its log if the job ends or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while not reached():
            assert self.show(job).get("JobState") in {"PENDING", "RUNNING"}, self.log(job)
            assert time.monotonic() < deadline, f"{what} after {timeout} s\n{self.log(job)}"
            time.sleep(0.5)

    def log(self, job):
        path = self.logs / f"{job}.log"
        return path.read_text() if path.exists() else "(no log)"


@pytest.fixture
def jobs(slurm, tmp_path):
    return Jobs(slurm, tmp_path)


def run_args(tmp_path, rows, *extra):
    return [PIPELINE, f"limit={rows}", f"output.dir={tmp_path / 'out'}", "metrics.enabled=false", *extra]


def completed(jobs, job, timeout=240):
    info = jobs.wait(job, timeout)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), jobs.log(job)
    return info


def dataset(run_dir):
    return pl.read_parquet(f"{run_dir}/data/*.parquet")


def committed_rows(run_dir):
    parts = list(Path(run_dir, "data").glob("part-*.parquet"))
    return pl.read_parquet(parts).height if parts else 0


def assert_complete(run_dir, rows):
    frame = dataset(run_dir)
    assert frame.height == rows and frame["row_id"].n_unique() == rows  # no row lost, none twice
    assert frame.filter(pl.col("status").str.starts_with("error")).height == 0
    manifest = json.loads(Path(run_dir, "manifest.json").read_text())
    assert manifest["ledger_balanced"] and manifest["summary"]["rows_read"] == rows
    return frame, manifest


def test_a_one_node_job_turns_the_sample_into_parquet(jobs, tmp_path):
    job = jobs.submit("streamflow.sbatch", *run_args(tmp_path, 150))
    completed(jobs, job)
    run_dir = tmp_path / "out" / "natural_reasoning" / f"slurm-{job}"
    frame, manifest = assert_complete(run_dir, 150)
    assert manifest["cluster"] == {"nodes": 1, "cpus": 1.0, "gpus": 0.0}
    assert {"question", "scores", "status"} <= set(frame.columns)
    assert frame.filter(pl.col("status") == "ok")["question"].null_count() == 0


def test_a_two_node_job_runs_a_ray_worker_on_its_second_node(jobs, tmp_path):
    job = jobs.submit("streamflow.sbatch", *run_args(tmp_path, 100), nodes=2)
    completed(jobs, job)
    _, manifest = assert_complete(tmp_path / "out" / "natural_reasoning" / f"slurm-{job}", 100)
    assert manifest["cluster"] == {"nodes": 2, "cpus": 2.0, "gpus": 0.0}


def test_a_worker_job_joins_the_head_jobs_cluster_and_leaves_with_it(jobs, tmp_path):
    head = jobs.submit("streamflow.sbatch", *run_args(tmp_path, 150, "cluster.nodes=2"))
    worker = jobs.submit("worker.sbatch", head)  # submitted after the head job: it waits for the head's address
    completed(jobs, head)
    _, manifest = assert_complete(tmp_path / "out" / "natural_reasoning" / f"slurm-{head}", 150)
    assert manifest["cluster"] == {"nodes": 2, "cpus": 2.0, "gpus": 0.0}  # the run waited for the worker job
    assert jobs.wait(worker, timeout=60)["JobState"] == "COMPLETED", jobs.log(worker)
    assert "the head of job" in jobs.log(worker)


def test_an_llm_job_serves_a_run_that_names_its_endpoints_and_unlists_them_when_cancelled(jobs, slurm, tmp_path):
    llm = jobs.submit("llm.sbatch", "llm.replicas=2")
    endpoints = Path(slurm["STREAMFLOW_SLURM_STATE"]) / llm / "endpoints"
    job = jobs.submit("streamflow.sbatch", *run_args(tmp_path, 100, f"llm.endpoints_dir={endpoints}"))
    completed(jobs, job)
    assert_complete(tmp_path / "out" / "natural_reasoning" / f"slurm-{job}", 100)
    assert "llm.endpoints_dir: 2 endpoints" in jobs.log(job)
    assert jobs.show(llm)["JobState"] == "RUNNING"  # the servers outlive the run
    jobs.cancel(llm)
    assert jobs.wait(llm, timeout=60)["JobState"] == "CANCELLED"
    assert list(endpoints.iterdir()) == [], jobs.log(llm)


def test_a_job_lists_its_metrics_endpoint_for_prometheus_while_it_runs(jobs, tmp_path):
    """With STREAMFLOW_PROMETHEUS_DIR the job writes a file_sd_configs target for its driver, removed at the end."""
    targets = tmp_path / "prometheus-targets"
    targets.mkdir()
    jobs.env = {**jobs.env, "STREAMFLOW_PROMETHEUS_DIR": str(targets)}
    job = jobs.submit("streamflow.sbatch", PIPELINE, "limit=300", f"output.dir={tmp_path / 'out'}")
    target_file = targets / f"streamflow-{job}.json"
    jobs.wait_until(job, target_file.exists, "no target file")
    ((target,),) = [group["targets"] for group in json.loads(target_file.read_text())]
    assert json.loads(target_file.read_text())[0]["labels"] == {"slurm_job_id": job}

    def serves_the_run():
        try:
            page = urllib.request.urlopen(f"http://{target}/metrics", timeout=2).read().decode()
        except OSError:
            return False
        return f'run_id="slurm-{job}"' in page

    jobs.wait_until(job, serves_the_run, f"no metrics of run slurm-{job} at {target}")
    completed(jobs, job)
    assert not target_file.exists() and list(targets.iterdir()) == []
    assert f"metrics: http://{target}/metrics" in jobs.log(job)


def test_a_new_job_refuses_an_old_run_that_has_its_default_name(jobs, tmp_path):
    """SLURM reuses job ids (a new controller starts again at 1): a job's first attempt never continues
    the run of an earlier job that had the same id."""
    held = subprocess.run(
        ["sbatch", "--parsable", "--hold", "--wrap", "true"], env=jobs.env, capture_output=True, text=True, check=True
    ).stdout.strip()
    jobs.cancel(held)
    old = tmp_path / "out" / "natural_reasoning" / f"slurm-{int(held) + 1}" / "data"
    old.mkdir(parents=True)
    (old / "part-000-00000.parquet").write_bytes(b"an earlier job's output")
    job = jobs.submit("streamflow.sbatch", *run_args(tmp_path, 50))
    assert job == str(int(held) + 1)
    info = jobs.wait(job, timeout=120)
    assert (info["JobState"], info["ExitCode"]) == ("FAILED", "2:0"), jobs.log(job)
    assert "already holds data; choose another run_id" in jobs.log(job)
    assert (old / "part-000-00000.parquet").read_bytes() == b"an earlier job's output"


def test_scancel_mid_run_then_resubmitting_completes_without_loss_or_duplicates(jobs, tmp_path):
    args = run_args(tmp_path, 400, "run_id=nr-resubmitted", "output.commit_s=1")
    run_dir = tmp_path / "out" / "natural_reasoning" / "nr-resubmitted"
    first = jobs.submit("streamflow.sbatch", *args)
    jobs.wait_until(first, lambda: committed_rows(run_dir) >= 20, "nothing committed")
    jobs.cancel(first)
    assert jobs.wait(first, timeout=60)["JobState"] == "CANCELLED"
    before = dataset(run_dir)
    assert 0 < before.height < 400

    second = jobs.submit("streamflow.sbatch", *args)
    completed(jobs, second)
    frame, _ = assert_complete(run_dir, 400)
    assert f"{before['row_id'].n_unique()} input rows already committed" in jobs.log(second)
    kept = frame.join(before.select("row_id"), on="row_id", how="semi").sort("row_id")
    assert kept.equals(before.sort("row_id"))  # what the cancelled job committed stays as it was


def rows_done(log):
    """The most rows a job's progress log lines report as done."""
    return max((int(done.replace(",", "")) for done in re.findall(r"([\d,]+)/[\d,]+ rows", log)), default=0)


def test_a_job_warned_of_its_time_limit_commits_requeues_itself_and_finishes_the_run(jobs, tmp_path):
    # commit_s=600: nothing is committed before the warning unless the stop itself commits it
    job = jobs.submit("streamflow.sbatch", *run_args(tmp_path, 400, "output.commit_s=600", "progress=log"))
    run_dir = tmp_path / "out" / "natural_reasoning" / f"slurm-{job}"
    jobs.wait_until(job, lambda: rows_done(jobs.log(job)) >= 40, "no progress")
    jobs.cancel(job, "--batch", "--signal=USR1")  # what #SBATCH --signal=B:USR1@300 sends before the limit
    info = completed(jobs, job, timeout=300)
    assert info["Restarts"] == "1"
    assert_complete(run_dir, 400)
    log = jobs.log(job)
    assert "SIGTERM received: committing the rows the sinks hold" in log and "requeueing job" in log
    committed_at_stop = int(re.search(r"resume: (\d+) input rows already committed", log).group(1))
    assert committed_at_stop >= 40  # the rows done before the warning were kept, not rerun
