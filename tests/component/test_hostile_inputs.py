"""The hostile-input corpus (tests/hostile.py) thrown at the API: uploads, zip imports, class names and
classification. Each case gets a clear answer (a problem+json, or a per-file reject with a reason in words),
and the rest of the dataset is exactly as it was before.
"""

from __future__ import annotations

import asyncio
import zipfile
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from cluster.batch import run_batch
from cluster.catalog import jobs as catalog_jobs
from cluster.services import Services
from tests import hostile
from tests.component.conftest import Account, api_client, pack_bytes, stored_state
from tests.component.test_api_classify import FakeClassifier, publish
from tests.factories import make_image

BIRDS = [
    ("b1.png", make_image((90, 90, 200), (16, 16), mark=901)),
    ("b2.png", make_image((90, 90, 200), (16, 16), mark=902)),
]
GOOD = make_image((10, 120, 10), (16, 16), mark=555)


def files(*named: tuple[str, bytes]) -> list:
    return [("files", (name, data, "application/octet-stream")) for name, data in named]


def dataset(client: TestClient, account: Account, model_id: str) -> dict[str, list[tuple]]:
    """Every accepted picture per class, as (id, sha256, split, width, height): what must not change."""
    listed = client.get(f"/v1/models/{model_id}/images", params={"limit": 1000}, headers=account.headers).json()
    classes = client.get(f"/v1/models/{model_id}/classes", headers=account.headers).json()["data"]
    result: dict[str, list[tuple]] = {c["name"]: [] for c in classes}
    for image in listed["data"]:
        result[image["label"]].append((image["id"], image["sha256"], image["split"], image["width"], image["height"]))
    return {label: sorted(rows) for label, rows in result.items()}


@pytest.fixture
def birds(client: TestClient, alice: Account, model_id: str) -> dict[str, list[tuple]]:
    """Alice's model already holds a class 'bird' of two pictures; returns the dataset as it is."""
    response = client.post(
        f"/v1/models/{model_id}/images", data={"label": "bird"}, files=files(*BIRDS), headers=alice.headers
    )
    assert response.status_code == 201, response.text
    return dataset(client, alice, model_id)


def added(before: dict[str, list[tuple]], after: dict[str, list[tuple]]) -> dict[str, int]:
    """Pictures added per class; fails when anything that was there changed or went away."""
    for label, rows in before.items():
        assert set(rows) <= set(after.get(label, [])), f"class {label!r} changed: {rows} -> {after.get(label)}"
    return {label: len(rows) - len(before.get(label, [])) for label, rows in after.items() if rows != before.get(label)}


# --- single pictures ----------------------------------------------------------------------------------------


def test_each_hostile_picture_gets_its_own_answer_in_one_upload(
    client: TestClient, alice: Account, model_id: str, birds: dict
) -> None:
    offered = [(name, data) for name, (data, _, _) in hostile.PICTURES.items()] + [("good.png", GOOD)]

    response = client.post(
        f"/v1/models/{model_id}/images", data={"label": "bird"}, files=files(*offered), headers=alice.headers
    )

    assert response.status_code == 201, response.text
    results = {r["name"]: r for r in response.json()["results"]}
    for name, (_, accepted, words) in hostile.PICTURES.items():
        if accepted:
            assert results[name]["status"] == "accepted", results[name]
        else:
            assert results[name]["status"] == "rejected", results[name]
            assert words in results[name]["reason"] and name in results[name]["reason"], results[name]
    assert results["good.png"]["status"] == "accepted"
    after = dataset(client, alice, model_id)
    assert added(birds, after) == {"bird": 1 + len(hostile.ACCEPTED_AS)}
    shapes = {
        (r["original_name"], r["format"], r["width"], r["height"])
        for r in client.get(f"/v1/models/{model_id}/images", headers=alice.headers).json()["data"]
    }
    assert {(name, *shape) for name, shape in hostile.ACCEPTED_AS.items()} <= shapes


@pytest.mark.parametrize(
    "name", [pytest.param(name, id=name) for name, (_, accepted, _) in hostile.PICTURES.items() if not accepted]
)
def test_a_hostile_picture_alone_is_a_problem_that_changes_nothing(
    client: TestClient, services: Services, alice: Account, model_id: str, birds: dict, name: str
) -> None:
    data, _, words = hostile.PICTURES[name]
    before = stored_state(services)

    response = client.post(
        f"/v1/models/{model_id}/images", data={"label": "bird"}, files=files((name, data)), headers=alice.headers
    )

    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "invalid_input"
    assert words in problem["detail"] and name in problem["detail"]
    assert stored_state(services) == before
    assert dataset(client, alice, model_id) == birds


@pytest.fixture
def classify_api(services: Services) -> Iterator[TestClient]:
    with api_client(services, FakeClassifier()) as test_client:
        yield test_client


def test_hostile_pictures_sent_to_classify_get_their_own_problem(
    classify_api: TestClient, services: Services, alice: Account, model_id: str
) -> None:
    publish(services, alice, model_id)
    offered = [(name, data) for name, (data, _, _) in hostile.PICTURES.items()]

    response = classify_api.post(f"/v1/models/{model_id}/classify", files=files(*offered), headers=alice.headers)

    assert response.status_code == 200, response.text
    for result, (name, (_, accepted, words)) in zip(response.json()["results"], hostile.PICTURES.items(), strict=True):
        assert result["name"] == name
        if accepted:
            assert result["error"] is None and result["label"] in ("red", "blue"), result
        else:
            assert result["task_id"] is None and result["error"]["status"] == 422, result
            assert words in result["error"]["detail"], result


# --- class names --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        pytest.param("POST", "/classes", {"json": {"name": "../x"}}, id="create-class"),
        pytest.param("PATCH", "/classes/bird", {"json": {"name": "../x"}}, id="rename-class"),
        pytest.param(
            "POST", "/images", {"data": {"label": "../x"}, "files": files(("g.png", GOOD))}, id="upload-label"
        ),
        pytest.param("POST", "/classes", {"json": {"name": "..\\x"}}, id="backslash"),
        pytest.param("POST", "/classes", {"json": {"name": ".."}}, id="dot-dot"),
        pytest.param("POST", "/classes", {"json": {"name": "bad\x00name"}}, id="nul"),
    ],
)
def test_a_class_named_like_a_path_is_refused(
    client: TestClient,
    services: Services,
    alice: Account,
    model_id: str,
    birds: dict,
    method: str,
    path: str,
    kwargs: dict,
) -> None:
    before = stored_state(services)

    response = client.request(method, f"/v1/models/{model_id}{path}", headers=alice.headers, **kwargs)

    assert response.status_code == 422, response.text
    assert "cannot be used as a class name" in response.json()["detail"]
    assert stored_state(services) == before


def test_moving_a_picture_to_a_class_named_like_a_path_is_refused(
    client: TestClient, services: Services, alice: Account, model_id: str, birds: dict
) -> None:
    image_id = birds["bird"][0][0]
    before = stored_state(services)

    response = client.patch(f"/v1/models/{model_id}/images/{image_id}", json={"label": "../x"}, headers=alice.headers)

    assert response.status_code == 422
    assert stored_state(services) == before


@pytest.mark.parametrize(
    "name",
    [pytest.param("猫", id="cjk"), pytest.param("crème brûlée", id="accents"), pytest.param("🐦 birds", id="emoji")],
)
def test_unicode_class_names_are_kept(
    client: TestClient, alice: Account, model_id: str, birds: dict, name: str
) -> None:
    response = client.post(
        f"/v1/models/{model_id}/images", data={"label": name}, files=files(("g.png", GOOD)), headers=alice.headers
    )

    assert response.status_code == 201, response.text
    assert added(birds, dataset(client, alice, model_id)) == {name: 1}
    assert client.get(f"/v1/models/{model_id}/classes/{name}", headers=alice.headers).json()["total_images"] == 1


# --- zips ---------------------------------------------------------------------------------------------------


def import_zip(client: TestClient, account: Account, model_id: str, data: bytes, wait: Callable[..., dict]) -> dict:
    response = client.post(
        f"/v1/models/{model_id}/imports", content=data, headers={**account.headers, "Content-Type": "application/zip"}
    )
    assert response.status_code == 202, response.text
    return wait(response.json()["url"], account.headers)


CAT = [make_image((200, 120, 30), (16, 16), mark=700 + n) for n in range(3)]
DOG = [make_image((120, 60, 10), (16, 16), mark=800 + n) for n in range(3)]
SHIFT_JIS = b"\x93\xfa\x96\x7b"  # 日本 in Shift-JIS: not UTF-8, so read as the zip standard's cp437


def kitchen_sink_zip() -> tuple[bytes, dict[str, str]]:
    """Good class folders with every hostile entry among them; returns the zip and name -> reject words."""
    rejects: dict[str, str] = {}
    entries: dict[str | zipfile.ZipInfo, bytes] = {}
    entries.update({f"cat/{n}.png": data for n, data in enumerate(CAT)})
    entries.update({f"dog/{n}.png": data for n, data in enumerate(DOG)})
    for name, (data, accepted, words) in hostile.PICTURES.items():
        entries[f"cat/{name}"] = data
        if not accepted:
            rejects[f"cat/{name}"] = words
    hostile_entries: dict[str | zipfile.ZipInfo, tuple[bytes, str]] = {
        "../x/1.png": (GOOD, "points outside the zip"),
        "../../etc/evil.png": (GOOD, "points outside the zip"),
        "/etc/evil.png": (GOOD, "points outside the zip"),
        "C:/Windows/evil.png": (GOOD, "points outside the zip"),
        hostile.symlink("cat/link.png"): (b"/etc/passwd", "link to another file"),
        "cat/inner.zip": (hostile.nested_zip(), "zip inside a zip"),
        "cat/bomb.bmp": (bytes(3 * 2**19), "looks like a zip bomb"),  # 1.5 MB of zeros in ~2 KB
        "dog/same-as-cat.png": (CAT[0], "already in class 'cat'"),
    }
    for entry, (data, words) in hostile_entries.items():
        entries[entry] = data
        rejects[entry.filename if isinstance(entry, zipfile.ZipInfo) else entry] = words
    entries["cat/again.png"] = CAT[1]  # a duplicate within the class: skipped, not rejected
    entries[hostile.raw_name(b"caf\x82/1.png")] = make_image(mark=901_001)  # cp437 é, no UTF-8 flag
    entries[hostile.raw_name(SHIFT_JIS + b"/1.png")] = make_image(mark=901_002)
    entries["猫/1.png"] = make_image(mark=901_003)
    entries["cre\u0300me/1.png"] = make_image(mark=901_004)  # NFD, as macOS writes names
    entries[hostile.folder("empty/")] = b""
    entries["__MACOSX/cat/._0.png"] = b"\x00\x05\x16\x07"
    return hostile.zip_of(entries), rejects


def test_a_zip_full_of_hostile_entries_imports_only_the_good_ones(
    client: TestClient, services: Services, alice: Account, model_id: str, birds: dict, wait_for_job: Callable
) -> None:
    data, rejects = kitchen_sink_zip()

    job = import_zip(client, alice, model_id, data, wait_for_job)

    assert job["status"] == "succeeded", job
    report = job["result"]
    reasons = {reject["name"]: reject["reason"] for reject in report["rejects"]}
    for name, words in rejects.items():
        assert name in reasons, f"{name} was not rejected: {sorted(reasons)}"
        assert words in reasons[name], (name, reasons[name])
    assert set(reasons) == set(rejects)
    assert report["duplicates"] == 1 and report["duplicate_names"] == ["cat/again.png"]
    assert report["empty_folders"] == ["empty"]
    assert report["ignored_files"] == 1
    assert any("'empty' had no pictures" in warning for warning in report["warnings"])
    expected = {
        "cat": len(CAT) + len(hostile.ACCEPTED_AS),
        "dog": len(DOG),
        "café": 1,
        SHIFT_JIS.decode("cp437"): 1,
        "猫": 1,
        "crème": 1,
    }
    assert {c["name"]: c["total"] for c in report["classes"]} == expected
    assert added(birds, dataset(client, alice, model_id)) == expected  # bird is exactly as it was
    names = [c["name"] for c in client.get(f"/v1/models/{model_id}/classes", headers=alice.headers).json()["data"]]
    assert not [name for name in names if "/" in name or name in ("..", "x", "empty", "etc")]
    assert not list(services.blobs.root.rglob("evil.png")) and not (services.blobs.root.parent / "x").exists()


@pytest.mark.parametrize(
    ("make", "settings_overrides", "words"),
    [
        pytest.param(lambda: hostile.zip_bomb(64 * 2**20), {}, "looks like a zip bomb", id="zip-bomb"),
        pytest.param(
            lambda: hostile.many_entries_zip(100_000),
            {"max_zip_entries": 99_999},
            "holds 100,000 files and folders, more than the 99,999 allowed",
            id="100000-entries",
        ),
        pytest.param(lambda: hostile.TEXT, {}, "not a zip file", id="text-renamed-zip"),
        pytest.param(lambda: hostile.zip_of({"cat/1.png": GOOD})[:-30], {}, "or it is damaged", id="truncated-zip"),
    ],
)
def test_a_refused_archive_fails_its_job_and_changes_nothing(
    client: TestClient,
    services: Services,
    alice: Account,
    model_id: str,
    birds: dict,
    wait_for_job: Callable,
    make: Callable[[], bytes],
    words: str,
) -> None:
    stored = pack_bytes(services)

    job = import_zip(client, alice, model_id, make(), wait_for_job)

    assert job["status"] == "failed", job
    assert job["error"]["code"] == "invalid_input" and words in job["error"]["detail"], job["error"]
    assert dataset(client, alice, model_id) == birds
    assert pack_bytes(services) == stored


def test_a_zip_full_of_hostile_entries_classified_as_a_batch_answers_each_file(
    classify_api: TestClient, services: Services, alice: Account, model_id: str
) -> None:
    publish(services, alice, model_id)
    data, rejects = kitchen_sink_zip()
    del rejects["dog/same-as-cat.png"]  # a picture in two classes is an import problem; here it is just a picture
    started = classify_api.post(
        f"/v1/models/{model_id}/classify-batch",
        content=data,
        headers={**alice.headers, "Content-Type": "application/zip"},
    )
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    job = services.catalog.call_sync(catalog_jobs.start_job, job_id)

    result = asyncio.run(run_batch(job, services.catalog, services.blobs, services.settings, FakeClassifier(), _quiet))
    services.catalog.call_sync(catalog_jobs.finish_job, job_id, status="succeeded", message="", result=result)

    rows = {
        row["name"]: row
        for row in classify_api.get(f"/v1/jobs/{job_id}/results", headers=alice.headers).json()["results"]
    }
    for name, words in rejects.items():
        assert rows[name]["task_id"] is None and words in rows[name]["error"], (name, rows[name])
    answered = {name for name, row in rows.items() if row["task_id"]}
    assert answered == set(rows) - set(rejects)
    assert {f"cat/{name}" for name in hostile.ACCEPTED_AS} <= answered
    assert "__MACOSX/cat/._0.png" not in rows and result["failed"] == len(rejects)


def _quiet(done: int, total: int, message: str) -> None:
    """Progress reports of the batch job: not needed here."""
