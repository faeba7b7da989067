"""Classification on real Ray Serve over HTTP: a from-scratch CNN (FullModels) and a frozen EfficientNet-Lite0
head (Extractor + Heads) trained on stripes; answers, agreement with the evaluation, tasks, feedback, owners.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.factories import stripes_zip

pytestmark = pytest.mark.ray

SLOW = 300  # the first classification of a version loads TensorFlow and the model in its replica


def train(platform, headers: dict[str, str], model_id: str, body: dict) -> int:
    started = platform.http.post(f"/v1/models/{model_id}/train", json=body, headers=headers)
    assert started.status_code == 202, started.text
    run = platform.wait_for_run(headers, started.headers["Location"])
    assert run["status"] == "succeeded", run
    return run["result"]["version"]


@pytest.fixture(scope="module")
def stripes(platform):
    """alice's model with two versions: 1 a from-scratch CNN (a whole model), 2 a frozen Lite0 head (active)."""
    headers = platform.login("alice")
    model_id = platform.http.post("/v1/models", json={"name": "Stripes"}, headers=headers).json()["id"]
    started = platform.http.post(
        f"/v1/models/{model_id}/imports", content=stripes_zip(), headers={**headers, "Content-Type": "application/zip"}
    )
    assert platform.wait_for_job(headers, started.headers["Location"])["status"] == "succeeded"
    cnn = train(platform, headers, model_id, {"kinds": ["scratch_cnn"], "max_epochs": 2, "time_budget_s": 300})
    head = train(
        platform,
        headers,
        model_id,
        {"kinds": ["frozen_head"], "backbones": ["efficientnet_lite0"], "max_epochs": 3, "time_budget_s": 300},
    )
    return headers, model_id, {"cnn": cnn, "head": head}


def test_pictures_before_training_get_a_409(platform) -> None:
    headers = platform.login("carol")
    model_id = platform.http.post("/v1/models", json={"name": "Empty"}, headers=headers).json()["id"]

    response = platform.http.post(
        f"/v1/models/{model_id}/classify", files=[("files", ("a.png", b"x"))], headers=headers
    )

    assert response.status_code == 409 and response.headers["content-type"] == "application/problem+json"
    assert "Train it first" in response.json()["detail"]


def test_pictures_are_classified_as_the_evaluation_measured(platform, stripes, test_pictures) -> None:
    headers, model_id, versions = stripes
    for kind, version in versions.items():
        evaluated = platform.http.get(f"/v1/models/{model_id}/versions/{version}", headers=headers).json()
        files = [("files", (f"{image['id']}.png", data)) for image, data in test_pictures]

        response = platform.http.post(
            f"/v1/models/{model_id}/classify?version={version}&top_k=2", files=files, headers=headers, timeout=SLOW
        )

        assert response.status_code == 200, (kind, response.text)
        body = response.json()
        assert (body["version"], body["classified"], body["failed"]) == (version, len(files), 0)
        for result in body["results"]:
            assert result["task_id"] and result["version"] == version and isinstance(result["uncertain"], bool)
            assert result["uncertain"] == (result["confidence"] < 0.5)
            assert [s["label"] for s in result["top"]] in (["horizontal", "vertical"], ["vertical", "horizontal"])
            assert sum(s["probability"] for s in result["top"]) == pytest.approx(1.0, abs=1e-4)
        truth = [image["label"] for image, _ in test_pictures]
        predicted = [result["label"] for result in body["results"]]
        accuracy = float(np.mean([p == t for p, t in zip(predicted, truth, strict=True)]))
        assert accuracy == pytest.approx(evaluated["metrics"]["accuracy"], abs=1e-4), kind
        wrong = {str(image["id"]) for (image, _), p, t in zip(test_pictures, predicted, truth, strict=True) if p != t}
        assert wrong == {str(m["image_id"]) for m in evaluated["metrics"]["misclassified"]}, kind


@pytest.fixture(scope="module")
def test_pictures(platform, stripes) -> list[tuple[dict, bytes]]:
    headers, model_id, _ = stripes
    listed = platform.http.get(f"/v1/models/{model_id}/images?split=test&limit=100", headers=headers).json()["data"]
    return [
        (image, platform.http.get(f"/v1/models/{model_id}/images/{image['id']}/content", headers=headers).content)
        for image in listed
    ]


def test_pictures_of_one_request_share_forward_passes(platform, stripes, test_pictures) -> None:
    from ray import serve

    headers, model_id, _ = stripes
    extractor = serve.get_deployment_handle("Extractor", app_name="classifly")
    before = extractor.stats.remote().result()["passes"].get("efficientnet_lite0", 0)
    files = [("files", (f"{i}.png", data)) for i, (_, data) in enumerate(test_pictures)]

    response = platform.http.post(f"/v1/models/{model_id}/classify", files=files, headers=headers, timeout=SLOW)

    assert response.status_code == 200, response.text
    passes = extractor.stats.remote().result()["passes"]["efficientnet_lite0"] - before
    assert 1 <= passes < len(files)


def test_concurrent_requests_all_answer_alike(platform, stripes, test_pictures) -> None:
    headers, model_id, versions = stripes
    image, data = test_pictures[0]

    def classify(version: int) -> str:
        response = platform.http.post(
            f"/v1/models/{model_id}/classify?version={version}",
            files=[("files", ("one.png", data))],
            headers=headers,
            timeout=SLOW,
        )
        assert response.status_code == 200, response.text
        return response.json()["results"][0]["label"]

    with ThreadPoolExecutor(8) as pool:
        labels = list(pool.map(classify, [versions["cnn"], versions["head"]] * 8))

    assert set(labels[0::2]) == {labels[0]} and set(labels[1::2]) == {labels[1]}


def test_a_corrupt_file_gets_its_own_problem(platform, stripes, test_pictures) -> None:
    headers, model_id, _ = stripes
    files = [
        ("files", ("good.png", test_pictures[0][1])),
        ("files", ("broken.png", test_pictures[0][1][:40])),
        ("files", ("notes.png", b"these are notes, not a picture")),
    ]

    response = platform.http.post(f"/v1/models/{model_id}/classify", files=files, headers=headers, timeout=SLOW)

    assert response.status_code == 200, response.text
    good, broken, notes = response.json()["results"]
    assert good["label"] in ("horizontal", "vertical") and good["error"] is None
    for failed in (broken, notes):
        assert failed["task_id"] is None
        assert failed["error"]["status"] == 422 and failed["error"]["code"] == "invalid_input"
        assert failed["name"] in failed["error"]["detail"]
    only_bad = platform.http.post(f"/v1/models/{model_id}/classify", files=files[2:], headers=headers)
    assert only_bad.status_code == 422 and only_bad.headers["content-type"] == "application/problem+json"


def test_tasks_are_listed_and_feedback_is_recorded(platform, stripes, test_pictures) -> None:
    headers, model_id, versions = stripes
    image, data = test_pictures[0]
    answered = platform.http.post(
        f"/v1/models/{model_id}/classify", files=[("files", ("x.png", data))], headers=headers, timeout=SLOW
    ).json()["results"][0]

    task = platform.http.get(f"/v1/tasks/{answered['task_id']}", headers=headers).json()
    assert (task["model_id"], task["version"], task["label"]) == (model_id, versions["head"], answered["label"])
    assert task["latency_ms"] > 0 and task["feedback"] is None
    listed = platform.http.get(f"/v1/tasks?model_id={model_id}&version={versions['head']}", headers=headers).json()
    assert answered["task_id"] in {t["id"] for t in listed["data"]} and listed["count"] >= 1

    other = "vertical" if answered["label"] == "horizontal" else "horizontal"
    corrected = platform.http.post(
        f"/v1/tasks/{answered['task_id']}/feedback", json={"label": other}, headers=headers
    ).json()
    assert corrected["feedback"]["correct"] is False and corrected["feedback"]["label"] == other
    found = platform.http.get(f"/v1/tasks?model_id={model_id}&feedback=corrected", headers=headers).json()
    assert [t["id"] for t in found["data"]] == [answered["task_id"]]
    stats = platform.http.get(f"/v1/models/{model_id}/stats", headers=headers).json()
    head = next(v for v in stats["versions"] if v["version"] == versions["head"])
    assert (head["field"]["feedback"], head["field"]["correct"]) == (1, 0)
    assert head["tasks"] >= 1 and stats["tasks"] == sum(v["tasks"] for v in stats["versions"])


def test_another_user_gets_404(platform, stripes, test_pictures) -> None:
    _, model_id, _ = stripes
    headers = platform.login("mallory")
    task_id = platform.http.get("/v1/tasks?limit=1", headers=stripes[0]).json()["data"][0]["id"]

    classify = platform.http.post(
        f"/v1/models/{model_id}/classify", files=[("files", ("x.png", test_pictures[0][1]))], headers=headers
    )

    assert classify.status_code == 404 and classify.headers["content-type"] == "application/problem+json"
    assert platform.http.get(f"/v1/tasks/{task_id}", headers=headers).status_code == 404
    feedback = platform.http.post(f"/v1/tasks/{task_id}/feedback", json={"correct": True}, headers=headers)
    assert feedback.status_code == 404
    assert platform.http.get("/v1/tasks", headers=headers).json()["count"] == 0


def test_several_models_on_one_backbone_share_one_pass(platform, stripes, test_pictures) -> None:
    from ray import serve

    headers, first, _ = stripes
    second = platform.http.post("/v1/models", json={"name": "Stripes again"}, headers=headers).json()["id"]
    started = platform.http.post(
        f"/v1/models/{second}/imports", content=stripes_zip(), headers={**headers, "Content-Type": "application/zip"}
    )
    assert platform.wait_for_job(headers, started.headers["Location"])["status"] == "succeeded"
    body = {"kinds": ["frozen_head"], "backbones": ["efficientnet_lite0"], "max_epochs": 3, "time_budget_s": 300}
    train(platform, headers, second, body)
    _, data = test_pictures[0]
    alone = {
        model_id: platform.http.post(
            f"/v1/models/{model_id}/classify", files=[("files", ("x.png", data))], headers=headers, timeout=SLOW
        ).json()["results"][0]
        for model_id in (first, second)
    }
    extractor = serve.get_deployment_handle("Extractor", app_name="classifly")
    before = extractor.stats.remote().result()["passes"]["efficientnet_lite0"]

    response = platform.http.post(
        "/v1/classify", files={"file": ("x.png", data)}, data={"model_ids": [first, second]}, headers=headers
    )

    assert response.status_code == 200, response.text
    assert extractor.stats.remote().result()["passes"]["efficientnet_lite0"] - before == 1
    results = response.json()["results"]
    assert [r["model_id"] for r in results] == [first, second]
    for result in results:
        expected = alone[result["model_id"]]
        assert result["label"] == expected["label"] and result["task_id"] != expected["task_id"]
        assert result["confidence"] == pytest.approx(expected["confidence"], abs=1e-4)
