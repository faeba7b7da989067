"""The web UI's service routes: only a service token opens them, and a service token opens nothing else."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from cluster import security
from cluster.catalog import users as catalog_users
from cluster.catalog.db import utcnow
from cluster.services import Services
from pipelines.errors import Conflict
from tests.component.conftest import PASSWORD, Account, password_hash, stored_state

SERVICE_ROUTES = [
    pytest.param("GET", "/v1/service/accounts", None, id="accounts"),
    pytest.param("POST", "/v1/service/sessions", {"username": "alice"}, id="sessions"),
]


def service_token(services: Services) -> str:
    secret, token_hash, hint = security.new_token("service")
    services.catalog.call_sync(catalog_users.ensure_service_token, token_hash, hint)
    return secret


def api_token(services: Services, account: Account) -> str:
    secret, token_hash, hint = security.new_token("api")
    services.catalog.call_sync(
        catalog_users.create_token,
        account.id,
        name="script",
        kind="api",
        token_hash=token_hash,
        hint=hint,
        expires_at=utcnow() + timedelta(days=1),
    )
    return secret


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(("method", "path", "body"), SERVICE_ROUTES)
@pytest.mark.parametrize("caller", ["none", "session", "api"])
def test_service_routes_refuse_every_other_token(
    client: TestClient, services: Services, alice: Account, caller: str, method: str, path: str, body
) -> None:
    service_token(services)  # one exists, so the refusal is about the caller's token, not a missing service
    headers = {"none": {}, "session": alice.headers, "api": bearer(api_token(services, alice))}[caller]
    before = stored_state(services)

    response = client.request(method, path, json=body, headers=headers)

    assert response.status_code == (401 if caller == "none" else 403)
    assert response.json()["code"] == ("unauthorized" if caller == "none" else "forbidden")
    assert "password" not in response.text and "$2" not in response.text
    after = stored_state(services)
    assert after == before


def test_accounts_lists_sign_in_hashes_but_not_the_service_user(
    client: TestClient, services: Services, alice: Account
) -> None:
    services.catalog.call_sync(catalog_users.create_user, "root", password_hash(), is_admin=True)

    response = client.get("/v1/service/accounts", headers=bearer(service_token(services)))

    assert response.status_code == 200
    accounts = {a["username"]: a for a in response.json()["data"]}
    assert set(accounts) == {"alice", "root"}
    assert accounts["alice"]["password_hash"] == password_hash()
    assert security.verify_password(PASSWORD, accounts["alice"]["password_hash"])
    assert (accounts["alice"]["is_admin"], accounts["root"]["is_admin"]) == (False, True)


def test_session_for_a_verified_user_is_a_normal_session(
    client: TestClient, services: Services, alice: Account
) -> None:
    response = client.post("/v1/service/sessions", json={"username": "ALICE"}, headers=bearer(service_token(services)))

    assert response.status_code == 200
    session = response.json()
    assert session["user"]["id"] == alice.id and session["access_token"].startswith("cfs_")
    me = client.get("/v1/me", headers=bearer(session["access_token"]))
    assert me.status_code == 200 and me.json()["username"] == "alice"
    assert client.post("/v1/auth/logout", headers=bearer(session["access_token"])).status_code == 204


@pytest.mark.parametrize("username", ["nobody", catalog_users.SERVICE_USERNAME])
def test_no_session_for_unknown_users_or_the_service_user(
    client: TestClient, services: Services, username: str
) -> None:
    secret = service_token(services)
    before = stored_state(services)

    response = client.post("/v1/service/sessions", json={"username": username}, headers=bearer(secret))

    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert stored_state(services) == before


def test_service_token_opens_no_user_route(client: TestClient, services: Services) -> None:
    headers = bearer(service_token(services))

    for method, path in (("GET", "/v1/me"), ("GET", "/v1/models"), ("POST", "/v1/tokens")):
        response = client.request(method, path, headers=headers, json={"name": "x"})
        assert response.status_code == 403, (path, response.text)


def test_a_new_service_token_revokes_the_last_one(client: TestClient, services: Services) -> None:
    old, new = service_token(services), service_token(services)

    assert client.get("/v1/service/accounts", headers=bearer(old)).status_code == 401
    assert client.get("/v1/service/accounts", headers=bearer(new)).status_code == 200


def test_nobody_signs_in_as_the_service_user(client: TestClient, services: Services) -> None:
    service_token(services)
    for password in ("", "!service-account-no-password", PASSWORD):
        response = client.post(
            "/v1/auth/login", json={"username": catalog_users.SERVICE_USERNAME, "password": password}
        )
        assert response.status_code in (401, 422)


def test_an_account_that_took_the_service_name_is_not_made_the_service_user(services: Services) -> None:
    services.catalog.call_sync(catalog_users.create_user, catalog_users.SERVICE_USERNAME, password_hash())

    with pytest.raises(Conflict, match="reserved"):
        service_token(services)


def test_service_routes_are_not_in_the_public_api_docs(client: TestClient) -> None:
    assert "/v1/service" not in client.get("/openapi.json").text
