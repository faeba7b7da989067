"""The resource model: which Ray node may run what.

Every node that does Classifly work declares two logical resources next to its CPUs (see `node_resources`):

- ``classifly_serve`` — what serving replicas ask for (as much of it as they ask for CPUs);
- ``classifly_train`` — what training trials, feature tasks and job tasks ask for (likewise).

A node's CPUs are split between the two by `Settings.training_share`, so however much training is queued, it
can hold at most that share of a node's CPUs and the rest stays free for classification. On a cluster the node
types declare them in `ray-cluster.yaml` (serving and training nodes, a head with no CPUs for work).

A user's own machine joins as a **runner** (`classifly runner join`): a Ray node with no CPUs and no GPUs for
anyone, only ``runner_<user id>``. Nothing that asks for CPUs, GPUs, ``classifly_train`` or
``classifly_serve`` can be placed there; only work asking for that user's runner resource, which the platform
asks for only for that user's own training trials (`trial_bundle`). The platform's zero-CPU coordination
actors and drivers are pinned to the node that starts them (`on_this_node`), so they never drift to a runner.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

SERVE_RESOURCE = "classifly_serve"
TRAIN_RESOURCE = "classifly_train"
RUNNER_PREFIX = "runner_"


def quarter(value: float) -> float:
    """`value` rounded down to a quarter (Ray resource amounts stay readable and exact)."""
    return math.floor(value * 4 + 1e-9) / 4


def node_resources(cpus: float, training_share: float, serving_cpus: float = 0.0) -> dict[str, float]:
    """The logical resources a node with `cpus` CPUs declares: training gets `training_share` of them, but never
    so much that less than `serving_cpus` (what the serving replicas ask for) is left for serving; serving gets
    the rest."""
    cpus = float(cpus)
    if cpus <= 0:
        return {}
    train = min(quarter(cpus * training_share), quarter(cpus - serving_cpus))
    train = max(0.0, train)
    return {TRAIN_RESOURCE: train, SERVE_RESOURCE: cpus - train}


def serve_actor_options(cpus: float) -> dict[str, Any]:
    """`ray_actor_options` of a serving replica holding `cpus` CPUs."""
    return {"num_cpus": cpus, "resources": {SERVE_RESOURCE: cpus}}


def train_task_options(cpus: float) -> dict[str, Any]:
    """Ray options of a training-side task (preparing pictures, features, imports) holding `cpus` CPUs."""
    return {"num_cpus": cpus, "resources": {TRAIN_RESOURCE: cpus}}


def runner_resource(user_id: str) -> str:
    """The custom resource only `user_id`'s runners have."""
    return f"{RUNNER_PREFIX}{user_id}"


def runner_owner(resource: str) -> str | None:
    """The user id of a runner resource name, None for any other resource."""
    return resource[len(RUNNER_PREFIX) :] if resource.startswith(RUNNER_PREFIX) else None


def _node_totals() -> list[dict[str, float]]:
    import ray

    return [dict(node.get("Resources", {})) for node in ray.nodes() if node.get("Alive")]


def trial_bundle(
    owner_id: str | None,
    *,
    totals: list[Mapping[str, float]] | None = None,
    available: Mapping[str, float] | None = None,
    max_cpus: float = 4.0,
) -> tuple[dict[str, float], int]:
    """What one training trial of `owner_id` asks for, and how many such trials may run at once.

    The owner's runners when they have a live one (their trials then go only there); otherwise the shared
    training resource with CPUs, sized to fit one node (at most `max_cpus`, at least one) and with one GPU when
    a training node has GPUs. `totals` (per alive node) and `available` (cluster-wide) default to the live
    cluster's; tests pass their own.
    """
    import ray

    totals = _node_totals() if totals is None else totals
    available = ray.available_resources() if available is None else available
    if owner_id:
        key = runner_resource(owner_id)
        per_runner = [node[key] for node in totals if node.get(key, 0) > 0]
        if per_runner:
            size = max(0.25, quarter(min(max(per_runner), max_cpus)))
            return {key: size}, max(1, int(sum(per_runner) // size))
    training_nodes = [node for node in totals if node.get(TRAIN_RESOURCE, 0) > 0]
    biggest = max((min(node[TRAIN_RESOURCE], node.get("CPU", 0)) for node in training_nodes), default=1.0)
    size = min(biggest, max_cpus)
    free = available.get(TRAIN_RESOURCE, 0.0)
    if free >= 1:
        size = min(size, free)  # leave room for what else is training now (imports, another run)
    size = max(min(1.0, biggest), quarter(size))
    bundle = {"CPU": size, TRAIN_RESOURCE: size}
    gpus = sum(node.get("GPU", 0) for node in training_nodes)
    if gpus >= 1:
        bundle["GPU"] = 1.0
    capacity = sum(node[TRAIN_RESOURCE] for node in training_nodes) or size
    concurrent = int(capacity // size)
    if gpus >= 1:
        concurrent = min(concurrent, int(gpus))
    return bundle, max(1, concurrent)


def bundle_threads(bundle: Mapping[str, float]) -> int:
    """TensorFlow threads for a trial holding `bundle` (CPUs, or the runner share it holds)."""
    amount = bundle.get("CPU") or max((v for k, v in bundle.items() if k.startswith(RUNNER_PREFIX)), default=1)
    return max(1, round(amount))


def set_gpu_memory_growth() -> int:
    """Let TensorFlow take GPU memory as it needs it (several trials and replicas can share a GPU); returns the
    number of GPUs seen. Call before any TensorFlow op of the process."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass  # already initialised in a reused process
    return len(gpus)


HEAD_RESOURCE = "node:__internal_head__"  # Ray gives the head node this resource (amount 1)


def on_the_head() -> dict[str, Any]:
    """Ray options pinning a zero-CPU platform actor (the catalog, which owns a file on the head's disk; the jobs
    actor) to the head node, whoever starts it."""
    return {"resources": {HEAD_RESOURCE: 0.001}}


def on_this_node(soft: bool = True) -> dict[str, Any]:
    """Ray options keeping a zero-CPU actor or task on the caller's node (so it never lands on a runner)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node_id = ray.get_runtime_context().get_node_id()
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node_id, soft=soft)}


def runner_start_command(ray_exe: str, address: str, user_id: str, cpus: float) -> list[str]:
    """The `ray start` that makes this machine `user_id`'s runner: no CPUs or GPUs for anyone, only the runner
    resource (so only that user's trials can be placed here)."""
    import json

    resources = json.dumps({runner_resource(user_id): float(cpus)})
    return [
        ray_exe,
        "start",
        f"--address={address}",
        "--num-cpus=0",
        "--num-gpus=0",
        f"--resources={resources}",
        "--disable-usage-stats",
    ]
