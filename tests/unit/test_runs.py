"""Training runs, their snapshot and trials, and model versions, on an in-memory catalog."""

from __future__ import annotations

import pytest

from cluster.blobs import BlobRef
from cluster.catalog import images, models, runs, users
from cluster.catalog.db import connect, in_transaction
from cluster.catalog.images import NewImage
from pipelines.errors import Conflict, InvalidInput, NotFound


@pytest.fixture
def conn():
    connection = connect(":memory:")
    yield connection
    connection.close()


def call(conn, fn, *args, **kwargs):
    return in_transaction(conn, fn, *args, **kwargs)


def add(conn, owner, model, label, count, start=0):
    offered = [
        NewImage(label, f"{label}/{i}.png", 10, sha256=f"{label}-{i}".ljust(64, "0"), ref=BlobRef("packs/p", i, 10))
        for i in range(start, start + count)
    ]
    return call(conn, images.add_images, owner, model, offered, quota_bytes=10**9)


@pytest.fixture
def model(conn):
    owner = call(conn, users.create_user, "alice", "hash").id
    model_id = call(conn, models.create_model, owner, models.ModelSpec("pets")).id
    return owner, model_id


def test_a_run_snapshots_the_dataset_and_later_changes_do_not_touch_it(conn, model) -> None:
    owner, model_id = model
    add(conn, owner, model_id, "cat", 10)
    add(conn, owner, model_id, "dog", 10)

    run = call(conn, runs.create_run, owner, model_id, {"time_budget_s": 60})
    add(conn, owner, model_id, "bird", 10)

    snapshot = call(conn, runs.run_snapshot, run.id)
    assert run.status == "queued" and run.num_images == 20
    assert {image.label for image in snapshot} == {"cat", "dog"}
    assert {image.split for image in snapshot} == {"train", "test"}
    assert all(image.ref.pack == "packs/p" for image in snapshot)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        pytest.param({"cat": 10}, "at least two classes", id="one-class"),
        pytest.param({"cat": 10, "dog": 1}, "at least two classes", id="too-few-train"),
    ],
)
def test_a_run_needs_a_usable_dataset(conn, model, layout, message) -> None:
    owner, model_id = model
    for label, count in layout.items():
        add(conn, owner, model_id, label, count)

    with pytest.raises(InvalidInput, match=message):
        call(conn, runs.create_run, owner, model_id, {})
    assert call(conn, runs.list_runs, owner, model_id) == []


def test_one_active_run_per_model_cancel_and_resume(conn, model) -> None:
    owner, model_id = model
    add(conn, owner, model_id, "cat", 10)
    add(conn, owner, model_id, "dog", 10)
    first = call(conn, runs.create_run, owner, model_id, {})

    with pytest.raises(Conflict):
        call(conn, runs.create_run, owner, model_id, {})
    cancelled = call(conn, runs.request_cancel, owner, first.id)
    assert cancelled.status == "cancelled"

    second = call(conn, runs.create_run, owner, model_id, {})
    call(conn, runs.start_run, second.id)
    assert call(conn, runs.report_run_progress, second.id, {"stage": "training", "fraction": 0.5}) is False
    call(conn, runs.request_cancel, owner, second.id)
    assert call(conn, runs.get_run, second.id).status == "running"
    assert call(conn, runs.report_run_progress, second.id, {"stage": "training", "fraction": 0.6}) is True

    assert call(conn, runs.mark_interrupted_runs) == [second.id]
    resumed = call(conn, runs.requeue_run, owner, second.id)
    assert resumed.status == "queued" and resumed.cancel_requested is False


def test_runs_of_other_owners_read_as_missing(conn, model) -> None:
    owner, model_id = model
    add(conn, owner, model_id, "cat", 10)
    add(conn, owner, model_id, "dog", 10)
    run = call(conn, runs.create_run, owner, model_id, {})
    bob = call(conn, users.create_user, "bob", "hash").id

    for fn in (runs.get_owned_run, runs.request_cancel, runs.requeue_run):
        with pytest.raises(NotFound):
            call(conn, fn, bob, run.id)
    with pytest.raises(NotFound):
        call(conn, runs.list_runs, bob, model_id)


def test_trials_are_upserted_and_ranked(conn, model) -> None:
    owner, model_id = model
    add(conn, owner, model_id, "cat", 10)
    add(conn, owner, model_id, "dog", 10)
    run = call(conn, runs.create_run, owner, model_id, {})
    for trial, accuracy in (("a", 0.7), ("b", 0.9)):
        call(
            conn,
            runs.record_trial,
            run.id,
            trial,
            spec={"kind": "x"},
            status="running",
            epochs=1,
            metrics={"best_val_accuracy": accuracy},
            cost_s=1.0,
            stop_reason=None,
        )
    call(
        conn,
        runs.record_trial,
        run.id,
        "a",
        spec={"kind": "x"},
        status="stopped",
        epochs=3,
        metrics={"best_val_accuracy": 0.95},
        cost_s=3.0,
        stop_reason="reached the target",
    )

    trials = call(conn, runs.list_trials, run.id)
    assert [(t.trial_id, t.epochs, t.stop_reason) for t in trials] == [("a", 3, "reached the target"), ("b", 1, None)]


def test_versions_are_numbered_activated_and_rolled_back(conn, model) -> None:
    owner, model_id = model
    common = {"source": "training", "run_id": None, "backbone": "efficientnet_lite0", "artifact_uri": "a"}
    first = call(
        conn,
        runs.publish_version,
        owner,
        model_id,
        classes=["cat", "dog"],
        preprocessing={"size": 1},
        metrics={"accuracy": 0.9},
        **common,
    )
    second = call(
        conn,
        runs.publish_version,
        owner,
        model_id,
        classes=["cat", "dog", "bird"],
        preprocessing={"size": 2},
        metrics={"accuracy": 0.8},
        **common,
    )

    assert (first.version, second.version) == (1, 2)
    assert call(conn, models.get_owned_model, owner, model_id).active_version == 2
    call(conn, runs.activate_version, owner, model_id, 1)
    active = call(conn, models.get_owned_model, owner, model_id)
    assert active.active_version == 1 and active.preprocessing == {"size": 1}
    assert [v.version for v in call(conn, runs.list_versions, owner, model_id)] == [2, 1]
    with pytest.raises(NotFound):
        call(conn, runs.get_version, owner, model_id, 3)
