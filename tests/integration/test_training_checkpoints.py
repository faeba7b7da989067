"""Trial checkpoints in a real training search: when the time budget stops every trial before one finishes,
the best checkpointed epoch is published (not "no candidate finished").

The run's driver runs in this process (so the search's stopper can be replaced by one that ends the search as
the deadline would, after a trial's third epoch, deterministically); the trials are real Tune trials.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator

import pytest
import ray

from cluster import training
from cluster.blobs import open_blob_store, sha256_hex
from cluster.catalog import images, models, runs, users
from cluster.catalog.actor import RayCatalog, start_catalog_actor
from cluster.catalog.images import NewImage
from cluster.config import Settings
from cluster.runtime import local_node_resources
from pipelines.images import inspect_image
from tests.factories import stripes_zip

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    chosen = Settings(data_dir=tmp_path_factory.mktemp("ckpt"), environment="test", ray_namespace="test-checkpoints")
    ray.init(
        address="local",
        num_cpus=2,
        resources=local_node_resources(chosen, 2),
        include_dashboard=False,
        namespace=chosen.ray_namespace,
        logging_level="ERROR",
        log_to_driver=False,
    )
    try:
        start_catalog_actor(chosen.catalog_file, chosen.ray_namespace)
        yield chosen
    finally:
        ray.shutdown()


def stripes_model(catalog, settings: Settings) -> tuple[str, str]:
    """A user and a model holding the Pillow-made stripes pictures (16 train + 4 test per class)."""
    owner = catalog.call_sync(users.create_user, "stopped", "hash").id
    model_id = catalog.call_sync(models.create_model, owner, models.ModelSpec("Stripes")).id
    offered = []
    with (
        zipfile.ZipFile(io.BytesIO(stripes_zip())) as archive,
        open_blob_store(settings.blob_root).pack_writer() as pack,
    ):
        for name in sorted(archive.namelist()):
            data = archive.read(name)
            label, number = name.split("/")[0], int(name.split("/")[1].split(".")[0])
            info = inspect_image(data, name, max_pixels=settings.max_image_pixels)
            sha = sha256_hex(data)
            offered.append(
                NewImage(label, name, len(data), sha256=sha, split="test" if number < 4 else "train",
                         width=info.width, height=info.height, mode=info.mode, format=info.format,
                         is_gray=info.is_gray, ref=pack.add(sha, data))
            )  # fmt: skip
    catalog.call_sync(images.add_images, owner, model_id, offered, quota_bytes=10**9)
    return owner, model_id


class StopsLikeTheDeadline:
    """The search's stopper, firing as the real one does at the deadline: every trial stopped mid-training (here
    once a trial has reported its third epoch, whatever the machine's speed)."""

    def __new__(cls, run_id, catalog, deadline):
        from ray.tune import Stopper

        class Fired(Stopper):
            def __init__(self):
                self.out_of_time = self.stop = False

            def __call__(self, trial_id, result) -> bool:
                self.stop = self.out_of_time = self.stop or result.get("epoch", 0) >= 3
                return self.stop

            def stop_all(self) -> bool:
                return self.stop

        return Fired()


def test_a_search_stopped_by_the_time_budget_publishes_its_best_checkpoint(settings, monkeypatch) -> None:
    catalog = RayCatalog(start_catalog_actor(settings.catalog_file, settings.ray_namespace))
    owner, model_id = stripes_model(catalog, settings)
    config = {"time_budget_s": 600, "advanced": {"kinds": ["scratch_cnn"], "max_epochs": 60}}
    run_id = catalog.call_sync(runs.create_run, owner, model_id, config).id
    monkeypatch.setattr(training, "_Stopper", StopsLikeTheDeadline)

    training.run_training(run_id, settings)

    run = catalog.call_sync(runs.get_run, run_id)
    assert run.status == "succeeded", (run.error, run.progress)
    assert "No candidate finished within the time budget" in run.result["summary"], run.result
    trials = catalog.call_sync(runs.list_trials, run_id)
    winner = next(t for t in trials if t.trial_id == run.result["winner"]["trial_id"])
    assert winner.status == "finished" and winner.metrics["artifact"] == f"artifacts/{run_id}/{winner.trial_id}"
    assert winner.stop_reason.startswith("stopped by the time budget at epoch")
    assert "its best epoch (" in winner.stop_reason and winner.stop_reason.endswith("was kept")
    # No trial had reported a finished model: every one was stopped mid-training.
    assert not [t for t in trials if t.trial_id != winner.trial_id and t.metrics.get("artifact")]
    version = catalog.call_sync(runs.get_version, owner, model_id, run.result["version"])
    assert version.artifact_uri == winner.metrics["artifact"]
    assert 0.0 <= version.metrics["accuracy"] <= 1.0 and version.metrics["test_images"] == 8
