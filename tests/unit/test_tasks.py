"""Classification tasks and feedback on an in-memory catalog: recording, filters, pages, ownership."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cluster.catalog import models, runs, tasks, users
from cluster.catalog.db import connect, in_transaction, utcnow
from cluster.catalog.tasks import NewTask, TaskFilter
from pipelines.errors import InvalidInput, NotFound, NotReady


@pytest.fixture
def conn():
    connection = connect(":memory:")
    yield connection
    connection.close()


def call(conn, fn, *args, **kwargs):
    return in_transaction(conn, fn, *args, **kwargs)


def publish(conn, owner, model_id, classes=("cat", "dog")):
    return call(
        conn,
        runs.publish_version,
        owner,
        model_id,
        source="training",
        run_id=None,
        classes=list(classes),
        backbone=None,
        preprocessing={"image_size": 32, "color": "rgb", "resize": "stretch"},
        artifact_uri="artifacts/run/trial",
        metrics={"accuracy": 0.9},
    )


def new_task(task_id: str, version: int = 1, label: str = "cat", confidence: float = 0.8) -> NewTask:
    other = "dog" if label == "cat" else "cat"
    top = [{"label": label, "probability": confidence}, {"label": other, "probability": 1 - confidence}]
    return NewTask(task_id, version, label, confidence, confidence < 0.5, top, 12.5, "ab" * 32)


@pytest.fixture
def world(conn):
    alice = call(conn, users.create_user, "alice", "hash").id
    bob = call(conn, users.create_user, "bob", "hash").id
    model_id = call(conn, models.create_model, alice, models.ModelSpec("pets")).id
    return alice, bob, model_id


def test_a_model_without_a_version_cannot_serve(conn, world) -> None:
    alice, _, model_id = world

    with pytest.raises(NotReady, match="no trained version"):
        call(conn, tasks.version_to_serve, alice, model_id)
    publish(conn, alice, model_id)
    publish(conn, alice, model_id, classes=("cat", "dog", "bird"))

    assert call(conn, tasks.version_to_serve, alice, model_id).version == 2
    assert call(conn, tasks.version_to_serve, alice, model_id, 1).classes == ["cat", "dog"]
    with pytest.raises(NotFound):
        call(conn, tasks.version_to_serve, alice, model_id, 7)


def test_recorded_tasks_read_back_as_answered(conn, world) -> None:
    alice, _, model_id = world
    publish(conn, alice, model_id)

    when = call(conn, tasks.record_tasks, alice, model_id, [new_task("tsk_1"), new_task("tsk_2", label="dog")])

    task = call(conn, tasks.get_task, alice, "tsk_1")
    assert (task.model_id, task.version, task.label, task.confidence) == (model_id, 1, "cat", 0.8)
    assert task.top[0] == {"label": "cat", "probability": 0.8} and task.uncertain is False
    assert task.latency_ms == 12.5 and task.created_at == when and task.feedback is None
    page, total = call(conn, tasks.list_tasks, alice, TaskFilter())
    assert total == 2 and {t.id for t in page} == {"tsk_1", "tsk_2"}


def test_tasks_of_other_owners_read_as_missing(conn, world) -> None:
    alice, bob, model_id = world
    publish(conn, alice, model_id)
    call(conn, tasks.record_tasks, alice, model_id, [new_task("tsk_1")])

    with pytest.raises(NotFound):
        call(conn, tasks.get_task, bob, "tsk_1")
    with pytest.raises(NotFound):
        call(conn, tasks.give_feedback, bob, "tsk_1", correct=True)
    with pytest.raises(NotFound):
        call(conn, tasks.list_tasks, bob, TaskFilter(model_id=model_id))
    with pytest.raises(NotFound):
        call(conn, tasks.record_tasks, bob, model_id, [new_task("tsk_2")])
    with pytest.raises(NotFound):
        call(conn, tasks.version_to_serve, bob, model_id)
    assert call(conn, tasks.list_tasks, bob, TaskFilter()) == ([], 0)
    assert call(conn, tasks.get_task, alice, "tsk_1").feedback is None


@pytest.mark.parametrize(
    ("given", "correct", "label"),
    [
        pytest.param({"correct": True}, True, "cat", id="confirm"),
        pytest.param({"correct": False}, False, None, id="wrong-without-a-label"),
        pytest.param({"label": "dog"}, False, "dog", id="correct-it"),
        pytest.param({"label": "cat"}, True, "cat", id="label-equal-to-the-answer"),
        pytest.param({"label": " dog "}, False, "dog", id="label-trimmed"),
    ],
)
def test_feedback_records_whether_the_answer_was_right(conn, world, given, correct, label) -> None:
    alice, _, model_id = world
    publish(conn, alice, model_id)
    call(conn, tasks.record_tasks, alice, model_id, [new_task("tsk_1")])

    task = call(conn, tasks.give_feedback, alice, "tsk_1", **given)

    assert (task.feedback.correct, task.feedback.label) == (correct, label)
    assert task.label == "cat"  # the answer itself is history: feedback never rewrites it


def test_later_feedback_replaces_earlier_feedback(conn, world) -> None:
    alice, _, model_id = world
    publish(conn, alice, model_id)
    call(conn, tasks.record_tasks, alice, model_id, [new_task("tsk_1")])

    call(conn, tasks.give_feedback, alice, "tsk_1", correct=True)
    task = call(conn, tasks.give_feedback, alice, "tsk_1", label="dog")

    assert (task.feedback.correct, task.feedback.label) == (False, "dog")
    assert conn.execute("SELECT count(*) FROM feedback").fetchone() == (1,)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        pytest.param({}, "correct", id="nothing"),
        pytest.param({"label": "horse"}, "not a class", id="unknown-label"),
        pytest.param({"correct": True, "label": "dog"}, "cannot be correct", id="contradiction"),
    ],
)
def test_unusable_feedback_is_refused_and_changes_nothing(conn, world, given, message) -> None:
    alice, _, model_id = world
    publish(conn, alice, model_id)
    call(conn, tasks.record_tasks, alice, model_id, [new_task("tsk_1")])
    call(conn, tasks.give_feedback, alice, "tsk_1", correct=True)

    with pytest.raises(InvalidInput, match=message):
        call(conn, tasks.give_feedback, alice, "tsk_1", **given)

    feedback = call(conn, tasks.get_task, alice, "tsk_1").feedback
    assert (feedback.correct, feedback.label) == (True, "cat")


def test_a_class_added_after_the_version_is_a_valid_correction(conn, world) -> None:
    alice, _, model_id = world
    publish(conn, alice, model_id)
    call(conn, models.create_class, alice, model_id, "bird")
    call(conn, tasks.record_tasks, alice, model_id, [new_task("tsk_1")])

    assert call(conn, tasks.give_feedback, alice, "tsk_1", label="bird").feedback.label == "bird"


@pytest.fixture
def history(conn, world):
    """alice: 3 tasks of version 1 and 2 of version 2 on one model, 1 on another; feedback on three."""
    alice, bob, model_id = world
    publish(conn, alice, model_id)
    call(conn, tasks.record_tasks, alice, model_id, [new_task(f"v1_{i}") for i in range(3)])
    publish(conn, alice, model_id)
    call(conn, tasks.record_tasks, alice, model_id, [new_task(f"v2_{i}", version=2) for i in range(2)])
    other = call(conn, models.create_model, alice, models.ModelSpec("cars")).id
    publish(conn, alice, other)
    call(conn, tasks.record_tasks, alice, other, [new_task("other_0")])
    call(conn, tasks.give_feedback, alice, "v1_0", correct=True)
    call(conn, tasks.give_feedback, alice, "v1_1", label="dog")
    call(conn, tasks.give_feedback, alice, "v2_0", correct=True)
    return alice, model_id


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        pytest.param({}, {"v1_0", "v1_1", "v1_2", "v2_0", "v2_1", "other_0"}, id="all"),
        pytest.param({"version": 1}, {"v1_0", "v1_1", "v1_2"}, id="version"),
        pytest.param({"feedback": "confirmed"}, {"v1_0", "v2_0"}, id="confirmed"),
        pytest.param({"feedback": "corrected"}, {"v1_1"}, id="corrected"),
        pytest.param({"feedback": "given"}, {"v1_0", "v1_1", "v2_0"}, id="given"),
        pytest.param({"feedback": "none"}, {"v1_2", "v2_1"}, id="none"),
        pytest.param({"version": 2, "feedback": "none"}, {"v2_1"}, id="combined"),
    ],
)
def test_tasks_are_filtered_by_model_version_and_feedback(conn, history, filters, expected) -> None:
    alice, model_id = history
    scoped = {"model_id": model_id} if filters else {}

    page, total = call(conn, tasks.list_tasks, alice, TaskFilter(**scoped, **filters))

    assert {task.id for task in page} == expected and total == len(expected)


def test_tasks_are_filtered_by_time_and_paged_newest_first(conn, history) -> None:
    alice, model_id = history
    now = utcnow()
    conn.execute("UPDATE tasks SET created_at = ? WHERE id LIKE 'v1_%'", [now - timedelta(days=2)])

    recent, total = call(conn, tasks.list_tasks, alice, TaskFilter(model_id, since=now - timedelta(days=1)))
    old, _ = call(conn, tasks.list_tasks, alice, TaskFilter(model_id, until=now - timedelta(days=1)))
    first, total_all = call(conn, tasks.list_tasks, alice, TaskFilter(model_id), limit=2)
    rest, _ = call(conn, tasks.list_tasks, alice, TaskFilter(model_id), limit=2, offset=2)
    last, _ = call(conn, tasks.list_tasks, alice, TaskFilter(model_id), limit=2, offset=4)

    assert {t.id for t in recent} == {"v2_0", "v2_1"} and total == 2
    assert {t.id for t in old} == {"v1_0", "v1_1", "v1_2"}
    assert total_all == 5 and [len(first), len(rest), len(last)] == [2, 2, 1]
    assert {t.id for t in first} == {"v2_0", "v2_1"}  # newest first
    assert len({t.id for t in first + rest + last}) == 5  # no task on two pages


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        pytest.param({"version": 1}, "only together with a model", id="version-without-model"),
        pytest.param({"feedback": "maybe"}, "feedback must be", id="unknown-feedback"),
    ],
)
def test_unusable_filters_are_refused(filters, message) -> None:
    with pytest.raises(InvalidInput, match=message):
        TaskFilter(**filters)


def test_deleting_a_model_deletes_its_tasks_and_their_feedback(conn, history) -> None:
    alice, model_id = history

    call(conn, models.delete_model, alice, model_id)

    assert call(conn, tasks.list_tasks, alice, TaskFilter())[1] == 1
    assert conn.execute("SELECT count(*) FROM feedback").fetchone() == (0,)


def test_tasks_of_several_models_are_recorded_together_or_not_at_all(conn, world) -> None:
    alice, bob, model_id = world
    other = call(conn, models.create_model, alice, models.ModelSpec("cars")).id
    bobs = call(conn, models.create_model, bob, models.ModelSpec("bob's")).id

    call(conn, tasks.record_tasks_of_models, alice, {model_id: [new_task("a")], other: [new_task("b")]})
    with pytest.raises(NotFound):
        call(conn, tasks.record_tasks_of_models, alice, {model_id: [new_task("c")], bobs: [new_task("d")]})

    page, total = call(conn, tasks.list_tasks, alice, TaskFilter())
    assert total == 2 and {(t.id, t.model_id) for t in page} == {("a", model_id), ("b", other)}
