"""Resuming an interrupted run: finished trials with stored models are kept, unfinished ones marked and retrained."""

from __future__ import annotations

from pathlib import Path

from cluster.artifacts import MANIFEST
from cluster.blobs import LocalBlobStore
from cluster.catalog import runs
from cluster.training import resumable_trials
from pipelines.candidates import CandidateSpec, DatasetSummary
from pipelines.images import PreprocessingPolicy
from tests.factories import catalog_with_pictures

SUMMARY = DatasetSummary(2, 40, 10, 20, PreprocessingPolicy(16, "gray", "stretch"))
SPECS = [
    CandidateSpec(kind="scratch_cnn", color="gray", input_size=16, cnn_width=8, cnn_depth=2),
    CandidateSpec(kind="scratch_cnn", color="gray", input_size=16, cnn_width=16, cnn_depth=2),
    CandidateSpec(kind="scratch_cnn", color="gray", input_size=16, cnn_width=32, cnn_depth=1),
]


def record(catalog, run_id, trial_id, spec, status, artifact=None):
    catalog.call_sync(
        runs.record_trial,
        run_id,
        trial_id,
        spec=spec.to_dict(),
        status=status,
        epochs=3,
        metrics={"title": spec.title(), "best_val_accuracy": 0.8, "history": [{"epoch": 1}], "artifact": artifact},
        cost_s=12.0,
        stop_reason=None,
    )


def test_finished_trials_with_stored_models_are_kept_and_the_rest_trained_again(tmp_path: Path) -> None:
    catalog, (owner,), model_id = catalog_with_pictures()
    blobs = LocalBlobStore(tmp_path)
    run_id = catalog.call_sync(runs.create_run, owner, model_id, {}).id
    blobs.put(f"artifacts/{run_id}/a/{MANIFEST}", b"{}")
    record(catalog, run_id, "a", SPECS[0], "finished", artifact=f"artifacts/{run_id}/a")
    record(catalog, run_id, "b", SPECS[1], "finished", artifact=f"artifacts/{run_id}/gone")  # its model was lost
    record(catalog, run_id, "c", SPECS[2], "running")

    kept, to_train = resumable_trials(catalog, run_id, SPECS, blobs, SUMMARY)

    assert [entry["trial_id"] for entry in kept] == ["a"]
    assert kept[0]["artifact"] == f"artifacts/{run_id}/a" and kept[0]["best"] == 0.8 and kept[0]["done"]
    assert to_train == SPECS[1:]
    trials = {trial.trial_id: trial for trial in catalog.call_sync(runs.list_trials, run_id)}
    assert trials["c"].status == "stopped" and "interrupted" in trials["c"].stop_reason
    assert trials["a"].status == "finished"


def test_a_fresh_run_trains_everything(tmp_path: Path) -> None:
    catalog, (owner,), model_id = catalog_with_pictures("bob")
    run_id = catalog.call_sync(runs.create_run, owner, model_id, {}).id

    kept, to_train = resumable_trials(catalog, run_id, SPECS, LocalBlobStore(tmp_path), SUMMARY)

    assert kept == [] and to_train == SPECS
