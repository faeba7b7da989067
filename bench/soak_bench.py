"""Soak benchmark: a bounded load of mixed traffic on loopback against a real platform, watching errors and memory.

1. A fresh in-process platform (local Ray with 2 CPUs, the catalog, the Serve app), driven over HTTP: register,
   create a model, import a small zip of two classes (noisy horizontal and vertical stripes, 16 px, made with
   numpy + Pillow here), train it (a from-scratch CNN, 2 epochs) so that a version serves, and create a second
   model without a version that collects uploads.
2. The load: `WORKERS` client threads, each sending one request after the other for the whole duration, each
   request drawn (seeded) from the mix: classify one picture (70 %), give feedback on a recent answer (20 %:
   confirm or correct it), upload one new picture to the second model (10 %; uploads to the served model would
   start a model update each, which is another benchmark's subject). Every answer other than the expected
   2xx, and every transport error, counts as an error.
3. Memory: the summed resident memory (RSS) of every process of that Ray cluster (the platform: GCS, raylet,
   workers, the catalog and jobs actors, the Serve controller, proxy and replicas), sampled every 2 s. The first
   `warmup` seconds are not judged (replicas load TensorFlow and the model on first use); growth compares the
   median of the last minute with the median of the first minute after the warm-up (quick mode: 5 s each).

Targets (issue 8): 0 errors; resident memory growth ≤ 10 % after the warm-up. Quick mode (`--quick`): 30 s of
load after a 10 s warm-up, to check the benchmark code itself.
"""

from __future__ import annotations

import io
import random
import statistics
import tempfile
import threading
import time
import zipfile
import zlib
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    Context,
    Result,
    Target,
    format_table,
    git_revision,
    load_average,
    local_ray_processes,
    log,
    own_process,
    pyplot,
    save_figure,
    write_results,
)
from bench.platform import Platform, check, new_user, start_platform

NAME = "soak"
FULL = {"duration_s": 600.0, "warmup_s": 120.0, "window_s": 60.0}
QUICK = {"duration_s": 40.0, "warmup_s": 10.0, "window_s": 5.0}
WORKERS = 4
MIX = (("classify", 0.7), ("feedback", 0.2), ("upload", 0.1))
SAMPLE_EVERY_S = 2.0
GROWTH_LIMIT = 0.10
TRAIN = {"kinds": ["scratch_cnn"], "max_epochs": 2, "time_budget_s": 180}
SEED = 8


def stripes(label: str, index: int, size: int = 16) -> bytes:
    """One noisy picture of horizontal or vertical stripes (distinct for each index)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(zlib.crc32(f"{label}/{index}".encode()))
    axis = 0 if label == "horizontal" else 1
    pattern = (np.indices((size, size))[axis] // 2 % 2) * 200
    noisy = np.clip(pattern + rng.integers(0, 55, (size, size)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()


def stripes_zip(per_class: int = 20) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for label in ("horizontal", "vertical"):
            for index in range(per_class):
                archive.writestr(f"{label}/{index}.png", stripes(label, index))
    return buffer.getvalue()


def wait_final(platform: Platform, headers: dict[str, str], url: str, deadline_s: float) -> dict[str, Any]:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        body = check(platform.http.get(url, headers=headers), 200, url)
        if body["status"] not in ("queued", "running"):
            return body
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not finish within {deadline_s:.0f} s")


@dataclass
class Prepared:
    headers: dict[str, str]
    served_model: str
    inbox_model: str
    setup_seconds: float


def prepare(platform: Platform) -> Prepared:
    """A user, a trained two-class model, and a model to upload to."""
    started = time.perf_counter()
    headers = new_user(platform, "soak")
    http = platform.http
    served = check(http.post("/v1/models", json={"name": "Stripes"}, headers=headers), 201, "create model")["id"]
    imported = http.post(
        f"/v1/models/{served}/imports", content=stripes_zip(), headers={**headers, "Content-Type": "application/zip"}
    )
    check(imported, 202, "import")
    job = wait_final(platform, headers, imported.headers["Location"], 300)
    if job["status"] != "succeeded":
        raise RuntimeError(f"import: {job}")
    started_run = http.post(f"/v1/models/{served}/train", json=TRAIN, headers=headers)
    check(started_run, 202, "train")
    run = wait_final(platform, headers, started_run.headers["Location"], 900)
    if run["status"] != "succeeded":
        raise RuntimeError(f"training: {run.get('status')} {run.get('error')}")
    inbox = check(http.post("/v1/models", json={"name": "Inbox"}, headers=headers), 201, "create model")["id"]
    return Prepared(headers, served, inbox, time.perf_counter() - started)


@dataclass
class Traffic:
    """What the client threads did: per kind, latencies of the answers and the errors."""

    started: float = field(default_factory=time.monotonic)
    latencies: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    tasks: deque = field(default_factory=lambda: deque(maxlen=500))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, seconds: float, problem: str | None) -> None:
        with self.lock:
            self.latencies[kind].append((time.monotonic() - self.started, seconds))
            if problem is not None:
                self.errors[kind] += 1
                if len(self.error_samples) < 10:
                    self.error_samples.append(f"{kind}: {problem[:300]}")


def client(
    url: str, prepared: Prepared, traffic: Traffic, pictures: list[bytes], stop: threading.Event, seed: int
) -> None:
    import httpx

    rng = random.Random(seed)
    kinds, weights = zip(*MIX, strict=True)
    uploaded = 0
    with httpx.Client(base_url=url, timeout=60, headers=prepared.headers) as http:
        while not stop.is_set():
            kind = rng.choices(kinds, weights)[0]
            with traffic.lock:
                task = traffic.tasks[rng.randrange(len(traffic.tasks))] if traffic.tasks else None
            if kind == "feedback" and task is None:
                kind = "classify"
            started = time.perf_counter()
            problem = None
            try:
                if kind == "classify":
                    picture = pictures[rng.randrange(len(pictures))]
                    response = http.post(
                        f"/v1/models/{prepared.served_model}/classify", files={"files": ("p.png", picture, "image/png")}
                    )
                    if response.status_code == 200:
                        task_id = response.json()["results"][0].get("task_id")
                        if task_id:
                            with traffic.lock:
                                traffic.tasks.append(task_id)
                        else:
                            problem = f"no task id: {response.text}"
                elif kind == "feedback":
                    body = (
                        {"correct": True} if rng.random() < 0.5 else {"label": rng.choice(["horizontal", "vertical"])}
                    )
                    response = http.post(f"/v1/tasks/{task}/feedback", json=body)
                else:
                    uploaded += 1
                    label = "horizontal" if uploaded % 2 else "vertical"
                    picture = stripes(label, 100_000 * (seed + 1) + uploaded)
                    response = http.post(
                        f"/v1/models/{prepared.inbox_model}/images",
                        data={"label": label},
                        files={"files": (f"u{uploaded}.png", picture, "image/png")},
                    )
                expected = 201 if kind == "upload" else 200
                if problem is None and response.status_code != expected:
                    problem = f"HTTP {response.status_code} {response.text}"
            except httpx.HTTPError as error:
                problem = f"{type(error).__name__}: {error}"
            traffic.record(kind, time.perf_counter() - started, problem)


@dataclass
class MemorySeries:
    """(seconds since the load started, platform MB, platform processes, bench process MB), every few seconds."""

    points: list[tuple[float, float, int, float]] = field(default_factory=list)

    def run(self, started: float, stop: threading.Event) -> None:
        from bench.common import _psutil

        psutil = _psutil()
        while True:
            total, count = 0, 0
            for process in local_ray_processes():
                try:
                    total += process.memory_info().rss
                    count += 1
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
            own = sum(p.memory_info().rss for p in own_process())
            self.points.append((time.monotonic() - started, total / 2**20, count, own / 2**20))
            if stop.wait(SAMPLE_EVERY_S):
                return

    def window(self, start: float, end: float) -> list[float]:
        return [mb for t, mb, _, _ in self.points if start <= t <= end]


def trend_per_minute(points: list[tuple[float, float, int, float]]) -> float | None:
    """The least-squares slope of the platform's memory over the judged part of the run, in MB per minute: a
    growth within the limit that has not levelled off shows here."""
    if len(points) < 3:
        return None
    times = [p[0] for p in points]
    values = [p[1] for p in points]
    mean_t, mean_v = statistics.fmean(times), statistics.fmean(values)
    spread = sum((t - mean_t) ** 2 for t in times)
    if spread == 0:
        return None
    return 60 * sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values, strict=True)) / spread


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run_load(platform: Platform, prepared: Prepared, plan: dict[str, float]) -> tuple[Traffic, MemorySeries]:
    pictures = [stripes(label, 1000 + i) for label in ("horizontal", "vertical") for i in range(25)]
    traffic = Traffic()
    memory = MemorySeries()
    stop, stop_memory = threading.Event(), threading.Event()
    sampler = threading.Thread(target=memory.run, args=(traffic.started, stop_memory), daemon=True)
    sampler.start()
    threads = [
        threading.Thread(target=client, args=(platform.url, prepared, traffic, pictures, stop, SEED + n), daemon=True)
        for n in range(WORKERS)
    ]
    for thread in threads:
        thread.start()
    end = traffic.started + plan["duration_s"]
    next_log = traffic.started + 60
    while time.monotonic() < end:
        time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        if time.monotonic() >= next_log:
            next_log += 60
            done = sum(len(v) for v in traffic.latencies.values())
            last = memory.points[-1] if memory.points else (0, 0, 0, 0)
            log(
                f"soak: {time.monotonic() - traffic.started:.0f} s, {done} requests, "
                f"{sum(traffic.errors.values())} errors, platform {last[1]:.0f} MB in {last[2]} processes"
            )
    stop.set()
    for thread in threads:
        thread.join(timeout=120)
    stop_memory.set()
    sampler.join(timeout=30)
    return traffic, memory


def collect(
    traffic: Traffic, memory: MemorySeries, plan: dict[str, float], prepared: Prepared
) -> tuple[list[Result], list[Target], dict[str, Any]]:
    duration, warmup, window = plan["duration_s"], plan["warmup_s"], plan["window_s"]
    results: list[Result] = []
    total = errors = 0
    for kind, _ in MIX:
        samples = traffic.latencies.get(kind, [])
        seconds = [s for _, s in samples]
        total += len(samples)
        errors += traffic.errors.get(kind, 0)
        results.append(Result("classifly", f"{kind}.requests", len(samples)))
        results.append(Result("classifly", f"{kind}.errors", traffic.errors.get(kind, 0)))
        for name, share in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            value = percentile(seconds, share)
            results.append(
                Result("classifly", f"{kind}.latency_{name}_ms", None if value is None else value * 1000, "ms")
            )
    results.append(Result("classifly", "requests", total))
    results.append(Result("classifly", "errors", errors))
    results.append(Result("classifly", "requests_per_s", total / duration, "req/s"))
    first = memory.window(warmup, warmup + window)
    last = memory.window(duration - window, duration + SAMPLE_EVERY_S)
    baseline = statistics.median(first) if first else None
    final = statistics.median(last) if last else None
    growth = (final - baseline) / baseline if baseline and final is not None else None
    after = [point for point in memory.points if point[0] >= warmup]
    results += [
        Result("classifly", "memory_after_warmup_mb", baseline, "MB"),
        Result("classifly", "memory_at_end_mb", final, "MB"),
        Result("classifly", "memory_growth_pct", None if growth is None else growth * 100, "%"),
        Result("classifly", "memory_peak_mb", max((p[1] for p in after), default=None), "MB"),
        Result("classifly", "memory_trend_mb_per_min", trend_per_minute(after), "MB/min"),
        Result("classifly", "processes_after_warmup", after[0][2] if after else None),
        Result("classifly", "processes_at_end", after[-1][2] if after else None),
        Result("bench-client", "memory_at_end_mb", memory.points[-1][3] if memory.points else None, "MB"),
        Result("classifly", "setup_seconds", prepared.setup_seconds, "s"),
    ]
    targets = [
        Target("no errors", "errors", errors, "==", 0),
        Target("memory growth after warm-up", "memory_growth_pct", None if growth is None else growth * 100, "<=", 10),
    ]
    series = {"points": memory.points, "warmup_s": warmup, "window_s": window, "duration_s": duration}
    return results, targets, series


def plot(series: dict[str, Any], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    points = series["points"]
    figure, axis = plt.subplots(figsize=(8, 3.5))
    axis.plot([p[0] for p in points], [p[1] for p in points], label="platform processes (summed RSS)")
    axis.axvspan(0, series["warmup_s"], color="0.9", label="warm-up (not judged)")
    axis.set_xlabel("seconds of load")
    axis.set_ylabel("MB")
    axis.set_title("Soak: resident memory of the platform under mixed traffic")
    axis.legend(loc="lower right")
    save_figure(figure, path)
    return True


def run(ctx: Context) -> Path | None:
    plan = QUICK if ctx.smoke else FULL
    load_before = load_average()
    log(f"soak: {plan['duration_s']:.0f} s of load, {plan['warmup_s']:.0f} s warm-up, {WORKERS} clients")
    with tempfile.TemporaryDirectory(prefix="soak-", dir=ctx.cache_dir) as work, start_platform(Path(work)) as platform:
        log(f"soak: platform up in {platform.start_seconds:.0f} s; training the model")
        prepared = prepare(platform)
        log(f"soak: model trained in {prepared.setup_seconds:.0f} s; load starts")
        traffic, memory = run_load(platform, prepared, plan)
    results, targets, series = collect(traffic, memory, plan, prepared)
    notes = [
        f"Mix {', '.join(f'{kind} {share:.0%}' for kind, share in MIX)}, {WORKERS} client threads back to back on "
        "loopback; one picture per classify request (16 px PNG, a from-scratch CNN version served whole); feedback "
        "confirms or corrects a recent answer; uploads go to a second model without a version (no model updates).",
        "Memory: summed RSS of every process of the benchmark's Ray cluster, sampled every 2 s; growth = median of "
        f"the last {plan['window_s']:.0f} s against the median of the first {plan['window_s']:.0f} s after the "
        f"{plan['warmup_s']:.0f} s warm-up. Shared pages count once per process, so the sum overstates use; the "
        "growth is the figure that matters.",
        f"Load average before: {load_before}; after: {load_average()}. Commit {git_revision()}.",
        *[f"error sample: {sample}" for sample in traffic.error_samples],
    ]
    path = Path(ctx.results_dir) / f"{NAME}-memory.png"
    if not plot(series, path):
        notes.append("No plot: matplotlib is not installed.")
    settings = {
        "duration_s": plan["duration_s"],
        "warmup_s": plan["warmup_s"],
        "workers": WORKERS,
        "mix": dict(MIX),
        "smoke": ctx.smoke,
    }
    written = write_results(NAME, settings, results, targets, notes, results_dir=ctx.results_dir)
    log("\n" + format_table(results, targets))
    return written
