"""`classifly up / status / admin create-user / down` as a person runs them, on its own Ray and ports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import free_port

pytestmark = pytest.mark.ray


def classifly(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=400,
    )


def test_up_status_create_admin_and_down(tmp_path: Path) -> None:
    api_port, ray_port, dashboard_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "CLASSIFLY_DATA_DIR": str(tmp_path / "data"),
        "CLASSIFLY_API_PORT": str(api_port),
        "CLASSIFLY_RAY_PORT": str(ray_port),
        "CLASSIFLY_DASHBOARD_PORT": str(dashboard_port),
        "CLASSIFLY_RAY_NAMESPACE": "cli-test",
        "CLASSIFLY_RAY_NUM_CPUS": "2",
    }
    env.pop("RAY_ADDRESS", None)
    try:
        started = classifly(env, "up", "--no-ui")
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"http://127.0.0.1:{api_port}" in started.stdout
        assert f"http://127.0.0.1:{dashboard_port}" in started.stdout

        status = classifly(env, "status")
        assert status.returncode == 0, status.stdout
        assert "healthy" in status.stdout

        created = classifly(env, "admin", "create-user", "root", "--admin", "--password-stdin", stdin="s3cret-pass\n")
        assert created.returncode == 0, created.stdout + created.stderr
        assert "administrator 'root'" in created.stdout

        login = httpx.post(
            f"http://127.0.0.1:{api_port}/v1/auth/login", json={"username": "root", "password": "s3cret-pass"}
        )
        assert login.status_code == 200 and login.json()["user"]["is_admin"] is True

        checked = classifly(env, "doctor")  # found through run/platform.json: the catalog actor answers
        assert checked.returncode == 0 and "through the running platform" in checked.stdout, checked.stdout
    finally:
        stopped = classifly(env, "down")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    after = classifly(env, "status")
    assert after.returncode == 1 and "not running" in after.stdout
    assert (tmp_path / "data" / "catalog.duckdb").exists()
    checked = classifly(env, "doctor")
    assert checked.returncode == 0 and "platform down" in checked.stdout, checked.stdout
    assert "1 users" in checked.stdout
