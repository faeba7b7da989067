"""The platform core end to end on real Ray + Serve over HTTP: accounts, tokens, a zip import, stats, isolation."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from tests.factories import make_image, make_zip

pytestmark = pytest.mark.ray


def build_dataset_zip(tmp_path: Path) -> bytes:
    """6 cats and 6 dogs (distinct), one duplicate of a cat, one broken JPEG, one text file, OS junk."""
    path = make_zip(tmp_path / "pets.zip", {"pets": {"cat": 6, "dog": 6}}, size=(24, 16))
    with zipfile.ZipFile(path) as archive:
        first_cat = next(name for name in archive.namelist() if name.startswith("pets/cat/"))
        duplicate = archive.read(first_cat)
    truncated = make_image((10, 200, 30), (64, 64), "JPEG")[:300]
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("pets/cat/copy-of-first.png", duplicate)
        archive.writestr("pets/dog/broken.jpg", truncated)
        archive.writestr("pets/dog/notes.jpg", b"remember to feed the dog")
        archive.writestr("__MACOSX/pets/cat/._0.png", b"junk")
        archive.writestr("pets/.DS_Store", b"junk")
    return path.read_bytes()


def test_register_token_import_stats_and_isolation(platform, tmp_path: Path) -> None:
    http = platform.http
    alice = platform.login("alice")

    token = http.post("/v1/tokens", json={"name": "script", "expires_in_days": 7}, headers=alice)
    assert token.status_code == 201, token.text
    api = {"Authorization": f"Bearer {token.json()['secret']}"}
    assert http.get("/v1/me", headers=api).json()["username"] == "alice"

    model = http.post("/v1/models", json={"name": "Pets", "target_accuracy": 0.9}, headers=api)
    assert model.status_code == 201, model.text
    model_id = model.json()["id"]

    started = http.post(
        f"/v1/models/{model_id}/imports",
        files={"file": ("pets.zip", build_dataset_zip(tmp_path), "application/zip")},
        headers=api,
    )
    assert started.status_code == 202, started.text
    job = platform.wait_for_job(api, started.headers["Location"])

    assert job["status"] == "succeeded", job
    report = job["result"]
    assert report["accepted"] == 12
    assert {c["name"]: c["total"] for c in report["classes"]} == {"cat": 6, "dog": 6}
    assert report["duplicates"] == 1 and report["duplicate_names"] == ["pets/cat/copy-of-first.png"]
    rejected = {r["name"]: r["reason"] for r in report["rejects"]}
    assert set(rejected) == {"pets/dog/broken.jpg", "pets/dog/notes.jpg"}
    assert all(reason for reason in rejected.values())
    assert report["split_seed"] is not None

    stats = http.get(f"/v1/models/{model_id}/dataset", headers=api).json()
    assert stats["total_images"] == 12 and stats["rejected_images"] == 2
    assert stats["train_images"] + stats["test_images"] == 12 and stats["test_images"] >= 2
    assert stats["duplicates_skipped"] == 1
    assert stats["preprocessing"]["color"] == "rgb"

    image = http.get(f"/v1/models/{model_id}/images", params={"label": "cat", "limit": 1}, headers=api).json()
    content = http.get(image["data"][0]["content_url"], headers=api)
    assert content.status_code == 200 and len(content.content) == image["data"][0]["size_bytes"]

    bob = platform.login("bob")
    for path in (
        f"/v1/models/{model_id}",
        f"/v1/models/{model_id}/dataset",
        f"/v1/models/{model_id}/images",
        started.headers["Location"],
        image["data"][0]["content_url"],
    ):
        response = http.get(path, headers=bob)
        assert response.status_code == 404, (path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    assert http.get("/v1/models", headers=bob).json()["count"] == 0

    revoked = http.delete(f"/v1/tokens/{token.json()['id']}", headers=alice)
    assert revoked.status_code == 200
    refused = http.get("/v1/me", headers=api)
    assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"


def test_a_failed_import_changes_nothing(platform) -> None:
    http = platform.http
    carol = platform.login("carol")
    model_id = http.post("/v1/models", json={"name": "Empty"}, headers=carol).json()["id"]

    started = http.post(
        f"/v1/models/{model_id}/imports",
        content=b"this is not a zip file",
        headers={**carol, "Content-Type": "application/zip"},
    )
    assert started.status_code == 202
    job = platform.wait_for_job(carol, started.headers["Location"])

    assert job["status"] == "failed"
    assert "zip" in job["error"]["detail"].lower()
    assert http.get(f"/v1/models/{model_id}/dataset", headers=carol).json()["total_images"] == 0


def test_single_uploads_and_problem_json(platform) -> None:
    http = platform.http
    dave = platform.login("dave")
    model_id = http.post("/v1/models", json={"name": "Colours"}, headers=dave).json()["id"]
    files = [("files", (f"red{i}.png", make_image((200 + i, 0, 0)), "image/png")) for i in range(3)]
    files.append(("files", ("bad.png", b"\x89PNG\r\n\x1a\n broken", "image/png")))

    uploaded = http.post(f"/v1/models/{model_id}/images", data={"label": "red"}, files=files, headers=dave)

    assert uploaded.status_code == 201, uploaded.text
    body = uploaded.json()
    assert (body["accepted"], body["rejected"]) == (3, 1)
    bad = http.post(
        f"/v1/models/{model_id}/images",
        data={"label": "red"},
        files=[("files", ("x.jpg", io.BytesIO(b"nope"), "image/jpeg"))],
        headers=dave,
    )
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"
    assert "Traceback" not in bad.text
