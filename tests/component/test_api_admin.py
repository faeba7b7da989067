"""GET /v1/admin/cluster: administrators only; queued and running work of every user from the catalog (the live
Ray part is tested on a real multi-node cluster in tests/integration/test_cluster.py)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from cluster.catalog import jobs as catalog_jobs
from cluster.services import Services
from tests.component.conftest import Account, create_account


def admin_headers(services: Services) -> dict[str, str]:
    return create_account(services, "root", is_admin=True).headers


def test_only_administrators_see_the_cluster(client: TestClient, alice: Account) -> None:
    anonymous = client.get("/v1/admin/cluster")
    user = client.get("/v1/admin/cluster", headers=alice.headers)

    assert (anonymous.status_code, anonymous.json()["code"]) == (401, "unauthorized")
    assert (user.status_code, user.json()["code"]) == (403, "forbidden")
    assert "nodes" not in user.text


def test_admins_see_every_users_queued_work_and_the_dashboard(
    client: TestClient, services: Services, alice: Account, model_id: str
) -> None:
    job = services.catalog.call_sync(catalog_jobs.create_job, alice.id, "import", model_id=model_id)

    response = client.get("/v1/admin/cluster", headers=admin_headers(services))

    assert response.status_code == 200, response.text
    view = response.json()
    assert [(j["id"], j["kind"], j["status"], j["owner"]) for j in view["jobs"]] == [
        (job.id, "import", "queued", "alice")
    ]
    assert view["runs"] == []
    assert view["dashboard_url"] == f"http://127.0.0.1:{services.settings.dashboard_port}"
    assert view["ray"].startswith("not connected") and view["nodes"] == []  # no Ray in this process


def test_admins_see_storage_per_person(client: TestClient, services: Services, alice: Account, model_id: str) -> None:
    from tests.factories import make_noise

    pictures = [make_noise(seed=seed) for seed in range(3)]
    files = [("files", (f"{i}.png", data)) for i, data in enumerate(pictures)]
    added = client.post(f"/v1/models/{model_id}/images", data={"label": "a"}, files=files, headers=alice.headers)
    assert added.status_code == 201, added.text

    view = client.get("/v1/admin/cluster", headers=admin_headers(services)).json()

    storage = {row["username"]: row for row in view["storage"]}
    assert storage["alice"] == {
        "username": "alice",
        "models": 1,
        "pictures": 3,
        "used_bytes": sum(len(data) for data in pictures),
        "quota_bytes": services.settings.quota_bytes,
    }
    assert storage["root"]["models"] == 0 and storage["root"]["used_bytes"] == 0
    assert view["storage"][0]["username"] == "alice"  # the largest first
