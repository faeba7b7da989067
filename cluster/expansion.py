"""Growing a model without retraining it: a new head fitted on cached features of the model's data as it is
now (classes added or removed, pictures added), evaluated on the test pictures, checked against the version
it replaces, and published as the next version in one catalog transaction, while the old one keeps answering.

An expansion is a job (`jobs.kind = 'expansion'`). Changes made close together share one queued job
(`catalog.jobs.request_expansion`); the jobs actor runs a model's expansions one after another, and each reads
the data when it starts, so nothing the user did is dropped and nothing is fitted twice.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np

from cluster.artifacts import MANIFEST, OOD_FILE, ArtifactManifest
from cluster.blobs import BlobStore, open_blob_store
from cluster.catalog import jobs as catalog_jobs
from cluster.catalog import models as catalog_models
from cluster.catalog import runs as catalog_runs
from cluster.catalog.client import Catalog
from cluster.config import Settings
from cluster.feature_cache import base_feature_key, feature_key, features_from_cache
from pipelines.candidates import CandidateSpec
from pipelines.errors import Conflict, InvalidInput, NotReady
from pipelines.images import PreprocessingPolicy
from pipelines.ood import fit_centroids, fit_max_probability
from pipelines.zips import stratified_split

# The quality guard: a full retrain is recommended when a new class is recognised less often than this, or an
# old class loses more than OLD_CLASS_DROP of its recall compared with the version being replaced.
NEW_CLASS_MIN_RECALL = 0.7
OLD_CLASS_DROP = 0.15
MIN_TRAIN_PER_CLASS = 2
# With many pictures (at least WARM_MIN_STEPS optimizer steps per epoch), a model update's head begins from the
# replaced version's weights and a few epochs do. Fewer pictures are fitted from zero with the spec's epochs
# (cheap anyway; a new class starting at zero next to confident old ones would need more steps than they give).
WARM_EPOCHS = 6
WARM_PATIENCE = 2
WARM_MIN_STEPS = 50
QUIET_S = 2.0  # an expansion starts once no change has joined it for this long (changes close together: one version)


def fingerprint(images) -> str:
    """What the model was fitted on: the (picture, class, split) rows; equal fingerprints, equal data."""
    digest = hashlib.sha256()
    for image in sorted(images, key=lambda i: i.image_id):
        digest.update(f"{image.image_id}:{image.label}:{image.split};".encode())
    return digest.hexdigest()


def expand(job, catalog: Catalog, blobs: BlobStore, settings: Settings, progress) -> dict[str, Any]:
    """Fit, check and publish the next version of `job.model_id` on its current data; returns the job result."""
    started = time.time()
    timings: dict[str, float] = {}  # seconds per step, in the job's result (the expansion benchmark reads them)
    mark = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        timings[phase] = round(now - mark, 3)
        mark = now

    from cluster.training import MAX_LISTED, VAL_FRACTION, _prepare_batch, evaluate
    from pipelines.features import FeatureSet, head_from_features

    lap("imports")

    owner_id, model_id = job.owner_id, job.model_id
    model = catalog.call_sync(catalog_models.get_owned_model, owner_id, model_id)
    if model.active_version is None:
        raise NotReady("This model has no trained version yet: train it once, then classes can be added in seconds.")
    base = catalog.call_sync(catalog_runs.get_version, owner_id, model_id, model.active_version)
    manifest = ArtifactManifest(**json.loads(blobs.get(f"{base.artifact_uri}/{MANIFEST}")))
    spec = CandidateSpec.from_dict(manifest.spec)
    policy = PreprocessingPolicy.from_dict(manifest.policy)
    if spec.kind == "finetune":
        raise Conflict(
            f"Version {base.version} is one fine-tuned network ({spec.title()}), so its classes cannot be changed "
            "without training. Train the model again (POST /v1/models/{id}/train) to use the new data."
        )
    images = catalog.call_sync(catalog_runs.dataset_images, owner_id, model_id)
    print_ = fingerprint(images)
    if print_ == base.metrics.get("dataset_fingerprint"):
        return {"version": base.version, "summary": f"Nothing changed since version {base.version}.", "changed": False}
    train_counts = Counter(i.label for i in images if i.split == "train")
    test_counts = Counter(i.label for i in images if i.split == "test")
    classes = tuple(sorted(c for c in train_counts if train_counts[c] >= MIN_TRAIN_PER_CLASS and test_counts[c]))
    left_out = sorted((set(train_counts) | set(test_counts)) - set(classes))
    if len(classes) < 2:
        raise InvalidInput(
            "A model needs at least two classes with pictures for training and testing. Add pictures, then try again."
        )
    images = [i for i in images if i.label in classes]

    lap("read_data")
    progress(0, len(images), "Reading the features of the pictures")
    shas = [i.sha256 for i in images]

    def load(rows: np.ndarray) -> np.ndarray:
        chosen = [images[r] for r in rows]
        return _prepare_batch(
            settings.blob_root,
            [i.ref for i in chosen],
            [f"{i.image_id}" for i in chosen],
            policy.to_dict(),
            settings.max_image_pixels,
        )

    prefix = f"artifacts/expansions/{job.id}"
    files = {"head": "head.npz"}
    if spec.kind == "scratch_cnn":
        # The from-scratch CNN's layers up to its feature layer are the base (stored first, with the new head
        # next to it); its features of every picture are cached under the base's content like a backbone's.
        base_bytes = _cnn_base_bytes(blobs, base.artifact_uri, manifest, settings)
        blobs.put(f"{prefix}/base.keras", base_bytes)
        files["base"] = "base.keras"
        key = base_feature_key(f"{prefix}/base.keras", base_bytes, policy)
        source: tuple = ("base", settings.blob_root, f"{prefix}/base.keras")
        fit_spec = replace(spec, augmentation=frozenset(), head="softmax")
    else:
        key, source, fit_spec = feature_key(spec, policy), ("backbone", spec.to_dict()), spec
    cached = features_from_cache(
        blobs,
        key,
        source,
        policy,
        shas,
        load,
        backbone_cache_dir=str(settings.data_dir / "backbones"),
        parallelism=max(1, int(settings_cpus())),
        report=lambda done, total: progress(done, total, f"Features of {done:,} of {total:,} pictures ready"),
        inline_small=True,
    )
    lap("features")
    features, mirrored = cached.features.astype(np.float32), cached.mirrored.astype(np.float32)
    index = {name: k for k, name in enumerate(classes)}
    labels = np.array([index[i.label] for i in images], dtype=np.int64)
    train_rows = [k for k, i in enumerate(images) if i.split == "train"]
    test_rows = np.array([k for k, i in enumerate(images) if i.split == "test"])
    inner = stratified_split([images[k].label for k in train_rows], test_fraction=VAL_FRACTION, seed=7)
    fit_rows = np.array([k for k, part in zip(train_rows, inner, strict=True) if part == "train"])
    val_rows = np.array([k for k, part in zip(train_rows, inner, strict=True) if part == "test"] or fit_rows[:1])
    progress(len(images), len(images), "Fitting the new head")
    earlier = _earlier_head(blobs, base.artifact_uri, manifest, fit_spec)
    short = earlier is not None and len(fit_rows) >= WARM_MIN_STEPS * fit_spec.batch_size
    if short:  # begun from the version's own weights, many steps per epoch: a few epochs do
        fit_spec = replace(fit_spec, max_epochs=min(fit_spec.max_epochs, WARM_EPOCHS))
    head, history = head_from_features(
        fit_spec,
        FeatureSet(features[fit_rows], labels[fit_rows], mirrored[fit_rows]),
        FeatureSet(features[val_rows], labels[val_rows], mirrored[val_rows]),
        classes,
        start=earlier if short else None,
        patience=WARM_PATIENCE if short else None,
    )
    lap("fit_head")
    use_mirror = "flip" in fit_spec.augmentation
    proba = head.predict_proba_views(features[test_rows], mirrored[test_rows] if use_mirror else None)
    ids = np.array([images[k].image_id for k in test_rows], dtype=np.int64)
    metrics = evaluate(proba, labels[test_rows], classes, ids)
    metrics["misclassified"] = metrics["misclassified"][:MAX_LISTED]
    metrics["val_accuracy"] = history.best_val_accuracy
    metrics["dataset_fingerprint"] = print_
    added = sorted(set(classes) - set(base.classes))
    removed = sorted(set(base.classes) - set(classes))
    guard = quality_guard(metrics, base.metrics, added)
    metrics["quality"] = guard
    lap("evaluate")
    blobs.put(f"{prefix}/head.npz", head.to_bytes())
    if spec.kind == "scratch_cnn":  # served as one whole model: "none of the above" from its best probability
        val_views = mirrored[val_rows] if use_mirror else None
        ood = fit_max_probability(head.predict_proba_views(features[val_rows], val_views))
    else:  # a head on the shared backbone: from the features serving has anyway
        ood = fit_centroids(features[fit_rows], labels[fit_rows], features[val_rows], len(classes))
    blobs.put(f"{prefix}/{OOD_FILE}", ood.to_bytes())
    files["ood"] = OOD_FILE
    manifest_out = ArtifactManifest(spec.to_dict(), policy.to_dict(), list(classes), files)
    blobs.put(f"{prefix}/{MANIFEST}", manifest_out.to_json())
    version = catalog.call_sync(
        catalog_runs.publish_version,
        owner_id,
        model_id,
        source="expansion",
        run_id=None,
        classes=list(classes),
        backbone=spec.backbone,
        preprocessing=policy.to_dict(),
        artifact_uri=prefix,
        metrics=metrics,
    )
    lap("publish")
    changes = []
    if added:
        changes.append(f"added {', '.join(added)}")
    if removed:
        changes.append(f"removed {', '.join(removed)}")
    what = "; ".join(changes) or "refitted on the new pictures"
    summary = (
        f"Version {version.version} answers now ({what}): {metrics['accuracy']:.1%} of the test pictures right, "
        f"ready in {time.time() - started:.1f} s."
    )
    retrain_run = None
    if guard["retrain_recommended"]:
        summary += " " + guard["message"]
        if model.options.get("auto_retrain"):
            retrain_run = _start_retrain(catalog, settings, owner_id, model_id, model)
            summary += (
                f" A full training started by itself ({retrain_run}); this version answers until it is done."
                if retrain_run
                else " A training run is already going; it will use the new data next time."
            )
    return {
        "retrain_run": retrain_run,
        "version": version.version,
        "summary": summary,
        "changed": True,
        "added": added,
        "removed": removed,
        "left_out": left_out,
        "accuracy": metrics["accuracy"],
        "retrain_recommended": guard["retrain_recommended"],
        "problems": guard["problems"],
        "seconds": round(time.time() - started, 2),
        "timings": timings,
    }


def _start_retrain(catalog: Catalog, settings: Settings, owner_id: str, model_id: str, model) -> str | None:
    """The user opted in (`auto_retrain`): a full training run on the data as it is now; its URL, or None when
    a run is already training the model."""
    import ray

    from cluster.jobs import start_jobs_actor

    config = {"target_accuracy": model.target_accuracy, "time_budget_s": model.time_budget_s, "advanced": {}}
    try:
        run = catalog.call_sync(catalog_runs.create_run, owner_id, model_id, config)
    except Conflict:
        return None
    ray.get(start_jobs_actor(settings.ray_namespace).submit_training.remote(run.id, settings.model_dump_json()))
    return f"/v1/runs/{run.id}"


def _earlier_head(blobs: BlobStore, artifact_uri: str, manifest: ArtifactManifest, spec: CandidateSpec):
    """The head of the version being replaced, on the same features as the new one (a backbone's head, a CNN's
    refitted head, or a CNN winner's own classifier), when it has the kind `spec` fits; else None."""
    from pipelines.heads import Head

    role = "head" if "head" in manifest.files else "classifier"
    if role not in manifest.files:
        return None
    head = Head.from_bytes(blobs.get(f"{artifact_uri}/{manifest.files[role]}"))
    wanted_hidden = spec.hidden_units if spec.head == "mlp" else None
    has_hidden = None if head.hidden_weights is None else head.hidden_weights.shape[1]
    return head if has_hidden == wanted_hidden else None


def _cnn_base_bytes(blobs: BlobStore, artifact_uri: str, manifest: ArtifactManifest, settings: Settings) -> bytes:
    """The stored feature base of a from-scratch CNN version: its own base file, or cut from its whole model."""
    if "base" in manifest.files:
        return blobs.get(f"{artifact_uri}/{manifest.files['base']}")
    import tempfile
    from pathlib import Path

    from cluster.artifacts import load_trained
    from pipelines.cnn import split_features

    model = load_trained(blobs, artifact_uri, settings.data_dir / "backbones")
    base, _ = split_features(model.keras_model, model.class_names)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "base.keras"
        base.save(path)
        return path.read_bytes()


def quality_guard(metrics: dict[str, Any], previous: dict[str, Any], added: list[str]) -> dict[str, Any]:
    """Whether the features tell the classes apart well enough, in words: new classes' recall, and old
    classes' recall against the version being replaced."""
    recall = {row["class"]: row["recall"] for row in metrics.get("per_class", [])}
    before = {row["class"]: row["recall"] for row in previous.get("per_class", [])}
    problems = [f"'{name}' is recognised in only {recall[name]:.0%} of its test pictures" for name in added
                if recall.get(name, 0.0) < NEW_CLASS_MIN_RECALL]  # fmt: skip
    problems += [
        f"'{name}' dropped from {before[name]:.0%} to {recall[name]:.0%}"
        for name in sorted(set(recall) & set(before))
        if before[name] - recall[name] > OLD_CLASS_DROP
    ]
    if not problems:
        return {"retrain_recommended": False, "problems": [], "message": ""}
    message = (
        "The quick update cannot tell the classes apart well enough (" + "; ".join(problems) + "). "
        "A full training would learn features for them: press Train on the model's Train tab."
    )
    return {"retrain_recommended": True, "problems": problems, "message": message}


def settings_cpus() -> int:
    import ray

    return max(1, int(ray.available_resources().get("CPU", 1))) if ray.is_initialized() else 1


class Updater:
    """A Ray actor that runs model updates in a process already warm: Python, TensorFlow and the feature code
    are loaded once when the platform starts, not by each update (a fresh worker took ~5 s before an update
    could begin). Updates of different models run side by side (threads); the jobs actor orders one model's."""

    def __init__(self) -> None:
        import cluster.training  # noqa: F401 - loaded now, so the first update does not wait for it
        import pipelines.features  # noqa: F401

    def run(self, job_id: str, settings_json: str, after: list | None = None) -> None:
        expansion_driver(job_id, settings_json, after)


def expansion_driver(job_id: str, settings_json: str, after: list | None = None) -> None:
    """Run one expansion job (after the model's previous one, when given) and record how it ended."""
    import ray

    from cluster.catalog.actor import RayCatalog, get_catalog_actor
    from cluster.jobs import finish_whatever_happens

    if after:
        ray.wait(after, num_returns=len(after))  # the model's previous expansion, whatever its outcome
    settings = Settings.model_validate_json(settings_json)
    catalog: Catalog = RayCatalog(get_catalog_actor(settings.ray_namespace))
    blobs = open_blob_store(settings.blob_root)
    while (quiet := catalog.call_sync(catalog_jobs.seconds_since_update, job_id)) < QUIET_S:
        time.sleep(QUIET_S - quiet)  # let changes made in quick succession join this job
    job = catalog.call_sync(catalog_jobs.start_job, job_id, message="Updating the model")

    def progress(done: int, total: int, message: str) -> None:
        catalog.call_sync(catalog_jobs.report_progress, job_id, done, total, message)

    finish_whatever_happens(
        catalog,
        job_id,
        lambda: expand(job, catalog, blobs, settings, progress),
        kind="expansion",
        unexpected="Updating the model stopped on an unexpected problem. The active version is unchanged; try again.",
    )
