"""Operations on a platform's data: `classifly doctor` (catalog ↔ blob store consistency, and repairs),
`classifly backup PATH` and `classifly restore PATH`.

Up or down: while the platform runs, every catalog read and write goes through its catalog actor (the only
process allowed to hold the DuckDB file); while it is down the file is opened here (read-only unless
something must be written). The blob store is read directly in both cases.

Why the order of a backup makes it consistent: writers store bytes (and fsync them) before the catalog rows
that point at them commit, and nothing the catalog references is ever rewritten in place or deleted while
referenced. So the catalog is copied first (checkpointed, under the actor's lock), then the blob store: every
file the copied catalog references existed when it was copied and is still there when the store is read.
Files written after the catalog copy are unreferenced in the backup (doctor lists them as orphans after a
restore and `--repair` deletes them).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cluster.blobs import BlobStore, FsspecBlobStore, open_blob_store
from cluster.catalog import doctor as catalog_doctor
from cluster.config import Settings
from pipelines.errors import Conflict, InvalidInput

MANIFEST = "manifest.json"
BACKUP_FORMAT = 1
CATALOG_COPY = "catalog.duckdb"
BLOBS_COPY = "blobs"
DEFAULT_GRACE_S = 3600.0
# A job or run the catalog calls active while the jobs actor runs nothing for it, unchanged this long: its worker
# died (the platform stayed up). Progress is written at least every few seconds while work goes on.
STALE_WORK_S = 120.0
# Folders of the blob store that are caches or have their own retention: never orphans.
MANAGED = ("features", "classified")
LOST_PICTURE = "The stored picture was lost (found missing by 'classifly doctor' on {day}); upload it again."
BROKEN_VERSION = (
    "The stored model of this version is incomplete (found by 'classifly doctor' on {day}: {files} missing); "
    "activate another version or train again."
)
CHUNK = 1 << 20


# --- reaching the catalog -------------------------------------------------------------------------------------


class DirectCatalog:
    """The catalog file opened in this process while the platform is down (read-only unless `writable`)."""

    def __init__(self, path: str, *, writable: bool):
        import duckdb

        from cluster.catalog.db import migrate

        if not Path(path).exists():
            raise InvalidInput(f"There is no catalog at {path}. Check CLASSIFLY_DATA_DIR (or CLASSIFLY_CATALOG_PATH).")
        try:
            self.conn = duckdb.connect(path, read_only=not writable)
        except duckdb.IOException as error:
            if "lock" in str(error).lower():
                raise Conflict(
                    f"The catalog {path} is held by another process (a running platform?). Run this on the "
                    "machine where 'classifly up' ran, or set CLASSIFLY_RAY_ADDRESS to the platform's Ray address."
                ) from None
            raise
        self.path = path
        if writable:
            migrate(self.conn)

    def call_sync(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from cluster.catalog.client import check_catalog_function
        from cluster.catalog.db import in_transaction

        check_catalog_function(fn)
        return in_transaction(self.conn, fn, *args, **kwargs)

    def snapshot(self, target: Path) -> None:
        checkpoint_and_copy(self.conn, self.path, target)

    def close(self) -> None:
        self.conn.close()


def checkpoint_and_copy(conn: Any, path: str, target: Path) -> None:
    """Write everything to the main file (CHECKPOINT), then copy it: the caller holds the only connection and
    runs nothing else on it meanwhile, so the copy is one consistent state."""
    if not conn.execute("SELECT current_setting('access_mode')").fetchone()[0].lower().startswith("read_only"):
        conn.execute("CHECKPOINT")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)
    with open(target, "rb+") as handle:
        os.fsync(handle.fileno())


def platform_address(settings: Settings) -> str | None:
    """The running platform's Ray address, or None when it is not running."""
    from cluster.runtime import _ray_alive, read_state

    address = settings.ray_address or read_state(settings).get("ray_address")
    return address if address and _ray_alive(address) else None


@contextlib.contextmanager
def open_catalog(settings: Settings, *, writable: bool) -> Iterator[tuple[Any, str]]:
    """(a catalog client, "up" or "down"): through the catalog actor when the platform runs, else the file."""
    address = platform_address(settings)
    if address:
        import ray

        from cluster.catalog.actor import RayCatalog, get_catalog_actor

        if not ray.is_initialized():
            ray.init(address=address, namespace=settings.ray_namespace, logging_level="ERROR", log_to_driver=False)
        yield RayCatalog(get_catalog_actor(settings.ray_namespace)), "up"
        return
    catalog = DirectCatalog(settings.catalog_file, writable=writable)
    try:
        yield catalog, "down"
    finally:
        catalog.close()


# --- the blob store as it is ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredFile:
    key: str
    size: int
    mtime: float | None  # None when the store does not say


def list_store(blobs: BlobStore) -> dict[str, StoredFile]:
    """Every file of the store (temporary files of interrupted writes included), with size and age."""
    found: dict[str, StoredFile] = {}
    if isinstance(blobs, FsspecBlobStore):
        base = blobs.base.rstrip("/")
        if not blobs.fs.exists(base):
            return found
        for path, info in blobs.fs.find(base, detail=True).items():
            if info.get("type", "file") != "file":
                continue
            stamp = info.get("mtime") or info.get("LastModified") or info.get("created")
            if isinstance(stamp, datetime):
                stamp = stamp.timestamp()
            key = path[len(base) + 1 :] if path.startswith(base) else path
            found[key] = StoredFile(key, int(info.get("size") or 0), float(stamp) if stamp else None)
        return found
    root = blobs.root
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            key = path.relative_to(root).as_posix()
            found[key] = StoredFile(key, stat.st_size, stat.st_mtime)
    return found


# --- doctor -----------------------------------------------------------------------------------------------------


@dataclass
class DoctorReport:
    mode: str  # "up" (through the catalog actor) or "down" (the file opened here)
    repair: bool
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # what is wrong now (after repair: what could not be fixed)
    repaired: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth knowing, nothing to fix
    orphans: list[str] = field(default_factory=list)  # unreferenced files older than the grace period
    recent: list[str] = field(default_factory=list)  # unreferenced, younger than the grace period
    interrupted_jobs: list[str] = field(default_factory=list)
    interrupted_runs: list[str] = field(default_factory=list)
    lost_pictures: int = 0
    broken_versions: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        title = "through the running platform" if self.mode == "up" else "on the catalog file (platform down)"
        out = [f"classifly doctor, {title}{' with --repair' if self.repair else ''}"]
        if self.counts:
            out.append("  catalog: " + ", ".join(f"{n} {table}" for table, n in self.counts.items()))
        out += [f"  repaired: {line}" for line in self.repaired]
        out += [f"  PROBLEM:  {line}" for line in self.problems]
        out += [f"  note:     {line}" for line in self.notes]
        out.append("Result: consistent." if self.clean else f"Result: {len(self.problems)} problem(s) found.")
        if not self.clean and not self.repair:
            out.append("Run 'classifly doctor --repair' to fix what can be fixed.")
        return out


def _referenced_artifact(key: str, prefixes: set[str]) -> bool:
    parts = key.split("/")
    return any("/".join(parts[:end]) in prefixes for end in range(2, len(parts)))


def _age(file: StoredFile, now: float) -> float:
    return now - file.mtime if file.mtime is not None else 0.0


def _stale_work(
    settings: Settings, refs: catalog_doctor.CatalogReferences, stale_s: float
) -> tuple[list[str], list[str]]:
    """Active jobs and runs the running platform is not working on (their worker died), unchanged for a while."""
    import ray

    from cluster.jobs import JOBS_ACTOR

    try:
        handle = ray.get_actor(JOBS_ACTOR, namespace=settings.ray_namespace)
        running = set(ray.get(handle.running_jobs.remote(), timeout=30))
    except (ValueError, ray.exceptions.GetTimeoutError):
        running = set()
    from cluster.catalog.db import utcnow

    now = utcnow()
    jobs = [
        job_id
        for job_id, _, _, updated in refs.active_jobs
        if job_id not in running and (now - updated).total_seconds() >= stale_s
    ]
    runs = [
        run_id
        for run_id, _, updated in refs.active_runs
        if run_id not in running and (now - updated).total_seconds() >= stale_s
    ]
    return jobs, runs


def doctor(
    settings: Settings,
    *,
    repair: bool = False,
    grace_s: float = DEFAULT_GRACE_S,
    deep: bool = False,
    stale_s: float = STALE_WORK_S,
    out: Callable[[str], None] | None = None,
) -> DoctorReport:
    """Check the catalog against the blob store (and repair with `repair`); the report says what was found."""
    blobs = open_blob_store(settings.blob_root)
    with open_catalog(settings, writable=repair) as (catalog, mode):
        # The store is listed before the catalog is read: a file written after the listing is not judged, and
        # one written before it and referenced by then is seen as referenced.
        stored = list_store(blobs)
        refs = catalog.call_sync(catalog_doctor.references)
        report = DoctorReport(mode=mode, repair=repair, counts=refs.counts)
        _check(report, settings, catalog, blobs, stored, refs, grace_s=grace_s, deep=deep, stale_s=stale_s)
    if out is not None:
        for line in report.lines():
            out(line)
    return report


def _check(
    report: DoctorReport,
    settings: Settings,
    catalog: Any,
    blobs: BlobStore,
    stored: dict[str, StoredFile],
    refs: catalog_doctor.CatalogReferences,
    *,
    grace_s: float,
    deep: bool,
    stale_s: float = STALE_WORK_S,
) -> None:
    day = datetime.now(UTC).date().isoformat()
    repair = report.repair

    # Schema.
    if refs.migrations and max(refs.migrations) > refs.known_migrations:
        report.problems.append(
            f"the catalog's schema is version {max(refs.migrations)}, newer than this Classifly knows "
            f"({refs.known_migrations}); upgrade Classifly before running the platform on it"
        )
    elif set(range(1, refs.known_migrations + 1)) - set(refs.migrations):
        report.notes.append("schema migrations are pending; they are applied when the platform starts")
    else:
        report.notes.append(f"schema version {refs.known_migrations} (up to date)")

    # Pictures: packs that are missing or shorter than the catalog says.
    damaged = {}
    for pack, end in refs.packs.items():
        size = stored[pack].size if pack in stored else 0
        if size < end:
            damaged[pack] = size
    if deep:
        damaged.update(_verify_pictures(catalog, blobs, refs, damaged))
    if damaged or refs.images_without_bytes:
        what = f"{len(damaged)} pack(s) of pictures missing or damaged" + (
            f", {len(refs.images_without_bytes)} image row(s) with no stored bytes" if refs.images_without_bytes else ""
        )
        if repair:
            lost = catalog.call_sync(catalog_doctor.mark_lost_pictures, damaged, LOST_PICTURE.format(day=day))
            report.lost_pictures = lost
            report.repaired.append(f"{what}: {lost} picture(s) marked rejected ('{LOST_PICTURE.format(day=day)}')")
        else:
            report.problems.append(f"{what}; --repair marks their pictures rejected with the reason")

    # Model versions: the manifest and every file it lists.
    broken: list[tuple[str, int]] = []
    missing_of: dict[tuple[str, int], list[str]] = {}
    for model_id, version, uri, status in refs.versions:
        if not uri:
            continue
        missing = _missing_artifact_files(blobs, stored, uri)
        if not missing:
            continue
        if status == catalog_doctor.BROKEN:
            report.notes.append(f"model {model_id} version {version} is marked broken (its stored model is gone)")
            continue
        broken.append((model_id, version))
        missing_of[(model_id, version)] = missing
    if broken:
        names = [f"model {m} version {v} ({', '.join(missing_of[(m, v)])} missing)" for m, v in broken]
        report.broken_versions = [f"{m}/{v}" for m, v in broken]
        if repair:
            for model_id, version in broken:
                reason = BROKEN_VERSION.format(day=day, files=", ".join(missing_of[(model_id, version)]))
                catalog.call_sync(catalog_doctor.mark_broken_versions, [(model_id, version)], reason)
            report.repaired.append(f"marked broken, could not be restored: {'; '.join(names)}")
        else:
            report.problems.append(f"stored models missing: {'; '.join(names)}")

    # Results of batch classifications.
    lost_results = sorted(key for key in refs.batch_results if key not in stored)
    if lost_results:
        report.problems.append(
            f"{len(lost_results)} batch classification result file(s) missing ({', '.join(lost_results[:5])}); "
            "they cannot be rebuilt: classify those zips again"
        )

    # Work the catalog believes is in progress.
    if report.mode == "down":
        jobs = [job_id for job_id, *_ in refs.active_jobs]
        runs = [run_id for run_id, *_ in refs.active_runs]
    else:
        jobs, runs = _stale_work(settings, refs, stale_s)
        live = len(refs.active_jobs) + len(refs.active_runs) - len(jobs) - len(runs)
        if live:
            report.notes.append(f"{live} job(s)/run(s) in progress")
    if jobs or runs:
        what = f"{len(jobs)} job(s) and {len(runs)} training run(s) still marked running but not running"
        if repair:
            catalog.call_sync(catalog_doctor.mark_work_interrupted, jobs, runs)
            report.repaired.append(f"{what}: marked interrupted (runs can be resumed: POST /v1/runs/<id>/resume)")
        else:
            report.problems.append(
                f"{what} ({', '.join([*jobs, *runs][:6])}); --repair marks them interrupted"
                + (" (so does the next 'classifly up')" if report.mode == "down" else "")
            )
        report.interrupted_jobs, report.interrupted_runs = jobs, runs

    # Unreferenced files.
    artifact_prefixes = {uri for _, _, uri, _ in refs.versions if uri} | refs.trial_artifacts
    live_uploads = {key for job_id, key in refs.upload_keys.items() if job_id not in jobs}  # not interrupted
    now = time.time()
    orphans: list[StoredFile] = []
    recent: list[StoredFile] = []
    unknown: set[str] = set()
    for key, file in stored.items():
        top = key.split("/", 1)[0]
        name = key.rsplit("/", 1)[-1]
        if name.startswith(".") and name.endswith(".tmp"):
            referenced = False  # a write that never finished
        elif top == "packs":
            referenced = key in refs.packs
        elif top == "artifacts":
            referenced = _referenced_artifact(key, artifact_prefixes)
        elif top == "exports":
            referenced = _referenced_artifact(key.removeprefix("exports/"), artifact_prefixes)
        elif top == "uploads":
            referenced = key in live_uploads
        elif top == "batch-results":
            referenced = name.removesuffix(".json") in refs.job_ids
        elif top == "incoming":
            referenced = False
        elif top in MANAGED:
            continue
        else:
            unknown.add(top)
            continue
        if referenced:
            continue
        (orphans if _age(file, now) >= grace_s else recent).append(file)
    if unknown:
        report.notes.append(f"left alone, not Classifly's: {', '.join(sorted(unknown))}")
    report.orphans = sorted(file.key for file in orphans)
    report.recent = sorted(file.key for file in recent)
    if orphans:
        size = sum(file.size for file in orphans)
        folders = Counter(file.key.split("/", 1)[0] for file in orphans)
        where = ", ".join(f"{folder}/ {count}" for folder, count in sorted(folders.items()))
        what = f"{len(orphans)} unreferenced file(s), {size / 2**20:.1f} MiB in {where} ({_sample(report.orphans)})"
        if repair:
            for file in orphans:
                blobs.delete(file.key)
            report.repaired.append(f"deleted {what}")
        else:
            report.problems.append(f"{what}; --repair deletes them")
    if recent:
        report.notes.append(
            f"{len(recent)} unreferenced file(s) younger than the grace period ({grace_s:.0f} s), left alone: "
            f"they may belong to work in progress ({_sample(report.recent)})"
        )


def _sample(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _missing_artifact_files(blobs: BlobStore, stored: dict[str, StoredFile], uri: str) -> list[str]:
    manifest_key = f"{uri}/manifest.json"
    if manifest_key not in stored:
        return ["manifest.json"]
    try:
        manifest = json.loads(blobs.get(manifest_key))
        files = list(manifest.get("files", {}).values())
    except (ValueError, AttributeError):
        return ["manifest.json (unreadable)"]
    return [name for name in files if f"{uri}/{name}" not in stored]


def _verify_pictures(
    catalog: Any, blobs: BlobStore, refs: catalog_doctor.CatalogReferences, damaged: dict[str, int]
) -> dict[str, int]:
    """--deep: read every picture and compare its sha256; a pack with a mismatch counts as damaged from the first
    bad picture on (its real size is taken as that picture's offset)."""
    from cluster.blobs import BlobRef

    found: dict[str, int] = {}
    for pack in refs.packs:
        if pack in damaged:
            continue
        rows = catalog.call_sync(catalog_doctor.pictures_in_pack, pack)
        refs_of = [BlobRef(pack, offset, length) for _, offset, length in rows]
        for (sha, offset, _), data in zip(rows, blobs.read_many(refs_of), strict=True):
            if hashlib.sha256(data).hexdigest() != sha:
                found[pack] = offset
                break
    return found


# --- backup and restore -----------------------------------------------------------------------------------------


def _copy_hashed(read: Callable[[], Any], target: Path) -> tuple[str, int]:
    """Copy a readable stream to `target`, returning (sha256, size)."""
    digest = hashlib.sha256()
    size = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with read() as source, open(target, "wb") as sink:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            sink.write(chunk)
            size += len(chunk)
        sink.flush()
        os.fsync(sink.fileno())
    return digest.hexdigest(), size


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _open_blob(blobs: BlobStore, key: str):
    if isinstance(blobs, FsspecBlobStore):
        return lambda: blobs.fs.open(blobs._key(key), "rb")
    return lambda: open(blobs._path(key), "rb")


def backup(settings: Settings, target: str | os.PathLike, out: Callable[[str], None] = print) -> dict[str, Any]:
    """Write a backup of the catalog and the blob store into the folder `target` (new or empty); returns the
    manifest (also written as `target/manifest.json`, last: a folder without it is not a backup)."""
    folder = Path(target).expanduser().resolve()
    if folder.exists() and any(folder.iterdir()):
        raise Conflict(f"{folder} is not empty; back up into a new folder.")
    folder.mkdir(parents=True, exist_ok=True)
    started = time.time()
    blobs = open_blob_store(settings.blob_root)
    # Down: opened writable, so that CHECKPOINT folds a write-ahead log left by a crash into the copied file.
    with open_catalog(settings, writable=True) as (catalog, mode):
        catalog_path = folder / CATALOG_COPY
        if mode == "up":
            import ray

            from cluster.catalog.actor import get_catalog_actor

            ray.get(get_catalog_actor(settings.ray_namespace).snapshot.remote(str(catalog_path)))
        else:
            catalog.snapshot(catalog_path)
        counts = catalog.call_sync(catalog_doctor.table_counts)
    out(f"Catalog copied ({mode}): " + ", ".join(f"{n} {table}" for table, n in counts.items()))
    files: dict[str, dict[str, Any]] = {}
    sha, size = _hash_file(catalog_path)
    files[CATALOG_COPY] = {"sha256": sha, "size": size}
    for key in sorted(list_store(blobs)):
        top, name = key.split("/", 1)[0], key.rsplit("/", 1)[-1]
        if top == "incoming" or (name.startswith(".") and name.endswith(".tmp")):
            continue  # uploads being received and unfinished writes: never referenced
        try:
            sha, size = _copy_hashed(_open_blob(blobs, key), folder / BLOBS_COPY / key)
        except FileNotFoundError:
            continue  # deleted since the listing (an upload finished, an old day of classified pictures)
        files[f"{BLOBS_COPY}/{key}"] = {"sha256": sha, "size": size}
    manifest = {
        "format": BACKUP_FORMAT,
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "taken_while": mode,
        "source": {"catalog": settings.catalog_file, "blobs": settings.blob_root},
        "counts": counts,
        "seconds": round(time.time() - started, 2),
        "files": files,
    }
    temp = folder / f".{MANIFEST}.tmp"
    temp.write_text(json.dumps(manifest, indent=1))
    os.replace(temp, folder / MANIFEST)
    total = sum(entry["size"] for entry in files.values())
    out(f"Backed up {len(files) - 1} stored files and the catalog, {total / 2**20:.1f} MiB, into {folder}.")
    return manifest


def verify_backup(source: str | os.PathLike) -> dict[str, Any]:
    """The backup's manifest, once every file in it is present with its size and sha256; InvalidInput otherwise."""
    folder = Path(source).expanduser().resolve()
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise InvalidInput(f"{folder} is not a Classifly backup (no {MANIFEST}).") from None
    if manifest.get("format") != BACKUP_FORMAT:
        raise InvalidInput(
            f"{folder} is a backup of format {manifest.get('format')}; this Classifly reads {BACKUP_FORMAT}."
        )
    bad = []
    for name, expected in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            bad.append(f"{name} (missing)")
            continue
        sha, size = _hash_file(path)
        if (sha, size) != (expected["sha256"], expected["size"]):
            bad.append(f"{name} (changed)")
    if bad:
        raise InvalidInput(f"The backup in {folder} is damaged: {_sample(bad, 5)}. Nothing was restored.")
    return manifest


def _refuse_if_running(settings: Settings) -> None:
    from cluster.runtime import http_ok

    if platform_address(settings) or http_ok(f"{settings.api_url}/v1/health"):
        raise Conflict("The platform is running. Stop it with 'classifly down', then restore.")
    path = Path(settings.catalog_file)
    if path.exists():
        DirectCatalog(str(path), writable=False).close()  # Conflict when another process holds the file


def restore(
    settings: Settings, source: str | os.PathLike, *, replace: bool = False, out: Callable[[str], None] = print
) -> dict[str, Any]:
    """Restore a backup into the configured data (platform down only). Existing data is moved aside (local
    store) with `replace`, refused otherwise. The blobs go first and the catalog last, so an interrupted
    restore never leaves a catalog pointing at missing files."""
    _refuse_if_running(settings)
    manifest = verify_backup(source)
    folder = Path(source).expanduser().resolve()
    out(f"Backup verified: {len(manifest['files'])} files, taken {manifest['created_at']} ({manifest['counts']}).")
    catalog_path = Path(settings.catalog_file)
    blobs = open_blob_store(settings.blob_root)
    wal = Path(f"{catalog_path}.wal")  # a log left without its file would be replayed into the restored one
    existing = catalog_path.exists() or wal.exists() or any(True for _ in list_store(blobs))
    if existing and not replace:
        raise Conflict(
            f"There is data already ({catalog_path} or the blob store {settings.blob_root}). Restore with --replace "
            "to move it aside (kept next to it, named *.before-restore-<time>)."
        )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if existing:
        for path in (catalog_path, wal):
            if path.exists():
                path.rename(path.with_name(f"{path.name}.before-restore-{stamp}"))
        if not isinstance(blobs, FsspecBlobStore) and blobs.root.exists():
            aside = blobs.root.with_name(f"{blobs.root.name}.before-restore-{stamp}")
            blobs.root.rename(aside)
            out(f"Moved the existing data aside ({aside}, {catalog_path.name}.before-restore-{stamp}).")
            blobs = open_blob_store(settings.blob_root)
    for name in manifest["files"]:
        if name.startswith(f"{BLOBS_COPY}/"):
            blobs.put_file(name.removeprefix(f"{BLOBS_COPY}/"), folder / name)
    catalog_path.parent.mkdir(parents=True, exist_ok=True)
    temp = catalog_path.with_name(f".{catalog_path.name}.restoring")
    shutil.copyfile(folder / CATALOG_COPY, temp)
    with open(temp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(temp, catalog_path)
    out(f"Restored into {settings.data_dir}. Start the platform with 'classifly up'.")
    return manifest
