"""A real local Ray with the Serve application, once per test module, reached over real HTTP."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from cluster.config import Settings

SERVE_START_DEADLINE_S = 240
# The platform runs Ray with token authentication; the tests do too (see cluster/cli.py).
os.environ.setdefault("RAY_AUTH_MODE", "token")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, deadline_s: float, what: str, interval_s: float = 0.2):
    """Poll `predicate` until it returns something truthy; fail with `what` after the deadline."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {deadline_s:.0f} s waiting for {what}")


@dataclass
class Platform:
    settings: Settings
    url: str
    http: httpx.Client

    def login(self, username: str, password: str = "password123", register: bool = True) -> dict[str, str]:
        if register:
            created = self.http.post("/v1/auth/register", json={"username": username, "password": password})
            assert created.status_code == 201, created.text
        session = self.http.post("/v1/auth/login", json={"username": username, "password": password})
        assert session.status_code == 200, session.text
        return {"Authorization": f"Bearer {session.json()['access_token']}"}

    def wait_for_job(self, headers: dict[str, str], job_url: str, deadline_s: float = 120) -> dict:
        def final():
            job = self.http.get(job_url, headers=headers).json()
            return job if job["status"] not in ("queued", "running") else None

        return wait_until(final, deadline_s, f"job {job_url} to finish")

    def wait_for_run(self, headers: dict[str, str], run_url: str, deadline_s: float = 600) -> dict:
        """The training run at `run_url` once it is no longer queued or running."""

        def final():
            run = self.http.get(run_url, headers=headers).json()
            return run if run["status"] not in ("queued", "running") else None

        return wait_until(final, deadline_s, f"run {run_url} to finish", interval_s=1)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """Ray (fresh local cluster), the catalog actor, and the Serve app on a free port."""
    from cluster.runtime import in_process_platform

    port = free_port()
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("platform"), api_port=port, environment="test", ray_namespace=f"test-{port}"
    )
    with (
        in_process_platform(settings, deadline_s=SERVE_START_DEADLINE_S) as url,
        httpx.Client(base_url=url, timeout=60) as http,
    ):
        yield Platform(settings, url, http)
