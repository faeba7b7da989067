"""The shapes of the REST API's answers as the web UI reads them (a client-side mirror: the UI never imports serve/).

Unknown fields are ignored, so the API can grow without breaking the UI.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidatorFunctionWrapHandler, field_validator


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Problem(ApiModel):
    """An error as the API reports it (application/problem+json), or as the client words a network failure."""

    title: str
    detail: str
    code: str = "error"
    status: int = 0


class User(ApiModel):
    id: str
    username: str
    is_admin: bool = False


class Me(User):
    storage_used_bytes: int
    storage_quota_bytes: int


class Session(ApiModel):
    access_token: str
    expires_at: datetime
    user: User


class SignInAccount(ApiModel):
    username: str
    password_hash: str
    is_admin: bool = False


class Token(ApiModel):
    id: str
    name: str
    hint: str
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class TokenCreated(Token):
    secret: str


class Model(ApiModel):
    id: str
    name: str
    description: str = ""
    status: str
    target_accuracy: float | None = None
    time_budget_s: int
    auto_retrain: bool = False
    active_version: int | None = None
    num_classes: int
    num_images: int
    has_sample_image: bool = False
    created_at: datetime
    updated_at: datetime | None = None


class ClassInfo(ApiModel):
    name: str
    train_images: int
    test_images: int
    total_images: int


class Image(ApiModel):
    id: int
    label: str
    split: str | None = None
    status: str
    reject_reason: str | None = None
    original_name: str
    sha256: str | None = None
    size_bytes: int
    width: int | None = None
    height: int | None = None


class ImagesPage(ApiModel):
    data: list[Image]
    count: int


class FileOutcome(ApiModel):
    name: str
    status: str
    reason: str | None = None


class UploadResult(ApiModel):
    accepted: int
    duplicates: int
    rejected: int
    results: list[FileOutcome]
    update_job_id: str | None = None  # on a trained model: the update (job) the pictures started (Model-Update)


class Progress(ApiModel):
    done: int
    total: int
    fraction: float


class Job(ApiModel):
    id: str
    kind: str
    status: str
    model_id: str | None = None
    progress: Progress
    message: str = ""
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    created_at: datetime
    finished_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.status not in ("queued", "running")


class Policy(ApiModel):
    image_size: int
    color: str
    resize: str


class DatasetStats(ApiModel):
    classes: list[dict[str, Any]]
    total_images: int
    train_images: int
    test_images: int
    rejected_images: int
    rejects_by_reason: list[dict[str, Any]]
    storage_bytes: int
    duplicates_skipped: int
    warnings: list[str]
    preprocessing: Policy | None = None


class ModelUsage(ApiModel):
    model_id: str
    name: str
    images: int
    bytes: int


class Storage(ApiModel):
    used_bytes: int
    quota_bytes: int
    over_quota: bool
    models: list[ModelUsage]


class Cleanup(ApiModel):
    needed_bytes: int
    freed_bytes: int
    share_removed: float
    images: int
    per_class: list[dict[str, Any]]
    sufficient: bool
    applied: bool


# --- training runs and model versions -------------------------------------------------------------------------


class TrainOptions(ApiModel):
    """What a person may choose for one training run; None everywhere means "let the platform decide"."""

    target_accuracy: float | None = None
    time_budget_s: int | None = None
    backbones: list[str] | None = None
    kinds: list[str] | None = None
    max_epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    augmentation: bool | None = None


class RunConfig(ApiModel):
    """What a run was asked for (the model's goal and time, or this run's own)."""

    target_accuracy: float | None = None
    time_budget_s: int | None = None


class RunProgress(ApiModel):
    stage: str = "queued"
    fraction: float = 0.0
    message: str = ""
    best_accuracy: float | None = None
    seconds_left: float | None = None


class RunResult(ApiModel):
    summary: str = ""
    version: int | None = None
    accuracy: float | None = None
    reached_target: bool = False
    seconds: float | None = None
    step_seconds: dict[str, float] = {}  # preparing, searching, testing, quick_updates, label_check, publishing


class RunError(ApiModel):
    title: str = "Training stopped on a problem"
    detail: str = ""
    code: str = "error"


class EpochPoint(ApiModel):
    epoch: float | None = None
    val_accuracy: float | None = None


class Trial(ApiModel):
    """One candidate model of a run (a row of the leaderboard)."""

    trial_id: str
    title: str
    status: str
    epochs: int = 0
    best_val_accuracy: float | None = None
    history: list[EpochPoint] = []
    cost_s: float | None = None
    stop_reason: str | None = None


class Run(ApiModel):
    id: str
    model_id: str
    status: str
    config: RunConfig = RunConfig()
    progress: RunProgress = RunProgress()
    result: RunResult | None = None
    error: RunError | None = None
    cancel_requested: bool = False
    num_images: int = 0
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")


class RunDetail(Run):
    trials: list[Trial] = []


class ClassScore(ApiModel):
    name: str = Field(alias="class")
    precision: float
    recall: float
    f1: float
    support: int


class Misclassified(ApiModel):
    image_id: int
    true: str
    predicted: str
    confidence: float


class CalibrationBin(ApiModel):
    low: float
    high: float
    count: int
    confidence: float
    accuracy: float


class Calibration(ApiModel):
    expected_error: float
    bins: list[CalibrationBin]


class LabelMistake(ApiModel):
    image_id: int
    given: str
    suggested: str
    confidence: float


class Evaluation(ApiModel):
    """A version's evaluation on the test pictures (the API's `metrics`)."""

    accuracy: float | None = None
    val_accuracy: float | None = None
    class_names: list[str] = []
    per_class: list[ClassScore] = []
    confusion_matrix: list[list[int]] = []
    misclassified: list[Misclassified] = []
    test_images: int = 0
    calibration: Calibration | None = None
    label_mistakes: list[LabelMistake] | None = None  # None: made before the platform looked for them

    @field_validator("calibration", "label_mistakes", mode="wrap")
    @classmethod
    def _optional_figure(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # Newer figures: one the UI cannot read is left out, rather than hiding the whole evaluation.
        try:
            return handler(value)
        except ValidationError:
            return None


class Version(ApiModel):
    model_id: str
    version: int
    active: bool = False
    source: str = "training"
    run_id: str | None = None
    classes: list[str] = []
    backbone: str | None = None
    metrics: Evaluation = Evaluation()
    created_at: datetime


# --- model updates (expansions: classes added or removed without training) -----------------------------------


def job_id_of(url: str | None) -> str | None:
    """The job id in a job URL such as `/v1/jobs/job_42` (the `Model-Update` header, an import's `model_update`)."""
    return (url or "").strip().rstrip("/").rsplit("/", 1)[-1] or None


class UpdateResult(ApiModel):
    """What a finished model update did (the `result` of a job of kind "expansion")."""

    version: int | None = None
    summary: str = ""
    changed: bool = True
    added: list[str] = []
    removed: list[str] = []
    left_out: list[str] = []
    accuracy: float | None = None
    retrain_recommended: bool = False
    seconds: float | None = None

    @classmethod
    def of(cls, job: Job) -> UpdateResult | None:
        """The job's result, or None when it has none (yet) or one the UI cannot read."""
        try:
            return cls.model_validate(job.result) if job.result else None
        except ValidationError:
            return None


# --- classification, tasks and feedback ------------------------------------------------------------------------


class LabelScore(ApiModel):
    label: str
    probability: float


class FileAnswer(ApiModel):
    """One uploaded picture's answer, or (`error`) why it was not classified."""

    name: str
    task_id: str | None = None
    version: int | None = None
    label: str | None = None
    confidence: float | None = None
    uncertain: bool | None = None
    top: list[LabelScore] = []
    error: Problem | None = None


class Classification(ApiModel):
    model_id: str
    version: int
    classified: int
    failed: int
    uncertain_below: float
    latency_ms: float
    results: list[FileAnswer]


class Feedback(ApiModel):
    correct: bool
    label: str | None = None
    created_at: datetime | None = None


class Task(ApiModel):
    """One classified picture (the API keeps the answer, not the picture)."""

    id: str
    model_id: str
    version: int
    label: str
    confidence: float
    uncertain: bool = False
    top: list[LabelScore] = []
    latency_ms: float | None = None
    created_at: datetime
    feedback: Feedback | None = None


class TasksPage(ApiModel):
    data: list[Task]
    count: int


class Count(ApiModel):
    start: datetime
    count: int


class Latency(ApiModel):
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None


class ConfidenceCount(ApiModel):
    low: float
    high: float
    count: int


class FieldAccuracy(ApiModel):
    """Of `feedback` answers the owner checked, `correct` were right; `low`..`high` is the 95 % interval."""

    feedback: int = 0
    correct: int = 0
    accuracy: float | None = None
    low: float = 0.0
    high: float = 1.0


class ClassField(ApiModel):
    label: str
    tasks: int
    field: FieldAccuracy


class DayField(ApiModel):
    start: datetime
    field: FieldAccuracy


class VersionField(ApiModel):
    version: int
    tasks: int
    evaluated_accuracy: float | None = None
    field: FieldAccuracy = FieldAccuracy()
    per_class: list[ClassField] = []
    per_day: list[DayField] = []
    alert: str | None = None


class ModelStats(ApiModel):
    model_id: str
    since: datetime
    tasks: int = 0
    uncertain: int = 0
    per_hour: list[Count] = []
    per_day: list[Count] = []
    latency: Latency = Latency()
    confidence: list[ConfidenceCount] = []
    versions: list[VersionField] = []


class ClusterNode(ApiModel):
    id: str
    address: str = ""
    alive: bool = True
    kind: str = "worker"  # head | worker | runner
    owner: str | None = None  # the username whose runner this is
    total: dict[str, float] = {}
    available: dict[str, float] = {}


class ClusterResources(ApiModel):
    total: dict[str, float] = {}
    in_use: dict[str, float] = {}
    free: dict[str, float] = {}


class ClusterRunner(ApiModel):
    user_id: str
    username: str
    nodes: int = 0
    cpus: float = 0.0


class UserStorage(ApiModel):
    username: str
    models: int = 0
    pictures: int = 0
    used_bytes: int = 0
    quota_bytes: int = 0


class ClusterView(ApiModel):
    """GET /v1/admin/cluster: what the cluster is doing (administrators only)."""

    ray: str = ""
    dashboard_url: str = ""
    nodes: list[ClusterNode] = []
    resources: ClusterResources = ClusterResources()
    runners: list[ClusterRunner] = []
    jobs: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    serve: list[dict[str, Any]] = []
    storage: list[UserStorage] = []
