"""Growing a trained model on real Ray and Serve: add and remove classes in seconds, changes made together
become one version, classification keeps answering meanwhile, and the quality guard speaks up."""

from __future__ import annotations

import io
import threading
import zipfile

import numpy as np
import pytest
from PIL import Image

from tests.integration.conftest import wait_until

pytestmark = pytest.mark.ray

SIDE = 32
SLOW = 120


def picture(kind: str, rng: np.random.Generator) -> bytes:
    """Noisy stripes (horizontal or vertical), a checkerboard, or big dots: classes Lite0 features tell apart."""
    rows, cols = np.indices((SIDE, SIDE))
    pattern = {
        "horizontal": rows // 4 % 2,
        "vertical": cols // 4 % 2,
        "checker": (rows // 4 + cols // 4) % 2,
        "dots": ((rows % 8 - 4) ** 2 + (cols % 8 - 4) ** 2 < 6).astype(int),
        "diagonal": (rows + cols) // 4 % 2,
    }[kind]
    noisy = np.clip(pattern * 190 + rng.integers(0, 60, (SIDE, SIDE)), 0, 255).astype(np.uint8)
    data = io.BytesIO()
    Image.fromarray(noisy).convert("RGB").save(data, "PNG")
    return data.getvalue()


def pictures(kind: str, count: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [picture(kind, rng) for _ in range(count)]


@pytest.fixture(scope="module")
def trained(platform):
    headers = platform.login("grower")
    model_id = platform.http.post("/v1/models", json={"name": "Patterns"}, headers=headers).json()["id"]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for kind in ("horizontal", "vertical"):
            for i, data in enumerate(pictures(kind, 25, seed=len(kind))):
                archive.writestr(f"{kind}/{i}.png", data)
    started = platform.http.post(
        f"/v1/models/{model_id}/imports",
        content=buffer.getvalue(),
        headers={**headers, "Content-Type": "application/zip"},
    )
    assert platform.wait_for_job(headers, started.headers["Location"])["status"] == "succeeded"
    body = {"kinds": ["frozen_head"], "backbones": ["efficientnet_lite0"], "max_epochs": 30, "time_budget_s": 300}
    run_url = platform.http.post(f"/v1/models/{model_id}/train", json=body, headers=headers).headers["Location"]
    run = platform.wait_for_run(headers, run_url)
    assert run["status"] == "succeeded", run
    return headers, model_id


def upload(platform, headers, model_id: str, label: str, datas: list[bytes]):
    files = [("files", (f"{label}{i}.png", data)) for i, data in enumerate(datas)]
    response = platform.http.post(
        f"/v1/models/{model_id}/images", data={"label": label}, files=files, headers=headers, timeout=SLOW
    )
    assert response.status_code == 201, response.text
    return response


def finished_update(platform, headers, response) -> dict:
    job_url = response.headers["Model-Update"]
    return platform.wait_for_job(headers, job_url, deadline_s=300)


def active(platform, headers, model_id: str) -> dict:
    versions = platform.http.get(f"/v1/models/{model_id}/versions", headers=headers).json()["data"]
    return next(v for v in versions if v["active"])


def classify(platform, headers, model_id: str, data: bytes) -> str:
    response = platform.http.post(
        f"/v1/models/{model_id}/classify", files=[("files", ("x.png", data))], headers=headers, timeout=SLOW
    )
    assert response.status_code == 200, response.text
    return response.json()["results"][0]["label"]


def test_adding_a_class_answers_with_it_in_seconds_and_classification_never_fails(platform, trained) -> None:
    headers, model_id = trained
    before = active(platform, headers, model_id)
    probe = pictures("horizontal", 1, seed=99)[0]
    classify(platform, headers, model_id, probe)  # warm
    errors: list[str] = []
    answers = 0
    stop = threading.Event()

    def keep_classifying() -> None:
        nonlocal answers
        while not stop.is_set():
            response = platform.http.post(
                f"/v1/models/{model_id}/classify", files=[("files", ("p.png", probe))], headers=headers, timeout=SLOW
            )
            if response.status_code != 200:
                errors.append(response.text)
            answers += 1

    load = threading.Thread(target=keep_classifying)
    load.start()
    try:
        added = upload(platform, headers, model_id, "checker", pictures("checker", 20, 5))
        job = finished_update(platform, headers, added)
    finally:
        stop.set()
        load.join(SLOW)

    assert job["status"] == "succeeded", job
    assert job["result"]["added"] == ["checker"] and job["result"]["version"] == before["version"] + 1
    assert errors == [] and answers > 0
    now = active(platform, headers, model_id)
    assert now["source"] == "expansion" and now["classes"] == ["checker", "horizontal", "vertical"]
    assert classify(platform, headers, model_id, pictures("checker", 1, seed=77)[0]) == "checker"
    assert classify(platform, headers, model_id, pictures("vertical", 1, seed=78)[0]) == "vertical"
    per_class = {row["class"]: row["recall"] for row in now["metrics"]["per_class"]}
    assert per_class["checker"] >= 0.75, now["metrics"]


def test_removing_a_class_means_it_can_no_longer_be_predicted(platform, trained) -> None:
    headers, model_id = trained

    deleted = platform.http.delete(f"/v1/models/{model_id}/classes/checker", headers=headers)

    assert deleted.status_code == 204, deleted.text
    job = finished_update(platform, headers, deleted)
    assert job["status"] == "succeeded" and job["result"]["removed"] == ["checker"], job
    assert active(platform, headers, model_id)["classes"] == ["horizontal", "vertical"]
    assert classify(platform, headers, model_id, pictures("checker", 1, seed=80)[0]) in ("horizontal", "vertical")


def test_two_quick_additions_become_one_version_with_both(platform, trained) -> None:
    headers, model_id = trained
    count = platform.http.get(f"/v1/models/{model_id}/versions", headers=headers).json()["count"]

    first = upload(platform, headers, model_id, "dots", pictures("dots", 15, 11))
    second = upload(platform, headers, model_id, "checker", pictures("checker", 15, 12))

    assert first.headers["Model-Update"] == second.headers["Model-Update"]  # one job for both changes
    job = finished_update(platform, headers, second)
    assert job["status"] == "succeeded", job
    assert sorted(job["result"]["added"]) == ["checker", "dots"]
    versions = platform.http.get(f"/v1/models/{model_id}/versions", headers=headers).json()
    assert versions["count"] == count + 1
    assert active(platform, headers, model_id)["classes"] == ["checker", "dots", "horizontal", "vertical"]


def test_the_quality_guard_speaks_up_for_a_class_the_features_cannot_separate(platform, trained) -> None:
    headers, model_id = trained
    opted_in = {"auto_retrain": True, "time_budget_s": 60}
    assert platform.http.patch(f"/v1/models/{model_id}", json=opted_in, headers=headers).status_code == 200

    twin = upload(platform, headers, model_id, "vertical-too", pictures("vertical", 20, 21))

    job = finished_update(platform, headers, twin)
    assert job["status"] == "succeeded", job
    assert job["result"]["retrain_recommended"] is True, job
    assert "full training" in job["result"]["summary"]
    retrain = job["result"]["retrain_run"]  # the user opted in: a full training started by itself
    assert retrain and retrain.startswith("/v1/runs/"), job
    assert platform.http.post(f"{retrain}/cancel", headers=headers).status_code == 200
    wait_until(
        lambda: platform.http.get(retrain, headers=headers).json()["status"] not in ("queued", "running"),
        180,
        "the automatic retrain to stop",
    )
    platform.http.patch(f"/v1/models/{model_id}", json={"auto_retrain": False}, headers=headers)
    updates = platform.http.get(f"/v1/models/{model_id}/updates", headers=headers).json()
    assert updates["count"] >= 4 and updates["data"][0]["id"] == job["id"]


def test_a_zip_of_new_class_folders_updates_a_trained_model(platform, trained) -> None:
    headers, model_id = trained
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i, data in enumerate(pictures("diagonal", 20, seed=41)):
            archive.writestr(f"diagonal/{i}.png", data)

    zip_headers = {**headers, "Content-Type": "application/zip"}
    started = platform.http.post(f"/v1/models/{model_id}/imports", content=buffer.getvalue(), headers=zip_headers)

    imported = platform.wait_for_job(headers, started.headers["Location"])
    assert imported["status"] == "succeeded", imported
    assert "being updated" in imported["result"]["summary"]
    update = platform.wait_for_job(headers, imported["result"]["model_update"], deadline_s=300)
    assert update["status"] == "succeeded" and "diagonal" in update["result"]["added"], update
    assert "diagonal" in active(platform, headers, model_id)["classes"]


def test_a_from_scratch_cnn_grows_too(platform) -> None:
    headers = platform.login("cnn-grower")
    model_id = platform.http.post("/v1/models", json={"name": "CNN patterns"}, headers=headers).json()["id"]
    for kind in ("horizontal", "vertical"):
        upload(platform, headers, model_id, kind, pictures(kind, 25, seed=30 + len(kind)))
    body = {"kinds": ["scratch_cnn"], "max_epochs": 8, "time_budget_s": 300}
    run_url = platform.http.post(f"/v1/models/{model_id}/train", json=body, headers=headers).headers["Location"]
    run = platform.wait_for_run(headers, run_url)
    assert run["status"] == "succeeded", run

    added = upload(platform, headers, model_id, "checker", pictures("checker", 25, 31))

    job = finished_update(platform, headers, added)

    assert job["status"] == "succeeded", job
    grown = active(platform, headers, model_id)
    assert grown["source"] == "expansion" and grown["classes"] == ["checker", "horizontal", "vertical"]
    assert classify(platform, headers, model_id, pictures("checker", 1, seed=32)[0]) == "checker"
    export_url = f"/v1/models/{model_id}/versions/{grown['version']}/export"
    exported = platform.http.get(export_url, headers=headers, timeout=300)
    assert exported.status_code == 200, exported.text
