"""Starting, inspecting and stopping the platform: Ray, the catalog, the Serve application and the UI."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cluster.config import Settings

STATE_FILE = "platform.json"
SHUTDOWN_DEADLINE_S = 60
UI_PID_FILE = "ui.pid"


@dataclass(frozen=True)
class Endpoints:
    api: str
    docs: str
    ui: str
    dashboard: str


def endpoints(settings: Settings) -> Endpoints:
    api = settings.api_url
    return Endpoints(
        api=api,
        docs=f"{api}/docs",
        ui=f"http://{settings.host}:{settings.ui_port}",
        dashboard=f"http://127.0.0.1:{settings.dashboard_port}",
    )


def ray_executable() -> str:
    candidate = Path(sys.executable).with_name("ray")
    return str(candidate) if candidate.exists() else (shutil.which("ray") or "ray")


def _state_path(settings: Settings) -> Path:
    return settings.state_dir() / STATE_FILE


def read_state(settings: Settings) -> dict:
    try:
        return json.loads(_state_path(settings).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write_state(settings: Settings, state: dict) -> None:
    path = _state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=2))


def ui_secret(settings: Settings) -> str:
    """The UI's cookie-signing key: from settings, or generated once into the data dir (never in the repo)."""
    if settings.ui_secret:
        return settings.ui_secret
    path = settings.state_dir() / "ui-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def start_local_ray(settings: Settings) -> str:
    """Start a local Ray head (daemonised, so it outlives this command); returns its address."""
    command = [
        ray_executable(),
        "start",
        "--head",
        f"--port={settings.ray_port}",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={settings.dashboard_port}",
        "--disable-usage-stats",
    ]
    if settings.ray_num_cpus:
        command.append(f"--num-cpus={settings.ray_num_cpus}")
    command.append(f"--resources={json.dumps(local_node_resources(settings, settings.ray_num_cpus))}")
    result = subprocess.run(command, capture_output=True, text=True, env=_ray_env())
    if result.returncode != 0:
        raise RuntimeError(f"Ray did not start:\n{result.stdout}\n{result.stderr}")
    return f"127.0.0.1:{settings.ray_port}"


def local_node_resources(settings: Settings, num_cpus: float | None = None) -> dict[str, float]:
    """This machine's split between training and serving (see cluster/resources.py)."""
    from cluster.resources import node_resources

    return node_resources(num_cpus or os.cpu_count() or 1, settings.training_share, settings.serving_cpus)


def _ray_env() -> dict[str, str]:
    env = dict(os.environ)
    # uv/pip installs may leave no bytecode; TF imports 4x slower without it (STACK-NOTES.md).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.setdefault("RAY_AUTH_MODE", "token")
    return env


def wait_for_http(url: str, deadline_s: float) -> bool:
    """Poll `url` until it answers 200 or the deadline passes."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def start_serving(settings: Settings) -> None:
    """Start (or update) the Serve application on the connected Ray cluster."""
    from ray import serve

    from serve.app import APP_NAME, AppArgs, build_app

    serve.start(http_options={"host": settings.host, "port": settings.api_port}, detached=True)
    serve.run(build_app(AppArgs(settings)), name=APP_NAME, route_prefix="/", blocking=False)


def create_service_token(settings: Settings) -> str:
    """A fresh service token for the UI process (earlier ones are revoked); only its hash is stored."""
    from cluster.catalog import users as catalog_users
    from cluster.catalog.actor import RayCatalog, start_catalog_actor
    from cluster.security import new_token

    secret, token_hash, hint = new_token("service")
    catalog = RayCatalog(start_catalog_actor(settings.catalog_file, settings.ray_namespace))
    catalog.call_sync(catalog_users.ensure_service_token, token_hash, hint)
    return secret


def ui_env(settings: Settings, service_token: str) -> dict[str, str]:
    """What the UI process is told, by environment only: the service token is never written anywhere."""
    return {
        "CLASSIFLY_API_URL": settings.api_url,
        "CLASSIFLY_UI_SECRET": ui_secret(settings),
        "CLASSIFLY_SERVICE_TOKEN": service_token,
        "CLASSIFLY_DASHBOARD_URL": endpoints(settings).dashboard,
        "STREAMLIT_SERVER_MAX_UPLOAD_SIZE": str(max(1, settings.max_upload_bytes // 2**20)),
        "STREAMLIT_CLIENT_TOOLBAR_MODE": "minimal",  # no "Deploy" button: this app is self-hosted
    }


@contextlib.contextmanager
def in_process_platform(settings: Settings, *, num_cpus: int = 2, deadline_s: float = 240) -> Iterator[str]:
    """A throwaway platform owned by this process (tests, benchmarks): a fresh local Ray with the Serve app on
    `settings.api_port`, polled until healthy; yields the API URL and tears everything down afterwards."""
    import ray
    from ray import serve

    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    ray.init(
        address="local",
        num_cpus=num_cpus,
        resources=local_node_resources(settings, num_cpus),
        include_dashboard=False,
        namespace=settings.ray_namespace,
        logging_level="ERROR",
        log_to_driver=False,
    )
    try:
        start_serving(settings)
        url = f"http://127.0.0.1:{settings.api_port}"
        if not wait_for_http(f"{url}/v1/health", deadline_s):
            raise RuntimeError(f"the API did not answer /v1/health within {deadline_s:.0f} s")
        yield url
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()


def start_ui(settings: Settings, log_dir: Path, service_token: str = "") -> int:
    """Start the Streamlit UI as a background process; returns its pid."""
    app = Path(__file__).resolve().parent.parent / "ui" / "app.py"
    log = open(log_dir / "ui.log", "ab")  # noqa: SIM115 - handed to the child process
    env = {**os.environ, **ui_env(settings, service_token)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(app),
            "--server.address",
            settings.host,
            "--server.port",
            str(settings.ui_port),
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    (settings.state_dir() / UI_PID_FILE).write_text(str(process.pid))
    return process.pid


def up(settings: Settings, *, with_ui: bool = True, out=print) -> Endpoints:
    """Start everything that is not running yet and print where to find it."""
    import ray

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.state_dir().mkdir(parents=True, exist_ok=True)
    state = read_state(settings)
    address = settings.ray_address
    started_ray = False
    if not address:
        if state.get("ray_address") and _ray_alive(state["ray_address"]):
            address = state["ray_address"]
        else:
            out("Starting Ray …")
            address = start_local_ray(settings)
            started_ray = True
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    ray.init(address=address, namespace=settings.ray_namespace, logging_level="ERROR", log_to_driver=False)
    check_cluster_resources(ray.cluster_resources())
    out("Starting the catalog and the API (this takes about half a minute) …")
    start_serving(settings)
    urls = endpoints(settings)
    if not wait_for_http(f"{urls.api}/v1/health", deadline_s=180):
        raise RuntimeError(f"The API did not become healthy at {urls.api}. See 'ray status' and the Ray dashboard.")
    if with_ui and not http_ok(f"{urls.ui}/_stcore/health"):
        out("Starting the web UI …")
        start_ui(settings, settings.state_dir(), create_service_token(settings))
        wait_for_http(f"{urls.ui}/_stcore/health", deadline_s=60)
    _write_state(
        settings,
        {
            "ray_address": address,
            "started_ray": started_ray or state.get("started_ray", False),
            **urls.__dict__,
        },
    )
    return urls


def check_cluster_resources(resources: dict[str, float]) -> None:
    """Refuse a Ray cluster with no node for serving or training (their replicas and trials would wait forever)."""
    from cluster.resources import SERVE_RESOURCE, TRAIN_RESOURCE

    missing = [name for name in (SERVE_RESOURCE, TRAIN_RESOURCE) if resources.get(name, 0) <= 0]
    if missing:
        raise RuntimeError(
            f"This Ray cluster has no node offering {' or '.join(missing)}. Start its nodes as ray-cluster.yaml "
            "does (see docs/CLUSTER.md), or stop this Ray and let 'classifly up' start one."
        )


def _within(action, seconds: float) -> bool:
    """Run `action` on a helper thread; False when it has not finished within `seconds`."""
    worker = threading.Thread(target=action, daemon=True)
    worker.start()
    worker.join(seconds)
    return not worker.is_alive()


def _ray_alive(address: str) -> bool:
    """Whether a Ray cluster answers at `address` (a dead address is told in a second, not after minutes of
    `ray status` retries)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=1):
            pass
    except (OSError, ValueError):
        return False
    try:
        result = subprocess.run(
            [ray_executable(), "status", f"--address={address}"],
            capture_output=True,
            text=True,
            env=_ray_env(),
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def status(settings: Settings) -> dict[str, str]:
    """What is running, each as a short phrase."""
    urls = endpoints(settings)
    state = read_state(settings)
    ray_state = "not running"
    address = settings.ray_address or state.get("ray_address")
    if address and _ray_alive(address):
        ray_state = f"running at {address}"
    return {
        "ray": ray_state,
        "api": f"healthy at {urls.api} (docs {urls.docs})" if http_ok(f"{urls.api}/v1/health") else "not answering",
        "ui": f"up at {urls.ui}" if http_ok(f"{urls.ui}/_stcore/health") else "not answering",
        "dashboard": urls.dashboard if ray_state != "not running" else "-",
        "data": str(settings.data_dir),
    }


def down(settings: Settings, out=print) -> None:
    """Stop the UI, the Serve application, the catalog (cleanly checkpointed) and the Ray we started."""
    state = read_state(settings)
    pid_file = settings.state_dir() / UI_PID_FILE
    if pid_file.exists():
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)
            out("Stopped the web UI.")
        except (ProcessLookupError, ValueError, PermissionError):
            pass
        pid_file.unlink(missing_ok=True)
    address = settings.ray_address or state.get("ray_address")
    if address and _ray_alive(address):
        import ray
        from ray import serve

        from cluster.catalog.actor import CATALOG_ACTOR
        from cluster.jobs import JOBS_ACTOR

        ray.init(address=address, namespace=settings.ray_namespace, logging_level="ERROR", log_to_driver=False)
        if _within(serve.shutdown, SHUTDOWN_DEADLINE_S):
            out("Stopped the API.")
        else:
            out("The API did not stop in time; stopping Ray will end it.")
        for name in (JOBS_ACTOR, CATALOG_ACTOR):
            try:
                handle = ray.get_actor(name, namespace=settings.ray_namespace)
            except ValueError:
                continue
            if name == CATALOG_ACTOR:
                with contextlib.suppress(Exception):
                    ray.get(handle.checkpoint.remote(), timeout=SHUTDOWN_DEADLINE_S)
            ray.kill(handle, no_restart=True)
        out("Stopped the catalog.")
        ray.shutdown()
        if state.get("started_ray") and not settings.ray_address:
            subprocess.run([ray_executable(), "stop", "--force"], capture_output=True, env=_ray_env())
            out("Stopped Ray.")
    _state_path(settings).unlink(missing_ok=True)
