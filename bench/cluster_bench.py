"""Cluster benchmark (``make bench ONLY=cluster``): does training leave classification alone, and do a search's
trials spread over the training nodes? Issue "Scale out on Ray".

**Part A, latency isolation** (one fresh in-process platform: local Ray with 2 CPUs split by the settings'
``CLASSIFLY_TRAINING_SHARE`` into ``classifly_train`` for trials and ``classifly_serve`` for replicas, see
cluster/resources.py). Driven over HTTP: register, import an MNIST zip into two models, train the first (a
from-scratch CNN, short budget) so that it serves. Then a steady closed-loop load (``CONCURRENCY`` clients, each
sending the next ``POST /v1/models/{id}/classify`` of one picture as soon as the previous one is answered, for a
fixed window; aiohttp in a process of its own, bench/serving_bench.py) three times on the same platform:

1. **idle**: nothing else running;
2. **training**: the second model's training run (a real search, default candidates, ~90 s budget) in its search
   stage; while the load runs, the run's stage and the training resource in use are sampled every 0.5 s;
3. **idle-after**: the run finished, the same load again (shows how much the idle figure drifts on a shared
   machine).

p50/p99 per window; target p99 during training / p99 idle ≤ 1.25. Also reported: how many CPUs training may
hold (the node's ``classifly_train``, the trial bundle of cluster/resources.py) and held at most (sampled).

**Part B, 1 vs 2 training nodes**: a ``ray.cluster_utils.Cluster`` on this machine (as
tests/integration/test_cluster.py builds it): a head with no CPUs and 1 or 2 training nodes of 1 CPU each
(``classifly_train: 1``). The same Ray Tune search each time: several from-scratch CNN candidates
(pipelines.candidates for MNIST, seeds added to reach the count) trained for a fixed number of epochs by
pipelines.training.train_candidate on an MNIST subset, with the platform's trial resources
(cluster.training.trial_resources: one trial per training node at a time). Rounds alternate 1, 2, 2, 1 nodes.
Reported: wall seconds per search (median per node count), the speed-up, trials per node (node ids from the
trials' reports). Every "node" runs on the same 2 physical cores, shared with the driver: the speed-up is
bounded well below 2; the point is that trials spread. Target: the 2-node search used ≥ 2 nodes.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    Context,
    Result,
    Target,
    format_table,
    git_revision,
    load_average,
    log,
    pyplot,
    repeating,
    save_figure,
    write_results,
)
from bench.datasets import MNIST_FILES, BuiltZip, DatasetMissing, _require, mnist_png_zip, read_idx
from bench.expansion_bench import between, import_zip, parse_time
from bench.platform import Platform, check, new_user, start_platform
from bench.serving_bench import Load, LoadProcess, _wait_final, test_pictures

NAME = "cluster"
CONCURRENCY = 4
P99_LIMIT = 1.25  # p99 during training at most 25 % above idle
SAMPLE_EVERY_S = 0.5
RUN_DEADLINE_S = 900.0
WINDOWS = ("idle", "training", "idle_after")


@dataclass(frozen=True)
class Sizes:
    limit_per_class: int  # MNIST pictures per class and split, Part A's models
    window_s: float  # each load window
    served_body: dict[str, Any]  # training of the model that answers
    search_body: dict[str, Any]  # the training run measured under load
    search_per_class: int  # Part B: MNIST training pictures per class (validation: a third as many)
    candidates: int
    epochs: int
    rounds: tuple[int, ...]  # training nodes of each Part B search, in order


FULL = Sizes(
    300,
    40.0,
    {"kinds": ["scratch_cnn"], "max_epochs": 3, "time_budget_s": 120},
    {"time_budget_s": 90},
    300,
    4,
    2,
    (1, 2, 2, 1),
)
QUICK = Sizes(
    10,
    3.0,
    {"kinds": ["scratch_cnn"], "max_epochs": 1, "time_budget_s": 30},
    {"kinds": ["scratch_cnn"], "max_epochs": 2, "time_budget_s": 30},
    10,
    2,
    1,
    (1, 2),
)


# --- Part A: classification latency, idle and during a training run -------------------------------------------


@dataclass
class RunSampler:
    """A training run's status and stage and the training resource in use, sampled while a load window runs."""

    http: Any  # httpx.Client with the user's headers
    run_url: str
    total: dict[str, float]  # ray.cluster_resources()
    started: float = field(default_factory=time.monotonic)
    points: list[tuple[float, str, str, float, float]] = field(default_factory=list)  # t, status, stage, train, cpu

    def sample(self) -> None:
        import ray

        from cluster.resources import TRAIN_RESOURCE

        run = self.http.get(self.run_url).json()
        free = ray.available_resources()
        self.points.append(
            (
                time.monotonic() - self.started,
                run.get("status", "?"),
                (run.get("progress") or {}).get("stage", "?"),
                self.total.get(TRAIN_RESOURCE, 0.0) - free.get(TRAIN_RESOURCE, 0.0),
                self.total.get("CPU", 0.0) - free.get("CPU", 0.0),
            )
        )

    @property
    def running_share(self) -> float | None:
        return sum(p[1] == "running" for p in self.points) / len(self.points) if self.points else None

    @property
    def train_held_max(self) -> float | None:
        return max((p[3] for p in self.points), default=None)

    @property
    def cpu_held_max(self) -> float | None:
        return max((p[4] for p in self.points), default=None)


def new_model(platform: Platform, headers: dict[str, str], name: str, built: BuiltZip) -> str:
    model = check(platform.http.post("/v1/models", json={"name": name}, headers=headers), 201, "model")["id"]
    import_zip(platform, headers, model, built.path)
    return model


def start_run(platform: Platform, headers: dict[str, str], model_id: str, body: dict[str, Any]) -> str:
    run = check(platform.http.post(f"/v1/models/{model_id}/train", json=body, headers=headers), 202, "train")
    return run["url"]


def wait_for_search(platform: Platform, headers: dict[str, str], url: str, deadline_s: float) -> dict[str, Any]:
    """The run once its trials train (stage "searching") or it is final, whichever comes first."""
    end = time.monotonic() + deadline_s
    while True:
        run = check(platform.http.get(url, headers=headers), 200, "run")
        if run["status"] not in ("queued", "running") or run["progress"]["stage"] == "searching":
            return run
        if time.monotonic() > end:
            raise RuntimeError(f"the run was still {run['progress']['stage']} after {deadline_s:.0f} s")
        time.sleep(0.2)


def latency_part(
    built: BuiltZip, sizes: Sizes, work_dir: Path, loads: LoadProcess
) -> tuple[list[Result], dict[str, Load], list[str]]:
    import httpx
    import ray

    from cluster.resources import SERVE_RESOURCE, TRAIN_RESOURCE, trial_bundle

    results: list[Result] = []
    notes: list[str] = []
    windows: dict[str, Load] = {}
    with start_platform(work_dir) as platform:
        log(f"cluster A: platform healthy after {platform.start_seconds:.0f} s; importing and training")
        headers = new_user(platform, "bench-cluster")
        served = new_model(platform, headers, "served", built)
        searched = new_model(platform, headers, "searched", built)
        url = start_run(platform, headers, served, sizes.served_body)
        run = _wait_final(platform.http, url, headers, ("queued", "running"), RUN_DEADLINE_S, "training run")
        if run["status"] != "succeeded":
            raise RuntimeError(f"the served model's training ended {run['status']}: {run.get('error')}")
        classify = f"{platform.url}/v1/models/{served}/classify"
        pictures = test_pictures(built, 32)
        check(platform.http.post(classify, files=[("files", pictures[0])], headers=headers), 200, "warm-up")
        totals = ray.cluster_resources()
        bundle, concurrent = trial_bundle(None, max_cpus=platform.settings.trial_max_cpus)
        results += [
            Result("classifly", "node.cpus", totals.get("CPU")),
            Result("classifly", "node.classifly_train", totals.get(TRAIN_RESOURCE), "CPUs"),
            Result("classifly", "node.classifly_serve", totals.get(SERVE_RESOURCE), "CPUs"),
            Result("classifly", "trial.cpus", bundle.get("CPU"), "CPUs"),
            Result("classifly", "trial.concurrent", concurrent),
        ]

        def window(name: str) -> Load:
            done = loads.run(classify, headers, pictures, CONCURRENCY, 10**9, sizes.window_s)
            log(
                f"cluster A {name}: {done.ok} answered, {done.errors} errors, p50 {done.percentile(0.5) or 0:.1f} ms, "
                f"p99 {done.percentile(0.99) or 0:.1f} ms"
            )
            return done

        windows["idle"] = window("idle")
        run_url = start_run(platform, headers, searched, sizes.search_body)
        wait_for_search(platform, headers, run_url, RUN_DEADLINE_S)
        with httpx.Client(base_url=platform.url, timeout=30, headers=headers) as http:
            sampler = RunSampler(http, run_url, totals)
            with repeating(sampler.sample, SAMPLE_EVERY_S, "run-sampler"):
                windows["training"] = window("training")
        run = _wait_final(platform.http, run_url, headers, ("queued", "running"), RUN_DEADLINE_S, "training run")
        detail = check(platform.http.get(run_url, headers=headers), 200, "run")
        windows["idle_after"] = window("idle after")
        results += [
            Result(
                "classifly",
                "training.run_seconds",
                between(parse_time(run["started_at"]), parse_time(run["finished_at"])),
                "s",
            ),
            Result("classifly", "training.trials", len(detail.get("trials", []))),
            Result("classifly", "training.window_share_running", sampler.running_share),
            Result("classifly", "training.classifly_train_held_max", sampler.train_held_max, "CPUs"),
            Result("classifly", "training.cpus_held_max", sampler.cpu_held_max, "CPUs"),
        ]
        if run["status"] != "succeeded":
            notes.append(f"The training run under load ended {run['status']}: {run.get('error')}")
        notes.append(
            f"Training run under load: {run['status']}, {len(detail.get('trials', []))} trials; the load window saw "
            f"it running {100 * (sampler.running_share or 0):.0f} % of the time."
        )
    for name, done in windows.items():
        results += [
            Result("classifly", f"{name}.p50_ms", done.percentile(0.5), "ms"),
            Result("classifly", f"{name}.p99_ms", done.percentile(0.99), "ms"),
            Result("classifly", f"{name}.throughput_rps", done.throughput, "req/s"),
            Result("classifly", f"{name}.answered", done.ok),
            Result("classifly", f"{name}.errors", done.errors),
        ]
        if done.first_error:
            notes.append(f"{name}: {done.errors} errors, first: {done.first_error}")
    return results, windows, notes


def ratio(ours: float | None, theirs: float | None) -> float | None:
    return ours / theirs if ours is not None and theirs else None


# --- Part B: one search on 1 and on 2 training nodes ---------------------------------------------------------


def search_trial(config: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> None:
    """One Tune trial: train one candidate for its epochs, reporting every epoch and the node it ran on."""
    import ray
    from ray import tune

    from cluster.resources import bundle_threads
    from pipelines.candidates import CandidateSpec
    from pipelines.training import TrainingData, configure_threads, train_candidate

    configure_threads(bundle_threads(tune.get_context().get_trial_resources().required_resources))
    node_id = ray.get_runtime_context().get_node_id()
    spec = CandidateSpec.from_dict(config["candidate"])
    data = TrainingData(**arrays, class_names=tuple(str(n) for n in range(10)))

    def on_epoch(epoch: int, metrics: dict[str, float]) -> bool:
        tune.report({**{k: float(v) for k, v in metrics.items()}, "epoch": epoch, "node_id": node_id})
        return False

    trained = train_candidate(spec, data, on_epoch=on_epoch)
    tune.report(
        {"val_accuracy": float(trained.val_accuracy), "final": 1.0, "epochs": trained.epochs_run, "node_id": node_id}
    )


def mnist_arrays(data_dir: Path, per_class: int) -> dict[str, np.ndarray]:
    """The first `per_class` training digits of each class, and a third as many test digits for validation."""
    folder = data_dir / "mnist"
    _require([folder / name for pair in MNIST_FILES.values() for name in pair], "MNIST")
    out: dict[str, np.ndarray] = {}
    for split, key, count in (("train", "train", per_class), ("test", "val", max(2, per_class // 3))):
        images = read_idx(folder / MNIST_FILES[split][0])
        labels = read_idx(folder / MNIST_FILES[split][1])
        rows = np.concatenate([np.flatnonzero(labels == digit)[:count] for digit in range(10)])
        out[f"{key}_images"] = images[rows][..., None].astype(np.uint8)
        out[f"{key}_labels"] = labels[rows].astype(np.int64)
    return out


def candidate_specs(arrays: dict[str, np.ndarray], count: int, epochs: int) -> list[dict[str, Any]]:
    """The platform's from-scratch CNN candidates for this data, repeated with other seeds up to `count`."""
    from pipelines.candidates import DatasetSummary, SearchOptions, generate_candidates
    from pipelines.images import PreprocessingPolicy

    per_class = np.bincount(arrays["train_labels"])
    summary = DatasetSummary(
        10,
        len(arrays["train_labels"]) + len(arrays["val_labels"]),
        0,
        int(per_class.min()),
        PreprocessingPolicy(28, "gray", "stretch"),
    )
    base = generate_candidates(summary, options=SearchOptions(kinds=("scratch_cnn",), max_epochs=epochs))
    specs = [replace(base[i % len(base)], seed=i // len(base)) for i in range(count)]
    return [spec.to_dict() for spec in specs]


@dataclass
class Search:
    nodes: int
    seconds: float
    trials_per_node: list[int]
    best_val_accuracy: float | None
    errors: int


def run_search(
    arrays: dict[str, np.ndarray], specs: list[dict[str, Any]], nodes: int, work: Path, index: int
) -> Search:
    from ray import tune

    from cluster.config import Settings
    from cluster.training import TRIAL_RETRIES, trial_resources

    resources, concurrent = trial_resources(None, Settings(data_dir=work))
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(search_trial, arrays=arrays), resources),
        param_space={"candidate": tune.grid_search(specs)},
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrent, reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"cluster-bench-{index}-{nodes}",
            storage_path=str(work / "tune"),
            failure_config=tune.FailureConfig(max_failures=TRIAL_RETRIES),
            verbose=0,
        ),
    )
    started = time.perf_counter()
    grid = tuner.fit()
    seconds = time.perf_counter() - started
    placed = Counter(r.metrics.get("node_id") for r in grid if r.metrics)
    accuracies = [r.metrics["val_accuracy"] for r in grid if r.metrics and "val_accuracy" in r.metrics]
    return Search(
        nodes, seconds, sorted(placed.values(), reverse=True), max(accuracies, default=None), len(grid.errors)
    )


def nodes_part(ctx: Context, sizes: Sizes, work: Path) -> list[Search]:
    import ray
    from ray import cloudpickle
    from ray.cluster_utils import Cluster

    from cluster.resources import TRAIN_RESOURCE

    arrays = mnist_arrays(ctx.data_dir, sizes.search_per_class)
    specs = candidate_specs(arrays, sizes.candidates, sizes.epochs)
    # Trials run in Ray workers, which cannot import the bench folder: send this module's functions by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers: list[Any] = []
    searches: list[Search] = []
    try:
        ray.init(address=cluster.address, namespace="bench-cluster", logging_level="ERROR", log_to_driver=False)
        for index, nodes in enumerate(sizes.rounds):
            while len(workers) < nodes:
                workers.append(cluster.add_node(num_cpus=1, resources={TRAIN_RESOURCE: 1}))
            while len(workers) > nodes:
                cluster.remove_node(workers.pop())
            cluster.wait_for_nodes()
            end = time.monotonic() + 60
            while ray.cluster_resources().get(TRAIN_RESOURCE) != nodes and time.monotonic() < end:
                time.sleep(0.2)
            done = run_search(arrays, specs, nodes, work, index)
            log(
                f"cluster B round {index + 1}: {nodes} node(s), {len(specs)} trials in {done.seconds:.1f} s, "
                f"per node {done.trials_per_node}, best val accuracy {done.best_val_accuracy}"
            )
            searches.append(done)
    finally:
        ray.shutdown()
        cluster.shutdown()
    return searches


def nodes_results(searches: list[Search]) -> tuple[list[Result], Target]:
    results: list[Result] = []
    medians: dict[int, float] = {}
    for nodes in sorted({s.nodes for s in searches}):
        these = [s for s in searches if s.nodes == nodes]
        key = f"search.{nodes}_node{'s' if nodes > 1 else ''}"
        medians[nodes] = statistics.median(s.seconds for s in these)
        results += [
            Result("tune", f"{key}.seconds", medians[nodes], "s"),
            Result("tune", f"{key}.seconds_each", [round(s.seconds, 1) for s in these], "s"),
            Result("tune", f"{key}.trials_per_node", these[-1].trials_per_node),
            Result("tune", f"{key}.nodes_used", min(len(s.trials_per_node) for s in these)),
            Result("tune", f"{key}.best_val_accuracy", max((s.best_val_accuracy or 0.0) for s in these)),
            Result("tune", f"{key}.trial_errors", sum(s.errors for s in these)),
        ]
    results.append(Result("tune", "search.speedup_2_vs_1", ratio(medians.get(1), medians.get(2))))
    two = [s for s in searches if s.nodes == 2]
    used = min((len(s.trials_per_node) for s in two), default=None)
    return results, Target("2-node search: trials on ≥ 2 nodes", "search.2_nodes.nodes_used", used, ">=", 2)


# --- the run ------------------------------------------------------------------------------------------------


def plot(windows: dict[str, Load], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    figure, axis = plt.subplots(figsize=(8, 3.5))
    shares = sorted({i / 1000 for i in range(0, 1000, 5)} | {0.99, 0.999})
    for name, done in windows.items():
        if done.latencies_ms:
            axis.plot([100 * s for s in shares], [done.percentile(s) for s in shares], label=name.replace("_", " "))
    axis.set_xlabel("percentile")
    axis.set_ylabel("ms")
    axis.set_yscale("log")
    axis.set_title(f"Cluster: classify latency at concurrency {CONCURRENCY}, idle vs during training")
    axis.legend(loc="upper left")
    save_figure(figure, path)
    return True


def method_notes(sizes: Sizes, load_before: str) -> list[str]:
    return [
        f"Part A: one platform, local Ray with 2 CPUs; the same closed-loop load ({CONCURRENCY} clients, one picture "
        f"per request, {sizes.window_s:.0f} s per window) idle, during the second model's training run (from its "
        "search stage) and idle again after it. The load generator (aiohttp, its own process) shares the cores.",
        "The resource split is logical (Ray resources, not cgroups): training may hold only the node's "
        "classifly_train CPUs, but a trial's TensorFlow threads (set to the CPUs it holds), Ray's own processes and "
        "the picture-preparing tasks still compete with the replicas for the same 2 physical cores.",
        "Part B: every node of the ray.cluster_utils.Cluster is a raylet on this one machine (head with 0 CPUs, "
        "training nodes of 1 CPU each): the 1-node and 2-node searches run on the same 2 physical cores, shared "
        "with the driver and the Tune controller, so the speed-up is bounded below 2 and shows that the trials "
        "spread, not how a real cluster scales. Each search pays its trial processes' TensorFlow import.",
        f"Load average (1, 5, 15 min) before: {load_before}; after: {load_average()}. Commit {git_revision()}.",
    ]


def run(ctx: Context) -> Path | None:
    sizes = QUICK if ctx.smoke else FULL
    limit = ctx.limit_per_class if ctx.limit_per_class is not None else sizes.limit_per_class
    try:
        built = mnist_png_zip(ctx.data_dir, ctx.cache_dir, limit_per_class=limit)
    except DatasetMissing as missing:
        log(f"cluster benchmark skipped: {missing}")
        return None
    load_before = load_average()
    results: list[Result] = []
    notes: list[str] = []
    loads = LoadProcess()
    try:
        with tempfile.TemporaryDirectory(prefix="classifly-bench-cluster-", dir=ctx.cache_dir) as work:
            found, windows, said = latency_part(built, sizes, Path(work), loads)
            results += found
            notes += said
            log("cluster B: the same search on 1 and 2 training nodes")
            searches = nodes_part(ctx, sizes, Path(work))
    finally:
        loads.close()
    p99 = ratio(windows["training"].percentile(0.99), windows["idle"].percentile(0.99))
    results += [
        Result("classifly", "p99_training_vs_idle", p99),
        Result(
            "classifly",
            "p50_training_vs_idle",
            ratio(windows["training"].percentile(0.5), windows["idle"].percentile(0.5)),
        ),
        Result(
            "classifly",
            "p99_idle_after_vs_idle",
            ratio(windows["idle_after"].percentile(0.99), windows["idle"].percentile(0.99)),
        ),
    ]
    found, spread = nodes_results(searches)
    results += found
    targets = [Target("classify p99 during training vs idle", "p99_training_vs_idle", p99, "<=", P99_LIMIT), spread]
    notes += method_notes(sizes, load_before)
    if ctx.smoke:
        notes.append("Smoke sizes (--smoke): the figures only show that the benchmark runs.")
    if not plot(windows, Path(ctx.results_dir) / f"{NAME}-latency.png"):
        notes.append("No plot: matplotlib is not installed.")
    settings = {
        "dataset": "mnist",
        "images_per_split": built.per_split,
        "concurrency": CONCURRENCY,
        "window_s": sizes.window_s,
        "served_training": sizes.served_body,
        "training_under_load": sizes.search_body,
        "search_train_per_class": sizes.search_per_class,
        "search_candidates": sizes.candidates,
        "search_epochs": sizes.epochs,
        "search_rounds_nodes": list(sizes.rounds),
        "ray_cpus": min(2, os.cpu_count() or 1),
        "smoke": ctx.smoke,
    }
    path = write_results(NAME, settings, results, targets, notes, results_dir=ctx.results_dir)
    print(format_table(results, targets))
    log(f"wrote {path}")
    return path
