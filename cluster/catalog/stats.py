"""Dataset statistics and plain-language warnings: what the dataset validator tells a user."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cluster.catalog.db import Connection
from cluster.catalog.models import get_owned_model

MIN_IMAGES_PER_CLASS = 10
RECOMMENDED_IMAGES_PER_CLASS = 50
IMBALANCE_RATIO = 3.0
SIZE_BUCKETS = (32, 64, 128, 256, 512, 1024, 2048)


@dataclass(frozen=True)
class DatasetStats:
    model_id: str
    classes: list[dict[str, Any]]  # name, train, test, total
    total_images: int
    train_images: int
    test_images: int
    rejected_images: int
    rejects_by_reason: list[dict[str, Any]]  # reason, count
    size_histogram: list[dict[str, Any]]  # bucket ("≤32 px"), count: by the longer side
    formats: dict[str, int]
    gray_fraction: float
    storage_bytes: int
    duplicates_skipped: int
    warnings: list[str] = field(default_factory=list)


def dataset_stats(conn: Connection, owner_id: str, model_id: str) -> DatasetStats:
    """Counts per class and split, sizes, formats, rejects, and warnings about the dataset."""
    get_owned_model(conn, owner_id, model_id)
    per_class = conn.execute(
        "SELECT c.name,"
        " count(i.id) FILTER (WHERE i.split = 'train'), count(i.id) FILTER (WHERE i.split = 'test')"
        " FROM classes c LEFT JOIN images i ON i.class_id = c.id AND i.status = 'accepted'"
        " WHERE c.model_id = ? GROUP BY c.name ORDER BY c.name",
        [model_id],
    ).fetchall()
    classes = [{"name": n, "train": tr, "test": te, "total": tr + te} for n, tr, te in per_class]
    rejects = conn.execute(
        "SELECT reject_reason, count(*) FROM images WHERE model_id = ? AND status = 'rejected'"
        " GROUP BY reject_reason ORDER BY count(*) DESC",
        [model_id],
    ).fetchall()
    buckets = ", ".join(f"({limit})" for limit in SIZE_BUCKETS)
    sizes = dict(
        conn.execute(
            f"SELECT (SELECT min(b) FROM (VALUES {buckets}) t(b) WHERE b >= greatest(i.width, i.height)) AS bucket,"
            " count(*) FROM images i WHERE i.model_id = ? AND i.status = 'accepted' GROUP BY bucket",
            [model_id],
        ).fetchall()
    )
    histogram = [{"bucket": f"≤{limit} px", "count": sizes.get(limit, 0)} for limit in SIZE_BUCKETS]
    histogram.append({"bucket": f">{SIZE_BUCKETS[-1]} px", "count": sizes.get(None, 0)})
    formats = dict(
        conn.execute(
            "SELECT format, count(*) FROM images WHERE model_id = ? AND status = 'accepted' GROUP BY format",
            [model_id],
        ).fetchall()
    )
    total, gray, storage = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE is_gray), coalesce(sum(size_bytes), 0)"
        " FROM images WHERE model_id = ? AND status = 'accepted'",
        [model_id],
    ).fetchone()
    (duplicates,) = conn.execute(
        "SELECT coalesce(sum(CAST(json_extract(result, '$.duplicates') AS BIGINT)), 0) FROM jobs"
        " WHERE model_id = ? AND kind = 'import' AND status = 'succeeded'",
        [model_id],
    ).fetchone()
    train = sum(c["train"] for c in classes)
    return DatasetStats(
        model_id=model_id,
        classes=classes,
        total_images=total,
        train_images=train,
        test_images=total - train,
        rejected_images=sum(count for _, count in rejects),
        rejects_by_reason=[{"reason": reason, "count": count} for reason, count in rejects],
        size_histogram=histogram,
        formats={str(k): v for k, v in formats.items()},
        gray_fraction=(gray / total) if total else 0.0,
        storage_bytes=int(storage),
        duplicates_skipped=int(duplicates),
        warnings=dataset_warnings(classes),
    )


def dataset_warnings(classes: list[dict[str, Any]]) -> list[str]:
    """Plain-language warnings about too few classes, too few images and imbalance."""
    warnings = []
    nonempty = [c for c in classes if c["total"] > 0]
    if len(nonempty) < 2:
        warnings.append("A classifier needs at least two classes with pictures. Add another class.")
    for c in classes:
        if c["total"] == 0:
            warnings.append(f"Class '{c['name']}' has no pictures yet. Add some or delete the class.")
        elif c["total"] < MIN_IMAGES_PER_CLASS:
            warnings.append(
                f"Class '{c['name']}' has only {c['total']} pictures. With fewer than {MIN_IMAGES_PER_CLASS}"
                f" the model will guess; {RECOMMENDED_IMAGES_PER_CLASS} or more work well."
            )
        elif c["test"] == 0:
            warnings.append(
                f"Class '{c['name']}' has no test pictures, so its accuracy cannot be measured. Add a few more."
            )
    if len(nonempty) >= 2:
        largest = max(nonempty, key=lambda c: c["total"])
        smallest = min(nonempty, key=lambda c: c["total"])
        if largest["total"] >= IMBALANCE_RATIO * smallest["total"]:
            warnings.append(
                f"The classes are unbalanced: '{largest['name']}' has {largest['total']} pictures but"
                f" '{smallest['name']}' only {smallest['total']}. The model will lean towards '{largest['name']}';"
                f" add pictures to '{smallest['name']}' or remove some from '{largest['name']}'."
            )
    return warnings


def dataset_shape(
    conn: Connection, owner_id: str, model_id: str, *, sample: int = 20_000
) -> list[tuple[int, int, bool]]:
    """(width, height, is_gray) of up to `sample` accepted images: the input of the preprocessing policy."""
    get_owned_model(conn, owner_id, model_id)
    return conn.execute(
        "SELECT width, height, coalesce(is_gray, false) FROM images WHERE model_id = ? AND status = 'accepted'"
        f" USING SAMPLE reservoir({int(sample)} ROWS) REPEATABLE (7)",
        [model_id],
    ).fetchall()
