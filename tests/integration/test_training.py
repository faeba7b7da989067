"""Training on real Ray: a smoke search over Pillow-made pictures publishes a version and records its trials."""

from __future__ import annotations

import numpy as np
import pytest

from tests.factories import stripes_zip
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def trained_model(platform):
    headers = platform.login("trainer")
    model_id = platform.http.post("/v1/models", json={"name": "Stripes"}, headers=headers).json()["id"]
    started = platform.http.post(
        f"/v1/models/{model_id}/imports", content=stripes_zip(), headers={**headers, "Content-Type": "application/zip"}
    )
    assert platform.wait_for_job(headers, started.headers["Location"])["status"] == "succeeded"
    return headers, model_id


def test_a_smoke_search_publishes_a_version_and_records_its_trials(platform, trained_model) -> None:
    headers, model_id = trained_model
    body = {"kinds": ["scratch_cnn"], "max_epochs": 2, "time_budget_s": 300}

    started = platform.http.post(f"/v1/models/{model_id}/train", json=body, headers=headers)

    assert started.status_code == 202, started.text
    run = platform.wait_for_run(headers, started.headers["Location"], deadline_s=420)
    assert run["status"] == "succeeded", run
    assert run["trials"], run
    assert all(trial["title"] and trial["stop_reason"] for trial in run["trials"])
    assert run["trials"][0]["history"], run["trials"][0]
    steps = run["result"]["step_seconds"]  # where the time went, as the Train tab shows it
    assert list(steps) == ["preparing", "searching", "testing", "quick_updates", "label_check", "publishing"]
    assert sum(steps.values()) <= run["result"]["seconds"] + 0.1

    versions = platform.http.get(f"/v1/models/{model_id}/versions", headers=headers).json()
    assert versions["count"] == 1
    version = versions["data"][0]
    assert version["active"] is True and version["classes"] == ["horizontal", "vertical"]
    metrics = version["metrics"]
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert np.array(metrics["confusion_matrix"]).sum() == metrics["test_images"] == 8
    assert platform.http.get(f"/v1/models/{model_id}", headers=headers).json()["status"] == "ready"


def test_the_version_has_calibration_and_a_label_check(platform, trained_model) -> None:
    headers, model_id = trained_model
    version = platform.http.get(f"/v1/models/{model_id}/versions/1", headers=headers).json()

    calibration = version["metrics"]["calibration"]
    assert sum(b["count"] for b in calibration["bins"]) == version["metrics"]["test_images"]
    assert 0.0 <= calibration["expected_error"] <= 1.0
    assert isinstance(version["metrics"]["label_mistakes"], list)


def test_the_keras_export_predicts_what_the_platform_measured(platform, trained_model, tmp_path) -> None:
    import keras

    from pipelines.images import PreprocessingPolicy, load_for_model

    headers, model_id = trained_model
    version = platform.http.get(f"/v1/models/{model_id}/versions/1", headers=headers).json()

    exported = platform.http.get(f"/v1/models/{model_id}/versions/1/export?format=keras", headers=headers, timeout=300)

    assert exported.status_code == 200, exported.text
    assert 'filename="Stripes-v1.keras"' in exported.headers["content-disposition"]
    path = tmp_path / "model.keras"
    path.write_bytes(exported.content)
    network = keras.models.load_model(path)  # safe mode: nothing but the file is needed
    policy = PreprocessingPolicy.from_dict(version["preprocessing"])
    test = platform.http.get(f"/v1/models/{model_id}/images?split=test&limit=100", headers=headers).json()["data"]
    pictures = np.stack(
        [
            load_for_model(
                platform.http.get(f"/v1/models/{model_id}/images/{image['id']}/content", headers=headers).content,
                "picture.png",
                policy,
                max_pixels=10_000_000,
            )
            for image in test
        ]
    )
    predicted = np.asarray(network(pictures)).argmax(axis=1)
    truth = [version["classes"].index(image["label"]) for image in test]
    assert float(np.mean(predicted == truth)) == pytest.approx(version["metrics"]["accuracy"], abs=1e-4)

    tflite = platform.http.get(f"/v1/models/{model_id}/versions/1/export?format=tflite", headers=headers, timeout=300)
    assert tflite.status_code == 200 and tflite.content[4:8] == b"TFL3"
    assert platform.http.get(f"/v1/models/{model_id}/versions/1/export?format=onnx", headers=headers).status_code == 422
    missing = platform.http.get(f"/v1/models/{model_id}/versions/9/export", headers=headers)
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"


def test_a_run_can_be_cancelled(platform, trained_model) -> None:
    headers, model_id = trained_model
    before = platform.http.get(f"/v1/models/{model_id}/versions", headers=headers).json()["count"]
    body = {"kinds": ["scratch_cnn"], "max_epochs": 200, "time_budget_s": 600}
    run_url = platform.http.post(f"/v1/models/{model_id}/train", json=body, headers=headers).headers["Location"]
    wait_until(
        lambda: platform.http.get(run_url, headers=headers).json()["status"] == "running", 120, "the run to start"
    )

    cancelled = platform.http.post(f"{run_url}/cancel", headers=headers)

    assert cancelled.status_code == 200, cancelled.text
    run = platform.wait_for_run(headers, run_url, deadline_s=180)
    assert run["status"] == "cancelled", run
    versions = platform.http.get(f"/v1/models/{model_id}/versions", headers=headers).json()
    assert versions["count"] == before  # nothing published by the cancelled run


def test_frozen_backbone_candidates_fill_the_feature_cache_once(platform, trained_model) -> None:
    headers, model_id = trained_model
    body = {"kinds": ["frozen_head"], "backbones": ["efficientnet_lite0"], "max_epochs": 3, "time_budget_s": 300}
    chunks = platform.settings.data_dir / "blobs" / "features"

    def train() -> dict:
        run_url = platform.http.post(f"/v1/models/{model_id}/train", json=body, headers=headers).headers["Location"]
        return platform.wait_for_run(headers, run_url)

    first = train()
    assert first["status"] == "succeeded", first
    assert {trial["spec"]["kind"] for trial in first["trials"]} == {"frozen_head"}
    stored = sorted(chunks.rglob("*.npz"))
    assert stored, f"no feature chunks under {chunks}"

    second = train()

    assert second["status"] == "succeeded", second
    assert sorted(chunks.rglob("*.npz")) == stored  # every feature came from the cache
