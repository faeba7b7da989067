"""Several Ray nodes on this machine (`ray.cluster_utils.Cluster`): what lands where, and a node lost mid-search.

Nodes: a head with no CPUs (as in ray-cluster.yaml), a serving node, a training node and alice's runner (no
CPUs, only `runner_<alice>`). Probes ask for resources with the very functions the platform uses
(`serve_actor_options`, `train_task_options`, `trial_resources`) and report the node they ran on.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray
from ray import cloudpickle
from ray.cluster_utils import Cluster

from cluster import inventory
from cluster.config import Settings
from cluster.resources import (
    SERVE_RESOURCE,
    TRAIN_RESOURCE,
    on_the_head,
    on_this_node,
    runner_resource,
    serve_actor_options,
    train_task_options,
)
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.timeout(240)
ALICE, BOB = "usr_alice", "usr_bob"
# Probes run in Ray workers: send this module's functions by value rather than by import.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@dataclass
class Nodes:
    cluster: Cluster
    head: str
    serve: str
    train: str
    runner: str


def _node(cluster: Cluster, **args) -> str:
    return cluster.add_node(**args).node_id


@pytest.fixture(scope="module")
def nodes() -> Iterator[Nodes]:
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        serve_id = _node(cluster, num_cpus=1, resources={SERVE_RESOURCE: 1})
        train_id = _node(cluster, num_cpus=1, resources={TRAIN_RESOURCE: 1})
        runner_id = _node(cluster, num_cpus=0, num_gpus=0, resources={runner_resource(ALICE): 1})
        ray.init(address=cluster.address, namespace="test-cluster", logging_level="ERROR", log_to_driver=False)
        cluster.wait_for_nodes()
        yield Nodes(cluster, cluster.head_node.node_id, serve_id, train_id, runner_id)
    finally:
        ray.shutdown()
        cluster.shutdown()


@ray.remote(num_cpus=0)
def where() -> str:
    return ray.get_runtime_context().get_node_id()


class Probe:
    def where(self) -> str:
        return ray.get_runtime_context().get_node_id()


def probe_trial(config: dict) -> None:
    """A stand-in for a training trial: `steps` epochs, each reported with where it runs and checkpointed the way
    training trials checkpoint (`TrialCheckpoints`: a stored model, here a tiny numpy head whose weights are
    the step), then a marker file `<name>-<node>-<step>`. A retried trial continues after its checkpoint."""
    import numpy as np

    from cluster.training import TrialCheckpoints
    from pipelines.candidates import CandidateSpec
    from pipelines.heads import Head
    from pipelines.images import PreprocessingPolicy
    from pipelines.training import TrainedCandidate

    node = ray.get_runtime_context().get_node_id()
    checkpoints = TrialCheckpoints(PreprocessingPolicy(16, "gray", "stretch"), every_s=0)
    start = checkpoints.restore()
    resumed = {"resumed_from": start.epochs_done if start else 0}
    if start is not None:
        resumed["restored_weight"] = float(start.head.weights[0, 0])
    spec = CandidateSpec(kind="frozen_head", color="gray", input_size=16, backbone="efficientnet_lite0")
    for step in range(resumed["resumed_from"] + 1, config["steps"] + 1):
        head = Head(np.full((2, 2), step, np.float32), np.zeros(2, np.float32), ("a", "b"))
        checkpoints.stage(TrainedCandidate(spec, ("a", "b"), step / 100, step, 0.0, "", head=head))
        checkpoints.report({"step": step, "node_id": node, "name": config["name"], **resumed})
        Path(config["marks"], f"{config['name']}-{node}-{step}").touch()
        time.sleep(config["pause"])


def search(owner: str, names: list[str], tmp: Path, *, steps: int = 1, pause: float = 0.0):
    """A Tune search with the platform's trial resources and failure policy for `owner`'s run."""
    from ray import tune

    from cluster.training import TRIAL_RETRIES, trial_resources, tune_storage

    settings = Settings(data_dir=tmp)
    resources, concurrent = trial_resources(owner, settings)
    (tmp / "marks").mkdir(exist_ok=True)
    tuner = tune.Tuner(
        tune.with_resources(probe_trial, resources),
        param_space={"name": tune.grid_search(names), "steps": steps, "pause": pause, "marks": str(tmp / "marks")},
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrent, reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"{owner}-{int(time.time() * 1000)}",
            storage_path=tune_storage(settings),
            failure_config=tune.FailureConfig(max_failures=TRIAL_RETRIES),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=0,
        ),
    )
    return tuner.fit()


def test_serving_training_and_coordination_each_land_on_their_nodes(nodes: Nodes) -> None:
    replica = ray.remote(Probe).options(**serve_actor_options(0.25)).remote()
    assert ray.get(replica.where.remote()) == nodes.serve
    assert ray.get(where.options(**train_task_options(0.5)).remote()) == nodes.train
    # Zero-CPU drivers stay where they are started (never on a runner, which has room for zero-CPU work too).
    assert {ray.get(where.options(**on_this_node()).remote()) for _ in range(5)} == {nodes.head}
    # The catalog and jobs actors are pinned to the head, whoever starts them.
    pinned = ray.remote(Probe).options(num_cpus=0, **on_the_head()).remote()
    assert ray.get(pinned.where.remote()) == nodes.head
    ray.kill(pinned)
    ray.kill(replica)


def test_a_runner_gets_its_owners_trials_and_nobody_elses(nodes: Nodes, tmp_path: Path) -> None:
    alice = search(ALICE, ["a1", "a2"], tmp_path)
    bob = search(BOB, ["b1", "b2"], tmp_path)

    assert not alice.errors and not bob.errors
    assert {r.metrics["node_id"] for r in alice} == {nodes.runner}
    assert {r.metrics["node_id"] for r in bob} == {nodes.train}
    # Training-side tasks of anyone never land on the runner either.
    placed = ray.get([where.options(**train_task_options(0.25)).remote() for _ in range(8)])
    assert nodes.runner not in placed


def test_the_admin_view_names_each_node_and_the_runners_owner(nodes: Nodes) -> None:
    view = inventory.ray_view({ALICE: "alice"})

    kinds = {node["id"]: (node["kind"], node["owner"]) for node in view["nodes"] if node["alive"]}
    assert kinds[nodes.head] == ("head", None)
    assert kinds[nodes.serve] == kinds[nodes.train] == ("worker", None)
    assert kinds[nodes.runner] == ("runner", "alice")
    assert view["runners"] == [{"user_id": ALICE, "username": "alice", "nodes": 1, "cpus": 1.0}]
    assert view["resources"]["total"][TRAIN_RESOURCE] == 1.0
    assert set(view["resources"]) == {"total", "in_use", "free"}


def test_a_search_finishes_when_a_training_node_is_lost_midway(nodes: Nodes, tmp_path: Path) -> None:
    doomed = _node(nodes.cluster, num_cpus=1, resources={TRAIN_RESOURCE: 1})
    doomed_node = next(n for n in nodes.cluster.worker_nodes if n.node_id == doomed)
    wait_until(lambda: ray.cluster_resources().get(TRAIN_RESOURCE) == 2, 30, "the second training node")
    outcome: dict = {}
    worker = threading.Thread(
        target=lambda: outcome.setdefault("grid", search(BOB, ["t1", "t2"], tmp_path, steps=8, pause=0.5))
    )
    worker.start()
    marks = tmp_path / "marks"

    def done(node: str) -> dict[str, list[int]]:  # trial name -> the steps it finished on `node`
        found: dict[str, list[int]] = {}
        for name, where, step in (m.name.split("-") for m in marks.iterdir()) if marks.exists() else ():
            if where == node:
                found.setdefault(name, []).append(int(step))
        return {name: sorted(steps) for name, steps in found.items()}

    def two_steps_there() -> bool:  # its step-1 checkpoint is then on the storage and known to Tune
        return any(max(steps) >= 2 for steps in done(doomed).values())

    wait_until(two_steps_there, 120, "a trial two steps into its work there")
    nodes.cluster.remove_node(doomed_node, allow_graceful=False)
    worker.join(180)

    grid = outcome["grid"]
    assert not grid.errors
    assert sorted(r.metrics["step"] for r in grid) == [8, 8]  # both trials trained to the end
    assert {r.metrics["node_id"] for r in grid} == {nodes.train}  # the lost one went on on the node left
    lost = next(iter(done(doomed)))
    by_name = {r.metrics["name"]: r.metrics for r in grid}
    # The lost trial continued from its checkpoint (its weights restored), not from its first step.
    assert by_name[lost]["resumed_from"] >= 1
    assert by_name[lost]["restored_weight"] == by_name[lost]["resumed_from"]
    assert done(nodes.train)[lost] == list(range(by_name[lost]["resumed_from"] + 1, 9))
    assert next(m for n, m in by_name.items() if n != lost)["resumed_from"] == 0
