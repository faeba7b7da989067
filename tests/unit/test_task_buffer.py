"""The task buffer (serve/task_buffer.py) over a real in-memory catalog: rows are stored in few calls, in order,
with their answer time; a slow catalog does not hold up `add`; a failing one loses nothing; `close` stores the
rest; and `record_buffered_tasks` skips deleted models and ids already stored.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest

from cluster.catalog import models, tasks, users
from cluster.catalog.client import LocalCatalog
from cluster.catalog.db import utcnow
from cluster.catalog.tasks import BufferedTask, NewTask
from serve.task_buffer import TaskBuffer

DEADLINE_S = 10.0


def new_task(task_id: str, label: str = "cat", **extra) -> NewTask:
    top = [{"label": label, "probability": 0.9}]
    return NewTask(task_id, 1, label, 0.9, False, top, 3.0, None, **extra)


class CountingCatalog:
    """A real catalog whose `record_buffered_tasks` calls are counted and can be held, slowed or made to fail."""

    def __init__(self, inner: LocalCatalog):
        self.inner = inner
        self.record_calls: list[int] = []
        self.fail_next = 0
        self.gate: asyncio.Event | None = None

    async def call(self, fn, *args, **kwargs):
        if fn is tasks.record_buffered_tasks:
            if self.gate is not None:
                await self.gate.wait()
            if self.fail_next:
                self.fail_next -= 1
                raise ConnectionError("catalog unreachable")
            self.record_calls.append(len(args[0]))
        return await self.inner.call(fn, *args, **kwargs)

    def call_sync(self, fn, *args, **kwargs):
        return self.inner.call_sync(fn, *args, **kwargs)


@pytest.fixture
def catalog():
    inner = LocalCatalog(":memory:")
    yield CountingCatalog(inner)
    inner.close()


@pytest.fixture
def world(catalog):
    alice = catalog.call_sync(users.create_user, "alice", "hash").id
    bob = catalog.call_sync(users.create_user, "bob", "hash").id
    model_id = catalog.call_sync(models.create_model, alice, models.ModelSpec("pets")).id
    return alice, bob, model_id


def stored_ids(catalog) -> list[str]:
    return [row[0] for row in catalog.inner.conn.execute("SELECT id FROM tasks ORDER BY id").fetchall()]


def test_concurrent_answers_are_stored_together_and_readable_after_flush(catalog, world) -> None:
    alice, _, model_id = world
    answered = utcnow() - timedelta(seconds=5)

    async def scenario():
        buffer = TaskBuffer(catalog, interval_s=0.05)
        for index in range(50):
            buffer.add(alice, {model_id: [new_task(f"tsk_{index:03d}", created_at=answered)]})
        assert buffer.waiting_for(alice) == 50 and stored_ids(catalog) == []
        assert await buffer.flush(DEADLINE_S)
        assert buffer.waiting_for(alice) == 0
        await buffer.close()
        return buffer

    buffer = asyncio.run(scenario())

    assert stored_ids(catalog) == [f"tsk_{index:03d}" for index in range(50)]
    assert catalog.record_calls == [50]  # one catalog call for all of them
    assert buffer.stats.stored == 50 and buffer.stats.failures == 0
    record = catalog.call_sync(tasks.get_task, alice, "tsk_007")
    assert record.created_at == answered  # the answer's time, not the flush's


def test_rows_are_flushed_by_the_interval_without_a_reader(catalog, world) -> None:
    alice, _, model_id = world

    async def scenario():
        buffer = TaskBuffer(catalog, interval_s=0.02)
        buffer.add(alice, {model_id: [new_task("tsk_a")]})
        end = asyncio.get_running_loop().time() + DEADLINE_S
        while not catalog.record_calls and asyncio.get_running_loop().time() < end:
            await asyncio.sleep(0.01)
        await buffer.close()

    asyncio.run(scenario())

    assert catalog.record_calls == [1] and stored_ids(catalog) == ["tsk_a"]


def test_add_does_not_wait_for_a_held_catalog(catalog, world) -> None:
    alice, _, model_id = world

    async def scenario():
        catalog.gate = asyncio.Event()  # every record call waits until the test opens it
        buffer = TaskBuffer(catalog, interval_s=0.01, flush_rows=4)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for index in range(20):
            buffer.add(alice, {model_id: [new_task(f"tsk_{index:02d}")]})
            await asyncio.sleep(0)  # let the flusher start its (held) call
        added_s = loop.time() - started
        assert not await buffer.flush(timeout_s=0.1)  # the catalog holds: not stored, nothing lost
        assert buffer.waiting_for(alice) == 20
        catalog.gate.set()
        assert await buffer.flush(DEADLINE_S)
        await buffer.close()
        return added_s

    added_s = asyncio.run(scenario())

    assert added_s < 0.5
    assert stored_ids(catalog) == [f"tsk_{index:02d}" for index in range(20)]


def test_a_failing_catalog_is_retried_and_logged_and_loses_nothing(catalog, world, caplog) -> None:
    alice, _, model_id = world
    catalog.fail_next = 3

    async def scenario():
        buffer = TaskBuffer(catalog, interval_s=0.01, retry_first_s=0.01, retry_max_s=0.02)
        buffer.add(alice, {model_id: [new_task("tsk_1"), new_task("tsk_2")]})
        assert await buffer.flush(DEADLINE_S)
        await buffer.close()
        return buffer

    with caplog.at_level(logging.WARNING, logger="classifly.tasks"):
        buffer = asyncio.run(scenario())

    assert stored_ids(catalog) == ["tsk_1", "tsk_2"]
    assert buffer.stats.failures == 3 and "catalog unreachable" in buffer.stats.last_error
    assert sum("will retry" in record.getMessage() for record in caplog.records) == 3


def test_close_stores_what_waits(catalog, world) -> None:
    alice, _, model_id = world

    async def scenario():
        buffer = TaskBuffer(catalog, interval_s=3600)  # no flush by time during this test
        buffer.add(alice, {model_id: [new_task("tsk_last")]})
        await asyncio.sleep(0)
        assert stored_ids(catalog) == []
        await buffer.close()

    asyncio.run(scenario())

    assert stored_ids(catalog) == ["tsk_last"]


def test_overflow_is_dropped_oldest_first_and_logged(catalog, world, caplog) -> None:
    alice, _, model_id = world
    catalog.fail_next = 1000

    async def scenario():
        buffer = TaskBuffer(catalog, interval_s=3600, max_pending=3, retry_first_s=3600)
        with caplog.at_level(logging.ERROR, logger="classifly.tasks"):
            for index in range(5):
                buffer.add(alice, {model_id: [new_task(f"tsk_{index}")]})
        waiting = [item.task.id for _, item in buffer.pending]
        buffer._flusher.cancel()
        return buffer, waiting

    buffer, waiting = asyncio.run(scenario())

    assert waiting == ["tsk_2", "tsk_3", "tsk_4"] and buffer.stats.dropped == 2
    assert any("dropped 1 classification tasks" in record.getMessage() for record in caplog.records)


def test_record_buffered_tasks_skips_deleted_models_foreign_pairs_and_stored_ids(catalog, world) -> None:
    alice, bob, model_id = world
    gone = catalog.call_sync(models.create_model, alice, models.ModelSpec("gone")).id
    catalog.call_sync(tasks.record_tasks, alice, model_id, [new_task("tsk_old")])
    catalog.call_sync(models.delete_model, alice, gone)

    stored = catalog.call_sync(
        tasks.record_buffered_tasks,
        [
            BufferedTask(alice, model_id, new_task("tsk_old")),  # a retried flush: already stored
            BufferedTask(alice, model_id, new_task("tsk_new")),
            BufferedTask(alice, gone, new_task("tsk_gone")),  # its model was deleted meanwhile
            BufferedTask(bob, model_id, new_task("tsk_bob")),  # not bob's model
        ],
    )

    assert stored == 1
    assert stored_ids(catalog) == ["tsk_new", "tsk_old"]
