"""What the API needs from the cluster, bundled: settings, the catalog, the blob store and a job launcher."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Protocol

from cluster.blobs import BlobStore, open_blob_store
from cluster.catalog.client import Catalog, LocalCatalog
from cluster.config import Settings
from cluster.importer import ImportRequest, run_import

logger = logging.getLogger("classifly.jobs")


class JobLauncher(Protocol):
    """Starts background work; returns at once (progress and results go to the catalog's job row)."""

    def submit_import(self, request: ImportRequest) -> None: ...

    def submit_training(self, run_id: str) -> None: ...

    def submit_expansion(self, job_id: str, model_id: str) -> None: ...

    def submit_classify_batch(self, job_id: str) -> None: ...

    def export(self, artifact_uri: str, fmt: str) -> str:
        """The blob key of the artifact exported as one file in `fmt` (built on first request); blocks."""
        ...


@dataclass(frozen=True)
class Services:
    settings: Settings
    catalog: Catalog
    blobs: BlobStore
    jobs: JobLauncher
    cpus: int = 1  # CPUs of the cluster: how many decode tasks an import runs at once


class ThreadJobLauncher:
    """Runs jobs on a thread of this process: for component tests and single-process use."""

    def __init__(self, catalog: Catalog, blobs: BlobStore, settings: Settings | None = None):
        self.catalog = catalog
        self.blobs = blobs
        self.settings = settings
        self.threads: list[threading.Thread] = []
        self.training_requests: list[str] = []
        self.expansion_requests: list[str] = []
        self.batch_requests: list[str] = []

    def submit_import(self, request: ImportRequest) -> None:
        thread = threading.Thread(target=self._run, args=(request,), daemon=True, name=f"import-{request.job_id}")
        self.threads.append(thread)
        thread.start()

    def submit_training(self, run_id: str) -> None:
        """Training needs Ray (Tune, tasks); in-process the run is recorded and stays queued."""
        self.training_requests.append(run_id)

    def submit_expansion(self, job_id: str, model_id: str) -> None:
        """Expansions need Ray (feature tasks); in-process the job is recorded and stays queued."""
        self.expansion_requests.append(job_id)

    def submit_classify_batch(self, job_id: str) -> None:
        """Classifying needs the serving deployments; in-process the job is recorded and stays queued (tests run
        it with `cluster.batch.run_batch` and a classifier of their own)."""
        self.batch_requests.append(job_id)

    def export(self, artifact_uri: str, fmt: str) -> str:
        from cluster.artifacts import export_artifact

        settings = self.settings or Settings()
        return export_artifact(settings.blob_root, artifact_uri, fmt, str(settings.data_dir / "backbones"))

    def _run(self, request: ImportRequest) -> None:
        try:
            run_import(request, self.catalog, self.blobs)
        except Exception:
            # The job row already tells the user; the operator gets the traceback.
            logger.exception("import job %s failed", request.job_id)

    def wait(self, timeout: float = 30.0) -> None:
        for thread in self.threads:
            thread.join(timeout)


def local_services(settings: Settings) -> Services:
    """Services in this process (catalog file opened here): for tests and tools, never next to a running platform."""
    catalog = LocalCatalog(settings.catalog_file if settings.catalog_path != ":memory:" else ":memory:")
    blobs = open_blob_store(settings.blob_root)
    return Services(settings, catalog, blobs, ThreadJobLauncher(catalog, blobs, settings))
