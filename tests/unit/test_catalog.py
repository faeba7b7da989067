"""The catalog on an in-memory DuckDB: users and tokens, models and classes, images, jobs, stats and clean-up."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cluster.blobs import BlobRef
from cluster.catalog import db, images, jobs, models, stats, storage, users
from cluster.catalog.client import LocalCatalog
from cluster.catalog.db import Connection, connect, in_transaction, migrate, utcnow
from cluster.catalog.images import ImageColumns, NewImage, Outcome, OutcomeColumns
from cluster.catalog.migrations import MIGRATIONS
from cluster.catalog.models import ModelSpec
from cluster.catalog.users import UserRecord
from cluster.security import hash_token
from pipelines.errors import Conflict, InvalidInput, NotFound, QuotaExceeded, Unauthorized

QUOTA = 10**9
PACK = "packs/aa/aa00000000000000000a.pack"


@pytest.fixture
def conn() -> Iterator[Connection]:
    connection = connect(":memory:")
    yield connection
    connection.close()


def call(conn: Connection, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """One catalog call as one transaction, the way LocalCatalog runs it."""
    return in_transaction(conn, fn, *args, **kwargs)


@pytest.fixture
def alice(conn: Connection) -> UserRecord:
    return call(conn, users.create_user, "alice", "hash-a")


@pytest.fixture
def bob(conn: Connection) -> UserRecord:
    return call(conn, users.create_user, "bob", "hash-b")


@pytest.fixture
def model(conn: Connection, alice: UserRecord) -> models.ModelRecord:
    return call(conn, models.create_model, alice.id, ModelSpec("flowers"))


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def picture(
    label: str,
    number: int,
    *,
    size: int = 100,
    split: str | None = None,
    key: str | None = None,
    width: int = 32,
    height: int = 32,
    fmt: str = "PNG",
    gray: bool = False,
    pack: str | None = PACK,
) -> NewImage:
    """An offered, readable picture; `key` decides its sha256 (default: unique per label and number).

    Its bytes lie in `pack` (at an offset made from the number), as the upload route or an import batch writes
    them before offering the picture; `pack=None` offers it without a location.
    """
    return NewImage(
        label=label,
        original_name=f"{label}/{number}.png",
        size_bytes=size,
        sha256=sha(key or f"{label}-{number}"),
        split=split,
        width=width,
        height=height,
        mode="L" if gray else "RGB",
        format=fmt,
        is_gray=gray,
        ref=BlobRef(pack, number * 1000, size) if pack else None,
    )


def unreadable(label: str, name: str, reason: str = "It is not a picture.") -> NewImage:
    return NewImage(label, name, 12, reject_reason=reason)


def add(
    conn: Connection, owner: UserRecord, model_id: str, offered: list[NewImage], quota: int = QUOTA, **kw
) -> list[Outcome]:
    outcomes = call(conn, images.add_images, owner.id, model_id, offered, quota_bytes=quota, **kw)
    assert isinstance(outcomes, OutcomeColumns)
    assert len(outcomes) == len(offered)
    return outcomes.rows()


def blob_rows(conn: Connection) -> dict[str, BlobRef]:
    """Every picture location the catalog knows, read directly."""
    rows = conn.execute("SELECT sha256, pack, pack_offset, length FROM blobs").fetchall()
    return {sha256: BlobRef(pack, offset, length) for sha256, pack, offset, length in rows}


def snapshot(conn: Connection) -> dict[str, list]:
    """Every row of the tables that hold user data, to prove a failed call changed nothing."""
    tables = ("users", "tokens", "models", "classes", "images", "blobs", "jobs", "counters")
    return {table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr) for table in tables}


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[Connection, UserRecord, UserRecord, models.ModelRecord]]:
    """One catalog for tables of calls that must fail and change nothing (each test checks that it didn't)."""
    connection = connect(":memory:")
    owner = call(connection, users.create_user, "alice", "hash-a")
    stranger = call(connection, users.create_user, "bob", "hash-b")
    record = call(connection, models.create_model, owner.id, ModelSpec("flowers"))
    add(connection, owner, record.id, [picture("cat", 1), picture("dog", 1)])
    yield connection, owner, stranger, record
    connection.close()


# --- database, migrations, transactions ---------------------------------------------------------------------


def test_connect_applies_every_migration_once(conn: Connection) -> None:
    applied = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()

    assert [row[0] for row in applied] == [version for version, _, _ in MIGRATIONS]
    assert migrate(conn) == []


def test_reopening_a_catalog_file_applies_nothing_and_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "catalog.duckdb"
    first = connect(str(path))
    call(first, users.create_user, "alice", "h")
    first.close()

    second = connect(str(path))
    try:
        assert migrate(second) == []
        assert [u.username for u in call(second, users.list_users)] == ["alice"]
    finally:
        second.close()


def test_failing_function_in_transaction_leaves_no_partial_writes(conn: Connection, alice: UserRecord) -> None:
    before = snapshot(conn)

    def create_then_fail(connection: Connection) -> None:
        models.create_model(connection, alice.id, ModelSpec("half-done"))
        users.create_user(connection, "carol", "h")
        raise RuntimeError("boom after two writes")

    with pytest.raises(RuntimeError, match="boom"):
        call(conn, create_then_fail)

    assert snapshot(conn) == before
    call(conn, users.create_user, "carol", "h")  # the connection is usable again


def test_in_transaction_returns_the_result_and_commits(conn: Connection) -> None:
    user = call(conn, users.create_user, "alice", "h")

    assert call(conn, users.get_user, user.id) == user


def test_local_catalog_refuses_functions_outside_the_catalog() -> None:
    catalog = LocalCatalog(":memory:")
    try:
        with pytest.raises(InvalidInput, match="not a catalog function"):
            catalog.call_sync(print, "x")
        assert catalog.call_sync(users.list_users_count) == 0
    finally:
        catalog.close()


def test_new_ids_are_prefixed_and_distinct() -> None:
    ids = {db.new_id("mdl") for _ in range(200)}

    assert len(ids) == 200
    assert all(i.startswith("mdl_") for i in ids)


# --- users and tokens ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("taken", [pytest.param("alice", id="same"), pytest.param("ALICE", id="upper-case")])
def test_duplicate_username_is_a_conflict_whatever_the_case(shared, taken: str) -> None:
    conn = shared[0]
    before = snapshot(conn)

    with pytest.raises(Conflict) as caught:
        call(conn, users.create_user, taken, "other")

    assert caught.value.field == "username"
    assert snapshot(conn) == before


def test_password_hash_lookup_ignores_case(conn: Connection, alice: UserRecord) -> None:
    assert call(conn, users.get_password_hash, "Alice") == (alice.id, "hash-a")
    assert call(conn, users.get_password_hash, "nobody") is None


def test_unknown_user_is_not_found(conn: Connection) -> None:
    with pytest.raises(NotFound):
        call(conn, users.get_user, "usr_missing")


def test_set_quota_and_list_users(conn: Connection, alice: UserRecord, bob: UserRecord) -> None:
    assert call(conn, users.set_quota, bob.id, 1234).quota_bytes == 1234
    assert [u.username for u in call(conn, users.list_users)] == ["alice", "bob"]
    assert call(conn, users.list_users_count) == 2


def new_token(
    conn: Connection, user: UserRecord, secret: str, *, kind: str = "api", expires_in: timedelta | None = None
):
    expires_at = utcnow() + expires_in if expires_in is not None else None
    return call(
        conn,
        users.create_token,
        user.id,
        name=f"{kind} token",
        kind=kind,
        token_hash=hash_token(secret),
        hint=secret[:8],
        expires_at=expires_at,
    )


def test_authenticate_returns_user_and_records_last_use(conn: Connection, alice: UserRecord) -> None:
    token = new_token(conn, alice, "cfy_secret")
    assert token.last_used_at is None

    user, used = call(conn, users.authenticate_token, hash_token("cfy_secret"))

    assert user == alice
    assert used.id == token.id
    (stored,) = call(conn, users.list_tokens, alice.id)
    assert stored.last_used_at is not None


def test_last_use_is_written_at_most_once_a_minute(
    conn: Connection, alice: UserRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    new_token(conn, alice, "cfy_secret")
    call(conn, users.authenticate_token, hash_token("cfy_secret"))
    (first,) = call(conn, users.list_tokens, alice.id)

    call(conn, users.authenticate_token, hash_token("cfy_secret"))
    assert call(conn, users.list_tokens, alice.id)[0].last_used_at == first.last_used_at

    later = first.last_used_at + timedelta(minutes=2)
    monkeypatch.setattr(users, "utcnow", lambda: later)
    call(conn, users.authenticate_token, hash_token("cfy_secret"))
    assert call(conn, users.list_tokens, alice.id)[0].last_used_at == later


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        pytest.param("unknown", "not valid", id="unknown"),
        pytest.param("revoked", "revoked", id="revoked"),
        pytest.param("expired", "expired", id="expired"),
    ],
)
def test_authenticate_refuses_bad_tokens(conn: Connection, alice: UserRecord, setup: str, message: str) -> None:
    if setup == "revoked":
        token = new_token(conn, alice, "cfy_secret")
        call(conn, users.revoke_token, alice.id, token.id)
    elif setup == "expired":
        new_token(conn, alice, "cfy_secret", expires_in=timedelta(seconds=-1))

    with pytest.raises(Unauthorized, match=message):
        call(conn, users.authenticate_token, hash_token("cfy_secret"))


def test_revoking_someone_elses_token_reads_as_missing(conn: Connection, alice: UserRecord, bob: UserRecord) -> None:
    token = new_token(conn, alice, "cfy_secret")

    with pytest.raises(NotFound):
        call(conn, users.revoke_token, bob.id, token.id)

    call(conn, users.authenticate_token, hash_token("cfy_secret"))  # still valid


def test_revoke_is_idempotent(conn: Connection, alice: UserRecord) -> None:
    token = new_token(conn, alice, "cfy_secret")
    first = call(conn, users.revoke_token, alice.id, token.id)

    assert call(conn, users.revoke_token, alice.id, token.id).revoked_at == first.revoked_at


def test_list_tokens_by_kind_newest_first(conn: Connection, alice: UserRecord, bob: UserRecord) -> None:
    new_token(conn, alice, "cfs_session", kind="session")
    older = new_token(conn, alice, "cfy_one")
    newer = new_token(conn, alice, "cfy_two")
    new_token(conn, bob, "cfy_bobs")

    assert [t.id for t in call(conn, users.list_tokens, alice.id)] == [newer.id, older.id]
    assert [t.kind for t in call(conn, users.list_tokens, alice.id, kind="session")] == ["session"]


def test_new_password_revokes_sessions_but_not_api_tokens(conn: Connection, alice: UserRecord) -> None:
    new_token(conn, alice, "cfs_session", kind="session")
    new_token(conn, alice, "cfy_api")

    call(conn, users.set_password_hash, alice.id, "new-hash")

    assert call(conn, users.get_password_hash, "alice") == (alice.id, "new-hash")
    with pytest.raises(Unauthorized, match="revoked"):
        call(conn, users.authenticate_token, hash_token("cfs_session"))
    call(conn, users.authenticate_token, hash_token("cfy_api"))


# --- models ------------------------------------------------------------------------------------------------


def test_create_model_with_defaults_and_stripped_name(conn: Connection, alice: UserRecord) -> None:
    record = call(conn, models.create_model, alice.id, ModelSpec("  Flowers  ", options={"a": 1}))

    assert record.name == "Flowers"
    assert record.owner_id == alice.id
    assert record.time_budget_s == models.DEFAULT_TIME_BUDGET_S
    assert (record.target_accuracy, record.active_version, record.preprocessing) == (None, None, None)
    assert record.options == {"a": 1}
    assert (record.num_classes, record.num_images) == (0, 0)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        pytest.param(ModelSpec(""), "name", id="empty-name"),
        pytest.param(ModelSpec("   "), "name", id="blank-name"),
        pytest.param(ModelSpec("x" * 201), "name", id="long-name"),
        pytest.param(ModelSpec("m", target_accuracy=0.0), "target_accuracy", id="accuracy-zero"),
        pytest.param(ModelSpec("m", target_accuracy=1.5), "target_accuracy", id="accuracy-above-one"),
        pytest.param(ModelSpec("m", time_budget_s=9), "time_budget_s", id="budget-too-short"),
        pytest.param(ModelSpec("m", time_budget_s=7 * 24 * 3600 + 1), "time_budget_s", id="budget-too-long"),
    ],
)
def test_create_model_validates(shared, spec: ModelSpec, field: str) -> None:
    conn, alice, _, _ = shared
    before = snapshot(conn)

    with pytest.raises(InvalidInput) as caught:
        call(conn, models.create_model, alice.id, spec)

    assert caught.value.field == field
    assert snapshot(conn) == before


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(ModelSpec("m", target_accuracy=1.0, time_budget_s=10), id="lowest-budget-full-accuracy"),
        pytest.param(ModelSpec("x" * 200, time_budget_s=7 * 24 * 3600), id="longest-name-and-budget"),
    ],
)
def test_create_model_accepts_the_limits(conn: Connection, alice: UserRecord, spec: ModelSpec) -> None:
    assert call(conn, models.create_model, alice.id, spec).name == spec.name


def test_list_models_pages_newest_first_with_total(conn: Connection, alice: UserRecord, bob: UserRecord) -> None:
    created = [call(conn, models.create_model, alice.id, ModelSpec(f"m{i}")).id for i in range(5)]
    call(conn, models.create_model, bob.id, ModelSpec("bobs"))

    page, total = call(conn, models.list_models, alice.id, limit=2, offset=1)

    assert total == 5
    assert [m.id for m in page] == list(reversed(created))[1:3]


def test_update_model_changes_only_what_is_given(conn: Connection, alice: UserRecord, model) -> None:
    updated = call(conn, models.update_model, alice.id, model.id, {"description": "spring", "target_accuracy": 0.9})

    assert (updated.name, updated.description, updated.target_accuracy) == ("flowers", "spring", 0.9)
    assert updated.updated_at >= model.updated_at
    assert call(conn, models.update_model, alice.id, model.id, {"target_accuracy": None}).target_accuracy is None


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"owner_id": "usr_x"}, id="unknown-field"),
        pytest.param({"name": " "}, id="blank-name"),
        pytest.param({"time_budget_s": 1}, id="short-budget"),
    ],
)
def test_update_model_refuses_bad_changes(shared, changes: dict) -> None:
    conn, alice, _, model = shared
    before = snapshot(conn)

    with pytest.raises(InvalidInput):
        call(conn, models.update_model, alice.id, model.id, changes)

    assert snapshot(conn) == before


def test_set_model_fields_stores_platform_fields(conn: Connection, alice: UserRecord, model) -> None:
    policy = {"image_size": 64, "color": "rgb", "resize": "stretch"}

    record = call(conn, models.set_model_fields, alice.id, model.id, preprocessing=policy, active_version=2)

    assert (record.preprocessing, record.active_version) == (policy, 2)
    with pytest.raises(InvalidInput):
        call(conn, models.set_model_fields, alice.id, model.id, name="sneaky")
    # The sample picture needs its location too: only set_sample_image sets it.
    with pytest.raises(InvalidInput, match="sample_sha256"):
        call(conn, models.set_model_fields, alice.id, model.id, sample_sha256=sha("sample"))
    assert call(conn, models.get_owned_model, alice.id, model.id).sample_sha256 is None


def test_delete_model_removes_everything_and_returns_its_blobs(conn: Connection, alice: UserRecord, model) -> None:
    other = call(conn, models.create_model, alice.id, ModelSpec("other"))
    add(conn, alice, model.id, [picture("cat", 1), picture("dog", 1), unreadable("cat", "cat/x.png")])
    add(conn, alice, other.id, [picture("cat", 9)])

    shas = call(conn, models.delete_model, alice.id, model.id)

    assert sorted(shas) == sorted([sha("cat-1"), sha("dog-1")])
    with pytest.raises(NotFound):
        call(conn, models.get_owned_model, alice.id, model.id)
    assert conn.execute("SELECT DISTINCT model_id FROM images").fetchall() == [(other.id,)]
    assert conn.execute("SELECT DISTINCT model_id FROM classes").fetchall() == [(other.id,)]
    assert set(blob_rows(conn)) == {sha("cat-9")}  # the locations went in the same transaction


def test_delete_model_keeps_pictures_another_model_holds(
    conn: Connection, alice: UserRecord, bob: UserRecord, model
) -> None:
    bobs = call(conn, models.create_model, bob.id, ModelSpec("bobs"))
    add(conn, alice, model.id, [picture("cat", 1), picture("cat", 2)])
    add(conn, bob, bobs.id, [picture("kitten", 1, key="cat-1", pack="packs/bb/bob.pack")])
    where = blob_rows(conn)[sha("cat-1")]

    assert call(conn, models.delete_model, alice.id, model.id) == [sha("cat-2")]
    assert blob_rows(conn) == {sha("cat-1"): where}  # bob's copy still reads from alice's first upload

    assert call(conn, models.delete_model, bob.id, bobs.id) == [sha("cat-1")]
    assert blob_rows(conn) == {}


def test_delete_model_forgets_its_sample_picture_unless_used(conn: Connection, alice: UserRecord, model) -> None:
    other = call(conn, models.create_model, alice.id, ModelSpec("other"))
    add(conn, alice, other.id, [picture("cat", 1)])
    call(conn, models.set_sample_image, alice.id, model.id, sha("sample"), BlobRef(PACK, 99, 5))
    call(conn, models.set_sample_image, alice.id, other.id, sha("cat-1"), BlobRef("packs/cc/c.pack", 0, 100))

    assert call(conn, models.delete_model, alice.id, model.id) == [sha("sample")]
    assert call(conn, models.delete_model, alice.id, other.id) == [sha("cat-1")]
    assert blob_rows(conn) == {}


def test_delete_model_with_an_active_job_is_a_conflict(conn: Connection, alice: UserRecord, model) -> None:
    call(conn, jobs.create_job, alice.id, "import", model_id=model.id)

    with pytest.raises(Conflict):
        call(conn, models.delete_model, alice.id, model.id)

    assert call(conn, models.get_owned_model, alice.id, model.id).id == model.id


# --- ownership: one check, NotFound for someone else's ---------------------------------------------------------


OWNED_CALLS = [
    pytest.param(lambda c, u, m: models.get_owned_model(c, u, m), id="get-model"),
    pytest.param(lambda c, u, m: models.update_model(c, u, m, {"name": "mine"}), id="update-model"),
    pytest.param(lambda c, u, m: models.delete_model(c, u, m), id="delete-model"),
    pytest.param(lambda c, u, m: models.set_model_fields(c, u, m, active_version=1), id="set-model-fields"),
    pytest.param(
        lambda c, u, m: models.set_sample_image(c, u, m, sha("intruder"), BlobRef(PACK, 0, 1)), id="set-sample-image"
    ),
    pytest.param(lambda c, u, m: models.sample_blob(c, u, m), id="sample-blob"),
    pytest.param(lambda c, u, m: models.list_classes(c, u, m), id="list-classes"),
    pytest.param(lambda c, u, m: models.get_class(c, u, m, "cat"), id="get-class"),
    pytest.param(lambda c, u, m: models.create_class(c, u, m, "bird"), id="create-class"),
    pytest.param(lambda c, u, m: models.rename_class(c, u, m, "cat", "kitty"), id="rename-class"),
    pytest.param(lambda c, u, m: models.delete_class(c, u, m, "cat"), id="delete-class"),
    pytest.param(lambda c, u, m: models.ensure_classes(c, u, m, ["bird"]), id="ensure-classes"),
    pytest.param(lambda c, u, m: images.add_images(c, u, m, [picture("cat", 99)], quota_bytes=QUOTA), id="add-images"),
    pytest.param(lambda c, u, m: images.list_images(c, u, m), id="list-images"),
    pytest.param(lambda c, u, m: images.get_image(c, u, m, 1), id="get-image"),
    pytest.param(lambda c, u, m: images.image_blob(c, u, m, 1), id="image-blob"),
    pytest.param(lambda c, u, m: images.known_shas(c, u, m, [sha("cat-1")]), id="known-shas"),
    pytest.param(lambda c, u, m: images.update_image(c, u, m, 1, split="test"), id="update-image"),
    pytest.param(lambda c, u, m: images.delete_images(c, u, m, [1]), id="delete-images"),
    pytest.param(lambda c, u, m: images.training_view(c, u, m), id="training-view"),
    pytest.param(lambda c, u, m: jobs.create_job(c, u, "import", model_id=m), id="create-job"),
    pytest.param(lambda c, u, m: stats.dataset_stats(c, u, m), id="dataset-stats"),
    pytest.param(lambda c, u, m: stats.dataset_shape(c, u, m), id="dataset-shape"),
]


@pytest.mark.parametrize("operation", OWNED_CALLS)
def test_someone_elses_model_reads_as_missing(shared, operation: Callable) -> None:
    conn, _, bob, model = shared
    before = snapshot(conn)

    with pytest.raises(NotFound) as caught:
        call(conn, lambda c: operation(c, bob.id, model.id))
    with pytest.raises(NotFound) as missing:
        call(conn, lambda c: operation(c, bob.id, "mdl_doesnotexist"))

    assert snapshot(conn) == before
    # The same words for "someone else's" and "missing": nothing tells bob the model exists.
    assert caught.value.detail.replace(model.id, "?") == missing.value.detail.replace("mdl_doesnotexist", "?")


def test_someone_elses_job_reads_as_missing(conn: Connection, alice: UserRecord, bob: UserRecord, model) -> None:
    job = call(conn, jobs.create_job, alice.id, "import", model_id=model.id)

    with pytest.raises(NotFound):
        call(conn, jobs.get_owned_job, bob.id, job.id)
    assert call(conn, jobs.list_jobs, bob.id) == []
    assert call(conn, jobs.get_owned_job, alice.id, job.id) == job


def test_image_ids_of_another_model_read_as_missing(conn: Connection, alice: UserRecord, model) -> None:
    other = call(conn, models.create_model, alice.id, ModelSpec("other"))
    (outcome,) = add(conn, alice, other.id, [picture("cat", 1)])

    with pytest.raises(NotFound):
        call(conn, images.get_image, alice.id, model.id, outcome.image_id)
    with pytest.raises(NotFound):
        call(conn, images.delete_images, alice.id, model.id, [outcome.image_id])
    assert call(conn, images.get_image, alice.id, other.id, outcome.image_id).id == outcome.image_id


# --- classes -----------------------------------------------------------------------------------------------


def test_create_class_cleans_the_name_and_starts_empty(conn: Connection, alice: UserRecord, model) -> None:
    record = call(conn, models.create_class, alice.id, model.id, "  daisy ")

    assert (record.name, record.train_images, record.test_images) == ("daisy", 0, 0)
    assert [c.name for c in call(conn, models.list_classes, alice.id, model.id)] == ["daisy"]


@pytest.mark.parametrize(
    ("name", "error"),
    [
        pytest.param("a/b", InvalidInput, id="slash"),
        pytest.param("..", InvalidInput, id="dot-dot"),
        pytest.param(" ", InvalidInput, id="blank"),
        pytest.param("x" * 101, InvalidInput, id="too-long"),
        pytest.param("cat", Conflict, id="existing"),
    ],
)
def test_create_class_refuses(shared, name: str, error: type) -> None:
    conn, alice, _, model = shared  # its model has the classes 'cat' and 'dog'
    before = snapshot(conn)

    with pytest.raises(error):
        call(conn, models.create_class, alice.id, model.id, name)

    assert snapshot(conn) == before


def test_class_counts_per_split(conn: Connection, alice: UserRecord, model) -> None:
    add(conn, alice, model.id, [picture("cat", i, split="train") for i in range(3)] + [picture("cat", 9, split="test")])

    record = call(conn, models.get_class, alice.id, model.id, "cat")

    assert (record.train_images, record.test_images) == (3, 1)
    with pytest.raises(NotFound):
        call(conn, models.get_class, alice.id, model.id, "dog")


def test_rename_class_images_follow(conn: Connection, alice: UserRecord, model) -> None:
    add(conn, alice, model.id, [picture("cat", i) for i in range(3)] + [unreadable("cat", "cat/bad.png")])

    renamed = call(conn, models.rename_class, alice.id, model.id, "cat", "kitty")

    assert renamed.train_images + renamed.test_images == 3
    kitty, total = call(conn, images.list_images, alice.id, model.id, label="kitty", status=None)
    assert total == 4
    assert {i.label for i in kitty} == {"kitty"}
    assert call(conn, images.list_images, alice.id, model.id, label="cat", status=None)[1] == 0
    # Dedup keeps working under the new name: the same picture is a duplicate in 'kitty'.
    (outcome,) = add(conn, alice, model.id, [picture("kitty", 0, key="cat-0")])
    assert outcome.status == "duplicate"


def test_rename_class_to_an_existing_class_is_a_conflict(conn: Connection, alice: UserRecord, model) -> None:
    add(conn, alice, model.id, [picture("cat", 1), picture("dog", 1)])

    with pytest.raises(Conflict):
        call(conn, models.rename_class, alice.id, model.id, "cat", "dog")

    assert [c.name for c in call(conn, models.list_classes, alice.id, model.id)] == ["cat", "dog"]
    assert call(conn, models.rename_class, alice.id, model.id, "cat", "cat").name == "cat"


def test_delete_class_removes_its_images_only(conn: Connection, alice: UserRecord, model) -> None:
    add(conn, alice, model.id, [picture("cat", 1), picture("cat", 2), picture("dog", 1)])

    shas = call(conn, models.delete_class, alice.id, model.id, "cat")

    assert sorted(shas) == sorted([sha("cat-1"), sha("cat-2")])
    assert set(blob_rows(conn)) == {sha("dog-1")}
    remaining, total = call(conn, images.list_images, alice.id, model.id, status=None)
    assert total == 1
    assert remaining[0].label == "dog"
    assert [c.name for c in call(conn, models.list_classes, alice.id, model.id)] == ["dog"]


# --- adding images -----------------------------------------------------------------------------------------


def test_add_images_accepts_and_reports_ids_and_splits(conn: Connection, alice: UserRecord, model) -> None:
    outcomes = add(conn, alice, model.id, [picture("cat", 1, split="test"), picture("dog", 1, split="train")])

    assert [(o.status, o.split) for o in outcomes] == [("accepted", "test"), ("accepted", "train")]
    stored = [call(conn, images.get_image, alice.id, model.id, o.image_id) for o in outcomes]
    assert [(s.label, s.split, s.sha256) for s in stored] == [
        ("cat", "test", sha("cat-1")),
        ("dog", "train", sha("dog-1")),
    ]
    assert {c.name for c in call(conn, models.list_classes, alice.id, model.id)} == {"cat", "dog"}


def test_same_picture_in_the_same_class_is_a_duplicate(conn: Connection, alice: UserRecord, model) -> None:
    add(conn, alice, model.id, [picture("cat", 1)])

    outcomes = add(conn, alice, model.id, [picture("cat", 7, key="cat-1"), picture("cat", 8, key="cat-8")])
    # Within one batch too: the second copy of a new picture is a duplicate of the first.
    again = add(conn, alice, model.id, [picture("cat", 9), picture("cat", 10, key="cat-9")])

    assert [o.status for o in outcomes] == ["duplicate", "accepted"]
    assert outcomes[0].image_id is None
    assert [o.status for o in again] == ["accepted", "duplicate"]
    assert call(conn, images.list_images, alice.id, model.id, status=None)[1] == 3


def test_same_picture_in_another_class_is_rejected_naming_the_class(conn: Connection, alice: UserRecord, model) -> None:
    add(conn, alice, model.id, [picture("cat", 1)])

    (outcome,) = add(conn, alice, model.id, [picture("dog", 1, key="cat-1")])

    assert outcome.status == "rejected"
    assert "'cat'" in outcome.reason
    stored = call(conn, images.get_image, alice.id, model.id, outcome.image_id)
    assert (stored.status, stored.split, stored.reject_reason) == ("rejected", None, outcome.reason)
    assert call(conn, images.list_images, alice.id, model.id, label="dog")[1] == 0


def test_rejects_are_stored_with_their_reason(conn: Connection, alice: UserRecord, model) -> None:
    outcomes = add(
        conn, alice, model.id, [unreadable("cat", "cat/a.txt", "It is text."), NewImage("cat", "cat/b.png", 3)]
    )

    assert [o.status for o in outcomes] == ["rejected", "rejected"]
    rejected, total = call(conn, images.list_images, alice.id, model.id, status="rejected")
    assert total == 2
    assert [(r.original_name, r.reject_reason, r.split, r.sha256) for r in rejected] == [
        ("cat/a.txt", "It is text.", None, None),
        ("cat/b.png", "The file could not be read.", None, None),
    ]
    assert call(conn, images.list_images, alice.id, model.id)[1] == 0  # accepted is the default filter


@pytest.mark.parametrize("count", [pytest.param(n, id=f"{n}-images") for n in (5, 10, 23, 100)])
def test_unsplit_images_keep_about_a_fifth_for_testing_per_class(
    conn: Connection, alice: UserRecord, model, count: int
) -> None:
    offered = [picture(label, i) for i in range(count) for label in ("cat", "dog")]

    outcomes = add(conn, alice, model.id, offered)

    for label in ("cat", "dog"):
        splits = Counter(o.split for o in outcomes if o.label == label)
        assert splits["train"] + splits["test"] == count
        assert abs(splits["test"] - 0.2 * count) <= 1
        assert splits["train"] >= 1


def test_splits_stay_balanced_across_batches(conn: Connection, alice: UserRecord, model) -> None:
    for batch in range(10):
        add(conn, alice, model.id, [picture("cat", batch * 5 + i) for i in range(5)])

    record = call(conn, models.get_class, alice.id, model.id, "cat")

    assert record.test_images == 10
    assert record.train_images == 40


def test_given_splits_are_kept(conn: Connection, alice: UserRecord, model) -> None:
    outcomes = add(conn, alice, model.id, [picture("cat", i, split="test") for i in range(4)])

    assert {o.split for o in outcomes} == {"test"}


def test_bulk_insert_ids_are_one_contiguous_block(conn: Connection, alice: UserRecord, model) -> None:
    first = add(conn, alice, model.id, [picture("cat", i) for i in range(50)] + [unreadable("cat", "cat/x")])
    second = add(conn, alice, model.id, [picture("cat", 0), picture("dog", 0), unreadable("dog", "dog/y")])

    first_ids = [o.image_id for o in first]
    assert first_ids == list(range(first_ids[0], first_ids[0] + 51))
    # The duplicate takes no id; the next call continues after the last block.
    assert [o.image_id for o in second] == [None, first_ids[-1] + 1, first_ids[-1] + 2]
    stored = conn.execute("SELECT id FROM images ORDER BY id").fetchall()
    assert [row[0] for row in stored] == list(range(first_ids[0], first_ids[-1] + 3))


def test_quota_exceeded_writes_nothing(conn: Connection, alice: UserRecord, model) -> None:
    add(conn, alice, model.id, [picture("cat", 1, size=600)])
    before = snapshot(conn)

    with pytest.raises(QuotaExceeded) as caught:
        add(
            conn,
            alice,
            model.id,
            [picture("dog", i, size=300) for i in range(2)] + [unreadable("x", "x/y")],
            quota=1000,
        )

    assert snapshot(conn) == before
    assert caught.value.extra == {"used_bytes": 600, "quota_bytes": 1000, "needed_bytes": 600}
    assert "Nothing was added" in caught.value.detail


def test_quota_counts_distinct_pictures_once(conn: Connection, alice: UserRecord, model) -> None:
    other = call(conn, models.create_model, alice.id, ModelSpec("other"))
    add(conn, alice, model.id, [picture("cat", 1, size=600)])

    # The same picture in a second model costs nothing more, and exactly filling the quota is allowed.
    add(conn, alice, other.id, [picture("cat", 1, size=600), picture("cat", 2, size=400)], quota=1000)

    assert call(conn, images.storage_used, alice.id) == 1000


def test_quota_is_per_owner(conn: Connection, alice: UserRecord, bob: UserRecord, model) -> None:
    add(conn, alice, model.id, [picture("cat", 1, size=900)])
    bobs = call(conn, models.create_model, bob.id, ModelSpec("bobs"))

    (outcome,) = add(conn, bob, bobs.id, [picture("cat", 2, size=900)], quota=1000)

    assert outcome.status == "accepted"


# --- where pictures lie: blob rows ---------------------------------------------------------------------------


def test_add_images_records_where_accepted_pictures_lie(conn: Connection, alice: UserRecord, model) -> None:
    offered = [picture("cat", 1), picture("cat", 2, size=7), unreadable("cat", "cat/x.png")]

    add(conn, alice, model.id, offered)

    assert blob_rows(conn) == {sha("cat-1"): BlobRef(PACK, 1000, 100), sha("cat-2"): BlobRef(PACK, 2000, 7)}
    created = conn.execute("SELECT DISTINCT created_at IS NOT NULL FROM blobs").fetchall()
    assert created == [(True,)]


def test_duplicates_and_conflicts_record_no_second_location(conn: Connection, alice: UserRecord, model) -> None:
    add(conn, alice, model.id, [picture("cat", 1)])
    before = blob_rows(conn)

    outcomes = add(
        conn,
        alice,
        model.id,
        [
            picture("cat", 7, key="cat-1", pack="packs/bb/again.pack"),  # duplicate
            picture("dog", 8, key="cat-1", pack="packs/bb/again.pack"),  # rejected: already a cat
        ],
    )

    assert [o.status for o in outcomes] == ["duplicate", "rejected"]
    assert blob_rows(conn) == before


def test_the_first_location_of_a_picture_wins(conn: Connection, alice: UserRecord, bob: UserRecord, model) -> None:
    bobs = call(conn, models.create_model, bob.id, ModelSpec("bobs"))
    add(conn, alice, model.id, [picture("cat", 1)])
    # Within one offer too: the second copy is a duplicate and its location is not used.
    add(conn, alice, model.id, [picture("dog", 1), picture("dog", 2, key="dog-1", pack="packs/bb/later.pack")])

    (outcome,) = add(conn, bob, bobs.id, [picture("kitten", 5, key="cat-1", pack="packs/bb/bobs.pack")])

    assert outcome.status == "accepted"  # bob's dataset holds it, read from where alice's upload put it
    assert blob_rows(conn) == {sha("cat-1"): BlobRef(PACK, 1000, 100), sha("dog-1"): BlobRef(PACK, 1000, 100)}


def test_a_picture_offered_without_a_location_records_none(conn: Connection, alice: UserRecord, model) -> None:
    (outcome,) = add(conn, alice, model.id, [picture("cat", 1, pack=None)])

    assert outcome.status == "accepted"
    assert blob_rows(conn) == {}


@pytest.mark.parametrize(
    ("offered", "kwargs", "error"),
    [
        pytest.param([picture("dog", 1, size=2000)], {"quota": 1000}, QuotaExceeded, id="over-quota"),
        pytest.param([unreadable("dog", "dog/x")], {"require_usable": True}, InvalidInput, id="nothing-usable"),
    ],
)
def test_a_refused_offer_records_no_location(
    conn: Connection, alice: UserRecord, model, offered: list[NewImage], kwargs: dict, error: type
) -> None:
    add(conn, alice, model.id, [picture("cat", 1)])
    before = snapshot(conn)

    with pytest.raises(error):
        add(conn, alice, model.id, offered, **kwargs)

    assert snapshot(conn) == before


def test_blob_refs_of_known_and_unknown_pictures(conn: Connection, alice: UserRecord, model) -> None:
    add(conn, alice, model.id, [picture("cat", 1), picture("cat", 2, pack="packs/bb/b.pack")])

    refs = call(conn, images.blob_refs, [sha("cat-2"), sha("unknown"), sha("cat-1"), sha("cat-1")])

    assert refs == {sha("cat-1"): BlobRef(PACK, 1000, 100), sha("cat-2"): BlobRef("packs/bb/b.pack", 2000, 100)}
    assert call(conn, images.blob_refs, []) == {}


def test_image_blob_is_the_record_and_its_location(conn: Connection, alice: UserRecord, model) -> None:
    cat, junk = add(conn, alice, model.id, [picture("cat", 1, split="train"), unreadable("cat", "cat/x")])
    (conflict,) = add(conn, alice, model.id, [picture("dog", 1, key="cat-1")])

    record, ref = call(conn, images.image_blob, alice.id, model.id, cat.image_id)

    assert record == call(conn, images.get_image, alice.id, model.id, cat.image_id)
    assert ref == BlobRef(PACK, 1000, 100)
    # Rejects have no bytes, even one whose picture is stored for another row.
    for reject in (junk, conflict):
        with pytest.raises(NotFound, match="rejected"):
            call(conn, images.image_blob, alice.id, model.id, reject.image_id)
    with pytest.raises(NotFound, match="no image 999"):
        call(conn, images.image_blob, alice.id, model.id, 999)


def test_known_shas_are_the_accepted_pictures_of_this_model(conn: Connection, alice: UserRecord, model) -> None:
    other = call(conn, models.create_model, alice.id, ModelSpec("other"))
    add(conn, alice, model.id, [picture("cat", 1), picture("cat", 2)])
    # cat-9 leaves only a reject row (a conflict) in the model once the accepted copy is deleted.
    (accepted,) = add(conn, alice, model.id, [picture("cat", 9)])
    (conflict,) = add(conn, alice, model.id, [picture("dog", 9, key="cat-9")])
    call(conn, images.delete_images, alice.id, model.id, [accepted.image_id])
    assert call(conn, images.get_image, alice.id, model.id, conflict.image_id).sha256 == sha("cat-9")
    add(conn, alice, other.id, [picture("cat", 9)])

    asked = [sha("cat-1"), sha("cat-2"), sha("cat-9"), sha("unknown")]

    assert call(conn, images.known_shas, alice.id, model.id, asked) == {sha("cat-1"), sha("cat-2")}
    assert call(conn, images.known_shas, alice.id, other.id, asked) == {sha("cat-9")}
    assert call(conn, images.known_shas, alice.id, model.id, []) == set()


# --- the sample picture --------------------------------------------------------------------------------------


def test_sample_image_is_recorded_with_its_location(conn: Connection, alice: UserRecord, model) -> None:
    with pytest.raises(NotFound, match="no sample picture"):
        call(conn, models.sample_blob, alice.id, model.id)

    record = call(conn, models.set_sample_image, alice.id, model.id, sha("sample"), BlobRef(PACK, 10, 20))

    assert record.sample_sha256 == sha("sample")
    assert record.updated_at >= model.updated_at
    assert call(conn, models.sample_blob, alice.id, model.id) == BlobRef(PACK, 10, 20)
    assert blob_rows(conn) == {sha("sample"): BlobRef(PACK, 10, 20)}


def test_a_new_sample_forgets_the_old_one_unless_used(conn: Connection, alice: UserRecord, model) -> None:
    add(conn, alice, model.id, [picture("cat", 1)])
    call(conn, models.set_sample_image, alice.id, model.id, sha("first"), BlobRef(PACK, 10, 20))

    call(conn, models.set_sample_image, alice.id, model.id, sha("cat-1"), BlobRef("packs/bb/copy.pack", 0, 100))
    # An already stored picture keeps its first location.
    assert call(conn, models.sample_blob, alice.id, model.id) == BlobRef(PACK, 1000, 100)
    assert set(blob_rows(conn)) == {sha("cat-1")}

    call(conn, models.set_sample_image, alice.id, model.id, sha("second"), BlobRef(PACK, 50, 5))
    assert set(blob_rows(conn)) == {sha("cat-1"), sha("second")}  # cat-1 is still in the dataset

    call(conn, models.set_sample_image, alice.id, model.id, sha("second"), BlobRef(PACK, 60, 5))  # the same again
    assert blob_rows(conn)[sha("second")] == BlobRef(PACK, 50, 5)


def test_the_sample_keeps_its_picture_when_the_image_goes(conn: Connection, alice: UserRecord, model) -> None:
    (cat,) = add(conn, alice, model.id, [picture("cat", 1)])
    call(conn, models.set_sample_image, alice.id, model.id, sha("cat-1"), BlobRef(PACK, 1000, 100))

    assert call(conn, images.delete_images, alice.id, model.id, [cat.image_id]) == []
    assert call(conn, models.delete_class, alice.id, model.id, "cat") == []

    assert call(conn, models.sample_blob, alice.id, model.id) == BlobRef(PACK, 1000, 100)


# --- columns between processes -------------------------------------------------------------------------------


def test_image_columns_round_trip() -> None:
    offered = [
        picture("cat", 1, split="train", gray=True),
        picture("dog", 2, pack="packs/bb/other.pack", fmt="JPEG"),
        picture("dog", 3, pack=None),
        unreadable("owl", "owl/x.txt"),
    ]

    columns = ImageColumns.of(offered)

    assert len(columns) == 4
    assert columns.rows() == offered
    assert columns.columns["ref"][0] == (PACK, 1000, 100)  # plain tuples, cheap to pickle
    assert columns.columns["ref"][2:] == [None, None]
    assert ImageColumns.of(iter(offered)).rows() == offered  # any iterable


def test_image_columns_concat_keeps_the_order() -> None:
    offered = [picture("cat", i) for i in range(5)] + [unreadable("cat", "cat/x")]

    merged = ImageColumns.concat([ImageColumns.of(offered[:2]), ImageColumns.of([]), ImageColumns.of(offered[2:])])

    assert merged.rows() == offered
    assert merged == ImageColumns.of(offered)
    assert len(ImageColumns.concat([])) == 0
    assert ImageColumns.concat([]).rows() == []


def test_add_images_takes_columns_like_a_list(conn: Connection, alice: UserRecord, model) -> None:
    offered = [picture("cat", 1, split="train"), picture("cat", 1, split="train"), unreadable("cat", "cat/x")]

    outcomes = call(conn, images.add_images, alice.id, model.id, ImageColumns.of(offered), quota_bytes=QUOTA)

    rows = outcomes.rows()
    assert len(outcomes) == 3
    assert [(o.original_name, o.label, o.status, o.split) for o in rows] == [
        ("cat/1.png", "cat", "accepted", "train"),
        ("cat/1.png", "cat", "duplicate", None),
        ("cat/x", "cat", "rejected", None),
    ]
    assert rows[0].image_id is not None
    assert (rows[1].image_id, rows[2].image_id) == (None, rows[0].image_id + 1)
    assert rows[1].reason == "The same picture is already in this class."
    assert outcomes.columns["status"] == ["accepted", "duplicate", "rejected"]
    assert blob_rows(conn) == {sha("cat-1"): BlobRef(PACK, 1000, 100)}


def test_outcome_columns_round_trip() -> None:
    outcomes = [
        Outcome("a.png", "cat", "accepted", 4, "train"),
        Outcome("b.png", "cat", "duplicate", reason="same"),
        Outcome("c.png", "cat", "rejected", 5, reason="broken"),
    ]
    names = ("original_name", "label", "status", "image_id", "split", "reason")
    columns = OutcomeColumns({name: [getattr(o, name) for o in outcomes] for name in names})

    assert len(columns) == 3
    assert columns.rows() == outcomes
    assert OutcomeColumns({name: [] for name in names}).rows() == []


# --- moving and deleting images ----------------------------------------------------------------------------


def test_update_image_moves_class_and_split(conn: Connection, alice: UserRecord, model) -> None:
    (outcome,) = add(conn, alice, model.id, [picture("cat", 1, split="train")])

    moved = call(conn, images.update_image, alice.id, model.id, outcome.image_id, label="lynx", split="test")

    assert (moved.label, moved.split) == ("lynx", "test")
    lynx = call(conn, models.get_class, alice.id, model.id, "lynx")
    assert (moved.class_id, lynx.test_images) == (lynx.id, 1)
    assert call(conn, models.get_class, alice.id, model.id, "cat").train_images == 0


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"split": "validation"}, id="unknown-split"),
        pytest.param({"label": "a/b"}, id="bad-label"),
    ],
)
def test_update_image_refuses_bad_changes(conn: Connection, alice: UserRecord, model, changes: dict) -> None:
    (outcome,) = add(conn, alice, model.id, [picture("cat", 1, split="train")])
    before = snapshot(conn)

    with pytest.raises(InvalidInput):
        call(conn, images.update_image, alice.id, model.id, outcome.image_id, **changes)

    assert snapshot(conn) == before


def test_rejected_image_cannot_be_moved(conn: Connection, alice: UserRecord, model) -> None:
    (outcome,) = add(conn, alice, model.id, [unreadable("cat", "cat/x")])

    with pytest.raises(InvalidInput):
        call(conn, images.update_image, alice.id, model.id, outcome.image_id, label="dog")


def test_delete_images_returns_their_blobs(conn: Connection, alice: UserRecord, model) -> None:
    outcomes = add(conn, alice, model.id, [picture("cat", 1), picture("cat", 2), unreadable("cat", "cat/x")])

    shas = call(conn, images.delete_images, alice.id, model.id, [o.image_id for o in outcomes[1:]])

    assert shas == [sha("cat-2")]
    remaining, total = call(conn, images.list_images, alice.id, model.id, status=None)
    assert [r.id for r in remaining] == [outcomes[0].image_id]
    assert set(blob_rows(conn)) == {sha("cat-1")}
    assert call(conn, images.delete_images, alice.id, model.id, []) == []


def test_delete_images_is_all_or_nothing(conn: Connection, alice: UserRecord, model) -> None:
    outcomes = add(conn, alice, model.id, [picture("cat", 1), picture("cat", 2)])
    before = snapshot(conn)

    with pytest.raises(NotFound, match="999"):
        call(conn, images.delete_images, alice.id, model.id, [outcomes[0].image_id, 999])

    assert snapshot(conn) == before


def test_delete_images_keeps_a_picture_shared_by_two_models_until_both_are_gone(
    conn: Connection, alice: UserRecord, model
) -> None:
    other = call(conn, models.create_model, alice.id, ModelSpec("other"))
    (first,) = add(conn, alice, model.id, [picture("cat", 1)])
    (second,) = add(conn, alice, other.id, [picture("cat", 1, pack="packs/bb/second.pack")])

    assert call(conn, images.delete_images, alice.id, model.id, [first.image_id]) == []
    assert blob_rows(conn) == {sha("cat-1"): BlobRef(PACK, 1000, 100)}

    assert call(conn, images.delete_images, alice.id, other.id, [second.image_id]) == [sha("cat-1")]
    assert blob_rows(conn) == {}


def test_a_reject_row_does_not_keep_a_picture(conn: Connection, alice: UserRecord, model) -> None:
    (cat,) = add(conn, alice, model.id, [picture("cat", 1)])
    (conflict,) = add(conn, alice, model.id, [picture("dog", 1, key="cat-1")])  # rejected, but carries the sha
    assert conflict.status == "rejected"

    assert call(conn, images.delete_images, alice.id, model.id, [cat.image_id]) == [sha("cat-1")]

    assert blob_rows(conn) == {}
    assert call(conn, images.get_image, alice.id, model.id, conflict.image_id).sha256 == sha("cat-1")


def test_prune_blobs_keeps_pictures_still_used_anywhere(
    conn: Connection, alice: UserRecord, bob: UserRecord, model
) -> None:
    bobs = call(conn, models.create_model, bob.id, ModelSpec("bobs"))
    add(conn, bob, bobs.id, [picture("cat", 1)])
    call(conn, models.set_sample_image, bob.id, bobs.id, sha("sample"), BlobRef(PACK, 5, 5))
    # A location nothing refers to (its image row went without a prune, as after an interrupted clean-up).
    conn.execute("INSERT INTO blobs VALUES (?, ?, 7, 7, ?)", [sha("gone"), PACK, utcnow()])
    before = blob_rows(conn)

    candidates = [sha("cat-1"), sha("sample"), sha("gone"), sha("never-stored")]

    assert call(conn, images.prune_blobs, candidates) == [sha("gone")]
    assert blob_rows(conn) == {key: ref for key, ref in before.items() if key != sha("gone")}
    assert call(conn, images.prune_blobs, candidates) == []
    assert call(conn, images.prune_blobs, []) == []


def test_training_view_lists_accepted_images(conn: Connection, alice: UserRecord, model) -> None:
    outcomes = add(conn, alice, model.id, [picture("cat", 1, split="train"), unreadable("cat", "cat/x")])

    assert call(conn, images.training_view, alice.id, model.id) == [
        (outcomes[0].image_id, "cat", "train", sha("cat-1"))
    ]


# --- jobs --------------------------------------------------------------------------------------------------


def test_job_lifecycle(conn: Connection, alice: UserRecord, model) -> None:
    job = call(conn, jobs.create_job, alice.id, "import", model_id=model.id, params={"bytes": 10})
    assert (job.status, job.params, job.started_at) == ("queued", {"bytes": 10}, None)

    running = call(conn, jobs.start_job, job.id, total=8, message="Reading")
    assert (running.status, running.progress_total, running.message) == ("running", 8, "Reading")
    with pytest.raises(Conflict):
        call(conn, jobs.start_job, job.id)

    call(conn, jobs.report_progress, job.id, 3, 8, "Reading pictures")
    assert call(conn, jobs.get_job, job.id).progress_done == 3

    done = call(conn, jobs.finish_job, job.id, status="succeeded", message="Done", result={"accepted": 8})
    assert (done.status, done.result, done.error, done.progress_done) == ("succeeded", {"accepted": 8}, None, 8)
    assert done.finished_at is not None

    call(conn, jobs.report_progress, job.id, 1, 8, "late")  # a finished job ignores progress
    assert call(conn, jobs.get_job, job.id).message == "Done"


def test_failed_job_keeps_its_error_and_progress(conn: Connection, alice: UserRecord, model) -> None:
    job = call(conn, jobs.create_job, alice.id, "import", model_id=model.id)
    call(conn, jobs.start_job, job.id, total=10)
    call(conn, jobs.report_progress, job.id, 4, 10, "Reading")

    failed = call(conn, jobs.finish_job, job.id, status="failed", message="Bad zip", error={"code": "invalid_input"})

    assert (failed.status, failed.error, failed.result, failed.progress_done) == (
        "failed",
        {"code": "invalid_input"},
        None,
        4,
    )


def test_finish_job_refuses_a_non_final_status(conn: Connection, alice: UserRecord, model) -> None:
    job = call(conn, jobs.create_job, alice.id, "import", model_id=model.id)

    with pytest.raises(ValueError, match="final"):
        call(conn, jobs.finish_job, job.id, status="running", message="x")


def test_unknown_job_is_not_found(conn: Connection) -> None:
    with pytest.raises(NotFound):
        call(conn, jobs.get_job, "job_missing")


def test_one_active_import_per_model(conn: Connection, alice: UserRecord, model) -> None:
    first = call(conn, jobs.create_job, alice.id, "import", model_id=model.id)
    other_model = call(conn, models.create_model, alice.id, ModelSpec("other"))

    with pytest.raises(Conflict, match=first.id):
        call(conn, jobs.create_job, alice.id, "import", model_id=model.id)
    call(conn, jobs.create_job, alice.id, "import", model_id=other_model.id)  # another model may import
    call(conn, jobs.create_job, alice.id, "train", model_id=model.id)  # another kind may run

    call(conn, jobs.start_job, first.id)
    with pytest.raises(Conflict):
        call(conn, jobs.create_job, alice.id, "import", model_id=model.id)

    call(conn, jobs.finish_job, first.id, status="failed", message="x")
    assert call(conn, jobs.create_job, alice.id, "import", model_id=model.id).status == "queued"


def test_mark_interrupted_stops_only_unfinished_jobs(conn: Connection, alice: UserRecord, model) -> None:
    other = call(conn, models.create_model, alice.id, ModelSpec("other"))
    third = call(conn, models.create_model, alice.id, ModelSpec("third"))
    queued = call(conn, jobs.create_job, alice.id, "import", model_id=model.id)
    running = call(conn, jobs.create_job, alice.id, "import", model_id=other.id)
    call(conn, jobs.start_job, running.id)
    finished = call(conn, jobs.create_job, alice.id, "import", model_id=third.id)
    call(conn, jobs.finish_job, finished.id, status="succeeded", message="ok")

    ids = call(conn, jobs.mark_interrupted)

    assert sorted(ids) == sorted([queued.id, running.id])
    assert [call(conn, jobs.get_job, j).status for j in (queued.id, running.id, finished.id)] == [
        "interrupted",
        "interrupted",
        "succeeded",
    ]
    assert call(conn, jobs.get_job, queued.id).finished_at is not None
    assert call(conn, jobs.mark_interrupted) == []
    # An interrupted import no longer blocks a new one.
    call(conn, jobs.create_job, alice.id, "import", model_id=model.id)


def test_list_jobs_filters_newest_first(conn: Connection, alice: UserRecord, model) -> None:
    older = call(conn, jobs.create_job, alice.id, "import", model_id=model.id)
    call(conn, jobs.finish_job, older.id, status="succeeded", message="ok")
    newer = call(conn, jobs.create_job, alice.id, "import", model_id=model.id)
    other = call(conn, jobs.create_job, alice.id, "export")

    assert [j.id for j in call(conn, jobs.list_jobs, alice.id)] == [other.id, newer.id, older.id]
    assert [j.id for j in call(conn, jobs.list_jobs, alice.id, model_id=model.id)] == [newer.id, older.id]
    assert [j.id for j in call(conn, jobs.list_jobs, alice.id, kind="export")] == [other.id]
    assert len(call(conn, jobs.list_jobs, alice.id, limit=1)) == 1


# --- dataset statistics and warnings ------------------------------------------------------------------------


def test_dataset_stats_counts_everything(conn: Connection, alice: UserRecord, model) -> None:
    call(conn, models.create_class, alice.id, model.id, "empty")
    add(
        conn,
        alice,
        model.id,
        [picture("cat", i, split="train", size=10, width=30, height=20) for i in range(3)]
        + [picture("cat", 9, split="test", size=10, width=100, height=40, fmt="JPEG", gray=True)]
        + [picture("dog", 1, split="train", size=10, width=3000, height=10)]
        + [unreadable("dog", "dog/a"), unreadable("dog", "dog/b"), unreadable("cat", "cat/c", "Too big.")],
    )
    job = call(conn, jobs.create_job, alice.id, "import", model_id=model.id)
    call(conn, jobs.finish_job, job.id, status="succeeded", message="ok", result={"duplicates": 4})

    result = call(conn, stats.dataset_stats, alice.id, model.id)

    assert result.classes == [
        {"name": "cat", "train": 3, "test": 1, "total": 4},
        {"name": "dog", "train": 1, "test": 0, "total": 1},
        {"name": "empty", "train": 0, "test": 0, "total": 0},
    ]
    assert (result.total_images, result.train_images, result.test_images) == (5, 4, 1)
    assert result.rejected_images == 3
    assert result.rejects_by_reason == [
        {"reason": "It is not a picture.", "count": 2},
        {"reason": "Too big.", "count": 1},
    ]
    assert result.formats == {"PNG": 4, "JPEG": 1}
    assert result.gray_fraction == pytest.approx(0.2)
    assert result.storage_bytes == 50
    assert result.duplicates_skipped == 4
    histogram = {bucket["bucket"]: bucket["count"] for bucket in result.size_histogram}
    assert histogram["≤32 px"] == 3
    assert histogram["≤128 px"] == 1
    assert histogram[">2048 px"] == 1
    assert sum(histogram.values()) == 5
    assert any("'empty' has no pictures" in w for w in result.warnings)


def test_dataset_stats_of_an_empty_model(conn: Connection, alice: UserRecord, model) -> None:
    result = call(conn, stats.dataset_stats, alice.id, model.id)

    assert (result.total_images, result.gray_fraction, result.storage_bytes) == (0, 0.0, 0)
    assert result.classes == []
    assert len(result.warnings) == 1
    assert "at least two classes" in result.warnings[0]


def test_dataset_shape_samples_accepted_images(conn: Connection, alice: UserRecord, model) -> None:
    add(conn, alice, model.id, [picture("cat", 1, width=30, height=20, gray=True), unreadable("cat", "x")])

    assert call(conn, stats.dataset_shape, alice.id, model.id) == [(30, 20, True)]


def klass(name: str, train: int, test: int) -> dict:
    return {"name": name, "train": train, "test": test, "total": train + test}


@pytest.mark.parametrize(
    ("classes", "expected"),
    [
        pytest.param([klass("cat", 40, 10), klass("dog", 40, 10)], [], id="healthy"),
        pytest.param([klass("cat", 40, 10)], ["at least two classes"], id="one-class"),
        pytest.param(
            [klass("cat", 40, 10), klass("dog", 0, 0)], ["at least two classes", "'dog' has no pictures"], id="empty"
        ),
        pytest.param([klass("cat", 40, 10), klass("dog", 20, 5)], [], id="2-to-1-is-fine"),
        pytest.param(
            [klass("cat", 40, 10), klass("dog", 5, 2)],
            ["'dog' has only 7 pictures", "unbalanced: 'cat' has 50 pictures but 'dog' only 7"],
            id="too-few-and-imbalanced",
        ),
        pytest.param(
            [klass("cat", 60, 15), klass("dog", 20, 5)],
            ["unbalanced: 'cat' has 75 pictures but 'dog' only 25"],
            id="imbalanced-3-to-1",
        ),
        pytest.param(
            [klass("cat", 40, 10), klass("dog", 30, 0)], ["'dog' has no test pictures"], id="no-test-pictures"
        ),
    ],
)
def test_dataset_warnings(classes: list[dict], expected: list[str]) -> None:
    warnings = stats.dataset_warnings(classes)

    assert len(warnings) == len(expected)
    for warning, fragment in zip(warnings, expected, strict=True):
        assert fragment in warning


# --- storage and balanced clean-up -------------------------------------------------------------------------


@pytest.fixture
def crowded(conn: Connection, alice: UserRecord, model) -> dict[str, int]:
    """Two classes of different sizes with train and test pictures of varied sizes; returns bytes by image id."""
    offered = (
        [picture("cat", i, split="train", size=100 + i) for i in range(20)]
        + [picture("cat", 50 + i, split="test", size=200 + i) for i in range(5)]
        + [picture("dog", i, split="train", size=300 + i) for i in range(10)]
        + [picture("dog", 50, split="test", size=999)]
    )
    outcomes = add(conn, alice, model.id, offered)
    return {o.image_id: image.size_bytes for o, image in zip(outcomes, offered, strict=True)}


def groups_of(conn: Connection, ids: list[int] | None = None) -> dict[tuple[str, str], list[int]]:
    rows = conn.execute("SELECT id, label, split FROM images WHERE status = 'accepted' ORDER BY id").fetchall()
    groups: dict[tuple[str, str], list[int]] = {}
    for image_id, label, split in rows:
        if ids is None or image_id in ids:
            groups.setdefault((label, split), []).append(image_id)
    return groups


def test_storage_report_per_model(conn: Connection, alice: UserRecord, model, crowded: dict[int, int]) -> None:
    empty = call(conn, models.create_model, alice.id, ModelSpec("empty"))

    report = call(conn, storage.storage_report, alice.id, 1000)

    assert report.used_bytes == sum(crowded.values())
    assert report.over_quota is True
    assert [(m.model_id, m.images, m.bytes) for m in report.models] == [
        (model.id, 36, sum(crowded.values())),
        (empty.id, 0, 0),
    ]


def test_cleanup_plan_removes_the_same_share_of_every_group(
    conn: Connection, alice: UserRecord, crowded: dict[int, int]
) -> None:
    before = snapshot(conn)

    plan = call(conn, storage.cleanup_plan, alice.id, QUOTA, 2000)

    assert snapshot(conn) == before  # a plan deletes nothing
    assert plan.sufficient
    assert plan.freed_bytes >= plan.needed_bytes == 2000
    assert plan.freed_bytes == sum(crowded[i] for i in plan.image_ids)
    everything, removed = groups_of(conn), groups_of(conn, plan.image_ids)
    for group, members in everything.items():
        taken = removed.get(group, [])
        assert len(taken) < len(members), f"{group} would lose every picture"
        # Largest files first within a group.
        assert sorted(crowded[i] for i in taken) == sorted(crowded[i] for i in members)[len(members) - len(taken) :]
    shares = [len(removed.get(group, [])) / len(members) for group, members in everything.items() if len(members) > 1]
    smallest = min(len(members) for members in everything.values() if len(members) > 1)
    # One share for every group; rounding to whole pictures moves each by less than one picture of the smallest.
    assert max(shares) - min(shares) < 1 / smallest
    per_class = {row["class"]: (row["before"], row["removed"]) for row in plan.per_class}
    assert per_class == {
        "cat": (25, len(removed.get(("cat", "train"), [])) + len(removed.get(("cat", "test"), []))),
        "dog": (11, len(removed.get(("dog", "train"), []))),
    }


def test_cleanup_plan_is_the_smallest_share_that_frees_enough(
    conn: Connection, alice: UserRecord, crowded: dict[int, int]
) -> None:
    small = call(conn, storage.cleanup_plan, alice.id, QUOTA, 1)
    large = call(conn, storage.cleanup_plan, alice.id, QUOTA, 3000)

    # One picture from each group with more than one picture (dog/test has just one and is kept).
    assert len(small.image_ids) == 3
    assert len(large.image_ids) > len(small.image_ids)
    assert large.share_removed > small.share_removed


def test_cleanup_plan_that_cannot_free_enough_keeps_one_per_group(
    conn: Connection, alice: UserRecord, crowded: dict[int, int]
) -> None:
    plan = call(conn, storage.cleanup_plan, alice.id, QUOTA, 10**9)

    assert not plan.sufficient
    kept = set(crowded) - set(plan.image_ids)
    assert {group: len(ids) for group, ids in groups_of(conn, kept).items()} == {
        ("cat", "train"): 1,
        ("cat", "test"): 1,
        ("dog", "train"): 1,
        ("dog", "test"): 1,
    }


def test_cleanup_defaults_to_ninety_percent_of_quota(
    conn: Connection, alice: UserRecord, crowded: dict[int, int]
) -> None:
    used = sum(crowded.values())
    quota = used  # exactly full: 10 % must go

    plan = call(conn, storage.cleanup_plan, alice.id, quota)

    assert plan.needed_bytes == used - int(quota * storage.TARGET_SHARE_OF_QUOTA)
    assert plan.sufficient
    assert call(conn, storage.cleanup_plan, alice.id, used * 2) == storage.CleanupPlan(0, 0, 0.0, [], [], True)


def test_cleanup_counts_a_picture_kept_in_another_model_as_not_freed(
    conn: Connection, alice: UserRecord, model
) -> None:
    other = call(conn, models.create_model, alice.id, ModelSpec("other"))
    add(conn, alice, model.id, [picture("cat", 1, split="train", size=500), picture("cat", 2, split="train", size=10)])
    add(conn, alice, other.id, [picture("cat", 1, split="train", size=500), picture("cat", 3, split="train", size=10)])

    plan = call(conn, storage.cleanup_plan, alice.id, QUOTA, 1)

    # Both groups lose their largest picture, cat-1, which exists in both models: deleting both frees it.
    assert plan.freed_bytes == 500
    assert len(plan.image_ids) == 2


def test_apply_cleanup_keeps_a_picture_another_user_holds(
    conn: Connection, alice: UserRecord, bob: UserRecord, model
) -> None:
    bobs = call(conn, models.create_model, bob.id, ModelSpec("bobs"))
    add(conn, alice, model.id, [picture("cat", 1, split="train", size=500), picture("cat", 2, split="train")])
    add(conn, bob, bobs.id, [picture("cat", 1, split="train", size=500)])

    plan, shas = call(conn, storage.apply_cleanup, alice.id, QUOTA, 1)

    assert (len(plan.image_ids), plan.freed_bytes) == (1, 500)  # alice's largest, cat-1, is gone for her
    assert shas == []  # but bob still holds it
    assert set(blob_rows(conn)) == {sha("cat-1"), sha("cat-2")}


def test_apply_cleanup_deletes_exactly_the_planned_images(
    conn: Connection, alice: UserRecord, model, crowded: dict[int, int]
) -> None:
    plan = call(conn, storage.cleanup_plan, alice.id, QUOTA, 2000)

    applied, shas = call(conn, storage.apply_cleanup, alice.id, QUOTA, 2000)

    assert applied == plan
    remaining = {row[0] for row in conn.execute("SELECT id FROM images").fetchall()}
    assert remaining == set(crowded) - set(plan.image_ids)
    assert len(shas) == len(plan.image_ids)
    # The locations of exactly those pictures went in the same transaction.
    kept = {row[0] for row in conn.execute("SELECT sha256 FROM images").fetchall()}
    assert set(blob_rows(conn)) == kept
    assert kept.isdisjoint(shas)
    assert call(conn, images.storage_used, alice.id) == sum(crowded.values()) - plan.freed_bytes
    assert {c.name for c in call(conn, models.list_classes, alice.id, model.id)} == {"cat", "dog"}


def test_apply_cleanup_with_nothing_to_do_deletes_nothing(
    conn: Connection, alice: UserRecord, crowded: dict[int, int]
) -> None:
    before = snapshot(conn)

    plan, shas = call(conn, storage.apply_cleanup, alice.id, QUOTA)

    assert (plan.image_ids, shas) == ([], [])
    assert snapshot(conn) == before


def test_cleanup_never_touches_other_users(
    conn: Connection, alice: UserRecord, bob: UserRecord, crowded: dict[int, int]
) -> None:
    bobs = call(conn, models.create_model, bob.id, ModelSpec("bobs"))
    add(conn, bob, bobs.id, [picture("bird", i, split="train", size=5000) for i in range(4)])

    plan, _ = call(conn, storage.apply_cleanup, alice.id, QUOTA, 2000)

    assert set(plan.image_ids) <= set(crowded)
    assert call(conn, images.list_images, bob.id, bobs.id)[1] == 4
