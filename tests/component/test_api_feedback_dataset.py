"""Feedback with `add_to_dataset`: the classified picture (kept by cluster/kept.py) joins the model's dataset
under the given class and a trained model is asked for an update, as after an upload."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest
from fastapi.testclient import TestClient

from cluster.kept import PREFIX, keep_pictures, prune_kept
from tests.component.conftest import api_client, build_settings, create_account, create_model, running_services
from tests.component.test_api_classify import BLUE, RED, FakeClassifier, publish, upload
from tests.factories import make_image


@pytest.fixture
def api(services) -> Iterator[TestClient]:
    with api_client(services, FakeClassifier()) as test_client:
        yield test_client


def classify(api, account, model_id: str, picture: bytes) -> dict:
    response = api.post(f"/v1/models/{model_id}/classify", files=upload(("x.png", picture)), headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()["results"][0]


def test_a_corrected_picture_joins_the_dataset_and_updates_the_model(api, services, alice, model_id) -> None:
    publish(services, alice, model_id)
    api.post(f"/v1/models/{model_id}/images", data={"label": "blue"}, files=upload(("b.png", make_image(BLUE))),
             headers=alice.headers)  # fmt: skip
    picture = make_image(RED, (20, 20))
    task = classify(api, alice, model_id, picture)

    response = api.post(
        f"/v1/tasks/{task['task_id']}/feedback", json={"label": "blue", "add_to_dataset": True}, headers=alice.headers
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["feedback"]["label"] == "blue" and body["added_to_dataset"]["status"] == "accepted"
    assert response.headers["Model-Update"] == body["model_update"] and body["model_update"].startswith("/v1/jobs/")
    assert services.jobs.expansion_requests == [body["model_update"].rsplit("/", 1)[1]]
    images = api.get(f"/v1/models/{model_id}/images?label=blue", headers=alice.headers).json()["data"]
    added = next(image for image in images if image["id"] == body["added_to_dataset"]["image_id"])
    assert api.get(added["content_url"], headers=alice.headers).content == picture

    again = api.post(
        f"/v1/tasks/{task['task_id']}/feedback", json={"label": "blue", "add_to_dataset": True}, headers=alice.headers
    ).json()
    assert again["added_to_dataset"]["status"] == "duplicate" and again["model_update"] is None
    other = api.post(
        f"/v1/tasks/{task['task_id']}/feedback", json={"correct": True, "add_to_dataset": True}, headers=alice.headers
    )
    assert other.status_code == 422 and "already in class 'blue'" in other.json()["detail"]


def test_a_label_is_needed_and_another_users_task_is_missing(api, services, alice, bob, model_id) -> None:
    publish(services, alice, model_id)
    task = classify(api, alice, model_id, make_image(RED))

    no_label = api.post(
        f"/v1/tasks/{task['task_id']}/feedback", json={"correct": False, "add_to_dataset": True}, headers=alice.headers
    )
    assert no_label.status_code == 422
    theirs = api.post(
        f"/v1/tasks/{task['task_id']}/feedback", json={"label": "red", "add_to_dataset": True}, headers=bob.headers
    )
    assert theirs.status_code == 404


def test_without_kept_pictures_adding_is_refused_in_words(tmp_path) -> None:
    with running_services(build_settings(tmp_path, keep_classified_days=0)) as services:
        alice = create_account(services, "alice")
        model_id = create_model(services, alice)
        publish(services, alice, model_id)
        with api_client(services, FakeClassifier()) as api:
            task = classify(api, alice, model_id, make_image(RED))
            refused = api.post(
                f"/v1/tasks/{task['task_id']}/feedback", json={"label": "red", "add_to_dataset": True},
                headers=alice.headers,
            )  # fmt: skip
            assert refused.status_code == 409 and "no longer kept" in refused.json()["detail"]
            assert api.get(f"/v1/tasks/{task['task_id']}", headers=alice.headers).json()["feedback"] is None
        assert list(services.blobs.iter_keys(PREFIX)) == []


def test_kept_pictures_are_dropped_by_the_day(services) -> None:
    keep_pictures(services.blobs, [("a" * 64, b"one")], keep_days=7)
    services.blobs.put(f"{PREFIX}/2000-01-01/{'b' * 64}", b"old")

    assert prune_kept(services.blobs, 7, date.today()) == 1
    assert [key.rsplit("/", 1)[1] for key in services.blobs.iter_keys(PREFIX)] == ["a" * 64]
