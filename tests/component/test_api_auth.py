"""Accounts and tokens over HTTP: register, sign in and out, who am I, API tokens; errors as problem+json."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from cluster.catalog import users as catalog_users
from cluster.catalog.db import utcnow
from cluster.security import new_token
from cluster.services import Services
from tests.component.conftest import PASSWORD, Account, World, stored_state


def register(client: TestClient, username: str, password: str = PASSWORD):
    return client.post("/v1/auth/register", json={"username": username, "password": password})


def login(client: TestClient, username: str, password: str = PASSWORD):
    return client.post("/v1/auth/login", json={"username": username, "password": password})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_health_needs_no_account(client: TestClient) -> None:
    response = client.get("/v1/health")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_register_login_me_logout(client: TestClient) -> None:
    created = register(client, "alice")
    assert created.status_code == 201
    user = created.json()
    assert (user["username"], user["is_admin"]) == ("alice", False)
    assert "password" not in created.text

    session = login(client, "alice")
    assert session.status_code == 200
    body = session.json()
    assert body["token_type"] == "bearer"
    assert body["user"]["id"] == user["id"]
    assert body["expires_at"].endswith("Z")
    headers = bearer(body["access_token"])

    me = client.get("/v1/me", headers=headers)
    assert me.status_code == 200
    assert me.json()["id"] == user["id"]
    assert me.json()["storage_used_bytes"] == 0
    assert me.json()["storage_quota_bytes"] == 50 * 2**20

    assert client.post("/v1/auth/logout", headers=headers).status_code == 204
    after = client.get("/v1/me", headers=headers)
    assert after.status_code == 401
    assert after.json()["code"] == "unauthorized"


def test_login_is_case_insensitive_on_the_username(client: TestClient) -> None:
    register(client, "Alice")

    assert login(client, "alice").status_code == 200


def test_wrong_password_and_unknown_user_get_the_same_answer(client: TestClient) -> None:
    register(client, "alice")

    wrong = login(client, "alice", "not-the-password")
    unknown = login(client, "nobody", PASSWORD)

    for response in (wrong, unknown):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["code"] == "unauthorized"
    assert wrong.json()["detail"] == unknown.json()["detail"]


def test_duplicate_username_is_a_conflict(client: TestClient) -> None:
    register(client, "alice")

    response = register(client, "ALICE")

    assert response.status_code == 409
    assert (response.json()["code"], response.json()["field"]) == ("conflict", "username")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"username": "al", "password": PASSWORD}, "username", id="short-username"),
        pytest.param({"username": "al ice", "password": PASSWORD}, "username", id="space-in-username"),
        pytest.param({"username": "alice", "password": "short"}, "password", id="short-password"),
        pytest.param({"username": "alice", "password": "x" * 73}, "password", id="long-password"),
        pytest.param({"username": "alice"}, "password", id="missing-password"),
    ],
)
def test_register_validates(world: World, body: dict, field: str) -> None:
    before = stored_state(world.services)

    response = world.client.post("/v1/auth/register", json=body)

    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "invalid_input"
    assert field in [error["field"] for error in problem["errors"]]
    assert stored_state(world.services) == before


def test_multibyte_password_over_72_bytes_is_refused(client: TestClient) -> None:
    response = register(client, "alice", "é" * 40)  # 40 characters, 80 bytes: bcrypt would ignore the rest

    assert response.status_code == 422
    assert response.json()["field"] == "password"


@pytest.mark.parametrize("settings_overrides", [{"allow_registration": False}])
def test_registration_can_be_closed(client: TestClient) -> None:
    response = register(client, "alice")

    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param({"Authorization": "Bearer"}, id="empty"),
        pytest.param({"Authorization": "Basic YWxpY2U6cGFzc3dvcmQ="}, id="basic"),
        pytest.param({"Authorization": "Bearer cfs_not-a-real-token"}, id="unknown"),
        pytest.param({"Authorization": "Bearer " + "x" * 300}, id="too-long"),
    ],
)
def test_bad_credentials_are_unauthorized(world: World, headers: dict[str, str]) -> None:
    response = world.client.get("/v1/models", headers=headers)

    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


# --- API tokens ---------------------------------------------------------------------------------------------


def test_api_token_secret_is_shown_once_and_works(client: TestClient, alice: Account) -> None:
    created = client.post("/v1/tokens", json={"name": "my script", "expires_in_days": 30}, headers=alice.headers)

    assert created.status_code == 201
    token = created.json()
    assert token["secret"].startswith("cfy_")
    assert token["hint"] == token["secret"][:8]
    assert client.get("/v1/me", headers=bearer(token["secret"])).json()["id"] == alice.id

    listed = client.get("/v1/tokens", headers=alice.headers)
    assert listed.json()["count"] == 1
    (public,) = listed.json()["data"]
    assert (public["id"], public["name"], public["revoked_at"]) == (token["id"], "my script", None)
    assert "secret" not in public
    assert token["secret"] not in listed.text
    assert public["last_used_at"] is not None  # it was used above


def test_token_lifetime_is_capped(client: TestClient, alice: Account, services: Services) -> None:
    created = client.post("/v1/tokens", json={"name": "forever", "expires_in_days": None}, headers=alice.headers)

    assert created.status_code == 201
    (token,) = services.catalog.call_sync(catalog_users.list_tokens, alice.id)
    lifetime = token.expires_at - token.created_at
    assert (
        timedelta(days=services.settings.token_max_days - 1)
        < lifetime
        <= timedelta(days=services.settings.token_max_days)
    )


def test_revoked_token_is_refused(client: TestClient, alice: Account) -> None:
    token = client.post("/v1/tokens", json={"name": "ci"}, headers=alice.headers).json()
    assert client.get("/v1/me", headers=bearer(token["secret"])).status_code == 200  # remembered by the API now

    revoked = client.delete(f"/v1/tokens/{token['id']}", headers=alice.headers)

    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    refused = client.get("/v1/me", headers=bearer(token["secret"]))
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]
    assert client.get("/v1/me", headers=alice.headers).status_code == 200  # the session is untouched


def test_expired_token_is_refused(client: TestClient, alice: Account, services: Services) -> None:
    secret, token_hash, hint = new_token("api")
    services.catalog.call_sync(
        catalog_users.create_token,
        alice.id,
        name="old",
        kind="api",
        token_hash=token_hash,
        hint=hint,
        expires_at=utcnow() - timedelta(seconds=1),
    )

    response = client.get("/v1/me", headers=bearer(secret))

    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_someone_elses_token_cannot_be_revoked(client: TestClient, alice: Account, bob: Account) -> None:
    token = client.post("/v1/tokens", json={"name": "ci"}, headers=alice.headers).json()

    response = client.delete(f"/v1/tokens/{token['id']}", headers=bob.headers)

    assert response.status_code == 404
    assert client.get("/v1/me", headers=bearer(token["secret"])).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"name": ""}, id="empty-name"),
        pytest.param({"name": "ci", "expires_in_days": 0}, id="zero-days"),
    ],
)
def test_token_validation(world: World, body: dict) -> None:
    before = stored_state(world.services)

    response = world.client.post("/v1/tokens", json=body, headers=world.alice.headers)

    assert response.status_code == 422
    assert stored_state(world.services) == before


# --- errors in general --------------------------------------------------------------------------------------


def test_unknown_route_is_a_problem(client: TestClient) -> None:
    response = client.get("/v1/nothing-here")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "not_found"
    assert response.json()["instance"] == "/v1/nothing-here"


def test_wrong_method_is_a_problem(client: TestClient) -> None:
    response = client.put("/v1/health")

    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


def test_malformed_json_is_a_problem(client: TestClient) -> None:
    response = client.post("/v1/auth/register", content=b"{not json", headers={"Content-Type": "application/json"})

    assert response.status_code == 422
    assert response.json()["code"] == "invalid_input"


def test_unexpected_error_is_opaque(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    from serve.api import create_api

    async def broken(*args, **kwargs):
        raise RuntimeError("secret database path /srv/catalog.duckdb")

    monkeypatch.setattr(services.catalog, "call", broken)
    with TestClient(create_api(services), raise_server_exceptions=False) as client:
        response = client.get("/v1/health")

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "internal"
    assert problem["error_id"] in problem["detail"]
    assert "secret" not in response.text
    assert "Traceback" not in response.text


@pytest.mark.parametrize("settings_overrides", [{"max_upload_bytes": 1000}])
def test_body_over_the_upload_limit_is_refused_before_reading(client: TestClient, alice: Account) -> None:
    response = client.post(
        "/v1/models/mdl_x/imports",
        content=b"\0" * 1001,
        headers={**alice.headers, "Content-Type": "application/zip"},
    )

    assert response.status_code == 413
    assert response.json()["code"] == "too_large"


@pytest.mark.parametrize("settings_overrides", [{"max_upload_bytes": 1000}])
def test_declared_content_length_alone_is_refused(client: TestClient) -> None:
    # The declared length decides: the middleware answers before the body is read.
    request = client.build_request("POST", "/v1/auth/login", content=b"{}")
    request.headers["Content-Length"] = str(10**9)

    response = client.send(request)

    assert response.status_code == 413
    assert response.json()["code"] == "too_large"
