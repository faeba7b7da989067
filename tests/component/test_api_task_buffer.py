"""Task history off the classification path, through the real API in-process: a classify answer does not wait
for the catalog to store its tasks; the tasks are found (and take feedback) right after; the API's shutdown
stores what still waits."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace

from fastapi.testclient import TestClient

from cluster.catalog import tasks as catalog_tasks
from serve.api import create_api
from tests.component.test_api_classify import RED, FakeClassifier, publish, upload
from tests.factories import make_image

HOLD_S = 30.0  # a held catalog call gives up after this; every test opens the gate long before


class HeldCatalog:
    """The real catalog, except that storing buffered tasks waits until `gate` is set (a slow catalog)."""

    def __init__(self, inner):
        self.inner = inner
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.conn = inner.conn

    async def call(self, fn, *args, **kwargs):
        if fn is catalog_tasks.record_buffered_tasks:
            self.entered.set()
            await asyncio.to_thread(self.gate.wait, HOLD_S)
        return await self.inner.call(fn, *args, **kwargs)

    def call_sync(self, fn, *args, **kwargs):
        return self.inner.call_sync(fn, *args, **kwargs)


def stored_task_ids(services) -> set[str]:
    return {row[0] for row in services.catalog.conn.execute("SELECT id FROM tasks").fetchall()}


def test_an_answer_does_not_wait_for_its_tasks_to_be_stored(services, alice, model_id) -> None:
    publish(services, alice, model_id)
    held = HeldCatalog(services.catalog)
    app = create_api(replace(services, catalog=held), FakeClassifier())
    app.state.task_buffer.interval_s = 0.01
    picture = upload(("red.png", make_image(RED)))

    with TestClient(app) as api:
        started = time.perf_counter()
        answer = api.post(f"/v1/models/{model_id}/classify", files=picture, headers=alice.headers)
        answered_s = time.perf_counter() - started
        assert answer.status_code == 200, answer.text
        task_id = answer.json()["results"][0]["task_id"]
        assert held.entered.wait(HOLD_S)  # the buffer is storing it now, held by the catalog

        assert answered_s < HOLD_S / 3  # had the answer waited for the catalog, it would have taken HOLD_S
        assert task_id not in stored_task_ids(services)
        held.gate.set()
        found = api.get(f"/v1/tasks/{task_id}", headers=alice.headers)
        feedback = api.post(f"/v1/tasks/{task_id}/feedback", json={"label": "blue"}, headers=alice.headers)
        listed = api.get(f"/v1/tasks?model_id={model_id}", headers=alice.headers).json()

    assert found.status_code == 200 and found.json()["label"] == "red"
    assert feedback.status_code == 200 and feedback.json()["feedback"]["label"] == "blue"
    assert [task["id"] for task in listed["data"]] == [task_id]


def test_tasks_are_found_right_after_the_answer(services, alice, model_id) -> None:
    publish(services, alice, model_id)
    app = create_api(services, FakeClassifier())
    app.state.task_buffer.interval_s = 3600  # only a read (or the shutdown) stores them

    with TestClient(app) as api:
        answers = [
            api.post(f"/v1/models/{model_id}/classify", files=upload(("r.png", make_image(RED))), headers=alice.headers)
            for _ in range(3)
        ]
        ids = [answer.json()["results"][0]["task_id"] for answer in answers]
        assert stored_task_ids(services) == set()
        before = api.get(f"/v1/models/{model_id}/stats", headers=alice.headers).json()  # stats read them too
        confirmed = api.post(f"/v1/tasks/{ids[0]}/feedback", json={"correct": True}, headers=alice.headers)
        after = api.get(f"/v1/models/{model_id}/stats", headers=alice.headers).json()

    assert before["tasks"] == 3 and stored_task_ids(services) == set(ids)
    assert confirmed.status_code == 200 and confirmed.json()["feedback"]["correct"] is True
    assert (after["versions"][0]["field"]["feedback"], after["versions"][0]["field"]["correct"]) == (1, 1)


def test_the_api_shutdown_stores_waiting_tasks(services, alice, model_id) -> None:
    publish(services, alice, model_id)
    app = create_api(services, FakeClassifier())
    app.state.task_buffer.interval_s = 3600

    with TestClient(app) as api:
        answer = api.post(
            f"/v1/models/{model_id}/classify", files=upload(("r.png", make_image(RED))), headers=alice.headers
        )
        task_id = answer.json()["results"][0]["task_id"]
        assert stored_task_ids(services) == set()

    assert stored_task_ids(services) == {task_id}
