"""The REST API in-process: FastAPI's TestClient over local services (in-memory catalog, blobs under tmp_path).

Each test gets fresh services (`client`, `services`, `alice`, `bob`, `model_id`). Tables of requests that must
be refused without changing anything share one API per module instead (`world`): every such test asserts
that the stored state is unchanged, so sharing cannot hide a leak between them.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import bcrypt
import httpx
import pytest
from fastapi.testclient import TestClient

from cluster import security
from cluster.blobs import PACKS, BlobRef
from cluster.catalog import models as catalog_models
from cluster.catalog import users as catalog_users
from cluster.catalog.db import utcnow
from cluster.catalog.models import ModelSpec
from cluster.config import Settings
from cluster.services import Services, local_services
from serve.api import create_api
from serve.classifier import Classifier

PASSWORD = "password123"
FINAL_JOB_STATES = ("succeeded", "failed", "interrupted", "cancelled")
TEST_LIMITS: dict[str, object] = {
    "catalog_path": ":memory:",
    "environment": "test",
    "quota_bytes": 50 * 2**20,
    "max_upload_bytes": 20 * 2**20,
    "max_image_bytes": 2 * 2**20,
    "import_batch_size": 8,
}


@pytest.fixture(autouse=True)
def fast_bcrypt(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Speed only: bcrypt's default cost takes ~0.25 s a hash, and many tests here register users.

    The real cost is exercised by the integration tests. The cached dummy hash (used for unknown users) is
    cleared on both sides so no cheap hash outlives these tests.
    """
    real_gensalt = bcrypt.gensalt
    monkeypatch.setattr(bcrypt, "gensalt", lambda rounds=12, prefix=b"2b": real_gensalt(4, prefix))
    security.dummy_hash.cache_clear()
    yield
    security.dummy_hash.cache_clear()


def build_settings(data_dir: Path, **overrides: object) -> Settings:
    """Test settings that no CLASSIFLY_ variable or .env file of the developer's can change."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.upper().startswith("CLASSIFLY_"):
                patch.delenv(name)
        return Settings(_env_file=None, data_dir=data_dir, **{**TEST_LIMITS, **overrides})


@contextmanager
def running_services(settings: Settings) -> Iterator[Services]:
    built = local_services(settings)
    try:
        yield built
    finally:
        built.jobs.wait()  # no import thread may outlive its catalog
        built.catalog.close()


def _problem_responses_are_clean(response: httpx.Response) -> None:
    """Every error the API answers is problem+json and never leaks a traceback (checked on every call)."""
    if response.status_code < 400:
        return
    response.read()
    content_type = response.headers.get("content-type", "")
    assert content_type.startswith("application/problem+json"), (response.status_code, content_type, response.text)
    assert "Traceback" not in response.text
    body = response.json()
    assert body["status"] == response.status_code
    assert body["code"] and body["title"] and body["detail"]


@contextmanager
def api_client(services: Services, classifier: Classifier | None = None) -> Iterator[TestClient]:
    with TestClient(create_api(services, classifier)) as test_client:
        test_client.event_hooks["response"].append(_problem_responses_are_clean)
        yield test_client


@dataclass(frozen=True)
class Account:
    id: str
    username: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@functools.cache
def password_hash() -> str:
    """PASSWORD hashed once for the session, at bcrypt's lowest cost (see fast_bcrypt)."""
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()


def create_account(services: Services, username: str, *, is_admin: bool = False) -> Account:
    """An account with a session token, made in the catalog directly: each HTTP request costs tens of
    milliseconds here, and registering and signing in over HTTP is what test_api_auth.py tests."""
    user = services.catalog.call_sync(catalog_users.create_user, username, password_hash(), is_admin=is_admin)
    secret, token_hash, hint = security.new_token("session")
    services.catalog.call_sync(
        catalog_users.create_token,
        user.id,
        name="session",
        kind="session",
        token_hash=token_hash,
        hint=hint,
        expires_at=utcnow() + timedelta(hours=1),
    )
    return Account(user.id, username, secret)


def create_model(services: Services, owner: Account, name: str = "flowers") -> str:
    return services.catalog.call_sync(catalog_models.create_model, owner.id, ModelSpec(name)).id


def stored_state(services: Services) -> dict[str, list]:
    """Every catalog row and stored file, read directly: what a refused request must leave as it was."""
    conn = services.catalog.conn  # read between requests, while no import thread runs
    tables = ("users", "models", "classes", "images", "blobs", "jobs", "counters", "model_versions")
    queries = {table: f"SELECT * FROM {table}" for table in tables}
    queries["tokens"] = "SELECT id, user_id, revoked_at FROM tokens"  # last_used_at moves with every request
    state = {name: sorted(conn.execute(sql).fetchall(), key=repr) for name, sql in queries.items()}
    state["files"] = sorted(services.blobs.iter_keys(""))
    state["file_sizes"] = [services.blobs.size(key) for key in state["files"]]  # packs only ever grow
    return state


def pack_files(services: Services) -> list[str]:
    """The keys of every pack file in the store."""
    return sorted(services.blobs.iter_keys(PACKS))


def pack_bytes(services: Services) -> int:
    """Bytes of pictures in all packs together: what the store holds for pictures, referenced or not."""
    return sum(services.blobs.size(key) for key in pack_files(services))


def blob_rows(services: Services) -> dict[str, BlobRef]:
    """Where the catalog says each stored picture lies, read directly."""
    rows = services.catalog.conn.execute("SELECT sha256, pack, pack_offset, length FROM blobs").fetchall()
    return {sha: BlobRef(pack, offset, length) for sha, pack, offset, length in rows}


# --- one fresh API per test ---------------------------------------------------------------------------------


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    """Parametrize this (`@pytest.mark.parametrize("settings_overrides", [{...}])`) to change a limit."""
    return {}


@pytest.fixture
def settings(tmp_path: Path, settings_overrides: dict[str, object]) -> Settings:
    return build_settings(tmp_path / "data", **settings_overrides)


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    with running_services(settings) as built:
        yield built


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with api_client(services) as test_client:
        yield test_client


@pytest.fixture
def make_account(services: Services) -> Callable[[str], Account]:
    return functools.partial(create_account, services)


@pytest.fixture
def alice(services: Services) -> Account:
    return create_account(services, "alice")


@pytest.fixture
def bob(services: Services) -> Account:
    return create_account(services, "bob")


@pytest.fixture
def model_id(services: Services, alice: Account) -> str:
    """An empty model of alice's."""
    return create_model(services, alice)


@pytest.fixture
def wait_for_job(client: TestClient) -> Callable[..., dict]:
    """Poll a job's URL until it is final (a deadline, not a fixed sleep); returns the job."""

    def wait(url: str, headers: dict[str, str], deadline_s: float = 20.0) -> dict:
        end = time.monotonic() + deadline_s
        while True:
            job = client.get(url, headers=headers).json()
            if job["status"] in FINAL_JOB_STATES:
                return job
            if time.monotonic() > end:
                raise AssertionError(f"job {url} still {job['status']} after {deadline_s} s: {job['message']}")
            time.sleep(0.02)

    return wait


# --- one API per module, for requests that must change nothing ----------------------------------------------


@dataclass(frozen=True)
class World:
    services: Services
    client: TestClient
    alice: Account
    bob: Account
    model_id: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """alice with an empty model, and bob, on one API shared by a module's refusal tables."""
    settings = build_settings(tmp_path_factory.mktemp("world"))
    with running_services(settings) as services, api_client(services) as client:
        alice = create_account(services, "alice")
        yield World(services, client, alice, create_account(services, "bob"), create_model(services, alice))
