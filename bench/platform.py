"""The platform as the benchmarks drive it: a fresh in-process platform, and the REST calls a user's script makes."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The platform runs Ray with token authentication (cluster/cli.py); so do the benchmarks.
os.environ.setdefault("RAY_AUTH_MODE", "token")

SERVE_START_DEADLINE_S = 240.0
PASSWORD = "bench-password-123"


@dataclass
class Platform:
    url: str
    http: Any  # httpx.Client
    start_seconds: float
    settings: Any = None  # cluster.config.Settings of the platform (blob store, Ray namespace)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def start_platform(work_dir: Path, timeout_s: float = 300) -> Iterator[Platform]:
    """A fresh local Ray (2 CPUs at most), the catalog and the Serve app on a free port; all stopped on exit."""
    import httpx

    from cluster.config import Settings
    from cluster.runtime import in_process_platform

    port = free_port()
    settings = Settings(
        data_dir=work_dir / "platform", api_port=port, environment="test", ray_namespace=f"bench-{port}"
    )
    started = time.perf_counter()
    with (
        in_process_platform(settings, num_cpus=min(2, os.cpu_count() or 1), deadline_s=SERVE_START_DEADLINE_S) as url,
        httpx.Client(base_url=url, timeout=timeout_s) as http,
    ):
        yield Platform(url, http, time.perf_counter() - started, settings)


def check(response: Any, expected: int, what: str) -> dict[str, Any]:
    """The JSON body of a response with the expected status; RuntimeError with the body otherwise."""
    if response.status_code != expected:
        raise RuntimeError(f"{what}: HTTP {response.status_code} {response.text[:500]}")
    return response.json()


def new_user(platform: Platform, username: str) -> dict[str, str]:
    """Register `username`, log in; the Authorization header of the session."""
    http = platform.http
    check(http.post("/v1/auth/register", json={"username": username, "password": PASSWORD}), 201, "register")
    session = check(http.post("/v1/auth/login", json={"username": username, "password": PASSWORD}), 200, "login")
    return {"Authorization": f"Bearer {session['access_token']}"}
