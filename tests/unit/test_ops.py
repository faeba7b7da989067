"""`classifly doctor`, `backup` and `restore` on a platform that is down: the catalog file opened directly."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from cluster.blobs import LocalBlobStore
from cluster.catalog import jobs, models, runs, tasks, users
from cluster.catalog.client import LocalCatalog
from cluster.catalog.models import ModelSpec
from cluster.config import Settings
from cluster.importer import ImportRequest, run_import, serial_map
from cluster.ops import backup, doctor, restore, verify_backup
from pipelines.errors import Conflict, InvalidInput, NotReady
from pipelines.zips import ZipLimits
from tests.factories import make_zip

HOLD = "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); sys.stdin.read()"
TABLES = (
    "users",
    "tokens",
    "models",
    "classes",
    "images",
    "blobs",
    "jobs",
    "model_versions",
    "training_runs",
    "trials",
)


def settings_for(data: Path) -> Settings:
    # A Ray address nobody listens on: the commands must find the platform down without asking a real Ray.
    with socket.socket() as sock:  # an API port nobody answers on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return Settings(data_dir=data, environment="test", ray_address="127.0.0.1:9", api_port=port)


def populate(settings: Settings, tmp_path: Path) -> dict:
    """A user with a model of 12 imported pictures, an interrupted run, and a published version with its files."""
    catalog = LocalCatalog(settings.catalog_file)
    blobs = LocalBlobStore(settings.blob_root)
    user = catalog.call_sync(users.create_user, "alice", "hash")
    model = catalog.call_sync(models.create_model, user.id, ModelSpec(name="Pets"))
    job = catalog.call_sync(jobs.create_job, user.id, "import", model_id=model.id)
    key = f"uploads/{job.id}.zip"
    blobs.put_file(key, make_zip(tmp_path / "pets.zip", {"cat": 6, "dog": 6}))
    request = ImportRequest(job.id, user.id, model.id, key, str(blobs.root), ZipLimits(), 10**7, 10**9, batch_size=5)
    assert run_import(request, catalog, blobs, serial_map)["accepted"] == 12
    prefix = "artifacts/run_x/trial_1"
    blobs.put(f"{prefix}/head.npz", b"head")
    blobs.put(f"{prefix}/manifest.json", json.dumps({"files": {"head": "head.npz"}}).encode())
    catalog.call_sync(
        runs.publish_version,
        user.id,
        model.id,
        source="training",
        run_id=None,
        classes=["cat", "dog"],
        backbone=None,
        preprocessing=None,
        artifact_uri=prefix,
        metrics={"accuracy": 1.0},
    )
    run = catalog.call_sync(runs.create_run, user.id, model.id, {})
    catalog.call_sync(runs.start_run, run.id)  # left running: a crash
    catalog.close()
    return {"user": user.id, "model": model.id, "run": run.id, "artifact": prefix}


def table_rows(path: str) -> dict[str, list]:
    conn = duckdb.connect(path, read_only=True)
    try:
        return {table: sorted(map(repr, conn.execute(f"SELECT * FROM {table}").fetchall())) for table in TABLES}
    finally:
        conn.close()


def store_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_doctor_finds_orphans_interrupted_work_and_lost_files_and_repairs_them(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "data")
    made = populate(settings, tmp_path)
    root = Path(settings.blob_root)
    orphan_pack = root / "packs" / "ff" / "ffff.pack"
    orphan_pack.parent.mkdir(parents=True, exist_ok=True)
    orphan_pack.write_bytes(b"bytes written before a crash")
    (root / "uploads" / "job_gone.zip").parent.mkdir(parents=True, exist_ok=True)
    (root / "uploads" / "job_gone.zip").write_bytes(b"zip")
    (root / "artifacts" / "expansions" / "job_dead").mkdir(parents=True)
    (root / "artifacts" / "expansions" / "job_dead" / "head.npz").write_bytes(b"head")
    young = root / "packs" / "ee" / "eeee.pack"
    young.parent.mkdir(parents=True, exist_ok=True)
    young.write_bytes(b"an import still writing")
    old = time.time() - 7200
    for path in (orphan_pack, root / "uploads" / "job_gone.zip", root / "artifacts/expansions/job_dead/head.npz"):
        os.utime(path, (old, old))
    referenced = sorted((root / "packs").rglob("*.pack"))
    lost_pack = next(p for p in referenced if p not in (orphan_pack, young))
    lost_pack.unlink()  # a pack the catalog points into, gone

    checked = doctor(settings, grace_s=3600)

    assert checked.mode == "down" and not checked.clean
    assert checked.interrupted_runs == [made["run"]]
    assert set(checked.orphans) == {
        "packs/ff/ffff.pack",
        "uploads/job_gone.zip",
        "artifacts/expansions/job_dead/head.npz",
    }
    assert checked.recent == ["packs/ee/eeee.pack"]
    assert any("missing or damaged" in line for line in checked.problems)
    before = table_rows(settings.catalog_file)

    (root / made["artifact"] / "head.npz").unlink()  # the version's stored model loses a file
    repaired = doctor(settings, repair=True, grace_s=3600)

    assert repaired.clean, repaired.lines()
    assert not orphan_pack.exists() and young.exists() and lost_pack.exists() is False
    assert repaired.lost_pictures >= 1
    assert repaired.broken_versions == [f"{made['model']}/1"]
    conn = duckdb.connect(settings.catalog_file, read_only=True)
    status, reason = conn.execute("SELECT status, reject_reason FROM images WHERE status = 'rejected'").fetchone()
    assert status == "rejected" and "lost" in reason
    version_status, metrics = conn.execute("SELECT status, metrics FROM model_versions").fetchone()
    assert version_status == "broken" and "head.npz" in json.loads(metrics)["problem"]
    assert conn.execute("SELECT status FROM training_runs").fetchone()[0] == "interrupted"
    conn.close()
    assert len(table_rows(settings.catalog_file)["images"]) == len(before["images"])  # nothing deleted

    catalog = LocalCatalog(settings.catalog_file)
    with pytest.raises(NotReady, match="head.npz"):
        catalog.call_sync(tasks.version_to_serve, made["user"], made["model"])
    catalog.close()
    again = doctor(settings, grace_s=3600)
    assert again.clean, again.lines()
    assert any("marked broken" in note for note in again.notes)


def test_backup_wipe_restore_gives_back_every_row_and_file(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "data")
    populate(settings, tmp_path)
    before_rows = table_rows(settings.catalog_file)
    before_files = store_files(Path(settings.blob_root))

    manifest = backup(settings, tmp_path / "backup", out=lambda _: None)

    assert manifest["counts"]["images"] == 12 and manifest["counts"]["model_versions"] == 1
    assert verify_backup(tmp_path / "backup")["files"] == manifest["files"]
    shutil.rmtree(settings.data_dir)

    restore(settings, tmp_path / "backup", out=lambda _: None)

    assert table_rows(settings.catalog_file) == before_rows
    assert store_files(Path(settings.blob_root)) == before_files
    assert doctor(settings).interrupted_runs  # the run left running is still to be marked, as before


def test_restore_refuses_damaged_backups_existing_data_and_a_held_catalog(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "data")
    populate(settings, tmp_path)
    backup(settings, tmp_path / "backup", out=lambda _: None)
    with pytest.raises(Conflict, match="not empty"):
        backup(settings, tmp_path / "backup", out=lambda _: None)

    with pytest.raises(Conflict, match="--replace"):
        restore(settings, tmp_path / "backup", out=lambda _: None)
    # Another process holding the file, as a running platform's catalog actor does.
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, settings.catalog_file], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Conflict, match="held by another process"):
            restore(settings, tmp_path / "backup", replace=True, out=lambda _: None)
    finally:
        holder.communicate("", timeout=30)

    pack = next((tmp_path / "backup" / "blobs" / "packs").rglob("*.pack"))
    pack.write_bytes(pack.read_bytes()[:-1])
    with pytest.raises(InvalidInput, match="damaged"):
        restore(settings, tmp_path / "backup", replace=True, out=lambda _: None)
    assert Path(settings.catalog_file).exists()  # nothing touched


def test_restore_with_replace_moves_the_current_data_aside(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "data")
    populate(settings, tmp_path)
    rows = table_rows(settings.catalog_file)
    backup(settings, tmp_path / "backup", out=lambda _: None)
    catalog = LocalCatalog(settings.catalog_file)
    catalog.call_sync(users.create_user, "mallory", "hash")
    catalog.close()

    restore(settings, tmp_path / "backup", replace=True, out=lambda _: None)

    assert table_rows(settings.catalog_file) == rows
    assert list(settings.data_dir.glob("catalog.duckdb.before-restore-*"))
    assert list(settings.data_dir.glob("blobs.before-restore-*"))


def test_doctor_backup_and_restore_on_an_object_store(tmp_path: Path) -> None:
    """The same on an fsspec store (memory://, as s3:// would be): orphans found and deleted, a round trip."""
    from cluster.blobs import open_blob_store

    base = settings_for(tmp_path / "data")
    settings = base.model_copy(update={"blob_uri": f"memory://classifly-{tmp_path.name}"})
    catalog = LocalCatalog(settings.catalog_file)
    blobs = open_blob_store(settings.blob_root)
    user = catalog.call_sync(users.create_user, "alice", "hash")
    model = catalog.call_sync(models.create_model, user.id, ModelSpec(name="Pets"))
    job = catalog.call_sync(jobs.create_job, user.id, "import", model_id=model.id)
    key = f"uploads/{job.id}.zip"
    blobs.put_file(key, make_zip(tmp_path / "pets.zip", {"cat": 3, "dog": 3}))
    request = ImportRequest(job.id, user.id, model.id, key, settings.blob_root, ZipLimits(), 10**7, 10**9)
    assert run_import(request, catalog, blobs, serial_map)["accepted"] == 6
    catalog.close()
    blobs.put("packs/zz/orphan.pack", b"left by a crash")

    found = doctor(settings, grace_s=0)
    assert found.orphans == ["packs/zz/orphan.pack"], found.lines()
    assert doctor(settings, repair=True, grace_s=0).clean
    assert not blobs.exists("packs/zz/orphan.pack")

    rows = table_rows(settings.catalog_file)
    packs = {k: blobs.get(k) for k in blobs.iter_keys("packs")}
    backup(settings, tmp_path / "backup", out=lambda _: None)
    for k in packs:
        blobs.delete(k)
    Path(settings.catalog_file).unlink()
    restore(settings, tmp_path / "backup", out=lambda _: None)
    assert table_rows(settings.catalog_file) == rows
    assert {k: blobs.get(k) for k in blobs.iter_keys("packs")} == packs
    assert doctor(settings, grace_s=0).clean
