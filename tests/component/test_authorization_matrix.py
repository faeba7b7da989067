"""Every endpoint x every kind of caller: who gets in, and that no one sees or changes what is not theirs.

The endpoints are read from the app itself (hidden ones included), so a new endpoint fails
`test_every_endpoint_is_classified` until it is added to ENDPOINTS with the answer its owner gets.
Callers: no token, a malformed one, an expired one, a revoked one, another user's, the owner's, an admin's
(an administrator has no special access to other people's data: their ids are 'not found' for them too).
"""

from __future__ import annotations

import io
import itertools
import json
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from cluster import security
from cluster.batch import results_key
from cluster.catalog import jobs as catalog_jobs
from cluster.catalog import runs as catalog_runs
from cluster.catalog import tasks as catalog_tasks
from cluster.catalog import users as catalog_users
from cluster.catalog.db import new_id, utcnow
from cluster.catalog.tasks import NewTask
from cluster.services import Services
from serve.api import create_api
from tests.component.conftest import (
    PASSWORD,
    Account,
    api_client,
    build_settings,
    create_account,
    create_model,
    running_services,
    stored_state,
)
from tests.component.test_api_classify import FakeClassifier, publish
from tests.factories import make_image

Kind = Literal["public", "user", "owned", "service", "admin"]
CALLERS = ("none", "malformed", "expired", "revoked", "other", "owner", "admin")
ANONYMOUS = ("none", "malformed", "expired", "revoked")
_names = itertools.count()


@dataclass(frozen=True)
class Garden:
    """Ids of one user's resources, filled into paths and bodies."""

    model_id: str
    class_name: str = "roses"
    image_id: int = 999_999_999
    version: int = 1
    run_id: str = "run_000000000000"
    task_id: str = "tsk_000000000000"
    job_id: str = "job_000000000000"
    token_id: str = "tok_000000000000"
    image_sha256: str = ""

    def secrets(self) -> list[str]:
        """What another account must never read anywhere."""
        return [self.model_id, self.run_id, self.task_id, self.job_id, self.token_id, self.image_sha256]


MISSING = Garden(model_id="mdl_000000000000")


def _zip(*names: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for number, name in enumerate(names):
            archive.writestr(name, make_image((20, 200, 20), (8, 8), mark=5000 + number))
    return buffer.getvalue()


ZIP = _zip("sky/a.png", "sky/b.png")
Request = Callable[[Garden], dict[str, Any]]


def picture(mark: int) -> bytes:
    return make_image((220, 20, 20), (16, 16), mark=mark)


def _upload(g: Garden) -> dict[str, Any]:
    return {"data": {"label": "weeds"}, "files": [("files", ("w.png", picture(next(_names) + 100_000), "image/png"))]}


def _sample(g: Garden) -> dict[str, Any]:
    return {"files": {"file": ("s.png", picture(next(_names) + 200_000), "image/png")}}


def _zip_body(g: Garden) -> dict[str, Any]:
    return {"content": ZIP, "headers": {"Content-Type": "application/zip"}}


def _register(g: Garden) -> dict[str, Any]:
    return {"json": {"username": f"newcomer{next(_names)}", "password": PASSWORD}}


def _classify(g: Garden) -> dict[str, Any]:
    return {"files": [("files", ("r.png", picture(7), "image/png"))]}


def _classify_many(g: Garden) -> dict[str, Any]:
    return {"files": {"file": ("r.png", picture(7), "image/png")}, "data": {"model_ids": [g.model_id]}}


@dataclass(frozen=True)
class Endpoint:
    kind: Kind
    owner: int  # the status the rightful caller gets for this request
    request: Request = field(default=lambda g: {})


ENDPOINTS: dict[tuple[str, str], Endpoint] = {
    ("GET", "/v1/health"): Endpoint("public", 200),
    ("POST", "/v1/auth/register"): Endpoint("public", 201, _register),
    ("POST", "/v1/auth/login"): Endpoint(
        "public", 200, lambda g: {"json": {"username": "alice", "password": PASSWORD}}
    ),
    ("POST", "/v1/auth/logout"): Endpoint("user", 204),
    ("GET", "/v1/me"): Endpoint("user", 200),
    ("GET", "/v1/me/storage"): Endpoint("user", 200),
    ("GET", "/v1/me/storage/cleanup"): Endpoint("user", 200),
    ("POST", "/v1/me/storage/cleanup"): Endpoint("user", 200, lambda g: {"json": {"free_bytes": 1}}),
    ("GET", "/v1/tokens"): Endpoint("user", 200),
    ("POST", "/v1/tokens"): Endpoint("user", 201, lambda g: {"json": {"name": "ci"}}),
    ("DELETE", "/v1/tokens/{token_id}"): Endpoint("owned", 200),
    ("POST", "/v1/models"): Endpoint("user", 201, lambda g: {"json": {"name": "mine"}}),
    ("GET", "/v1/models"): Endpoint("user", 200),
    ("GET", "/v1/models/{model_id}"): Endpoint("owned", 200),
    ("PATCH", "/v1/models/{model_id}"): Endpoint("owned", 200, lambda g: {"json": {"name": "renamed"}}),
    ("DELETE", "/v1/models/{model_id}"): Endpoint("owned", 204),
    ("PUT", "/v1/models/{model_id}/sample"): Endpoint("owned", 200, _sample),
    ("GET", "/v1/models/{model_id}/sample"): Endpoint("owned", 200),
    ("GET", "/v1/models/{model_id}/classes"): Endpoint("owned", 200),
    ("POST", "/v1/models/{model_id}/classes"): Endpoint("owned", 201, lambda g: {"json": {"name": "weeds"}}),
    ("GET", "/v1/models/{model_id}/classes/{class_name}"): Endpoint("owned", 200),
    ("PATCH", "/v1/models/{model_id}/classes/{class_name}"): Endpoint("owned", 200, lambda g: {"json": {"name": "x"}}),
    ("DELETE", "/v1/models/{model_id}/classes/{class_name}"): Endpoint("owned", 204),
    ("POST", "/v1/models/{model_id}/images"): Endpoint("owned", 201, _upload),
    ("GET", "/v1/models/{model_id}/images"): Endpoint("owned", 200),
    ("GET", "/v1/models/{model_id}/images/{image_id}"): Endpoint("owned", 200),
    ("PATCH", "/v1/models/{model_id}/images/{image_id}"): Endpoint("owned", 200, lambda g: {"json": {"split": "test"}}),
    ("DELETE", "/v1/models/{model_id}/images/{image_id}"): Endpoint("owned", 204),
    ("GET", "/v1/models/{model_id}/images/{image_id}/content"): Endpoint("owned", 200),
    ("GET", "/v1/models/{model_id}/images/{image_id}/thumbnail"): Endpoint("owned", 200),
    ("POST", "/v1/models/{model_id}/images/delete"): Endpoint("owned", 204, lambda g: {"json": {"ids": [g.image_id]}}),
    ("POST", "/v1/models/{model_id}/imports"): Endpoint("owned", 202, _zip_body),
    ("GET", "/v1/models/{model_id}/imports"): Endpoint("owned", 200),
    ("POST", "/v1/models/{model_id}/classify-batch"): Endpoint("owned", 202, _zip_body),
    ("GET", "/v1/models/{model_id}/dataset"): Endpoint("owned", 200),
    ("POST", "/v1/models/{model_id}/train"): Endpoint("owned", 202, lambda g: {"json": {}}),
    ("GET", "/v1/models/{model_id}/runs"): Endpoint("owned", 200),
    ("GET", "/v1/runs/{run_id}"): Endpoint("owned", 200),
    ("POST", "/v1/runs/{run_id}/cancel"): Endpoint("owned", 409),  # the garden's run has failed: nothing to cancel
    ("POST", "/v1/runs/{run_id}/resume"): Endpoint("owned", 202),
    ("GET", "/v1/models/{model_id}/versions"): Endpoint("owned", 200),
    ("GET", "/v1/models/{model_id}/versions/{version}"): Endpoint("owned", 200),
    ("POST", "/v1/models/{model_id}/versions/{version}/activate"): Endpoint("owned", 200),
    # The garden's version has no stored network (a fake artifact): the owner is told so, others get 'no model'.
    ("GET", "/v1/models/{model_id}/versions/{version}/export"): Endpoint("owned", 404),
    ("POST", "/v1/models/{model_id}/update"): Endpoint("owned", 202),
    ("GET", "/v1/models/{model_id}/updates"): Endpoint("owned", 200),
    ("POST", "/v1/models/{model_id}/classify"): Endpoint("owned", 200, _classify),
    ("POST", "/v1/classify"): Endpoint("owned", 200, _classify_many),
    ("GET", "/v1/tasks"): Endpoint("user", 200),
    ("GET", "/v1/tasks/{task_id}"): Endpoint("owned", 200),
    ("POST", "/v1/tasks/{task_id}/feedback"): Endpoint("owned", 200, lambda g: {"json": {"correct": True}}),
    ("GET", "/v1/jobs"): Endpoint("user", 200),
    ("GET", "/v1/jobs/{job_id}"): Endpoint("owned", 200),
    ("GET", "/v1/jobs/{job_id}/results"): Endpoint("owned", 200),
    ("GET", "/v1/models/{model_id}/stats"): Endpoint("owned", 200),
    ("GET", "/v1/service/accounts"): Endpoint("service", 200),
    ("POST", "/v1/service/sessions"): Endpoint("service", 200, lambda g: {"json": {"username": "alice"}}),
}
# Whole families classified by prefix: everything under /v1/admin/ is for administrators only.
PREFIXES: dict[str, Endpoint] = {"/v1/admin/": Endpoint("admin", 200)}


def app_endpoints() -> set[tuple[str, str]]:
    """(method, path) of every API route the app serves, including those hidden from the OpenAPI page."""
    with running_services(build_settings(_tmp_dir())) as services:
        app = create_api(services)
    found = set()
    for route in iter_route_contexts(app.routes):
        path, methods = route.path, route.methods or set()
        if path and path.startswith("/v1/"):
            found.update((method, path) for method in methods if method != "HEAD")
    return found


def _tmp_dir():
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp(prefix="classifly-routes-"))


def classify_endpoint(method: str, path: str) -> Endpoint | None:
    if (method, path) in ENDPOINTS:
        return ENDPOINTS[(method, path)]
    return next((rule for prefix, rule in PREFIXES.items() if path.startswith(prefix)), None)


ROUTES = sorted(app_endpoints())


def test_every_endpoint_is_classified() -> None:
    unclassified = [f"{method} {path}" for method, path in ROUTES if classify_endpoint(method, path) is None]
    stale = [f"{method} {path}" for method, path in ENDPOINTS if (method, path) not in ROUTES]
    assert not unclassified, f"add these endpoints to ENDPOINTS with the status their owner gets: {unclassified}"
    assert not stale, f"these endpoints no longer exist; remove them from ENDPOINTS: {stale}"


# --- the world: alice (owner), bob (another user), root (an administrator), the UI's service token ----------


@dataclass
class World:
    services: Services
    client: TestClient
    alice_id: str
    bob: Account
    root: Account
    tokens: dict[str, str]  # caller -> bearer secret, for the callers that do not change per test


def _token(services: Services, user_id: str, kind: str = "session", expires_in: timedelta = timedelta(hours=1)):
    secret, token_hash, hint = security.new_token(kind)
    record = services.catalog.call_sync(
        catalog_users.create_token,
        user_id,
        name=kind,
        kind=kind,
        token_hash=token_hash,
        hint=hint,
        expires_at=utcnow() + expires_in,
    )
    return secret, record


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    settings = build_settings(tmp_path_factory.mktemp("matrix"))
    with running_services(settings) as services, api_client(services, FakeClassifier()) as client:
        alice = create_account(services, "alice")
        bob = create_account(services, "bob")
        root = create_account(services, "root", is_admin=True)
        expired, _ = _token(services, alice.id, expires_in=timedelta(seconds=-1))
        revoked, record = _token(services, alice.id, "api")
        services.catalog.call_sync(catalog_users.revoke_token, alice.id, record.id)
        service_secret, service_hash, hint = security.new_token("service")
        services.catalog.call_sync(catalog_users.ensure_service_token, service_hash, hint)
        tokens = {
            "malformed": "cfs_ not a token!",
            "expired": expired,
            "revoked": revoked,
            "other": bob.token,
            "admin": root.token,
            "service": service_secret,
        }
        yield World(services, client, alice.id, bob, root, tokens)


def plant(world: World) -> tuple[Garden, str]:
    """A fresh model of alice's with two classes of pictures, a sample, a version, an interrupted run, a task,
    a finished classify-batch job with results, and an API token; returns it with a fresh session of hers."""
    services, client = world.services, world.client
    owner_token, _ = _token(services, world.alice_id)
    headers = {"Authorization": f"Bearer {owner_token}"}
    alice = Account(world.alice_id, "alice", owner_token)
    model_id = create_model(services, alice, f"garden {next(_names)}")
    base = next(_names) * 10
    for label in ("roses", "tulips"):
        files = [
            ("files", (f"{n}.png", picture(base + n + (5 if label == "tulips" else 0)), "image/png")) for n in range(5)
        ]
        uploaded = client.post(f"/v1/models/{model_id}/images", data={"label": label}, files=files, headers=headers)
        assert uploaded.status_code == 201, uploaded.text
        if label == "roses":
            first = uploaded.json()["results"][0]
    sample = client.put(
        f"/v1/models/{model_id}/sample", files={"file": ("s.png", picture(base + 9), "image/png")}, headers=headers
    )
    assert sample.status_code == 200, sample.text
    run = services.catalog.call_sync(catalog_runs.create_run, alice.id, model_id, {})
    services.catalog.call_sync(catalog_runs.finish_run, run.id, status="failed", error={"detail": "stopped"})
    publish(services, alice, model_id)
    task_id = new_id("tsk")
    top = [{"label": "red", "probability": 0.9}, {"label": "blue", "probability": 0.1}]
    services.catalog.call_sync(
        catalog_tasks.record_tasks, alice.id, model_id, [NewTask(task_id, 1, "red", 0.9, False, top, 3.0)]
    )
    job = services.catalog.call_sync(catalog_jobs.create_job, alice.id, "classify_batch", model_id=model_id)
    services.blobs.put(results_key(job.id), json.dumps({"results": [{"name": "a.png", "label": "red"}]}).encode())
    services.catalog.call_sync(catalog_jobs.finish_job, job.id, status="succeeded", message="done", result={})
    _, token = _token(services, alice.id, "api")
    sha = client.get(f"/v1/models/{model_id}/images/{first['image_id']}", headers=headers).json()["sha256"]
    garden = Garden(model_id, "roses", first["image_id"], 1, run.id, task_id, job.id, token.id, sha)
    return garden, owner_token


def _readable(response) -> str:
    """What the caller learns from an answer, less the problem's `instance` (their own request path)."""
    if response.headers.get("content-type", "").startswith("application/problem+json"):
        return json.dumps({key: value for key, value in response.json().items() if key != "instance"})
    return response.text


def fill(path: str, garden: Garden) -> str:
    return path.format(**{name: getattr(garden, name) for name in garden.__dataclass_fields__})


def call(world: World, method: str, path: str, endpoint: Endpoint, garden: Garden, token: str | None):
    kwargs = endpoint.request(garden)
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return world.client.request(method, fill(path, garden), headers=headers, **kwargs)


def _without(text: str, garden: Garden) -> str:
    for value in garden.secrets():
        if value:
            text = text.replace(value, "?")
    return re.sub(rf"\b{garden.image_id}\b", "?", text)


@pytest.fixture(scope="module")
def read_only_garden(world: World) -> tuple[Garden, str]:
    """One garden for every GET: reading changes nothing, so they can share it (planting costs ~15 requests)."""
    return plant(world)


@pytest.mark.parametrize(("method", "path"), [pytest.param(m, p, id=f"{m} {p}") for m, p in ROUTES])
def test_who_gets_in(world: World, read_only_garden: tuple[Garden, str], method: str, path: str) -> None:
    endpoint = classify_endpoint(method, path)
    assert endpoint is not None, "unclassified: see test_every_endpoint_is_classified"
    garden, owner_token = read_only_garden if method == "GET" else plant(world)
    services = world.services
    # Fresh tokens for the other callers too: a logout must not sign them out of the next test.
    tokens = {**world.tokens, "other": _token(services, world.bob.id)[0], "admin": _token(services, world.root.id)[0]}
    seen: dict[str, int] = {}
    before = stored_state(services)

    for caller in ANONYMOUS + ("other", "admin"):
        token = tokens.get(caller)
        response = call(world, method, path, endpoint, garden, token)
        seen[caller] = response.status_code
        if endpoint.kind == "public":
            continue
        if caller in ANONYMOUS:
            assert response.status_code == 401, (caller, response.text)
            assert response.headers["WWW-Authenticate"] == "Bearer"
        elif endpoint.kind == "owned":
            assert response.status_code == 404, (caller, response.text)
            missing = call(world, method, path, endpoint, MISSING, token)
            # Word for word what a missing id gets: nothing tells them alice's resource exists.
            assert (missing.status_code, _without(missing.json()["detail"], MISSING)) == (
                404,
                _without(response.json()["detail"], garden),
            ), (caller, missing.text, response.text)
        elif endpoint.kind == "service":
            assert response.status_code == 403, (caller, response.text)
        elif endpoint.kind == "admin":
            expected = endpoint.owner if caller == "admin" else 403
            assert response.status_code == expected, (caller, response.text)
        else:  # "user": they act on their own (empty) account
            assert response.status_code < 500 and response.status_code not in (401, 403, 404), (caller, response.text)
        # An id the caller sent may come back (in a 'not found' message); any other of alice's must not.
        sent = fill(path, garden) + repr(endpoint.request(garden))
        leaked = [value for value in garden.secrets() if value and value not in sent and value in _readable(response)]
        assert not leaked, f"{caller} read {leaked} of alice's in {response.text}"

    if endpoint.kind not in ("public", "user", "admin"):
        assert stored_state(services) == before, "a refused request changed something"

    rightful = world.tokens["service"] if endpoint.kind == "service" else owner_token
    if endpoint.kind == "admin":
        rightful = owner_token  # alice is no administrator
    response = call(world, method, path, endpoint, garden, rightful)
    services.jobs.wait()  # an import the owner started must not run into the next test's snapshots
    if endpoint.kind == "admin":
        assert response.status_code == 403, response.text
    else:
        assert response.status_code == endpoint.owner, response.text
    if endpoint.kind == "service":
        assert services.catalog.call_sync(catalog_users.get_user, world.alice_id) is not None
