"""Throttles over HTTP: failed sign-ins per username and client, upload requests per token, request size."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from cluster.services import Services
from serve.api import create_api
from tests.component.conftest import PASSWORD, Account, create_account, stored_state
from tests.factories import make_image, make_noise

PICTURE = make_image((10, 120, 200), (16, 16), mark=7)


def login(client: TestClient, username: str, password: str):
    return client.post("/v1/auth/login", json={"username": username, "password": password})


@pytest.mark.parametrize("settings_overrides", [{"login_max_failures": 3, "login_failure_window_s": 600}])
def test_failed_sign_ins_lock_that_username_from_that_client(client: TestClient, alice: Account) -> None:
    for _ in range(3):
        assert login(client, "alice", "wrong-password").status_code == 401

    locked = login(client, "alice", PASSWORD)  # even the right password: no guessing while locked out

    assert locked.status_code == 429
    assert locked.json()["code"] == "rate_limited"
    assert 590 <= int(locked.headers["Retry-After"]) <= 600
    assert locked.json()["retry_after"] == int(locked.headers["Retry-After"])
    assert "Too many failed sign-ins" in locked.json()["detail"]
    assert login(client, "ALICE", PASSWORD).status_code == 429  # usernames are compared without case
    assert login(client, "nobody", "wrong-password").status_code == 401  # another username is not locked


@pytest.mark.parametrize("settings_overrides", [{"login_max_failures": 2}])
def test_another_client_can_still_sign_in(services: Services, client: TestClient, alice: Account) -> None:
    for _ in range(2):
        login(client, "alice", "wrong-password")
    assert login(client, "alice", PASSWORD).status_code == 429

    app = client.app  # the same replica (same counters), reached from another address
    with TestClient(app, client=("192.0.2.7", 4000)) as elsewhere:
        assert login(elsewhere, "alice", PASSWORD).status_code == 200


@pytest.mark.parametrize("settings_overrides", [{"login_max_failures": 3}])
def test_a_successful_sign_in_resets_the_count(client: TestClient, alice: Account) -> None:
    for _ in range(2):
        login(client, "alice", "wrong-password")
    assert login(client, "alice", PASSWORD).status_code == 200

    for _ in range(2):
        assert login(client, "alice", "wrong-password").status_code == 401
    assert login(client, "alice", PASSWORD).status_code == 200


@pytest.mark.parametrize("settings_overrides", [{"login_max_failures": 0}])
def test_login_throttling_can_be_turned_off(client: TestClient, alice: Account) -> None:
    for _ in range(30):
        assert login(client, "alice", "wrong-password").status_code == 401
    assert login(client, "alice", PASSWORD).status_code == 200


@pytest.mark.parametrize("settings_overrides", [{"login_max_failures": 4, "ingress_replicas": 2}])
def test_each_ingress_replica_allows_its_share(client: TestClient, alice: Account) -> None:
    for _ in range(2):
        assert login(client, "alice", "wrong-password").status_code == 401
    assert login(client, "alice", "wrong-password").status_code == 429


def upload(client: TestClient, account: Account, model_id: str, data: bytes = PICTURE):
    files = [("files", ("p.png", data, "image/png"))]
    return client.post(f"/v1/models/{model_id}/images", data={"label": "sky"}, files=files, headers=account.headers)


@pytest.mark.parametrize("settings_overrides", [{"upload_requests_per_minute": 3}])
def test_uploads_per_token_are_rate_limited(
    client: TestClient, services: Services, alice: Account, model_id: str
) -> None:
    statuses = [upload(client, alice, model_id, make_image(mark=n)).status_code for n in range(3)]
    assert statuses == [201, 201, 201]
    before = stored_state(services)

    refused = upload(client, alice, model_id, make_image(mark=99))
    refused_zip = client.post(
        f"/v1/models/{model_id}/imports",
        content=b"PK\x05\x06" + bytes(18),
        headers={**alice.headers, "Content-Type": "application/zip"},
    )

    for response in (refused, refused_zip):
        assert response.status_code == 429
        assert response.json()["code"] == "rate_limited"
        assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert stored_state(services) == before
    # Reading is not an upload, and another token of the same user has its own allowance.
    assert client.get(f"/v1/models/{model_id}/images", headers=alice.headers).status_code == 200
    second = create_account(services, "alice2")
    theirs = client.post("/v1/models", json={"name": "m"}, headers=second.headers).json()["id"]
    assert upload(client, second, theirs).status_code == 201


@pytest.mark.parametrize("settings_overrides", [{"upload_requests_per_minute": 2}])
def test_every_upload_route_counts(client: TestClient, alice: Account, model_id: str) -> None:
    sample = client.put(
        f"/v1/models/{model_id}/sample", files={"file": ("s.png", PICTURE, "image/png")}, headers=alice.headers
    )
    assert sample.status_code == 200, sample.text
    assert upload(client, alice, model_id).status_code == 201
    batch = client.post(
        f"/v1/models/{model_id}/classify-batch",
        content=b"PK\x05\x06" + bytes(18),
        headers={**alice.headers, "Content-Type": "application/zip"},
    )
    assert batch.status_code == 429


def test_default_limits_leave_ordinary_use_alone(services: Services) -> None:
    settings = services.settings
    assert settings.login_max_failures >= 5
    assert settings.upload_requests_per_minute >= 60
    app = create_api(services)
    assert (app.state.limits.logins.limit, app.state.limits.uploads.limit) == (
        settings.login_max_failures,
        settings.upload_requests_per_minute,
    )


@pytest.mark.parametrize("settings_overrides", [{"max_upload_bytes": 4096}])
def test_request_size_limit_is_configurable(
    client: TestClient, services: Services, alice: Account, model_id: str
) -> None:
    before = stored_state(services)

    response = upload(client, alice, model_id, make_image(size=(200, 200), fmt="BMP"))

    assert response.status_code == 413
    assert response.json()["code"] == "too_large"
    assert stored_state(services) == before


def chunked(body: bytes, size: int = 1024) -> Iterator[bytes]:
    """A body sent in chunks without Content-Length (Transfer-Encoding: chunked): the declared size cannot help."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.parametrize("settings_overrides", [{"max_upload_bytes": 8192}])
def test_a_body_without_a_declared_length_is_cut_at_the_limit(
    client: TestClient, services: Services, alice: Account, model_id: str
) -> None:
    picture = make_noise((64, 64))  # about 12 KB, under the per-picture limit but over the request limit
    request = client.build_request(
        "POST", f"/v1/models/{model_id}/images", data={"label": "sky"}, files={"files": ("n.png", picture)}
    )
    body = request.read()
    before = stored_state(services)

    response = client.post(
        f"/v1/models/{model_id}/images",
        content=chunked(body),
        headers={**alice.headers, "Content-Type": request.headers["Content-Type"]},
    )

    assert "content-length" not in {name.lower() for name in response.request.headers}
    assert response.status_code == 413, response.text
    assert (response.json()["code"], response.json()["title"]) == ("too_large", "Upload too large")
    assert stored_state(services) == before


@pytest.mark.parametrize("settings_overrides", [{"max_upload_bytes": 8192}])
def test_a_zip_streamed_without_a_declared_length_is_cut_at_the_limit(
    client: TestClient, services: Services, alice: Account, model_id: str
) -> None:
    before = stored_state(services)

    response = client.post(
        f"/v1/models/{model_id}/imports",
        content=chunked(b"PK\x03\x04" + bytes(20_000)),
        headers={**alice.headers, "Content-Type": "application/zip"},
    )

    assert response.status_code == 413, response.text
    assert response.json()["code"] == "too_large"
    assert stored_state(services) == before
    assert not [path for path in services.blobs.root.rglob("*") if path.is_file() and "incoming" in path.parts]
