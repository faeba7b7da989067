"""A dataset's pictures over HTTP: upload, list, fetch, thumbnail, move, delete, and forgetting pictures."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cluster.blobs import sha256_hex
from cluster.services import Services
from serve.routes.common import thumbnail_key
from tests.component.conftest import Account, World, blob_rows, pack_bytes, pack_files, stored_state
from tests.factories import make_image

RED = make_image((200, 10, 10), (40, 30), "PNG", mark=1)
GREEN = make_image((10, 200, 10), (40, 30), "JPEG")
BLUE = make_image((10, 10, 200), (300, 200), "PNG", mark=3)


def post_files(client: TestClient, account: Account, model_id: str, label: str, files: list, **form: str):
    parts = [("files", (name, data, "application/octet-stream")) for name, data in files]
    return client.post(
        f"/v1/models/{model_id}/images", data={"label": label, **form}, files=parts, headers=account.headers
    )


def upload(client: TestClient, account: Account, model_id: str, label: str, files: list, **form: str) -> dict:
    response = post_files(client, account, model_id, label, files, **form)
    assert response.status_code == 201, response.text
    return response.json()


def images_of(client: TestClient, account: Account, model_id: str, **params: object) -> dict:
    response = client.get(f"/v1/models/{model_id}/images", params=params, headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()


def count_all(client: TestClient, account: Account, model_id: str) -> int:
    """Accepted and rejected rows together (the API lists one status at a time)."""
    return sum(images_of(client, account, model_id, status=status)["count"] for status in ("accepted", "rejected"))


def stored_pictures(services: Services) -> set[str]:
    """The sha256 of every picture the catalog knows a location for."""
    return set(blob_rows(services))


# --- upload -------------------------------------------------------------------------------------------------


def test_upload_several_files_at_once(client: TestClient, alice: Account, model_id: str, services: Services) -> None:
    result = upload(client, alice, model_id, "roses", [("red.png", RED), ("green.jpg", GREEN)], split="train")

    assert (result["accepted"], result["duplicates"], result["rejected"]) == (2, 0, 0)
    assert [(r["name"], r["status"], r["split"]) for r in result["results"]] == [
        ("red.png", "accepted", "train"),
        ("green.jpg", "accepted", "train"),
    ]
    listed = images_of(client, alice, model_id)
    assert listed["count"] == 2
    first = listed["data"][0]
    assert (first["label"], first["original_name"], first["format"], first["width"], first["height"]) == (
        "roses",
        "red.png",
        "PNG",
        40,
        30,
    )
    assert (first["sha256"], first["size_bytes"]) == (sha256_hex(RED), len(RED))
    # One request, one pack holding both pictures, each where the catalog says.
    (pack,) = pack_files(services)
    refs = blob_rows(services)
    assert set(refs) == {sha256_hex(RED), sha256_hex(GREEN)}
    assert {ref.pack for ref in refs.values()} == {pack}
    assert services.blobs.read(refs[sha256_hex(RED)]) == RED
    assert services.blobs.read(refs[sha256_hex(GREEN)]) == GREEN
    assert pack_bytes(services) == len(RED) + len(GREEN)


def test_a_picture_uploaded_twice_is_stored_once(
    client: TestClient, alice: Account, model_id: str, services: Services
) -> None:
    other = client.post("/v1/models", json={"name": "other"}, headers=alice.headers).json()["id"]
    upload(client, alice, model_id, "roses", [("red.png", RED)])
    refs, packs, stored = blob_rows(services), pack_files(services), pack_bytes(services)

    again = upload(client, alice, model_id, "roses", [("again.png", RED)])
    elsewhere = upload(client, alice, other, "roses", [("red.png", RED)])

    assert (again["duplicates"], elsewhere["accepted"]) == (1, 1)
    assert blob_rows(services) == refs  # one location, the first
    assert pack_bytes(services) == stored, (
        f"BUG: uploading an already stored picture again wrote {pack_bytes(services) - stored} more bytes into"
        f" {len(pack_files(services)) - len(packs)} new pack(s) that nothing refers to"
    )
    assert pack_files(services) == packs


def test_mixed_good_and_bad_files_report_each(client: TestClient, alice: Account, model_id: str) -> None:
    upload(client, alice, model_id, "roses", [("red.png", RED)])

    result = upload(
        client, alice, model_id, "roses", [("again.png", RED), ("notes.png", b"not a picture"), ("green.jpg", GREEN)]
    )

    assert (result["accepted"], result["duplicates"], result["rejected"]) == (1, 1, 1)
    by_name = {r["name"]: r for r in result["results"]}
    assert by_name["again.png"]["status"] == "duplicate"
    assert by_name["again.png"]["image_id"] is None
    assert by_name["notes.png"]["status"] == "rejected"
    assert "not a picture" in by_name["notes.png"]["reason"]
    assert by_name["green.jpg"]["status"] == "accepted"
    assert images_of(client, alice, model_id)["count"] == 2
    rejected = images_of(client, alice, model_id, status="rejected")
    assert [(i["original_name"], i["content_url"]) for i in rejected["data"]] == [("notes.png", None)]


def test_same_picture_in_another_class_is_rejected(client: TestClient, alice: Account, model_id: str) -> None:
    upload(client, alice, model_id, "roses", [("red.png", RED)])

    response = post_files(client, alice, model_id, "tulips", [("red.png", RED)])

    assert response.status_code == 422
    (result,) = response.json()["results"]
    assert "'roses'" in result["reason"]
    assert images_of(client, alice, model_id, label="tulips")["count"] == 0


def test_all_bad_files_is_a_problem_that_changes_nothing(
    client: TestClient, alice: Account, model_id: str, services: Services
) -> None:
    response = post_files(client, alice, model_id, "roses", [("a.png", b"nope"), ("b.jpg", b"\xff\xd8\xff broken")])

    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "invalid_input"
    assert "None of the files could be used" in problem["detail"]
    assert [r["status"] for r in problem["results"]] == ["rejected", "rejected"]
    assert (pack_files(services), blob_rows(services)) == ([], {})
    # An error answer must not leave reject rows behind (a retry would pile them up).
    assert count_all(client, alice, model_id) == 0
    assert client.get(f"/v1/models/{model_id}/classes", headers=alice.headers).json()["count"] == 0


@pytest.mark.parametrize(
    ("form", "files"),
    [
        pytest.param({"label": "a/b"}, [("files", ("r.png", RED, "image/png"))], id="bad-label"),
        pytest.param({"label": "roses", "split": "val"}, [("files", ("r.png", RED, "image/png"))], id="bad-split"),
        pytest.param({}, [("files", ("r.png", RED, "image/png"))], id="no-label"),
        pytest.param({"label": "roses"}, [], id="no-files"),
    ],
)
def test_upload_validation(world: World, form: dict, files: list) -> None:
    before = stored_state(world.services)

    response = world.client.post(
        f"/v1/models/{world.model_id}/images", data=form, files=files or None, headers=world.alice.headers
    )

    assert response.status_code == 422
    assert response.json()["code"] == "invalid_input"
    assert stored_state(world.services) == before


@pytest.mark.parametrize("settings_overrides", [{"max_image_bytes": 1000}])
def test_picture_over_the_size_limit_is_refused(
    client: TestClient, alice: Account, model_id: str, services: Services
) -> None:
    big = make_image((1, 2, 3), (200, 200), "BMP")
    small = make_image((1, 2, 3), (4, 4))
    assert len(small) < 1000 < len(big)

    # The small picture is already in the request's pack when the big one is refused: the pack goes too.
    response = post_files(client, alice, model_id, "roses", [("small.png", small), ("big.bmp", big)])

    assert response.status_code == 413
    assert response.json()["code"] == "too_large"
    assert count_all(client, alice, model_id) == 0
    assert (pack_files(services), blob_rows(services)) == ([], {})


@pytest.mark.parametrize("settings_overrides", [{"quota_bytes": 1500}])
def test_upload_over_quota_adds_nothing(client: TestClient, alice: Account, model_id: str, services: Services) -> None:
    upload(client, alice, model_id, "roses", [("red.png", RED)])
    refs = blob_rows(services)

    response = post_files(
        client, alice, model_id, "roses", [("big.png", make_image((9, 9, 9), (64, 64), "BMP")), ("g.jpg", GREEN)]
    )

    assert response.status_code == 413
    problem = response.json()
    assert problem["code"] == "quota_exceeded"
    assert problem["quota_bytes"] == 1500
    assert problem["used_bytes"] == len(RED)
    assert count_all(client, alice, model_id) == 1
    assert blob_rows(services) == refs
    # The refused pictures' bytes were already in the request's pack: unreferenced, left for compaction.


# --- list, fetch, thumbnail ---------------------------------------------------------------------------------


def plant(client: TestClient, alice: Account, model_id: str) -> dict[str, list[int]]:
    """Five roses and two tulips in train, one rose in test, one reject: image ids by group."""
    roses = [make_image((200, 0, 0), (8, 8), mark=i) for i in range(5)]
    tulips = [make_image((0, 0, 200), (8, 8), mark=i) for i in range(2)]
    train = upload(client, alice, model_id, "roses", [(f"r{i}.png", d) for i, d in enumerate(roses)], split="train")
    more = upload(client, alice, model_id, "tulips", [(f"t{i}.png", d) for i, d in enumerate(tulips)], split="train")
    test = upload(
        client,
        alice,
        model_id,
        "roses",
        [("r9.png", make_image((200, 0, 0), (8, 8), mark=9)), ("junk.png", b"junk")],
        split="test",
    )

    def ids(result: dict) -> list[int]:
        return [r["image_id"] for r in result["results"]]

    return {"roses-train": ids(train), "tulips": ids(more), "roses-test": ids(test)[:1], "rejected": ids(test)[1:]}


@pytest.fixture
def garden(client: TestClient, alice: Account, model_id: str) -> dict[str, list[int]]:
    return plant(client, alice, model_id)


@pytest.fixture(scope="module")
def shared_garden(world: World) -> dict[str, list[int]]:
    """The same garden in the module's shared world, for reads and refusals."""
    return plant(world.client, world.alice, world.model_id)


@pytest.mark.parametrize(
    ("params", "groups"),
    [
        pytest.param({}, ["roses-train", "tulips", "roses-test"], id="accepted-by-default"),
        pytest.param({"label": "roses"}, ["roses-train", "roses-test"], id="by-class"),
        pytest.param({"split": "test"}, ["roses-test"], id="by-split"),
        pytest.param({"label": "roses", "split": "train"}, ["roses-train"], id="class-and-split"),
        pytest.param({"status": "rejected"}, ["rejected"], id="rejects"),
        pytest.param({"label": "lilies"}, [], id="unknown-class"),
    ],
)
def test_list_filters(world: World, shared_garden: dict[str, list[int]], params: dict, groups: list[str]) -> None:
    listed = images_of(world.client, world.alice, world.model_id, **params)

    expected = sorted(i for group in groups for i in shared_garden[group])
    assert [image["id"] for image in listed["data"]] == expected
    assert listed["count"] == len(expected)


def test_list_pagination(world: World, shared_garden: dict[str, list[int]]) -> None:
    everything = sorted(shared_garden["roses-train"] + shared_garden["tulips"] + shared_garden["roses-test"])

    pages = [images_of(world.client, world.alice, world.model_id, limit=3, offset=offset) for offset in (0, 3, 6)]

    assert [page["count"] for page in pages] == [8, 8, 8]
    assert [image["id"] for page in pages for image in page["data"]] == everything
    assert [len(page["data"]) for page in pages] == [3, 3, 2]


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"limit": 0}, id="zero-limit"),
        pytest.param({"limit": 1001}, id="huge-limit"),
        pytest.param({"offset": -1}, id="negative-offset"),
        pytest.param({"split": "val"}, id="unknown-split"),
        pytest.param({"status": "deleted"}, id="unknown-status"),
    ],
)
def test_list_validation(world: World, params: dict) -> None:
    response = world.client.get(f"/v1/models/{world.model_id}/images", params=params, headers=world.alice.headers)

    assert response.status_code == 422
    assert response.json()["errors"]


@pytest.mark.parametrize(
    ("picture", "media_type"),
    [pytest.param(RED, "image/png", id="png"), pytest.param(GREEN, "image/jpeg", id="jpeg")],
)
def test_content_is_the_uploaded_bytes(
    client: TestClient, alice: Account, model_id: str, picture: bytes, media_type: str
) -> None:
    (result,) = upload(client, alice, model_id, "roses", [("p", picture)])["results"]
    image = client.get(f"/v1/models/{model_id}/images/{result['image_id']}", headers=alice.headers).json()

    response = client.get(image["content_url"], headers=alice.headers)

    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert response.content == picture


@pytest.mark.parametrize(
    ("params", "longest"),
    [pytest.param({}, 128, id="default"), pytest.param({"size": 32}, 32, id="size-32")],
)
def test_thumbnail_is_a_small_picture(
    client: TestClient, alice: Account, model_id: str, services: Services, params: dict, longest: int
) -> None:
    (result,) = upload(client, alice, model_id, "roses", [("blue.png", BLUE)])["results"]
    url = f"/v1/models/{model_id}/images/{result['image_id']}/thumbnail"

    first = client.get(url, params=params, headers=alice.headers)
    again = client.get(url, params=params, headers=alice.headers)

    assert first.status_code == 200
    assert first.headers["content-type"] in ("image/png", "image/jpeg")
    with Image.open(io.BytesIO(first.content)) as thumbnail:
        assert max(thumbnail.size) == longest
        assert thumbnail.size[0] > thumbnail.size[1]  # the 3:2 shape is kept
    assert again.content == first.content
    # Cached under the picture's address, so another image of the same picture shares it.
    assert services.blobs.get(thumbnail_key(sha256_hex(BLUE), longest)) == first.content


def test_thumbnail_size_is_validated(client: TestClient, alice: Account, model_id: str) -> None:
    (result,) = upload(client, alice, model_id, "roses", [("red.png", RED)])["results"]

    response = client.get(
        f"/v1/models/{model_id}/images/{result['image_id']}/thumbnail", params={"size": 4096}, headers=alice.headers
    )

    assert response.status_code == 422


def test_rejected_image_has_no_content(world: World, shared_garden: dict[str, list[int]]) -> None:
    (reject,) = shared_garden["rejected"]

    for suffix in ("content", "thumbnail"):
        url = f"/v1/models/{world.model_id}/images/{reject}/{suffix}"
        response = world.client.get(url, headers=world.alice.headers)
        assert response.status_code == 404
        assert "rejected" in response.json()["detail"]


def test_unknown_image_is_not_found(world: World) -> None:
    base = f"/v1/models/{world.model_id}/images"
    for url in ("/999", "/999/content", "/999/thumbnail"):
        assert world.client.get(base + url, headers=world.alice.headers).status_code == 404
    assert world.client.get(base + "/abc", headers=world.alice.headers).status_code == 422


# --- move and delete ----------------------------------------------------------------------------------------


def test_move_to_another_class_and_split(
    client: TestClient, alice: Account, model_id: str, garden: dict[str, list[int]]
) -> None:
    image_id = garden["roses-train"][0]

    response = client.patch(
        f"/v1/models/{model_id}/images/{image_id}", json={"label": "lilies", "split": "test"}, headers=alice.headers
    )

    assert response.status_code == 200
    assert (response.json()["label"], response.json()["split"]) == ("lilies", "test")
    lilies = client.get(f"/v1/models/{model_id}/classes/lilies", headers=alice.headers).json()
    assert (lilies["train_images"], lilies["test_images"]) == (0, 1)
    assert images_of(client, alice, model_id, label="roses")["count"] == 5


@pytest.mark.parametrize(
    "body",
    [pytest.param({"split": "val"}, id="unknown-split"), pytest.param({"label": "a/b"}, id="bad-label")],
)
def test_move_validation(world: World, shared_garden: dict[str, list[int]], body: dict) -> None:
    url = f"/v1/models/{world.model_id}/images/{shared_garden['roses-train'][0]}"
    before = stored_state(world.services)

    response = world.client.patch(url, json=body, headers=world.alice.headers)

    assert response.status_code == 422
    assert stored_state(world.services) == before


def test_moving_a_reject_is_refused(world: World, shared_garden: dict[str, list[int]]) -> None:
    (reject,) = shared_garden["rejected"]
    before = stored_state(world.services)

    response = world.client.patch(
        f"/v1/models/{world.model_id}/images/{reject}", json={"label": "roses"}, headers=world.alice.headers
    )

    assert response.status_code == 422
    assert stored_state(world.services) == before


def test_delete_one_image(client: TestClient, alice: Account, model_id: str, garden: dict[str, list[int]]) -> None:
    image_id = garden["tulips"][0]

    assert client.delete(f"/v1/models/{model_id}/images/{image_id}", headers=alice.headers).status_code == 204

    assert client.get(f"/v1/models/{model_id}/images/{image_id}", headers=alice.headers).status_code == 404
    assert images_of(client, alice, model_id, label="tulips")["count"] == 1
    assert client.delete(f"/v1/models/{model_id}/images/{image_id}", headers=alice.headers).status_code == 404


def test_delete_many_is_all_or_nothing(
    client: TestClient, alice: Account, model_id: str, garden: dict[str, list[int]]
) -> None:
    ids = garden["roses-train"][:2]

    missing = client.post(f"/v1/models/{model_id}/images/delete", json={"ids": [*ids, 999]}, headers=alice.headers)
    assert missing.status_code == 404
    assert images_of(client, alice, model_id)["count"] == 8

    done = client.post(f"/v1/models/{model_id}/images/delete", json={"ids": ids}, headers=alice.headers)
    assert done.status_code == 204
    assert images_of(client, alice, model_id)["count"] == 6

    empty = client.post(f"/v1/models/{model_id}/images/delete", json={"ids": []}, headers=alice.headers)
    assert empty.status_code == 422


def test_a_picture_is_forgotten_only_when_no_image_refers_to_it(
    client: TestClient, alice: Account, model_id: str, services: Services
) -> None:
    other = client.post("/v1/models", json={"name": "other"}, headers=alice.headers).json()["id"]
    (in_first,) = upload(client, alice, model_id, "roses", [("red.png", RED)])["results"]
    (in_second,) = upload(client, alice, other, "roses", [("red.png", RED)])["results"]
    packs = pack_files(services)

    client.delete(f"/v1/models/{model_id}/images/{in_first['image_id']}", headers=alice.headers)
    assert sha256_hex(RED) in stored_pictures(services)  # the other model still shows it
    assert (
        client.get(f"/v1/models/{other}/images/{in_second['image_id']}/content", headers=alice.headers).content == RED
    )

    client.delete(f"/v1/models/{other}/images/{in_second['image_id']}", headers=alice.headers)
    assert stored_pictures(services) == set()
    # Packs are append-only: the bytes stay until a compaction rewrites the pack.
    assert pack_files(services) == packs


def test_a_deleted_picture_can_be_uploaded_again(
    client: TestClient, alice: Account, model_id: str, services: Services
) -> None:
    (first,) = upload(client, alice, model_id, "roses", [("red.png", RED)])["results"]
    client.delete(f"/v1/models/{model_id}/images/{first['image_id']}", headers=alice.headers)

    (again,) = upload(client, alice, model_id, "roses", [("red.png", RED)])["results"]

    assert again["status"] == "accepted"
    assert stored_pictures(services) == {sha256_hex(RED)}
    assert client.get(f"/v1/models/{model_id}/images/{again['image_id']}/content", headers=alice.headers).content == RED


def test_deleting_a_picture_drops_its_cached_thumbnails(
    client: TestClient, alice: Account, model_id: str, services: Services
) -> None:
    other = client.post("/v1/models", json={"name": "other"}, headers=alice.headers).json()["id"]
    (blue,) = upload(client, alice, model_id, "roses", [("blue.png", BLUE)])["results"]
    (shared,) = upload(client, alice, other, "roses", [("blue.png", BLUE)])["results"]
    for size in (32, 64):
        url = f"/v1/models/{model_id}/images/{blue['image_id']}/thumbnail"
        assert client.get(url, params={"size": size}, headers=alice.headers).status_code == 200
    thumbnails = sorted(services.blobs.iter_keys("thumbnails"))
    assert thumbnails == sorted(thumbnail_key(sha256_hex(BLUE), size) for size in (32, 64))

    client.delete(f"/v1/models/{model_id}/images/{blue['image_id']}", headers=alice.headers)
    assert sorted(services.blobs.iter_keys("thumbnails")) == thumbnails  # the other model still shows it

    client.delete(f"/v1/models/{other}/images/{shared['image_id']}", headers=alice.headers)
    assert list(services.blobs.iter_keys("thumbnails")) == []


def test_deleting_a_model_or_class_forgets_its_pictures(
    client: TestClient, alice: Account, model_id: str, services: Services
) -> None:
    upload(client, alice, model_id, "roses", [("red.png", RED)])
    upload(client, alice, model_id, "tulips", [("blue.png", BLUE)])
    (blue,) = images_of(client, alice, model_id, label="tulips")["data"]
    assert client.get(blue["thumbnail_url"], headers=alice.headers).status_code == 200

    client.delete(f"/v1/models/{model_id}/classes/roses", headers=alice.headers)
    assert stored_pictures(services) == {sha256_hex(BLUE)}

    client.delete(f"/v1/models/{model_id}", headers=alice.headers)
    assert stored_pictures(services) == set()
    assert list(services.blobs.iter_keys("thumbnails")) == []
