"""Classification on real Ray Serve over HTTP, beyond the basics of test_classify.py: "none of the above" for
pictures of a kind the model never saw, and switching the active version under continuous requests.
"""

from __future__ import annotations

import io
import threading
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from tests.factories import stripes_zip
from tests.integration.test_classify import SLOW, train

pytestmark = pytest.mark.ray


def unseen_pictures(count: int = 12, size: int = 16) -> list[bytes]:
    """Nothing like stripes: smooth colour gradients and blobs."""
    rng = np.random.default_rng(5)
    pictures = []
    for i in range(count):
        y, x = np.indices((size, size)) / size
        colour = rng.integers(0, 255, 3)
        blob = np.exp(-((x - rng.random()) ** 2 + (y - rng.random()) ** 2) * 8)
        image = (blob[..., None] * colour + (1 - blob[..., None]) * (255 - colour) * (i % 2)).astype(np.uint8)
        data = io.BytesIO()
        Image.fromarray(image).save(data, "PNG")
        pictures.append(data.getvalue())
    return pictures


@pytest.fixture(scope="module")
def stripes(platform):
    """A model with two versions: 1 a from-scratch CNN (a whole model), 2 a frozen Lite0 head (active)."""
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
    listed = platform.http.get(f"/v1/models/{model_id}/images?split=test&limit=100", headers=headers).json()["data"]
    known = [
        platform.http.get(f"/v1/models/{model_id}/images/{image['id']}/content", headers=headers).content
        for image in listed
    ]
    return headers, model_id, {"cnn": cnn, "head": head}, known


def flagged_share(platform, headers, model_id: str, version: int, pictures: list[bytes]) -> float:
    files = [("files", (f"{i}.png", data)) for i, data in enumerate(pictures)]
    response = platform.http.post(
        f"/v1/models/{model_id}/classify?version={version}", files=files, headers=headers, timeout=SLOW
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    for result in results:
        assert isinstance(result["none_of_the_above"], bool)
        assert (result["none_of_the_above_reason"] is not None) == result["none_of_the_above"]
    return float(np.mean([result["none_of_the_above"] for result in results]))


def test_an_unseen_kind_is_none_of_the_above_more_often_than_known_ones(platform, stripes) -> None:
    headers, model_id, versions, known = stripes
    unseen = unseen_pictures()

    known_share = flagged_share(platform, headers, model_id, versions["head"], known)
    unseen_share = flagged_share(platform, headers, model_id, versions["head"], unseen)

    assert unseen_share > known_share, (unseen_share, known_share)
    assert unseen_share >= 0.5 and known_share <= 0.5
    # the threshold is the model's: 0 turns the flag off
    patched = platform.http.patch(f"/v1/models/{model_id}", json={"none_of_the_above_below": 0}, headers=headers)
    assert patched.status_code == 200
    assert flagged_share(platform, headers, model_id, versions["head"], unseen) == 0.0
    platform.http.patch(f"/v1/models/{model_id}", json={"none_of_the_above_below": None}, headers=headers)
    # a whole model (max probability) answers with the flag too
    flagged_share(platform, headers, model_id, versions["cnn"], known)


def test_switching_the_active_version_under_continuous_requests_loses_none(platform, stripes) -> None:
    headers, model_id, versions, known = stripes
    for version in versions.values():  # both loaded once, as a switch between live versions
        flagged_share(platform, headers, model_id, version, known[:1])
    answers: list[int] = []
    errors: list[str] = []
    stop = threading.Event()

    def classify() -> None:
        while not stop.is_set():
            response = platform.http.post(
                f"/v1/models/{model_id}/classify", files=[("files", ("x.png", known[0]))], headers=headers, timeout=60
            )
            if response.status_code == 200:
                answers.append(response.json()["version"])
            else:
                errors.append(f"{response.status_code}: {response.text[:200]}")

    workers = [threading.Thread(target=classify) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        for version in [versions["cnn"], versions["head"]] * 3:
            activated = platform.http.post(f"/v1/models/{model_id}/versions/{version}/activate", headers=headers)
            assert activated.status_code == 200, activated.text
            time.sleep(1.0)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=120)

    assert errors == []
    assert len(answers) >= 10 and set(answers) == set(versions.values())
    model = platform.http.get(f"/v1/models/{model_id}", headers=headers).json()
    assert model["active_version"] == versions["head"]


def test_a_zip_is_classified_by_a_background_job(platform, stripes) -> None:
    headers, model_id, versions, known = stripes
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i, data in enumerate(known):
            archive.writestr(f"known/{i}.png", data)
        archive.writestr("broken.png", b"nope")

    started = platform.http.post(
        f"/v1/models/{model_id}/classify-batch", files={"file": ("batch.zip", buffer.getvalue())}, headers=headers
    )

    assert started.status_code == 202, started.text
    job = platform.wait_for_job(headers, started.headers["Location"], deadline_s=SLOW)
    assert job["status"] == "succeeded", job
    assert (job["result"]["classified"], job["result"]["failed"]) == (len(known), 1)
    assert job["progress"]["done"] == job["progress"]["total"] == len(known) + 1
    rows = platform.http.get(f"/v1/jobs/{job['id']}/results", headers=headers).json()["results"]
    assert {row["label"] for row in rows if row["task_id"]} <= {"horizontal", "vertical"}
    task_id = next(row["task_id"] for row in rows if row["task_id"])
    assert platform.http.get(f"/v1/tasks/{task_id}", headers=headers).json()["version"] == versions["head"]
    csv_text = platform.http.get(f"/v1/jobs/{job['id']}/results?format=csv", headers=headers).text
    assert csv_text.splitlines()[0].startswith("name,task_id,label") and len(csv_text.splitlines()) == len(rows) + 1


def test_a_corrected_picture_added_to_the_dataset_gives_a_new_version(platform, stripes) -> None:
    headers, model_id, versions, known = stripes
    picture = unseen_pictures(1)[0]
    answered = platform.http.post(
        f"/v1/models/{model_id}/classify", files=[("files", ("new.png", picture))], headers=headers, timeout=SLOW
    ).json()["results"][0]

    response = platform.http.post(
        f"/v1/tasks/{answered['task_id']}/feedback",
        json={"label": "vertical", "add_to_dataset": True},
        headers=headers,
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["added_to_dataset"]["status"] == "accepted" and body["model_update"]
    update = platform.wait_for_job(headers, body["model_update"], deadline_s=SLOW)
    assert update["status"] == "succeeded", update
    assert update["result"]["version"] > max(versions.values())
    images = platform.http.get(f"/v1/models/{model_id}/images?label=vertical&limit=100", headers=headers).json()
    assert body["added_to_dataset"]["image_id"] in {image["id"] for image in images["data"]}
