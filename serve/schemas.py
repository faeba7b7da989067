"""Request and response bodies of the REST API (the OpenAPI schema is generated from these)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from pipelines.ood import DEFAULT_NONE_BELOW

# Paging offsets are refused above this (422): DuckDB fails a query whose OFFSET does not fit 64 bits, which
# was a 500 (found by tests/component/test_api_fuzz.py). No listing here holds a billion rows.
MAX_OFFSET = 10**9


class Public(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    @field_serializer("*", when_used="json")
    def _utc(self, value: Any) -> Any:
        # The catalog stores naive UTC; say so on the wire.
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
        return value


class RegisterIn(BaseModel):
    username: str = Field(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$", examples=["alice"])
    password: str = Field(min_length=8, max_length=72, examples=["correct horse battery"])


class LoginIn(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=200)


class UserPublic(Public):
    id: str
    username: str
    is_admin: bool
    created_at: datetime


class SessionOut(Public):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime
    user: UserPublic


class MeOut(UserPublic):
    storage_used_bytes: int
    storage_quota_bytes: int


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100, examples=["my script"])
    expires_in_days: int | None = Field(90, ge=1, le=3660, description="Days until it expires; null for the maximum")


class TokenPublic(Public):
    id: str
    name: str
    hint: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenPublic):
    secret: str = Field(description="Shown only now. Store it somewhere safe.")


class TokensPublic(Public):
    data: list[TokenPublic]
    count: int


class ModelCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200, examples=["Flowers"])
    description: str = Field("", max_length=2000)
    target_accuracy: float | None = Field(None, gt=0, le=1, description="e.g. 0.95; null = as good as possible")
    time_budget_s: int = Field(600, ge=10, le=604800, description="Longest a training run may take, in seconds")
    auto_retrain: bool = Field(
        False, description="When a quick update (classes added without training) is not good enough, train again"
    )
    none_of_the_above_below: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Answer 'none of the above' for pictures less like the classes than all but this share of the "
        "model's validation pictures (default 0.01; 0 turns it off; higher flags more)",
    )


class ModelUpdate(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=2000)
    target_accuracy: float | None = Field(None, gt=0, le=1)
    time_budget_s: int | None = Field(None, ge=10, le=604800)
    auto_retrain: bool | None = None
    none_of_the_above_below: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Answer 'none of the above' for pictures less like the classes than all but this share of the "
        "model's validation pictures (default 0.01; 0 turns it off; higher flags more)",
    )


class ModelPublic(Public):
    id: str
    name: str
    description: str
    status: Literal["needs_data", "ready_to_train", "ready"]
    target_accuracy: float | None
    time_budget_s: int
    auto_retrain: bool = False
    none_of_the_above_below: float = DEFAULT_NONE_BELOW
    active_version: int | None
    num_classes: int
    num_images: int
    has_sample_image: bool
    created_at: datetime
    updated_at: datetime


class ModelsPublic(Public):
    data: list[ModelPublic]
    count: int


class ClassCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100, examples=["daisy"])


class ClassUpdate(BaseModel):
    name: str = Field(min_length=1, max_length=100)


class ClassPublic(Public):
    name: str
    train_images: int
    test_images: int
    total_images: int
    created_at: datetime


class ClassesPublic(Public):
    data: list[ClassPublic]
    count: int


class ImagePublic(Public):
    id: int
    label: str
    split: Literal["train", "test"] | None
    status: Literal["accepted", "rejected"]
    reject_reason: str | None
    original_name: str
    sha256: str | None
    size_bytes: int
    width: int | None
    height: int | None
    format: str | None
    mode: str | None
    created_at: datetime
    content_url: str | None
    thumbnail_url: str | None


class ImagesPublic(Public):
    data: list[ImagePublic]
    count: int


class ImageUpdate(BaseModel):
    label: str | None = Field(None, min_length=1, max_length=100, description="Move the image to this class")
    split: Literal["train", "test"] | None = None


class ImagesDelete(BaseModel):
    ids: list[int] = Field(min_length=1, max_length=10000)


class FileOutcome(Public):
    name: str
    status: Literal["accepted", "duplicate", "rejected"]
    image_id: int | None
    split: Literal["train", "test"] | None
    reason: str | None


class UploadOut(Public):
    accepted: int
    duplicates: int
    rejected: int
    results: list[FileOutcome]


class Progress(Public):
    done: int
    total: int
    fraction: float


class JobPublic(Public):
    id: str
    kind: str
    status: Literal["queued", "running", "succeeded", "failed", "interrupted", "cancelled"]
    model_id: str | None
    progress: Progress
    message: str
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    url: str


class JobsPublic(Public):
    data: list[JobPublic]
    count: int


class PolicyPublic(Public):
    image_size: int
    color: Literal["gray", "rgb"]
    resize: Literal["stretch", "letterbox", "center_crop"]


class DatasetStatsPublic(Public):
    model_id: str
    classes: list[dict[str, Any]]
    total_images: int
    train_images: int
    test_images: int
    rejected_images: int
    rejects_by_reason: list[dict[str, Any]]
    size_histogram: list[dict[str, Any]]
    formats: dict[str, int]
    gray_fraction: float
    storage_bytes: int
    duplicates_skipped: int
    warnings: list[str]
    preprocessing: PolicyPublic | None = Field(None, description="How training will prepare the pictures")


class ModelUsagePublic(Public):
    model_id: str
    name: str
    images: int
    bytes: int


class StoragePublic(Public):
    used_bytes: int
    quota_bytes: int
    over_quota: bool
    models: list[ModelUsagePublic]


class CleanupIn(BaseModel):
    free_bytes: int | None = Field(None, ge=1, description="Bytes to free; default: down to 90 % of the quota")


class CleanupPublic(Public):
    needed_bytes: int
    freed_bytes: int
    share_removed: float
    images: int
    per_class: list[dict[str, Any]]
    sufficient: bool
    applied: bool


class TrainRequest(BaseModel):
    """Everything is optional: without a body the platform decides. Experts may narrow the search."""

    target_accuracy: float | None = Field(None, gt=0, le=1, description="Stop as soon as a candidate reaches this")
    time_budget_s: int | None = Field(None, ge=10, le=604800, description="Longest the search may take")
    backbones: list[str] | None = Field(None, description="Only these pretrained backbones, e.g. efficientnet_lite0")
    kinds: list[Literal["frozen_head", "finetune", "scratch_cnn"]] | None = None
    max_epochs: int | None = Field(None, ge=1, le=500)
    batch_size: int | None = Field(None, ge=1, le=4096)
    learning_rate: float | None = Field(None, gt=0, le=1)
    augmentation: bool | None = None


class RunProgress(Public):
    stage: str
    fraction: float
    message: str
    best_accuracy: float | None = None
    seconds_left: float | None = None


class TrialPublic(Public):
    trial_id: str
    title: str
    spec: dict[str, Any]
    status: str
    epochs: int
    best_val_accuracy: float | None
    history: list[dict[str, Any]]
    cost_s: float | None
    stop_reason: str | None


class RunPublic(Public):
    id: str
    model_id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
    config: dict[str, Any]
    progress: RunProgress
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    cancel_requested: bool
    num_images: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    url: str


class RunDetail(RunPublic):
    trials: list[TrialPublic]


class RunsPublic(Public):
    data: list[RunPublic]
    count: int


class VersionPublic(Public):
    model_id: str
    version: int
    active: bool
    source: Literal["training", "expansion", "rollback"]
    run_id: str | None
    classes: list[str]
    backbone: str | None
    preprocessing: dict[str, Any] | None
    metrics: dict[str, Any]
    created_at: datetime


class VersionsPublic(Public):
    data: list[VersionPublic]
    count: int


class ClassScore(Public):
    label: str
    probability: float


class FileClassification(Public):
    """One uploaded file: its answer and task, or (`error`) why it could not be classified."""

    name: str
    task_id: str | None = None
    version: int | None = None
    label: str | None = Field(None, description="The most probable class")
    confidence: float | None = Field(None, description="Its probability")
    uncertain: bool | None = Field(None, description="True when the confidence is below `uncertain_below`")
    none_of_the_above: bool | None = Field(None, description="True when the picture looks unlike every class")
    none_of_the_above_reason: str | None = Field(None, description="Why, in words")
    top: list[ClassScore] = Field(default_factory=list, description="The top classes, most probable first")
    error: dict[str, Any] | None = Field(None, description="A problem document when this file was not classified")


class ClassifyOut(Public):
    model_id: str
    version: int
    classified: int
    failed: int
    uncertain_below: float
    latency_ms: float
    results: list[FileClassification] = Field(description="One entry per uploaded file, in upload order")


class FeedbackIn(BaseModel):
    """`{"correct": true}` confirms the answer; `{"label": "cat"}` corrects it; `{"correct": false}` only rejects it."""

    correct: bool | None = None
    label: str | None = Field(None, min_length=1, max_length=100, examples=["cat"])
    add_to_dataset: bool = Field(
        False,
        description="Also add the classified picture to the model's dataset under `label` (or under the answer, "
        "with correct: true); the model is then updated like after an upload",
    )


class FeedbackPublic(Public):
    correct: bool
    label: str | None
    created_at: datetime


class TaskPublic(Public):
    id: str
    model_id: str
    version: int
    label: str
    confidence: float
    uncertain: bool
    top: list[ClassScore]
    latency_ms: float
    created_at: datetime
    feedback: FeedbackPublic | None
    url: str
    added_to_dataset: FileOutcome | None = Field(None, description="With add_to_dataset: what became of the picture")
    model_update: str | None = Field(None, description="With add_to_dataset: the model update job it started")


class TasksPublic(Public):
    data: list[TaskPublic]
    count: int


class ModelAnswer(Public):
    """One model's answer for the picture, or (`error`) why that model could not answer."""

    model_id: str
    task_id: str | None = None
    version: int | None = None
    label: str | None = None
    confidence: float | None = None
    uncertain: bool | None = None
    none_of_the_above: bool | None = None
    none_of_the_above_reason: str | None = None
    top: list[ClassScore] = Field(default_factory=list)
    error: dict[str, Any] | None = Field(None, description="A problem document when this model did not answer")


class ModelsClassifyOut(Public):
    name: str
    answered: int
    failed: int
    uncertain_below: float
    latency_ms: float
    results: list[ModelAnswer] = Field(description="One entry per model asked, in the order given")


class CountPublic(Public):
    start: datetime
    count: int


class LatencyPublic(Public):
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None


class ConfidenceBinPublic(Public):
    low: float
    high: float
    count: int


class FieldAccuracyPublic(Public):
    """Of `feedback` answers you judged, `correct` were right; `low`..`high` is the 95 % interval."""

    feedback: int
    correct: int
    accuracy: float | None
    low: float
    high: float


class ClassFieldPublic(Public):
    label: str = Field(description="The class the model answered")
    tasks: int
    field: FieldAccuracyPublic


class DayFieldPublic(Public):
    start: datetime
    field: FieldAccuracyPublic


class VersionFieldPublic(Public):
    version: int
    tasks: int
    evaluated_accuracy: float | None = Field(description="Accuracy on the test pictures when it was trained")
    field: FieldAccuracyPublic
    per_class: list[ClassFieldPublic]
    per_day: list[DayFieldPublic]
    alert: str | None = Field(description="Set when the field accuracy is clearly below the evaluated one")


class ModelStatsPublic(Public):
    model_id: str
    since: datetime
    tasks: int
    uncertain: int
    per_hour: list[CountPublic] = Field(description="Classified pictures per hour, the last two days")
    per_day: list[CountPublic]
    latency: LatencyPublic
    confidence: list[ConfidenceBinPublic]
    versions: list[VersionFieldPublic] = Field(description="Field accuracy per version, newest first")
