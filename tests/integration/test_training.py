"""Training on real Ray: a smoke search over Pillow-made pictures publishes a version and records its trials."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from tests.integration.conftest import wait_until

pytestmark = pytest.mark.ray


def stripes_zip(per_class: int = 20, size: int = 16) -> bytes:
    """Two classes a small CNN separates in a couple of epochs: horizontal vs vertical stripes, noisy."""
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for label, axis in (("horizontal", 0), ("vertical", 1)):
            for i in range(per_class):
                stripes = (np.indices((size, size))[axis] // 2 % 2) * 200
                noisy = np.clip(stripes + rng.integers(0, 55, (size, size)), 0, 255).astype(np.uint8)
                data = io.BytesIO()
                Image.fromarray(noisy).convert("RGB").save(data, "PNG")
                archive.writestr(f"{label}/{i}.png", data.getvalue())
    return buffer.getvalue()


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
    run_url = started.headers["Location"]

    def finished():
        run = platform.http.get(run_url, headers=headers).json()
        return run if run["status"] not in ("queued", "running") else None

    run = wait_until(finished, 420, "the training run to finish", interval_s=1)
    assert run["status"] == "succeeded", run
    assert run["trials"], run
    assert all(trial["title"] and trial["stop_reason"] for trial in run["trials"])
    assert run["trials"][0]["history"], run["trials"][0]

    versions = platform.http.get(f"/v1/models/{model_id}/versions", headers=headers).json()
    assert versions["count"] == 1
    version = versions["data"][0]
    assert version["active"] is True and version["classes"] == ["horizontal", "vertical"]
    metrics = version["metrics"]
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert np.array(metrics["confusion_matrix"]).sum() == metrics["test_images"] == 8
    assert platform.http.get(f"/v1/models/{model_id}", headers=headers).json()["status"] == "ready"
