"""Crash safety on real Ray: the platform (its process and every Ray process under it) is killed with SIGKILL
during a zip import, a training run and a model update; after a restart the catalog is consistent, nothing
referenced is missing, interrupted work is marked (and a run resumes), `classifly doctor` reports and repairs the
orphans. Then a backup of the running platform is restored into a wiped data folder and serves the same answers.

One platform at a time, in a process of its own (tests/integration/platform_process.py) on one data folder;
each test kills it and starts it again, and the next test goes on with the platform left running.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.factories import make_zip, stripes_zip
from tests.integration.conftest import free_port, wait_until

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]
START_DEADLINE_S = 240
PASSWORD = "password123"


class PlatformProcess:
    """The platform in a child process; `kill9` is a crash of that process tree and nothing else."""

    def __init__(self, data_dir: Path, log_dir: Path):
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.namespace = f"crash-{free_port()}"
        self.process: subprocess.Popen | None = None
        self.port = free_port()
        self.url = ""
        self.address = ""
        self.http: httpx.Client | None = None

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            "CLASSIFLY_DATA_DIR": str(self.data_dir),
            "CLASSIFLY_ENVIRONMENT": "test",
            "CLASSIFLY_RAY_NAMESPACE": self.namespace,
            "CLASSIFLY_API_PORT": str(self.port),
            # Many small decode tasks one after another: an import long enough to be killed in the middle.
            "CLASSIFLY_IMPORT_BATCH_SIZE": "20",
            "CLASSIFLY_IMPORT_PARALLELISM": "1",
            "RAY_AUTH_MODE": "token",
        }
        env.pop("RAY_ADDRESS", None)
        env.pop("CLASSIFLY_RAY_ADDRESS", None)
        return {**env, **extra}

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        self.port = free_port()
        log = open(self.log_dir / f"platform-{self.port}.log", "wb")  # noqa: SIM115 - the child writes it
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.platform_process"],
            cwd=REPO,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.process.stdout], daemon=True).start()

        def ready() -> str | None:
            if self.process.poll() is not None:
                raise AssertionError(f"the platform exited ({self.process.returncode}); see {log.name}")
            with contextlib.suppress(queue.Empty):
                line = lines.get_nowait()
                return line if line.startswith("READY ") else None
            return None

        _, self.url, self.address = wait_until(ready, START_DEADLINE_S, "the platform to start").split()
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def kill9(self) -> None:
        """SIGKILL the platform process and all its descendants: stopped first (SIGSTOP), so none starts or
        finishes anything between the first kill and the last."""
        root = psutil.Process(self.process.pid)
        tree = [root, *root.children(recursive=True)]
        for process in tree:
            with contextlib.suppress(psutil.Error):
                process.suspend()
        for process in list(tree):
            with contextlib.suppress(psutil.Error):
                tree += [child for child in process.children(recursive=True) if child not in tree]
        for process in tree:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(tree, timeout=30)
        self.process.wait(timeout=30)
        self.http.close()

    def stop(self) -> None:
        """A clean stop (SIGTERM: Serve and Ray shut down), a kill if it takes too long."""
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.kill9()
        self.http.close()

    def cli(self, *args: str, up: bool) -> subprocess.CompletedProcess:
        """`classifly ...` as an operator runs it; `up` points it at the running platform's Ray."""
        env = self.env(CLASSIFLY_RAY_ADDRESS=self.address) if up else self.env()
        return subprocess.run(
            [sys.executable, "-m", "cluster.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
        )

    def login(self, username: str, register: bool = True) -> dict[str, str]:
        if register:
            created = self.http.post("/v1/auth/register", json={"username": username, "password": PASSWORD})
            assert created.status_code == 201, created.text
        session = self.http.post("/v1/auth/login", json={"username": username, "password": PASSWORD})
        assert session.status_code == 200, session.text
        return {"Authorization": f"Bearer {session.json()['access_token']}"}

    def get(self, url: str, headers: dict[str, str]) -> dict:
        response = self.http.get(url, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()

    def wait_final(self, headers: dict[str, str], url: str, deadline_s: float = 300) -> dict:
        def final() -> dict | None:
            body = self.get(url, headers)
            return body if body["status"] not in ("queued", "running") else None

        return wait_until(final, deadline_s, f"{url} to finish", interval_s=0.5)

    def classify(self, headers: dict[str, str], model_id: str, picture: bytes) -> dict:
        answer = self.http.post(
            f"/v1/models/{model_id}/classify", files={"files": ("p.png", picture, "image/png")}, headers=headers
        )
        assert answer.status_code == 200, answer.text
        return answer.json()


def doctor_output(done: subprocess.CompletedProcess) -> str:
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    folder = tmp_path_factory.mktemp("crash")
    (folder / "logs").mkdir()
    crashed = PlatformProcess(folder / "data", folder / "logs")
    crashed.state = {}
    crashed.start()
    try:
        yield crashed
    finally:
        if crashed.running:
            crashed.kill9()


def test_a_kill_during_a_zip_import_keeps_nothing_of_it_and_doctor_repairs_the_rest(platform, tmp_path) -> None:
    headers = platform.login("importer")
    model_id = platform.http.post("/v1/models", json={"name": "Big"}, headers=headers).json()["id"]
    archive = make_zip(tmp_path / "big.zip", {"a": 1200, "b": 1200}, size=(24, 24)).read_bytes()
    started = platform.http.post(
        f"/v1/models/{model_id}/imports", content=archive, headers={**headers, "Content-Type": "application/zip"}
    )
    assert started.status_code == 202, started.text
    job_url = started.headers["Location"]

    def decoding() -> dict | None:
        job = platform.get(job_url, headers)
        assert job["status"] in ("queued", "running"), job  # it must still be going when it is killed
        return job if job["progress"]["done"] > 0 else None

    wait_until(decoding, 120, "the import to report progress", interval_s=0.05)
    platform.kill9()

    down = platform.cli("doctor", "--grace", "0", up=False)
    assert down.returncode == 1, doctor_output(down)
    assert "1 job(s) and 0 training run(s) still marked running" in down.stdout, down.stdout
    assert "uploads/ 1" in down.stdout and "packs/" in down.stdout, down.stdout  # the zip and the decoded pictures

    platform.start()
    job = platform.get(job_url, headers)
    assert job["status"] == "interrupted", job
    assert platform.get(f"/v1/models/{model_id}/dataset", headers)["total_images"] == 0
    up = platform.cli("doctor", "--grace", "0", up=True)
    assert up.returncode == 1 and "through the running platform" in up.stdout, doctor_output(up)
    assert "still marked running" not in up.stdout  # the restarted catalog marked it
    repaired = platform.cli("doctor", "--repair", "--grace", "0", up=True)
    assert repaired.returncode == 0, doctor_output(repaired)
    assert "deleted" in repaired.stdout and "unreferenced" in repaired.stdout, repaired.stdout
    clean = platform.cli("doctor", "--grace", "0", up=True)
    assert clean.returncode == 0 and "Result: consistent." in clean.stdout, doctor_output(clean)

    again = platform.http.post(
        f"/v1/models/{model_id}/imports", content=archive, headers={**headers, "Content-Type": "application/zip"}
    )
    report = platform.wait_final(headers, again.headers["Location"])["result"]
    assert (report["accepted"], report["duplicates"]) == (2400, 0)


def test_a_kill_during_training_leaves_a_resumable_run(platform) -> None:
    headers = platform.login("trainer")
    model = platform.http.post("/v1/models", json={"name": "Stripes", "target_accuracy": 0.9}, headers=headers)
    model_id = model.json()["id"]
    imported = platform.http.post(
        f"/v1/models/{model_id}/imports", content=stripes_zip(), headers={**headers, "Content-Type": "application/zip"}
    )
    assert platform.wait_final(headers, imported.headers["Location"])["status"] == "succeeded"
    body = {"kinds": ["scratch_cnn"], "max_epochs": 20, "time_budget_s": 240}
    run_url = platform.http.post(f"/v1/models/{model_id}/train", json=body, headers=headers).headers["Location"]

    def training() -> dict | None:
        run = platform.get(run_url, headers)
        assert run["status"] in ("queued", "running"), run
        return run if run["progress"]["fraction"] > 0 else None

    wait_until(training, 180, "the run to report progress", interval_s=0.1)
    platform.kill9()

    repaired = platform.cli("doctor", "--repair", "--grace", "0", up=False)
    assert repaired.returncode == 0, doctor_output(repaired)
    assert "1 training run(s) still marked running but not running: marked interrupted" in repaired.stdout
    assert platform.cli("doctor", up=False).returncode == 0

    platform.start()
    assert platform.get(run_url, headers)["status"] == "interrupted"
    resumed = platform.http.post(f"{run_url}/resume", headers=headers)
    assert resumed.status_code == 202, resumed.text
    run = platform.wait_final(headers, run_url, deadline_s=400)
    assert run["status"] == "succeeded", run
    assert platform.get(f"/v1/models/{model_id}/versions", headers)["count"] == 1
    picture = stripes_zip_picture()
    assert platform.classify(headers, model_id, picture)["version"] == 1
    platform.state["trained"] = (headers, model_id)


def stripes_zip_picture(label: str = "horizontal") -> bytes:
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(stripes_zip(per_class=3))) as archive:
        return archive.read(f"{label}/0.png")


def test_a_kill_during_a_model_update_keeps_the_version_that_served(platform) -> None:
    headers, model_id = platform.state["trained"]
    pictures = [
        ("files", (f"more{i}.png", data, "image/png"))
        for i, data in enumerate(stripes_pictures("horizontal", count=5, seed=7))
    ]
    uploaded = platform.http.post(
        f"/v1/models/{model_id}/images", data={"label": "horizontal"}, files=pictures, headers=headers
    )
    assert uploaded.status_code == 201, uploaded.text
    update_url = uploaded.headers["Model-Update"]

    def updating() -> dict | None:
        job = platform.get(update_url, headers)
        assert job["status"] in ("queued", "running"), job
        return job if job["status"] == "running" else None

    wait_until(updating, 120, "the model update to start", interval_s=0.05)
    platform.kill9()
    platform.start()

    assert platform.get(update_url, headers)["status"] == "interrupted"
    model = platform.get(f"/v1/models/{model_id}", headers)
    assert model["active_version"] == 1
    assert platform.classify(headers, model_id, stripes_zip_picture())["version"] == 1
    repaired = platform.cli("doctor", "--repair", "--grace", "0", up=True)
    assert repaired.returncode == 0, doctor_output(repaired)
    clean = platform.cli("doctor", "--grace", "0", up=True)
    assert clean.returncode == 0 and "Result: consistent." in clean.stdout, doctor_output(clean)

    retried = platform.http.post(f"/v1/models/{model_id}/update", headers=headers)
    assert retried.status_code == 202, retried.text
    job = platform.wait_final(headers, retried.headers["Location"])
    assert job["status"] == "succeeded", job
    assert platform.classify(headers, model_id, stripes_zip_picture())["version"] == 2


def stripes_pictures(label: str, count: int, seed: int) -> list[bytes]:
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    axis = 0 if label == "horizontal" else 1
    out = []
    for _ in range(count):
        stripes = (np.indices((16, 16))[axis] // 2 % 2) * 200
        noisy = np.clip(stripes + rng.integers(0, 55, (16, 16)), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noisy).convert("RGB").save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out


def test_a_backup_of_the_running_platform_restores_into_a_wiped_folder_and_serves(platform, tmp_path) -> None:
    headers, model_id = platform.state["trained"]
    picture = stripes_zip_picture("vertical")
    before = {
        "model": platform.get(f"/v1/models/{model_id}", headers),
        "versions": platform.get(f"/v1/models/{model_id}/versions", headers)["count"],
        "dataset": platform.get(f"/v1/models/{model_id}/dataset", headers)["total_images"],
        "answer": platform.classify(headers, model_id, picture)["results"][0],
    }
    image = platform.get(f"/v1/models/{model_id}/images?limit=1", headers)["data"][0]
    content = platform.http.get(image["content_url"], headers=headers).content

    backed_up = platform.cli("backup", str(tmp_path / "backup"), up=True)
    assert backed_up.returncode == 0, doctor_output(backed_up)
    refused = platform.cli("restore", str(tmp_path / "backup"), "--replace", up=True)
    assert refused.returncode == 1 and "platform is running" in refused.stdout, doctor_output(refused)

    platform.stop()
    shutil.rmtree(platform.data_dir)
    restored = platform.cli("restore", str(tmp_path / "backup"), up=False)
    assert restored.returncode == 0, doctor_output(restored)
    checked = platform.cli("doctor", up=False)
    assert checked.returncode == 0, doctor_output(checked)
    platform.start()

    headers = platform.login("trainer", register=False)
    assert platform.get(f"/v1/models/{model_id}", headers)["active_version"] == before["model"]["active_version"]
    assert platform.get(f"/v1/models/{model_id}/versions", headers)["count"] == before["versions"]
    assert platform.get(f"/v1/models/{model_id}/dataset", headers)["total_images"] == before["dataset"]
    assert platform.http.get(image["content_url"], headers=headers).content == content
    answer = platform.classify(headers, model_id, picture)["results"][0]
    assert answer["label"] == before["answer"]["label"]
    assert answer["confidence"] == pytest.approx(before["answer"]["confidence"], abs=1e-4)


def test_a_job_whose_worker_died_while_the_platform_runs_is_found_and_marked(platform, tmp_path) -> None:
    """Only the import's driver process is killed; the catalog actor lives on, so nothing marks the job at a
    start: doctor sees an active job that the jobs actor no longer runs."""
    headers = platform.login("orphaned")
    model_id = platform.http.post("/v1/models", json={"name": "Half"}, headers=headers).json()["id"]
    archive = make_zip(tmp_path / "half.zip", {"a": 600, "b": 600}, size=(24, 24)).read_bytes()
    job_url = platform.http.post(
        f"/v1/models/{model_id}/imports", content=archive, headers={**headers, "Content-Type": "application/zip"}
    ).headers["Location"]

    def driver() -> psutil.Process | None:
        job = platform.get(job_url, headers)
        assert job["status"] in ("queued", "running"), job
        if job["progress"]["done"] == 0:
            return None
        for process in psutil.Process(platform.process.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "_import_driver" in " ".join(process.cmdline()):
                    return process
        return None

    wait_until(driver, 120, "the import's driver to report progress", interval_s=0.05).kill()

    def reported() -> subprocess.CompletedProcess | None:
        done = platform.cli("doctor", "--stale-after", "0", up=True)
        return done if "1 job(s) and 0 training run(s) still marked running" in done.stdout else None

    assert wait_until(reported, 120, "doctor to see the dead job", interval_s=1).returncode == 1
    assert platform.get(job_url, headers)["status"] == "running"  # a check changes nothing
    repaired = platform.cli("doctor", "--repair", "--stale-after", "0", "--grace", "0", up=True)
    assert repaired.returncode == 0, doctor_output(repaired)
    assert platform.get(job_url, headers)["status"] == "interrupted"
    assert platform.get(f"/v1/models/{model_id}/dataset", headers)["total_images"] == 0
    clean = platform.cli("doctor", "--grace", "0", up=True)
    assert clean.returncode == 0 and "Result: consistent." in clean.stdout, doctor_output(clean)
