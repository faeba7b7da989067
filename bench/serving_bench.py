"""Serving benchmark: how fast a published model answers over HTTP, against the model's own limit and the
server a user would write instead, in the same run (``make bench ONLY=serving``).

For a small from-scratch MNIST CNN and an EfficientNet-Lite0 + head on flowers, each trained on one fresh
in-process platform (local Ray with 2 CPUs, the catalog, the Serve app) with a short budget, through the API a
user calls (register, create a model, import a zip, ``POST /v1/models/{id}/train``):

1. **raw-model**: the published model loaded as the platform's replicas load it (cluster/serving.py), in a
   process of its own, no HTTP: median single-picture latency and batched pictures/s of the compiled graph
   (decoding excluded; reported apart). The physical limit of this machine.
2. **plain-fastapi-predict** and **plain-fastapi-compiled**: one FastAPI + uvicorn process per variant that
   decodes each upload with the same preprocessing and calls ``model.predict`` or the compiled
   ``tf.function`` per request (bench/serving_plain.py). What a user would write instead.
3. **classifly**: ``POST /v1/models/{id}/classify`` over HTTP on the platform (Ingress, batching deployments,
   tasks recorded through the task buffer).

Each system answers the same test pictures at concurrency 1, 32 and 256 (the order of the systems rotates per
level); the MNIST model answers 10,000 requests at concurrency 256 on Classifly. The many-pictures endpoint
(32 files in one request) is measured against the raw batched throughput. Memory: the summed RSS of the Serve
processes (controller, proxy, replicas) after both flowers models on the one backbone have answered.

The load generator is aiohttp in a process of its own (one event loop, a connection per concurrent client);
it shares the 2 cores with the servers, as a user's client on the same machine would.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    Context,
    Result,
    Target,
    _psutil,
    format_table,
    git_revision,
    load_average,
    local_ray_processes,
    log,
    write_results,
)
from bench.datasets import BuiltZip, DatasetMissing, flowers_zip, mnist_png_zip
from bench.platform import Platform, check, new_user, start_platform

NAME = "serving"
LEVELS = (1, 32, 256)
MANY_FILES = 32  # pictures in one request to the many-pictures endpoint
P50_MARGIN_MS = 15.0
THROUGHPUT_VS_PLAIN = 1.5
LITE0_VS_RAW = 0.70
MANY_VS_RAW = 0.50
BIG_RUN_REQUESTS = 10_000
BIG_RUN_SECONDS = 30.0
MEMORY_LIMIT_MB = 3072.0
SERVER_START_DEADLINE_S = 180.0
TRAIN_DEADLINE_S = 900.0
TITLES = {"mnist": "MNIST", "flowers": "flowers"}
SYSTEMS = ("classifly", "plain-fastapi-compiled", "plain-fastapi-predict")


@dataclass(frozen=True)
class Sizes:
    """Requests per concurrency level, and the longest a level may run (slow baselines stop there)."""

    limit_per_class: dict[str, int | None]
    requests: dict[int, int]
    big_run: int  # MNIST on Classifly at concurrency 256
    max_seconds: float
    many_requests: int
    raw_seconds: float
    budget_s: int
    max_epochs: int


FULL = Sizes({"mnist": 300, "flowers": None}, {1: 200, 32: 2000, 256: 4000}, BIG_RUN_REQUESTS, 15.0, 60, 5.0, 120, 3)
QUICK = Sizes({"mnist": 10, "flowers": 6}, {1: 10, 32: 64, 256: 256}, 512, 5.0, 4, 1.0, 30, 1)


@dataclass
class Load:
    """What one load run saw: latencies of the answered requests, errors, wall time."""

    requests: int = 0
    ok: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    first_error: str | None = None
    pictures_per_request: int = 1
    server_ms: list[float] = field(default_factory=list)  # Classifly's own `latency_ms` (receipt to answers)

    @property
    def throughput(self) -> float | None:
        return self.ok / self.seconds if self.seconds > 0 and self.ok else None

    @property
    def pictures_per_s(self) -> float | None:
        return self.throughput * self.pictures_per_request if self.throughput else None

    def percentile(self, share: float) -> float | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


# --- the load generator (a process of its own) -------------------------------------------------------------


def run_load(
    url: str,
    headers: dict[str, str],
    pictures: list[tuple[str, bytes]],
    concurrency: int,
    requests: int,
    max_seconds: float,
    field_name: str = "files",
    per_request: int = 1,
) -> Load:
    """`requests` POSTs of multipart pictures (cycling through `pictures`, `per_request` each) with
    `concurrency` clients; clients stop taking new requests after `max_seconds`."""
    return asyncio.run(_load(url, headers, pictures, concurrency, requests, max_seconds, field_name, per_request))


async def _load(url, headers, pictures, concurrency, requests, max_seconds, field_name, per_request) -> Load:
    import aiohttp

    result = Load(pictures_per_request=per_request)
    counter = iter(range(requests))
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=300)
    started = time.perf_counter()
    deadline = started + max_seconds

    async def client(session: aiohttp.ClientSession) -> None:
        for index in counter:
            if time.perf_counter() > deadline:
                return
            form = aiohttp.FormData()
            for offset in range(per_request):
                name, data = pictures[(index * per_request + offset) % len(pictures)]
                form.add_field(field_name, data, filename=name, content_type="application/octet-stream")
            begin = time.perf_counter()
            result.requests += 1
            try:
                async with session.post(url, data=form, headers=headers) as response:
                    body = await response.read()
                    if response.status == 200:
                        result.ok += 1
                        result.latencies_ms.append((time.perf_counter() - begin) * 1000)
                        if b'"latency_ms"' in body:
                            result.server_ms.append(float(json.loads(body)["latency_ms"]))
                    else:
                        result.errors += 1
                        result.first_error = result.first_error or f"HTTP {response.status}: {body[:300]!r}"
            except Exception as error:  # noqa: BLE001 - counted; the run goes on
                result.errors += 1
                result.first_error = result.first_error or f"{type(error).__name__}: {error}"

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result


class LoadProcess:
    """One spawned process that runs the load runs, so the client's CPU is not this process's (Ray driver)."""

    def __init__(self) -> None:
        self.pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))

    def run(self, *args: Any, **kwargs: Any) -> Load:
        return self.pool.submit(run_load, *args, **kwargs).result()

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


# --- models -------------------------------------------------------------------------------------------------


@dataclass
class Served:
    """A model trained and published on the platform, and what the baselines need to load it."""

    key: str
    model_id: str
    version: int
    artifact_uri: str
    pictures: list[tuple[str, bytes]]
    train_seconds: float
    accuracy: float | None
    winner: str | None


def test_pictures(built: BuiltZip, count: int) -> list[tuple[str, bytes]]:
    """The first `count` test pictures of the zip (cycling through the classes), as (name, bytes)."""
    with zipfile.ZipFile(built.path) as archive:
        names = [n for n in archive.namelist() if n.startswith("test/") and not n.endswith("/")]
        by_class: dict[str, list[str]] = {}
        for name in names:
            by_class.setdefault(name.split("/")[1], []).append(name)
        chosen: list[str] = []
        while len(chosen) < count and any(by_class.values()):
            for members in by_class.values():
                if members and len(chosen) < count:
                    chosen.append(members.pop(0))
        return [(Path(name).name, archive.read(name)) for name in chosen]


def train_model(
    platform: Platform, headers: dict[str, str], built: BuiltZip, key: str, name: str, body: dict[str, Any]
) -> tuple[str, int, float, dict[str, Any]]:
    """Create a model, import the zip, train it with `body`; (model id, version, seconds, run result)."""
    http = platform.http
    model = check(http.post("/v1/models", json={"name": name}, headers=headers), 201, "model")
    job = check(
        http.post(
            f"/v1/models/{model['id']}/imports",
            content=built.path.read_bytes(),
            headers={**headers, "Content-Type": "application/zip"},
        ),
        202,
        "import",
    )
    job = _wait_final(http, job["url"], headers, ("queued", "running"), TRAIN_DEADLINE_S, "import")
    if job["status"] != "succeeded":
        raise RuntimeError(f"the {key} import ended {job['status']}: {job.get('error') or job.get('message')}")
    started = time.perf_counter()
    run = check(http.post(f"/v1/models/{model['id']}/train", json=body, headers=headers), 202, "train")
    run = _wait_final(http, run["url"], headers, ("queued", "running"), TRAIN_DEADLINE_S, "training run")
    seconds = time.perf_counter() - started
    if run["status"] != "succeeded":
        raise RuntimeError(f"the {key} training ended {run['status']}: {run.get('error') or run.get('progress')}")
    result = run.get("result") or {}
    return model["id"], int(result["version"]), seconds, result


def _wait_final(http, url: str, headers, running: tuple[str, ...], deadline_s: float, what: str) -> dict[str, Any]:
    end = time.monotonic() + deadline_s
    while True:
        current = check(http.get(url, headers=headers), 200, what)
        if current["status"] not in running:
            return current
        if time.monotonic() > end:
            raise RuntimeError(f"the {what} was still {current['status']} after {deadline_s:.0f} s")
        time.sleep(0.5)


def artifact_of(settings: Any, owner: str, model_id: str, version: int) -> str:
    """The version's stored model, read through the catalog actor (the API does not show blob keys)."""
    from cluster.catalog import runs as catalog_runs
    from cluster.catalog.actor import RayCatalog, get_catalog_actor

    catalog = RayCatalog(get_catalog_actor(settings.ray_namespace))
    record = catalog.call_sync(catalog_runs.get_version, owner, model_id, version)
    if not record.artifact_uri:
        raise RuntimeError(f"version {version} of {model_id} has no artifact")
    return record.artifact_uri


# --- the baselines' processes -------------------------------------------------------------------------------


def plain_command(settings: Any, artifact: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.serving_plain",
        *extra[:1],
        "--blob-root",
        settings.blob_root,
        "--artifact",
        artifact,
        "--backbones",
        str(settings.data_dir / "backbones"),
        *extra[1:],
    ]


def measure_raw(settings: Any, served: Served, folder: Path, seconds: float) -> dict[str, float]:
    folder.mkdir(parents=True, exist_ok=True)
    for index, (name, data) in enumerate(served.pictures):
        (folder / f"{index:03d}-{name}").write_bytes(data)
    batch = "64" if served.key == "mnist" else "32"
    command = plain_command(
        settings, served.artifact_uri, "raw", "--pictures", str(folder), "--batch", batch, "--seconds", str(seconds)
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=_child_env())
    if done.returncode != 0:
        raise RuntimeError(f"raw measurement failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child_env() -> dict[str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


class PlainServer:
    """A plain FastAPI + uvicorn process serving one model; stopped with SIGTERM."""

    def __init__(self, settings: Any, served: Served, mode: str, log_dir: Path):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"plain-{served.key}-{mode}.log"
        command = plain_command(settings, served.artifact_uri, "serve", "--mode", mode, "--port", str(self.port))
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - the child's output, closed in stop()
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=_child_env())

    def wait_ready(self, deadline_s: float = SERVER_START_DEADLINE_S) -> None:
        import httpx

        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"plain server exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"plain server not healthy after {deadline_s:.0f} s")

    def rss_mb(self) -> float:
        try:
            return _psutil().Process(self.process.pid).memory_info().rss / 2**20
        except Exception:  # noqa: BLE001 - gone: nothing to report
            return 0.0

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.log.close()


# --- memory ---------------------------------------------------------------------------------------------------

SERVE_MARKERS = ("ServeController", "ProxyActor", "ServeReplica")


def serving_memory() -> dict[str, float]:
    """Summed RSS (MB) of the Serve processes (controller, proxy, replicas) and of the whole local Ray."""
    psutil = _psutil()
    serve_mb = ray_mb = 0.0
    replicas = 0
    for process in local_ray_processes():
        try:
            rss = process.memory_info().rss / 2**20
            title = " ".join(process.cmdline()) or process.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        ray_mb += rss
        if any(marker in title for marker in SERVE_MARKERS):
            serve_mb += rss
            replicas += "ServeReplica" in title
    return {"serve_rss_mb": serve_mb, "ray_rss_mb": ray_mb, "serve_replica_processes": replicas}


# --- the run --------------------------------------------------------------------------------------------------


def run(ctx: Context) -> Path | None:
    quick = ctx.smoke
    sizes = QUICK if quick else FULL
    notes: list[str] = []
    built: dict[str, BuiltZip] = {}
    for key, builder in (("mnist", mnist_png_zip), ("flowers", flowers_zip)):
        if not ctx.wants(key):
            continue
        limit = ctx.limit_per_class if ctx.limit_per_class is not None else sizes.limit_per_class[key]
        try:
            built[key] = builder(ctx.data_dir, ctx.cache_dir, limit_per_class=limit)
            log(f"{TITLES[key]}: {built[key].images:,} pictures ({built[key].path.name})")
        except DatasetMissing as missing:
            log(str(missing))
            notes.append(str(missing))
    if not built:
        log("serving benchmark skipped: no dataset found")
        return None

    load_before = load_average()
    results: list[Result] = []
    targets: list[Target] = []
    loads = LoadProcess()
    try:
        with tempfile.TemporaryDirectory(prefix="classifly-bench-serving-") as work:
            work_dir = Path(work)
            with start_platform(work_dir) as platform:
                log(f"platform healthy after {platform.start_seconds:.1f} s")
                found, goals, said = _run_on_platform(platform, built, sizes, work_dir, loads)
                results += found
                targets += goals
                notes += said
    finally:
        loads.close()

    notes += method_notes(sizes, quick, load_before)
    settings = {
        "datasets": list(built),
        "images": {key: dataset.per_split for key, dataset in built.items()},
        "concurrency": list(LEVELS),
        "requests": {str(level): count for level, count in sizes.requests.items()},
        "big_run_requests": sizes.big_run,
        "max_seconds_per_level": sizes.max_seconds,
        "many_files_per_request": MANY_FILES,
        "train_budget_s": sizes.budget_s,
        "smoke": quick,
        "ray_cpus": min(2, os.cpu_count() or 1),
        "revision": git_revision(),
    }
    path = write_results(NAME, settings, results, targets, notes, results_dir=ctx.results_dir)
    print(format_table(results, targets))
    for note in notes:
        print(f"note: {note}")
    log(f"wrote {path}")
    return path


def _run_on_platform(
    platform: Platform, built: dict[str, BuiltZip], sizes: Sizes, work_dir: Path, loads: LoadProcess
) -> tuple[list[Result], list[Target], list[str]]:
    settings = platform.settings
    http = platform.http
    headers = new_user(platform, "bench-serving")
    owner = check(http.get("/v1/me", headers=headers), 200, "me")["id"]
    results: list[Result] = []
    targets: list[Target] = []
    notes: list[str] = []
    served: dict[str, Served] = {}
    bodies = {
        "mnist": {"kinds": ["scratch_cnn"], "max_epochs": sizes.max_epochs, "time_budget_s": sizes.budget_s},
        "flowers": {
            "kinds": ["frozen_head"],
            "backbones": ["efficientnet_lite0"],
            "max_epochs": max(5, sizes.max_epochs),
            "time_budget_s": sizes.budget_s,
        },
    }
    for key, dataset in built.items():
        log(f"{TITLES[key]}: import and train ({bodies[key]}) …")
        model_id, version, seconds, result = train_model(platform, headers, dataset, key, f"{key} model", bodies[key])
        served[key] = Served(
            key,
            model_id,
            version,
            artifact_of(settings, owner, model_id, version),
            test_pictures(dataset, 32),
            seconds,
            result.get("accuracy"),
            (result.get("winner") or {}).get("title"),
        )
        log(f"  version {version} in {seconds:.0f} s: {served[key].winner}, test accuracy {served[key].accuracy}")
        results += [
            Result("classifly", f"{key}.train_seconds", seconds, "s"),
            Result("classifly", f"{key}.test_accuracy", served[key].accuracy),
        ]
    second_flowers = None
    if "flowers" in built:
        log("flowers: a second model on the same backbone (for memory with two models) …")
        second_flowers, _, _, _ = train_model(
            platform, headers, built["flowers"], "flowers", "flowers model 2", bodies["flowers"]
        )

    for key, model in served.items():
        url = f"{platform.url}/v1/models/{model.model_id}/classify"
        # Warm: the replicas load TensorFlow and the model on their first picture.
        check(http.post(url, files=[("files", model.pictures[0])], headers=headers, timeout=300), 200, "warm-up")
        log(f"{TITLES[key]}: raw model …")
        raw = measure_raw(settings, model, work_dir / f"pictures-{key}", sizes.raw_seconds)
        log(f"  single {raw['single_ms']:.2f} ms, batched {raw['batched_ips']:.0f} pictures/s")
        results += [
            Result("raw-model", f"{key}.single_ms", raw["single_ms"], "ms"),
            Result("raw-model", f"{key}.batched_pictures_per_s", raw["batched_ips"], "pictures/s"),
            Result("raw-model", f"{key}.decode_ms", raw["decode_ms"], "ms"),
        ]
        plain = {mode: PlainServer(settings, model, mode, work_dir) for mode in ("compiled", "predict")}
        try:
            for server in plain.values():
                server.wait_ready()
            urls = {
                "classifly": url,
                "plain-fastapi-compiled": f"{plain['compiled'].url}/classify",
                "plain-fastapi-predict": f"{plain['predict'].url}/classify",
            }
            fields = {"classifly": "files", "plain-fastapi-compiled": "file", "plain-fastapi-predict": "file"}
            measured: dict[tuple[str, int], Load] = {}
            for position, level in enumerate(LEVELS):
                order = SYSTEMS[position % 3 :] + SYSTEMS[: position % 3]
                for system in order:
                    count = sizes.requests[level]
                    limit_s = sizes.max_seconds
                    if system == "classifly" and key == "mnist" and level == 256:
                        count, limit_s = sizes.big_run, max(sizes.max_seconds, 4 * BIG_RUN_SECONDS)
                    auth = headers if system == "classifly" else {}
                    done = loads.run(urls[system], auth, model.pictures, level, count, limit_s, fields[system])
                    measured[(system, level)] = done
                    log(
                        f"  {system} c{level}: {done.ok}/{done.requests} ok in {done.seconds:.1f} s, "
                        f"{done.throughput or 0:.1f} req/s, p50 {done.percentile(0.5) or 0:.1f} ms"
                        + (f", first error {done.first_error}" if done.first_error else "")
                    )
                    results += _load_results(system, key, level, done)
            plain_rss = {mode: server.rss_mb() for mode, server in plain.items()}
        finally:
            for server in plain.values():
                server.stop()
        results += [Result(f"plain-fastapi-{mode}", f"{key}.rss_mb", mb, "MB") for mode, mb in plain_rss.items()]
        many = loads.run(url, headers, model.pictures, 4, sizes.many_requests, sizes.max_seconds, "files", MANY_FILES)
        log(f"  classifly many ({MANY_FILES} files/request, c4): {many.pictures_per_s or 0:.0f} pictures/s")
        results += [
            Result("classifly", f"{key}.many.pictures_per_s", many.pictures_per_s, "pictures/s"),
            Result("classifly", f"{key}.many.errors", many.errors),
        ]
        targets += _targets(key, raw, measured, many)
        notes += _first_errors(key, measured, many)

    if second_flowers is not None:
        url2 = f"{platform.url}/v1/models/{second_flowers}/classify"
        check(http.post(url2, files=[("files", served["flowers"].pictures[1])], headers=headers), 200, "model 2")
    memory = serving_memory()
    results += [
        Result("classifly", "serve_rss_mb", memory["serve_rss_mb"], "MB"),
        Result("classifly", "ray_rss_mb", memory["ray_rss_mb"], "MB"),
        Result("classifly", "serve_replica_processes", memory["serve_replica_processes"]),
    ]
    if second_flowers is not None:
        targets.append(
            Target(
                "serving memory, two models on one backbone",
                "serve_rss_mb",
                memory["serve_rss_mb"],
                "<=",
                MEMORY_LIMIT_MB,
            )
        )
    for key, model in served.items():
        listed = check(http.get(f"/v1/tasks?model_id={model.model_id}&limit=1", headers=headers), 200, "tasks")
        results.append(Result("classifly", f"{key}.tasks_recorded", listed["count"]))
    return results, targets, notes


def _load_results(system: str, key: str, level: int, done: Load) -> list[Result]:
    prefix = f"{key}.c{level}"
    return [
        Result(system, f"{prefix}.throughput_rps", done.throughput, "req/s"),
        Result(system, f"{prefix}.p50_ms", done.percentile(0.5), "ms"),
        Result(system, f"{prefix}.p99_ms", done.percentile(0.99), "ms"),
        *(
            [Result(system, f"{prefix}.server_p50_ms", sorted(done.server_ms)[len(done.server_ms) // 2], "ms")]
            if done.server_ms
            else []
        ),
        Result(system, f"{prefix}.answered", done.ok),
        Result(system, f"{prefix}.errors", done.errors),
        Result(system, f"{prefix}.seconds", done.seconds, "s"),
    ]


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    return ours / theirs if ours is not None and theirs else None


def _targets(key: str, raw: dict[str, float], measured: dict[tuple[str, int], Load], many: Load) -> list[Target]:
    title = TITLES[key]
    ours = measured[("classifly", 32)]
    goals = [
        Target(
            f"{title}: p50 at concurrency 1 ≤ raw single + {P50_MARGIN_MS:.0f} ms ({raw['single_ms']:.1f} ms)",
            f"{key}.c1.p50_ms",
            measured[("classifly", 1)].percentile(0.5),
            "<=",
            round(raw["single_ms"] + P50_MARGIN_MS, 2),
        ),
        Target(
            f"{title}: throughput at concurrency 32 vs the compiled plain server",
            f"{key}.c32.throughput_vs_plain_compiled",
            _ratio(ours.throughput, measured[("plain-fastapi-compiled", 32)].throughput),
            ">=",
            THROUGHPUT_VS_PLAIN,
        ),
    ]
    if key == "flowers":
        goals.append(
            Target(
                f"{title}: throughput at concurrency 32 vs raw batched",
                f"{key}.c32.throughput_vs_raw_batched",
                _ratio(ours.throughput, raw["batched_ips"]),
                ">=",
                LITE0_VS_RAW,
            )
        )
    if key == "mnist":
        big = measured[("classifly", 256)]
        complete = big.ok == big.requests and big.requests >= BIG_RUN_REQUESTS
        goals += [
            Target(
                f"{title}: {big.requests:,} requests at concurrency 256 (seconds)",
                f"{key}.c256.seconds",
                big.seconds if complete else None,
                "<=",
                BIG_RUN_SECONDS,
            ),
            Target(
                f"{title}: errors at concurrency 256",
                f"{key}.c256.errors",
                big.requests - big.ok,
                "==",
                0,
            ),
            Target(
                f"{title}: many-pictures endpoint vs raw batched",
                f"{key}.many.vs_raw_batched",
                _ratio(many.pictures_per_s, raw["batched_ips"]),
                ">=",
                MANY_VS_RAW,
            ),
        ]
    return goals


def _first_errors(key: str, measured: dict[tuple[str, int], Load], many: Load) -> list[str]:
    notes = []
    for (system, level), done in measured.items():
        if done.first_error:
            notes.append(f"{TITLES[key]} {system} c{level}: {done.errors} errors, first: {done.first_error}")
    if many.first_error:
        notes.append(f"{TITLES[key]} classifly many pictures: {many.errors} errors, first: {many.first_error}")
    return notes


def method_notes(sizes: Sizes, quick: bool, load_before: str) -> list[str]:
    notes = [
        "Client and servers share the machine's 2 cores: the load generator (aiohttp, one process, one event "
        "loop) takes CPU the servers would otherwise have. The raw model ran alone (the platform idle).",
        f"Per level, every system gets at most {sizes.requests} requests and stops taking new ones after "
        f"{sizes.max_seconds:.0f} s (slow baselines answer fewer); the MNIST model on Classifly gets "
        f"{sizes.big_run:,} requests at concurrency 256, cut after {4 * BIG_RUN_SECONDS:.0f} s (4x the target).",
        "raw-model: the published model loaded as the serving replicas load it, compiled tf.function, decoding "
        "excluded (decode_ms is the cost of decoding one test picture with the model's preprocessing). Lite0's "
        "raw figures include the head (numpy) and the mirror view when the head was trained on mirrored pictures.",
        "Throughput is answered requests per second of wall time; p50/p99 are per-request latencies seen by the "
        "client; server_p50_ms is Classifly's own latency_ms (Ingress receipt to answers; the rest is the HTTP "
        "proxy, the hop to the Ingress and the client). classifly answers also record a task per picture "
        "(tasks_recorded counts them afterwards).",
        f"Load average (1, 5, 15 min) before the run: {load_before}; after: {load_average()}. Other engineers' "
        "work shared the machine during the run.",
    ]
    if quick:
        notes.append("Smoke sizes (--quick): the figures only show that the benchmark runs.")
    return notes
