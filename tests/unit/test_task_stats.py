"""A model's classification statistics on an in-memory catalog: traffic, latency, confidence, field accuracy."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cluster.catalog import models, runs, task_stats, tasks, users
from cluster.catalog.db import connect, in_transaction, utcnow
from cluster.catalog.tasks import NewTask
from pipelines.errors import InvalidInput, NotFound


@pytest.fixture
def conn():
    connection = connect(":memory:")
    yield connection
    connection.close()


def call(conn, fn, *args, **kwargs):
    return in_transaction(conn, fn, *args, **kwargs)


@pytest.fixture
def model(conn):
    owner = call(conn, users.create_user, "alice", "hash").id
    model_id = call(conn, models.create_model, owner, models.ModelSpec("pets")).id
    for accuracy in (0.9, 0.95):
        call(
            conn,
            runs.publish_version,
            owner,
            model_id,
            source="training",
            run_id=None,
            classes=["cat", "dog"],
            backbone=None,
            preprocessing=None,
            artifact_uri="a",
            metrics={"accuracy": accuracy},
        )
    return owner, model_id


def record(conn, owner, model_id, prefix, count, *, version=2, label="cat", confidence=0.9, latency=10.0):
    rows = [
        NewTask(f"{prefix}{i}", version, label, confidence, confidence < 0.5, [], latency + i, None)
        for i in range(count)
    ]
    call(conn, tasks.record_tasks, owner, model_id, rows)
    return [row.id for row in rows]


def test_a_model_without_tasks_has_empty_statistics(conn, model) -> None:
    owner, model_id = model

    stats = call(conn, task_stats.model_stats, owner, model_id)

    assert (stats.tasks, stats.uncertain, stats.per_hour, stats.per_day, stats.versions) == (0, 0, [], [], [])
    assert stats.latency.p50_ms is None and sum(b.count for b in stats.confidence) == 0


def test_traffic_latency_and_confidence(conn, model) -> None:
    owner, model_id = model
    record(conn, owner, model_id, "a", 10, latency=10.0)
    record(conn, owner, model_id, "b", 4, confidence=0.3, label="dog")
    old = record(conn, owner, model_id, "c", 3)
    conn.execute("UPDATE tasks SET created_at = ? WHERE id IN (SELECT unnest(?))", [utcnow() - timedelta(days=5), old])

    stats = call(conn, task_stats.model_stats, owner, model_id)
    recent = call(conn, task_stats.model_stats, owner, model_id, days=1)

    assert (stats.tasks, stats.uncertain, recent.tasks) == (17, 4, 14)
    assert sum(c.count for c in stats.per_day) == 17 and len(stats.per_day) == 2
    assert sum(c.count for c in stats.per_hour) == 14  # hours cover the last two days only
    assert 10.0 <= stats.latency.p50_ms <= stats.latency.p90_ms <= stats.latency.p99_ms <= 19.0
    bins = {b.low: b.count for b in stats.confidence}
    assert (bins[0.3], bins[0.9], len(bins)) == (4, 13, 10)


def test_field_accuracy_per_version_class_and_day(conn, model) -> None:
    owner, model_id = model
    cats = record(conn, owner, model_id, "cat", 6)
    dogs = record(conn, owner, model_id, "dog", 2, label="dog")
    record(conn, owner, model_id, "v1_", 3, version=1)
    for task_id in cats[:3] + dogs[:1]:
        call(conn, tasks.give_feedback, owner, task_id, correct=True)
    call(conn, tasks.give_feedback, owner, cats[3], label="dog")
    call(conn, tasks.give_feedback, owner, dogs[1], correct=False)

    stats = call(conn, task_stats.model_stats, owner, model_id)

    v2, v1 = stats.versions
    assert (v2.version, v2.tasks, v2.evaluated_accuracy) == (2, 8, 0.95)
    assert (v2.field.feedback, v2.field.correct, v2.field.accuracy) == (6, 4, pytest.approx(4 / 6))
    assert v2.field.low < 4 / 6 < v2.field.high
    per_class = {c.label: (c.tasks, c.field.feedback, c.field.correct) for c in v2.per_class}
    assert per_class == {"cat": (6, 4, 3), "dog": (2, 2, 1)}
    assert [(d.field.feedback, d.field.correct) for d in v2.per_day] == [(6, 4)]
    assert (v1.version, v1.tasks, v1.field.feedback, v1.field.accuracy, v1.per_day) == (1, 3, 0, None, [])
    assert v2.alert is None  # six answers checked are too few to say


def test_an_alert_when_field_accuracy_is_clearly_below_the_evaluation(conn, model) -> None:
    owner, model_id = model
    checked = record(conn, owner, model_id, "t", 20)
    for i, task_id in enumerate(checked):
        call(conn, tasks.give_feedback, owner, task_id, correct=i < 12)

    (version,) = call(conn, task_stats.model_stats, owner, model_id).versions

    assert version.field.accuracy == pytest.approx(0.6) and version.field.high < 0.95
    assert "60%" in version.alert and "95%" in version.alert


def test_statistics_are_the_owners_only(conn, model) -> None:
    _, model_id = model
    bob = call(conn, users.create_user, "bob", "hash").id

    with pytest.raises(NotFound):
        call(conn, task_stats.model_stats, bob, model_id)
    with pytest.raises(InvalidInput):
        call(conn, task_stats.model_stats, model[0], model_id, days=0)
