"""Isolation between accounts: someone else's model, class, image or job is 'not found', never 'forbidden'."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from cluster.blobs import sha256_hex
from cluster.catalog import jobs as catalog_jobs
from cluster.services import Services
from tests.component.conftest import Account, World, blob_rows, create_model, pack_bytes, pack_files, stored_state
from tests.factories import make_image

ROSE = make_image((200, 0, 0), (16, 16), mark=1)
INTRUDER = make_image((0, 0, 0), (16, 16), mark=666)


@dataclass(frozen=True)
class Garden:
    model_id: str
    image_id: int
    job_id: str


def plant(client: TestClient, services: Services, alice: Account, model_id: str) -> Garden:
    """A class 'roses' holding one picture in alice's model, and a finished import job."""
    files = [("files", ("rose.png", ROSE, "image/png"))]
    uploaded = client.post(f"/v1/models/{model_id}/images", data={"label": "roses"}, files=files, headers=alice.headers)
    assert uploaded.status_code == 201, uploaded.text
    job = services.catalog.call_sync(catalog_jobs.create_job, alice.id, "import", model_id=model_id)
    services.catalog.call_sync(catalog_jobs.finish_job, job.id, status="succeeded", message="ok", result={})
    return Garden(model_id, uploaded.json()["results"][0]["image_id"], job.id)


@pytest.fixture(scope="module")
def shared_garden(world: World) -> Garden:
    return plant(world.client, world.services, world.alice, world.model_id)


@pytest.fixture
def garden(client: TestClient, services: Services, alice: Account, model_id: str) -> Garden:
    return plant(client, services, alice, model_id)


ZIP = ("pets.zip", b"PK\x05\x06" + b"\0" * 18, "application/zip")

REQUESTS = [
    pytest.param("GET", "/models/{m}", {}, id="get-model"),
    pytest.param("PATCH", "/models/{m}", {"json": {"name": "mine now"}}, id="rename-model"),
    pytest.param("DELETE", "/models/{m}", {}, id="delete-model"),
    pytest.param("GET", "/models/{m}/sample", {}, id="get-sample"),
    pytest.param("PUT", "/models/{m}/sample", {"files": {"file": ("s.png", INTRUDER, "image/png")}}, id="set-sample"),
    pytest.param("GET", "/models/{m}/classes", {}, id="list-classes"),
    pytest.param("POST", "/models/{m}/classes", {"json": {"name": "weeds"}}, id="create-class"),
    pytest.param("GET", "/models/{m}/classes/roses", {}, id="get-class"),
    pytest.param("PATCH", "/models/{m}/classes/roses", {"json": {"name": "weeds"}}, id="rename-class"),
    pytest.param("DELETE", "/models/{m}/classes/roses", {}, id="delete-class"),
    pytest.param(
        "POST",
        "/models/{m}/images",
        {"data": {"label": "weeds"}, "files": [("files", ("w.png", INTRUDER, "image/png"))]},
        id="upload-images",
    ),
    pytest.param("GET", "/models/{m}/images", {}, id="list-images"),
    pytest.param("GET", "/models/{m}/images/{i}", {}, id="get-image"),
    pytest.param("GET", "/models/{m}/images/{i}/content", {}, id="image-content"),
    pytest.param("GET", "/models/{m}/images/{i}/thumbnail", {}, id="image-thumbnail"),
    pytest.param("PATCH", "/models/{m}/images/{i}", {"json": {"label": "weeds"}}, id="move-image"),
    pytest.param("DELETE", "/models/{m}/images/{i}", {}, id="delete-image"),
    pytest.param("POST", "/models/{m}/images/delete", {"json": {"ids": ["{i}"]}}, id="delete-images"),
    pytest.param("POST", "/models/{m}/imports", {"files": {"file": ZIP}}, id="import-zip"),
    pytest.param("GET", "/models/{m}/imports", {}, id="list-imports"),
    pytest.param("GET", "/models/{m}/dataset", {}, id="dataset-stats"),
    pytest.param("GET", "/jobs/{j}", {}, id="get-job"),
]


def _fill(value: object, garden: Garden, model_id: str) -> object:
    if isinstance(value, str):
        filled = value.format(m=model_id, i=garden.image_id, j=garden.job_id)
        return int(filled) if value == "{i}" else filled
    if isinstance(value, dict):
        return {key: _fill(item, garden, model_id) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, garden, model_id) for item in value]
    return value


@pytest.mark.parametrize(("method", "path", "kwargs"), REQUESTS)
def test_someone_elses_resources_are_not_found(
    world: World, shared_garden: Garden, method: str, path: str, kwargs: dict
) -> None:
    client, services, bob, garden = world.client, world.services, world.bob, shared_garden
    before = stored_state(services)

    missing_model = "mdl_000000000000"
    theirs, nobodys = (
        client.request(method, "/v1" + _fill(path, garden, m), headers=bob.headers, **_fill(kwargs, garden, m))
        for m in (garden.model_id, missing_model)
    )

    assert theirs.status_code == 404, theirs.text
    assert theirs.json()["code"] == "not_found"
    # Word for word what a missing model gets: nothing tells bob that alice's model exists.
    assert theirs.json()["detail"].replace(garden.model_id, "?") == nobodys.json()["detail"].replace(missing_model, "?")
    # Not a row, not a pack, not a byte: a picture stored before the ownership check would be an unowned file
    # outside any quota.
    assert stored_state(services) == before


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        pytest.param(
            "POST",
            "/models/{m}/images",
            {"data": {"label": "weeds"}, "files": [("files", ("w.png", INTRUDER, "image/png"))]},
            id="upload-images",
        ),
        pytest.param(
            "PUT", "/models/{m}/sample", {"files": {"file": ("s.png", INTRUDER, "image/png")}}, id="set-sample"
        ),
    ],
)
def test_pictures_for_someone_elses_model_never_reach_a_pack(
    client: TestClient, bob: Account, garden: Garden, services: Services, method: str, path: str, kwargs: dict
) -> None:
    packs, stored = pack_files(services), pack_bytes(services)

    response = client.request(method, "/v1" + path.format(m=garden.model_id), headers=bob.headers, **kwargs)

    assert response.status_code == 404
    assert (pack_files(services), pack_bytes(services)) == (packs, stored)
    assert sha256_hex(INTRUDER) not in blob_rows(services)


def test_lists_show_only_your_own(client: TestClient, alice: Account, bob: Account, garden: Garden) -> None:
    assert client.get("/v1/models", headers=bob.headers).json() == {"data": [], "count": 0}
    assert client.get("/v1/jobs", headers=bob.headers).json() == {"data": [], "count": 0}
    assert client.get("/v1/jobs", params={"model_id": garden.model_id}, headers=bob.headers).json()["count"] == 0
    assert client.get("/v1/me/storage", headers=bob.headers).json()["used_bytes"] == 0
    assert client.get("/v1/models", headers=alice.headers).json()["count"] == 1


def test_cleanup_of_one_account_never_touches_another(
    client: TestClient, bob: Account, garden: Garden, services: Services
) -> None:
    before = stored_state(services)

    response = client.post("/v1/me/storage/cleanup", json={"free_bytes": 10**9}, headers=bob.headers)

    assert response.status_code == 200
    assert response.json()["images"] == 0
    assert stored_state(services) == before


def test_same_picture_in_two_accounts_is_stored_once_and_kept_for_the_other(
    client: TestClient, alice: Account, bob: Account, garden: Garden, services: Services
) -> None:
    bobs_model = create_model(services, bob, "bobs")
    files = [("files", ("rose.png", ROSE, "image/png"))]
    refs, stored = blob_rows(services), pack_bytes(services)

    uploaded = client.post(f"/v1/models/{bobs_model}/images", data={"label": "roses"}, files=files, headers=bob.headers)

    assert uploaded.json()["accepted"] == 1
    assert blob_rows(services) == refs  # bob's image reads alice's copy
    bobs_image = uploaded.json()["results"][0]["image_id"]
    assert client.get(f"/v1/models/{bobs_model}/images/{bobs_image}/content", headers=bob.headers).content == ROSE

    client.delete(f"/v1/models/{bobs_model}", headers=bob.headers)

    assert (
        client.get(f"/v1/models/{garden.model_id}/images/{garden.image_id}/content", headers=alice.headers).content
        == ROSE
    )
    assert blob_rows(services) == refs
    assert pack_bytes(services) == stored, (
        f"BUG: bob's upload of a picture alice already stored wrote {pack_bytes(services) - stored} more bytes"
        " into a pack that nothing refers to"
    )
