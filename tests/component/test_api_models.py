"""Models and their classes over HTTP: create, list, read, change, delete, validation as problem+json."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from cluster.blobs import sha256_hex
from cluster.catalog import jobs as catalog_jobs
from cluster.services import Services
from tests.component.conftest import Account, World, blob_rows, pack_bytes, pack_files, stored_state
from tests.factories import make_image


def upload(client: TestClient, account: Account, model_id: str, label: str, *pictures: bytes, split: str | None = None):
    files = [("files", (f"{label}-{i}.png", data, "image/png")) for i, data in enumerate(pictures)]
    data = {"label": label} | ({"split": split} if split else {})
    response = client.post(f"/v1/models/{model_id}/images", data=data, files=files, headers=account.headers)
    assert response.status_code == 201, response.text
    return response.json()


def pictures(count: int, start: int = 0) -> list[bytes]:
    return [make_image((10, 20, 30), (8, 8), mark=start + i) for i in range(count)]


# --- models -------------------------------------------------------------------------------------------------


def test_create_model_returns_it_with_defaults(client: TestClient, alice: Account) -> None:
    response = client.post(
        "/v1/models", json={"name": "Flowers", "description": "spring", "target_accuracy": 0.9}, headers=alice.headers
    )

    assert response.status_code == 201
    model = response.json()
    assert model["id"].startswith("mdl_")
    assert (model["name"], model["description"], model["target_accuracy"]) == ("Flowers", "spring", 0.9)
    assert (model["time_budget_s"], model["status"], model["num_classes"], model["num_images"]) == (
        600,
        "needs_data",
        0,
        0,
    )
    assert (model["active_version"], model["has_sample_image"]) == (None, False)
    assert client.get(f"/v1/models/{model['id']}", headers=alice.headers).json() == model


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({}, "name", id="missing-name"),
        pytest.param({"name": ""}, "name", id="empty-name"),
        pytest.param({"name": "x" * 201}, "name", id="long-name"),
        pytest.param({"name": "m", "target_accuracy": 1.5}, "target_accuracy", id="accuracy-above-one"),
        pytest.param({"name": "m", "target_accuracy": 0}, "target_accuracy", id="accuracy-zero"),
        pytest.param({"name": "m", "time_budget_s": 5}, "time_budget_s", id="budget-too-short"),
        pytest.param({"name": "m", "time_budget_s": "soon"}, "time_budget_s", id="budget-not-a-number"),
    ],
)
def test_create_model_validation(world: World, body: dict, field: str) -> None:
    before = stored_state(world.services)

    response = world.client.post("/v1/models", json=body, headers=world.alice.headers)

    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "invalid_input"
    assert field in [error["field"] for error in problem["errors"]]
    assert field in problem["detail"]
    assert stored_state(world.services) == before


def test_blank_name_is_refused_by_the_catalog(client: TestClient, alice: Account) -> None:
    response = client.post("/v1/models", json={"name": "   "}, headers=alice.headers)

    assert response.status_code == 422
    assert (response.json()["code"], response.json()["field"]) == ("invalid_input", "name")


def test_list_models_pages_newest_first(client: TestClient, alice: Account, bob: Account) -> None:
    ids = [client.post("/v1/models", json={"name": f"m{i}"}, headers=alice.headers).json()["id"] for i in range(3)]
    client.post("/v1/models", json={"name": "bobs"}, headers=bob.headers)

    page = client.get("/v1/models?limit=2&offset=1", headers=alice.headers).json()

    assert page["count"] == 3
    assert [m["id"] for m in page["data"]] == [ids[1], ids[0]]
    assert client.get("/v1/models?limit=0", headers=alice.headers).status_code == 422


def test_update_model_changes_only_what_is_sent(client: TestClient, alice: Account, model_id: str) -> None:
    response = client.patch(
        f"/v1/models/{model_id}", json={"description": "wild flowers", "time_budget_s": 60}, headers=alice.headers
    )

    assert response.status_code == 200
    model = response.json()
    assert (model["name"], model["description"], model["time_budget_s"]) == ("flowers", "wild flowers", 60)
    cleared = client.patch(f"/v1/models/{model_id}", json={"target_accuracy": None}, headers=alice.headers)
    assert cleared.status_code == 200
    assert cleared.json()["target_accuracy"] is None


def test_automatic_retraining_is_opt_in(client: TestClient, alice: Account, model_id: str) -> None:
    assert client.get(f"/v1/models/{model_id}", headers=alice.headers).json()["auto_retrain"] is False
    created = client.post("/v1/models", json={"name": "grows", "auto_retrain": True}, headers=alice.headers).json()
    assert created["auto_retrain"] is True

    switched = client.patch(f"/v1/models/{model_id}", json={"auto_retrain": True}, headers=alice.headers)

    assert switched.status_code == 200 and switched.json()["auto_retrain"] is True
    renamed = client.patch(f"/v1/models/{model_id}", json={"name": "other"}, headers=alice.headers).json()
    assert renamed["auto_retrain"] is True  # other edits keep it


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"name": ""}, id="empty-name"),
        pytest.param({"time_budget_s": 1}, id="short-budget"),
        pytest.param({"target_accuracy": 2}, id="accuracy-above-one"),
        pytest.param({"name": None}, id="null-name"),
        pytest.param({"time_budget_s": None}, id="null-budget"),
        pytest.param({"description": None}, id="null-description"),
    ],
)
def test_update_model_validation(world: World, body: dict) -> None:
    before = stored_state(world.services)

    response = world.client.patch(f"/v1/models/{world.model_id}", json=body, headers=world.alice.headers)

    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_input"
    assert stored_state(world.services) == before


def test_model_status_follows_its_data(client: TestClient, alice: Account, model_id: str) -> None:
    upload(client, alice, model_id, "cat", *pictures(2))
    assert client.get(f"/v1/models/{model_id}", headers=alice.headers).json()["status"] == "needs_data"

    upload(client, alice, model_id, "dog", *pictures(2, start=10))

    model = client.get(f"/v1/models/{model_id}", headers=alice.headers).json()
    assert (model["status"], model["num_classes"], model["num_images"]) == ("ready_to_train", 2, 4)


def test_delete_model(client: TestClient, alice: Account, model_id: str) -> None:
    upload(client, alice, model_id, "cat", *pictures(2))

    assert client.delete(f"/v1/models/{model_id}", headers=alice.headers).status_code == 204

    assert client.get(f"/v1/models/{model_id}", headers=alice.headers).status_code == 404
    assert client.get("/v1/models", headers=alice.headers).json()["count"] == 0
    assert client.get("/v1/me", headers=alice.headers).json()["storage_used_bytes"] == 0
    assert client.delete(f"/v1/models/{model_id}", headers=alice.headers).status_code == 404


def test_delete_model_during_an_import_is_a_conflict(
    client: TestClient, alice: Account, model_id: str, services: Services
) -> None:
    services.catalog.call_sync(catalog_jobs.create_job, alice.id, "import", model_id=model_id)

    response = client.delete(f"/v1/models/{model_id}", headers=alice.headers)

    assert response.status_code == 409
    assert response.json()["code"] == "conflict"
    assert client.get(f"/v1/models/{model_id}", headers=alice.headers).status_code == 200


def put_sample(client: TestClient, account: Account, model_id: str, picture: bytes):
    files = {"file": ("s.jpg", picture, "image/jpeg")}
    return client.put(f"/v1/models/{model_id}/sample", files=files, headers=account.headers)


def test_sample_image(client: TestClient, alice: Account, model_id: str, services: Services) -> None:
    assert client.get(f"/v1/models/{model_id}/sample", headers=alice.headers).status_code == 404
    picture = make_image((200, 10, 10), (20, 20), "JPEG")

    response = put_sample(client, alice, model_id, picture)

    assert response.status_code == 200
    assert response.json()["has_sample_image"] is True
    assert client.get(f"/v1/models/{model_id}/sample", headers=alice.headers).content == picture
    (pack,) = pack_files(services)
    assert blob_rows(services)[sha256_hex(picture)].pack == pack
    assert pack_bytes(services) == len(picture)


def test_a_new_sample_forgets_the_old_one(
    client: TestClient, alice: Account, model_id: str, services: Services
) -> None:
    first, second = make_image((200, 10, 10), (20, 20), "JPEG"), make_image((10, 10, 200), (20, 20), "JPEG")
    put_sample(client, alice, model_id, first)

    assert put_sample(client, alice, model_id, second).status_code == 200

    assert client.get(f"/v1/models/{model_id}/sample", headers=alice.headers).content == second
    assert set(blob_rows(services)) == {sha256_hex(second)}


def test_the_sample_outlives_the_image_it_shows(
    client: TestClient, alice: Account, model_id: str, services: Services
) -> None:
    (picture,) = pictures(1)
    (result,) = upload(client, alice, model_id, "rose", picture)["results"]
    stored = pack_bytes(services)

    assert put_sample(client, alice, model_id, picture).status_code == 200
    client.delete(f"/v1/models/{model_id}/images/{result['image_id']}", headers=alice.headers)

    assert client.get(f"/v1/models/{model_id}/sample", headers=alice.headers).content == picture
    assert set(blob_rows(services)) == {sha256_hex(picture)}

    client.delete(f"/v1/models/{model_id}", headers=alice.headers)
    assert blob_rows(services) == {}
    assert pack_bytes(services) == stored, (
        "BUG: a sample picture that was already stored was written again into a new pack that nothing refers to"
    )


def test_unreadable_sample_image_is_refused(
    client: TestClient, alice: Account, model_id: str, services: Services
) -> None:
    response = put_sample(client, alice, model_id, b"not a picture")

    assert response.status_code == 422
    assert client.get(f"/v1/models/{model_id}", headers=alice.headers).json()["has_sample_image"] is False
    assert (pack_files(services), blob_rows(services)) == ([], {})


# --- classes ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def daisy(world: World) -> None:
    """The shared model has a class 'daisy'."""
    created = world.client.post(
        f"/v1/models/{world.model_id}/classes", json={"name": "daisy"}, headers=world.alice.headers
    )
    assert created.status_code == 201


def test_create_and_list_classes(client: TestClient, alice: Account, model_id: str) -> None:
    created = client.post(f"/v1/models/{model_id}/classes", json={"name": " daisy "}, headers=alice.headers)

    assert created.status_code == 201
    assert (created.json()["name"], created.json()["total_images"]) == ("daisy", 0)
    upload(client, alice, model_id, "rose", *pictures(3))
    listed = client.get(f"/v1/models/{model_id}/classes", headers=alice.headers).json()
    assert listed["count"] == 2
    assert [(c["name"], c["total_images"]) for c in listed["data"]] == [("daisy", 0), ("rose", 3)]
    rose = client.get(f"/v1/models/{model_id}/classes/rose", headers=alice.headers).json()
    assert rose["train_images"] + rose["test_images"] == 3


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        pytest.param("daisy", 409, "conflict", id="existing"),
        pytest.param("a/b", 422, "invalid_input", id="slash"),
        pytest.param("..", 422, "invalid_input", id="dot-dot"),
        pytest.param("", 422, "invalid_input", id="empty"),
        pytest.param("x" * 101, 422, "invalid_input", id="too-long"),
    ],
)
def test_create_class_refusals(world: World, daisy: None, name: str, status: int, code: str) -> None:
    before = stored_state(world.services)

    response = world.client.post(
        f"/v1/models/{world.model_id}/classes", json={"name": name}, headers=world.alice.headers
    )

    assert response.status_code == status
    assert response.json()["code"] == code
    assert stored_state(world.services) == before


def test_unknown_class_is_not_found(client: TestClient, alice: Account, model_id: str) -> None:
    response = client.get(f"/v1/models/{model_id}/classes/tulip", headers=alice.headers)

    assert response.status_code == 404


def test_rename_class_moves_its_pictures(client: TestClient, alice: Account, model_id: str) -> None:
    upload(client, alice, model_id, "rose", *pictures(3))

    response = client.patch(f"/v1/models/{model_id}/classes/rose", json={"name": "red rose"}, headers=alice.headers)

    assert response.status_code == 200
    assert (response.json()["name"], response.json()["total_images"]) == ("red rose", 3)
    listed = client.get(f"/v1/models/{model_id}/images", params={"label": "red rose"}, headers=alice.headers)
    assert listed.json()["count"] == 3
    assert client.get(f"/v1/models/{model_id}/classes/rose", headers=alice.headers).status_code == 404


def test_rename_class_onto_another_is_a_conflict(client: TestClient, alice: Account, model_id: str) -> None:
    upload(client, alice, model_id, "rose", *pictures(1))
    upload(client, alice, model_id, "daisy", *pictures(1, start=5))

    response = client.patch(f"/v1/models/{model_id}/classes/rose", json={"name": "daisy"}, headers=alice.headers)

    assert response.status_code == 409
    names = [c["name"] for c in client.get(f"/v1/models/{model_id}/classes", headers=alice.headers).json()["data"]]
    assert names == ["daisy", "rose"]


def test_delete_class_deletes_its_pictures(client: TestClient, alice: Account, model_id: str) -> None:
    upload(client, alice, model_id, "rose", *pictures(2))
    upload(client, alice, model_id, "daisy", *pictures(1, start=5))

    assert client.delete(f"/v1/models/{model_id}/classes/rose", headers=alice.headers).status_code == 204

    images = client.get(f"/v1/models/{model_id}/images", headers=alice.headers).json()
    assert [i["label"] for i in images["data"]] == ["daisy"]
    assert client.get(f"/v1/models/{model_id}/classes/rose", headers=alice.headers).status_code == 404
    assert client.delete(f"/v1/models/{model_id}/classes/rose", headers=alice.headers).status_code == 404
