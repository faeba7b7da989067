"""A trial that cannot end one epoch before the run's deadline is not started once the run has a candidate:
its epoch time is predicted from the other trials' epochs, scaled by the cost model."""

from __future__ import annotations

import time

import pytest

from cluster.catalog import runs
from cluster.catalog.client import LocalCatalog
from cluster.training import _first_epoch_fits, predicted_epoch_seconds
from pipelines.candidates import CandidateSpec, DatasetSummary, estimate_cost
from pipelines.images import PreprocessingPolicy
from tests.factories import catalog_with_pictures

SUMMARY = DatasetSummary(10, 60_000, 10_000, 6_000, PreprocessingPolicy(28, "gray", "stretch"))
MEDIUM = CandidateSpec(kind="scratch_cnn", color="gray", input_size=28, cnn_width=32, cnn_depth=2, max_epochs=12)
WIDE = CandidateSpec(kind="scratch_cnn", color="gray", input_size=28, cnn_width=48, cnn_depth=3, max_epochs=12)
HEAD = CandidateSpec(kind="frozen_head", color="gray", input_size=96, backbone="efficientnet_lite0")
CONFIG = {"dataset": SUMMARY.to_dict()}


def trial(spec: CandidateSpec, *seconds: float, trial_id: str = "a") -> runs.TrialRecord:
    history = [{"epoch": i + 1, "seconds": s} for i, s in enumerate(seconds)]
    return runs.TrialRecord("run", trial_id, spec.to_dict(), "running", len(history), {"history": history}, None, None)


def test_an_epoch_is_predicted_from_the_fastest_epoch_of_another_trial_of_the_kind() -> None:
    ratio = (estimate_cost(WIDE, SUMMARY) / WIDE.max_epochs) / (estimate_cost(MEDIUM, SUMMARY) / MEDIUM.max_epochs)

    guess = predicted_epoch_seconds(WIDE, SUMMARY, [trial(MEDIUM, 40.0, 36.0, 38.0), trial(HEAD, 5.0)])

    assert ratio > 1 and guess == pytest.approx(36.0 * ratio)
    assert predicted_epoch_seconds(WIDE, SUMMARY, [trial(HEAD, 5.0), trial(WIDE, 100.0)]) is None  # no peer


@pytest.fixture
def run_id() -> tuple[LocalCatalog, str]:
    catalog, (owner,), model_id = catalog_with_pictures(classes=("one", "seven"))
    return catalog, catalog.call_sync(runs.create_run, owner, model_id, {}).id


def record(catalog: LocalCatalog, run: str, spec: CandidateSpec, *seconds: float) -> None:
    history = [{"epoch": i + 1, "seconds": s} for i, s in enumerate(seconds)]
    catalog.call_sync(
        runs.record_trial,
        run,
        spec.key(),
        spec=spec.to_dict(),
        status="running",
        epochs=len(history),
        metrics={"title": spec.title(), "history": history},
        cost_s=None,
        stop_reason=None,
    )


def test_the_first_trial_always_starts_even_past_the_deadline(run_id) -> None:
    catalog, run = run_id

    assert _first_epoch_fits(WIDE, CONFIG, catalog, run, deadline=time.time() - 5)


def test_once_a_candidate_exists_a_trial_starts_only_if_its_first_epoch_fits(run_id) -> None:
    catalog, run = run_id
    record(catalog, run, MEDIUM, 36.0, 36.0)
    wide_epoch = predicted_epoch_seconds(WIDE, SUMMARY, catalog.call_sync(runs.list_trials, run))

    assert not _first_epoch_fits(WIDE, CONFIG, catalog, run, deadline=time.time() + wide_epoch / 2)
    assert _first_epoch_fits(WIDE, CONFIG, catalog, run, deadline=time.time() + wide_epoch * 2)
    assert not _first_epoch_fits(HEAD, CONFIG, catalog, run, deadline=time.time() - 1)  # past it: nothing starts
    assert _first_epoch_fits(HEAD, CONFIG, catalog, run, deadline=time.time() + 1)  # features stop by themselves
