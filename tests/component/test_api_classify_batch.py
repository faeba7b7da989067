"""POST /v1/models/{id}/classify-batch and GET /v1/jobs/{id}/results in-process: the route stores the zip and
queues the job; the job itself (cluster.batch.run_batch) runs here with the fake classifier of
test_api_classify, as the Ray driver runs it with the serving deployments.
"""

from __future__ import annotations

import asyncio
import csv
import io
import zipfile
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from cluster.batch import run_batch
from cluster.catalog import jobs as catalog_jobs
from tests.component.conftest import api_client
from tests.component.test_api_classify import BLUE, RED, FakeClassifier, publish
from tests.factories import make_image


@pytest.fixture
def api(services) -> Iterator[TestClient]:
    with api_client(services, FakeClassifier()) as test_client:
        yield test_client


def pictures_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(40):
            archive.writestr(f"shots/{i:02}.png", make_image(RED if i % 4 else BLUE))
        archive.writestr("loose.jpg", make_image((20, 220, 20), fmt="JPEG"))
        archive.writestr("notes.png", b"not a picture")
        archive.writestr("../escape.png", make_image(RED))
        archive.writestr("inner.zip", b"PK")
        archive.writestr("__MACOSX/._00.png", b"junk")
    return buffer.getvalue()


def run_job(services, job_id: str) -> dict:
    job = services.catalog.call_sync(catalog_jobs.start_job, job_id)
    seen: list[tuple[int, int]] = []
    result = asyncio.run(
        run_batch(job, services.catalog, services.blobs, services.settings, FakeClassifier(),
                  lambda done, total, _: seen.append((done, total)))
    )  # fmt: skip
    services.catalog.call_sync(catalog_jobs.finish_job, job_id, status="succeeded", message="", result=result)
    assert seen[0] == (0, 42) and seen[-1] == (42, 42)
    return result


def test_a_zip_is_classified_as_a_job_with_downloadable_results(api, services, alice, model_id) -> None:
    version = publish(services, alice, model_id)

    started = api.post(
        f"/v1/models/{model_id}/classify-batch?top_k=1",
        content=pictures_zip(),
        headers={**alice.headers, "Content-Type": "application/zip"},
    )

    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    assert started.headers["Location"] == f"/v1/jobs/{job_id}" and started.json()["kind"] == "classify_batch"
    assert services.jobs.batch_requests == [job_id]
    early = api.get(f"/v1/jobs/{job_id}/results", headers=alice.headers)
    assert early.status_code == 409 and early.headers["content-type"] == "application/problem+json"

    result = run_job(services, job_id)

    assert (result["version"], result["classified"], result["none_of_the_above"]) == (version, 41, 1)
    assert result["failed"] == 3 and result["results"] == f"/v1/jobs/{job_id}/results"
    body = api.get(f"/v1/jobs/{job_id}/results", headers=alice.headers).json()
    rows = {row["name"]: row for row in body["results"]}
    assert rows["shots/01.png"]["label"] == "red" and rows["shots/00.png"]["label"] == "blue"
    assert rows["loose.jpg"]["none_of_the_above"] is True and rows["shots/01.png"]["none_of_the_above"] is False
    assert "outside the zip" in rows["../escape.png"]["error"] and rows["notes.png"]["task_id"] is None
    assert rows["inner.zip"]["error"] and "__MACOSX/._00.png" not in rows
    task = api.get(f"/v1/tasks/{rows['shots/01.png']['task_id']}", headers=alice.headers).json()
    assert (task["label"], task["version"]) == ("red", version)
    assert api.get(f"/v1/tasks?model_id={model_id}", headers=alice.headers).json()["count"] == 41

    download = api.get(f"/v1/jobs/{job_id}/results?format=csv", headers=alice.headers)
    assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(download.text)))
    assert len(table) == 44 and {"name", "task_id", "label", "confidence", "none_of_the_above"} <= set(table[0])


def test_results_are_the_owners_and_only_of_batch_jobs(api, services, alice, bob, model_id) -> None:
    publish(services, alice, model_id)
    job_id = api.post(
        f"/v1/models/{model_id}/classify-batch", files={"file": ("shots.zip", pictures_zip())}, headers=alice.headers
    ).json()["id"]
    run_job(services, job_id)

    assert api.get(f"/v1/jobs/{job_id}/results", headers=bob.headers).status_code == 404
    other = services.catalog.call_sync(catalog_jobs.create_job, alice.id, "import", model_id=model_id)
    assert api.get(f"/v1/jobs/{other.id}/results", headers=alice.headers).status_code == 404


def test_a_model_without_a_version_or_a_bad_zip_is_refused(api, services, alice, model_id) -> None:
    zip_headers = {**alice.headers, "Content-Type": "application/zip"}
    untrained = api.post(f"/v1/models/{model_id}/classify-batch", content=pictures_zip(), headers=zip_headers)
    assert untrained.status_code == 409

    publish(services, alice, model_id)
    job_id = api.post(f"/v1/models/{model_id}/classify-batch", content=b"not a zip", headers=zip_headers).json()["id"]
    job = services.catalog.call_sync(catalog_jobs.start_job, job_id)
    with pytest.raises(Exception, match="not a zip"):
        asyncio.run(run_batch(job, services.catalog, services.blobs, services.settings, FakeClassifier(), print))
