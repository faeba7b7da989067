"""Classified pictures kept for a while, so feedback can add one to the dataset (`add_to_dataset`): tasks store
only the picture's sha256, the bytes are kept here as named blobs `classified/<YYYY-MM-DD>/<sha256>` (UTC day of
the classification) for `Settings.keep_classified_days` days. A day folder is a unit of retention: whole days are
dropped once they are older, checked at most once a day per process by whoever keeps pictures.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

from cluster.blobs import BlobStore

PREFIX = "classified"
_pruned: dict[str, date] = {}  # blob root -> the day it was last pruned from this process
_lock = threading.Lock()


def kept_key(sha256: str, day: date) -> str:
    return f"{PREFIX}/{day.isoformat()}/{sha256}"


def keep_pictures(blobs: BlobStore, pictures: Iterable[tuple[str, bytes]], keep_days: int) -> None:
    """Keep the bytes of classified pictures (sha256, bytes) under today's folder; a no-op when keep_days is 0."""
    if keep_days <= 0:
        return
    today = datetime.now(UTC).date()
    for sha256, data in pictures:
        key = kept_key(sha256, today)
        if not blobs.exists(key):
            blobs.put(key, data)
    root = str(getattr(blobs, "root", id(blobs)))
    with _lock:
        due = _pruned.get(root) != today
        _pruned[root] = today
    if due:
        prune_kept(blobs, keep_days, today)


def kept_picture(blobs: BlobStore, sha256: str, classified_at: datetime) -> bytes | None:
    """The kept bytes of a picture classified at `classified_at` (UTC), or None when they are no longer kept."""
    day = classified_at.date()
    for candidate in (day, day - timedelta(days=1), day + timedelta(days=1)):  # a classification near midnight
        key = kept_key(sha256, candidate)
        if blobs.exists(key):
            return blobs.get(key)
    return None


def prune_kept(blobs: BlobStore, keep_days: int, today: date) -> int:
    """Delete the kept pictures of days more than `keep_days` before `today`; returns how many were deleted."""
    oldest = today - timedelta(days=max(keep_days, 0))
    deleted = 0
    for key in list(blobs.iter_keys(PREFIX)):
        parts = key.split("/")
        try:
            day = date.fromisoformat(parts[-2])
        except (ValueError, IndexError):
            continue
        if day < oldest:
            blobs.delete(key)
            deleted += 1
    return deleted
