"""The one settings object of Classifly (env prefix ``CLASSIFLY_``), read once at the edge and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipelines.zips import ZipLimits

GiB = 2**30
MiB = 2**20


class Settings(BaseSettings):
    """Everything an operator may configure; defaults give a working single-machine platform."""

    model_config = SettingsConfigDict(env_prefix="CLASSIFLY_", env_file=".env", extra="ignore", frozen=True)

    environment: Literal["dev", "test", "production"] = "dev"
    data_dir: Path = Path("./classifly-data")
    blob_uri: str = Field(
        "", description="Blob store: a local directory or an fsspec URI (s3://...). Default <data_dir>/blobs"
    )
    catalog_path: str = Field("", description="DuckDB file of the catalog. Default <data_dir>/catalog.duckdb")

    ray_address: str = Field("", description="Ray cluster to join ('auto' for a running one); empty starts a local one")
    ray_namespace: str = "classifly"
    ray_num_cpus: int | None = None
    ray_port: int = 6379

    host: str = "127.0.0.1"
    api_port: int = 8000
    ui_port: int = 8501
    dashboard_port: int = 8265
    public_api_url: str = Field("", description="URL people use to reach the API; default http://<host>:<api_port>")

    allow_registration: bool = True
    session_hours: float = 12.0
    token_max_days: int = 366
    # Throttles (serve/limits.py), enforced per Ingress replica with the limit divided by ingress_replicas.
    login_max_failures: int = Field(
        10, ge=0, description="Failed sign-ins per username and client address within the window (0: no limit)"
    )
    login_failure_window_s: float = Field(300.0, gt=0, description="Window of login_max_failures, in seconds")
    upload_requests_per_minute: int = Field(
        600, ge=0, description="Upload requests (pictures, zips, samples) one token may send a minute (0: no limit)"
    )
    ui_secret: str = Field("", description="Secret the UI uses to sign cookies; generated into the data dir when empty")

    quota_bytes: int = 5 * GiB
    max_upload_bytes: int = 4 * GiB
    max_image_bytes: int = 50 * MiB
    max_image_pixels: int = 100_000_000
    max_zip_entries: int = 200_000
    max_zip_ratio: float = 200.0
    max_zip_uncompressed_bytes: int = 20 * GiB
    import_batch_size: int = Field(0, description="Zip entries per decode task; 0 = about three tasks per CPU")
    import_parallelism: int = Field(0, description="Decode tasks running at once during an import; 0 = number of CPUs")

    ingress_replicas: int = 1
    ingress_cpus: float = 0.25
    api_cache_s: float = Field(
        5.0,
        ge=0,
        le=60,
        description="Longest an API replica answers 'which user is this token, which version answers' from memory "
        "without having seen a catalog change (serve/cache.py); 0 asks the catalog on every request",
    )
    # Serving next to training on 2 cores: the serving replicas together hold at most 0.75 CPU, so a training
    # trial (which asks for the CPUs left, at least one) and 1-CPU tasks still fit. Scheduling tokens only: a
    # replica's TensorFlow uses `serve_threads` threads whenever the machine has them free.
    extractor_cpus: float = Field(0.2, gt=0, description="CPU reserved by the shared backbone replica")
    full_model_cpus: float = Field(0.2, gt=0, description="CPU reserved by the whole-model replica")
    heads_cpus: float = Field(0.1, gt=0, description="CPU reserved by the numpy heads replica")
    serve_threads: int = Field(2, ge=1, description="TensorFlow threads of each serving replica")
    serve_batch_size: int = Field(32, ge=1, le=256, description="Most pictures in one batched forward pass")
    serve_batch_wait_s: float = Field(0.005, ge=0, le=1, description="Longest wait for a batch to fill")
    serve_max_ongoing_requests: int = Field(256, ge=1, description="Requests one serving replica takes at once")
    head_cache_size: int = Field(256, ge=1, description="Model versions' heads kept in memory")
    uncertain_below: float = Field(0.5, ge=0, le=1, description="Answers below this probability are 'uncertain'")
    training_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of each node's CPUs that training may hold (classifly_train); the rest serves "
        "(classifly_serve), never less than the serving replicas ask for (serving_cpus)",
    )
    trial_max_cpus: float = Field(4.0, ge=0.25, description="Most CPUs one training trial holds")
    keep_classified_days: int = Field(
        7, ge=0, description="Days classified pictures are kept, so feedback can add them to the dataset (0: never)"
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment == "production" and self.host not in ("127.0.0.1", "localhost") and not self.public_api_url:
            raise ValueError("Set CLASSIFLY_PUBLIC_API_URL when exposing the platform beyond this machine.")
        return self

    @property
    def blob_root(self) -> str:
        return self.blob_uri or str(self.data_dir / "blobs")

    @property
    def catalog_file(self) -> str:
        return self.catalog_path or str(self.data_dir / "catalog.duckdb")

    @property
    def api_url(self) -> str:
        return self.public_api_url or f"http://{self.host}:{self.api_port}"

    @property
    def serving_cpus(self) -> float:
        """CPUs the serving replicas ask for together (classifly_serve a node keeps at least)."""
        return self.ingress_cpus * self.ingress_replicas + self.extractor_cpus + self.heads_cpus + self.full_model_cpus

    @property
    def zip_limits(self) -> ZipLimits:
        return ZipLimits(
            max_entries=self.max_zip_entries,
            max_total_uncompressed=self.max_zip_uncompressed_bytes,
            max_entry_uncompressed=self.max_image_bytes,
            max_ratio=self.max_zip_ratio,
        )

    def state_dir(self) -> Path:
        """Where runtime files (pids, logs, generated secrets) live."""
        return self.data_dir / "run"


def get_settings(**overrides: object) -> Settings:
    """Read settings from the environment (and .env); called once at each edge (CLI, app builder)."""
    return Settings(**overrides)  # type: ignore[arg-type]
