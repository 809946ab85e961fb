"""The Ray cluster a run waits for, and the cluster=slurm config group that describes a SLURM job's cluster."""

import json
import subprocess
import sys

import pytest

from streamflow import ConfigError
from streamflow.cluster import ClusterShape, wait_for_cluster
from streamflow.config import ClusterConfig, compose
from streamflow.errors import SetupError


def node(cpus=2.0, gpus=0.0, alive=True):
    resources = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    return {"Alive": alive, "Resources": resources}


class FakeClock:
    """Time that passes only when the code under test sleeps."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_a_shape_counts_only_alive_nodes():
    shape = ClusterShape.of([node(4, 1), node(2), node(8, 8, alive=False)])
    assert shape == ClusterShape(nodes=2, cpus=6.0, gpus=1.0)


def test_a_shape_names_everything_it_lacks():
    shape = ClusterShape(nodes=1, cpus=2.0, gpus=0.0)
    assert shape.missing(ClusterConfig(nodes=1)) is None
    assert shape.missing(ClusterConfig(nodes=3, cpus=2, gpus=8)) == "1 of 3 nodes, 0 of 8 GPUs"


def test_the_run_waits_until_the_worker_jobs_have_joined():
    clock = FakeClock()
    joined = iter([[node()], [node()], [node(), node()]])
    shape = wait_for_cluster(ClusterConfig(nodes=2), nodes=lambda: next(joined), clock=clock, sleep=clock.sleep)
    assert shape.nodes == 2 and clock.now == 2.0


def test_a_cluster_that_stays_too_small_stops_the_run_naming_what_is_missing():
    clock = FakeClock()
    with pytest.raises(SetupError, match=r"has 1 of 3 nodes after waiting 10 s \(cluster.wait_s\)"):
        wait_for_cluster(ClusterConfig(nodes=3, wait_s=10), nodes=lambda: [node()], clock=clock, sleep=clock.sleep)
    assert clock.now == 10.0


def test_the_default_cluster_is_a_local_runtime():
    cfg = compose({"input": {"path": "in.parquet"}})
    assert cfg.cluster == ClusterConfig(kind="local") and cfg.ray.address is None
    assert cfg.run_id is None and cfg.resume is None


def test_cluster_slurm_joins_the_jobs_ray_and_names_the_run_after_the_job(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "3")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:24220")
    cfg = compose({"input": {"path": "in.parquet"}}, ["cluster=slurm"])
    assert cfg.cluster.kind == "slurm" and cfg.cluster.nodes == 3
    assert cfg.ray.address == "10.0.0.5:24220"
    assert cfg.run_id == "slurm-4242" and cfg.resume == "auto"  # a requeued job continues its own run
    assert cfg.progress == "log"


def test_cluster_slurm_keeps_what_the_command_line_says(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "1")
    cfg = compose({"input": {"path": "in.parquet"}}, ["cluster.nodes=4", "run_id=nr-full", "cluster=slurm"])
    assert cfg.cluster.nodes == 4 and cfg.run_id == "nr-full"


def test_resume_auto_needs_a_run_name():
    with pytest.raises(ConfigError, match="resume=auto continues the run named by run_id"):
        compose({"input": {"path": "in.parquet"}}, ["resume=auto"])


@pytest.mark.parametrize("override", ["cluster.nodes=0", "cluster.wait_s=0", "cluster.gpus=-1", "cluster.kind=k8s"])
def test_bad_cluster_knobs_are_one_line_errors(override):
    with pytest.raises(ConfigError, match="cluster"):
        compose({"input": {"path": "in.parquet"}}, [override])


@pytest.mark.parametrize(
    ("configured", "environment", "joins", "num_cpus"),
    [
        (None, None, "local", 2),  # not the cluster some `ray start` left running on the machine
        (None, "10.0.0.1:6379", "10.0.0.1:6379", None),
        ("auto", "10.0.0.1:6379", "auto", None),
    ],
)
def test_a_run_starts_its_own_ray_unless_told_which_cluster_to_join(
    monkeypatch, configured, environment, joins, num_cpus
):
    import ray

    from streamflow.cluster import connect

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    if environment is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", environment)
    overrides = ["input.path=rows.jsonl", "ray.num_cpus=2", *([f"ray.address={configured}"] if configured else [])]
    assert connect(compose({}, overrides)) is True
    assert (calls[0]["address"], calls[0]["num_cpus"]) == (joins, num_cpus)


def after_connect(env, before, after, mode="row"):
    """Run ``before``, ``connect`` to a Ray of the run's own, then print ``after`` as JSON, in a fresh process."""
    overrides = ["input.path=rows.jsonl", "ray.num_cpus=1", f"mode={mode}"]
    script = (
        f"import json, sys, ray; from streamflow.cluster import connect; from streamflow.config import compose; {before}; "
        f"connect(compose({{}}, {overrides!r})); print(json.dumps({after}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_ray_started_for_a_run_has_no_autoscaler_monitor_to_wait_for_at_shutdown(own_ray_env):
    """Nothing autoscales a machine's own Ray, and the monitor used to hold every run's exit for a second."""
    processes, restored = after_connect(
        own_ray_env,
        "from ray._private import parameter; before = parameter.RayParams",
        "[sorted(ray._private.worker._global_node.all_processes), parameter.RayParams is before]",
    )
    assert "raylet" in processes
    assert "monitor" not in processes
    assert restored


def test_a_ray_started_for_a_row_mode_run_has_no_api_server_to_wait_for(own_ray_env):
    """``ray.init`` waits until that process is up, and row mode uses nothing it serves."""
    processes, restored = after_connect(
        own_ray_env,
        "from ray._private import node; before = node.Node.start_api_server",
        "[sorted(ray._private.worker._global_node.all_processes), node.Node.start_api_server is before]",
    )
    assert "raylet" in processes
    assert "dashboard" not in processes
    assert restored


def test_a_ray_started_for_a_batch_mode_run_keeps_its_api_server_for_ray_data(own_ray_env):
    processes = after_connect(own_ray_env, "pass", "sorted(ray._private.worker._global_node.all_processes)", "batch")
    assert "dashboard" in processes


def test_the_idle_workers_of_a_ray_started_for_a_row_mode_run_import_the_actors_modules_ahead(own_ray_env):
    """An actor then starts on a process that has its code imported already."""
    imported = after_connect(
        own_ray_env,
        "from streamflow.cluster import ROW_MODE_MODULES",
        "ray.get(ray.remote(lambda names: [n in sys.modules for n in names]).remote(ROW_MODE_MODULES))",
    )
    assert imported == [True, True]


def test_a_ray_started_for_a_run_keeps_token_authentication_without_warning_about_it(own_ray_env):
    """Ray turns it on for a new local runtime and says so at every start; the run keeps it, quietly."""
    env = {name: value for name, value in own_ray_env.items() if name != "RAY_AUTH_MODE"}
    warnings, mode = after_connect(
        env,
        "import logging, os; warned = []; handler = logging.Handler(); "
        "handler.emit = lambda record: warned.append(record.getMessage()); "
        "logging.getLogger('ray._private.authentication').addHandler(handler)",
        "[warned, os.environ.get('RAY_AUTH_MODE')]",
    )
    assert not [message for message in warnings if "Token authentication" in message]
    assert mode == "token"


def test_a_run_starting_ray_asks_for_its_node_once_the_node_table_has_it(monkeypatch):
    """Ray's own question retries only every second; the node table is read every few milliseconds first."""
    from ray._private import services, state

    from streamflow.cluster import _prompt_node_registration

    reads, asked = [], []

    class NodeTable:
        def _initialize_global_state(self, options):
            pass

        def node_table(self):
            reads.append(1)
            return [{"NodeID": "abc"}] if len(reads) >= 4 else []

    monkeypatch.setattr(state, "GlobalState", NodeTable)
    monkeypatch.setattr(services, "_get_gcs_client_options", lambda address: address)
    monkeypatch.setattr(services, "get_node", lambda address, node_id: asked.append(len(reads)) or {"node": node_id})
    original = services.get_node
    with _prompt_node_registration(poll_s=0.001):
        assert services.get_node("gcs:6379", "abc") == {"node": "abc"}
    assert asked == [4]  # Ray's own question came after the read that found the node
    assert services.get_node is original
