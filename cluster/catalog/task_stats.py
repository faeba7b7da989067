"""A model's classification statistics from its tasks: traffic per hour and day, latency percentiles, the
confidence distribution, and field accuracy (from the owner's feedback) per version, class and day, next to the
accuracy measured at evaluation, with an alert when the field falls clearly below it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cluster.catalog.db import Connection, utcnow
from cluster.catalog.models import get_owned_model
from pipelines.errors import InvalidInput
from pipelines.predictions import accuracy_interval

MIN_FEEDBACK_FOR_ALERT = 10
CONFIDENCE_BINS = 10
MAX_DAYS = 366


@dataclass(frozen=True)
class Count:
    start: datetime
    count: int


@dataclass(frozen=True)
class Latency:
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True)
class ConfidenceBin:
    low: float
    high: float
    count: int


@dataclass(frozen=True)
class FieldAccuracy:
    """Of `feedback` answers the owner judged, `correct` were right; `low`-`high` is the 95 % interval."""

    feedback: int
    correct: int
    accuracy: float | None
    low: float
    high: float

    @classmethod
    def of(cls, correct: int, feedback: int) -> FieldAccuracy:
        low, high = accuracy_interval(correct, feedback)
        return cls(feedback, correct, correct / feedback if feedback else None, round(low, 4), round(high, 4))


@dataclass(frozen=True)
class ClassField:
    label: str  # the class the model answered
    tasks: int
    field: FieldAccuracy


@dataclass(frozen=True)
class DayField:
    start: datetime
    field: FieldAccuracy


@dataclass(frozen=True)
class VersionField:
    version: int
    tasks: int
    evaluated_accuracy: float | None
    field: FieldAccuracy
    per_class: list[ClassField]
    per_day: list[DayField]
    alert: str | None


@dataclass(frozen=True)
class ModelStats:
    model_id: str
    since: datetime
    tasks: int
    uncertain: int
    per_hour: list[Count]
    per_day: list[Count]
    latency: Latency
    confidence: list[ConfidenceBin]
    versions: list[VersionField]


def model_stats(conn: Connection, owner_id: str, model_id: str, *, days: int = 30) -> ModelStats:
    """Statistics of the owner's model over the last `days` days (hours: the last two days)."""
    if not 1 <= days <= MAX_DAYS:
        raise InvalidInput(f"days must be 1 to {MAX_DAYS}.", field="days")
    get_owned_model(conn, owner_id, model_id)
    now = utcnow()
    since = now - timedelta(days=days)
    scope = "FROM tasks t WHERE t.model_id = ? AND t.created_at >= ?"
    tasks, uncertain, p50, p90, p99 = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE t.uncertain), quantile_cont(t.latency_ms, 0.5),"
        f" quantile_cont(t.latency_ms, 0.9), quantile_cont(t.latency_ms, 0.99) {scope}",
        [model_id, since],
    ).fetchone()
    return ModelStats(
        model_id=model_id,
        since=since,
        tasks=tasks,
        uncertain=uncertain,
        per_hour=_counts(conn, "hour", scope, [model_id, max(since, now - timedelta(days=2))]),
        per_day=_counts(conn, "day", scope, [model_id, since]),
        latency=Latency(*(None if p is None else round(p, 2) for p in (p50, p90, p99))),
        confidence=_confidence(conn, scope, [model_id, since]),
        versions=_versions(conn, model_id, since),
    )


def _counts(conn: Connection, unit: str, scope: str, params: list) -> list[Count]:
    rows = conn.execute(
        f"SELECT date_trunc('{unit}', t.created_at) AS start, count(*) {scope} GROUP BY 1 ORDER BY 1", params
    ).fetchall()
    return [Count(start, count) for start, count in rows]


def _confidence(conn: Connection, scope: str, params: list) -> list[ConfidenceBin]:
    rows = dict(
        conn.execute(
            f"SELECT least(CAST(floor(t.confidence * {CONFIDENCE_BINS}) AS INTEGER), {CONFIDENCE_BINS - 1}),"
            f" count(*) {scope} GROUP BY 1",
            params,
        ).fetchall()
    )
    width = 1 / CONFIDENCE_BINS
    return [
        ConfidenceBin(round(i * width, 2), round((i + 1) * width, 2), rows.get(i, 0)) for i in range(CONFIDENCE_BINS)
    ]


def _versions(conn: Connection, model_id: str, since: datetime) -> list[VersionField]:
    joined = "FROM tasks t LEFT JOIN feedback f ON f.task_id = t.id WHERE t.model_id = ? AND t.created_at >= ?"
    judged = "count(f.task_id), count(*) FILTER (WHERE f.correct)"
    params = [model_id, since]
    versions = conn.execute(
        f"SELECT t.version, count(*), {judged} {joined} GROUP BY 1 ORDER BY 1 DESC", params
    ).fetchall()
    evaluated = dict(
        conn.execute(
            "SELECT version, CAST(json_extract(metrics, '$.accuracy') AS DOUBLE) FROM model_versions"
            " WHERE model_id = ?",
            [model_id],
        ).fetchall()
    )
    per_class: dict[int, list[ClassField]] = {}
    for version, label, count, feedback, correct in conn.execute(
        f"SELECT t.version, t.label, count(*), {judged} {joined} GROUP BY 1, 2 ORDER BY 1, 2", params
    ).fetchall():
        per_class.setdefault(version, []).append(ClassField(label, count, FieldAccuracy.of(correct, feedback)))
    per_day: dict[int, list[DayField]] = {}
    for version, start, feedback, correct in conn.execute(
        f"SELECT t.version, date_trunc('day', t.created_at), {judged} {joined} AND f.task_id IS NOT NULL"
        " GROUP BY 1, 2 ORDER BY 1, 2",
        params,
    ).fetchall():
        per_day.setdefault(version, []).append(DayField(start, FieldAccuracy.of(correct, feedback)))
    result = []
    for version, count, feedback, correct in versions:
        field = FieldAccuracy.of(correct, feedback)
        result.append(
            VersionField(
                version=version,
                tasks=count,
                evaluated_accuracy=evaluated.get(version),
                field=field,
                per_class=per_class.get(version, []),
                per_day=per_day.get(version, []),
                alert=_alert(version, field, evaluated.get(version)),
            )
        )
    return result


def _alert(version: int, field: FieldAccuracy, evaluated: float | None) -> str | None:
    """Words for the owner when the field accuracy is clearly (its whole 95 % interval) below the evaluation."""
    if evaluated is None or field.feedback < MIN_FEEDBACK_FOR_ALERT or field.high >= evaluated:
        return None
    return (
        f"Version {version} is right on {field.accuracy:.0%} of the {field.feedback} answers you checked, clearly "
        f"below the {evaluated:.0%} measured on the test pictures. The pictures it gets now may differ from the "
        "training pictures: add some of the corrected ones to the dataset and train again."
    )
