"""Whole datasets over HTTP: zip imports as jobs, the import report, dataset statistics, storage and clean-up."""

from __future__ import annotations

import dataclasses
import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cluster.blobs import sha256_hex
from cluster.catalog import jobs as catalog_jobs
from cluster.importer import ImportRequest
from cluster.services import Services
from tests.component.conftest import (
    Account,
    World,
    api_client,
    blob_rows,
    create_account,
    create_model,
    pack_files,
    stored_state,
)
from tests.factories import make_image, make_zip


def post_zip(client: TestClient, account: Account, model_id: str, data: bytes, *, raw: bool = False):
    url = f"/v1/models/{model_id}/imports"
    if raw:
        return client.post(url, content=data, headers={**account.headers, "Content-Type": "application/zip"})
    return client.post(url, files={"file": ("pets.zip", data, "application/zip")}, headers=account.headers)


def incoming_files(services: Services) -> list[Path]:
    """Upload leftovers: temp files being received and zips waiting for their job."""
    root = services.blobs.root
    return [path for folder in ("incoming", "uploads") for path in (root / folder).glob("*") if path.is_file()]


@pytest.fixture
def pets_zip(tmp_path: Path) -> bytes:
    extra = {"dog/notes.jpg": b"remember to feed the dog"}
    return make_zip(tmp_path / "pets.zip", {"cat": 10, "dog": 5}, extra=extra).read_bytes()


@pytest.fixture
def imported(
    client: TestClient, alice: Account, model_id: str, pets_zip: bytes, wait_for_job: Callable[..., dict]
) -> dict:
    """Alice's model after importing pets_zip: the finished job."""
    response = post_zip(client, alice, model_id, pets_zip)
    assert response.status_code == 202, response.text
    job = wait_for_job(response.json()["url"], alice.headers)
    assert job["status"] == "succeeded", job
    return job


# --- imports ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [pytest.param(False, id="multipart"), pytest.param(True, id="raw-body")])
def test_import_runs_as_a_job_with_a_report(
    client: TestClient,
    alice: Account,
    model_id: str,
    pets_zip: bytes,
    services: Services,
    wait_for_job: Callable[..., dict],
    raw: bool,
) -> None:
    response = post_zip(client, alice, model_id, pets_zip, raw=raw)

    assert response.status_code == 202
    queued = response.json()
    assert response.headers["location"] == queued["url"] == f"/v1/jobs/{queued['id']}"
    assert (queued["kind"], queued["model_id"]) == ("import", model_id)
    assert queued["status"] in ("queued", "running", "succeeded")

    job = wait_for_job(queued["url"], alice.headers)

    assert job["status"] == "succeeded"
    assert job["progress"] == {"done": 16, "total": 16, "fraction": 1.0}  # 15 pictures and the notes
    report = job["result"]
    assert report["layout"] == "class_folders"
    assert [(c["name"], c["train"], c["test"]) for c in report["classes"]] == [("cat", 8, 2), ("dog", 4, 1)]
    assert report["rejected"] == 1
    assert report["rejects"][0]["name"] == "dog/notes.jpg"
    assert job["message"] == report["summary"]
    assert job["finished_at"] is not None
    assert incoming_files(services) == []
    # Every accepted picture lies where the catalog says, in one pack per decode batch (8 entries each).
    with zipfile.ZipFile(io.BytesIO(pets_zip)) as archive:
        pictures = {sha256_hex(archive.read(n)): archive.read(n) for n in archive.namelist() if n.endswith(".png")}
    refs = blob_rows(services)
    assert set(refs) == set(pictures)
    assert {sha: services.blobs.read(ref) for sha, ref in refs.items()} == pictures
    assert pack_files(services) == sorted({ref.pack for ref in refs.values()})
    assert len(pack_files(services)) == 2
    model = client.get(f"/v1/models/{model_id}", headers=alice.headers).json()
    assert (model["num_classes"], model["num_images"], model["status"]) == (2, 15, "ready_to_train")


def test_import_is_listed_for_the_model_and_in_jobs(
    client: TestClient, alice: Account, model_id: str, imported: dict
) -> None:
    imports = client.get(f"/v1/models/{model_id}/imports", headers=alice.headers).json()
    jobs = client.get("/v1/jobs", headers=alice.headers).json()
    by_model = client.get("/v1/jobs", params={"model_id": model_id}, headers=alice.headers).json()

    assert [j["id"] for j in imports["data"]] == [imported["id"]]
    assert imports["data"][0]["result"] == imported["result"]
    assert [j["id"] for j in jobs["data"]] == [imported["id"]]
    assert by_model["count"] == 1


def test_reimport_finds_only_duplicates(
    client: TestClient,
    alice: Account,
    model_id: str,
    pets_zip: bytes,
    imported: dict,
    services: Services,
) -> None:
    locations = blob_rows(services)

    response = post_zip(client, alice, model_id, pets_zip, raw=True)
    services.jobs.wait()  # joins the import thread; the job URL then shows the final state

    job = client.get(response.json()["url"], headers=alice.headers).json()
    assert job["status"] == "succeeded"
    assert (job["result"]["accepted"], job["result"]["duplicates"]) == (0, 15)
    stats = client.get(f"/v1/models/{model_id}/dataset", headers=alice.headers).json()
    assert stats["total_images"] == 15
    assert stats["duplicates_skipped"] == 15
    assert blob_rows(services) == locations  # still the first import's


@pytest.mark.parametrize(
    ("content", "settings_overrides", "code"),
    [
        pytest.param(b"this is not a zip", {}, "invalid_input", id="not-a-zip"),
        pytest.param(None, {"max_zip_entries": 3}, "invalid_input", id="too-many-entries"),
        pytest.param(None, {"quota_bytes": 500}, "quota_exceeded", id="over-quota"),
    ],
)
def test_failed_import_is_a_failed_job_that_changes_nothing(
    client: TestClient,
    alice: Account,
    model_id: str,
    pets_zip: bytes,
    services: Services,
    wait_for_job: Callable[..., dict],
    content: bytes | None,
    code: str,
) -> None:
    response = post_zip(client, alice, model_id, content or pets_zip)
    assert response.status_code == 202

    job = wait_for_job(response.json()["url"], alice.headers)

    assert job["status"] == "failed"
    assert job["result"] is None
    assert job["error"]["code"] == code
    assert job["message"] == job["error"]["detail"]
    assert "Traceback" not in str(job)
    model = client.get(f"/v1/models/{model_id}", headers=alice.headers).json()
    assert (model["num_classes"], model["num_images"]) == (0, 0)
    assert incoming_files(services) == []
    assert blob_rows(services) == {}
    if code == "invalid_input":  # refused while planning, before any picture was read
        assert pack_files(services) == []


class RecordingLauncher:
    """A job launcher that only remembers what it was asked to run."""

    def __init__(self) -> None:
        self.imports: list[ImportRequest] = []

    def submit_import(self, request: ImportRequest) -> None:
        self.imports.append(request)


@pytest.mark.parametrize(
    ("settings_overrides", "cpus", "batch_size", "parallelism"),
    [
        pytest.param({"import_batch_size": 0, "import_parallelism": 0}, 6, 0, 6, id="automatic"),
        pytest.param({"import_batch_size": 100, "import_parallelism": 3}, 6, 100, 3, id="configured"),
    ],
)
def test_an_import_decodes_on_every_cpu_unless_configured(
    services: Services, pets_zip: bytes, cpus: int, batch_size: int, parallelism: int
) -> None:
    launcher = RecordingLauncher()
    cluster = dataclasses.replace(services, jobs=launcher, cpus=cpus)
    alice = create_account(cluster, "alice")
    model_id = create_model(cluster, alice)

    with api_client(cluster) as client:
        response = post_zip(client, alice, model_id, pets_zip)

    assert response.status_code == 202
    (request,) = launcher.imports
    assert (request.job_id, request.model_id) == (response.json()["id"], model_id)
    assert (request.batch_size, request.parallelism) == (batch_size, parallelism)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        pytest.param("application/json", b"{}", id="json"),
        pytest.param("text/plain", b"zip?", id="text"),
        pytest.param("application/zip", b"", id="empty-body"),
    ],
)
def test_import_needs_a_zip_body(world: World, content_type: str, body: bytes) -> None:
    before = stored_state(world.services)  # jobs and files: no job, and no upload left behind

    response = world.client.post(
        f"/v1/models/{world.model_id}/imports",
        content=body,
        headers={**world.alice.headers, "Content-Type": content_type},
    )

    assert response.status_code == 422
    assert stored_state(world.services) == before


def test_multipart_without_the_file_field_is_refused(world: World) -> None:
    before = stored_state(world.services)

    response = world.client.post(
        f"/v1/models/{world.model_id}/imports",
        files={"other": ("pets.zip", b"PK", "application/zip")},
        headers=world.alice.headers,
    )

    assert response.status_code == 422
    assert response.json()["field"] == "file"
    assert stored_state(world.services) == before


def test_second_import_while_one_is_active_is_a_conflict(
    client: TestClient, alice: Account, model_id: str, pets_zip: bytes, services: Services
) -> None:
    active = services.catalog.call_sync(catalog_jobs.create_job, alice.id, "import", model_id=model_id)

    response = post_zip(client, alice, model_id, pets_zip)

    assert response.status_code == 409
    assert active.id in response.json()["detail"]
    assert incoming_files(services) == []
    assert [j["id"] for j in client.get("/v1/jobs", headers=alice.headers).json()["data"]] == [active.id]


def test_unknown_job_is_not_found(client: TestClient, alice: Account) -> None:
    assert client.get("/v1/jobs/job_missing", headers=alice.headers).status_code == 404


# --- dataset statistics --------------------------------------------------------------------------------------


def test_dataset_stats_after_an_import(client: TestClient, alice: Account, model_id: str, imported: dict) -> None:
    response = client.get(f"/v1/models/{model_id}/dataset", headers=alice.headers)

    assert response.status_code == 200
    stats = response.json()
    assert stats["model_id"] == model_id
    assert stats["classes"] == [
        {"name": "cat", "train": 8, "test": 2, "total": 10},
        {"name": "dog", "train": 4, "test": 1, "total": 5},
    ]
    assert (stats["total_images"], stats["train_images"], stats["test_images"]) == (15, 12, 3)
    assert stats["rejected_images"] == 1
    assert stats["formats"] == {"PNG": 15}
    assert sum(bucket["count"] for bucket in stats["size_histogram"]) == 15
    assert stats["storage_bytes"] > 0
    assert any("'dog' has only 5 pictures" in warning for warning in stats["warnings"])
    assert stats["preprocessing"] is not None
    assert stats["preprocessing"]["color"] == "rgb"


def test_dataset_stats_of_an_empty_model(client: TestClient, alice: Account, model_id: str) -> None:
    stats = client.get(f"/v1/models/{model_id}/dataset", headers=alice.headers).json()

    assert (stats["total_images"], stats["classes"], stats["preprocessing"]) == (0, [], None)
    assert any("at least two classes" in warning for warning in stats["warnings"])


def test_imbalance_is_warned_about(client: TestClient, alice: Account, model_id: str) -> None:
    for label, count, first in (("cat", 12, 0), ("dog", 3, 100)):
        pictures = [make_image((9, 9, 9), (8, 8), mark=first + i) for i in range(count)]
        files = [("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(pictures)]
        form = {"label": label, "split": "train"}
        response = client.post(f"/v1/models/{model_id}/images", data=form, files=files, headers=alice.headers)
        assert response.status_code == 201

    warnings = client.get(f"/v1/models/{model_id}/dataset", headers=alice.headers).json()["warnings"]

    assert any("unbalanced" in warning and "'cat' has 12" in warning for warning in warnings)
    assert any("'cat' has no test pictures" in warning for warning in warnings)


# --- storage and clean-up ------------------------------------------------------------------------------------


def test_storage_report(client: TestClient, alice: Account, model_id: str, imported: dict) -> None:
    me = client.get("/v1/me", headers=alice.headers).json()

    report = client.get("/v1/me/storage", headers=alice.headers).json()

    assert report["used_bytes"] == me["storage_used_bytes"] > 0
    assert report["quota_bytes"] == me["storage_quota_bytes"]
    assert report["over_quota"] is False
    assert [(m["model_id"], m["images"], m["bytes"]) for m in report["models"]] == [
        (model_id, 15, report["used_bytes"])
    ]


def test_cleanup_proposal_deletes_nothing(client: TestClient, alice: Account, model_id: str, imported: dict) -> None:
    before = client.get(f"/v1/models/{model_id}/dataset", headers=alice.headers).json()

    plan = client.get("/v1/me/storage/cleanup", params={"free_bytes": 500}, headers=alice.headers).json()

    assert plan["applied"] is False
    assert plan["sufficient"] is True
    assert plan["freed_bytes"] >= plan["needed_bytes"] == 500
    assert plan["images"] > 0
    assert {row["class"] for row in plan["per_class"]} == {"cat", "dog"}
    assert all(row["removed"] < row["before"] for row in plan["per_class"])
    assert client.get(f"/v1/models/{model_id}/dataset", headers=alice.headers).json() == before


def test_cleanup_apply_frees_what_it_proposed(
    client: TestClient, alice: Account, model_id: str, imported: dict, services: Services
) -> None:
    used = client.get("/v1/me", headers=alice.headers).json()["storage_used_bytes"]
    proposal = client.get("/v1/me/storage/cleanup", params={"free_bytes": 500}, headers=alice.headers).json()

    applied = client.post("/v1/me/storage/cleanup", json={"free_bytes": 500}, headers=alice.headers)

    assert applied.status_code == 200
    assert applied.json() == {**proposal, "applied": True}
    after = client.get("/v1/me", headers=alice.headers).json()["storage_used_bytes"]
    assert after == used - proposal["freed_bytes"]
    classes = client.get(f"/v1/models/{model_id}/classes", headers=alice.headers).json()["data"]
    assert {c["name"]: c["total_images"] > 0 for c in classes} == {"cat": True, "dog": True}


def test_cleanup_with_room_to_spare_does_nothing(
    client: TestClient, alice: Account, model_id: str, imported: dict
) -> None:
    response = client.post("/v1/me/storage/cleanup", json={}, headers=alice.headers)

    assert response.status_code == 200
    assert (response.json()["images"], response.json()["applied"], response.json()["needed_bytes"]) == (0, False, 0)
    assert client.get(f"/v1/models/{model_id}", headers=alice.headers).json()["num_images"] == 15


def test_cleanup_validation(world: World) -> None:
    response = world.client.post("/v1/me/storage/cleanup", json={"free_bytes": 0}, headers=world.alice.headers)

    assert response.status_code == 422
