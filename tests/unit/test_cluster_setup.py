"""The resource model's arithmetic, the runner command, and ray-cluster.yaml (parsed, with the node types, start
commands and settings the platform relies on)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from cluster.config import Settings
from cluster.resources import SERVE_RESOURCE, TRAIN_RESOURCE, bundle_threads, node_resources, trial_bundle
from cluster.runner import join
from cluster.runtime import check_cluster_resources
from pipelines.errors import Unauthorized

ROOT = Path(__file__).resolve().parents[2]


def test_a_laptop_splits_its_cpus_and_serving_keeps_what_its_replicas_ask_for() -> None:
    settings = Settings(_env_file=None)
    assert settings.training_share == 0.5 and settings.serving_cpus == 0.75
    assert node_resources(2, 0.5, settings.serving_cpus) == {TRAIN_RESOURCE: 1.0, SERVE_RESOURCE: 1.0}
    assert node_resources(8, 0.75, 0.75) == {TRAIN_RESOURCE: 6.0, SERVE_RESOURCE: 2.0}
    # A greedy share never takes what the serving replicas need.
    assert node_resources(2, 1.0, 0.75) == {TRAIN_RESOURCE: 1.25, SERVE_RESOURCE: 0.75}
    assert node_resources(0, 0.5) == {}


def test_trials_use_the_owners_runner_when_one_is_live_and_the_shared_pool_otherwise() -> None:
    shared = {"CPU": 4, TRAIN_RESOURCE: 2, SERVE_RESOURCE: 2}
    runner = {"runner_usr_alice": 8}
    totals = [shared, runner]

    alice, alice_at_once = trial_bundle("usr_alice", totals=totals, available={}, max_cpus=4)
    bob, bob_at_once = trial_bundle("usr_bob", totals=totals, available={TRAIN_RESOURCE: 2}, max_cpus=4)

    assert (alice, alice_at_once) == ({"runner_usr_alice": 4.0}, 2)
    assert (bob, bob_at_once) == ({"CPU": 2.0, TRAIN_RESOURCE: 2.0}, 1)
    assert bundle_threads(alice) == 4 and bundle_threads(bob) == 2


def test_trials_ask_for_a_gpu_when_a_training_node_has_one() -> None:
    totals = [{"CPU": 4, TRAIN_RESOURCE: 2, SERVE_RESOURCE: 2}, {"CPU": 8, "GPU": 1, TRAIN_RESOURCE: 8}]
    bundle, at_once = trial_bundle(None, totals=totals, available={TRAIN_RESOURCE: 10}, max_cpus=4)
    assert bundle == {"CPU": 4.0, TRAIN_RESOURCE: 4.0, "GPU": 1.0}
    assert at_once == 1  # one GPU: one trial at a time


def test_a_laptop_trial_takes_one_cpu_as_before() -> None:
    bundle, at_once = trial_bundle(None, totals=[{"CPU": 2, **node_resources(2, 0.5, 0.75)}], available={})
    assert (bundle, at_once) == ({"CPU": 1.0, TRAIN_RESOURCE: 1.0}, 1)


def test_a_cluster_without_serving_or_training_nodes_is_refused_in_words() -> None:
    check_cluster_resources({"CPU": 4, TRAIN_RESOURCE: 2, SERVE_RESOURCE: 2})
    with pytest.raises(RuntimeError, match="no node offering classifly_serve"):
        check_cluster_resources({"CPU": 4, TRAIN_RESOURCE: 4})


def _api(status: int, body: dict) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(status, json=body)))


def test_runner_join_learns_the_owner_from_the_api_and_lends_cpus_to_them_only() -> None:
    started: list[list[str]] = []

    def run(command, **kwargs):
        started.append(command)
        assert kwargs["env"]["RAY_AUTH_TOKEN"] == "ray-secret"
        return subprocess.CompletedProcess(command, 0, "", "")

    api = _api(200, {"id": "usr_alice", "username": "alice"})
    owner, cpus = join("10.0.0.1:6379", "cfy_x", "http://api", cpus=3, ray_token="ray-secret", run=run, client=api)

    assert (owner.username, cpus) == ("alice", 3.0)
    assert started == [
        ["ray", "start", "--address=10.0.0.1:6379", "--num-cpus=0", "--num-gpus=0",
         '--resources={"runner_usr_alice": 3.0}', "--disable-usage-stats"]
    ]  # fmt: skip


def test_runner_join_with_a_bad_token_starts_nothing() -> None:
    def run(command, **kwargs):
        raise AssertionError("nothing may start")

    with pytest.raises(Unauthorized):
        join("10.0.0.1:6379", "bad", "http://api", run=run, client=_api(401, {"code": "unauthorized"}))


def test_ray_cluster_yaml_has_the_node_types_commands_and_settings_the_platform_needs() -> None:
    config = yaml.safe_load((ROOT / "ray-cluster.yaml").read_text())

    types = config["available_node_types"]
    assert set(types) == {"head", "cpu_worker", "gpu_worker"} and config["head_node_type"] == "head"
    assert types["head"]["resources"] == {"CPU": 0}
    assert any("--head" in c and "--num-cpus=0" in c for c in config["head_start_ray_commands"])
    assert any("ray start --address=$RAY_HEAD_IP:6379" in c for c in config["worker_start_ray_commands"])
    assert {SERVE_RESOURCE, TRAIN_RESOURCE} <= set(types["cpu_worker"]["resources"])
    gpu = types["gpu_worker"]["resources"]
    assert gpu["GPU"] >= 1 and gpu[TRAIN_RESOURCE] == gpu["CPU"] and SERVE_RESOURCE not in gpu
    setup = "\n".join(config["setup_commands"])
    assert "-e ~/classifly" in setup
    fields = Settings.model_fields
    for variable in ("CLASSIFLY_BLOB_URI", "CLASSIFLY_CATALOG_PATH", "CLASSIFLY_DATA_DIR"):
        assert f"export {variable}=" in setup
        assert variable.removeprefix("CLASSIFLY_").lower() in fields
    assert config["provider"]["type"] in {"aws", "gcp", "azure"}
