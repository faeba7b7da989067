"""Expansion bookkeeping on an in-memory catalog: one queued job per model collects changes; the quality guard."""

from __future__ import annotations

import pytest

from cluster.catalog import jobs, runs
from cluster.expansion import fingerprint, quality_guard
from pipelines.errors import NotFound
from tests.factories import catalog_with_pictures


@pytest.fixture
def setup():
    catalog, (owner, other), model_id = catalog_with_pictures("alice", "bob")
    return catalog, owner, other, model_id


def test_changes_close_together_join_the_queued_job(setup) -> None:
    catalog, owner, _, model_id = setup

    first, created = catalog.call_sync(jobs.request_expansion, owner, model_id, "10 pictures of 'cat'")
    joined, created_again = catalog.call_sync(jobs.request_expansion, owner, model_id, "class 'dog' deleted")

    assert created and not created_again and joined.id == first.id
    assert joined.params["reasons"] == ["10 pictures of 'cat'", "class 'dog' deleted"]
    assert catalog.call_sync(jobs.seconds_since_update, first.id) < 5


def test_a_change_during_a_running_expansion_queues_the_next(setup) -> None:
    catalog, owner, _, model_id = setup
    first, _ = catalog.call_sync(jobs.request_expansion, owner, model_id, "a")
    catalog.call_sync(jobs.start_job, first.id)

    second, created = catalog.call_sync(jobs.request_expansion, owner, model_id, "b")

    assert created and second.id != first.id and second.status == "queued"


def test_only_the_owner_can_ask(setup) -> None:
    catalog, _, other, model_id = setup
    with pytest.raises(NotFound):
        catalog.call_sync(jobs.request_expansion, other, model_id, "x")
    with pytest.raises(NotFound):
        catalog.call_sync(runs.dataset_images, other, model_id)


def test_the_fingerprint_follows_labels_and_splits(setup) -> None:
    catalog, owner, _, model_id = setup
    now = catalog.call_sync(runs.dataset_images, owner, model_id)
    moved = catalog.call_sync(runs.dataset_images, owner, model_id)
    moved[0] = type(moved[0])(moved[0].image_id, "dog", moved[0].split, moved[0].sha256, moved[0].ref)

    assert len(now) == 20 and fingerprint(now) == fingerprint(list(reversed(now)))
    assert fingerprint(moved) != fingerprint(now)


def test_the_quality_guard() -> None:
    previous = {"per_class": [{"class": "cat", "recall": 0.95}, {"class": "dog", "recall": 0.9}]}
    good = {
        "per_class": [
            {"class": "cat", "recall": 0.93},
            {"class": "dog", "recall": 0.9},
            {"class": "fox", "recall": 0.85},
        ]
    }
    weak_new = {
        "per_class": [
            {"class": "cat", "recall": 0.9},
            {"class": "dog", "recall": 0.88},
            {"class": "fox", "recall": 0.4},
        ]
    }
    old_drop = {
        "per_class": [{"class": "cat", "recall": 0.6}, {"class": "dog", "recall": 0.9}, {"class": "fox", "recall": 0.9}]
    }

    assert quality_guard(good, previous, ["fox"])["retrain_recommended"] is False
    weak = quality_guard(weak_new, previous, ["fox"])
    assert weak["retrain_recommended"] and "'fox' is recognised in only 40%" in weak["message"]
    dropped = quality_guard(old_drop, previous, ["fox"])
    assert dropped["retrain_recommended"] and "'cat' dropped from 95% to 60%" in dropped["message"]
