"""Training benchmark: test accuracy within a wall-clock budget, Classifly against an AutoML library and a
hand-written Keras script, on the same machine in the same run.

For each dataset (MNIST, Fashion-MNIST, flowers, CIFAR-10; full train and test sets, flowers split 80/20):

- classifly: a fresh in-process platform (local Ray with 2 CPUs, the catalog, the Serve app), driven over
  HTTP as a user's script would: register, create a model, upload the train/ + test/ zip, wait for the
  import, ``POST /v1/models/{id}/train`` with only the issue's target accuracy and time limit (every other
  setting the platform's default), then poll ``GET /v1/runs/{id}`` every second until the run is final.
  Recorded: test accuracy of the published version, seconds from the train request to the final poll, when
  the best validation accuracy first reached the target, the trials (the leaderboard), and the peak of the
  summed RSS of this process and every Ray process (import and training).
- automl: AutoKeras 3 ``ImageClassifier`` (default search) with the same wall-clock budget, in its own
  process with a hard timeout (bench/peers.py); KerasTuner Hyperband when AutoKeras cannot be imported.
- handwritten: frozen EfficientNet-Lite0 + Dense softmax head with ``model.fit`` (bench/peers.py), the same
  budget, in its own process.

Targets (issue; test accuracy within the time limit, 2 CPU cores, default settings): MNIST ≥ 99.3 % in
5 min, Fashion-MNIST ≥ 92.5 % in 5 min, flowers ≥ 92 % in 2 min, CIFAR-10 ≥ 90 % in 30 min; on every dataset
Classifly at least as accurate as the AutoML peer in at most a third of its time, and at least as accurate
as the hand-written script; peak platform memory ≤ 8 GB.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.common import (
    REPO_ROOT,
    Context,
    MemorySampler,
    Result,
    Target,
    _psutil,
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
from bench.datasets import ALL_DATASETS, BuiltZip, DatasetMissing
from bench.platform import Platform, check, new_user, start_platform

NAME = "training"
TITLES = {"mnist": "MNIST", "fashion": "Fashion-MNIST", "flowers": "flowers", "cifar10": "CIFAR-10"}
# The goals: test accuracy within a time limit on 2 CPU cores with default settings.
TARGET_ACCURACY = {"mnist": 0.993, "fashion": 0.925, "flowers": 0.92, "cifar10": 0.90}
TIME_LIMIT_S = {"mnist": 300, "fashion": 300, "flowers": 120, "cifar10": 1800}
MEMORY_TARGET_MB = 8192.0
AUTOML_TIME_SHARE = 1 / 3  # Classifly's time at most this share of the AutoML peer's
# How the baselines read the pictures: (square side to stretch to, or None to keep; Pillow mode).
PEER_INPUT: dict[str, tuple[int | None, str]] = {
    "mnist": (None, "L"),
    "fashion": (None, "L"),
    "flowers": (224, "RGB"),
    "cifar10": (None, "RGB"),
}
SYSTEMS = ("classifly", "automl", "handwritten")
AUTOML_ENV = "CLASSIFLY_BENCH_AUTOML"  # "autokeras" (default) or "keras-tuner"
QUICK_LIMIT_PER_CLASS = 10  # per class and split
QUICK_BUDGET_S = 20  # the platform accepts budgets from 10 s
POLL_INTERVAL_S = 1.0
IMPORT_DEADLINE_S = 1800.0
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "interrupted"})


@dataclass
class ClassiflyRun:
    """One dataset through the platform."""

    status: str = "not run"
    error: str | None = None
    platform_start_seconds: float | None = None
    import_seconds: float | None = None
    train_seconds: float | None = None  # train request to the poll that saw the run final
    run_seconds: float | None = None  # the run's own clock (its result), without the queueing before it
    val_target_seconds: float | None = None  # first poll whose best validation accuracy reached the target
    test_accuracy: float | None = None
    val_accuracy: float | None = None
    winner: str | None = None
    step_seconds: dict[str, float] = field(default_factory=dict)  # the run's own account of where its time went
    trials: list[dict[str, Any]] = field(default_factory=list)
    curve: list[tuple[float, float]] = field(default_factory=list)  # (seconds, best validation accuracy)
    memory: MemorySampler | None = None

    @property
    def peak_mb(self) -> float | None:
        return self.memory.peak_mb if self.memory and self.memory.samples else None


@dataclass
class PeerRun:
    """One dataset through a baseline process."""

    system: str
    status: str = "not run"
    error: str | None = None
    seconds: float | None = None  # process start to exit, as the parent saw it
    killed: bool = False
    result: dict[str, Any] = field(default_factory=dict)
    curve: list[tuple[float, float]] = field(default_factory=list)  # (seconds, validation accuracy) per epoch
    memory: MemorySampler | None = None
    log_tail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def test_accuracy(self) -> float | None:
        return self.result.get("test_accuracy") if self.ok else None

    @property
    def peak_mb(self) -> float | None:
        return self.memory.peak_mb if self.memory and self.memory.samples else None

    def val_target_seconds(self, target: float) -> float | None:
        return next((t for t, value in self.curve if value >= target), None)


def budgets(quick: bool) -> dict[str, int]:
    return {key: QUICK_BUDGET_S if quick else seconds for key, seconds in TIME_LIMIT_S.items()}


def platform_processes() -> list[Any]:
    """This process and every process of the local Ray cluster it started (the whole platform)."""
    return own_process() + local_ray_processes()


def process_tree(pid: int) -> list[Any]:
    psutil = _psutil()
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return []


# --- Classifly ------------------------------------------------------------------------------------------------


def classifly_train(built: BuiltZip, key: str, budget: int, target: float, work_dir: Path) -> ClassiflyRun:
    """A fresh platform; import the zip and train with the target and budget; tear the platform down."""
    run = ClassiflyRun()
    try:
        with start_platform(work_dir / f"classifly-{key}") as platform:
            run.platform_start_seconds = platform.start_seconds
            log(f"  platform healthy after {platform.start_seconds:.1f} s")
            with MemorySampler(platform_processes, interval_s=0.25) as memory:
                run.memory = memory
                _import_and_train(platform, built, key, budget, target, run)
    except Exception as error:  # noqa: BLE001 - reported in the results; the other systems still run
        run.status, run.error = "error", f"{type(error).__name__}: {error}"
    return run


def _import_and_train(
    platform: Platform, built: BuiltZip, key: str, budget: int, target: float, run: ClassiflyRun
) -> None:
    http = platform.http
    headers = new_user(platform, f"bench-{key}")
    model = check(http.post("/v1/models", json={"name": f"bench {TITLES[key]}"}, headers=headers), 201, "model")
    body = built.path.read_bytes()
    started = time.perf_counter()
    response = http.post(
        f"/v1/models/{model['id']}/imports", content=body, headers={**headers, "Content-Type": "application/zip"}
    )
    del body
    job = check(response, 202, "upload")
    while job["status"] in ("queued", "running"):
        if time.perf_counter() - started > IMPORT_DEADLINE_S:
            raise RuntimeError(f"the import did not finish within {IMPORT_DEADLINE_S:.0f} s")
        time.sleep(0.2)
        job = check(http.get(job["url"], headers=headers), 200, "job")
    run.import_seconds = time.perf_counter() - started
    if job["status"] != "succeeded":
        raise RuntimeError(f"the import ended {job['status']}: {job.get('error') or job.get('message')}")
    accepted = (job.get("result") or {}).get("accepted")
    log(f"  imported {accepted} pictures in {run.import_seconds:.1f} s; training (budget {budget} s) …")

    body_json = {"target_accuracy": target, "time_budget_s": budget}
    started = time.perf_counter()
    current = check(http.post(f"/v1/models/{model['id']}/train", json=body_json, headers=headers), 202, "train")
    url = current["url"]
    hard_deadline = started + budget + max(300.0, budget)  # evaluation and publishing come after the budget
    best_seen = -1.0
    while current["status"] not in FINAL_STATUSES:
        if time.perf_counter() > hard_deadline:
            http.post(f"{url}/cancel", headers=headers)
            raise RuntimeError(f"the run was not final {hard_deadline - started:.0f} s after the train request")
        time.sleep(POLL_INTERVAL_S)
        current = check(http.get(url, headers=headers), 200, "run")
        seconds = time.perf_counter() - started
        best = (current.get("progress") or {}).get("best_accuracy")
        if best is not None and best > best_seen:
            best_seen = best
            run.curve.append((round(seconds, 2), float(best)))
            if run.val_target_seconds is None and best >= target:
                run.val_target_seconds = seconds
    run.train_seconds = time.perf_counter() - started
    run.status = current["status"]
    run.trials = [
        {
            "title": trial.get("title"),
            "status": trial.get("status"),
            "epochs": trial.get("epochs"),
            "best_val_accuracy": trial.get("best_val_accuracy"),
            "cost_s": trial.get("cost_s"),
            "stop_reason": trial.get("stop_reason"),
        }
        for trial in current.get("trials", [])
    ]
    result = current.get("result") or {}
    if run.status != "succeeded":
        run.error = json.dumps(current.get("error") or current.get("progress"))[:500]
        return
    run.run_seconds = result.get("seconds")
    run.step_seconds = dict(result.get("step_seconds") or {})
    run.winner = (result.get("winner") or {}).get("title")
    versions = check(http.get(f"/v1/models/{model['id']}/versions", headers=headers), 200, "versions")
    published = next((v for v in versions["data"] if v.get("version") == result.get("version")), None)
    metrics = (published or {}).get("metrics") or {}
    run.test_accuracy = metrics.get("accuracy", result.get("accuracy"))
    run.val_accuracy = metrics.get("val_accuracy")


# --- baselines ------------------------------------------------------------------------------------------------


def hard_timeout(budget: float, quick: bool) -> float:
    """How long a baseline process may live: its budget plus room to load, finish a batch and evaluate."""
    return budget + 240 if quick else budget * 1.5 + 600


def peer_command(
    system: str, built: BuiltZip, key: str, budget: int, folder: Path, cache_dir: Path, quick: bool, started: float
) -> list[str]:
    """``python -m bench.peers ...`` for one baseline on one dataset."""
    side, color = PEER_INPUT[key]
    name = os.environ.get(AUTOML_ENV, "autokeras") if system == "automl" else system
    command = [sys.executable, "-m", "bench.peers", name, "--zip", str(built.path), "--color", color]
    command += ["--budget", str(budget), "--started", repr(started), "--threads", str(min(2, os.cpu_count() or 1))]
    command += ["--work", str(folder / "work"), "--cache", str(cache_dir / "backbones")]
    command += ["--out", str(folder / "result.json"), "--events", str(folder / "events.jsonl")]
    command += ["--side", str(side)] if side else []
    command += ["--quick"] if quick else []
    return command


def run_peer(
    system: str,
    built: BuiltZip,
    key: str,
    budget: int,
    work_dir: Path,
    cache_dir: Path,
    quick: bool,
    command: list[str] | None = None,
) -> PeerRun:
    """Run one baseline in a process of its own (new session, killed whole at the hard timeout).

    `command` replaces the ``python -m bench.peers`` command line (tests use it to stand in a process that hangs).
    """
    peer = PeerRun(system=system)
    folder = work_dir / f"{system}-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    out, events, log_path = folder / "result.json", folder / "events.jsonl", folder / "output.log"
    started = time.time()
    command = command or peer_command(system, built, key, budget, folder, cache_dir, quick, started)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "-1", "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # TensorFlow imports 4x slower without bytecode
    limit = hard_timeout(budget, quick)
    with open(log_path, "wb") as output:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        with MemorySampler(lambda: process_tree(process.pid), interval_s=0.25) as memory:
            try:
                process.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                peer.killed = True
                try:
                    os.killpg(process.pid, signal.SIGKILL)  # the process group we started, nothing else
                except ProcessLookupError:
                    pass
                process.wait()
    peer.memory = memory
    peer.seconds = time.time() - started
    peer.curve = read_curve(events)
    peer.log_tail = _tail(log_path)
    if out.is_file():
        peer.result = json.loads(out.read_text())
    if peer.killed:
        peer.status, peer.error = "killed", f"still running at the hard timeout ({limit:.0f} s); killed"
    elif peer.result:
        peer.status, peer.error = peer.result.get("status", "error"), peer.result.get("error")
    else:
        peer.status, peer.error = "error", f"exited {process.returncode} without a result: {peer.log_tail[-300:]}"
    return peer


def read_curve(events: Path) -> list[tuple[float, float]]:
    """(seconds, validation accuracy) of every epoch a baseline logged, in order."""
    if not events.is_file():
        return []
    curve = []
    for line in events.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        if row.get("val_accuracy") is not None:
            curve.append((float(row["t"]), float(row["val_accuracy"])))
    return curve


def _tail(path: Path, size: int = 4000) -> str:
    try:
        return path.read_bytes()[-size:].decode(errors="replace")
    except OSError:
        return ""


# --- results --------------------------------------------------------------------------------------------------


def collect(
    key: str, budget: int, classifly: ClassiflyRun, automl: PeerRun, handwritten: PeerRun
) -> tuple[list[Result], list[Target], list[str]]:
    """Results, targets and notes of one dataset (pure: no platform, no processes)."""
    title, target = TITLES[key], TARGET_ACCURACY[key]
    notes: list[str] = []
    ok = classifly.status == "succeeded"
    accuracy = classifly.test_accuracy if ok else None
    results = [
        Result("classifly", f"{key}.test_accuracy", accuracy),
        Result("classifly", f"{key}.train_seconds", classifly.train_seconds if ok else None, "s"),
        Result("classifly", f"{key}.run_seconds", classifly.run_seconds, "s"),
        Result("classifly", f"{key}.val_target_seconds", classifly.val_target_seconds, "s"),
        Result("classifly", f"{key}.val_accuracy", classifly.val_accuracy),
        Result("classifly", f"{key}.trials", len(classifly.trials) if classifly.trials else None),
        Result("classifly", f"{key}.epochs", sum(t.get("epochs") or 0 for t in classifly.trials) or None),
        Result("classifly", f"{key}.import_seconds", classifly.import_seconds, "s"),
        Result("classifly", f"{key}.platform_start_seconds", classifly.platform_start_seconds, "s"),
        Result("classifly", f"{key}.peak_memory_mb", classifly.peak_mb, "MB"),
    ]
    results += [Result("classifly", f"{key}.step.{step}", value, "s") for step, value in classifly.step_seconds.items()]
    for label, peer in (("automl", automl), ("handwritten", handwritten)):
        system = _system_name(peer)
        results += [
            Result(system, f"{key}.test_accuracy", peer.test_accuracy),
            Result(system, f"{key}.seconds", peer.seconds if peer.ok else None, "s"),
            Result(system, f"{key}.val_target_seconds", peer.val_target_seconds(target), "s"),
            Result(system, f"{key}.load_seconds", peer.result.get("load_seconds"), "s"),
            Result(system, f"{key}.eval_seconds", peer.result.get("eval_seconds"), "s"),
            Result(system, f"{key}.trials", peer.result.get("trials")),
            Result(system, f"{key}.epochs", len(peer.curve) or None),
            Result(system, f"{key}.peak_memory_mb", peer.peak_mb, "MB"),
        ]
        if not peer.ok:
            notes.append(f"{title}: the {label} baseline ({system}) did not finish: {peer.status}: {peer.error}")
        if peer.result.get("fallback"):
            notes.append(f"{title}: {peer.result['fallback']}.")
    automl_seconds = _peer_time(automl, budget)
    ratio = classifly.train_seconds / automl_seconds if ok and classifly.train_seconds and automl_seconds else None
    versus_automl = _difference(accuracy, automl.test_accuracy)
    versus_handwritten = _difference(accuracy, handwritten.test_accuracy)
    results += [
        Result("classifly/automl", f"{key}.time_ratio", ratio, "x"),
        Result("classifly-automl", f"{key}.accuracy_difference", versus_automl),
        Result("classifly-handwritten", f"{key}.accuracy_difference", versus_handwritten),
    ]
    if not ok:
        notes.append(f"{title}: the Classifly run did not succeed ({classifly.status}): {classifly.error}")
    targets = [
        Target(f"{title}: Classifly test accuracy ≥ {target:.1%}", f"{key}.test_accuracy", accuracy, ">=", target),
        Target(
            f"{title}: Classifly training within {_minutes(budget)}",
            f"{key}.train_seconds",
            classifly.train_seconds if ok else None,
            "<=",
            budget,
        ),
        Target(
            f"{title}: Classifly at least as accurate as the AutoML peer",
            f"{key}.accuracy_difference",
            versus_automl,
            ">=",
            0.0,
        ),
        Target(
            f"{title}: Classifly time ≤ 1/3 of the AutoML peer's",
            f"{key}.time_ratio",
            ratio,
            "<=",
            round(AUTOML_TIME_SHARE, 4),
        ),
        Target(
            f"{title}: Classifly at least as accurate as the hand-written script",
            f"{key}.accuracy_difference",
            versus_handwritten,
            ">=",
            0.0,
        ),
        Target(
            f"{title}: platform peak memory ≤ {MEMORY_TARGET_MB / 1024:g} GB",
            f"{key}.peak_memory_mb",
            classifly.peak_mb,
            "<=",
            MEMORY_TARGET_MB,
        ),
    ]
    if ok:
        trials = "; ".join(
            f"{t['title']} ({t['epochs']} epochs, val {_percent(t['best_val_accuracy'])}, {t['stop_reason']})"
            for t in classifly.trials
        )
        notes.append(
            f"{title}: Classifly published {classifly.winner!r} at {_percent(accuracy)} test accuracy after "
            f"{classifly.train_seconds:.0f} s; trials: {trials or 'none recorded'}."
        )
    for peer in (automl, handwritten):
        if peer.ok:
            notes.append(
                f"{title}: {peer.result.get('peer')}: {_percent(peer.test_accuracy)} test accuracy, "
                f"{peer.result.get('trials')} trial(s), {len(peer.curve)} epoch(s), {peer.seconds:.0f} s in all "
                f"(loading {peer.result.get('load_seconds', 0):.0f} s, evaluating "
                f"{peer.result.get('eval_seconds', 0):.0f} s)"
                + (f"; best model {peer.result['best_model']}" if peer.result.get("best_model") else "")
                + "."
            )
    return results, targets, notes


def _system_name(peer: PeerRun) -> str:
    if peer.system == "automl":
        return (
            "keras-tuner"
            if peer.result.get("fallback") or os.environ.get(AUTOML_ENV) == "keras-tuner"
            else ("autokeras")
        )
    return "handwritten-keras"


def _peer_time(peer: PeerRun, budget: float) -> float | None:
    """The AutoML peer's time for the ratio: its wall time, but never more than the budget both were given
    (a peer that overran its budget must not make Classifly look faster)."""
    if not peer.ok or not peer.seconds:
        return None
    return min(peer.seconds, float(budget))


def _difference(ours: float | None, theirs: float | None) -> float | None:
    return None if ours is None or theirs is None else ours - theirs


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def _versions() -> dict[str, str]:
    versions = {}
    for package in ("tensorflow-cpu", "keras", "ray", "autokeras", "keras-tuner"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def method_notes(limit: int | None, quick: bool, load_before: str) -> list[str]:
    notes = []
    if quick or limit is not None:
        notes.append(
            f"{'Quick (smoke) run' if quick else 'Reduced run'}: {limit} pictures per class and split"
            + (
                f", {QUICK_BUDGET_S} s budgets, AutoKeras max_trials=1, at most 2 epochs for the baselines"
                if quick
                else ""
            )
            + "; the targets are for the full datasets and budgets, so their ✅/❌ here mean nothing."
        )
    notes += [
        "Each dataset gets a fresh platform (past winners on one dataset must not seed the next one's search); "
        "the order of the three systems rotates from dataset to dataset, and nothing else of the benchmark runs "
        "while one of them trains.",
        "classifly: train request with only target_accuracy and time_budget_s (the issue's target and time "
        "limit); every other setting is the platform's default. train_seconds runs from the train request to the "
        "poll (every 1 s) that saw the run final, the test evaluation and publishing included; run_seconds is the "
        "run's own clock. val_target_seconds: the first poll whose best validation accuracy (the run's progress) "
        "reached the target. test_accuracy: the published version's metrics on the test split.",
        "Baselines run in their own process (python -m bench.peers) with the same budget, counted from the "
        "process start: the interpreter, TensorFlow's import and decoding the same zip with Pillow are inside "
        "it, as the platform's picture preparation is inside its run. Training stops at the deadline (checked "
        "after every batch), then the test split is evaluated; a hard timeout kills a process that hangs. "
        "TensorFlow uses the same 2 threads the platform's Ray has CPUs. Validation: a seeded stratified 20 % "
        "(AutoML) or 10 % (hand-written) of the training pictures; the test split is never seen before the end.",
        "automl: AutoKeras ImageClassifier with its default search space and max_trials; AutoKeras 3.0.0 fails "
        "on Keras 3.15 unless autokeras.utils.data_utils.dataset_shape returns plain ints, so the benchmark "
        "patches that one function. When a trial is running at the deadline its model is stopped there and no "
        "further trial starts. The ratio uses min(AutoML wall time, budget), so an AutoML run that overran its "
        "budget does not flatter Classifly.",
        "handwritten: frozen EfficientNet-Lite0 (ImageNet weights from pipelines.backbones) + Dense softmax, "
        "Adam 1e-3, batch 32, up to 20 epochs, early stopping on validation accuracy (patience 3, best weights "
        "restored); gray pictures repeated to RGB; 28/32 px pictures resized to 96 px in the graph, flowers "
        "stretched to 224 px when loaded (as image_dataset_from_directory does).",
        "Flowers: the 600 photos split 80/20 by pipelines.zips.stratified_split (seed 0) into train/ and test/ "
        "of the zip, so all three systems train and test on the same photos; the other datasets use their "
        "official splits.",
        "Memory: classifly = summed RSS of this benchmark process and every Ray process (GCS, raylet, Serve, "
        "catalog, Tune trials, tasks) during import and training, sampled every 0.25 s; shared pages (Ray's "
        "object store) count once per process, so it is an upper bound. Baselines: summed RSS of their process "
        "tree.",
        f"Machine shared with other work: load average (1/5/15 min) {load_before} before, {load_average()} after.",
    ]
    return notes


# --- the benchmark --------------------------------------------------------------------------------------------


def run(ctx: Context) -> Path | None:
    """Run the benchmark on every chosen dataset found; write training.json, the plot and RESULTS.md."""
    quick = ctx.smoke
    limit = ctx.limit_per_class if ctx.limit_per_class is not None else (QUICK_LIMIT_PER_CLASS if quick else None)
    seconds = budgets(quick)
    notes: list[str] = []
    built: dict[str, BuiltZip] = {}
    for key, builder in ALL_DATASETS.items():
        if not ctx.wants(key):
            continue
        try:
            log(f"preparing {TITLES[key]} zip (limit per class and split: {limit or 'none'}) …")
            started = time.perf_counter()
            built[key] = builder(ctx.data_dir, ctx.cache_dir, limit_per_class=limit)
            how = "cached" if built[key].cached else f"built in {time.perf_counter() - started:.1f} s"
            log(f"  {built[key].images:,} images, {built[key].zip_bytes / 2**20:.1f} MB, {how}: {built[key].path}")
        except DatasetMissing as missing:
            log(str(missing))
            notes.append(str(missing))
    if not built:
        log("training benchmark skipped: no dataset found")
        return None

    load_before = load_average()
    results: list[Result] = []
    targets: list[Target] = []
    curves: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="classifly-bench-training-") as work:
        work_dir = Path(work)
        for position, (key, dataset) in enumerate(built.items()):
            budget, target = seconds[key], TARGET_ACCURACY[key]
            order = SYSTEMS[position % 3 :] + SYSTEMS[: position % 3]
            runs: dict[str, Any] = {}
            for system in order:
                log(f"{TITLES[key]}: {system} (budget {budget} s, target {target:.1%}) …")
                if system == "classifly":
                    runs[system] = classifly_train(dataset, key, budget, target, work_dir)
                    done = runs[system]
                    log(f"  {done.status}: test accuracy {_percent(done.test_accuracy)} in {_secs(done.train_seconds)}")
                    if done.step_seconds:
                        steps = ", ".join(f"{step} {value:.0f} s" for step, value in done.step_seconds.items())
                        log(f"  winner {done.winner}; {steps}")
                else:
                    runs[system] = run_peer(system, dataset, key, budget, work_dir, ctx.cache_dir, quick)
                    done = runs[system]
                    log(f"  {done.status}: test accuracy {_percent(done.test_accuracy)} in {_secs(done.seconds)}")
                    if not done.ok:
                        log(f"  {done.error}\n{done.log_tail[-1500:]}")
            found, goals, said = collect(key, budget, runs["classifly"], runs["automl"], runs["handwritten"])
            results += found
            targets += goals
            notes += said
            curves[key] = {
                "budget": budget,
                "target": target,
                "classifly": (
                    runs["classifly"].curve,
                    runs["classifly"].train_seconds,
                    runs["classifly"].test_accuracy,
                ),
                "automl": (runs["automl"].curve, runs["automl"].seconds, runs["automl"].test_accuracy),
                "handwritten": (
                    runs["handwritten"].curve,
                    runs["handwritten"].seconds,
                    runs["handwritten"].test_accuracy,
                ),
            }

    notes += method_notes(limit, quick, load_before)
    settings = {
        "datasets": list(built),
        "images": {key: dataset.per_split for key, dataset in built.items()},
        "target_accuracy": {key: TARGET_ACCURACY[key] for key in built},
        "budget_s": {key: seconds[key] for key in built},
        "limit_per_class_and_split": limit,
        "smoke": quick,
        "ray_cpus": min(2, os.cpu_count() or 1),
        "baseline_threads": min(2, os.cpu_count() or 1),
        "automl": os.environ.get(AUTOML_ENV, "autokeras"),
        "versions": _versions(),
        "poll_interval_s": POLL_INTERVAL_S,
        "revision": git_revision(),
    }
    plot = plot_curves(curves, ctx.results_dir / f"{NAME}-accuracy.png")
    if plot is None:
        notes.append("No plot: matplotlib is not installed (pip install -e '.[dev]').")
    path = write_results(NAME, settings, results, targets, notes, results_dir=ctx.results_dir)
    print(format_table(results, targets))
    for note in notes:
        print(f"note: {note}")
    log(f"wrote {path}")
    return path


def _secs(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} s"


COLORS = {"classifly": "#08519c", "automl": "#e6550d", "handwritten": "#31a354"}
LABELS = {"classifly": "Classifly (best validation so far)", "automl": "AutoML peer", "handwritten": "hand-written"}


def plot_curves(curves: dict[str, dict[str, Any]], path: Path) -> Path | None:
    """Validation accuracy over time per dataset and system; a star at the end marks the test accuracy."""
    plt = pyplot()
    if plt is None:
        return None
    if not curves:
        return None
    figure, axes_list = plt.subplots(1, len(curves), figsize=(4.2 * len(curves) + 1.5, 3.8), dpi=110, squeeze=False)
    for axes, (key, curve) in zip(axes_list[0], curves.items(), strict=True):
        values: list[float] = [curve["target"]]
        for system in SYSTEMS:
            points, end, test = curve[system]
            best, xs, ys = 0.0, [], []
            for seconds, value in points:
                best = max(best, value)
                xs.append(seconds)
                ys.append(best)
            if xs:
                if end is not None and end > xs[-1]:
                    xs, ys = [*xs, end], [*ys, ys[-1]]  # the best so far holds until the system finished
                axes.step(xs, ys, where="post", color=COLORS[system], label=LABELS[system], linewidth=1.4)
                axes.plot(xs, ys, linestyle="none", marker=".", markersize=4, color=COLORS[system])
                values += ys
            if test is not None and end is not None:
                axes.plot([end], [test], marker="*", markersize=11, color=COLORS[system], linestyle="none")
                values.append(test)
        axes.axhline(curve["target"], color="red", linestyle="dashed", linewidth=0.9)
        axes.axvline(curve["budget"], color="gray", linestyle="dotted", linewidth=0.9)
        low = max(0.0, min(values) - 0.03)
        axes.set_ylim(low, min(1.0, max(values) + 0.01) if max(values) > low else 1.0)
        axes.set_title(f"{TITLES[key]} (target {curve['target']:.1%}, {curve['budget']} s)", fontsize=9)
        axes.set_xlabel("seconds since start")
        axes.tick_params(labelsize=8)
    axes_list[0][0].set_ylabel("validation accuracy (★ = test)")
    handles, labels = axes_list[0][0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, fontsize=7, loc="lower center", ncol=3)
    return save_figure(figure, path, layout_rect=(0, 0.08, 1, 1))
