"""The API's token and version cache (serve/cache.py) on a real in-memory catalog: answers from memory while the
catalog has not changed, forgets at once when a serving-relevant change is seen, never keeps an expired token."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from cluster.catalog import models, runs, tasks, users
from cluster.catalog.client import LocalCatalog
from cluster.catalog.db import utcnow
from pipelines.errors import NotFound, NotReady, Unauthorized
from serve.cache import ServingCache


class CountingCatalog(LocalCatalog):
    """The real in-memory catalog, counting the calls that reach it."""

    def __init__(self):
        super().__init__(":memory:")
        self.calls: list[str] = []

    def call_sync_with_generation(self, fn, *args, **kwargs):
        self.calls.append(fn.__name__)
        return super().call_sync_with_generation(fn, *args, **kwargs)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def catalog():
    catalog = CountingCatalog()
    yield catalog
    catalog.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(catalog, clock) -> ServingCache:
    return ServingCache(catalog, ttl_s=5.0, clock=clock)


def run(coroutine):
    return asyncio.run(coroutine)


def token_of(catalog, name: str = "alice", expires_at=None) -> tuple[str, str]:
    user = catalog.call_sync(users.create_user, name, "hash")
    token = catalog.call_sync(
        users.create_token, user.id, name="api", kind="api", token_hash=f"h-{name}", hint="x", expires_at=expires_at
    )
    return user.id, token.id


def published(catalog, owner: str, classes=("cat", "dog")) -> str:
    model_id = catalog.call_sync(models.create_model, owner, models.ModelSpec("pets")).id
    publish(catalog, owner, model_id, classes)
    return model_id


def publish(catalog, owner: str, model_id: str, classes=("cat", "dog")):
    return catalog.call_sync(
        runs.publish_version,
        owner,
        model_id,
        source="training",
        run_id=None,
        classes=list(classes),
        backbone=None,
        preprocessing={"image_size": 32, "color": "rgb", "resize": "stretch"},
        artifact_uri="artifacts/run/trial",
        metrics={"accuracy": 0.9},
    )


def test_a_token_is_asked_of_the_catalog_once_while_nothing_changes(catalog, cache) -> None:
    alice, _ = token_of(catalog)
    catalog.calls.clear()

    first = run(cache.user_of_token("h-alice"))
    again = [run(cache.user_of_token("h-alice")) for _ in range(5)]

    assert first[0].id == alice and all(user.id == alice for user, _ in again)
    assert catalog.calls == ["authenticate_token"] and cache.stats.hits == 5


def test_revoking_a_token_is_in_force_for_the_next_request(catalog, cache) -> None:
    alice, token_id = token_of(catalog)
    run(cache.user_of_token("h-alice"))

    catalog.call_sync(users.revoke_token, alice, token_id)

    with pytest.raises(Unauthorized, match="revoked"):
        run(cache.user_of_token("h-alice"))
    assert cache.stats.forgotten == 1


def test_a_cached_token_past_its_expiry_is_asked_of_the_catalog_again(catalog, cache, monkeypatch) -> None:
    token_of(catalog, expires_at=utcnow() + timedelta(hours=1))
    run(cache.user_of_token("h-alice"))
    run(cache.user_of_token("h-alice"))
    assert catalog.calls.count("authenticate_token") == 1

    monkeypatch.setattr("serve.cache.utcnow", lambda: utcnow() + timedelta(hours=2))  # the cache's clock only

    run(cache.user_of_token("h-alice"))
    assert catalog.calls.count("authenticate_token") == 2


def test_an_expired_token_is_refused_although_it_was_cached(catalog, cache) -> None:
    expires = utcnow() + timedelta(milliseconds=200)
    token_of(catalog, expires_at=expires)
    run(cache.user_of_token("h-alice"))
    deadline = time.monotonic() + 10
    while utcnow() <= expires and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for the clock itself, not for something to get ready

    with pytest.raises(Unauthorized, match="expired"):
        run(cache.user_of_token("h-alice"))


def test_errors_are_not_cached(catalog, cache) -> None:
    for _ in range(2):
        with pytest.raises(Unauthorized):
            run(cache.user_of_token("h-nobody"))
    assert catalog.calls.count("authenticate_token") == 2


def test_a_published_version_answers_at_once(catalog, cache) -> None:
    alice, _ = token_of(catalog)
    model_id = published(catalog, alice)
    assert run(cache.version_to_serve(alice, model_id)).version == 1
    assert run(cache.version_to_serve(alice, model_id)).version == 1
    assert catalog.calls.count("version_to_serve") == 1

    publish(catalog, alice, model_id, classes=("cat", "dog", "bird"))  # a model update, say

    served = run(cache.version_to_serve(alice, model_id))
    assert served.version == 2 and served.classes == ["cat", "dog", "bird"]


def test_activation_options_and_deletion_each_take_effect(catalog, cache) -> None:
    alice, _ = token_of(catalog)
    model_id = published(catalog, alice)
    publish(catalog, alice, model_id)
    assert run(cache.version_to_serve(alice, model_id)).version == 2

    catalog.call_sync(runs.activate_version, alice, model_id, 1)
    assert run(cache.version_to_serve(alice, model_id)).version == 1

    catalog.call_sync(models.update_model, alice, model_id, {"options": {"none_of_the_above_below": 0.2}})
    assert run(cache.version_to_serve(alice, model_id)).model_options["none_of_the_above_below"] == 0.2

    catalog.call_sync(models.delete_model, alice, model_id)
    with pytest.raises(NotFound):
        run(cache.version_to_serve(alice, model_id))


def test_entries_expire_after_the_time_to_live(catalog, cache, clock) -> None:
    alice, _ = token_of(catalog)
    run(cache.user_of_token("h-alice"))
    clock.now += 4.9
    run(cache.user_of_token("h-alice"))
    assert catalog.calls.count("authenticate_token") == 1

    clock.now += 0.2  # 5.1 s after it was read

    run(cache.user_of_token("h-alice"))
    assert catalog.calls.count("authenticate_token") == 2


def test_a_value_read_before_a_change_seen_meanwhile_is_not_kept(catalog, cache) -> None:
    alice, _ = token_of(catalog)
    model_id = published(catalog, alice)
    stale = run(catalog.call_with_generation(tasks.version_to_serve, alice, model_id))
    publish(catalog, alice, model_id)
    run(cache.version_to_serve(alice, model_id))  # sees the new generation

    cache._observe(stale[1])  # an answer read before the change arrives late

    assert cache.generation == catalog.generation
    assert run(cache.version_to_serve(alice, model_id)).version == 2


def test_a_restarted_catalog_counts_as_a_change(catalog, cache) -> None:
    alice, _ = token_of(catalog)
    run(cache.user_of_token("h-alice"))

    cache._observe(("cat_restarted", 0))  # the catalog's owner started again: its count begins at 0

    assert cache.entries == {} and cache.generation == ("cat_restarted", 0)


def test_without_a_time_to_live_every_lookup_asks_the_catalog(catalog, clock) -> None:
    alice, _ = token_of(catalog)
    model_id = published(catalog, alice)
    uncached = ServingCache(catalog, ttl_s=0, clock=clock)
    catalog.calls.clear()

    for _ in range(3):
        run(uncached.user_of_token("h-alice"))
        run(uncached.version_to_serve(alice, model_id))

    assert catalog.calls.count("authenticate_token") == catalog.calls.count("version_to_serve") == 3


def test_a_model_without_a_version_is_not_ready_every_time(catalog, cache) -> None:
    alice, _ = token_of(catalog)
    model_id = catalog.call_sync(models.create_model, alice, models.ModelSpec("empty")).id
    for _ in range(2):
        with pytest.raises(NotReady):
            run(cache.version_to_serve(alice, model_id))
