"""A user's own machine as a runner: `classifly runner join` / `leave` (see docs/CLUSTER.md, "Runners").

Joining checks the user's API token against the API (`GET /v1/me`) to learn whose runner this is, then starts
a Ray node on this machine with no CPUs or GPUs for anyone and only ``runner_<user id>`` (cluster/resources.py):
only that user's training trials ask for it, so nobody else's work can be placed here.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from cluster.resources import runner_start_command
from pipelines.errors import InvalidInput, Unauthorized, Unavailable


@dataclass(frozen=True)
class Owner:
    id: str
    username: str


def whoami(api_url: str, token: str, client: httpx.Client | None = None) -> Owner:
    """The user an API token belongs to, asked of the API itself."""
    http = client or httpx.Client(timeout=15)
    try:
        response = http.get(f"{api_url.rstrip('/')}/v1/me", headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as error:
        raise Unavailable(f"The API at {api_url} did not answer ({type(error).__name__}). Check --api.") from None
    if response.status_code in (401, 403):
        raise Unauthorized("The API refused this token. Create an API token on the Tokens page and pass it.")
    if response.status_code != 200:
        raise Unavailable(f"The API at {api_url} answered {response.status_code}.")
    body = response.json()
    return Owner(id=body["id"], username=body["username"])


def join(
    address: str,
    token: str,
    api_url: str,
    *,
    cpus: float | None = None,
    ray_token: str = "",
    ray_exe: str = "ray",
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
    client: httpx.Client | None = None,
) -> tuple[Owner, float]:
    """Make this machine the token owner's runner on the Ray cluster at `address`; returns (owner, CPUs)."""
    if not address:
        raise InvalidInput("Give the cluster's address: --address HEAD_IP:6379.")
    owner = whoami(api_url, token, client)
    cpus = float(cpus or os.cpu_count() or 1)
    if cpus <= 0:
        raise InvalidInput("--cpus must be more than 0.")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if ray_token:
        env["RAY_AUTH_TOKEN"] = ray_token
    result = run(runner_start_command(ray_exe, address, owner.id, cpus), capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"This machine could not join the cluster:\n{result.stdout}\n{result.stderr}")
    return owner, cpus


def leave(*, ray_exe: str = "ray", run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> None:
    """Take this machine out of the cluster (stops the Ray node `join` started here). A trial that was running
    here starts again on another of the user's runners, or waits for one until the run's time budget ends."""
    result = run([ray_exe, "stop"], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"Ray did not stop:\n{result.stdout}\n{result.stderr}")
