"""Classify, tasks and feedback routes in-process, with a fake classifier in place of the serving deployments
(red vs blue by mean colour); the real graph is tested over HTTP in tests/integration/test_classify.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cluster.catalog import runs as catalog_runs
from cluster.catalog.runs import VersionRecord
from serve.classifier import Scores
from tests.component.conftest import Account, api_client
from tests.factories import make_image

RED, BLUE, PURPLE = (220, 20, 20), (20, 20, 220), (120, 20, 110)


class FakeClassifier:
    """P(red) from the pictures' mean red and blue; remembers what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, tuple[int, ...]]] = []

    async def classify(self, version: VersionRecord, images: list[np.ndarray]) -> Scores:
        self.calls.append((version.version, tuple(image.shape for image in images)))
        means = np.stack([image.reshape(-1, 3).mean(axis=0) for image in images])
        red = means[:, 0] / (means[:, 0] + means[:, 2])
        known_share = np.where(means[:, 1] > 150, 0.0, 0.5)  # green pictures are like no known one
        return Scores(("blue", "red"), np.stack([1 - red, red], axis=1), known_share)

    async def classify_together(self, targets: list[tuple[VersionRecord, np.ndarray]]) -> list[Scores]:
        self.together = [(version.model_id, image.shape) for version, image in targets]
        return [await self.classify(version, [image]) for version, image in targets]


@pytest.fixture
def classifier() -> FakeClassifier:
    return FakeClassifier()


@pytest.fixture
def api(services, classifier) -> Iterator[TestClient]:
    with api_client(services, classifier) as test_client:
        yield test_client


def publish(services, owner: Account, model_id: str, image_size: int = 16) -> int:
    record = services.catalog.call_sync(
        catalog_runs.publish_version,
        owner.id,
        model_id,
        source="training",
        run_id=None,
        classes=["blue", "red"],
        backbone=None,
        preprocessing={"image_size": image_size, "color": "rgb", "resize": "stretch"},
        artifact_uri="artifacts/fake",
        metrics={"accuracy": 1.0},
    )
    return record.version


def upload(*files: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream")) for name, data in files]


@pytest.fixture
def ready_model(services, alice, model_id) -> str:
    publish(services, alice, model_id)
    return model_id


def test_each_file_gets_its_answer_version_and_task(api, alice, ready_model, classifier) -> None:
    pictures = upload(("red.png", make_image(RED, (40, 30))), ("blue.jpg", make_image(BLUE, fmt="JPEG")))

    response = api.post(f"/v1/models/{ready_model}/classify?top_k=2", files=pictures, headers=alice.headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["version"], body["classified"], body["failed"], body["uncertain_below"]) == (1, 2, 0, 0.5)
    red, blue = body["results"]
    assert (red["name"], red["label"], red["version"], red["uncertain"]) == ("red.png", "red", 1, False)
    assert blue["label"] == "blue" and blue["error"] is None
    assert [score["label"] for score in red["top"]] == ["red", "blue"]
    assert sum(score["probability"] for score in red["top"]) == pytest.approx(1.0, abs=1e-5)
    assert red["confidence"] == red["top"][0]["probability"]
    assert classifier.calls == [(1, ((16, 16, 3), (16, 16, 3)))]  # decoded by the version's policy
    task = api.get(f"/v1/tasks/{red['task_id']}", headers=alice.headers).json()
    assert (task["model_id"], task["version"], task["label"], task["feedback"]) == (ready_model, 1, "red", None)
    assert task["latency_ms"] > 0 and task["confidence"] == red["confidence"]


def test_the_uncertain_threshold_can_be_set_per_request(api, alice, ready_model) -> None:
    picture = upload(("purple.png", make_image(PURPLE)))

    default = api.post(f"/v1/models/{ready_model}/classify", files=picture, headers=alice.headers).json()
    strict = api.post(
        f"/v1/models/{ready_model}/classify?uncertain_below=0.9&top_k=1", files=picture, headers=alice.headers
    ).json()

    assert default["results"][0]["uncertain"] is False and default["results"][0]["label"] == "red"
    assert strict["results"][0]["uncertain"] is True and len(strict["results"][0]["top"]) == 1
    assert strict["uncertain_below"] == 0.9


def test_a_bad_file_gets_its_own_problem_and_the_others_are_classified(api, alice, ready_model) -> None:
    pictures = upload(("red.png", make_image(RED)), ("notes.png", b"not a picture at all"), ("empty.png", b""))

    response = api.post(f"/v1/models/{ready_model}/classify", files=pictures, headers=alice.headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["classified"], body["failed"]) == (1, 2)
    good, bad, empty = body["results"]
    assert good["label"] == "red" and good["task_id"]
    for failed, name in ((bad, "notes.png"), (empty, "empty.png")):
        assert failed["task_id"] is None and failed["label"] is None
        assert failed["error"]["status"] == 422 and failed["error"]["code"] == "invalid_input"
        assert name in failed["error"]["detail"]
    assert api.get("/v1/tasks", headers=alice.headers).json()["count"] == 1


@pytest.mark.parametrize(
    "files",
    [
        pytest.param([("notes.png", b"not a picture")], id="one-file"),
        pytest.param([("a.png", b"nope"), ("b.png", b"")], id="every-file"),
    ],
)
def test_when_no_file_is_usable_the_answer_is_a_problem(api, alice, ready_model, classifier, files) -> None:
    response = api.post(f"/v1/models/{ready_model}/classify", files=upload(*files), headers=alice.headers)

    assert response.status_code == 422
    assert "a.png" in response.json()["detail"] or "notes.png" in response.json()["detail"]
    assert classifier.calls == []
    assert api.get("/v1/tasks", headers=alice.headers).json()["count"] == 0


def test_a_model_without_a_version_answers_409(api, alice, model_id) -> None:
    response = api.post(
        f"/v1/models/{model_id}/classify", files=upload(("red.png", make_image(RED))), headers=alice.headers
    )

    assert response.status_code == 409
    assert response.json()["code"] == "not_ready" and "Train it first" in response.json()["detail"]


def test_a_chosen_version_answers_and_an_unknown_one_is_404(api, services, alice, ready_model, classifier) -> None:
    publish(services, alice, ready_model)
    picture = upload(("red.png", make_image(RED)))

    chosen = api.post(f"/v1/models/{ready_model}/classify?version=1", files=picture, headers=alice.headers)
    active = api.post(f"/v1/models/{ready_model}/classify", files=picture, headers=alice.headers)
    missing = api.post(f"/v1/models/{ready_model}/classify?version=9", files=picture, headers=alice.headers)

    assert chosen.json()["version"] == 1 and active.json()["version"] == 2
    assert missing.status_code == 404


def test_another_users_model_and_tasks_read_as_missing(api, alice, bob, ready_model) -> None:
    picture = upload(("red.png", make_image(RED)))
    answered = api.post(f"/v1/models/{ready_model}/classify", files=picture, headers=alice.headers).json()
    task_id = answered["results"][0]["task_id"]

    assert api.post(f"/v1/models/{ready_model}/classify", files=picture, headers=bob.headers).status_code == 404
    assert api.get(f"/v1/tasks/{task_id}", headers=bob.headers).status_code == 404
    assert api.post(f"/v1/tasks/{task_id}/feedback", json={"correct": True}, headers=bob.headers).status_code == 404
    assert api.get(f"/v1/tasks?model_id={ready_model}", headers=bob.headers).status_code == 404
    assert api.get("/v1/tasks", headers=bob.headers).json() == {"data": [], "count": 0}
    assert api.get(f"/v1/tasks/{task_id}", headers=alice.headers).json()["feedback"] is None


def test_feedback_confirms_or_corrects_and_filters_find_it(api, alice, ready_model) -> None:
    pictures = upload(*[(f"{i}.png", make_image(RED, mark=i)) for i in range(3)])
    results = api.post(f"/v1/models/{ready_model}/classify", files=pictures, headers=alice.headers).json()["results"]
    first, second, _ = (result["task_id"] for result in results)

    confirmed = api.post(f"/v1/tasks/{first}/feedback", json={"correct": True}, headers=alice.headers)
    corrected = api.post(f"/v1/tasks/{second}/feedback", json={"label": "blue"}, headers=alice.headers)
    refused = api.post(f"/v1/tasks/{second}/feedback", json={"label": "green"}, headers=alice.headers)
    empty = api.post(f"/v1/tasks/{second}/feedback", json={}, headers=alice.headers)

    assert confirmed.status_code == 200 and confirmed.json()["feedback"]["correct"] is True
    feedback = corrected.json()["feedback"]
    assert (feedback["correct"], feedback["label"]) == (False, "blue")
    assert refused.status_code == 422 and "not a class" in refused.json()["detail"]
    assert empty.status_code == 422

    def ids(query: str) -> set[str]:
        page = api.get(f"/v1/tasks?model_id={ready_model}&{query}", headers=alice.headers).json()
        assert page["count"] == len(page["data"])
        return {task["id"] for task in page["data"]}

    assert ids("feedback=confirmed") == {first}
    assert ids("feedback=corrected") == {second}
    assert len(ids("feedback=none")) == 1
    assert ids("version=1") == {first, second} | ids("feedback=none")
    assert ids("since=2000-01-01T00:00:00Z") == ids("version=1") and ids("until=2000-01-01T00:00:00%2B02:00") == set()
    page = api.get("/v1/tasks?limit=2&offset=2", headers=alice.headers).json()
    assert page["count"] == 3 and len(page["data"]) == 1


@pytest.mark.parametrize(
    ("query", "field"),
    [
        pytest.param("version=1", "version", id="version-without-model"),
        pytest.param("feedback=maybe", "feedback", id="unknown-feedback"),
        pytest.param("limit=0", "limit", id="limit-zero"),
        pytest.param("since=yesterday", "since", id="not-a-time"),
    ],
)
def test_unusable_task_filters_are_refused(api, alice, query, field) -> None:
    response = api.get(f"/v1/tasks?{query}", headers=alice.headers)

    assert response.status_code == 422 and field in response.text


def test_too_many_files_are_refused_before_anything_is_decoded(api, alice, ready_model, classifier) -> None:
    pictures = upload(*[(f"{i}.png", b"x") for i in range(101)])

    response = api.post(f"/v1/models/{ready_model}/classify", files=pictures, headers=alice.headers)

    assert response.status_code == 422 and "at most 100" in response.json()["detail"]
    assert classifier.calls == []


def test_without_serving_deployments_classify_answers_503(client, alice, services, model_id) -> None:
    publish(services, alice, model_id)

    response = client.post(
        f"/v1/models/{model_id}/classify", files=upload(("red.png", make_image(RED))), headers=alice.headers
    )

    assert response.status_code == 503 and response.json()["code"] == "unavailable"


def test_one_picture_is_answered_by_each_model_asked(api, services, alice, bob, ready_model, classifier) -> None:
    from tests.component.conftest import create_model

    second = create_model(services, alice, "second")
    publish(services, alice, second, image_size=24)
    untrained = create_model(services, alice, "untrained")
    bobs = create_model(services, bob, "bob's")
    publish(services, bob, bobs)
    asked = [ready_model, second, untrained, bobs, ready_model]  # a repeated id is asked once

    response = api.post(
        "/v1/classify?top_k=1",
        files={"file": ("red.png", make_image(RED, (40, 30)))},
        data={"model_ids": asked},
        headers=alice.headers,
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["name"], body["answered"], body["failed"]) == ("red.png", 2, 2)
    first, other, not_trained, not_found = body["results"]
    assert [r["model_id"] for r in body["results"]] == [ready_model, second, untrained, bobs]
    assert (first["label"], first["version"], len(first["top"])) == ("red", 1, 1)
    assert other["label"] == "red" and other["task_id"] != first["task_id"]
    assert not_trained["error"]["status"] == 409 and not_found["error"]["status"] == 404
    assert classifier.together == [(ready_model, (16, 16, 3)), (second, (24, 24, 3))]  # each model's policy
    tasks = api.get("/v1/tasks", headers=alice.headers).json()
    assert {(t["model_id"], t["id"]) for t in tasks["data"]} == {
        (ready_model, first["task_id"]),
        (second, other["task_id"]),
    }
    assert api.get("/v1/tasks", headers=bob.headers).json()["count"] == 0


@pytest.mark.parametrize(
    ("models", "status"),
    [
        pytest.param(["untrained"], 409, id="one-untrained-model"),
        pytest.param(["untrained", "missing"], 409, id="no-model-can-answer"),
        pytest.param(["missing"], 404, id="unknown-model"),
    ],
)
def test_when_no_model_can_answer_the_answer_is_a_problem(api, services, alice, models, status) -> None:
    from tests.component.conftest import create_model

    ids = {"untrained": create_model(services, alice, "untrained"), "missing": "mdl_missing"}

    response = api.post(
        "/v1/classify",
        files={"file": ("red.png", make_image(RED))},
        data={"model_ids": [ids[m] for m in models]},
        headers=alice.headers,
    )

    assert response.status_code == status
    if len(models) > 1:
        assert [m["model_id"] for m in response.json()["models"]] == [ids[m] for m in models]


def test_several_models_and_a_bad_picture_is_one_problem(api, services, alice, ready_model, classifier) -> None:
    response = api.post(
        "/v1/classify",
        files={"file": ("notes.png", b"not a picture")},
        data={"model_ids": [ready_model]},
        headers=alice.headers,
    )

    assert response.status_code == 422 and "notes.png" in response.json()["detail"]
    assert classifier.calls == []


@pytest.mark.parametrize("count", [0, 21], ids=["none", "too-many"])
def test_the_number_of_models_is_bounded(api, alice, ready_model, count) -> None:
    data = {"model_ids": [f"mdl_{i}" for i in range(count)] or [" "]}

    response = api.post("/v1/classify", files={"file": ("red.png", make_image(RED))}, data=data, headers=alice.headers)

    assert response.status_code == 422 and "model_ids" in response.text


def test_stats_show_traffic_and_field_accuracy_next_to_the_evaluation(api, alice, bob, ready_model) -> None:
    pictures = upload(*[(f"{i}.png", make_image(RED if i < 3 else PURPLE, mark=i)) for i in range(4)])
    results = api.post(f"/v1/models/{ready_model}/classify", files=pictures, headers=alice.headers).json()["results"]
    api.post(f"/v1/tasks/{results[0]['task_id']}/feedback", json={"correct": True}, headers=alice.headers)
    api.post(f"/v1/tasks/{results[1]['task_id']}/feedback", json={"label": "blue"}, headers=alice.headers)

    response = api.get(f"/v1/models/{ready_model}/stats?days=7", headers=alice.headers)

    assert response.status_code == 200, response.text
    stats = response.json()
    assert (stats["tasks"], sum(c["count"] for c in stats["per_day"])) == (4, 4)
    assert stats["latency"]["p50_ms"] > 0 and sum(b["count"] for b in stats["confidence"]) == 4
    (version,) = stats["versions"]
    assert (version["version"], version["tasks"], version["evaluated_accuracy"]) == (1, 4, 1.0)
    assert (version["field"]["feedback"], version["field"]["correct"], version["field"]["accuracy"]) == (2, 1, 0.5)
    assert version["per_class"][0]["label"] == "red" and version["alert"] is None
    assert stats["since"].endswith("Z")
    assert api.get(f"/v1/models/{ready_model}/stats", headers=bob.headers).status_code == 404
    assert api.get(f"/v1/models/{ready_model}/stats?days=0", headers=alice.headers).status_code == 422


def test_a_picture_unlike_every_class_is_none_of_the_above_and_the_threshold_is_per_model(
    api, alice, ready_model
) -> None:
    pictures = upload(("red.png", make_image(RED)), ("green.png", make_image((20, 220, 20))))

    red, green = api.post(f"/v1/models/{ready_model}/classify", files=pictures, headers=alice.headers).json()["results"]

    assert red["none_of_the_above"] is False and red["none_of_the_above_reason"] is None
    assert green["none_of_the_above"] is True and "unlike every class" in green["none_of_the_above_reason"]
    assert api.get(f"/v1/models/{ready_model}", headers=alice.headers).json()["none_of_the_above_below"] == 0.01

    patched = api.patch(f"/v1/models/{ready_model}", json={"none_of_the_above_below": 0}, headers=alice.headers)
    assert patched.status_code == 200 and patched.json()["none_of_the_above_below"] == 0
    off = api.post(f"/v1/models/{ready_model}/classify", files=pictures, headers=alice.headers).json()["results"]
    assert [r["none_of_the_above"] for r in off] == [False, False]

    stricter = api.patch(f"/v1/models/{ready_model}", json={"none_of_the_above_below": 0.6}, headers=alice.headers)
    assert stricter.json()["none_of_the_above_below"] == 0.6 and stricter.json()["auto_retrain"] is False
    everything = api.post(f"/v1/models/{ready_model}/classify", files=pictures, headers=alice.headers).json()
    assert [r["none_of_the_above"] for r in everything["results"]] == [True, True]

    reset = api.patch(f"/v1/models/{ready_model}", json={"none_of_the_above_below": None}, headers=alice.headers)
    assert reset.json()["none_of_the_above_below"] == 0.01


def test_a_version_published_elsewhere_answers_the_next_request(api, services, alice, ready_model) -> None:
    picture = upload(("red.png", make_image(RED)))
    assert api.post(f"/v1/models/{ready_model}/classify", files=picture, headers=alice.headers).json()["version"] == 1

    publish(services, alice, ready_model)  # as a model update does, from outside this API (the API cached v1)

    answer = api.post(f"/v1/models/{ready_model}/classify", files=picture, headers=alice.headers).json()
    assert answer["version"] == 2
    rolled_back = api.post(f"/v1/models/{ready_model}/versions/1/activate", headers=alice.headers)
    assert rolled_back.status_code == 200, rolled_back.text
    assert api.post(f"/v1/models/{ready_model}/classify", files=picture, headers=alice.headers).json()["version"] == 1
