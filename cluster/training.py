"""A training run on Ray: snapshot → preprocessing policy → pictures prepared by Ray tasks → Ray Tune search over
candidate specs (ASHA on epochs; stop at the target, the time budget or a cancel) → winner → test evaluation →
a published model version. Every trial is recorded in the catalog as it goes: the candidate leaderboard.

Trials checkpoint their best epoch (`TrialCheckpoints`): a trial retried after its node was lost continues from
there, and when the time budget stops every trial before one finishes, the best checkpoint becomes the winner.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import ray

from cluster.artifacts import MANIFEST, add_ood, copy_artifact, load_trained, save_trained, trained_weights
from cluster.blobs import BlobRef, LocalBlobStore, open_blob_store
from cluster.catalog import runs as catalog_runs
from cluster.catalog.actor import RayCatalog, get_catalog_actor
from cluster.catalog.client import Catalog
from cluster.config import Settings
from cluster.expansion import fingerprint
from cluster.feature_cache import OutOfTime, base_feature_key, cached_features, features_from_cache
from cluster.resources import bundle_threads, set_gpu_memory_growth, train_task_options, trial_bundle
from pipelines.candidates import (
    CandidateSpec,
    DatasetSummary,
    PastWinner,
    SearchOptions,
    estimate_cost,
    generate_candidates,
)
from pipelines.errors import ClassiflyError, InvalidInput
from pipelines.images import DatasetShape, PreprocessingPolicy, choose_policy, load_for_model
from pipelines.ood import fit_centroids, fit_max_probability
from pipelines.zips import stratified_split

logger = logging.getLogger("classifly.training")
VAL_FRACTION = 0.15
SPLIT_SEED = 7
PREPARE_BATCH = 2_000
MAX_LISTED = 500  # misclassified pictures and possible label mistakes kept per version
LABEL_CHECK_EPOCHS = 15  # epochs of each out-of-fold head
EVALUATION_RESERVE_S = 45.0  # of the time budget, kept for checking and publishing the winner (at most 10 %)
TRIAL_RETRIES = 1  # a trial whose node was lost (or that crashed) starts again once, on the nodes left
CHECKPOINT_EVERY_S = 5.0  # a trial checkpoints a best epoch at most this often (its first best epoch always)
CHECKPOINT_STATE = "trial.json"  # in a trial checkpoint: {"epoch", "val_accuracy"} of the model stored next to it
CHECKPOINT_MODEL = "model"  # in a trial checkpoint: the folder holding that epoch's model, as save_trained stores it


class RunCancelled(Exception):
    """The user asked the run to stop."""


@dataclass(frozen=True)
class Prepared:
    """A run's pictures, preprocessed by the policy, as uint8 arrays (what every candidate trains on)."""

    class_names: tuple[str, ...]
    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    test_ids: np.ndarray
    train_ids: np.ndarray
    val_ids: np.ndarray
    train_shas: tuple[str, ...] = ()
    val_shas: tuple[str, ...] = ()
    test_shas: tuple[str, ...] = ()


def _prepare_batch(blob_root: str, refs: list[BlobRef], names: list[str], policy: dict, max_pixels: int) -> np.ndarray:
    blobs = open_blob_store(blob_root)
    chosen = PreprocessingPolicy.from_dict(policy)
    datas = blobs.read_many(refs)
    return np.stack([load_for_model(d, n, chosen, max_pixels=max_pixels) for d, n in zip(datas, names, strict=True)])


def prepare_pictures(snapshot, policy: PreprocessingPolicy, settings: Settings, report) -> np.ndarray:
    """Decode and preprocess every snapshot picture with Ray tasks, in order; `report(done, total)` as they land."""
    remote = ray.remote(**train_task_options(0.5))(_prepare_batch)
    batches = [snapshot[i : i + PREPARE_BATCH] for i in range(0, len(snapshot), PREPARE_BATCH)]
    refs = [
        remote.remote(
            settings.blob_root,
            [image.ref for image in batch],
            [f"image {image.image_id}" for image in batch],
            policy.to_dict(),
            settings.max_image_pixels,
        )
        for batch in batches
    ]
    results: dict[int, np.ndarray] = {}
    pending = {ref: index for index, ref in enumerate(refs)}
    done = 0
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        index = pending.pop(ready[0])
        results[index] = ray.get(ready[0])
        done += len(results[index])
        report(done, len(snapshot))
    return np.concatenate([results[i] for i in range(len(batches))])


def split_snapshot(snapshot, pictures: np.ndarray) -> Prepared:
    """Train / validation (a seeded, stratified share of train) / test arrays with class indices."""
    class_names = tuple(sorted({image.label for image in snapshot}))
    index_of = {name: i for i, name in enumerate(class_names)}
    labels = np.array([index_of[image.label] for image in snapshot], dtype=np.int64)
    train_rows = [i for i, image in enumerate(snapshot) if image.split == "train"]
    test_rows = [i for i, image in enumerate(snapshot) if image.split == "test"]
    inner = stratified_split([snapshot[i].label for i in train_rows], test_fraction=VAL_FRACTION, seed=SPLIT_SEED)
    fit_rows = [row for row, part in zip(train_rows, inner, strict=True) if part == "train"]
    val_rows = [row for row, part in zip(train_rows, inner, strict=True) if part == "test"] or fit_rows[:1]
    return Prepared(
        class_names=class_names,
        train_images=pictures[fit_rows],
        train_labels=labels[fit_rows],
        val_images=pictures[val_rows],
        val_labels=labels[val_rows],
        test_images=pictures[test_rows],
        test_labels=labels[test_rows],
        test_ids=np.array([snapshot[i].image_id for i in test_rows], dtype=np.int64),
        train_ids=np.array([snapshot[i].image_id for i in fit_rows], dtype=np.int64),
        val_ids=np.array([snapshot[i].image_id for i in val_rows], dtype=np.int64),
        train_shas=tuple(snapshot[i].sha256 for i in fit_rows),
        val_shas=tuple(snapshot[i].sha256 for i in val_rows),
        test_shas=tuple(snapshot[i].sha256 for i in test_rows),
    )


def _trainable(config: dict[str, Any], data=None, settings_json: str = "", run_id: str = "") -> None:
    """One Tune trial: train one candidate, report every epoch, store the result as an artifact."""
    from ray import tune

    from pipelines.training import TrainingData, configure_threads, train_candidate

    spec = CandidateSpec.from_dict(config["candidate"])  # a typo in a config fails here, loudly
    settings = Settings.model_validate_json(settings_json)
    held = tune.get_context().get_trial_resources().required_resources
    if held.get("GPU"):
        set_gpu_memory_growth()  # before any TF op: trials and replicas may share the GPU
    configure_threads(bundle_threads(held))
    node_id = ray.get_runtime_context().get_node_id()  # where it ran: the leaderboard and the tests read it
    catalog = RayCatalog(get_catalog_actor(settings.ray_namespace))
    target = config.get("target_accuracy")
    deadline = config["deadline"]
    policy = PreprocessingPolicy.from_dict(config["policy"])
    checkpoints = TrialCheckpoints(policy)
    start = checkpoints.restore()  # a retried trial (its node was lost) continues from its best epoch

    last_epoch_end: list[float] = []  # the first epoch's time includes loading and feature extraction

    def on_epoch(epoch: int, metrics: dict[str, float]) -> bool:
        checkpoints.report({**{k: float(v) for k, v in metrics.items()}, "epoch": epoch, "node_id": node_id})
        now = time.time()
        epoch_seconds = now - last_epoch_end[-1] if last_epoch_end else 0.0
        last_epoch_end[:] = [now]
        if now + epoch_seconds > deadline:
            return True  # another epoch would end after the deadline: stop with the best epoch so far
        if target is not None and metrics.get("val_accuracy", 0.0) >= target:
            return True
        return catalog.call_sync(catalog_runs.run_stop_reason, run_id) is not None

    blobs = open_blob_store(settings.blob_root)
    features = None
    if spec.kind == "frozen_head":
        try:
            features = _cached_feature_sets(
                blobs, spec, policy, data, settings, should_stop=lambda: time.time() > deadline
            )
        except OutOfTime:
            # No time left to finish this candidate's features (those done stay cached for the next run).
            stopped = {"val_accuracy": 0.0, "final": 1.0, "epochs_run": 0, "stopped_because": "time budget"}
            tune.report({**stopped, "node_id": node_id})
            return
    trained = train_candidate(
        spec,
        TrainingData(data.train_images, data.train_labels, data.val_images, data.val_labels, data.class_names),
        on_epoch=on_epoch,
        backbone_cache_dir=settings.data_dir / "backbones",
        features=features,
        on_best=checkpoints.stage,
        start=start,
    )
    prefix = f"artifacts/{run_id}/{tune.get_context().get_trial_id()}"
    save_trained(blobs, prefix, trained, policy)
    tune.report(
        {
            "val_accuracy": float(trained.val_accuracy),
            "final": 1.0,
            "epochs_run": trained.epochs_run,
            "stopped_because": trained.stopped_because,
            "artifact": prefix,
            "node_id": node_id,
        }
    )


class TrialCheckpoints:
    """A trial's Tune checkpoints: at an epoch whose validation accuracy is the best so far (the first one
    always, then at most every `every_s` seconds, so that small fast epochs do not spend their time saving),
    that epoch's model as `save_trained` stores it (under `model/`) and `trial.json` with the epoch and its
    validation accuracy, attached to that epoch's report. Tune keeps the latest one (so the best) on its storage.
    A best epoch skipped for time is not kept: a retried trial may redo up to `every_s` seconds of epochs.
    """

    def __init__(self, policy: PreprocessingPolicy, every_s: float = CHECKPOINT_EVERY_S):
        self.policy, self.every_s = policy, every_s
        self.last_saved = -math.inf
        self.staged: str | None = None
        self.save_seconds: list[float] = []

    def restore(self):
        """`StartFrom` this trial's latest checkpoint (a retried trial), or None (a fresh one)."""
        from ray import tune

        from pipelines.training import StartFrom

        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as folder:
            state = json.loads((Path(folder) / CHECKPOINT_STATE).read_text())
            head, weights = trained_weights(LocalBlobStore(folder), CHECKPOINT_MODEL)
        logger.info("trial continues from its checkpoint at epoch %s", state["epoch"])
        return StartFrom(int(state["epoch"]), float(state["val_accuracy"]), head=head, weights=weights)

    def stage(self, candidate) -> None:
        """`on_best`: write `candidate` (at its best epoch so far) to a folder the next `report` attaches."""
        began = time.monotonic()
        # At most every `every_s` seconds, and never more than ~5 % of the time on saving (a fine-tuned
        # backbone takes ~0.4 s to save, a small CNN ~0.05 s, a numpy head ~2 ms).
        if began - self.last_saved < max(self.every_s, 20 * (self.save_seconds[-1] if self.save_seconds else 0.0)):
            return
        self._discard()
        folder = tempfile.mkdtemp(prefix="classifly-checkpoint-")
        save_trained(LocalBlobStore(folder), CHECKPOINT_MODEL, candidate, self.policy)
        state = {"epoch": candidate.epochs_run, "val_accuracy": float(candidate.val_accuracy)}
        (Path(folder) / CHECKPOINT_STATE).write_text(json.dumps(state))
        self.staged, self.last_saved = folder, time.monotonic()
        self.save_seconds.append(self.last_saved - began)

    def report(self, metrics: dict[str, Any]) -> None:
        """`tune.report(metrics)`, with the staged checkpoint when there is one (Tune copies it to its storage)."""
        from ray import tune

        if self.staged is None:
            tune.report(metrics)
            return
        try:
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(self.staged))
        finally:
            self._discard()

    def _discard(self) -> None:
        if self.staged is not None:
            shutil.rmtree(self.staged, ignore_errors=True)
            self.staged = None


def read_checkpoint_state(checkpoint) -> dict[str, Any]:
    """The `trial.json` of a Tune checkpoint on Tune's storage (local or a URI), without fetching the model."""
    with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{CHECKPOINT_STATE}") as stream:
        return json.loads(stream.read())


def tune_storage(settings: Settings) -> str:
    """Where Tune keeps trial checkpoints: under the blob store when it is a URI (s3://…, shared by every node of
    a cluster, so a trial retried on another node finds its checkpoint), else `<data_dir>/tune`."""
    if "://" in settings.blob_root:
        return f"{settings.blob_root.rstrip('/')}/tune"
    return str(settings.data_dir / "tune")


def _cached_feature_sets(
    blobs, spec: CandidateSpec, policy: PreprocessingPolicy, data: Prepared, settings: Settings, should_stop=None
):
    """Train and validation features from the feature cache (computed here, on the trial's CPUs, when new)."""
    from pipelines.features import FeatureSet

    images = np.concatenate([data.train_images, data.val_images])
    cached = cached_features(
        blobs,
        spec,
        policy,
        data.train_shas + data.val_shas,
        images,
        backbone_cache_dir=str(settings.data_dir / "backbones"),
        should_stop=should_stop,
    )
    cut = len(data.train_labels)
    plain, mirrored = cached.features.astype(np.float32), cached.mirrored.astype(np.float32)
    return (
        FeatureSet(plain[:cut], data.train_labels, mirrored[:cut]),
        FeatureSet(plain[cut:], data.val_labels, mirrored[cut:]),
    )


def run_training(run_id: str, settings: Settings) -> None:
    """The driver of one run; whatever happens, the run row says how it ended."""
    catalog: Catalog = RayCatalog(get_catalog_actor(settings.ray_namespace))
    run = catalog.call_sync(catalog_runs.start_run, run_id)
    started = time.time()
    budget = float(run.config.get("time_budget_s") or 600)
    target = run.config.get("target_accuracy")

    def progress(stage: str, fraction: float, message: str, **extra: Any) -> None:
        left = max(0.0, budget - (time.time() - started))
        state = {
            "stage": stage,
            "fraction": round(fraction, 4),
            "message": message,
            "seconds_left": round(left),
            **extra,
        }
        if catalog.call_sync(catalog_runs.report_run_progress, run_id, state):
            raise RunCancelled

    try:
        result = _search(run, settings, catalog, progress, started, budget, target)
        catalog.call_sync(
            catalog_runs.finish_run,
            run_id,
            status="succeeded",
            result=result,
            progress={"stage": "done", "fraction": 1.0, "message": result["summary"]},
        )
    except RunCancelled:
        catalog.call_sync(
            catalog_runs.finish_run,
            run_id,
            status="cancelled",
            progress={"stage": "cancelled", "fraction": 1.0, "message": "Stopped at your request."},
        )
    except ClassiflyError as error:
        catalog.call_sync(
            catalog_runs.finish_run,
            run_id,
            status="failed",
            error={"code": error.code, "title": error.title, "detail": error.detail},
            progress={"stage": "failed", "fraction": 1.0, "message": error.detail},
        )
    except Exception as error:
        logger.exception("training run %s failed", run_id)
        detail = "Training stopped on an unexpected problem. Your data is unchanged; resume the run or try again."
        catalog.call_sync(
            catalog_runs.finish_run,
            run_id,
            status="failed",
            error={"code": "internal", "detail": detail, "type": type(error).__name__},
            progress={"stage": "failed", "fraction": 1.0, "message": detail},
        )


class _StepClock:
    """Seconds per step of a run (preparing, searching, testing, ...), kept in its result so a user (and the
    training benchmark) can see where the time went."""

    def __init__(self, started: float):
        self.last = started
        self.seconds: dict[str, float] = {}

    def lap(self, step: str) -> None:
        now = time.time()
        self.seconds[step] = round(self.seconds.get(step, 0.0) + now - self.last, 2)
        self.last = now


def _search(run, settings: Settings, catalog: Catalog, progress, started: float, budget: float, target) -> dict:
    clock = _StepClock(started)
    snapshot = catalog.call_sync(catalog_runs.run_snapshot, run.id)
    shape = catalog.call_sync(catalog_runs.run_shape, run.id)
    policy = choose_policy(DatasetShape.from_infos(shape))
    progress("preparing", 0.02, f"Preparing {len(snapshot):,} pictures")
    pictures = prepare_pictures(
        snapshot,
        policy,
        settings,
        lambda done, total: progress(
            "preparing", 0.02 + 0.08 * done / total, f"Preparing pictures ({done:,} of {total:,})"
        ),
    )
    data = split_snapshot(snapshot, pictures)
    counts = Counter(data.train_labels.tolist())
    summary = DatasetSummary(
        num_classes=len(data.class_names),
        train_count=len(data.train_labels) + len(data.val_labels),
        test_count=len(data.test_labels),
        min_per_class=min(counts.values()),
        policy=policy,
    )
    options = SearchOptions.from_dict(_search_options(run.config.get("advanced", {})))
    winners = [
        PastWinner(CandidateSpec.from_dict(w["spec"]), DatasetSummary.from_dict(w["dataset"]), w.get("accuracy", 0.0))
        for w in catalog.call_sync(catalog_runs.winning_specs)
        if w.get("spec") and w.get("dataset")
    ]
    specs = generate_candidates(summary, options=options, past_winners=winners)
    clock.lap("preparing")
    if not specs:
        raise InvalidInput("No candidate model fits these settings. Allow more backbones or kinds of model.")
    # Trials stop in time to leave the evaluation and publishing inside the budget the user gave.
    deadline = started + budget - min(EVALUATION_RESERVE_S, 0.1 * budget)
    blobs = open_blob_store(settings.blob_root)
    kept, to_train = resumable_trials(catalog, run.id, specs, blobs, summary)
    words = f"Trying {len(specs)} candidate models"
    if kept:
        words += f" ({len(kept)} kept from before the interruption)"
    progress("searching", 0.1, words, candidates=len(specs))
    recorder = _TrialRecorder(run.id, catalog, specs, progress, started, budget, target, summary, deadline)
    recorder.trials.update({entry["trial_id"]: entry for entry in kept})
    if to_train:
        _tune(run, settings, catalog, data, policy, to_train, recorder, target, deadline)
    if catalog.call_sync(catalog_runs.run_stop_reason, run.id) == "cancelled":
        raise RunCancelled
    winner = recorder.winner(target) or recorder.adopt_best_checkpoint(blobs)
    clock.lap("searching")
    if winner is None:
        raise InvalidInput(
            "No candidate finished training within the time budget. Give the model more time (time_budget_s) "
            "and train again."
        )
    progress("evaluating", 0.92, "Checking the best candidate on the test pictures")
    model = load_trained(blobs, winner["artifact"], settings.data_dir / "backbones")
    proba = model.predict_proba(data.test_images)
    metrics = evaluate(proba, data.test_labels, data.class_names, data.test_ids)
    metrics["val_accuracy"] = winner["val_accuracy"]
    clock.lap("testing")
    own = None
    if model.head is not None:
        train, val = _cached_feature_sets(blobs, model.spec, policy, data, settings)
        own = np.concatenate([train.features, val.features]), np.concatenate([train.mirrored, val.mirrored])
        ood = fit_centroids(train.features, train.labels, val.features, len(data.class_names))
    else:
        ood = fit_max_probability(model.predict_proba(data.val_images)) if len(data.val_labels) else None
        if model.spec.kind == "scratch_cnn":
            progress("evaluating", 0.94, "Preparing quick updates (features of every picture)")
            own = _store_cnn_base(blobs, winner["artifact"], model, data, policy, settings)
    if ood is not None:
        add_ood(blobs, winner["artifact"], ood)
    clock.lap("quick_updates")
    progress("evaluating", 0.96, "Looking for pictures that may be labelled wrong")
    metrics["label_mistakes"] = label_mistakes(model, data, features=own)
    clock.lap("label_check")
    metrics["dataset_fingerprint"] = fingerprint(snapshot)
    version = catalog.call_sync(
        catalog_runs.publish_version,
        run.owner_id,
        run.model_id,
        source="training",
        run_id=run.id,
        classes=list(data.class_names),
        backbone=model.spec.backbone,
        preprocessing=policy.to_dict(),
        artifact_uri=winner["artifact"],
        metrics=metrics,
    )
    _expand_with_later_changes(run, catalog, settings, metrics["dataset_fingerprint"])
    clock.lap("publishing")
    seconds = time.time() - started
    words = (
        f"Version {version.version} is ready: {metrics['accuracy']:.1%} of the test pictures right "
        f"({model.spec.title()}), found in {seconds:.0f} s."
    )
    if winner.get("from_checkpoint"):
        words += (
            f" No candidate finished within the time budget: this one was stopped at epoch {winner['last_epoch']} "
            f"and its best epoch ({winner['epoch']}) was kept."
        )
    return {
        "summary": words,
        "version": version.version,
        "winner": {"spec": model.spec.to_dict(), "title": model.spec.title(), "trial_id": winner["trial_id"]},
        "dataset": summary.to_dict(),
        "accuracy": metrics["accuracy"],
        "seconds": round(seconds, 1),
        "step_seconds": clock.seconds,
        "leaderboard_size": len(specs),
        "reached_target": target is not None and metrics["accuracy"] >= target,
    }


def _store_cnn_base(blobs, artifact: str, model, data: Prepared, policy, settings: Settings):
    """A from-scratch CNN winner: its layers up to the classifier stored as `base.keras` in the artifact, and the
    base's features of the run's training pictures cached, so a later model update (a class added) only computes
    the new pictures' features. Returns (features, None) of the train + validation pictures for the label check.
    """
    from pipelines.cnn import split_features

    base, classifier = split_features(model.keras_model, model.class_names)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "base.keras")
        base.save(path)
        with open(path, "rb") as file:
            base_bytes = file.read()
    blobs.put(f"{artifact}/base.keras", base_bytes)
    # The network's own last layer as a numpy head: a model update begins its new head from these weights.
    blobs.put(f"{artifact}/classifier.npz", classifier.to_bytes())
    manifest = json.loads(blobs.get(f"{artifact}/{MANIFEST}"))
    manifest["files"] |= {"base": "base.keras", "classifier": "classifier.npz"}
    blobs.put(f"{artifact}/{MANIFEST}", json.dumps(manifest, indent=2).encode())
    images = np.concatenate([data.train_images, data.val_images, data.test_images])
    shas = data.train_shas + data.val_shas + data.test_shas
    cached = features_from_cache(
        blobs,
        base_feature_key(f"{artifact}/base.keras", base_bytes, policy),
        ("base", settings.blob_root, f"{artifact}/base.keras"),
        policy,
        shas,
        images,
        backbone_cache_dir=str(settings.data_dir / "backbones"),
    )
    own = len(data.train_labels) + len(data.val_labels)
    return cached.features[:own].astype(np.float32), None


def _expand_with_later_changes(run, catalog: Catalog, settings: Settings, trained_on: str) -> None:
    """Pictures or classes changed while the run trained on its snapshot: the version just published is
    brought up to date by an expansion (a new head on the current data), so no change is silently dropped.
    """
    current = catalog.call_sync(catalog_runs.dataset_images, run.owner_id, run.model_id)
    if fingerprint(current) == trained_on:
        return
    from cluster.catalog import jobs as catalog_jobs
    from cluster.jobs import start_jobs_actor

    job, created = catalog.call_sync(
        catalog_jobs.request_expansion, run.owner_id, run.model_id, f"changes made while run {run.id} trained"
    )
    if created:
        handle = start_jobs_actor(settings.ray_namespace)
        ray.get(handle.submit_expansion.remote(job.id, run.model_id, settings.model_dump_json()))


def _tune(run, settings: Settings, catalog: Catalog, data: Prepared, policy, specs, recorder, target, deadline) -> None:
    """Ray Tune over `specs`: ASHA on epochs, trials sized to the free CPUs, the recorder writing the leaderboard."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    resources, concurrent = trial_resources(run.owner_id, settings)
    recorder.stopper = _Stopper(run.id, catalog, deadline)
    tuner = tune.Tuner(
        tune.with_resources(
            tune.with_parameters(_trainable, data=data, settings_json=settings.model_dump_json(), run_id=run.id),
            resources,
        ),
        param_space={
            "candidate": tune.grid_search([spec.to_dict() for spec in specs]),
            "policy": policy.to_dict(),
            "target_accuracy": target,
            "deadline": deadline,
        },
        tune_config=tune.TuneConfig(
            scheduler=ASHAScheduler(
                time_attr="training_iteration",
                metric="val_accuracy",
                mode="max",
                max_t=max(s.max_epochs for s in specs) + 1,
                grace_period=2,
                reduction_factor=3,
            ),
            reuse_actors=True,
            max_concurrent_trials=concurrent,
        ),
        run_config=tune.RunConfig(
            name=f"{run.id}-{int(time.time())}",  # a resumed run gets a fresh Tune experiment
            storage_path=tune_storage(settings),
            callbacks=[recorder],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),  # trials checkpoint only best epochs
            stop=recorder.stopper,
            failure_config=tune.FailureConfig(max_failures=TRIAL_RETRIES, fail_fast=False),
            verbose=0,
        ),
    )
    tuner.fit()


def trial_resources(owner_id: str | None, settings: Settings):
    """What each trial of `owner_id`'s run asks for (their runner when they have one, else the shared training
    resource; see cluster/resources.py) as a Tune placement group factory, and how many run at once."""
    from ray import tune

    bundle, concurrent = trial_bundle(owner_id, max_cpus=settings.trial_max_cpus)
    return tune.PlacementGroupFactory([bundle]), concurrent


def resumable_trials(
    catalog: Catalog, run_id: str, specs: list[CandidateSpec], blobs, summary: DatasetSummary
) -> tuple[list[dict[str, Any]], list[CandidateSpec]]:
    """What an earlier attempt of this run already did: its finished trials whose models are stored are kept
    (not trained again, still in the race for winner), trials it left running are marked interrupted; returns
    (kept leaderboard entries, the specs still to train).
    """
    kept: list[dict[str, Any]] = []
    done_keys: set[str] = set()
    for trial in catalog.call_sync(catalog_runs.list_trials, run_id):
        artifact = trial.metrics.get("artifact")
        if trial.status == "finished" and artifact and blobs.exists(f"{artifact}/{MANIFEST}"):
            spec = CandidateSpec.from_dict(trial.spec)
            done_keys.add(spec.key())
            kept.append(
                {
                    "trial_id": trial.trial_id,
                    "spec": spec,
                    "history": list(trial.metrics.get("history", [])),
                    "best": trial.metrics.get("best_val_accuracy"),
                    "artifact": artifact,
                    "started": time.time() - (trial.cost_s or 0.0),
                    "cost": estimate_cost(spec, summary),
                    "done": True,
                }
            )
        elif trial.status == "running":
            catalog.call_sync(
                catalog_runs.record_trial,
                run_id,
                trial.trial_id,
                spec=trial.spec,
                status="stopped",
                epochs=trial.epochs,
                metrics=trial.metrics,
                cost_s=trial.cost_s,
                stop_reason="interrupted when the platform stopped; trained again",
            )
    return kept, [spec for spec in specs if spec.key() not in done_keys]


def _search_options(advanced: dict[str, Any]) -> dict[str, Any]:
    options = {
        k: advanced[k] for k in ("backbones", "kinds", "max_epochs", "batch_size", "learning_rate") if k in advanced
    }
    if advanced.get("augmentation") is False:
        options["augmentation"] = frozenset()
    return options


def evaluate(proba: np.ndarray, labels: np.ndarray, class_names, ids: np.ndarray) -> dict[str, Any]:
    """Test-split evaluation as the API shows it: accuracy, per-class precision/recall/F1, confusion matrix,
    calibration (reliability bins and expected calibration error) and the misclassified pictures.
    """
    from pipelines import metrics

    if len(labels) == 0:
        return {"accuracy": 0.0, "per_class": [], "confusion_matrix": [], "class_names": list(class_names),
                "misclassified": [], "test_images": 0}  # fmt: skip
    result = metrics.evaluate(labels, proba, class_names)
    wrong = metrics.misclassified(labels, proba.argmax(axis=1), proba, [str(i) for i in ids])
    return {
        "accuracy": round(result.accuracy, 4),
        "per_class": [
            {
                "class": c.name,
                "precision": round(c.precision, 4),
                "recall": round(c.recall, 4),
                "f1": round(c.f1, 4),
                "support": c.support,
            }
            for c in result.classes
        ],  # fmt: skip
        "confusion_matrix": result.confusion.tolist(),
        "class_names": list(class_names),
        "calibration": {
            "expected_error": round(result.calibration.expected_error, 4),
            "bins": [
                {
                    "low": b.low,
                    "high": b.high,
                    "count": b.count,
                    "confidence": round(b.confidence, 4),
                    "accuracy": round(b.accuracy, 4),
                }
                for b in result.calibration.bins
            ],  # fmt: skip
        },
        "misclassified": [
            {
                "image_id": int(m.image_id),
                "true": class_names[m.given],
                "predicted": class_names[m.predicted],
                "confidence": round(m.confidence, 4),
            }
            for m in wrong[:MAX_LISTED]
        ],  # fmt: skip
        "test_images": int(len(labels)),
    }


def label_mistakes(model, data: Prepared, *, threshold: float = 0.9, features=None) -> list[dict[str, Any]]:
    """Pictures of the user's own training data whose class an out-of-fold model strongly disputes.

    The winner's features (frozen backbone, CNN feature layer or fine-tuned backbone) are computed once and a
    head is refitted per fold, so each picture is judged by a head that never saw its label. `features`
    (plain, mirrored) of train + validation pictures may be given, e.g. from the feature cache.
    """
    from pipelines import metrics

    images = np.concatenate([data.train_images, data.val_images])
    labels = np.concatenate([data.train_labels, data.val_labels])
    ids = np.concatenate([data.train_ids, data.val_ids])
    if len(labels) < 10 or np.bincount(labels).min() < 2:
        return []
    features, mirrored = features if features is not None else model.features(images)
    head_spec = replace(model.spec, head="softmax", hidden_units=0, dropout=0.0, batch_size=256)
    proba = metrics.out_of_fold_head_proba(
        features, labels, head_spec, folds=5, mirrored=mirrored, max_epochs=LABEL_CHECK_EPOCHS
    )
    found = metrics.possible_label_mistakes(proba, labels, [str(i) for i in ids], threshold=threshold)
    names = data.class_names
    return [
        {"image_id": int(m.image_id), "given": names[m.given], "suggested": names[m.predicted],
         "confidence": round(m.confidence, 4)}
        for m in found[:MAX_LISTED]
    ]  # fmt: skip


class _TrialRecorder:
    """A Tune callback writing each trial's progress to the catalog (the leaderboard) and the run's progress."""

    def __new__(cls, *args, **kwargs):
        from ray.tune import Callback

        class Recorder(Callback):
            def __init__(self, run_id, catalog, specs, progress, started, budget, target, summary, deadline):
                self.run_id, self.catalog, self.progress, self.summary = run_id, catalog, progress, summary
                self.started, self.budget, self.target, self.deadline = started, budget, target, deadline
                self.trials: dict[str, dict[str, Any]] = {}
                self.total = len(specs)
                self.stopper = None  # the search's stopper (`_Stopper`), set by `_tune`

            def _entry(self, trial) -> dict[str, Any]:
                spec = CandidateSpec.from_dict(trial.config["candidate"])
                return self.trials.setdefault(
                    trial.trial_id,
                    {
                        "trial_id": trial.trial_id,
                        "spec": spec,
                        "history": [],
                        "best": None,
                        "artifact": None,
                        "started": time.time(),
                        "cost": estimate_cost(spec, self.summary),
                    },
                )

            def _save(self, trial, status: str, reason: str | None) -> None:
                self._record(self._entry(trial), status, reason)

            def _record(self, entry: dict[str, Any], status: str, reason: str | None) -> None:
                self.catalog.call_sync(
                    catalog_runs.record_trial,
                    self.run_id,
                    entry["trial_id"],
                    spec=entry["spec"].to_dict(),
                    status=status,
                    epochs=len(entry["history"]),
                    metrics={
                        "title": entry["spec"].title(),
                        "best_val_accuracy": entry["best"],
                        "history": entry["history"][-200:],
                        "artifact": entry["artifact"],
                        "node_id": entry.get("node_id"),
                    },
                    cost_s=round(time.time() - entry["started"], 2),
                    stop_reason=reason,
                )

            def on_trial_start(self, iteration, trials, trial, **info):
                self._entry(trial)
                self._save(trial, "running", None)

            def on_trial_result(self, iteration, trials, trial, result, **info):
                entry = self._entry(trial)
                entry["node_id"] = result.get("node_id") or entry.get("node_id")
                if result.get("final"):
                    entry["artifact"] = result.get("artifact")
                    entry["final_reason"] = result.get("stopped_because")
                    entry["best"] = max(entry["best"] or 0.0, result.get("val_accuracy", 0.0))
                else:
                    point = {
                        k: result[k]
                        for k in ("epoch", "val_accuracy", "train_accuracy", "loss", "seconds")
                        if k in result
                    }
                    entry["history"].append(point)
                    entry["best"] = max(entry["best"] or 0.0, result.get("val_accuracy", 0.0))
                self._save(trial, "running", None)
                best = max((e["best"] or 0.0) for e in self.trials.values())
                finished = sum(1 for e in self.trials.values() if e.get("done"))
                elapsed = time.time() - self.started
                reached = self.target is not None and best >= self.target
                self.progress(
                    "searching",
                    0.1 + 0.8 * min(1.0, max(finished / self.total, elapsed / self.budget)),
                    f"Trying candidate models ({finished} of {self.total} done)",
                    best_accuracy=best,
                    target_reached=reached,
                )

            def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
                entry = self._entry(trial)
                try:
                    state = read_checkpoint_state(checkpoint)
                except (OSError, ValueError):
                    logger.warning("trial %s: unreadable checkpoint %s", trial.trial_id, checkpoint.path)
                    return
                entry["checkpoint"] = {"checkpoint": checkpoint, **state}

            def on_trial_complete(self, iteration, trials, trial, **info):
                entry = self._entry(trial)
                entry["done"] = True
                if entry.get("final_reason"):
                    reason = entry["final_reason"]
                elif time.time() > self.deadline or getattr(self.stopper, "out_of_time", False):
                    reason = f"stopped by the time budget at epoch {self._last_epoch(entry)}"
                else:
                    reason = "stopped early: others were clearly better"
                entry["stop_reason"] = _words(reason, self.target)
                self._save(trial, "finished" if entry["artifact"] else "stopped", entry["stop_reason"])

            def on_trial_recover(self, iteration, trials, trial, **info):
                entry = self._entry(trial)
                kept = entry.get("checkpoint")
                if kept:  # it goes on from its checkpoint, on the nodes left
                    entry["history"] = [p for p in entry["history"] if p.get("epoch", 0) <= kept["epoch"]]
                    reason = f"its machine was lost or it crashed; continued from its epoch {kept['epoch']}"
                else:
                    entry["history"] = []  # no checkpoint yet: it starts again from its first epoch
                    reason = "its machine was lost or it crashed; started again"
                self._save(trial, "running", reason)

            @staticmethod
            def _last_epoch(entry) -> int:
                return int(max((p.get("epoch", 0) for p in entry["history"]), default=0))

            def adopt_best_checkpoint(self, blobs) -> dict[str, Any] | None:
                """No trial finished: the best checkpointed epoch of any trial, stored as the trial's artifact
                (the `save_trained` files its checkpoint holds), becomes the winner; None without checkpoints."""
                kept = [e for e in self.trials.values() if e.get("checkpoint")]
                if not kept:
                    return None
                pick = max(kept, key=lambda e: (e["checkpoint"]["val_accuracy"], -e["cost"]))
                state = pick["checkpoint"]
                prefix = f"artifacts/{self.run_id}/{pick['trial_id']}"
                with state["checkpoint"].as_directory() as folder:
                    copy_artifact(LocalBlobStore(folder), CHECKPOINT_MODEL, blobs, prefix)
                last = max(self._last_epoch(pick), state["epoch"])
                pick["artifact"], pick["best"] = prefix, state["val_accuracy"]
                why = pick.get("stop_reason") or f"stopped by the time budget at epoch {last}"
                reason = f"{why}; its best epoch ({state['epoch']}, {state['val_accuracy']:.1%} on validation) was kept"
                self._record(pick, "finished", reason)
                return {
                    "trial_id": pick["trial_id"],
                    "artifact": prefix,
                    "val_accuracy": state["val_accuracy"],
                    "from_checkpoint": True,
                    "epoch": state["epoch"],
                    "last_epoch": last,
                }

            def on_trial_error(self, iteration, trials, trial, **info):
                entry = self._entry(trial)
                entry["done"] = True
                self._save(trial, "error", "it crashed; the search went on without it")

            def winner(self, target) -> dict[str, Any] | None:
                finished = [e for e in self.trials.values() if e["artifact"]]
                if not finished:
                    return None
                meeting = [e for e in finished if target is not None and (e["best"] or 0) >= target]
                # Among candidates that meet the target, the cheapest to run; otherwise the most accurate.
                pick = min(meeting, key=lambda e: e["cost"]) if meeting else max(finished, key=lambda e: e["best"])
                return {"trial_id": pick["trial_id"], "artifact": pick["artifact"], "val_accuracy": pick["best"]}

        return Recorder(*args, **kwargs)


def _words(reason: str, target) -> str:
    table = {
        "target": "reached your target accuracy",
        "max_epochs": "trained for all its epochs",
        "early_stopping": "stopped improving",
        "callback": "stopped: the search had its answer or ran out of time",
        "asked to stop": "stopped: the goal was reached, the time was up, or the run was cancelled",
        "time budget": "ran out of time before its picture features were ready",
    }
    return table.get(reason, reason)


class _Stopper:
    """Stops the whole search at the deadline or on a cancel (the target is handled inside each trial)."""

    def __new__(cls, run_id: str, catalog: Catalog, deadline: float):
        from ray.tune import Stopper

        class RunStopper(Stopper):
            def __init__(self):
                self.checked = 0.0
                self.stop = False
                self.out_of_time = False  # it stopped the search at the deadline (the recorder words it so)

            def __call__(self, trial_id, result) -> bool:
                return self.stop_all()

            def stop_all(self) -> bool:
                if time.time() - self.checked > 2:
                    self.checked = time.time()
                    reason = catalog.call_sync(catalog_runs.run_stop_reason, run_id)
                    self.out_of_time = time.time() > deadline + 30
                    self.stop = reason == "cancelled" or self.out_of_time
                return self.stop

        return RunStopper()


def training_driver(run_id: str, settings_json: str) -> None:
    """Entry point of the Ray task that drives one run (owned by the jobs actor)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tempfile.tempdir = None
    run_training(run_id, Settings.model_validate_json(settings_json))
